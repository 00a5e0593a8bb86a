//! Configuration: [`RedisAdapterBuilder`] (validated) and the resulting
//! [`RedisConfig`], plus [`Backoff`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::{Codec, DEFAULT_CHANNEL_PREFIX, DEFAULT_MAX_PAYLOAD_BYTES};

use crate::adapter::RedisAdapter;
use crate::driver::PublishDriver;
use crate::redact::redact_url;

/// Default limit on establishing a connection: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on waiting for Redis to acknowledge a SUBSCRIBE: 5 s.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on one publish, queueing included: 2 s.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Default interval between liveness probes (PING) on the subscriber connection: 5 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default limit on a liveness probe's answer: 3 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Default first reconnect delay: 100 ms.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default cap on the reconnect delay: 5 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default delay before an emptied room is really unsubscribed: 500 ms.
pub const DEFAULT_UNSUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// Default number of channels per SUBSCRIBE / UNSUBSCRIBE command: 1,000.
pub const DEFAULT_SUBSCRIBE_BATCH: usize = 1_000;
/// Default number of publishes coalesced into one pipeline: 256.
pub const DEFAULT_PUBLISH_BATCH: usize = 256;
/// Default capacity of the publish queue: 8,192 waiting publishes.
pub const DEFAULT_PUBLISH_QUEUE: usize = 8_192;
/// Default number of pipelines in flight at once: 16.
pub const DEFAULT_PIPELINES_IN_FLIGHT: usize = 16;
/// The longest duration any setting accepts: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest pool size of the `deadpool` and `bb8` drivers.
pub const MAX_POOL_SIZE: usize = 1_024;

/// Default pool size of the `deadpool` and `bb8` drivers: 8 connections.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Capped exponential backoff with jitter: attempt `n` waits a random time
/// between half and all of `min(max, min * 2^n)`.
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter_redis::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// for attempt in 0..10 {
///     let delay = backoff.delay(attempt);
///     assert!(delay <= Duration::from_secs(2));
///     assert!(delay >= Duration::from_millis(50));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min` up to `max`. Validated by the builder that takes it.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// The first delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long to wait before attempt `attempt` (0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let capped = self.min.saturating_mul(factor).min(self.max);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BACKOFF_MIN, DEFAULT_BACKOFF_MAX)
    }
}

/// A number in `[0, 1)`, different on every call; good enough for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone)]
pub(crate) enum DriverChoice {
    /// The first enabled of `redis`, `deadpool`, `bb8`.
    Default,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "deadpool")]
    Deadpool {
        pool_size: usize,
    },
    #[cfg(feature = "bb8")]
    Bb8 {
        pool_size: usize,
    },
    Custom(Arc<dyn PublishDriver>),
}

impl fmt::Debug for DriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverChoice::Default => f.write_str("Default"),
            #[cfg(feature = "redis")]
            DriverChoice::Redis => f.write_str("Redis"),
            #[cfg(feature = "deadpool")]
            DriverChoice::Deadpool { pool_size } => write!(f, "Deadpool({pool_size})"),
            #[cfg(feature = "bb8")]
            DriverChoice::Bb8 { pool_size } => write!(f, "Bb8({pool_size})"),
            DriverChoice::Custom(driver) => write!(f, "Custom({})", driver.name()),
        }
    }
}

/// Builds a [`RedisAdapter`] with validated settings. Start with
/// [`RedisAdapter::builder`].
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter::Codec;
/// use rooms_adapter_redis::RedisAdapter;
///
/// let adapter = RedisAdapter::builder("redis://user:secret@127.0.0.1:6379/0")
///     .channel_prefix("app:room:")
///     .codec(Codec::MessagePack)
///     .publish_timeout(Duration::from_millis(500))
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .build()?;
/// assert_eq!(adapter.config().channel_prefix(), "app:room:");
///
/// // Bad input is named in the error.
/// let error = RedisAdapter::builder("http://nope").build().unwrap_err();
/// assert!(error.to_string().contains("http://nope"));
/// let error = RedisAdapter::builder("redis://127.0.0.1")
///     .publish_timeout(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert!(error.to_string().contains("publish_timeout"));
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisAdapterBuilder {
    url: String,
    config: RedisConfig,
    driver: DriverChoice,
}

