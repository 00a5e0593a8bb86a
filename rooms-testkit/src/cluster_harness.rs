//! The conformance harness of `RedisAdapter::cluster` (feature `cluster` of
//! `rooms-adapter-redis`): [`RedisClusterHarness`], on a throwaway
//! [`RedisCluster`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::wire::{self, DEFAULT_CHANNEL_PREFIX};
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_redis::redis::cluster::ClusterClientBuilder;
use rooms_adapter_redis::{ClusterDriver, PublishDriver, RedisAdapter, RedisAdapterBuilder};
use rooms_conformance::{Capabilities, Harness};

use crate::redis_acl::{NodeUsers, url_with_user};
use crate::redis_cluster::RedisCluster;

/// A builder for a cluster adapter on `urls` with the short timeouts the
/// harness uses: connect, subscribe 2 s; publish 1 s; PING every 1 s, answered
/// within 1 s; reconnect backoff 20 ms..500 ms; unsubscribe delay 50 ms.
pub fn fast_cluster_builder(urls: &[String]) -> RedisAdapterBuilder {
    crate::redis::fast_settings(RedisAdapter::cluster(urls.iter().cloned()))
}

fn unavailable(what: &str, error: io::Error) -> Error {
    Error::Unavailable {
        medium: "test redis cluster".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// The conformance harness of [`RedisAdapter::cluster`]: a fresh 3-master
/// [`RedisCluster`] per case.
///
/// - `raw_publish`: `SPUBLISH` of raw bytes on the room's shard channel.
/// - `fault_injection`: [`cut`](Harness::cut) SIGKILLs all three masters,
///   [`restore`](Harness::restore) restarts them on their ports with their
///   nodes.conf and waits until the cluster is ok again.
/// - `node_fault_injection`: each node connects as an ACL user of its own
///   ([`NodeUsers`], on every master); [`cut_node`](Harness::cut_node)
///   disables it and kills its connections.
pub struct RedisClusterHarness {
    cluster: tokio::sync::Mutex<RedisCluster>,
    urls: Vec<String>,
    ports: Vec<u16>,
    raw: tokio::sync::Mutex<Option<ClusterDriver>>,
    users: NodeUsers,
}

impl std::fmt::Debug for RedisClusterHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterHarness")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl RedisClusterHarness {
    /// The seed URLs (every master).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The cluster, e.g. to kill a master.
    pub fn cluster(&self) -> &tokio::sync::Mutex<RedisCluster> {
        &self.cluster
    }

    /// A new adapter with `configure` applied after the harness settings.
    pub fn adapter_with(
        &self,
        configure: impl FnOnce(RedisAdapterBuilder) -> RedisAdapterBuilder,
    ) -> Result<RedisAdapter, Error> {
        configure(fast_cluster_builder(&self.urls)).build()
    }
}

#[async_trait]
impl Harness for RedisClusterHarness {
    async fn setup() -> Result<Self, Error> {
        let cluster = RedisCluster::start()
            .await
            .map_err(|error| unavailable("cannot start a redis cluster", error))?;
        let urls = cluster.urls();
        Ok(Self {
            ports: cluster.ports(),
            cluster: tokio::sync::Mutex::new(cluster),
            urls,
            raw: tokio::sync::Mutex::new(None),
            users: NodeUsers::default(),
        })
    }

    /// An adapter connecting as a user of its own (for
    /// [`cut_node`](Harness::cut_node)).
    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        let user = self.users.create(&self.ports).await?;
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|url| url_with_user(url, &user))
            .collect();
        let adapter: Arc<dyn RoomAdapter> = Arc::new(fast_cluster_builder(&urls).build()?);
        self.users.register(&adapter, user);
        Ok(adapter)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn cut(&self) -> Result<(), Error> {
        self.raw.lock().await.take();
        self.cluster
            .lock()
            .await
            .kill_all()
            .map_err(|error| unavailable("cannot kill the cluster", error))
    }

    async fn restore(&self) -> Result<(), Error> {
        self.cluster
            .lock()
            .await
            .restart_all()
            .await
            .map_err(|error| unavailable("cannot restart the cluster", error))?;
        // Restarted masters forgot the node users.
        self.users.recreate(&self.ports).await
    }

    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.cut(node, &self.ports).await
    }

    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.restore(node, &self.ports).await
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        let mut raw = self.raw.lock().await;
        if raw.is_none() {
            let client = ClusterClientBuilder::new(self.urls.iter().map(String::as_str))
                .build()
                .map_err(|error| Error::Config(format!("bad test urls: {error}")))?;
            *raw = Some(
                ClusterDriver::connect(&client, Duration::from_secs(2), "test cluster").await?,
            );
        }
        let Some(driver) = raw.as_ref() else {
            return Err(Error::Closed {
                what: "raw publisher",
            });
        };
        let channel = wire::channel_name(DEFAULT_CHANNEL_PREFIX, room.as_str());
        driver.publish(&channel, payload).await
    }
}
