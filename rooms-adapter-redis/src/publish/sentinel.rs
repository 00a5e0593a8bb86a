//! The built-in driver of a Sentinel deployment: one multiplexed connection
//! to the master the sentinels name, opened again (after asking them again)
//! when it breaks, so publishing follows a failover.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use rooms_adapter::Error;

use super::driver::{
    DriverOptions, PublishDriver, PublishItem, ScriptCall, publish_cmd, publish_pipeline,
    run_script_on,
};
use crate::error::{from_redis, timeout};
use crate::subscribe::sentinel::SentinelTarget;

/// Publishes to the master a Sentinel deployment names now.
pub(crate) struct SentinelDriver {
    target: Arc<SentinelTarget>,
    medium: String,
    options: DriverOptions,
    /// The current connection and its number; never locked across an await.
    connection: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// One reconnect at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

impl SentinelDriver {
    /// Connects to the current master (within the connect timeout).
    pub(crate) async fn connect(
        target: Arc<SentinelTarget>,
        medium: &str,
        options: &DriverOptions,
    ) -> Result<Self, Error> {
        let driver = Self {
            target,
            medium: medium.to_owned(),
            options: *options,
            connection: Mutex::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
        };
        driver.reconnect(None).await?;
        Ok(driver)
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A connection to the master: the current one, or a new one when there
    /// is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), Error> {
        match self.current() {
            Some(connection) => Ok(connection),
            None => self.reconnect(None).await,
        }
    }

    /// Asks the sentinels for the master and connects to it, unless someone
    /// else replaced `broken` meanwhile.
    async fn reconnect(&self, broken: Option<u64>) -> Result<(u64, MultiplexedConnection), Error> {
        let _one = self.reconnecting.lock().await;
        let last = match self.current() {
            Some(current) if broken != Some(current.0) => return Ok(current),
            Some((number, _)) => number,
            None => broken.unwrap_or(0),
        };
        let limit = self.options.connect_timeout;
        let attempt = async {
            let client = self.target.master_client(&self.medium).await?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(self.options.response_timeout));
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|error| from_redis("connect publisher", &self.medium, error))
        };
        let connection = match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(timeout(
                    format!("connect publisher to {}", self.medium),
                    limit,
                ));
            }
        };
        let current = (last + 1, connection);
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(current.clone());
        Ok(current)
    }

    /// Runs `send` on a connection; a connection found broken is replaced
    /// and, when the command cannot have reached Redis, `send` runs once
    /// more on the new one.
    async fn with_retry<T, F, Fut>(&self, what: &str, send: F) -> Result<T, Error>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let (number, connection) = self.connection().await?;
        match send(connection).await {
            Ok(value) => Ok(value),
            Err(error) if broken(&error) => {
                let (_, fresh) = self.reconnect(Some(number)).await?;
                if error.is_connection_dropped() {
                    send(fresh)
                        .await
                        .map_err(|error| from_redis(what, &self.medium, error))
                } else {
                    Err(from_redis(what, &self.medium, error))
                }
            }
            Err(error) => Err(from_redis(what, &self.medium, error)),
        }
    }
}

/// The error says the connection is unusable (or talks to a replica now).
fn broken(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.code() == Some("READONLY")
}

#[async_trait]
impl PublishDriver for SentinelDriver {
    fn name(&self) -> &str {
        "sentinel"
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        let command = publish_cmd(channel, payload);
        self.with_retry("publish", |mut connection| {
            let command = command.clone();
            async move { command.exec_async(&mut connection).await }
        })
        .await
    }

    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let pipeline = publish_pipeline(batch);
        self.with_retry("publish pipeline", |mut connection| {
            let pipeline = pipeline.clone();
            async move { pipeline.exec_async(&mut connection).await }
        })
        .await
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        self.with_retry("history script", |mut connection| async move {
            run_script_on(&mut connection, call).await
        })
        .await
    }
}
