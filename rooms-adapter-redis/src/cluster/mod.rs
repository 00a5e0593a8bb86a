//! Redis Cluster with sharded pub/sub (feature `cluster`, Redis 7+):
//! [`RedisClusterAdapter`].
//!
//! Classic pub/sub in a Redis Cluster sends every `PUBLISH` to every shard, so
//! it does not scale out. Sharded pub/sub (Redis 7) routes a channel like a
//! key: `SPUBLISH` goes to the master serving the channel's hash slot, and only
//! subscribers connected to that master (`SSUBSCRIBE`) receive it. The channel
//! of a room is still `{prefix}{room}` (wire format v1 unchanged), so rooms
//! spread over the masters by hash slot.
//!
//! - Publishing: [`ClusterDriver`], `SPUBLISH` through redis-rs's async
//!   cluster client, with concurrent publishes coalesced like the single-server
//!   adapter.
//! - Subscribing: one RESP3 connection per master, owned by one background
//!   task. Rooms are grouped by the master serving their slot and subscribed
//!   in batches (a pipeline of one-channel `SSUBSCRIBE`s per master: one
//!   `SSUBSCRIBE` across slots fails with `CROSSSLOT`); `subscribe` returns
//!   once Redis acknowledged the channel.
//! - Resharding and failover: when Redis drops channels whose slot moved (a
//!   `sunsubscribe` nobody asked for), when a master's connection dies, or
//!   when a refreshed slot map shows a room's slot on another master, the task
//!   fetches the slot map (`CLUSTER SLOTS`) again, with backoff, and
//!   subscribes the affected rooms on their new master; then it emits
//!   [`AdapterEvent::Reconnected`](rooms_adapter::AdapterEvent::Reconnected)
//!   for them (messages published meanwhile are lost: tell clients to resync).
//! - Settings, counters, backoff, liveness probes, unsubscribe delay and error
//!   mapping are those of [`RedisAdapter`](crate::RedisAdapter).
//!
//! Pick it when Redis runs as a cluster (e.g. a managed Redis Cluster /
//! ElastiCache / MemoryDB in cluster mode): a single-server URL cannot follow
//! slots, and classic pub/sub there would copy every message to every shard.
//! For a single Redis (with or without Sentinel/replicas), use
//! [`RedisAdapter`](crate::RedisAdapter).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rooms_adapter::Rooms;
//! use rooms_adapter_redis::cluster::RedisClusterAdapter;
//!
//! # async fn run() -> Result<(), rooms_adapter::Error> {
//! let adapter = RedisClusterAdapter::builder([
//!     "redis://10.0.0.1:7000",
//!     "redis://10.0.0.2:7000",
//! ])
//! .channel_prefix("app:room:")
//! .build()?;
//! let rooms = Rooms::builder(Arc::new(adapter)).build().await?;
//! # Ok(()) }
//! ```

mod driver;
mod slot;
mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use redis::ConnectionInfo;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use rooms_adapter::adapter::{AdapterCounters, AdapterStats, EventSink, RoomAdapter};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::driver::ClusterDriver;
use self::slot::SlotMap;
pub use self::slot::{SLOT_COUNT, key_slot};
use self::subscriber::{Command, Shared};
use crate::common;
use crate::config::{RedisConfig, config_setters, parse_url};
use crate::driver::PublishDriver;
use crate::error::closed;
use crate::publisher::{Coalescing, Publisher};
use crate::redact::redact_url;

/// Capacity of the queue of subscribe/unsubscribe requests to the subscriber task.
const COMMAND_QUEUE: usize = 4_096;

/// Builds a [`RedisClusterAdapter`] with validated settings. Start with
/// [`RedisClusterAdapter::builder`]. The settings mean what they mean for
/// [`RedisAdapterBuilder`](crate::RedisAdapterBuilder).
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter_redis::cluster::RedisClusterAdapter;
///
/// let adapter = RedisClusterAdapter::builder(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
///     .channel_prefix("app:room:")
///     .publish_timeout(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(adapter.config().channel_prefix(), "app:room:");
///
/// let error = RedisClusterAdapter::builder(Vec::<String>::new()).build().unwrap_err();
/// assert!(error.to_string().contains("at least one"));
/// let error = RedisClusterAdapter::builder(["http://nope"]).build().unwrap_err();
/// assert!(error.to_string().contains("http://nope"));
/// # Ok::<(), rooms_adapter::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisClusterAdapterBuilder {
    urls: Vec<String>,
    config: RedisConfig,
    publisher_retries: u32,
}

impl std::fmt::Debug for RedisClusterAdapterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| redact_url(url)).collect();
        f.debug_struct("RedisClusterAdapterBuilder")
            .field("urls", &urls)
            .field("config", &self.config)
            .field("publisher_retries", &self.publisher_retries)
            .finish()
    }
}

