//! The `bb8` driver: a bb8 pool of bb8-redis connections.

use async_trait::async_trait;
use bb8_redis::RedisConnectionManager;
use rooms_adapter::Error;

use super::driver::{
    DriverOptions, PublishDriver, PublishItem, ScriptCall, medium_of, publish_cmd,
    publish_pipeline, run_script_on,
};
use crate::error::from_redis;

/// The pool type [`Bb8Driver`] uses.
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type Bb8Pool = ::bb8::Pool<RedisConnectionManager>;

/// Publishes through a bb8 pool of multiplexed connections (bb8-redis).
///
/// The pool tests each connection it hands out with a `PING`
/// (`test_on_check_out`): bb8-redis cannot otherwise tell that a connection
/// broke, e.g. after Redis restarted. That costs one round trip per publish or
/// per pipeline.
///
/// ```no_run
/// use rooms_adapter_redis::{Bb8Driver, RedisAdapter};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379").bb8_driver(16).build()?;
///
/// // Or bring your own pool.
/// let manager = bb8_redis::RedisConnectionManager::new("redis://127.0.0.1:6379")?;
/// let pool = bb8::Pool::builder().max_size(16).build(manager).await?;
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379")
///     .driver(Bb8Driver::new(pool, "redis at 127.0.0.1:6379"))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub struct Bb8Driver {
    pool: Bb8Pool,
    medium: String,
}

impl std::fmt::Debug for Bb8Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bb8Driver")
            .field("medium", &self.medium)
            .finish_non_exhaustive()
    }
}

impl Bb8Driver {
    /// Wraps a pool you built yourself. `medium` names it in errors.
    pub fn new(pool: Bb8Pool, medium: impl Into<String>) -> Self {
        Self {
            pool,
            medium: medium.into(),
        }
    }

    /// A pool of `options.pool_size` connections to `client`'s server, made on
    /// first use. Must be called within a Tokio runtime.
    pub fn from_client(client: &redis::Client, options: &DriverOptions) -> Result<Self, Error> {
        let medium = medium_of(client);
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())
            .map_err(|error| from_redis("create bb8 manager", &medium, error))?;
        let pool_size = u32::try_from(options.pool_size).unwrap_or(u32::MAX);
        let pool = ::bb8::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(options.connect_timeout.max(options.response_timeout))
            .test_on_check_out(true)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self { pool, medium })
    }

    /// The pool.
    pub fn pool(&self) -> &Bb8Pool {
        &self.pool
    }

    async fn connection(
        &self,
    ) -> Result<::bb8::PooledConnection<'_, RedisConnectionManager>, Error> {
        self.pool.get().await.map_err(|error| match error {
            ::bb8::RunError::User(error) => {
                from_redis("get pooled connection", &self.medium, error)
            }
            ::bb8::RunError::TimedOut => Error::Unavailable {
                medium: self.medium.clone(),
                reason: "no pooled connection: timed out".into(),
                source: None,
            },
        })
    }
}

#[async_trait]
impl PublishDriver for Bb8Driver {
    fn name(&self) -> &str {
        "bb8"
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        let mut connection = self.connection().await?;
        publish_cmd(channel, payload)
            .exec_async(&mut *connection)
            .await
            .map_err(|error| from_redis("publish", &self.medium, error))
    }

    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let mut connection = self.connection().await?;
        publish_pipeline(batch)
            .exec_async(&mut *connection)
            .await
            .map_err(|error| from_redis("publish pipeline", &self.medium, error))
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        let mut connection = self.connection().await?;
        run_script_on(&mut *connection, call)
            .await
            .map_err(|error| from_redis("history script", &self.medium, error))
    }
}
