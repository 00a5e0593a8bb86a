//! Settings: [`NatsConfig`] (validated by the builder), [`Credentials`],
//! [`TlsSettings`] and the defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::{Codec, DEFAULT_MAX_PAYLOAD_BYTES};

use crate::subject::check_prefix;

/// Default subject prefix: room `chat` is subject `sse.room.rY2hhdA` (see
/// [`subject`](crate::subject)).
pub const DEFAULT_SUBJECT_PREFIX: &str = "sse.room.";
/// What the default control prefix puts before the subject prefix:
/// `rooms-control.sse.room.` by default.
pub const DEFAULT_CONTROL_PREFIX_HEAD: &str = "rooms-control.";
/// Default limit on establishing the first connection: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on a subscribe's round trip (the flush that confirms it): 5 s.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on one publish (handing it to the client): 2 s.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default delay before an emptied room is really unsubscribed: 500 ms.
pub const DEFAULT_UNSUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// Default first reconnect delay: 100 ms.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default cap on the reconnect delay: 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default interval of the client's PINGs, which detect a dead connection: 10 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Default number of messages the client buffers per room before it drops
/// (and reports a slow consumer): 65,536, async-nats's own default.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;
/// The longest duration any setting accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest `max_payload_bytes`: 64 MiB, the most a NATS server accepts.
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// How the adapter authenticates to NATS. Without credentials set here, the
/// first server URL's `user:password@` (or `token@`) is used (async-nats
/// itself ignores credentials in URLs).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// None beyond what the URLs carry.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An NKey seed (`SU...`), feature `nkeys`.
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    NKey(String),
    /// A `.creds` file (a user JWT and its NKey seed), feature `nkeys`.
    /// Read when the adapter connects.
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    CredsFile(PathBuf),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            Credentials::Token(_) => f.write_str("Token(***)"),
            #[cfg(feature = "nkeys")]
            Credentials::NKey(_) => f.write_str("NKey(***)"),
            #[cfg(feature = "nkeys")]
            Credentials::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
        }
    }
}

/// TLS settings (async-nats speaks TLS through rustls with the `ring`
/// provider). `tls://` URLs, or [`require`](Self::require), turn it on.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// Refuse to talk to a server without TLS.
    pub require: bool,
    /// Start TLS before the server's INFO (the server's `handshake_first`).
    pub first: bool,
    /// PEM files with extra root certificates (the system's are used too).
    pub root_certificates: Vec<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// The validated settings of a [`NatsAdapter`](crate::NatsAdapter).
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) subject_prefix: String,
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
    pub(crate) subscription_capacity: usize,
    pub(crate) client_name: Option<String>,
    pub(crate) credentials: Credentials,
    pub(crate) tls: TlsSettings,
}

impl NatsConfig {
    pub(crate) fn new(servers: Vec<String>) -> Self {
        Self {
            servers,
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
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
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            client_name: None,
            credentials: Credentials::None,
            tls: TlsSettings::default(),
        }
    }

