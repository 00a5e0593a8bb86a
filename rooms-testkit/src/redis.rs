//! Conformance harnesses for [`RedisAdapter`], one per publish driver, each on
//! its own throwaway [`RedisServer`].
//!
//! - [`RedisHarness`]: the default `redis` driver (redis-rs `ConnectionManager`).
//! - `RedisDeadpoolHarness`: the `deadpool` driver (feature `deadpool`).
//! - `RedisBb8Harness`: the `bb8` driver (feature `bb8`).
//! - [`RedisMsgpackHarness`]: the `redis` driver publishing MessagePack.
//!
//! Every harness can inject faults ([`cut`](Harness::cut) SIGKILLs the server,
//! [`restore`](Harness::restore) restarts it on the same port), cut one node
//! off ([`cut_node`](Harness::cut_node): each node connects as its own ACL
//! user, see [`NodeUsers`]) and publish raw bytes on a room's channel. Its adapters use short timeouts and a
//! 20 ms..500 ms reconnect backoff ([`fast_builder`]) so fault cases run fast.
//!
//! ```ignore
//! // rooms-adapter-redis/tests/conformance.rs
//! mod redis {
//!     rooms_conformance::conformance_suite!(
//!         rooms_testkit::redis::RedisHarness,
//!         capabilities = [fault_injection, raw_publish, emitter, control, history, node_fault_injection],
//!     );
//! }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::wire::{self, Codec, DEFAULT_CHANNEL_PREFIX};
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_redis::redis;
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder};
use rooms_conformance::{Capabilities, Harness};
use tokio::sync::Mutex;

use crate::redis_acl::{NodeUsers, url_with_user};
use crate::redis_server::RedisServer;

/// How harness adapters publish and encode.
pub trait Flavor: Send + Sync + 'static {
    /// A short name, e.g. `redis/deadpool`.
    const NAME: &'static str;
    /// Chooses the driver (and anything else) on a builder.
    fn configure(builder: RedisAdapterBuilder) -> RedisAdapterBuilder;
}

/// The default `redis` driver (redis-rs `ConnectionManager`), JSON.
#[derive(Debug)]
pub enum ConnectionManagerFlavor {}

/// The `deadpool` driver (a pool of 4), JSON.
#[cfg(feature = "deadpool")]
#[derive(Debug)]
pub enum DeadpoolFlavor {}

/// The `bb8` driver (a pool of 4), JSON.
#[cfg(feature = "bb8")]
#[derive(Debug)]
pub enum Bb8Flavor {}

/// The `redis` driver, MessagePack.
#[derive(Debug)]
pub enum MsgpackFlavor {}

impl Flavor for ConnectionManagerFlavor {
    const NAME: &'static str = "redis";
    fn configure(builder: RedisAdapterBuilder) -> RedisAdapterBuilder {
        builder.redis_driver()
    }
}

#[cfg(feature = "deadpool")]
impl Flavor for DeadpoolFlavor {
    const NAME: &'static str = "redis/deadpool";
    fn configure(builder: RedisAdapterBuilder) -> RedisAdapterBuilder {
        builder.deadpool_driver(4)
    }
}

#[cfg(feature = "bb8")]
impl Flavor for Bb8Flavor {
    const NAME: &'static str = "redis/bb8";
    fn configure(builder: RedisAdapterBuilder) -> RedisAdapterBuilder {
        builder.bb8_driver(4)
    }
}

impl Flavor for MsgpackFlavor {
    const NAME: &'static str = "redis/msgpack";
    fn configure(builder: RedisAdapterBuilder) -> RedisAdapterBuilder {
        builder.redis_driver().codec(Codec::MessagePack)
    }
}

/// A throwaway `redis-server` and adapters on it that publish with flavor `F`.
pub struct RedisHarnessWith<F: Flavor> {
    server: Mutex<RedisServer>,
    port: u16,
    url: String,
    users: NodeUsers,
    client: redis::Client,
    flavor: PhantomData<fn() -> F>,
}

/// The `redis` driver.
pub type RedisHarness = RedisHarnessWith<ConnectionManagerFlavor>;
/// The `deadpool` driver.
#[cfg(feature = "deadpool")]
pub type RedisDeadpoolHarness = RedisHarnessWith<DeadpoolFlavor>;
/// The `bb8` driver.
#[cfg(feature = "bb8")]
pub type RedisBb8Harness = RedisHarnessWith<Bb8Flavor>;
/// The `redis` driver with the MessagePack codec.
pub type RedisMsgpackHarness = RedisHarnessWith<MsgpackFlavor>;

