//! Settings: [`PostgresConfig`] (validated by the builder) and the defaults.

use std::fmt;
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

use rooms_adapter::wire::{Codec, DEFAULT_MAX_PAYLOAD_BYTES};

use crate::channel::{MAX_CONTROL_PREFIX_BYTES, MAX_PREFIX_BYTES, check_prefix};
use crate::error::PostgresError;
use crate::frame::MAX_NOTIFY_PAYLOAD;
use crate::tls::Connector;

/// Default channel prefix: room `chat` listens on `sse_room_` + a 26-character
/// hash (see [`channel`](crate::channel)).
pub const DEFAULT_CHANNEL_PREFIX: &str = "sse_room_";
/// What the default control prefix puts before the channel prefix:
/// `rooms_ctl_sse_room_` by default.
pub const DEFAULT_CONTROL_PREFIX_HEAD: &str = "rooms_ctl_";
/// Default attachments table.
pub const DEFAULT_ATTACHMENT_TABLE: &str = "rooms_attachments";
/// Default time an attachment row is kept: 60 s.
pub const DEFAULT_ATTACHMENT_TTL: Duration = Duration::from_secs(60);
/// Default interval of the attachment cleanup: 10 s.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(10);
/// Default limit on establishing a connection: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on a subscribe (its `LISTEN` round trip): 5 s.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on one publish: 2 s.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default delay before an emptied room is really `UNLISTEN`ed: 500 ms.
pub const DEFAULT_UNSUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// Default first reconnect delay: 100 ms.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default cap on the reconnect delay: 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default interval of the liveness probe on the listening connection: 10 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Default size of the publishing pool: 8 connections.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// The longest duration any setting accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest `max_payload_bytes`: 256 MiB.
pub const MAX_PAYLOAD_LIMIT: usize = 256 * 1024 * 1024;

/// TLS settings (feature `tls`): rustls with its `ring` provider, every
/// certificate verified. See [TLS](crate#tls) for how they combine with
/// the connection string's `sslmode`.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// Refuse to talk to a server without TLS (as `sslmode=require`).
    pub require: bool,
    /// PEM files with extra root certificates (the system's are used too).
    pub root_certificates: Vec<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// The validated settings of a [`PostgresAdapter`](crate::PostgresAdapter).
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) channel_prefix: String,
    pub(crate) control_prefix: Option<String>,
    pub(crate) codec: Codec,
    pub(crate) max_payload_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) subscribe_timeout: Duration,
    pub(crate) publish_timeout: Duration,
    pub(crate) unsubscribe_delay: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) pool_size: usize,
    pub(crate) attachment_table: String,
    pub(crate) attachment_threshold: usize,
    pub(crate) attachment_ttl: Duration,
    pub(crate) cleanup_interval: Duration,
    pub(crate) create_attachment_table: bool,
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsSettings,
    /// Set by `build` from `pg`'s `sslmode` and `tls`.
    pub(crate) connector: Connector,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("server", &describe(&self.pg))
            .field("channel_prefix", &self.channel_prefix)
            .field("control_prefix", &self.control_prefix())
            .field("codec", &self.codec)
            .field("pool_size", &self.pool_size)
            .field("attachment_table", &self.attachment_table)
            .field("tls", &self.connector.is_tls())
            .finish_non_exhaustive()
    }
}

