//! [`RedisEventIdSequence`]: event ids shared by every node, from Redis `INCR`.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use rooms_adapter::Error;
use rooms_adapter::sequence::{EVENT_ID_EPOCH, EventIdSequence, format_event_id};

use crate::config::url::parse_url;
use crate::config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_PUBLISH_TIMEOUT};
use crate::error::{from_redis, timeout};
use crate::publish::medium_of;

/// Event ids from one Redis counter, shared by every node: `INCR key`, one
/// round trip per id (no blocks reserved, so ids never jump), formatted as
/// `0-000000000001` ([`format_event_id`] with [`EVENT_ID_EPOCH`]), so they sort
/// as strings.
///
/// The sequence orders *allocation*, not delivery: two nodes that allocate 5
/// and 6 at nearly the same time may still deliver 6 before 5.
///
/// ```no_run
/// use rooms_adapter::sequence::EventIdSequence;
/// use rooms_adapter_redis::RedisEventIdSequence;
///
/// # async fn run() -> Result<(), rooms_adapter::Error> {
/// let ids = RedisEventIdSequence::connect("redis://127.0.0.1:6379", "chat:event-id").await?;
/// let first = ids.next_id().await?;
/// let second = ids.next_id().await?;
/// assert!(first < second);
/// # Ok(()) }
/// ```
pub struct RedisEventIdSequence<C = ConnectionManager> {
    connection: C,
    key: String,
    medium: String,
    timeout: Duration,
}

impl<C> std::fmt::Debug for RedisEventIdSequence<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventIdSequence")
            .field("key", &self.key)
            .field("medium", &self.medium)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisEventIdSequence {
    /// Connects to `url` (a reconnecting connection) and counts on `key`.
    /// Uses a 5 s connect timeout and a 2 s limit per id.
    pub async fn connect(url: &str, key: impl Into<String>) -> Result<Self, Error> {
        let client = parse_url(url)?;
        let medium = medium_of(&client);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_CONNECT_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_PUBLISH_TIMEOUT))
            .set_number_of_retries(0);
        let connecting = ConnectionManager::new_with_config(client, config);
        let connection = match tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(from_redis("connect event-id sequence", &medium, error)),
            Err(_) => {
                return Err(timeout(
                    format!("connect event-id sequence to {medium}"),
                    DEFAULT_CONNECT_TIMEOUT,
                ));
            }
        };
        Ok(Self::with_connection(connection, key, medium))
    }
}

impl<C> RedisEventIdSequence<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Counts on `key` over a connection you made (a `MultiplexedConnection`,
    /// a `ConnectionManager`, ...). `medium` names the server in errors.
    pub fn with_connection(
        connection: C,
        key: impl Into<String>,
        medium: impl Into<String>,
    ) -> Self {
        Self {
            connection,
            key: key.into(),
            medium: medium.into(),
            timeout: DEFAULT_PUBLISH_TIMEOUT,
        }
    }

    /// Limit on allocating one id (default 2 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The counter's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next counter value (1 for a fresh key).
    pub async fn next_value(&self) -> Result<u64, Error> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("INCR");
        command.arg(&self.key);
        let incr = command.query_async::<u64>(&mut connection);
        match tokio::time::timeout(self.timeout, incr).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(from_redis(
                &format!("INCR {:?}", self.key),
                &self.medium,
                error,
            )),
            Err(_) => Err(timeout(
                format!("INCR {:?} on {}", self.key, self.medium),
                self.timeout,
            )),
        }
    }
}

#[async_trait]
impl<C> EventIdSequence for RedisEventIdSequence<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn next_id(&self) -> Result<String, Error> {
        Ok(format_event_id(EVENT_ID_EPOCH, self.next_value().await?))
    }
}