impl<F: Flavor> fmt::Debug for RedisHarnessWith<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHarness")
            .field("flavor", &F::NAME)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A builder for `url` with the short timeouts the harnesses use: connect,
/// subscribe 2 s; publish 1 s; PING every 1 s, answered within 1 s; reconnect
/// backoff 20 ms..500 ms; unsubscribe delay 50 ms.
pub fn fast_builder(url: &str) -> RedisAdapterBuilder {
    fast_settings(RedisAdapter::builder(url))
}

/// The harnesses' short timeouts (see [`fast_builder`]) on any topology's
/// builder.
pub fn fast_settings(builder: RedisAdapterBuilder) -> RedisAdapterBuilder {
    builder
        .connect_timeout(Duration::from_secs(2))
        .subscribe_timeout(Duration::from_secs(2))
        .publish_timeout(Duration::from_secs(1))
        .ping(Duration::from_secs(1), Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .unsubscribe_delay(Duration::from_millis(50))
}

fn unavailable(what: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable {
        medium: "test redis-server".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// `PUBLISH` of raw bytes on `room`'s channel (default prefix) through
/// `client`, as a foreign or broken publisher would.
pub async fn publish_raw_to(
    client: &redis::Client,
    room: &RoomName,
    payload: &[u8],
) -> Result<(), Error> {
    let medium = format!("redis at {}", client.get_connection_info().addr());
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|error| rooms_adapter_redis::error::from_redis("connect", &medium, error))?;
    redis::cmd("PUBLISH")
        .arg(wire::channel_name(DEFAULT_CHANNEL_PREFIX, room.as_str()))
        .arg(payload)
        .exec_async(&mut connection)
        .await
        .map_err(|error| rooms_adapter_redis::error::from_redis("publish", &medium, error))
}

impl<F: Flavor> RedisHarnessWith<F> {
    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server, e.g. to pause it.
    pub fn server(&self) -> &Mutex<RedisServer> {
        &self.server
    }

    /// A new adapter of this flavor, with `configure` applied after the
    /// harness settings.
    pub fn adapter_with(
        &self,
        configure: impl FnOnce(RedisAdapterBuilder) -> RedisAdapterBuilder,
    ) -> Result<RedisAdapter, Error> {
        configure(F::configure(fast_builder(&self.url))).build()
    }
}

#[async_trait]
impl<F: Flavor> Harness for RedisHarnessWith<F> {
    async fn setup() -> Result<Self, Error> {
        let server = RedisServer::start()
            .await
            .map_err(|error| unavailable("cannot start redis-server", error))?;
        let url = server.url();
        let client = redis::Client::open(url.as_str())
            .map_err(|error| Error::Config(format!("bad test url {url}: {error}")))?;
        Ok(Self {
            port: server.port(),
            server: Mutex::new(server),
            url,
            users: NodeUsers::default(),
            client,
            flavor: PhantomData,
        })
    }

    /// An adapter connecting as a user of its own (for
    /// [`cut_node`](Harness::cut_node)).
    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        let user = self.users.create(&[self.port]).await?;
        let url = url_with_user(&self.url, &user);
        let adapter: Arc<dyn RoomAdapter> = Arc::new(F::configure(fast_builder(&url)).build()?);
        self.users.register(&adapter, user);
        Ok(adapter)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn cut(&self) -> Result<(), Error> {
        self.server
            .lock()
            .await
            .kill()
            .map_err(|error| unavailable("cannot kill redis-server", error))
    }

    async fn restore(&self) -> Result<(), Error> {
        // With the node users from its first moment: a node that reconnects
        // at once is never refused.
        let args = self.users.server_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server
            .lock()
            .await
            .restart_with_args(&args)
            .await
            .map_err(|error| unavailable("cannot restart redis-server", error))
    }

    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.cut(node, &[self.port]).await
    }

    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.users.restore(node, &[self.port]).await
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        publish_raw_to(&self.client, room, payload).await
    }

    async fn teardown(self) {
        let mut server = self.server.into_inner();
        let _ = server.kill();
    }
}
