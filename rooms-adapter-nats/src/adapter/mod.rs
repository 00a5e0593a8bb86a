//! [`NatsAdapter`]: the [`RoomAdapter`] over NATS core pub/sub.
//!
//! One concept per module: [`connect`] builds the client's options,
//! [`barrier`] confirms subscriptions with a round trip, [`publish`] and
//! [`subscribe`] carry the messages, [`supervisor`] follows the connection.

mod barrier;
mod connect;
mod publish;
mod subscribe;
mod supervisor;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use async_trait::async_trait;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterStats, ControlTarget, EventSink, RoomAdapter,
};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use tokio::task::AbortHandle;

use self::barrier::Barrier;
use self::publish::SubjectCache;
use self::subscribe::{RoomEntry, forward_control};
use self::supervisor::Supervisor;
use crate::builder::redacted;
use crate::config::NatsConfig;
use crate::error;
use crate::subject::{MAX_SUBJECT_BYTES, control_all_subject, control_node_subject};

/// Capacity of the queue from the client's event callback to the supervisor.
const EVENT_QUEUE: usize = 64;
/// How long `disconnect` waits for the client to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The NATS medium: one client connection per adapter (per node), one NATS
/// subscription per room with local members, fail-fast publishes. Configure
/// it with [`NatsAdapter::builder`] or [`NatsAdapter::servers`]; see the
/// [crate docs](crate) for the behaviour and [`subject`](crate::subject) for
/// the wire contract.
pub struct NatsAdapter {
    config: Arc<NatsConfig>,
    medium: String,
    shared: Arc<Shared>,
    subjects: SubjectCache,
    /// Serializes connect and disconnect.
    lifecycle: tokio::sync::Mutex<()>,
}

impl fmt::Debug for NatsAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAdapter")
            .field("medium", &self.medium)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    counters: Arc<AdapterCounters>,
    /// Messages the client dropped because a room's buffer was full.
    slow_consumer_drops: Arc<AtomicU64>,
    phase: Mutex<Phase>,
    rooms: tokio::sync::Mutex<HashMap<RoomName, RoomEntry>>,
    /// Rooms wanted now (subscribed and not leaving).
    wanted: AtomicUsize,
}

enum Phase {
    Idle,
    Running(Arc<Session>),
    Closed,
}

struct Session {
    client: Client,
    sink: Option<EventSink>,
    /// Round trips through the server (adapters with a sink).
    barrier: Option<Arc<Barrier>>,
    tasks: Vec<AbortHandle>,
}

