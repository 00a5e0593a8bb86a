//! Conformance harnesses for [`PostgresAdapter`] (feature `postgres`).
//!
//! - [`PostgresHarness`], JSON;
//! - [`PostgresMsgpackHarness`], MessagePack.
//!
//! Every case runs on the shared PostgreSQL server
//! ([`server_url`]: `ROOMS_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) through its own
//! [`FaultProxy`], with its own channel prefixes and attachments table, so
//! cases running in parallel never hear each other. Faults are injected in
//! the proxy, not in the server (other tests share it, and a throwaway
//! cluster per case would cost an `initdb` each): [`cut`](Harness::cut)
//! closes every connection through the proxy and refuses new ones (as a
//! crashed server would), and returns once every adapter of the harness has
//! noticed; [`restore`](Harness::restore) lets connections through again.
//! Raw payloads go straight to the server, framed as the adapter frames them
//! ([`frame`](rooms_adapter_postgres::frame)): inline when they fit, through
//! the attachments table otherwise.
//!
//! ```ignore
//! // rooms-adapter-postgres/tests/conformance.rs
//! mod json {
//!     rooms_conformance::conformance_suite!(rooms_testkit::postgres::PostgresHarness);
//! }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::wire::Codec;
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_postgres::channel::room_channel;
use rooms_adapter_postgres::frame::{MAX_NOTIFY_PAYLOAD, inline_text};
use rooms_adapter_postgres::{PostgresAdapter, PostgresAdapterBuilder};
use rooms_conformance::{Capabilities, Harness};
use tokio_postgres::NoTls;

use crate::poll::wait_for;
use crate::tcp_proxy::FaultProxy;

pub use crate::postgres_server::{DEFAULT_URL, URL_ENV, server_url};

/// How harness adapters encode.
pub trait Flavor: Send + Sync + 'static {
    /// A short name, e.g. `postgres/msgpack`.
    const NAME: &'static str;
    /// Anything beyond the harness settings.
    fn configure(builder: PostgresAdapterBuilder) -> PostgresAdapterBuilder;
}

/// JSON.
#[derive(Debug)]
pub enum JsonFlavor {}

/// MessagePack.
#[derive(Debug)]
pub enum MsgpackFlavor {}

impl Flavor for JsonFlavor {
    const NAME: &'static str = "postgres";
    fn configure(builder: PostgresAdapterBuilder) -> PostgresAdapterBuilder {
        builder
    }
}

impl Flavor for MsgpackFlavor {
    const NAME: &'static str = "postgres/msgpack";
    fn configure(builder: PostgresAdapterBuilder) -> PostgresAdapterBuilder {
        builder.codec(Codec::MessagePack)
    }
}

/// One isolated corner of the shared server: a proxy, channel prefixes and
/// an attachments table of its own, and adapters of flavor `F` on it.
pub struct PostgresHarnessWith<F: Flavor> {
    proxy: FaultProxy,
    /// The server itself.
    direct: tokio_postgres::Config,
    /// The server through the proxy.
    proxied: tokio_postgres::Config,
    channel_prefix: String,
    control_prefix: String,
    table: String,
    adapters: Mutex<Vec<Weak<PostgresAdapter>>>,
    flavor: PhantomData<fn() -> F>,
}

/// JSON.
pub type PostgresHarness = PostgresHarnessWith<JsonFlavor>;
/// MessagePack.
pub type PostgresMsgpackHarness = PostgresHarnessWith<MsgpackFlavor>;

impl<F: Flavor> fmt::Debug for PostgresHarnessWith<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresHarness")
            .field("flavor", &F::NAME)
            .field("proxy_port", &self.proxy.port())
            .field("channel_prefix", &self.channel_prefix)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable {
        medium: "test postgres".into(),
        reason: format!("{what}: {error}"),
        source: Some(Box::new(error)),
    }
}

/// `host:port` of the first TCP host of `config`.
fn tcp_address(config: &tokio_postgres::Config) -> Result<String, Error> {
    let host = config
        .get_hosts()
        .iter()
        .find_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => Some(name.clone()),
            #[cfg(unix)]
            _ => None,
        })
        .ok_or_else(|| Error::Config(format!("{URL_ENV} must name a TCP host")))?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(format!("{host}:{port}"))
}