/// The validated settings of a [`RedisAdapter`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) channel_prefix: String,
    pub(crate) codec: Codec,
    pub(crate) max_payload_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) subscribe_timeout: Duration,
    pub(crate) publish_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) unsubscribe_delay: Duration,
    pub(crate) subscribe_batch: usize,
    pub(crate) coalesce_publishes: bool,
    pub(crate) publish_batch: usize,
    pub(crate) publish_queue: usize,
    pub(crate) pipelines_in_flight: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
            codec: Codec::Json,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            subscribe_timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            backoff: Backoff::default(),
            unsubscribe_delay: DEFAULT_UNSUBSCRIBE_DELAY,
            subscribe_batch: DEFAULT_SUBSCRIBE_BATCH,
            coalesce_publishes: true,
            publish_batch: DEFAULT_PUBLISH_BATCH,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            pipelines_in_flight: DEFAULT_PIPELINES_IN_FLIGHT,
        }
    }
}

impl RedisConfig {
    /// Checks every setting: durations greater than zero and at most
    /// [`MAX_DURATION`], a backoff whose minimum does not exceed its maximum,
    /// sizes of at least 1. The error names the bad value. Shared by every
    /// builder of this crate.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let config = self;
        let positive = [
            ("connect_timeout", config.connect_timeout),
            ("subscribe_timeout", config.subscribe_timeout),
            ("publish_timeout", config.publish_timeout),
            ("ping interval", config.ping_interval),
            ("ping timeout", config.ping_timeout),
            ("reconnect_backoff min", config.backoff.min),
            ("reconnect_backoff max", config.backoff.max),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::Config(format!(
                    "{name} must be greater than zero, got {value:?}"
                )));
            }
        }
        let bounded = positive
            .into_iter()
            .chain([("unsubscribe_delay", config.unsubscribe_delay)]);
        for (name, value) in bounded {
            if value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{name} must be at most {MAX_DURATION:?}, got {value:?}"
                )));
            }
        }
        if config.backoff.min > config.backoff.max {
            return Err(Error::Config(format!(
                "reconnect_backoff min ({:?}) must not exceed max ({:?})",
                config.backoff.min, config.backoff.max
            )));
        }
        // Upper bounds: Redis refuses bulk strings over 512 MiB; the others
        // size queues and batches that are allocated or awaited as a whole.
        let sizes = [
            (
                "max_payload_bytes",
                config.max_payload_bytes,
                512 * 1024 * 1024,
            ),
            ("subscribe_batch", config.subscribe_batch, 100_000),
            ("publish_batch", config.publish_batch, 100_000),
            ("publish_queue_capacity", config.publish_queue, 1 << 22),
            ("pipelines_in_flight", config.pipelines_in_flight, 1_024),
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
        Ok(())
    }

    /// The channel prefix: room `chat` is channel `{prefix}chat`.
    pub fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }
    /// The codec used to publish (decoding always auto-detects).
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// The largest payload published or accepted, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }
    /// The limit on establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The limit on waiting for a subscribe acknowledgement.
    pub fn subscribe_timeout(&self) -> Duration {
        self.subscribe_timeout
    }
    /// The limit on one publish.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }
    /// The interval between liveness probes on the subscriber connection.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }
    /// The limit on a liveness probe's answer.
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout
    }
    /// The reconnect backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }
    /// How long an emptied room stays subscribed in case it refills.
    pub fn unsubscribe_delay(&self) -> Duration {
        self.unsubscribe_delay
    }
    /// Channels per SUBSCRIBE / UNSUBSCRIBE command.
    pub fn subscribe_batch(&self) -> usize {
        self.subscribe_batch
    }
    /// Whether concurrent publishes are coalesced into pipelines.
    pub fn coalesce_publishes(&self) -> bool {
        self.coalesce_publishes
    }
    /// Publishes per pipeline, at most.
    pub fn publish_batch(&self) -> usize {
        self.publish_batch
    }
}

