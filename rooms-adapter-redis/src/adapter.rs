//! [`RedisAdapter`]: the one [`RoomAdapter`] over Redis pub/sub, for every
//! topology.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterStats, ControlTarget, EventSink, RoomAdapter,
};
use rooms_adapter::history::{HistoryPage, HistoryPolicy, Position};
use rooms_adapter::{Envelope, Error, NodeId, RoomName, wire};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::error::{closed, timeout};
use crate::expiry::ExpiryChecks;
use crate::history;
use crate::publish::publisher::{Coalescing, Destination, Publisher};
use crate::publish::{DriverOptions, PublishDriver, PublishItem};
use crate::subscribe::redis_link::{RedisLink, Target};
use crate::subscribe::{self, Command, Shared, SlotMap, Topic};

/// How the adapter publishes, decided by the builder.
pub(crate) enum DriverPlan {
    Custom(Arc<dyn PublishDriver>),
    #[cfg(feature = "redis")]
    Manager(redis::Client),
    #[cfg(feature = "deadpool")]
    Deadpool(redis::Client, usize),
    #[cfg(feature = "bb8")]
    Bb8(redis::Client, usize),
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<crate::subscribe::sentinel::SentinelTarget>),
    /// Boxed: the cluster client is far larger than the other variants.
    #[cfg(feature = "cluster")]
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// Cross-node room broadcasting over Redis pub/sub.
///
/// - Publishing goes through a [`PublishDriver`] (feature `redis`: redis-rs
///   `ConnectionManager`; `deadpool`; `bb8`; or your own), with concurrent
///   publishes coalesced into pipelines.
/// - Subscribing uses one dedicated connection owned by a background task
///   that batches SUBSCRIBE/UNSUBSCRIBE, probes liveness, reconnects with
///   backoff, re-subscribes and reports [`AdapterEvent::Reconnected`].
///
/// The wire format is v1, channel `{prefix}{room}` (default prefix
/// `sse:room:`): a Node.js node running `@opinionated-machine/sse-rooms-redis`
/// and a Rust node can share one Redis and one room (with the JSON codec).
///
/// **Control channel.** The adapter declares
/// [`AdapterCapabilities::control`] (unless turned off with
/// [`control`](crate::RedisAdapterBuilder::control)): a node connected with
/// [`connect`](RoomAdapter::connect) subscribes `{control_prefix}all` and
/// `{control_prefix}node:{node_id}` (default control prefix
/// `rooms-control:sse:room:`; see
/// [`control_prefix`](crate::RedisAdapterBuilder::control_prefix)), keeps them
/// through reconnects, failovers and slot moves, and hands every frame on
/// them to the engine as [`AdapterEvent::Control`](rooms_adapter::AdapterEvent::Control).
///
/// **Node id.** Unlike the TypeScript adapter, the node id is not adapter
/// configuration: the engine owns it and hands it over in
/// [`connect`](RoomAdapter::connect), so the engine and the adapter can never
/// disagree about it (and a node can never receive its own messages twice).
/// The adapter delivers everything it receives; the engine drops its own
/// echoes by node id.
///
/// ```no_run
/// use std::sync::Arc;
/// use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
/// use rooms_adapter_redis::RedisAdapter;
///
/// # async fn run() -> Result<(), rooms_adapter::Error> {
/// let adapter = RedisAdapter::builder("redis://127.0.0.1:6379").build()?;
/// let rooms = Rooms::builder(Arc::new(adapter)).node_id("node-a").build().await?;
///
/// let alice = rooms.connect(ConnectOptions::new()).await?;
/// rooms.join(alice.id(), "chat").await?;
/// rooms.broadcast("chat", SseMessage::new("hello"), BroadcastOptions::new()).await?;
/// rooms.shutdown().await;
/// # Ok(()) }
/// ```
///
/// [`AdapterEvent::Reconnected`]: rooms_adapter::AdapterEvent::Reconnected
pub struct RedisAdapter {
    name: &'static str,
    config: RedisConfig,
    medium: String,
    link: Arc<RedisLink>,
    driver: DriverPlan,
    shared: Shared,
    /// Serialises connect and disconnect (held across their awaits).
    lifecycle: tokio::sync::Mutex<()>,
    /// Never held across an await.
    state: Mutex<State>,
    /// The sink of the last connection, for the dropped-inbound count.
    sink: Mutex<Option<EventSink>>,
    /// The id a message without one is encoded with for the history script
    /// to replace: drawn once, it never leaves this node.
    placeholder: String,
    /// When this node last checked each room's history expiry. Never held
    /// across an await.
    expiry_checks: Mutex<ExpiryChecks>,
}