impl RedisClusterAdapterBuilder {
    config_setters! {
        /// Channel prefix (default `sse:room:`). Room `chat` is the shard channel
        /// `{prefix}chat`; its hash slot decides its master.
        channel_prefix;

        /// Codec for publishing (default JSON). Decoding always auto-detects.
        codec;

        /// Largest payload in bytes (default 4 MiB).
        max_payload_bytes;

        /// Limit on establishing a connection (default 5 s).
        connect_timeout;

        /// Limit on waiting for Redis to acknowledge a subscription (default 5 s).
        subscribe_timeout;

        /// Limit on one publish, queueing included (default 2 s).
        publish_timeout;

        /// Liveness probe of every shard connection (defaults 5 s and 3 s).
        ping;

        /// Backoff of shard reconnects and slot-map refreshes (defaults 100 ms
        /// and 5 s).
        reconnect_backoff;

        /// How long an emptied room stays subscribed in case it refills (default
        /// 500 ms).
        unsubscribe_delay;

        /// Channels per subscribe pipeline and master (default 1,000).
        subscribe_batch;

        /// Whether concurrent publishes are coalesced (default `true`).
        coalesce_publishes;

        /// Most publishes per batch (default 256).
        publish_batch;

        /// Capacity of the publish queue (default 8,192).
        publish_queue_capacity;

        /// Most batches in flight at once (default 16).
        pipelines_in_flight;
    }

    /// How often the cluster client retries a publish that hit a moved slot
    /// or a lost master, within the publish timeout (default 2).
    pub fn publisher_retries(mut self, retries: u32) -> Self {
        self.publisher_retries = retries;
        self
    }

    /// Validates the settings and returns an adapter, not yet connected.
    ///
    /// Errors are [`Error::Config`] naming the bad value: no seed URL, an
    /// unparsable URL (password masked), a zero duration or size, a duration
    /// over a day, a backoff whose minimum is above its maximum.
    pub fn build(self) -> Result<RedisClusterAdapter, Error> {
        if self.urls.is_empty() {
            return Err(Error::Config(
                "a redis cluster needs at least one seed URL".into(),
            ));
        }
        let mut seeds = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            seeds.push(parse_url(url)?.get_connection_info().clone());
        }
        self.config.validate()?;
        let mut client = ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(self.config.connect_timeout)
            .response_timeout(self.config.publish_timeout)
            .retries(self.publisher_retries)
            .min_retry_wait(
                self.config
                    .backoff
                    .min()
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            )
            .max_retry_wait(
                self.config
                    .backoff
                    .max()
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            );
        if let Some(first) = seeds.first() {
            let redis = first.redis_settings();
            if let Some(username) = redis.username() {
                client = client.username(username);
            }
            if let Some(password) = redis.password() {
                client = client.password(password);
            }
        }
        let client = client
            .build()
            .map_err(|error| Error::Config(format!("invalid redis cluster settings: {error}")))?;
        let medium = format!(
            "redis cluster at {}",
            seeds
                .iter()
                .map(|seed| seed.addr().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(RedisClusterAdapter {
            config: self.config,
            client,
            seeds,
            medium,
            counters: Arc::new(AdapterCounters::default()),
            subscriptions: Arc::new(AtomicU64::new(0)),
            lifecycle: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::Idle),
            sink: Mutex::new(None),
        })
    }
}

/// Cross-node room broadcasting over a Redis Cluster with sharded pub/sub
/// (Redis 7+); see the [module docs](self).
pub struct RedisClusterAdapter {
    config: RedisConfig,
    client: ClusterClient,
    seeds: Vec<ConnectionInfo>,
    medium: String,
    counters: Arc<AdapterCounters>,
    subscriptions: Arc<AtomicU64>,
    /// Serialises connect and disconnect (held across their awaits).
    lifecycle: tokio::sync::Mutex<()>,
    /// Never held across an await.
    state: Mutex<State>,
    sink: Mutex<Option<EventSink>>,
}

enum State {
    Idle,
    Running(Arc<Running>, Tasks),
    Closed,
}

struct Running {
    node: NodeId,
    commands: mpsc::Sender<Command>,
    publisher: Publisher,
}