/// `postgres at host:port/dbname` (never the password).
pub(crate) fn describe(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = pg
                .get_ports()
                .get(i)
                .or_else(|| pg.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("postgres at {hosts}/{}", pg.get_dbname().unwrap_or("-"))
}

impl PostgresConfig {
    pub(crate) fn new(pg: tokio_postgres::Config) -> Self {
        Self {
            pg,
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
            control_prefix: None,
            codec: Codec::Json,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            subscribe_timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            unsubscribe_delay: DEFAULT_UNSUBSCRIBE_DELAY,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            ping_interval: DEFAULT_PING_INTERVAL,
            pool_size: DEFAULT_POOL_SIZE,
            attachment_table: DEFAULT_ATTACHMENT_TABLE.to_owned(),
            attachment_threshold: MAX_NOTIFY_PAYLOAD,
            attachment_ttl: DEFAULT_ATTACHMENT_TTL,
            cleanup_interval: DEFAULT_CLEANUP_INTERVAL,
            create_attachment_table: true,
            #[cfg(feature = "tls")]
            tls: TlsSettings::default(),
            connector: Connector::Plain,
        }
    }

    /// Checks every setting; the error names the bad value.
    pub(crate) fn validate(&self) -> Result<(), PostgresError> {
        let invalid = |setting: &'static str, reason: String| PostgresError::InvalidSetting {
            setting,
            reason,
        };
        check_prefix("channel_prefix", &self.channel_prefix, MAX_PREFIX_BYTES)
            .map_err(|reason| invalid("channel_prefix", reason))?;
        let control = self.control_prefix();
        check_prefix("control_prefix", &control, MAX_CONTROL_PREFIX_BYTES).map_err(|reason| {
            invalid(
                "control_prefix",
                if self.control_prefix.is_none() {
                    format!(
                        "{reason} (the default is derived from channel_prefix: set a shorter one)"
                    )
                } else {
                    reason
                },
            )
        })?;
        if control.starts_with(&self.channel_prefix) || self.channel_prefix.starts_with(&control) {
            return Err(invalid(
                "control_prefix",
                format!(
                    "control_prefix {control:?} and channel_prefix {:?} overlap (one starts with \
                     the other): a control channel could be a room channel",
                    self.channel_prefix
                ),
            ));
        }
        check_table_name(&self.attachment_table)
            .map_err(|reason| invalid("attachment_table", reason))?;
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("subscribe_timeout", self.subscribe_timeout),
            ("publish_timeout", self.publish_timeout),
            ("ping_interval", self.ping_interval),
            ("reconnect_backoff min", self.backoff_min),
            ("reconnect_backoff max", self.backoff_max),
            ("attachment_ttl", self.attachment_ttl),
            ("attachment_cleanup_interval", self.cleanup_interval),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(invalid(
                    "timeouts",
                    format!("{name} must be greater than zero, got {value:?}"),
                ));
            }
        }
        for (name, value) in positive
            .into_iter()
            .chain([("unsubscribe_delay", self.unsubscribe_delay)])
        {
            if value > MAX_DURATION {
                return Err(invalid(
                    "timeouts",
                    format!("{name} must be at most {MAX_DURATION:?}, got {value:?}"),
                ));
            }
        }
        if self.backoff_min > self.backoff_max {
            return Err(invalid(
                "reconnect_backoff",
                format!(
                    "min ({:?}) must not exceed max ({:?})",
                    self.backoff_min, self.backoff_max
                ),
            ));
        }
        let sizes = [
            (
                "max_payload_bytes",
                self.max_payload_bytes,
                1,
                MAX_PAYLOAD_LIMIT,
            ),
            ("pool_size", self.pool_size, 1, 256),
            (
                "attachment_threshold",
                self.attachment_threshold,
                16,
                MAX_NOTIFY_PAYLOAD,
            ),
        ];
        for (name, value, min, max) in sizes {
            if value < min || value > max {
                return Err(invalid(
                    name,
                    format!("{name} must be between {min} and {max}, got {value}"),
                ));
            }
        }
        Ok(())
    }

    /// The server, database and user (never the password).
    pub fn server(&self) -> String {
        describe(&self.pg)
    }
    /// The channel prefix: room channels are `{prefix}{hash}`.
    pub fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }
    /// The control prefix: control frames travel on `{control_prefix}all`
    /// and `{control_prefix}n{hash}`.
    pub fn control_prefix(&self) -> String {
        self.control_prefix
            .clone()
            .unwrap_or_else(|| format!("{DEFAULT_CONTROL_PREFIX_HEAD}{}", self.channel_prefix))
    }
    /// The codec used to publish (decoding always auto-detects).
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// The largest envelope published or accepted, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }
    /// The attachments table, as configured (unquoted).
    pub fn attachment_table(&self) -> &str {
        &self.attachment_table
    }
    /// Frames longer than this many bytes go to the attachments table.
    pub fn attachment_threshold(&self) -> usize {
        self.attachment_threshold
    }
    /// How long an attachment row is kept.
    pub fn attachment_ttl(&self) -> Duration {
        self.attachment_ttl
    }
    /// How often old attachment rows are deleted.
    pub fn attachment_cleanup_interval(&self) -> Duration {
        self.cleanup_interval
    }
    /// The size of the publishing pool.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }
    /// The limit on establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The limit on a subscribe.
    pub fn subscribe_timeout(&self) -> Duration {
        self.subscribe_timeout
    }
    /// The limit on one publish.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }
    /// How long an emptied room stays listened in case it refills.
    pub fn unsubscribe_delay(&self) -> Duration {
        self.unsubscribe_delay
    }
    /// The reconnect backoff, `(min, max)`.
    pub fn reconnect_backoff(&self) -> (Duration, Duration) {
        (self.backoff_min, self.backoff_max)
    }
    /// The interval of the liveness probe on the listening connection.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }
    /// The TLS settings, as given to the builder.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }
    /// Whether the connections speak TLS (when the server offers it, under
    /// `sslmode=prefer`): see [TLS](crate#tls).
    pub fn uses_tls(&self) -> bool {
        self.connector.is_tls()
    }
    /// The `sslmode` the connections use (decided by `build`).
    pub fn ssl_mode(&self) -> tokio_postgres::config::SslMode {
        self.pg.get_ssl_mode()
    }

    /// The attachments table as SQL: each part quoted.
    pub(crate) fn quoted_table(&self) -> String {
        quoted_table(&self.attachment_table)
    }

    /// The reconnect delay before attempt `attempt` (1-based): `min *
    /// 2^(attempt-1)` capped at `max`, minus up to 25 % jitter.
    pub(crate) fn reconnect_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        let base = self
            .backoff_min
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base.saturating_sub(base.mul_f64(f64::from(nanos % 250) / 1000.0))
    }
}

