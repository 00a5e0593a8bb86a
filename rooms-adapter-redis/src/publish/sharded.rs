//! [`ClusterDriver`]: publishing with `SPUBLISH` through redis-rs's cluster
//! client.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use rooms_adapter::Error;

use super::driver::{PublishDriver, PublishItem, ScriptCall, no_script};
use crate::error::{from_redis, timeout};
use crate::subscribe::{SlotMap, key_slot};

/// Publishes with `SPUBLISH` through redis-rs's async cluster client: each
/// payload goes to the master serving its channel's hash slot (the client
/// follows `MOVED` and refreshes its slot map when masters change). Concurrent
/// publishes share one multiplexed connection per master.
///
/// Inside a cluster [`RedisAdapter`](crate::RedisAdapter) it also knows
/// the adapter's slot map, and sends a batch of publishes as one pipeline per
/// master (the cluster client alone can only pipeline commands of one slot):
/// as fast as the single-server adapter per master. A publish that the
/// pipeline could not place (a slot that just moved) is retried alone through
/// the cluster client, which follows `MOVED`.
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub struct ClusterDriver {
    connection: ClusterConnection,
    medium: String,
    slots: Option<Arc<SlotMap>>,
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
            Ok(Ok(connection)) => Ok(Self {
                connection,
                medium,
                slots: None,
            }),
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
            slots: None,
        }
    }

    /// Uses (and flags as stale) the adapter's slot map to pipeline per master.
    pub(crate) fn with_slot_map(mut self, slots: Arc<SlotMap>) -> Self {
        self.slots = Some(slots);
        self
    }

    /// One pipeline to the master at `host:port`; the publishes it could not
    /// place are retried alone.
    async fn pipeline_to(
        &self,
        host: String,
        port: u16,
        items: Vec<&PublishItem>,
    ) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        for item in &items {
            pipe.cmd("SPUBLISH")
                .arg(&item.channel)
                .arg(&item.payload[..]);
        }
        let mut connection = self.connection.clone();
        let route = SingleNodeRoutingInfo::ByAddress { host, port };
        let retry: Vec<&PublishItem> =
            match connection.route_pipeline(pipe, 0, items.len(), route).await {
                Ok(values) if values.len() == items.len() => items
                    .into_iter()
                    .zip(values)
                    .filter(|(_, value)| matches!(value, redis::Value::ServerError(_)))
                    .map(|(item, _)| item)
                    .collect(),
                Ok(_) => items,
                Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                    // The master is gone: the cluster client reports it fast.
                    if let Some(slots) = &self.slots {
                        slots.mark_stale();
                    }
                    return Err(from_redis("spublish pipeline", &self.medium, error));
                }
                Err(_) => items,
            };
        if retry.is_empty() {
            return Ok(());
        }
        if let Some(slots) = &self.slots {
            slots.mark_stale();
        }
        join_all(
            retry
                .iter()
                .map(|item| self.spublish(&item.channel, &item.payload)),
        )
        .await
        .into_iter()
        .collect()
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

    /// With the adapter's slot map: one pipeline per master, all at once.
    /// Without: every publish at once through the cluster client. The first
    /// failure is reported.
    async fn publish_batch(&self, batch: &[PublishItem]) -> Result<(), Error> {
        let topology = self.slots.as_ref().and_then(|slots| slots.current());
        let Some(topology) = topology else {
            let sends = batch
                .iter()
                .map(|item| self.spublish(&item.channel, &item.payload));
            return join_all(sends).await.into_iter().collect();
        };
        let mut groups: HashMap<(String, u16), Vec<&PublishItem>> = HashMap::new();
        let mut unplaced = Vec::new();
        for item in batch {
            match topology.owner_addr(key_slot(item.channel.as_bytes())) {
                Some((host, port)) => groups
                    .entry((host.to_owned(), port))
                    .or_default()
                    .push(item),
                None => unplaced.push(item),
            }
        }
        let pipelines = groups
            .into_iter()
            .map(|((host, port), items)| self.pipeline_to(host, port, items));
        let singles = unplaced
            .into_iter()
            .map(|item| self.spublish(&item.channel, &item.payload));
        let (pipelined, single) =
            futures_util::future::join(join_all(pipelines), join_all(singles)).await;
        pipelined.into_iter().chain(single).collect()
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    /// On the master serving the call's slot (the client follows `MOVED`).
    async fn run_script(&self, call: &ScriptCall) -> Result<redis::Value, Error> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            call.slot(),
            SlotAddr::Master,
        )));
        let run = |cmd: redis::Cmd| {
            let mut connection = self.connection.clone();
            let route = route.clone();
            async move {
                match connection.route_command(cmd, route).await {
                    Ok(redis::Value::ServerError(error)) => Err(redis::RedisError::from(error)),
                    other => other,
                }
            }
        };
        let result = match run(call.evalsha()).await {
            Err(error) if no_script(&error) => run(call.eval()).await,
            other => other,
        };
        result.map_err(|error| from_redis("history script", &self.medium, error))
    }
}