struct Tasks {
    shutdown: watch::Sender<bool>,
    subscriber: JoinHandle<()>,
    publisher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisClusterAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterAdapter")
            .field("medium", &self.medium)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisClusterAdapter {
    /// A builder for the cluster reachable through `seed_urls` (any subset of
    /// its nodes, `redis://[user:password@]host:port`; `rediss://` with feature
    /// `tls`). The full slot map is asked from them at connect.
    pub fn builder<I, S>(seed_urls: I) -> RedisClusterAdapterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisClusterAdapterBuilder {
            urls: seed_urls.into_iter().map(Into::into).collect(),
            config: RedisConfig::default(),
            publisher_retries: 2,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `redis cluster at host:port,...`: the seeds, without credentials.
    pub fn medium(&self) -> &str {
        &self.medium
    }

    /// The node id handed over by [`connect`](RoomAdapter::connect), while connected.
    pub fn node_id(&self) -> Option<NodeId> {
        match &*self.lock_state() {
            State::Running(running, _) => Some(running.node.clone()),
            _ => None,
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn running(&self) -> Result<Arc<Running>, Error> {
        match &*self.lock_state() {
            State::Running(running, _) => Ok(Arc::clone(running)),
            State::Idle | State::Closed => Err(closed()),
        }
    }
}

#[async_trait]
impl RoomAdapter for RedisClusterAdapter {
    fn name(&self) -> &str {
        "redis-cluster"
    }

    /// Fetches the slot map, connects the cluster publisher (each within the
    /// connect timeout) and starts the background tasks; shard subscriber
    /// connections open as rooms need them. Fails with a retryable error when
    /// no seed can be reached.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        match &*self.lock_state() {
            State::Idle => {}
            State::Running(running, _) => {
                return Err(Error::Config(format!(
                    "redis cluster adapter is already connected (node {})",
                    running.node
                )));
            }
            State::Closed => return Err(closed()),
        }
        let topology = subscriber::fetch_topology(
            self.seeds.clone(),
            self.config.connect_timeout,
            self.medium.clone(),
        )
        .await?;
        let slots = Arc::new(SlotMap::default());
        let driver: Arc<dyn PublishDriver> = Arc::new(
            ClusterDriver::connect(&self.client, self.config.connect_timeout, &self.medium)
                .await?
                .with_slot_map(Arc::clone(&slots)),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let coalescing = self.config.coalesce_publishes.then(|| Coalescing {
            batch: self.config.publish_batch,
            queue: self.config.publish_queue,
            in_flight: self.config.pipelines_in_flight,
        });
        let (publisher, publisher_task) = Publisher::start(
            driver,
            self.config.publish_timeout,
            coalescing,
            shutdown_rx.clone(),
        );
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            seeds: self.seeds.clone(),
            medium: self.medium.clone(),
            counters: Arc::clone(&self.counters),
            subscriptions: Arc::clone(&self.subscriptions),
            slots,
        });
        let subscriber_task = tokio::spawn(subscriber::run(
            shared,
            sink.clone(),
            topology,
            commands_rx,
            shutdown_rx,
        ));
        tracing::debug!(medium = %self.medium, %node, "redis cluster adapter connected");
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        *self.lock_state() = State::Running(
            Arc::new(Running {
                node,
                commands,
                publisher,
            }),
            Tasks {
                shutdown,
                subscriber: subscriber_task,
                publisher: publisher_task,
            },
        );
        Ok(())
    }

    /// Stops both background tasks (and waits for them), drops every
    /// connection, and fails every later call with [`Error::Closed`].
    /// Idempotent.
    async fn disconnect(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let previous = std::mem::replace(&mut *self.lock_state(), State::Closed);
        if let State::Running(running, tasks) = previous {
            let _ = tasks.shutdown.send(true);
            drop(running);
            let mut results = vec![tasks.subscriber.await];
            if let Some(publisher) = tasks.publisher {
                results.push(publisher.await);
            }
            for result in results {
                if let Err(error) = result {
                    tracing::warn!(%error, "redis cluster adapter task ended abnormally");
                }
            }
            self.subscriptions.store(0, Ordering::Relaxed);
            tracing::debug!(medium = %self.medium, "redis cluster adapter disconnected");
        }
        Ok(())
    }

    /// Returns once the room's master has acknowledged the `SSUBSCRIBE`.
    /// While that master is unreachable it fails after the subscribe timeout
    /// with a retryable error; the room stays wanted.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        let running = self.running()?;
        let command = |reply| Command::Subscribe {
            room: room.clone(),
            reply,
        };
        common::ask(&running.commands, command, self.config.subscribe_timeout, || {
            format!(
                "subscribe to room {:?} on {} (the room stays wanted and is subscribed when its master is back)",
                room.as_str(),
                self.medium
            )
        })
        .await?
    }

    /// Returns once the room's messages are no longer delivered; the
    /// `SUNSUBSCRIBE` follows after the unsubscribe delay.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        let running = self.running()?;
        let command = |reply| Command::Unsubscribe {
            room: room.clone(),
            reply,
        };
        common::ask(
            &running.commands,
            command,
            self.config.subscribe_timeout,
            || format!("unsubscribe from room {:?}", room.as_str()),
        )
        .await
    }

    /// Encodes (cached per codec), checks the size limit and `SPUBLISH`es on
    /// `{prefix}{room}`. Fails within the publish timeout while the room's
    /// master is unreachable.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let running = self.running()?;
        common::publish(
            &self.config,
            &running.publisher,
            &self.counters,
            room,
            envelope,
            "redis cluster",
        )
        .await
    }

    fn stats(&self) -> AdapterStats {
        common::stats(&self.counters, &self.subscriptions, &self.sink)
    }
}