/// A builder on `config` with the short timeouts the harnesses use:
/// connect 2 s, subscribe 5 s, publish 5 s (a burst of 10,000 publishes
/// queues for the pool: PostgreSQL commits each one); probe every 1 s;
/// reconnect backoff 20 ms..500 ms; unsubscribe delay 50 ms; a pool of 4.
pub fn fast_builder(config: tokio_postgres::Config) -> PostgresAdapterBuilder {
    PostgresAdapter::from_config(config)
        .connect_timeout(Duration::from_secs(2))
        .subscribe_timeout(Duration::from_secs(5))
        .publish_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .unsubscribe_delay(Duration::from_millis(50))
        .pool_size(4)
}

/// A connection straight to the server of `config`, driven by a task.
pub async fn connect_direct(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, Error> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|error| unavailable("connect", error))?;
    tokio::spawn(connection);
    Ok(client)
}

impl<F: Flavor> PostgresHarnessWith<F> {
    /// The attachments table of this harness.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The channel prefix of this harness.
    pub fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    /// The server, not through the proxy.
    pub fn direct_config(&self) -> &tokio_postgres::Config {
        &self.direct
    }

    /// The proxy, e.g. to cut it.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// A new adapter of this flavor through the proxy, with `configure`
    /// applied after the harness settings.
    pub fn adapter_with(
        &self,
        configure: impl FnOnce(PostgresAdapterBuilder) -> PostgresAdapterBuilder,
    ) -> Result<Arc<PostgresAdapter>, Error> {
        let builder = F::configure(fast_builder(self.proxied.clone()))
            .channel_prefix(&self.channel_prefix)
            .control_prefix(&self.control_prefix)
            .attachment_table(&self.table);
        let adapter = Arc::new(configure(builder).build()?);
        let mut adapters = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        adapters.retain(|weak| weak.strong_count() > 0);
        adapters.push(Arc::downgrade(&adapter));
        Ok(adapter)
    }

    fn live_adapters(&self) -> Vec<Arc<PostgresAdapter>> {
        self.adapters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// How many rows the attachments table holds now.
    pub async fn attachment_rows(&self) -> Result<i64, Error> {
        let client = connect_direct(&self.direct).await?;
        let row = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table), &[])
            .await
            .map_err(|error| unavailable("count attachments", error))?;
        row.try_get(0)
            .map_err(|error| unavailable("count attachments", error))
    }
}

#[async_trait]
impl<F: Flavor> Harness for PostgresHarnessWith<F> {
    async fn setup() -> Result<Self, Error> {
        let url = server_url();
        let direct = tokio_postgres::Config::from_str(&url)
            .map_err(|error| Error::Config(format!("{URL_ENV} is not a valid URL: {error}")))?;
        let upstream = tcp_address(&direct)?;
        let proxy = FaultProxy::start(&upstream)
            .await
            .map_err(|error| unavailable("cannot start the proxy", error))?;
        // `Config::host` and `port` add to the lists: start from a new one.
        let mut proxied = tokio_postgres::Config::new();
        proxied.host("127.0.0.1").port(proxy.port());
        if let Some(user) = direct.get_user() {
            proxied.user(user);
        }
        if let Some(password) = direct.get_password() {
            proxied.password(password);
        }
        if let Some(dbname) = direct.get_dbname() {
            proxied.dbname(dbname);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..12];
        Ok(Self {
            proxy,
            direct,
            proxied,
            channel_prefix: format!("t{id}_"),
            control_prefix: format!("c{id}_"),
            table: format!("rooms_att_{id}"),
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

    async fn cut(&self) -> Result<(), Error> {
        self.proxy.cut();
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
        self.proxy.restore();
        Ok(())
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        let client = connect_direct(&self.direct).await?;
        let channel = room_channel(&self.channel_prefix, room.as_str());
        let result = match inline_text(payload, MAX_NOTIFY_PAYLOAD) {
            Some(text) => {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&channel, &&*text])
                    .await
            }
            None => {
                // The table exists once an adapter has connected.
                let sql = format!(
                    "WITH a AS (INSERT INTO {} (payload) VALUES ($2) RETURNING id) \
                     SELECT pg_notify($1, '@' || a.id::text) FROM a",
                    self.table
                );
                client.execute(&sql, &[&channel, &payload]).await
            }
        };
        result
            .map(|_| ())
            .map_err(|error| unavailable("publish raw", error))
    }

    async fn teardown(self) {
        if let Ok(client) = connect_direct(&self.direct).await {
            let _ = client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table))
                .await;
        }
    }
}
