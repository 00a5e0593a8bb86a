//! The conformance harness of a Sentinel [`RedisAdapter`] (feature `sentinel`
//! of `rooms-adapter-redis`): [`RedisSentinelHarness`], on a throwaway
//! [`RedisSentinel`] deployment (master, replica, three sentinels).

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder, redis};
use rooms_conformance::{Capabilities, Harness};
use tokio::sync::Mutex;

use crate::redis_acl::{NodeUsers, url_with_user};
use crate::redis_sentinel::RedisSentinel;

/// A builder for the sentinels at `urls` watching `master`, with the short
/// timeouts the harnesses use (as [`fast_builder`](crate::redis::fast_builder)).
pub fn fast_sentinel_builder(urls: &[String], master: &str) -> RedisAdapterBuilder {
    crate::redis::fast_settings(RedisAdapter::sentinel(urls.iter().cloned(), master))
}

fn unavailable(what: &str, error: io::Error) -> Error {
    Error::Unavailable {
        medium: "test redis sentinel".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// The conformance harness of a Sentinel adapter: a fresh deployment per case.
///
/// - `raw_publish`: `PUBLISH` of raw bytes on the current master.
/// - `fault_injection`: [`cut`](Harness::cut) SIGKILLs both data nodes (the
///   sentinels have nothing to promote), [`restore`](Harness::restore)
///   restarts them on their ports. Failover is tested on its own
///   (`rooms-adapter-redis/tests/sentinel.rs`).
/// - `node_fault_injection`: each node connects as an ACL user of its own
///   ([`NodeUsers`], on the sentinels and the data nodes);
///   [`cut_node`](Harness::cut_node) disables it on the data nodes and kills
///   its connections there.
pub struct RedisSentinelHarness {
    deployment: Mutex<RedisSentinel>,
    urls: Vec<String>,
    master: &'static str,
    data_ports: Vec<u16>,
    sentinel_ports: Vec<u16>,
    users: NodeUsers,
}

impl std::fmt::Debug for RedisSentinelHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSentinelHarness")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl RedisSentinelHarness {
    /// The deployment, e.g. to kill its master.
    pub fn deployment(&self) -> &Mutex<RedisSentinel> {
        &self.deployment
    }

    /// A new adapter with `configure` applied after the harness settings.
    pub fn adapter_with(
        &self,
        configure: impl FnOnce(RedisAdapterBuilder) -> RedisAdapterBuilder,
    ) -> Result<RedisAdapter, Error> {
        configure(fast_sentinel_builder(&self.urls, self.master)).build()
    }
}

#[async_trait]
impl Harness for RedisSentinelHarness {
    async fn setup() -> Result<Self, Error> {
        let deployment = RedisSentinel::start()
            .await
            .map_err(|error| unavailable("cannot start the deployment", error))?;
        Ok(Self {
            urls: deployment.sentinel_urls(),
            master: deployment.master_name(),
            data_ports: deployment.node_ports(),
            sentinel_ports: deployment.sentinel_ports(),
            deployment: Mutex::new(deployment),
            users: NodeUsers::default(),
        })
    }

    /// An adapter connecting as a user of its own (for
    /// [`cut_node`](Harness::cut_node)).
    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        let ports: Vec<u16> = self
            .data_ports
            .iter()
            .chain(&self.sentinel_ports)
            .copied()
            .collect();
        let user = self.users.create(&ports).await?;
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|url| url_with_user(url, &user))
            .collect();
        let adapter: Arc<dyn RoomAdapter> =
            Arc::new(fast_sentinel_builder(&urls, self.master).build()?);
        self.users.register(&adapter, user);
        Ok(adapter)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn cut(&self) -> Result<(), Error> {
        self.deployment
            .lock()
            .await
            .kill_all()
            .map_err(|error| unavailable("cannot kill the data nodes", error))
    }

    async fn restore(&self) -> Result<(), Error> {
        self.deployment
            .lock()
            .await
            .restart_all()
            .await
            .map_err(|error| unavailable("cannot restart the data nodes", error))?;
        // Restarted data nodes forgot the node users.
        self.users.recreate(&self.data_ports).await
    }

    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.cut(node, &self.data_ports).await
    }

    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.restore(node, &self.data_ports).await
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        let url = self
            .deployment
            .lock()
            .await
            .master_url()
            .await
            .map_err(|error| unavailable("no master", error))?;
        let client = redis::Client::open(url.as_str())
            .map_err(|error| Error::Config(format!("bad master url {url}: {error}")))?;
        crate::redis::publish_raw_to(&client, room, payload).await
    }

    async fn teardown(self) {}
}