enum State {
    Idle,
    Running(Arc<Running>, Tasks),
    Closed,
}

struct Running {
    node: NodeId,
    /// The subscriber's queue; `None` when connected for publishing only.
    commands: Option<mpsc::Sender<Command>>,
    publisher: Publisher,
}

struct Tasks {
    shutdown: watch::Sender<bool>,
    subscriber: Option<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("medium", &self.medium)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisAdapter {
    pub(crate) fn new(
        name: &'static str,
        medium: String,
        config: RedisConfig,
        target: Target,
        driver: DriverPlan,
    ) -> Self {
        Self {
            name,
            link: Arc::new(RedisLink::new(target, medium.clone())),
            medium,
            config,
            driver,
            shared: Shared {
                counters: Arc::new(AdapterCounters::default()),
                subscriptions: Arc::new(AtomicU64::new(0)),
                slots: Arc::new(SlotMap::default()),
            },
            lifecycle: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::Idle),
            sink: Mutex::new(None),
            placeholder: history::placeholder(),
            expiry_checks: Mutex::new(ExpiryChecks::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `redis at host:port`, `redis cluster at ...`, `redis sentinel master
    /// ...`: the deployment, without credentials.
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

    /// The publish driver's name while connected (`redis`, `deadpool`,
    /// `bb8`, `sentinel`, `cluster`, ...).
    pub fn driver_name(&self) -> Option<String> {
        match &*self.lock_state() {
            State::Running(running, _) => Some(running.publisher.driver_name().to_owned()),
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

    async fn make_driver(&self) -> Result<Arc<dyn PublishDriver>, Error> {
        #[allow(unused_variables)]
        let options = DriverOptions::new(self.config.connect_timeout, self.config.publish_timeout);
        Ok(match &self.driver {
            DriverPlan::Custom(driver) => Arc::clone(driver),
            #[cfg(feature = "redis")]
            DriverPlan::Manager(client) => {
                Arc::new(crate::publish::RedisDriver::connect(client.clone(), &options).await?)
            }
            #[cfg(feature = "deadpool")]
            DriverPlan::Deadpool(client, pool_size) => {
                Arc::new(crate::publish::DeadpoolDriver::from_client(
                    client,
                    &options.with_pool_size(*pool_size),
                )?)
            }
            #[cfg(feature = "bb8")]
            DriverPlan::Bb8(client, pool_size) => Arc::new(crate::publish::Bb8Driver::from_client(
                client,
                &options.with_pool_size(*pool_size),
            )?),
            #[cfg(feature = "sentinel")]
            DriverPlan::Sentinel(target) => Arc::new(
                crate::publish::SentinelDriver::connect(Arc::clone(target), &self.medium, &options)
                    .await?,
            ),
            #[cfg(feature = "cluster")]
            DriverPlan::Cluster(client) => Arc::new(
                crate::publish::ClusterDriver::connect(
                    client,
                    self.config.connect_timeout,
                    &self.medium,
                )
                .await?
                .with_slot_map(Arc::clone(&self.shared.slots)),
            ),
        })
    }

    /// Connects the driver and, with a sink, the subscriber; starts the tasks.
    async fn start(&self, node: NodeId, sink: Option<EventSink>) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        match &*self.lock_state() {
            State::Idle => {}
            State::Running(running, _) => {
                return Err(Error::Config(format!(
                    "{} adapter is already connected (node {})",
                    self.name, running.node
                )));
            }
            State::Closed => return Err(closed()),
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (commands, subscriber_task) = match &sink {
            Some(sink) => {
                let link: Arc<dyn subscribe::link::Link> = self.link.clone();
                let (commands, task) = subscribe::start(
                    &self.config,
                    link,
                    &self.shared,
                    sink.clone(),
                    shutdown_rx.clone(),
                )
                .await?;
                (Some(commands), Some(task))
            }
            None => (None, None),
        };
        let ready = async {
            if let (Some(commands), Some(prefix)) = (&commands, &self.config.control_prefix) {
                self.subscribe_control(commands, prefix, &node).await?;
            }
            self.make_driver().await
        };
        let driver = match ready.await {
            Ok(driver) => driver,
            Err(error) => {
                let _ = shutdown.send(true);
                if let Some(task) = subscriber_task {
                    let _ = task.await;
                }
                return Err(error);
            }
        };
        let coalescing = self.config.coalesce_publishes.then_some(Coalescing {
            batch: self.config.publish_batch,
            queue: self.config.publish_queue,
            in_flight: self.config.pipelines_in_flight,
        });
        let (publisher, publisher_task) =
            Publisher::start(driver, self.config.publish_timeout, coalescing, shutdown_rx);
        tracing::debug!(medium = %self.medium, %node, driver = publisher.driver_name(), "redis adapter connected");
        if let Some(sink) = sink {
            *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        }
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

    /// Subscribes the node's control channels and waits until Redis has
    /// acknowledged both: a frame published once `connect` returned is heard.
    async fn subscribe_control(
        &self,
        commands: &mpsc::Sender<Command>,
        prefix: &str,
        node: &NodeId,
    ) -> Result<(), Error> {
        let topics = crate::control::channels_of(prefix, node).map(Topic::control);
        let limit = self.config.subscribe_timeout;
        subscribe::subscribe_all(commands, topics, limit)
            .await
            .map_err(|error| match error {
                Error::Timeout { .. } => timeout(
                    format!(
                        "subscribe to the control channels {prefix}all and {prefix}node:{node} on {}",
                        self.medium
                    ),
                    limit,
                ),
                other => other,
            })
    }

    /// Sends `command` to the subscriber loop (waiting for room in its
    /// queue: a request is never lost while the loop runs), then waits for
    /// the reply within `limit`.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        limit: Duration,
        describe: impl FnOnce() -> String,
    ) -> Result<T, Error> {
        let running = self.running()?;
        let Some(commands) = &running.commands else {
            return Err(Error::Unsupported {
                adapter: self.name.to_owned(),
                capability: "subscribing on a publish-only connection",
            });
        };
        let (reply, answer) = oneshot::channel();
        commands.send(command(reply)).await.map_err(|_| closed())?;
        match tokio::time::timeout(limit, answer).await {
            Ok(result) => result.map_err(|_| closed()),
            Err(_) => Err(timeout(describe(), limit)),
        }
    }
}

#[async_trait]
impl RoomAdapter for RedisAdapter {
    /// `redis`, `redis-sentinel` or `redis-cluster`.
    fn name(&self) -> &str {
        self.name
    }

    /// Connects the publish driver and the subscriber (discovering the
    /// topology; a single server's or Sentinel master's connection opens now,
    /// a cluster's shard connections as rooms need them), each within the
    /// connect timeout, and starts the background tasks. Fails with a
    /// retryable error when Redis cannot be reached; the adapter can then be
    /// connected again.
    ///
    /// With the control capability on, it also subscribes the node's two
    /// control channels (on a cluster, connecting the masters that serve
    /// them) and returns only once Redis has acknowledged them
    /// (within the subscribe timeout): a control frame published after
    /// `connect` returns is delivered. A control channel Redis refuses (an
    /// ACL) fails the connect with a non-retryable error; turn control off
    /// with [`RedisAdapterBuilder::control`](crate::RedisAdapterBuilder::control)
    /// if the node must run without it.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        self.start(node, Some(sink)).await
    }

    /// Connects the publish driver only: no subscriber connection, and
    /// `subscribe` answers [`Error::Unsupported`]. For an
    /// [`Emitter`](rooms_adapter::emitter::Emitter).
    async fn connect_publisher(&self, node: NodeId) -> Result<(), Error> {
        self.start(node, None).await
    }

    /// The emitter capability always; control unless turned off (or the
    /// channel prefix leaves no room for control channels, see
    /// [`RedisAdapterBuilder::control_prefix`](crate::RedisAdapterBuilder::control_prefix)).
    ///
    /// History on every topology, unless a custom driver cannot run Lua
    /// scripts ([`PublishDriver::runs_scripts`]).
    fn capabilities(&self) -> AdapterCapabilities {
        let mut capabilities = AdapterCapabilities::NONE.with_emitter();
        if self.config.control_prefix.is_some() {
            capabilities = capabilities.with_control();
        }
        let scripts = match &self.driver {
            DriverPlan::Custom(driver) => driver.runs_scripts(),
            #[allow(unreachable_patterns)]
            _ => true,
        };
        if scripts {
            capabilities = capabilities.with_history();
        }
        capabilities
    }

    /// Stops both background tasks (and waits for them), drops the
    /// connections, and fails every later call with [`Error::Closed`].
    /// Idempotent.
    async fn disconnect(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let previous = std::mem::replace(&mut *self.lock_state(), State::Closed);
        if let State::Running(running, tasks) = previous {
            let _ = tasks.shutdown.send(true);
            drop(running);
            let mut results = Vec::new();
            for task in [tasks.subscriber, tasks.publisher].into_iter().flatten() {
                results.push(task.await);
            }
            for result in results {
                if let Err(error) = result {
                    tracing::warn!(%error, "redis adapter task ended abnormally");
                }
            }
            self.shared.subscriptions.store(0, Ordering::Relaxed);
            tracing::debug!(medium = %self.medium, "redis adapter disconnected");
        }
        Ok(())
    }

    /// Returns once Redis has acknowledged the subscription. While Redis is
    /// down it fails after the subscribe timeout with a retryable error; the
    /// room stays wanted, is subscribed when Redis is back and is listed in
    /// `Reconnected`. A room Redis refuses (an ACL) fails with a
    /// non-retryable error.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        let command = |reply| Command::Subscribe {
            topic: Topic::Room(room.clone()),
            reply,
        };
        self.ask(command, self.config.subscribe_timeout, || {
            format!(
                "subscribe to room {:?} on {} (the room stays wanted and is subscribed when redis is back)",
                room.as_str(),
                self.medium
            )
        })
        .await?
    }

    /// Returns once the room's messages are no longer delivered; the
    /// UNSUBSCRIBE itself follows after the unsubscribe delay, and is retried
    /// until Redis confirms it (or the connection that held it is gone).
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        let command = |reply| Command::Unsubscribe {
            topic: Topic::Room(room.clone()),
            reply,
        };
        self.ask(command, self.config.subscribe_timeout, || {
            format!("unsubscribe from room {:?}", room.as_str())
        })
        .await
    }

    /// Encodes (cached per codec), checks the size limit and publishes on
    /// `{prefix}{room}`. Fails within the publish timeout while Redis is down.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let running = self.running()?;
        let counters = &self.shared.counters;
        let result = async {
            let payload = envelope.encode(self.config.codec)?;
            if payload.len() > self.config.max_payload_bytes {
                return Err(Error::PayloadTooLarge {
                    room: room.as_str().to_owned(),
                    size: payload.len(),
                    limit: self.config.max_payload_bytes,
                });
            }
            let item = PublishItem {
                channel: wire::channel_name(&self.config.channel_prefix, room.as_str()),
                payload,
            };
            running
                .publisher
                .publish(item, Destination::Room(room.as_str()))
                .await
        }
        .await;
        match &result {
            Ok(()) => counters.record_published(),
            Err(error) => {
                counters.record_publish_error();
                tracing::debug!(room = room.as_str(), %error, "{} publish failed", self.name);
            }
        }
        result
    }