/// A table name: `table` or `schema.table`, each part a plain identifier
/// (ASCII letters, digits, `_`, not starting with a digit, at most 63 bytes).
fn check_table_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(format!(
            "attachment_table {name:?} has more than two parts (use `table` or `schema.table`)"
        ));
    }
    for part in parts {
        let plain = !part.is_empty()
            && part.len() <= 63
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !part.as_bytes()[0].is_ascii_digit();
        if !plain {
            return Err(format!(
                "attachment_table {name:?}: {part:?} is not a plain identifier (ASCII letters, \
                 digits and `_`, not starting with a digit, at most 63 bytes)"
            ));
        }
    }
    Ok(())
}

/// `schema.table` with each part quoted.
pub(crate) fn quoted_table(name: &str) -> String {
    name.split('.')
        .map(crate::channel::quote_identifier)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert!(check_table_name("rooms_attachments").is_ok());
        assert!(check_table_name("app.rooms_attachments").is_ok());
        for bad in ["", "a.b.c", "1abc", "a-b", "a;drop table x", "a\"b", "é"] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
        assert_eq!(quoted_table("app.att"), "\"app\".\"att\"");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut config = PostgresConfig::new(tokio_postgres::Config::new());
        config.backoff_min = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(1000);
        let first = config.reconnect_delay(1);
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(75));
        assert!(config.reconnect_delay(30) <= Duration::from_millis(1000));
        assert!(config.reconnect_delay(30) >= Duration::from_millis(750));
    }
}
