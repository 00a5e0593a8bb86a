//! Where a Sentinel deployment's master is: asked of the sentinels at every
//! connect, so a connection lost in a failover reconnects to the new master.

use redis::ConnectionInfo;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use rooms_adapter::Error;

use crate::error::from_redis;

/// The sentinels and the name of the master they watch.
pub(crate) struct SentinelTarget {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master: String,
    node: SentinelNodeConnectionInfo,
}

impl SentinelTarget {
    /// `node` holds the master's credentials and database.
    pub(crate) fn new(
        sentinel: Sentinel,
        master: String,
        node: SentinelNodeConnectionInfo,
    ) -> Self {
        Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master,
            node,
        }
    }

    pub(crate) fn master_name(&self) -> &str {
        &self.master
    }

    /// The current master's connection settings (the sentinels are asked,
    /// and the master is checked to say it is one).
    pub(crate) async fn master_info(&self, medium: &str) -> Result<ConnectionInfo, Error> {
        let client = self.master_client(medium).await?;
        Ok(client.get_connection_info().clone())
    }

    /// A client for the current master.
    pub(crate) async fn master_client(&self, medium: &str) -> Result<redis::Client, Error> {
        let mut sentinel = self.sentinel.lock().await;
        sentinel
            .async_master_for(&self.master, Some(&self.node))
            .await
            .map_err(|error| from_redis("ask the sentinels for the master", medium, error))
    }
}

/// The sentinels of `urls` (validated), as redis-rs wants them.
pub(crate) fn sentinels(urls: &[ConnectionInfo]) -> Result<Sentinel, Error> {
    Sentinel::build(urls.to_vec())
        .map_err(|error| Error::Config(format!("invalid sentinel addresses: {error}")))
}