/// The settings setters shared by [`RedisAdapterBuilder`] and the cluster
/// builder, each writing into the builder's `config: RedisConfig`. Every
/// builder lists all of them, in this order, with its own docs:
///
/// ```text
/// config_setters! {
///     /// Channel prefix (default `sse:room:`).
///     channel_prefix;
///     // ... every other setter, in order
/// }
/// ```
macro_rules! config_setters {
    (
        $(#[$channel_prefix:meta])* channel_prefix;
        $(#[$codec:meta])* codec;
        $(#[$max_payload_bytes:meta])* max_payload_bytes;
        $(#[$connect_timeout:meta])* connect_timeout;
        $(#[$subscribe_timeout:meta])* subscribe_timeout;
        $(#[$publish_timeout:meta])* publish_timeout;
        $(#[$ping:meta])* ping;
        $(#[$reconnect_backoff:meta])* reconnect_backoff;
        $(#[$unsubscribe_delay:meta])* unsubscribe_delay;
        $(#[$subscribe_batch:meta])* subscribe_batch;
        $(#[$coalesce_publishes:meta])* coalesce_publishes;
        $(#[$publish_batch:meta])* publish_batch;
        $(#[$publish_queue_capacity:meta])* publish_queue_capacity;
        $(#[$pipelines_in_flight:meta])* pipelines_in_flight;
    ) => {
        $(#[$channel_prefix])*
        pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.config.channel_prefix = prefix.into();
            self
        }

        $(#[$codec])*
        pub fn codec(mut self, codec: ::rooms_adapter::wire::Codec) -> Self {
            self.config.codec = codec;
            self
        }

        $(#[$max_payload_bytes])*
        pub fn max_payload_bytes(mut self, limit: usize) -> Self {
            self.config.max_payload_bytes = limit;
            self
        }

        $(#[$connect_timeout])*
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.config.connect_timeout = timeout;
            self
        }

        $(#[$subscribe_timeout])*
        pub fn subscribe_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.config.subscribe_timeout = timeout;
            self
        }

        $(#[$publish_timeout])*
        pub fn publish_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.config.publish_timeout = timeout;
            self
        }

        $(#[$ping])*
        pub fn ping(mut self, interval: ::std::time::Duration, timeout: ::std::time::Duration) -> Self {
            self.config.ping_interval = interval;
            self.config.ping_timeout = timeout;
            self
        }

        $(#[$reconnect_backoff])*
        pub fn reconnect_backoff(mut self, min: ::std::time::Duration, max: ::std::time::Duration) -> Self {
            self.config.backoff = $crate::config::Backoff::new(min, max);
            self
        }

        $(#[$unsubscribe_delay])*
        pub fn unsubscribe_delay(mut self, delay: ::std::time::Duration) -> Self {
            self.config.unsubscribe_delay = delay;
            self
        }

        $(#[$subscribe_batch])*
        pub fn subscribe_batch(mut self, channels: usize) -> Self {
            self.config.subscribe_batch = channels;
            self
        }

        $(#[$coalesce_publishes])*
        pub fn coalesce_publishes(mut self, coalesce: bool) -> Self {
            self.config.coalesce_publishes = coalesce;
            self
        }

        $(#[$publish_batch])*
        pub fn publish_batch(mut self, batch: usize) -> Self {
            self.config.publish_batch = batch;
            self
        }

        $(#[$publish_queue_capacity])*
        pub fn publish_queue_capacity(mut self, capacity: usize) -> Self {
            self.config.publish_queue = capacity;
            self
        }

        $(#[$pipelines_in_flight])*
        pub fn pipelines_in_flight(mut self, pipelines: usize) -> Self {
            self.config.pipelines_in_flight = pipelines;
            self
        }
    };
}
#[cfg(feature = "cluster")]
pub(crate) use config_setters;

impl fmt::Debug for RedisAdapterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapterBuilder")
            .field("url", &redact_url(&self.url))
            .field("config", &self.config)
            .field("driver", &self.driver)
            .finish()
    }
}

impl RedisAdapterBuilder {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            config: RedisConfig::default(),
            driver: DriverChoice::Default,
        }
    }

    config_setters! {
        /// Channel prefix (default `sse:room:`, as the TypeScript package). No
        /// separator is added: room `chat` is channel `{prefix}chat`. May be empty.
        channel_prefix;

        /// Codec for publishing (default JSON, readable by TypeScript nodes).
        /// Decoding always auto-detects, so nodes can switch one at a time.
        codec;

        /// Largest payload in bytes (default 4 MiB). A larger outbound envelope
        /// fails with [`Error::PayloadTooLarge`]; a larger inbound payload is
        /// skipped and counted.
        max_payload_bytes;

        /// Limit on establishing a connection (default 5 s).
        connect_timeout;

        /// Limit on waiting for Redis to acknowledge a subscription (default 5 s).
        /// A subscribe that runs out of time while Redis is down returns a
        /// retryable error; the room stays wanted and is subscribed on reconnect.
        subscribe_timeout;

        /// Limit on one publish, queueing included (default 2 s).
        publish_timeout;

        /// Liveness probe of the subscriber connection: a PING every `interval`
        /// that must be answered within `timeout` (defaults 5 s and 3 s). A missed
        /// answer is treated as connection loss: a subscription that silently
        /// died (proxies, failovers) is detected and rebuilt.
        ping;

        /// Reconnect backoff: from `min`, doubling up to `max`, with jitter
        /// (defaults 100 ms and 5 s).
        reconnect_backoff;

        /// How long a room that lost its last local member stays subscribed in case
        /// it refills (default 500 ms; zero unsubscribes at once). Messages of an
        /// unsubscribed room are never delivered, delay or not.
        unsubscribe_delay;

        /// Channels per SUBSCRIBE / UNSUBSCRIBE command (default 1,000). Pending
        /// subscriptions are collected while a command is in flight and sent
        /// together.
        subscribe_batch;

        /// Whether concurrent publishes are coalesced into pipelines by a
        /// publisher task (default `true`). A publish made while no other is in
        /// progress still goes straight to the driver, so coalescing adds no
        /// latency when idle. With `false`, every publish calls the driver
        /// directly.
        coalesce_publishes;

        /// Most publishes per pipeline (default 256).
        publish_batch;

        /// Capacity of the publish queue (default 8,192). When it is full,
        /// publishers wait (within their publish timeout).
        publish_queue_capacity;

        /// Most pipelines in flight at once (default 16).
        pipelines_in_flight;
    }

    /// Publish through redis-rs's `ConnectionManager` (the default when the
    /// `redis` feature is on).
    #[cfg(feature = "redis")]
    pub fn redis_driver(mut self) -> Self {
        self.driver = DriverChoice::Redis;
        self
    }

    /// Publish through a deadpool-redis pool of `pool_size` connections.
    #[cfg(feature = "deadpool")]
    pub fn deadpool_driver(mut self, pool_size: usize) -> Self {
        self.driver = DriverChoice::Deadpool { pool_size };
        self
    }

    /// Publish through a bb8 pool of `pool_size` connections.
    #[cfg(feature = "bb8")]
    pub fn bb8_driver(mut self, pool_size: usize) -> Self {
        self.driver = DriverChoice::Bb8 { pool_size };
        self
    }

    /// Publish through any [`PublishDriver`], e.g. one over another client
    /// library. It should talk to the same Redis as the URL.
    pub fn driver(mut self, driver: impl PublishDriver) -> Self {
        self.driver = DriverChoice::Custom(Arc::new(driver));
        self
    }

    /// Validates the settings and returns an adapter, not yet connected (the
    /// engine connects it, handing it the node id).
    ///
    /// Errors are [`Error::Config`] naming the bad value: an unparsable URL
    /// (with the password masked), a zero duration, a backoff whose minimum is
    /// above its maximum, a zero size.
    pub fn build(self) -> Result<RedisAdapter, Error> {
        let config = self.config;
        let client = parse_url(&self.url)?;
        config.validate()?;
        match &self.driver {
            #[cfg(feature = "deadpool")]
            DriverChoice::Deadpool { pool_size }
                if *pool_size == 0 || *pool_size > MAX_POOL_SIZE =>
            {
                return Err(Error::Config(format!(
                    "deadpool_driver pool_size must be between 1 and {MAX_POOL_SIZE}, got {pool_size}"
                )));
            }
            #[cfg(feature = "bb8")]
            DriverChoice::Bb8 { pool_size } if *pool_size == 0 || *pool_size > MAX_POOL_SIZE => {
                return Err(Error::Config(format!(
                    "bb8_driver pool_size must be between 1 and {MAX_POOL_SIZE}, got {pool_size}"
                )));
            }
            DriverChoice::Default
                if cfg!(not(any(
                    feature = "redis",
                    feature = "deadpool",
                    feature = "bb8"
                ))) =>
            {
                return Err(Error::Config(
                    "no publish driver: enable a feature of rooms-adapter-redis \
                     (`redis`, `deadpool` or `bb8`) or pass one with `.driver(..)`"
                        .into(),
                ));
            }
            _ => {}
        }
        Ok(RedisAdapter::new(client, config, self.driver))
    }
}

/// Parses a Redis URL into a client, with errors that name the URL (password
/// masked) and the reason.
pub(crate) fn parse_url(url: &str) -> Result<redis::Client, Error> {
    let shown = redact_url(url);
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "invalid redis URL {shown:?}: unsupported scheme {other:?} \
                 (expected redis://, rediss:// or redis+unix://)"
            )));
        }
        None => {
            return Err(Error::Config(format!(
                "invalid redis URL {shown:?}: missing scheme (expected e.g. redis://127.0.0.1:6379)"
            )));
        }
    }
    if cfg!(not(feature = "tls")) && matches!(scheme, Some("rediss" | "valkeys")) {
        return Err(Error::Config(format!(
            "invalid redis URL {shown:?}: TLS (rediss://) needs the `tls` feature of rooms-adapter-redis"
        )));
    }
    #[cfg(feature = "tls")]
    install_tls_provider();
    redis::Client::open(url)
        .map_err(|error| Error::Config(format!("invalid redis URL {shown:?}: {error}")))
}

/// Makes ring the process-wide rustls provider unless one is installed, so a
/// TLS connection cannot fail for want of one (or for two features enabling
/// two providers).
#[cfg(feature = "tls")]
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_debug_masks_the_password() {
        let builder =
            RedisAdapterBuilder::new("redis://user:hunter2@cache:6379/0?pass=hunter3".into());
        let shown = format!("{builder:?}");
        assert!(
            shown.contains("redis://user:***@cache:6379/0?pass=***"),
            "{shown}"
        );
        assert!(!shown.contains("hunter"), "{shown}");
        let shown = format!("{builder:#?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn parse_errors_mask_the_password() {
        for url in [
            "http://u:hunter2@h",
            "redis://u:hun/ter2@h:notaport",
            "u:hunter2@h",
        ] {
            let error = parse_url(url).err().map(|error| error.to_string());
            let error = error.unwrap_or_default();
            assert!(!error.is_empty(), "{url} is rejected");
            assert!(
                !error.contains("hunter2") && !error.contains("ter2"),
                "{error}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        assert!(backoff.delay(0) <= Duration::from_millis(20));
        assert!(backoff.delay(0) >= Duration::from_millis(10));
        assert!(backoff.delay(100) <= Duration::from_millis(500));
        assert!(backoff.delay(100) >= Duration::from_millis(250));
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff.delay(3)).collect();
        assert!(distinct.len() > 1, "jitter varies");
    }
}
