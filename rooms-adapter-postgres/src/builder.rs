//! [`PostgresAdapterBuilder`]: validated settings for a [`PostgresAdapter`].

use std::fmt;
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::Codec;

use crate::adapter::PostgresAdapter;
use crate::config::PostgresConfig;
#[cfg(feature = "tls")]
use crate::config::TlsSettings;
use crate::error::PostgresError;

/// Builds a [`PostgresAdapter`] with validated settings. Start with
/// [`PostgresAdapter::builder`] (a connection string) or
/// [`PostgresAdapter::from_config`] (a `tokio_postgres::Config`).
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter::Codec;
/// use rooms_adapter_postgres::PostgresAdapter;
///
/// let adapter = PostgresAdapter::builder("postgres://app:secret@10.0.0.1:5432/app")
///     .channel_prefix("chat_")
///     .codec(Codec::MessagePack)
///     .pool_size(4)
///     .attachment_table("rooms.attachments")
///     .publish_timeout(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(adapter.config().control_prefix(), "rooms_ctl_chat_");
/// assert_eq!(adapter.medium(), "postgres at 10.0.0.1:5432/app"); // no password
///
/// // Bad input is named in the error.
/// let error = PostgresAdapter::builder("postgres://host:notaport/db").build().unwrap_err();
/// assert!(error.to_string().contains("connection string"), "{error}");
/// let error = PostgresAdapter::builder("postgres://localhost/db")
///     .channel_prefix("x".repeat(40))
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("channel_prefix"), "{error}");
/// let error = PostgresAdapter::builder("postgres://localhost/db")
///     .attachment_table("x; DROP TABLE y")
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("attachment_table"), "{error}");
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct PostgresAdapterBuilder {
    config: Result<PostgresConfig, String>,
}

impl fmt::Debug for PostgresAdapterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.config {
            Ok(config) => f
                .debug_struct("PostgresAdapterBuilder")
                .field("config", config)
                .finish(),
            Err(error) => f
                .debug_struct("PostgresAdapterBuilder")
                .field("error", error)
                .finish(),
        }
    }
}

impl PostgresAdapter {
    /// A builder for the server in `connection`: a URL
    /// (`postgres://user:password@host:port/dbname?...`) or key/value
    /// settings (`host=... user=... dbname=...`), as `tokio_postgres` reads
    /// them. Checked by [`build`](PostgresAdapterBuilder::build).
    pub fn builder(connection: impl AsRef<str>) -> PostgresAdapterBuilder {
        let config = tokio_postgres::Config::from_str(connection.as_ref())
            .map(PostgresConfig::new)
            .map_err(|error| format!("the connection string is invalid: {error}"));
        PostgresAdapterBuilder { config }
    }

    /// A builder for an already made `tokio_postgres::Config`.
    pub fn from_config(config: tokio_postgres::Config) -> PostgresAdapterBuilder {
        PostgresAdapterBuilder {
            config: Ok(PostgresConfig::new(config)),
        }
    }
}

impl PostgresAdapterBuilder {
    fn with(mut self, change: impl FnOnce(&mut PostgresConfig)) -> Self {
        if let Ok(config) = &mut self.config {
            change(config);
        }
        self
    }

