//! The default driver: redis-rs's `ConnectionManager`.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rooms_adapter::Error;

use super::driver::{
    DriverOptions, PublishDriver, PublishItem, ScriptCall, medium_of, publish_cmd,
    publish_pipeline, run_script_on,
};
use crate::error::{from_redis, timeout};

/// Publishes through redis-rs's `ConnectionManager`: one multiplexed
/// connection shared by every publish (concurrent commands are pipelined on
/// it), replaced in the background when it breaks.
///
/// It retries nothing itself: while Redis is down each publish fails at once
/// (connection refused) or within the response timeout, and the next publish
/// tries a fresh connection.
///
/// ```no_run
/// use rooms_adapter_redis::{DriverOptions, RedisAdapter, RedisDriver};
///
/// # async fn run() -> Result<(), rooms_adapter::Error> {
/// let client = redis::Client::open("redis://127.0.0.1:6379")
///     .map_err(|e| rooms_adapter::Error::Config(e.to_string()))?;
/// let driver = RedisDriver::connect(client, &DriverOptions::default()).await?;
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379").driver(driver).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisDriver {
    connection: ConnectionManager,
    medium: String,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("medium", &self.medium)
            .finish_non_exhaustive()
    }
}

impl RedisDriver {
    /// Connects (within `options.connect_timeout`).
    pub async fn connect(client: redis::Client, options: &DriverOptions) -> Result<Self, Error> {
        let medium = medium_of(&client);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(0);
        let connecting = ConnectionManager::new_with_config(client, config);
        match tokio::time::timeout(options.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(Self { connection, medium }),
            Ok(Err(error)) => Err(from_redis("connect publisher", &medium, error)),
            Err(_) => Err(timeout(
                format!("connect publisher to {medium}"),
                options.connect_timeout,
            )),
        }
    }

    /// Wraps a `ConnectionManager` you configured yourself.
    pub fn from_manager(connection: ConnectionManager, medium: impl Into<String>) -> Self {
        Self {
            connection,
            medium: medium.into(),
        }
    }
}

/// The manager's connection died (the server restarted since the last
/// command): `ConnectionManager` notices only when a command fails on it, and
/// reconnects then. A command written to a dead socket did not reach any
/// server, so it is sent once more, on the new connection: a node that stayed
/// quiet through an outage does not fail its first publish afterwards. (If a
/// reset ever hid a delivered command, receivers drop the repeat of a message
/// with an id.)
fn stale(error: &redis::RedisError) -> bool {
    error.is_connection_dropped()
}

#[async_trait]
impl PublishDriver for RedisDriver {
    fn name(&self) -> &str {
        "redis"
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        let command = publish_cmd(channel, payload);
        let mut connection = self.connection.clone();
        let mut result = command.exec_async(&mut connection).await;
        if matches!(&result, Err(error) if stale(error)) {
            result = command.exec_async(&mut connection).await;
        }
        result.map_err(|error| from_redis("publish", &self.medium, error))
    }

    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let pipeline = publish_pipeline(batch);
        let mut connection = self.connection.clone();
        let mut result = pipeline.exec_async(&mut connection).await;
        if matches!(&result, Err(error) if stale(error)) {
            result = pipeline.exec_async(&mut connection).await;
        }
        result.map_err(|error| from_redis("publish pipeline", &self.medium, error))
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        let mut connection = self.connection.clone();
        let mut result = run_script_on(&mut connection, call).await;
        if matches!(&result, Err(error) if stale(error)) {
            result = run_script_on(&mut connection, call).await;
        }
        result.map_err(|error| from_redis("history script", &self.medium, error))
    }
}
