//! [`ClusterDriver`]: publishing with `SPUBLISH` through redis-rs's cluster
//! client.

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use rooms_adapter::Error;

use super::slot::key_slot;
use crate::driver::{PublishDriver, PublishItem};
use crate::error::{from_redis, timeout};

/// Publishes with `SPUBLISH` through redis-rs's async cluster client: each
/// payload goes to the master serving its channel's hash slot (the client
/// follows `MOVED` and refreshes its slot map when masters change). Concurrent
/// publishes share one multiplexed connection per master.
///
/// Used by [`RedisClusterAdapter`](super::RedisClusterAdapter); public so that
/// it can be wrapped or reused.
#[derive(Clone)]
pub struct ClusterDriver {
    connection: ClusterConnection,
    medium: String,
}

impl std::fmt::Debug for ClusterDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDriver")
            .field("medium", &self.medium)
            .finish_non_exhaustive()
    }
}

impl ClusterDriver {
    /// Connects a cluster client (within `connect_timeout`). `medium` names the
    /// cluster in errors, e.g. `redis cluster at 10.0.0.1:7000,..`.
    pub async fn connect(
        client: &ClusterClient,
        connect_timeout: std::time::Duration,
        medium: impl Into<String>,
    ) -> Result<Self, Error> {
        let medium = medium.into();
        match tokio::time::timeout(connect_timeout, client.get_async_connection()).await {
            Ok(Ok(connection)) => Ok(Self { connection, medium }),
            Ok(Err(error)) => Err(from_redis("connect cluster publisher", &medium, error)),
            Err(_) => Err(timeout(
                format!("connect cluster publisher to {medium}"),
                connect_timeout,
            )),
        }
    }

    /// Wraps a cluster connection you configured yourself.
    pub fn from_connection(connection: ClusterConnection, medium: impl Into<String>) -> Self {
        Self {
            connection,
            medium: medium.into(),
        }
    }

    async fn spublish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        let mut cmd = redis::cmd("SPUBLISH");
        cmd.arg(channel).arg(payload);
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            key_slot(channel.as_bytes()),
            SlotAddr::Master,
        )));
        let mut connection = self.connection.clone();
        match connection.route_command(cmd, route).await {
            Ok(redis::Value::ServerError(error)) => Err(from_redis(
                "spublish",
                &self.medium,
                redis::RedisError::from(error),
            )),
            Ok(_) => Ok(()),
            Err(error) => Err(from_redis("spublish", &self.medium, error)),
        }
    }
}

#[async_trait]
impl PublishDriver for ClusterDriver {
    fn name(&self) -> &str {
        "cluster"
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), Error> {
        self.spublish(channel, payload).await
    }

    /// Sends every publish at once: the cluster client pipelines concurrent
    /// commands per master. (One pipeline cannot span masters.) The first
    /// failure is reported.
    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let sends = batch
            .iter()
            .map(|item| self.spublish(&item.channel, &item.payload));
        join_all(sends).await.into_iter().collect()
    }
}