    /// Publishes `payload` as it is on `{control_prefix}all` or
    /// `{control_prefix}node:{id}` (`PUBLISH`; `SPUBLISH` on a cluster),
    /// through the same publish driver and with the same limits as
    /// envelopes: fails within the publish timeout with a retryable error
    /// while Redis is down, and with [`Error::PayloadTooLarge`] over the
    /// payload limit. Works on an adapter connected with
    /// [`connect_publisher`](RoomAdapter::connect_publisher) too (it sends,
    /// it hears nothing). Control frames are not counted in the `published`
    /// and `publish_errors` stats, which count envelopes. Answers
    /// [`Error::Unsupported`] when control is off.
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let unsupported = |capability| Error::Unsupported {
            adapter: self.name.to_owned(),
            capability,
        };
        let Some(prefix) = self.config.control_prefix.as_deref() else {
            return Err(unsupported(
                "control frames (turned off in the builder, or the channel prefix leaves no room for control channels)",
            ));
        };
        let Some(channel) = crate::control::target_channel(prefix, target) else {
            return Err(unsupported("this control target"));
        };
        let running = self.running()?;
        let limit = self.config.max_payload_bytes;
        if payload.len() > limit {
            return Err(Error::PayloadTooLarge {
                room: channel,
                size: payload.len(),
                limit,
            });
        }
        let item = PublishItem {
            channel: channel.clone(),
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        let result = running
            .publisher
            .publish(item, Destination::Control(&channel))
            .await;
        if let Err(error) = &result {
            tracing::debug!(channel, %error, "{} control publish failed", self.name);
        }
        result
    }