impl Shared {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NatsAdapter {
    pub(crate) fn new(config: NatsConfig) -> Self {
        let medium = format!("nats at {}", redacted(&config.servers).join(", "));
        Self {
            config: Arc::new(config),
            medium,
            shared: Arc::new(Shared {
                counters: Arc::default(),
                slow_consumer_drops: Arc::default(),
                phase: Mutex::new(Phase::Idle),
                rooms: tokio::sync::Mutex::default(),
                wanted: AtomicUsize::new(0),
            }),
            subjects: SubjectCache::default(),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// The validated settings.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The medium in logs and errors, e.g. `nats at nats://127.0.0.1:4222`
    /// (passwords masked).
    pub fn medium(&self) -> &str {
        &self.medium
    }

    /// Whether the client is connected to a server now (false before
    /// `connect`, while reconnecting and after `disconnect`).
    pub fn is_connected(&self) -> bool {
        self.session()
            .is_ok_and(|session| session.client.connection_state() == State::Connected)
    }

    /// The server the client is connected to now (its `host:port` as the
    /// server announces it), if connected.
    pub fn connected_server(&self) -> Option<String> {
        let session = self.session().ok()?;
        if session.client.connection_state() != State::Connected {
            return None;
        }
        let info = session.client.server_info();
        Some(format!("{}:{}", info.host, info.port))
    }

    /// The server's `max_payload` as the client last learnt it, if connected
    /// once.
    pub fn server_max_payload(&self) -> Option<usize> {
        self.session()
            .ok()
            .map(|session| session.client.max_payload())
    }

    fn session(&self) -> Result<Arc<Session>, Error> {
        match &*self.shared.phase() {
            Phase::Running(session) => Ok(Arc::clone(session)),
            Phase::Idle | Phase::Closed => Err(error::closed()),
        }
    }

    /// Connects the client; with a sink, starts the supervisor and (with
    /// `node`) the control subscriptions.
    async fn start(&self, node: NodeId, sink: Option<EventSink>) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        match &*self.shared.phase() {
            Phase::Idle => {}
            // The contract: a second connect is a configuration error, and
            // events never go to two sinks.
            Phase::Running(_) => {
                return Err(Error::Config(format!(
                    "NATS adapter is already connected (node {:?})",
                    truncated(node.as_str())
                )));
            }
            Phase::Closed => return Err(error::closed()),
        }
        let prefix = self.config.control_prefix();
        let node_subject = control_node_subject(&prefix, node.as_str());
        if node_subject.len() > MAX_SUBJECT_BYTES {
            return Err(error::subject_too_long(
                &format!("node {:?}", truncated(node.as_str())),
                node_subject.len(),
            ));
        }
        let control_subjects = [control_all_subject(&prefix), node_subject];
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let options = self.options(events_tx).await?;
        let servers: Vec<async_nats::ServerAddr> = self
            .config
            .servers
            .iter()
            .map(|url| {
                url.parse()
                    .map_err(|e| Error::Config(format!("NATS server URL is invalid: {e}")))
            })
            .collect::<Result<_, _>>()?;
        // One connection timeout per server the client may try, plus slack.
        let limit = self
            .config
            .connect_timeout
            .saturating_mul(u32::try_from(servers.len()).unwrap_or(u32::MAX))
            .saturating_add(Duration::from_secs(1));
        let client = match tokio::time::timeout(limit, options.connect(servers)).await {
            Ok(Ok(client)) => client,
            Ok(Err(failure)) => return Err(error::from_connect(&self.medium, failure)),
            Err(_) => return Err(error::timeout(format!("connect to {}", self.medium), limit)),
        };
        let mut tasks = Vec::new();
        let barrier = match &sink {
            Some(_) => {
                let (barrier, task) = Barrier::start(&client, &self.medium).await?;
                tasks.push(task);
                Some(barrier)
            }
            None => None,
        };
        let supervisor = Supervisor {
            client: client.clone(),
            sink: sink.clone(),
            barrier: barrier.clone(),
            medium: self.medium.clone(),
            shared: Arc::downgrade(&self.shared),
            flush_timeout: self.config.subscribe_timeout,
            outage: None,
        };
        tasks.push(tokio::spawn(supervisor.run(events_rx)).abort_handle());
        if let Some(sink) = &sink {
            for subject in control_subjects {
                match client.subscribe(subject).await {
                    Ok(subscriber) => tasks.push(
                        tokio::spawn(forward_control(subscriber, sink.clone())).abort_handle(),
                    ),
                    Err(failure) => {
                        abort_all(&tasks);
                        return Err(error::unavailable(
                            &self.medium,
                            "subscribe to the control subjects",
                            failure,
                        ));
                    }
                }
            }
        }
        let session = Arc::new(Session {
            client,
            sink,
            barrier,
            tasks,
        });
        if let Err(failure) = self
            .confirm(&session, "subscribe to the control subjects")
            .await
        {
            abort_all(&session.tasks);
            return Err(failure);
        }
        *self.shared.phase() = Phase::Running(session);
        Ok(())
    }

    /// Waits for a round trip through the server (within the subscribe
    /// timeout): every SUB sent before has been handled.
    async fn confirm(&self, session: &Session, operation: &str) -> Result<(), Error> {
        let limit = self.config.subscribe_timeout;
        match &session.barrier {
            Some(barrier) => {
                barrier
                    .round_trip(&session.client, limit, &self.medium, operation)
                    .await
            }
            None => match tokio::time::timeout(limit, session.client.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(failure)) => Err(error::unavailable(&self.medium, operation, failure)),
                Err(_) => Err(error::timeout(operation, limit)),
            },
        }
    }
}

impl Drop for NatsAdapter {
    fn drop(&mut self) {
        if let Phase::Running(session) = std::mem::replace(&mut *self.shared.phase(), Phase::Closed)
        {
            for task in &session.tasks {
                task.abort();
            }
        }
        if let Ok(mut rooms) = self.shared.rooms.try_lock() {
            for (_, entry) in rooms.drain() {
                entry.forwarder.abort();
            }
        }
    }
}

fn abort_all(tasks: &[AbortHandle]) {
    for task in tasks {
        task.abort();
    }
}

fn truncated(name: &str) -> String {
    name.chars().take(40).collect()
}

#[async_trait]
impl RoomAdapter for NatsAdapter {
    fn name(&self) -> &str {
        "nats"
    }

