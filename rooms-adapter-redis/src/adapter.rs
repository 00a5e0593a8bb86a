//! [`RedisAdapter`]: the [`RoomAdapter`] over Redis pub/sub.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rooms_adapter::adapter::{AdapterCounters, AdapterStats, EventSink, RoomAdapter};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::common;
use crate::config::{DriverChoice, RedisAdapterBuilder, RedisConfig};
use crate::driver::{DriverOptions, PublishDriver, medium_of};
use crate::error::closed;
use crate::publisher::{Coalescing, Publisher};
use crate::subscriber::{self, Command, Shared};

/// Capacity of the queue of subscribe/unsubscribe requests to the subscriber task.
const COMMAND_QUEUE: usize = 16_384;

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
    config: RedisConfig,
    client: redis::Client,
    medium: String,
    driver: DriverChoice,
    counters: Arc<AdapterCounters>,
    subscriptions: Arc<AtomicU64>,
    /// Serialises connect and disconnect (held across their awaits).
    lifecycle: tokio::sync::Mutex<()>,
    /// Never held across an await.
    state: Mutex<State>,
    /// The sink of the last connection, for the dropped-inbound count.
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

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("medium", &self.medium)
            .field("driver", &self.driver)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisAdapter {
    /// A builder for the server at `url`: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://...` for TLS (feature `tls`), or `redis+unix:///path`.
    pub fn builder(url: impl Into<String>) -> RedisAdapterBuilder {
        RedisAdapterBuilder::new(url.into())
    }

    pub(crate) fn new(client: redis::Client, config: RedisConfig, driver: DriverChoice) -> Self {
        Self {
            medium: medium_of(&client),
            config,
            client,
            driver,
            counters: Arc::new(AdapterCounters::default()),
            subscriptions: Arc::new(AtomicU64::new(0)),
            lifecycle: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::Idle),
            sink: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `redis at host:port`: the server, without credentials.
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

    /// The publish driver's name while connected (`redis`, `deadpool`, `bb8`, ...).
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
        match &self.driver {
            DriverChoice::Custom(driver) => Ok(Arc::clone(driver)),
            #[cfg(feature = "redis")]
            DriverChoice::Redis | DriverChoice::Default => Ok(Arc::new(
                crate::driver::RedisDriver::connect(self.client.clone(), &options).await?,
            )),
            #[cfg(feature = "deadpool")]
            DriverChoice::Deadpool { pool_size } => {
                Ok(Arc::new(crate::driver::DeadpoolDriver::from_client(
                    &self.client,
                    &options.with_pool_size(*pool_size),
                )?))
            }
            #[cfg(all(feature = "deadpool", not(feature = "redis")))]
            DriverChoice::Default => Ok(Arc::new(crate::driver::DeadpoolDriver::from_client(
                &self.client,
                &options,
            )?)),
            #[cfg(feature = "bb8")]
            DriverChoice::Bb8 { pool_size } => Ok(Arc::new(crate::driver::Bb8Driver::from_client(
                &self.client,
                &options.with_pool_size(*pool_size),
            )?)),
            #[cfg(all(feature = "bb8", not(feature = "redis"), not(feature = "deadpool")))]
            DriverChoice::Default => Ok(Arc::new(crate::driver::Bb8Driver::from_client(
                &self.client,
                &options,
            )?)),
            #[cfg(not(any(feature = "redis", feature = "deadpool", feature = "bb8")))]
            DriverChoice::Default => Err(Error::Config(
                "no publish driver: enable a feature of rooms-adapter-redis".into(),
            )),
        }
    }
}

#[async_trait]
impl RoomAdapter for RedisAdapter {
    fn name(&self) -> &str {
        "redis"
    }

    /// Connects the publish driver and the subscriber connection (each within
    /// the connect timeout) and starts the background tasks. Fails with a
    /// retryable error when Redis cannot be reached; the adapter can then be
    /// connected again.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        match &*self.lock_state() {
            State::Idle => {}
            State::Running(running, _) => {
                return Err(Error::Config(format!(
                    "redis adapter is already connected (node {})",
                    running.node
                )));
            }
            State::Closed => return Err(closed()),
        }
        let driver = self.make_driver().await?;
        let pubsub = subscriber::open(
            self.client.clone(),
            self.config.connect_timeout,
            self.medium.clone(),
        )
        .await?;

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
            client: self.client.clone(),
            medium: self.medium.clone(),
            counters: Arc::clone(&self.counters),
            subscriptions: Arc::clone(&self.subscriptions),
        });
        let subscriber_task = tokio::spawn(subscriber::run(
            shared,
            sink.clone(),
            pubsub,
            commands_rx,
            shutdown_rx,
        ));
        tracing::debug!(medium = %self.medium, %node, driver = publisher.driver_name(), "redis adapter connected");
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

    /// Stops both background tasks (and waits for them), drops the
    /// connections, and fails every later call with [`Error::Closed`].
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
                    tracing::warn!(%error, "redis adapter task ended abnormally");
                }
            }
            self.subscriptions.store(0, Ordering::Relaxed);
            tracing::debug!(medium = %self.medium, "redis adapter disconnected");
        }
        Ok(())
    }

    /// Returns once Redis has acknowledged the subscription. While Redis is
    /// down it fails after the subscribe timeout with a retryable error; the
    /// room stays wanted and is subscribed on reconnect.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        let running = self.running()?;
        let command = |reply| Command::Subscribe {
            room: room.clone(),
            reply,
        };
        common::ask(&running.commands, command, self.config.subscribe_timeout, || {
            format!(
                "subscribe to room {:?} on {} (the room stays wanted and is subscribed when redis is back)",
                room.as_str(),
                self.medium
            )
        })
        .await?
    }

    /// Returns once the room's messages are no longer delivered; the
    /// UNSUBSCRIBE itself follows after the unsubscribe delay.
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

    /// Encodes (cached per codec), checks the size limit and publishes on
    /// `{prefix}{room}`. Fails within the publish timeout while Redis is down.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let running = self.running()?;
        common::publish(
            &self.config,
            &running.publisher,
            &self.counters,
            room,
            envelope,
            "redis",
        )
        .await
    }

    fn stats(&self) -> AdapterStats {
        common::stats(&self.counters, &self.subscriptions, &self.sink)
    }
}