    /// Stores and publishes in one Lua script on the room's slot (see the
    /// crate docs, "History"): the envelope is encoded once with this
    /// adapter's random placeholder id of a position's length, which the
    /// script replaces with the position it gives out (a message with an id
    /// of its own is stored as it is); then `XADD` (trimmed to `max_len`),
    /// `PEXPIRE` of both keys when less than the ttl is left (checked about
    /// once per 32nd of the ttl per room, see the crate docs), and `PUBLISH`
    /// (`SPUBLISH` on a cluster) of the same bytes, so the
    /// history's order is the order every node receives. Same payload limit,
    /// timeout and retryable errors as [`publish`](RoomAdapter::publish).
    async fn publish_with_history(
        &self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
    ) -> Result<Position, Error> {
        let running = self.running()?;
        let counters = &self.shared.counters;
        let result = async {
            let placeholder = match envelope.message().id {
                Some(_) => None,
                None => Some(self.placeholder.as_str()),
            };
            let payload = match placeholder {
                Some(placeholder) => envelope
                    .with_message_id(placeholder.to_owned())
                    .encode(self.config.codec)?,
                None => envelope.encode(self.config.codec)?,
            };
            if payload.len() > self.config.max_payload_bytes {
                return Err(Error::PayloadTooLarge {
                    room: room.as_str().to_owned(),
                    size: payload.len(),
                    limit: self.config.max_payload_bytes,
                });
            }
            let channel = wire::channel_name(&self.config.channel_prefix, room.as_str());
            let ttl_ms = policy.ttl().as_millis();
            let sent = std::time::Instant::now();
            let check_expiry = self
                .expiry_checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .due(&channel, ttl_ms, sent);
            let call = history::PublishArgs {
                channel: &channel,
                payload: &payload,
                placeholder: placeholder.unwrap_or(""),
                max_len: policy.max_len(),
                ttl_ms,
                check_expiry,
                sharded: self.link.sharded(),
            }
            .call()?;
            let reply = running
                .publisher
                .run_script(&call, || {
                    format!("publish with history to room {:?}", room.as_str())
                })
                .await?;
            let position = history::parse_position(&reply)?;
            if check_expiry {
                self.expiry_checks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .checked(&channel, ttl_ms, sent);
            }
            Ok(position)
        }
        .await;
        match &result {
            Ok(_) => counters.record_published(),
            Err(error) => {
                counters.record_publish_error();
                tracing::debug!(room = room.as_str(), %error, "{} publish with history failed", self.name);
            }
        }
        result
    }

    /// One Lua script on the room's slot: the epoch and latest offset, the
    /// oldest entry kept, and at most `limit` entries after `after`
    /// (`XRANGE .. COUNT limit`). Entries that do not decode (or exceed the
    /// payload limit) are skipped and counted as decode errors. Fails like
    /// [`publish`](RoomAdapter::publish) while Redis is down.
    async fn read_history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let running = self.running()?;
        let channel = wire::channel_name(&self.config.channel_prefix, room.as_str());
        let call = history::read_call(&channel, after, limit);
        let reply = running
            .publisher
            .run_script(&call, || {
                format!("read the history of room {:?}", room.as_str())
            })
            .await?;
        history::parse_page(
            &reply,
            history::ReadRequest { after, limit },
            room.as_str(),
            self.config.max_payload_bytes,
            &self.shared.counters,
        )
    }

    fn stats(&self) -> AdapterStats {
        let subscriptions = self.shared.subscriptions.load(Ordering::Relaxed);
        let sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.counters.snapshot(
            usize::try_from(subscriptions).unwrap_or(usize::MAX),
            sink.as_ref(),
        )
    }
}
