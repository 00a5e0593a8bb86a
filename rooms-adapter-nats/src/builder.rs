//! [`NatsAdapterBuilder`]: validated settings for a [`NatsAdapter`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::Codec;

use crate::adapter::NatsAdapter;
use crate::config::{Credentials, NatsConfig, TlsSettings};

/// Builds a [`NatsAdapter`] with validated settings. Start with
/// [`NatsAdapter::builder`] (one URL) or [`NatsAdapter::servers`] (several
/// servers of one cluster: the client fails over between them).
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter::Codec;
/// use rooms_adapter_nats::NatsAdapter;
///
/// let adapter = NatsAdapter::servers(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
///     .subject_prefix("app.room.")
///     .codec(Codec::MessagePack)
///     .user_and_password("app", "secret")
///     .publish_timeout(Duration::from_millis(500))
///     .unsubscribe_delay(Duration::from_millis(200))
///     .build()?;
/// assert_eq!(adapter.config().subject_prefix(), "app.room.");
/// assert_eq!(adapter.config().control_prefix(), "rooms-control.app.room.");
///
/// // Bad input is named in the error.
/// let error = NatsAdapter::builder("http://nope").build().unwrap_err();
/// assert!(error.to_string().contains("http://nope"), "{error}");
/// let error = NatsAdapter::builder("nats://127.0.0.1:4222")
///     .subject_prefix("sse.*.")
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("subject_prefix"), "{error}");
/// let error = NatsAdapter::builder("nats://127.0.0.1:4222")
///     .publish_timeout(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("publish_timeout"), "{error}");
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct NatsAdapterBuilder {
    config: NatsConfig,
}

impl fmt::Debug for NatsAdapterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAdapterBuilder")
            .field("servers", &redacted(&self.config.servers))
            .field("subject_prefix", &self.config.subject_prefix)
            .field("codec", &self.config.codec)
            .field("credentials", &self.config.credentials)
            .finish_non_exhaustive()
    }
}

pub(crate) fn redacted(servers: &[String]) -> Vec<String> {
    servers.iter().map(|url| crate::redact_url(url)).collect()
}

impl NatsAdapter {
    /// A builder for the server at `url`: `nats://[user:password@]host[:port]`,
    /// `tls://...` for TLS, or `host:port` (`nats://` is assumed).
    pub fn builder(url: impl Into<String>) -> NatsAdapterBuilder {
        NatsAdapterBuilder {
            config: NatsConfig::new(vec![url.into()]),
        }
    }

    /// A builder for several servers of one NATS cluster: the client
    /// connects to one of them and fails over to another when it is lost
    /// (servers the cluster announces are used too).
    pub fn servers<I, S>(urls: I) -> NatsAdapterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NatsAdapterBuilder {
            config: NatsConfig::new(urls.into_iter().map(Into::into).collect()),
        }
    }
}

impl NatsAdapterBuilder {
    /// The subject prefix (default `sse.room.`): room `chat` is subject
    /// `{prefix}rY2hhdA` (see [`subject`](crate::subject)). Printable ASCII
    /// without whitespace, `*` or `>`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.subject_prefix = prefix.into();
        self
    }

    /// The control prefix (default `rooms-control.` + the subject prefix):
    /// control frames travel on `{control_prefix}all` and
    /// `{control_prefix}node.{node token}`. Neither prefix may start with
    /// the other.
    pub fn control_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.control_prefix = Some(prefix.into());
        self
    }

    /// The codec envelopes are published in (default JSON). Decoding always
    /// auto-detects, so nodes can switch one by one.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }

    /// The largest envelope published or accepted, in bytes (default 4 MiB).
    /// The server's `max_payload` (1 MiB unless configured) applies too: a
    /// larger publish fails with an error naming both sizes.
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.config.max_payload_bytes = limit;
        self
    }

    /// The limit on establishing the first connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The limit on a subscribe, its confirming round trip included
    /// (default 5 s).
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.config.subscribe_timeout = timeout;
        self
    }

    /// The limit on one publish (default 2 s). Publishes fail at once while
    /// the client is disconnected.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// How long an emptied room stays subscribed in case it refills (default
    /// 500 ms; zero unsubscribes at once). A rejoin within the delay keeps
    /// the subscription; nothing is delivered for the room meanwhile.
    pub fn unsubscribe_delay(mut self, delay: Duration) -> Self {
        self.config.unsubscribe_delay = delay;
        self
    }

    /// The reconnect delays: none before the first attempt, then from `min`
    /// doubling up to `max`, with jitter (default 100 ms..5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max;
        self
    }

    /// The interval of the client's PINGs, which detect a dead connection
    /// (default 10 s; it is lost after two unanswered PINGs).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = interval;
        self
    }

    /// Messages the client buffers per room before it drops and reports a
    /// slow consumer (default 65,536, as async-nats).
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.config.subscription_capacity = capacity;
        self
    }

    /// The client name the server shows in its monitoring.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.config.client_name = Some(name.into());
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.config.credentials = Credentials::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.credentials = Credentials::Token(token.into());
        self
    }

    /// Authenticates with an NKey seed (feature `nkeys`).
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.config.credentials = Credentials::NKey(seed.into());
        self
    }

    /// Authenticates with a `.creds` file (feature `nkeys`), read when the
    /// adapter connects.
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.credentials = Credentials::CredsFile(path.into());
        self
    }

    /// Refuses servers without TLS (`tls://` URLs ask for it too).
    pub fn require_tls(mut self, required: bool) -> Self {
        self.config.tls.require = required;
        self
    }

    /// Starts TLS before the server's INFO (servers with `handshake_first`).
    pub fn tls_first(mut self) -> Self {
        self.config.tls.first = true;
        self.config.tls.require = true;
        self
    }

    /// Trusts the root certificates in a PEM file (besides the system's).
    pub fn tls_root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.root_certificates.push(path.into());
        self
    }

    /// Presents a client certificate (mutual TLS): PEM certificate and key.
    pub fn tls_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Replaces every TLS setting at once.
    pub fn tls(mut self, tls: TlsSettings) -> Self {
        self.config.tls = tls;
        self
    }

    /// Checks every setting and builds the adapter (it connects when the
    /// engine calls [`connect`](rooms_adapter::RoomAdapter::connect)).
    pub fn build(self) -> Result<NatsAdapter, Error> {
        self.config.validate()?;
        Ok(NatsAdapter::new(self.config))
    }
}
