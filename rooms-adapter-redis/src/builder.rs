//! [`RedisAdapterBuilder`]: one builder for every topology (single server,
//! a user's `redis::Client`, Sentinel, Cluster) and every publish driver.

mod connect;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::Codec;

use crate::adapter::RedisAdapter;
use crate::config::url::parse_url;
use crate::config::{Backoff, RedisConfig};
use crate::publish::PublishDriver;
#[cfg(feature = "cluster")]
use connect::cluster;
#[cfg(feature = "sentinel")]
use connect::sentinel;
use connect::{DriverChoice, Topology, single};

/// Builds a [`RedisAdapter`] with validated settings. Start with
/// [`RedisAdapter::builder`] (one server by URL), [`RedisAdapter::from_client`]
/// (your own `redis::Client`: custom TLS roots, credentials),
/// `RedisAdapter::sentinel` (feature `sentinel`) or `RedisAdapter::cluster`
/// (feature `cluster`). Every setting means the same on every topology.
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
    topology: Topology,
    config: RedisConfig,
    driver: DriverChoice,
    control: ControlChoice,
}

/// The control capability asked for; resolved against the channel prefix
/// by [`RedisAdapterBuilder::build`].
#[derive(Debug, Clone)]
struct ControlChoice {
    enabled: bool,
    prefix: Option<String>,
}

impl fmt::Debug for RedisAdapterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapterBuilder")
            .field("topology", &self.topology)
            .field("config", &self.config)
            .field("driver", &self.driver)
            .field("control", &self.control)
            .finish()
    }
}

/// The ways to start building a [`RedisAdapter`], one per topology. They
/// live next to the builder so the adapter module does not depend on it.
impl RedisAdapter {
    /// A builder for the server at `url`: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://...` for TLS (feature `tls`), or `redis+unix:///path`.
    pub fn builder(url: impl Into<String>) -> RedisAdapterBuilder {
        RedisAdapterBuilder::single(url.into())
    }

    /// A builder for the server your `client` reaches, with its settings
    /// (TLS roots, credentials, protocol) as they are.
    ///
    /// ```
    /// use rooms_adapter_redis::RedisAdapter;
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let adapter = RedisAdapter::from_client(client).build()?;
    /// assert_eq!(adapter.medium(), "redis at 127.0.0.1:6379");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_client(client: redis::Client) -> RedisAdapterBuilder {
        RedisAdapterBuilder::client(client)
    }

    /// A builder for a Sentinel deployment (feature `sentinel`): the
    /// sentinels at `sentinel_urls` name the current master of `master_name`,
    /// and the adapter follows it through failovers. The master is reached
    /// with the credentials and database of the first sentinel URL.
    ///
    /// ```
    /// use rooms_adapter_redis::RedisAdapter;
    /// let adapter = RedisAdapter::sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"],
    ///     "mymaster",
    /// )
    /// .build()?;
    /// assert!(adapter.medium().contains("mymaster"));
    /// # Ok::<(), rooms_adapter::Error>(())
    /// ```
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub fn sentinel<I, S>(sentinel_urls: I, master_name: impl Into<String>) -> RedisAdapterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls = sentinel_urls.into_iter().map(Into::into).collect();
        RedisAdapterBuilder::sentinel(urls, master_name.into())
    }

    /// A builder for a Redis Cluster (feature `cluster`, Redis 7+) reached
    /// through any of `seed_urls`, over sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`): one subscriber connection per master,
    /// following slot moves and failovers.
    ///
    /// ```
    /// use rooms_adapter_redis::RedisAdapter;
    /// let adapter = RedisAdapter::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
    ///     .channel_prefix("app:room:")
    ///     .build()?;
    /// assert_eq!(adapter.config().channel_prefix(), "app:room:");
    ///
    /// let error = RedisAdapter::cluster(Vec::<String>::new()).build().unwrap_err();
    /// assert!(error.to_string().contains("at least one"));
    /// # Ok::<(), rooms_adapter::Error>(())
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster<I, S>(seed_urls: I) -> RedisAdapterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisAdapterBuilder::cluster(seed_urls.into_iter().map(Into::into).collect())
    }
}

impl RedisAdapterBuilder {
    pub(crate) fn single(url: String) -> Self {
        Self::with(Topology::Url(url))
    }