    /// The channel prefix (default `sse_room_`, at most 37 bytes of
    /// printable ASCII): room channels are `{prefix}` + a 26-character hash
    /// (see [`channel`](crate::channel)).
    pub fn channel_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|config| config.channel_prefix = prefix)
    }

    /// The control prefix (default `rooms_ctl_` + the channel prefix, at
    /// most 36 bytes): control frames travel on `{control_prefix}all` and
    /// `{control_prefix}n{hash}`. Neither prefix may start with the other.
    pub fn control_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|config| config.control_prefix = Some(prefix))
    }

    /// The codec envelopes are published in (default JSON; MessagePack
    /// travels base64-encoded, see [`frame`](crate::frame)).
    pub fn codec(self, codec: Codec) -> Self {
        self.with(|config| config.codec = codec)
    }

    /// The largest envelope published or accepted, in bytes (default 4 MiB).
    pub fn max_payload_bytes(self, limit: usize) -> Self {
        self.with(|config| config.max_payload_bytes = limit)
    }

    /// The limit on establishing a connection (default 5 s).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.with(|config| config.connect_timeout = timeout)
    }

    /// The limit on a subscribe, its `LISTEN` round trip included (default 5 s).
    pub fn subscribe_timeout(self, timeout: Duration) -> Self {
        self.with(|config| config.subscribe_timeout = timeout)
    }

    /// The limit on one publish, getting a pooled connection included
    /// (default 2 s).
    pub fn publish_timeout(self, timeout: Duration) -> Self {
        self.with(|config| config.publish_timeout = timeout)
    }

    /// How long an emptied room stays listened in case it refills (default
    /// 500 ms; zero unlistens at once). Nothing is delivered for it meanwhile.
    pub fn unsubscribe_delay(self, delay: Duration) -> Self {
        self.with(|config| config.unsubscribe_delay = delay)
    }

    /// The reconnect delays of the listening connection: from `min`
    /// doubling up to `max`, with jitter (default 100 ms..5 s).
    pub fn reconnect_backoff(self, min: Duration, max: Duration) -> Self {
        self.with(|config| {
            config.backoff_min = min;
            config.backoff_max = max;
        })
    }

    /// The interval of the liveness probe (`SELECT 1`) on the listening
    /// connection (default 10 s); a probe unanswered for as long counts as
    /// a lost connection.
    pub fn ping_interval(self, interval: Duration) -> Self {
        self.with(|config| config.ping_interval = interval)
    }

    /// The size of the publishing pool (default 8, at most 256).
    pub fn pool_size(self, size: usize) -> Self {
        self.with(|config| config.pool_size = size)
    }

    /// The attachments table (default `rooms_attachments`; `table` or
    /// `schema.table`, plain identifiers). Every node of a cluster must use
    /// the same one.
    pub fn attachment_table(self, table: impl Into<String>) -> Self {
        let table = table.into();
        self.with(|config| config.attachment_table = table)
    }

    /// Frames longer than this many bytes go to the attachments table
    /// (default and maximum 7999, the `NOTIFY` limit; at least 16).
    pub fn attachment_threshold(self, bytes: usize) -> Self {
        self.with(|config| config.attachment_threshold = bytes)
    }

    /// How long attachment rows are kept (default 60 s): a node that reads
    /// an attachment later than this misses the message (counted as a
    /// decode error).
    pub fn attachment_ttl(self, ttl: Duration) -> Self {
        self.with(|config| config.attachment_ttl = ttl)
    }

    /// How often each connected node deletes attachment rows older than the
    /// TTL (default 10 s).
    pub fn attachment_cleanup_interval(self, interval: Duration) -> Self {
        self.with(|config| config.cleanup_interval = interval)
    }

    /// Whether `connect` creates the attachments table if it is missing
    /// (default true). Without it, run
    /// [`PostgresAdapter::attachment_table_sql`] as a migration.
    pub fn create_attachment_table(self, create: bool) -> Self {
        self.with(|config| config.create_attachment_table = create)
    }

    /// Sets the application name the server shows in `pg_stat_activity`.
    pub fn application_name(self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref().to_owned();
        self.with(|config| {
            config.pg.application_name(&name);
        })
    }

    /// Refuses servers without TLS (feature `tls`; `sslmode=require` in the
    /// connection string asks for it too). See [TLS](crate#tls).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn require_tls(self, required: bool) -> Self {
        self.with(|config| config.tls.require = required)
    }

    /// Trusts the root certificates in a PEM file (besides the system's;
    /// feature `tls`). Read by [`build`](Self::build): an unreadable or
    /// invalid file is an error naming it. Without
    /// [`require_tls`](Self::require_tls) the connections use TLS when the
    /// server offers it.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificates(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.with(|config| config.tls.root_certificates.push(path))
    }

    /// Presents a client certificate (mutual TLS, e.g. `cert` authentication
    /// in `pg_hba.conf`): PEM certificate (chain) and key (feature `tls`).
    /// Read by [`build`](Self::build).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_certificate(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        let (cert, key) = (cert.into(), key.into());
        self.with(|config| config.tls.client_certificate = Some((cert, key)))
    }

    /// Replaces every TLS setting at once (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(self, tls: TlsSettings) -> Self {
        self.with(|config| config.tls = tls)
    }

    /// Checks every setting and builds the adapter (it connects when the
    /// engine calls [`connect`](rooms_adapter::RoomAdapter::connect)).
    pub fn build(self) -> Result<PostgresAdapter, Error> {
        let mut config = self
            .config
            .map_err(|reason| PostgresError::InvalidSetting {
                setting: "connection string",
                reason,
            })?;
        config.validate()?;
        crate::tls::resolve(&mut config)?;
        Ok(PostgresAdapter::new(config))
    }
}
