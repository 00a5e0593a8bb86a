//! Settings: [`RedisConfig`] (validated by the builder), the defaults, and
//! [`Backoff`]; URL parsing and masking live in [`url`].

mod backoff;
pub(crate) mod url;

use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::wire::{Codec, DEFAULT_CHANNEL_PREFIX, DEFAULT_MAX_PAYLOAD_BYTES};

pub use self::backoff::Backoff;

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

/// The validated settings of a [`RedisAdapter`](crate::RedisAdapter).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub(crate) channel_prefix: String,
    /// The control channels' prefix; `None` when the control capability is
    /// off (resolved by the builder, see [`crate::control`]).
    pub(crate) control_prefix: Option<String>,
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
    /// Cluster only: how often the cluster client retries a publish that
    /// hit a moved slot or a failing master.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) cluster_publish_retries: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            channel_prefix: DEFAULT_CHANNEL_PREFIX.to_owned(),
            control_prefix: Some(crate::control::default_control_prefix(
                DEFAULT_CHANNEL_PREFIX,
            )),
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
            cluster_publish_retries: 2,
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
            ("reconnect_backoff min", config.backoff.min()),
            ("reconnect_backoff max", config.backoff.max()),
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
        if config.backoff.min() > config.backoff.max() {
            return Err(Error::Config(format!(
                "reconnect_backoff min ({:?}) must not exceed max ({:?})",
                config.backoff.min(),
                config.backoff.max()
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
    /// The control channels' prefix, or `None` when the control capability
    /// is off: frames go to `{prefix}all` and `{prefix}node:{node_id}`.
    pub fn control_prefix(&self) -> Option<&str> {
        self.control_prefix.as_deref()
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