    pub(crate) fn client(client: redis::Client) -> Self {
        Self::with(Topology::Client(client))
    }

    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel(urls: Vec<String>, master: String) -> Self {
        Self::with(Topology::Sentinel { urls, master })
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn cluster(urls: Vec<String>) -> Self {
        Self::with(Topology::Cluster(urls))
    }

    fn with(topology: Topology) -> Self {
        Self {
            topology,
            config: RedisConfig::default(),
            driver: DriverChoice::Default,
            control: ControlChoice {
                enabled: true,
                prefix: None,
            },
        }
    }

    /// Channel prefix (default `sse:room:`, as the TypeScript package). No
    /// separator is added: room `chat` is channel `{prefix}chat`. May be empty.
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.channel_prefix = prefix.into();
        self
    }

    /// Whether the adapter offers the control capability (default `true`):
    /// a node connected with [`connect`](rooms_adapter::RoomAdapter::connect)
    /// subscribes its two control channels (see
    /// [`control_prefix`](Self::control_prefix)) and hands their frames to
    /// the engine as [`AdapterEvent::Control`](rooms_adapter::AdapterEvent::Control);
    /// [`publish_control`](rooms_adapter::RoomAdapter::publish_control)
    /// sends frames. With `false`, no control channel is subscribed,
    /// `capabilities().control` is `false` and `publish_control` answers
    /// [`Error::Unsupported`].
    pub fn control(mut self, enabled: bool) -> Self {
        self.control.enabled = enabled;
        self
    }