    /// Connects to a server (trying each of the configured ones), listens on
    /// the control subjects, and starts following the connection's state.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        self.start(node, Some(sink)).await
    }

    /// Connects for publishing only: no room or control subscription.
    async fn connect_publisher(&self, node: NodeId) -> Result<(), Error> {
        self.start(node, None).await
    }

    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE.with_emitter().with_control()
    }

    /// Stops every task of this adapter, unsubscribes every room, writes
    /// out what was published (up to 1 s), drains the client and fails
    /// every later call with [`Error::Closed`]. Idempotent.
    async fn disconnect(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let phase = std::mem::replace(&mut *self.shared.phase(), Phase::Closed);
        {
            let mut rooms = self.shared.rooms.lock().await;
            for (_, entry) in rooms.drain() {
                entry.forwarder.abort();
            }
            self.shared.wanted.store(0, Ordering::Relaxed);
        }
        if let Phase::Running(session) = phase {
            for task in &session.tasks {
                task.abort();
            }
            if session.client.connection_state() == State::Connected {
                // Publishes handed to the client are written first (`drain`
                // only queues its command: a process that exits right after
                // would lose the tail of its publishes).
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                    let _ = session.client.flush().await;
                    let _ = session.client.drain().await;
                })
                .await;
            }
        }
        Ok(())
    }

    /// Subscribes `room`'s subject and returns once the server has confirmed
    /// it (a round trip through the server on the client's own inbox).
    /// While the client is disconnected it fails at once with a retryable
    /// error; the room stays wanted: the client subscribes it on reconnect
    /// and `Reconnected` lists it.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.subscribe_room(room).await
    }

    /// Stops delivery for `room` at once and drops its NATS subscription
    /// after the unsubscribe delay, unless the room is subscribed again
    /// meanwhile. Idempotent.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.unsubscribe_room(room).await
    }

    /// Publishes the envelope on the room's subject. Fails at once with a
    /// retryable [`Error::Unavailable`] while the client is disconnected,
    /// and with a non-retryable error naming both sizes when the envelope is
    /// over the server's `max_payload`.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        self.publish_room(room, envelope).await
    }

    /// Publishes a control frame on `{control_prefix}all` or the target
    /// node's inbox, with the same fail-fast checks as [`publish`](Self::publish).
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        self.publish_control_frame(target, payload).await
    }

    /// The counters; `medium_dropped` counts the messages the client
    /// dropped for slow consumption (a full per-room buffer).
    fn stats(&self) -> AdapterStats {
        let sink = self.session().ok().and_then(|session| session.sink.clone());
        let mut stats = self
            .shared
            .counters
            .snapshot(self.shared.wanted.load(Ordering::Relaxed), sink.as_ref());
        stats.medium_dropped += self.shared.slow_consumer_drops.load(Ordering::Relaxed);
        stats
    }
}
