//! The `deadpool` driver: a deadpool-redis pool.

use async_trait::async_trait;
use deadpool_redis::{Manager, Pool, PoolError, Runtime};
use redis::AsyncConnectionConfig;
use rooms_adapter::Error;

use super::driver::{
    DriverOptions, PublishDriver, PublishItem, ScriptCall, medium_of, publish_cmd,
    publish_pipeline, run_script_on,
};
use crate::error::from_redis;

/// Publishes through a deadpool-redis pool of multiplexed connections.
///
/// deadpool-redis checks every connection it hands out with a `PING`, which
/// costs one round trip per publish or per pipeline; broken connections are
/// replaced by that check.
///
/// ```no_run
/// use rooms_adapter_redis::{DeadpoolDriver, RedisAdapter};
///
/// # fn run() -> Result<(), rooms_adapter::Error> {
/// // Let the adapter build the pool from its URL and timeouts ...
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379").deadpool_driver(16).build()?;
///
/// // ... or bring your own.
/// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))
///     .map_err(|e| rooms_adapter::Error::Config(e.to_string()))?;
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379")
///     .driver(DeadpoolDriver::new(pool, "redis at 127.0.0.1:6379"))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub struct DeadpoolDriver {
    pool: Pool,
    medium: String,
}

impl std::fmt::Debug for DeadpoolDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadpoolDriver")
            .field("medium", &self.medium)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl DeadpoolDriver {
    /// Wraps a pool you built yourself. `medium` names it in errors, e.g.
    /// `redis at 10.0.0.5:6379`.
    pub fn new(pool: Pool, medium: impl Into<String>) -> Self {
        Self {
            pool,
            medium: medium.into(),
        }
    }

    /// A pool of `options.pool_size` connections to `client`'s server.
    /// Connections are made on first use.
    pub fn from_client(client: &redis::Client, options: &DriverOptions) -> Result<Self, Error> {
        let medium = medium_of(client);
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        let manager = Manager::new_with_config(client.get_connection_info().clone(), connection)
            .map_err(|error| from_redis("create deadpool manager", &medium, error))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.response_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.response_timeout))
            .build()
            .map_err(|error| Error::Config(format!("cannot build deadpool pool: {error}")))?;
        Ok(Self { pool, medium })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, Error> {
        self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => from_redis("get pooled connection", &self.medium, error),
            PoolError::Timeout(kind) => Error::Unavailable {
                medium: self.medium.clone(),
                reason: format!("no pooled connection: {kind:?} timed out"),
                source: None,
            },
            PoolError::Closed => Error::Closed {
                what: "deadpool pool",
            },
            other => Error::Backend {
                context: format!("get pooled connection to {}", self.medium),
                retryable: true,
                source: Box::new(other),
            },
        })
    }
}

#[async_trait]
impl PublishDriver for DeadpoolDriver {
    fn name(&self) -> &str {
        "deadpool"
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        let mut connection = self.connection().await?;
        publish_cmd(channel, payload)
            .exec_async(&mut connection)
            .await
            .map_err(|error| from_redis("publish", &self.medium, error))
    }

    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let mut connection = self.connection().await?;
        publish_pipeline(batch)
            .exec_async(&mut connection)
            .await
            .map_err(|error| from_redis("publish pipeline", &self.medium, error))
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        let mut connection = self.connection().await?;
        run_script_on(&mut connection, call)
            .await
            .map_err(|error| from_redis("history script", &self.medium, error))
    }
}