    /// Prefix of the control channels (default `rooms-control:{channel_prefix}`,
    /// i.e. `rooms-control:sse:room:` with the default channel prefix). No
    /// separator is added. The channels, a wire contract shared with nodes
    /// written in other languages:
    ///
    /// - `{control_prefix}all`: frames for every node (`ControlTarget::All`);
    ///   every connected node subscribes it.
    /// - `{control_prefix}node:{node_id}`: frames for one node
    ///   (`ControlTarget::Node`); only that node subscribes it.
    ///
    /// A control channel must never be a room channel (`{channel_prefix}{room}`).
    /// When one could be (the prefixes start with one another, e.g. with an
    /// empty channel prefix), `build` fails with [`Error::Config`] naming both
    /// prefixes if you set this prefix yourself; if the default prefix
    /// collides (an empty channel prefix, or one that starts
    /// `rooms-control:`), the adapter simply does not offer the control
    /// capability.
    ///
    /// ```
    /// use rooms_adapter::RoomAdapter;
    /// use rooms_adapter_redis::RedisAdapter;
    ///
    /// let adapter = RedisAdapter::builder("redis://127.0.0.1").build()?;
    /// assert_eq!(adapter.config().control_prefix(), Some("rooms-control:sse:room:"));
    /// assert!(adapter.capabilities().control);
    ///
    /// let adapter = RedisAdapter::builder("redis://127.0.0.1")
    ///     .control_prefix("app:control:")
    ///     .build()?;
    /// assert_eq!(adapter.config().control_prefix(), Some("app:control:"));
    ///
    /// // The default of an empty channel prefix would collide: no control.
    /// let adapter = RedisAdapter::builder("redis://127.0.0.1").channel_prefix("").build()?;
    /// assert!(!adapter.capabilities().control);
    ///
    /// // An explicit prefix that collides is an error.
    /// let error = RedisAdapter::builder("redis://127.0.0.1")
    ///     .control_prefix("sse:room:control:")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(error.to_string().contains("sse:room:control:"));
    /// # Ok::<(), rooms_adapter::Error>(())
    /// ```
    pub fn control_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.control.prefix = Some(prefix.into());
        self
    }

    /// Codec for publishing (default JSON, readable by TypeScript nodes).
    /// Decoding always auto-detects, so nodes can switch one at a time.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }

    /// Largest payload in bytes (default 4 MiB). A larger outbound envelope
    /// fails with [`Error::PayloadTooLarge`]; a larger inbound payload is
    /// skipped and counted.
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.config.max_payload_bytes = limit;
        self
    }

    /// Limit on establishing a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Limit on waiting for Redis to acknowledge a subscription (default 5 s).
    /// A subscribe that runs out of time while Redis is down returns a
    /// retryable error; the room stays wanted and is subscribed on reconnect.
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.config.subscribe_timeout = timeout;
        self
    }

    /// Limit on one publish, queueing included (default 2 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// Liveness probe of the subscriber connection: a PING every `interval`
    /// that must be answered within `timeout` (defaults 5 s and 3 s). A missed
    /// answer is treated as connection loss: a subscription that silently
    /// died (proxies, failovers) is detected and rebuilt.
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.ping_interval = interval;
        self.config.ping_timeout = timeout;
        self
    }

    /// Reconnect backoff: from `min`, doubling up to `max`, with jitter
    /// (defaults 100 ms and 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff = Backoff::new(min, max);
        self
    }

    /// How long a room that lost its last local member stays subscribed in case
    /// it refills (default 500 ms; zero unsubscribes at once). Messages of an
    /// unsubscribed room are never delivered, delay or not.
    pub fn unsubscribe_delay(mut self, delay: Duration) -> Self {
        self.config.unsubscribe_delay = delay;
        self
    }

    /// Channels per SUBSCRIBE / UNSUBSCRIBE command (default 1,000). Pending
    /// subscriptions are collected while a command is in flight and sent
    /// together.
    pub fn subscribe_batch(mut self, channels: usize) -> Self {
        self.config.subscribe_batch = channels;
        self
    }

    /// Whether concurrent publishes are coalesced into pipelines by a
    /// publisher task (default `true`). A publish made while no other is in
    /// progress still goes straight to the driver, so coalescing adds no
    /// latency when idle. With `false`, every publish calls the driver
    /// directly.
    pub fn coalesce_publishes(mut self, coalesce: bool) -> Self {
        self.config.coalesce_publishes = coalesce;
        self
    }

    /// Most publishes per pipeline (default 256).
    pub fn publish_batch(mut self, batch: usize) -> Self {
        self.config.publish_batch = batch;
        self
    }

    /// Capacity of the publish queue (default 8,192). When it is full,
    /// publishers wait (within their publish timeout).
    pub fn publish_queue_capacity(mut self, capacity: usize) -> Self {
        self.config.publish_queue = capacity;
        self
    }

    /// Most pipelines in flight at once (default 16).
    pub fn pipelines_in_flight(mut self, pipelines: usize) -> Self {
        self.config.pipelines_in_flight = pipelines;
        self
    }
    /// Cluster only: how often the cluster client retries a publish that hit
    /// a moved slot or a failing master (default 2). Zero fails such a
    /// publish at once.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn publisher_retries(mut self, retries: u32) -> Self {
        self.config.cluster_publish_retries = retries;
        self
    }

    /// Publish through redis-rs's `ConnectionManager` (the default when the
    /// `redis` feature is on). On Sentinel, the built-in driver that follows
    /// the master; on Cluster, `SPUBLISH` through redis-rs's cluster client.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_driver(mut self) -> Self {
        self.driver = DriverChoice::Redis;
        self
    }

    /// Publish through a deadpool-redis pool of `pool_size` connections
    /// (single server only).
    #[cfg(feature = "deadpool")]
    #[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
    pub fn deadpool_driver(mut self, pool_size: usize) -> Self {
        self.driver = DriverChoice::Deadpool { pool_size };
        self
    }

    /// Publish through a bb8 pool of `pool_size` connections (single server
    /// only).
    #[cfg(feature = "bb8")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
    pub fn bb8_driver(mut self, pool_size: usize) -> Self {
        self.driver = DriverChoice::Bb8 { pool_size };
        self
    }

    /// Publish through any [`PublishDriver`], e.g. one over another client
    /// library. It must reach the same Redis deployment.
    pub fn driver(mut self, driver: impl PublishDriver) -> Self {
        self.driver = DriverChoice::Custom(Arc::new(driver));
        self
    }

    /// Validates the settings and returns an adapter, not yet connected (the
    /// engine connects it, handing it the node id).
    ///
    /// Errors are [`Error::Config`] naming the bad value: an unparsable URL
    /// (with the password masked), a zero duration, a backoff whose minimum is
    /// above its maximum, a zero size, a pool driver on a topology it cannot
    /// follow, a [`control_prefix`](Self::control_prefix) that collides with
    /// the channel prefix.
    pub fn build(self) -> Result<RedisAdapter, Error> {
        self.config.validate()?;
        let Self {
            topology,
            mut config,
            driver,
            control,
        } = self;
        config.control_prefix = crate::control::resolve(
            control.enabled,
            control.prefix.as_deref(),
            &config.channel_prefix,
        )?;
        driver.validate()?;
        let adapter = match topology {
            Topology::Url(url) => single(parse_url(&url)?, driver, config)?,
            Topology::Client(client) => single(client, driver, config)?,
            #[cfg(feature = "sentinel")]
            Topology::Sentinel { urls, master } => sentinel(&urls, master, driver, config)?,
            #[cfg(feature = "cluster")]
            Topology::Cluster(urls) => cluster(&urls, driver, config)?,
        };
        Ok(adapter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_debug_masks_the_password() {
        let builder =
            RedisAdapterBuilder::single("redis://user:hunter2@cache:6379/0?pass=hunter3".into());
        let shown = format!("{builder:?}");
        assert!(
            shown.contains("redis://user:***@cache:6379/0?pass=***"),
            "{shown}"
        );
        assert!(!shown.contains("hunter"), "{shown}");
        let shown = format!("{builder:#?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