    /// Checks every setting; the error names the bad value.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.servers.is_empty() {
            return Err(Error::Config(
                "at least one NATS server URL is needed, got none".into(),
            ));
        }
        for url in &self.servers {
            url.parse::<async_nats::ServerAddr>().map_err(|error| {
                Error::Config(format!(
                    "NATS server URL {:?} is invalid: {error}",
                    crate::redact_url(url)
                ))
            })?;
        }
        check_prefix("subject_prefix", &self.subject_prefix).map_err(Error::Config)?;
        let control = self.control_prefix();
        check_prefix("control_prefix", &control).map_err(Error::Config)?;
        if control.starts_with(&self.subject_prefix) || self.subject_prefix.starts_with(&control) {
            return Err(Error::Config(format!(
                "control_prefix {control:?} and subject_prefix {:?} overlap (one starts with \
                 the other): a control subject could be a room subject",
                self.subject_prefix
            )));
        }
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("subscribe_timeout", self.subscribe_timeout),
            ("publish_timeout", self.publish_timeout),
            ("ping_interval", self.ping_interval),
            ("reconnect_backoff min", self.backoff_min),
            ("reconnect_backoff max", self.backoff_max),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::Config(format!(
                    "{name} must be greater than zero, got {value:?}"
                )));
            }
        }
        for (name, value) in positive
            .into_iter()
            .chain([("unsubscribe_delay", self.unsubscribe_delay)])
        {
            if value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{name} must be at most {MAX_DURATION:?}, got {value:?}"
                )));
            }
        }
        if self.backoff_min > self.backoff_max {
            return Err(Error::Config(format!(
                "reconnect_backoff min ({:?}) must not exceed max ({:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        let sizes = [
            (
                "max_payload_bytes",
                self.max_payload_bytes,
                MAX_PAYLOAD_LIMIT,
            ),
            ("subscription_capacity", self.subscription_capacity, 1 << 20),
        ];
        for (name, value, max) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1, got 0")));
            }
            if value > max {
                return Err(Error::Config(format!(
                    "{name} must be at most {max}, got {value}"
                )));
            }
        }
        match &self.credentials {
            Credentials::UserPassword { user, .. } if user.is_empty() => {
                return Err(Error::Config("credentials: the user name is empty".into()));
            }
            Credentials::Token(token) if token.is_empty() => {
                return Err(Error::Config("credentials: the token is empty".into()));
            }
            #[cfg(feature = "nkeys")]
            Credentials::NKey(seed) if !seed.starts_with('S') => {
                return Err(Error::Config(
                    "credentials: an NKey seed starts with `S` (e.g. `SU...`)".into(),
                ));
            }
            #[cfg(feature = "nkeys")]
            Credentials::CredsFile(path) if !path.is_file() => {
                return Err(Error::Config(format!(
                    "credentials: creds file {} does not exist or is not a file",
                    path.display()
                )));
            }
            _ => {}
        }
        let tls = &self.tls;
        for path in &tls.root_certificates {
            check_pem("tls_root_certificates", path, "CERTIFICATE-----")?;
        }
        if let Some((cert, key)) = &tls.client_certificate {
            check_pem("tls_client_certificate", cert, "CERTIFICATE-----")?;
            check_pem("tls_client_certificate", key, "PRIVATE KEY-----")?;
        }
        Ok(())
    }

    /// The server URLs (passwords are in them as given: see
    /// [`redact_url`](crate::redact_url) before logging).
    pub fn servers(&self) -> &[String] {
        &self.servers
    }
    /// The subject prefix: room `chat` is subject `{prefix}rY2hhdA`.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }
    /// The control prefix: control frames travel on `{control_prefix}all` and
    /// `{control_prefix}node.{node token}`.
    pub fn control_prefix(&self) -> String {
        self.control_prefix
            .clone()
            .unwrap_or_else(|| format!("{DEFAULT_CONTROL_PREFIX_HEAD}{}", self.subject_prefix))
    }
    /// The codec used to publish (decoding always auto-detects).
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// The largest payload published or accepted, in bytes (the server's
    /// `max_payload` applies too).
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }
    /// The limit on establishing the first connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The limit on a subscribe's confirming round trip.
    pub fn subscribe_timeout(&self) -> Duration {
        self.subscribe_timeout
    }
    /// The limit on one publish.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }
    /// How long an emptied room stays subscribed in case it refills.
    pub fn unsubscribe_delay(&self) -> Duration {
        self.unsubscribe_delay
    }
    /// The reconnect backoff, `(min, max)`.
    pub fn reconnect_backoff(&self) -> (Duration, Duration) {
        (self.backoff_min, self.backoff_max)
    }
    /// The interval of the client's PINGs.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }
    /// Messages buffered per room by the client before it drops.
    pub fn subscription_capacity(&self) -> usize {
        self.subscription_capacity
    }
    /// The credentials (secrets masked in `Debug`).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
    /// The TLS settings.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The reconnect delay before attempt `attempts` (1-based): 0 for the
    /// first, then `min * 2^(n-2)` capped at `max`, with up to 25 % jitter.
    pub(crate) fn reconnect_delay(min: Duration, max: Duration, attempts: usize) -> Duration {
        if attempts <= 1 {
            return Duration::ZERO;
        }
        let shift = (attempts - 2).min(20) as u32;
        let base = min.saturating_mul(1u32 << shift).min(max);
        // Cheap jitter without a random source: spread by the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 250) / 1000.0);
        base.saturating_sub(jitter)
    }
}

/// Checks that `path` is a readable PEM file with a `-----BEGIN ...{what}`
/// block (async-nats reads it when connecting, with a vaguer error).
fn check_pem(setting: &str, path: &std::path::Path, what: &str) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::Config(format!(
            "{setting}: cannot read {}: {error}",
            path.display()
        ))
    })?;
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(what));
    if found {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{setting}: {} has no PEM block `-----BEGIN ...{what}`",
            path.display()
        )))
    }
}
