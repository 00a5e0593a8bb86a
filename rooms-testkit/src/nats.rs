//! Conformance harnesses for [`NatsAdapter`] (feature `nats`), each case on
//! its own throwaway [`NatsServer`].
//!
//! - [`NatsHarness`], JSON;
//! - [`NatsMsgpackHarness`], MessagePack.
//!
//! Both can inject faults ([`cut`](Harness::cut) SIGKILLs the server and
//! returns once every adapter of the harness has noticed;
//! [`restore`](Harness::restore) restarts it on the same port) and publish
//! raw bytes on a room's subject with a plain async-nats client. Their
//! adapters use short timeouts and a 20 ms..500 ms reconnect backoff
//! ([`fast_builder`]).
//!
//! ```ignore
//! // rooms-adapter-nats/tests/conformance.rs
//! mod json {
//!     rooms_conformance::conformance_suite!(
//!         rooms_testkit::nats::NatsHarness,
//!         capabilities = [fault_injection, raw_publish, emitter, control],
//!     );
//! }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::wire::Codec;
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_nats::subject::room_subject;
use rooms_adapter_nats::{DEFAULT_SUBJECT_PREFIX, NatsAdapter, NatsAdapterBuilder};
use rooms_conformance::{Capabilities, Harness};

use crate::nats_server::NatsServer;
use crate::poll::wait_for;

/// How harness adapters encode.
pub trait Flavor: Send + Sync + 'static {
    /// A short name, e.g. `nats/msgpack`.
    const NAME: &'static str;
    /// Anything beyond the harness settings.
    fn configure(builder: NatsAdapterBuilder) -> NatsAdapterBuilder;
}

/// JSON.
#[derive(Debug)]
pub enum JsonFlavor {}

/// MessagePack.
#[derive(Debug)]
pub enum MsgpackFlavor {}

impl Flavor for JsonFlavor {
    const NAME: &'static str = "nats";
    fn configure(builder: NatsAdapterBuilder) -> NatsAdapterBuilder {
        builder
    }
}

impl Flavor for MsgpackFlavor {
    const NAME: &'static str = "nats/msgpack";
    fn configure(builder: NatsAdapterBuilder) -> NatsAdapterBuilder {
        builder.codec(Codec::MessagePack)
    }
}

/// A throwaway `nats-server` and adapters on it of flavor `F`.
pub struct NatsHarnessWith<F: Flavor> {
    server: tokio::sync::Mutex<NatsServer>,
    url: String,
    adapters: Mutex<Vec<Weak<NatsAdapter>>>,
    flavor: PhantomData<fn() -> F>,
}

/// JSON.
pub type NatsHarness = NatsHarnessWith<JsonFlavor>;
/// MessagePack.
pub type NatsMsgpackHarness = NatsHarnessWith<MsgpackFlavor>;

impl<F: Flavor> fmt::Debug for NatsHarnessWith<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsHarness")
            .field("flavor", &F::NAME)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A builder for `urls` with the short timeouts the harnesses use: connect,
/// subscribe 2 s; publish 1 s; PING every 1 s; reconnect backoff
/// 20 ms..500 ms; unsubscribe delay 50 ms.
pub fn fast_builder<I, S>(urls: I) -> NatsAdapterBuilder
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    NatsAdapter::servers(urls)
        .connect_timeout(Duration::from_secs(2))
        .subscribe_timeout(Duration::from_secs(2))
        .publish_timeout(Duration::from_secs(1))
        .ping_interval(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .unsubscribe_delay(Duration::from_millis(50))
}

fn unavailable(what: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable {
        medium: "test nats-server".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// Publishes raw bytes on `room`'s subject (default prefix) at `url` with a
/// plain async-nats client, as a foreign or broken publisher would.
pub async fn publish_raw_to(url: &str, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
    let client = async_nats::connect(url)
        .await
        .map_err(|error| unavailable("connect", error))?;
    client
        .publish(
            room_subject(DEFAULT_SUBJECT_PREFIX, room.as_str()),
            payload.to_vec().into(),
        )
        .await
        .map_err(|error| unavailable("publish", error))?;
    client
        .flush()
        .await
        .map_err(|error| unavailable("flush", error))
}

impl<F: Flavor> NatsHarnessWith<F> {
    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server, e.g. to kill it.
    pub fn server(&self) -> &tokio::sync::Mutex<NatsServer> {
        &self.server
    }

    /// A new adapter of this flavor, with `configure` applied after the
    /// harness settings.
    pub fn adapter_with(
        &self,
        configure: impl FnOnce(NatsAdapterBuilder) -> NatsAdapterBuilder,
    ) -> Result<Arc<NatsAdapter>, Error> {
        let adapter = Arc::new(configure(F::configure(fast_builder([self.url.as_str()]))).build()?);
        let mut adapters = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        adapters.retain(|weak| weak.strong_count() > 0);
        adapters.push(Arc::downgrade(&adapter));
        Ok(adapter)
    }

    fn live_adapters(&self) -> Vec<Arc<NatsAdapter>> {
        self.adapters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

#[async_trait]
impl<F: Flavor> Harness for NatsHarnessWith<F> {
    async fn setup() -> Result<Self, Error> {
        let server = NatsServer::start()
            .await
            .map_err(|error| unavailable("cannot start nats-server", error))?;
        let url = server.url();
        Ok(Self {
            server: tokio::sync::Mutex::new(server),
            url,
            adapters: Mutex::default(),
            flavor: PhantomData,
        })
    }

    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        Ok(self.adapter_with(|builder| builder)?)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_fault_injection().with_raw_publish()
    }

    /// Kills the server, then waits until every adapter's client has seen
    /// the connection drop (on loopback, within milliseconds): a publish
    /// right after `cut` must fail, not be buffered by a client that has
    /// not noticed yet.
    async fn cut(&self) -> Result<(), Error> {
        self.server
            .lock()
            .await
            .kill()
            .map_err(|error| unavailable("cannot kill nats-server", error))?;
        let adapters = self.live_adapters();
        wait_for(
            "every adapter sees the server gone",
            Duration::from_secs(10),
            || {
                let down = adapters.iter().all(|adapter| !adapter.is_connected());
                async move { Ok(down) }
            },
        )
        .await
        .map_err(|error| unavailable("cut", error))
    }

    async fn restore(&self) -> Result<(), Error> {
        self.server
            .lock()
            .await
            .restart()
            .await
            .map_err(|error| unavailable("cannot restart nats-server", error))
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        publish_raw_to(&self.url, room, payload).await
    }

    async fn teardown(self) {
        let mut server = self.server.into_inner();
        let _ = server.kill();
    }
}
