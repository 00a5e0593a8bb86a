//! [`NatsAdapter`]: the [`RoomAdapter`] over NATS core pub/sub.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use async_trait::async_trait;
use futures_util::StreamExt;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterEvent, AdapterStats, ControlTarget, EventSink,
    RoomAdapter, SinkOutcome,
};
use rooms_adapter::wire;
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use tokio::task::AbortHandle;

use crate::builder::redacted;
use crate::config::{Credentials, NatsConfig};
use crate::error;
use crate::subject::{MAX_SUBJECT_BYTES, control_all_subject, control_node_subject, room_subject};

/// How often the supervisor re-checks the connection state even without an
/// event from the client (events can be dropped when the client's own
/// event queue is full).
const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
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
    counters: AdapterCounters,
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

/// A true round trip through the server: the client publishes a sequence
/// number on its own inbox subject, which it subscribes, and waits until the
/// number comes back. A server handles one connection's messages in order,
/// so by then it has handled every SUB the client sent before.
/// (`Client::flush` only waits until the bytes are written to the socket.)
struct Barrier {
    subject: String,
    next: AtomicU64,
    reached: tokio::sync::watch::Receiver<u64>,
}

impl Barrier {
    /// Subscribes the inbox and starts the task that records what comes back.
    async fn start(client: &Client, medium: &str) -> Result<(Arc<Barrier>, AbortHandle), Error> {
        let subject = client.new_inbox();
        let mut subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| error::unavailable(medium, "subscribe to the barrier inbox", e))?;
        let (reached_tx, reached) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let Some(number) = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                else {
                    continue;
                };
                reached_tx.send_if_modified(|reached| {
                    let newer = number > *reached;
                    if newer {
                        *reached = number;
                    }
                    newer
                });
            }
        })
        .abort_handle();
        let barrier = Barrier {
            subject,
            next: AtomicU64::new(0),
            reached,
        };
        Ok((Arc::new(barrier), task))
    }

    /// One round trip, within `limit`.
    async fn round_trip(
        &self,
        client: &Client,
        limit: Duration,
        medium: &str,
        operation: &str,
    ) -> Result<(), Error> {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reached = self.reached.clone();
        let trip = async {
            client
                .publish(self.subject.clone(), number.to_string().into())
                .await
                .map_err(|e| error::unavailable(medium, operation, e))?;
            reached
                .wait_for(|reached| *reached >= number)
                .await
                .map_err(|e| error::unavailable(medium, operation, e))?;
            Ok(())
        };
        match tokio::time::timeout(limit, trip).await {
            Ok(result) => result,
            Err(_) => Err(error::timeout(operation, limit)),
        }
    }
}

struct RoomEntry {
    /// Cleared while the room waits out its unsubscribe delay: nothing is
    /// delivered meanwhile.
    wanted: Arc<AtomicBool>,
    /// Bumped on every subscribe and unsubscribe, so a delayed unsubscribe
    /// only removes the subscription it was scheduled for.
    generation: u64,
    forwarder: AbortHandle,
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
                counters: AdapterCounters::default(),
                slow_consumer_drops: Arc::default(),
                phase: Mutex::new(Phase::Idle),
                rooms: tokio::sync::Mutex::default(),
                wanted: AtomicUsize::new(0),
            }),
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

    fn subject_of(&self, room: &RoomName) -> Result<String, Error> {
        let subject = room_subject(&self.config.subject_prefix, room.as_str());
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(error::subject_too_long(
                &format!("room {:?}", truncated(room.as_str())),
                subject.len(),
            ));
        }
        Ok(subject)
    }

    async fn options(
        &self,
        events: tokio::sync::mpsc::Sender<Event>,
    ) -> Result<ConnectOptions, Error> {
        let config = &self.config;
        let (min, max) = (config.backoff_min, config.backoff_max);
        let drops = Arc::clone(&self.shared.slow_consumer_drops);
        let mut options = ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .ping_interval(config.ping_interval)
            .subscription_capacity(config.subscription_capacity)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                NatsConfig::reconnect_delay(min, max, attempts)
            })
            .event_callback(move |event| {
                if let Event::SlowConsumer(_) = event {
                    drops.fetch_add(1, Ordering::Relaxed);
                } else if let Err(error) = events.try_send(event) {
                    tracing::debug!(%error, "nats event queue full; the state check catches up");
                }
                async {}
            });
        if let Some(name) = &config.client_name {
            options = options.name(name);
        }
        options = match &config.credentials {
            // async-nats ignores credentials in URLs: honour the first URL's
            // `user:password@` (or `token@`) here.
            Credentials::None => match url_credentials(&config.servers) {
                Some((user, Some(password))) => options.user_and_password(user, password),
                Some((token, None)) => options.token(token),
                None => options,
            },
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
            #[cfg(feature = "nkeys")]
            Credentials::NKey(seed) => options.nkey(seed.clone()),
            #[cfg(feature = "nkeys")]
            Credentials::CredsFile(path) => {
                options.credentials_file(path).await.map_err(|error| {
                    Error::Config(format!(
                        "credentials: cannot read creds file {}: {error}",
                        path.display()
                    ))
                })?
            }
        };
        let tls = &config.tls;
        if tls.require {
            options = options.require_tls(true);
        }
        if tls.first {
            options = options.tls_first();
        }
        for path in &tls.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
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

    /// Publishes raw bytes on `subject` with the fail-fast checks.
    async fn publish_bytes(
        &self,
        client: &Client,
        subject: String,
        payload: bytes::Bytes,
        target: Target<'_>,
    ) -> Result<(), Error> {
        let counters = &self.shared.counters;
        if payload.len() > self.config.max_payload_bytes {
            counters.record_publish_error();
            return Err(Error::PayloadTooLarge {
                room: target.name(),
                size: payload.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        // The client would buffer the publish until it reconnects: fail
        // fast instead, as the contract asks.
        if client.connection_state() != State::Connected {
            counters.record_publish_error();
            return Err(error::disconnected(
                &self.medium,
                &format!("publish to {}", target.describe()),
            ));
        }
        let server_max = client.max_payload();
        if payload.len() > server_max {
            counters.record_publish_error();
            return Err(error::over_server_max_payload(
                &target.describe(),
                payload.len(),
                server_max,
            ));
        }
        let limit = self.config.publish_timeout;
        // The client's queue has room almost always: a first poll without a
        // timer spares a timer entry per message; only a publish that has
        // to wait for room gets the timeout.
        let mut publish = std::pin::pin!(client.publish(subject, payload));
        let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => tokio::time::timeout(limit, publish).await,
        };
        match outcome {
            Ok(Ok(())) => {
                // `published` counts room envelopes only: a heartbeat must
                // not look like a broadcast.
                if matches!(target, Target::Room(_)) {
                    counters.record_published();
                }
                Ok(())
            }
            Ok(Err(failure)) => {
                counters.record_publish_error();
                Err(error::unavailable(
                    &self.medium,
                    &format!("publish to {}", target.describe()),
                    failure,
                ))
            }
            Err(_) => {
                counters.record_publish_error();
                Err(error::timeout(
                    format!("publish to {}", target.describe()),
                    limit,
                ))
            }
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

/// What a publish goes to, described only when it fails.
#[derive(Clone, Copy)]
enum Target<'a> {
    Room(&'a RoomName),
    Control,
}

impl Target<'_> {
    /// The room's name (for [`Error::PayloadTooLarge`]).
    fn name(self) -> String {
        match self {
            Target::Room(room) => room.as_str().to_owned(),
            Target::Control => "(control channel)".to_owned(),
        }
    }

    /// In words, for error messages.
    fn describe(self) -> String {
        match self {
            Target::Room(room) => format!("room {:?}", truncated(room.as_str())),
            Target::Control => "the control subject".to_owned(),
        }
    }
}

/// The user and password (or the token, without a password) of the first
/// server URL that carries any.
fn url_credentials(servers: &[String]) -> Option<(String, Option<String>)> {
    servers.iter().find_map(|url| {
        let address = url.parse::<async_nats::ServerAddr>().ok()?;
        let user = address.username()?.to_owned();
        Some((user, address.password().map(str::to_owned)))
    })
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
    /// it (a round trip through the server on the client's own inbox). While the client is disconnected it fails
    /// at once with a retryable error; the room stays wanted: the client
    /// subscribes it on reconnect and `Reconnected` lists it.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        let session = self.session()?;
        let Some(sink) = session.sink.clone() else {
            return Err(Error::Unsupported {
                adapter: "nats".into(),
                capability: "subscriptions on a publish-only adapter",
            });
        };
        let subject = self.subject_of(room)?;
        {
            let mut rooms = self.shared.rooms.lock().await;
            match rooms.get_mut(room) {
                Some(entry) => {
                    entry.generation += 1;
                    if !entry.wanted.swap(true, Ordering::AcqRel) {
                        self.shared.wanted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    let limit = self.config.subscribe_timeout;
                    let subscriber = match tokio::time::timeout(
                        limit,
                        session.client.subscribe(subject),
                    )
                    .await
                    {
                        Ok(Ok(subscriber)) => subscriber,
                        Ok(Err(failure)) => {
                            return Err(error::unavailable(
                                &self.medium,
                                &format!("subscribe to room {:?}", truncated(room.as_str())),
                                failure,
                            ));
                        }
                        Err(_) => {
                            return Err(error::timeout(
                                format!("subscribe to room {:?}", truncated(room.as_str())),
                                limit,
                            ));
                        }
                    };
                    let wanted = Arc::new(AtomicBool::new(true));
                    let forwarder = tokio::spawn(forward_room(
                        subscriber,
                        room.clone(),
                        Arc::clone(&wanted),
                        sink,
                        Arc::downgrade(&self.shared),
                        self.config.max_payload_bytes,
                    ))
                    .abort_handle();
                    rooms.insert(
                        room.clone(),
                        RoomEntry {
                            wanted,
                            generation: 0,
                            forwarder,
                        },
                    );
                    self.shared.wanted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let operation = format!("subscribe to room {:?}", truncated(room.as_str()));
        if session.client.connection_state() != State::Connected {
            return Err(error::disconnected(&self.medium, &operation));
        }
        self.confirm(&session, &operation).await
    }

    /// Stops delivery for `room` at once and drops its NATS subscription
    /// after the unsubscribe delay, unless the room is subscribed again
    /// meanwhile. Idempotent.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        let mut rooms = self.shared.rooms.lock().await;
        let Some(entry) = rooms.get_mut(room) else {
            return Ok(());
        };
        if !entry.wanted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.wanted.fetch_sub(1, Ordering::Relaxed);
        entry.generation += 1;
        let delay = self.config.unsubscribe_delay;
        if delay.is_zero() {
            if let Some(entry) = rooms.remove(room) {
                entry.forwarder.abort();
            }
            return Ok(());
        }
        let generation = entry.generation;
        let shared = Arc::downgrade(&self.shared);
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut rooms = shared.rooms.lock().await;
            let expired = rooms.get(&room).is_some_and(|entry| {
                entry.generation == generation && !entry.wanted.load(Ordering::Acquire)
            });
            if expired && let Some(entry) = rooms.remove(&room) {
                // Dropping the subscriber sends UNSUB.
                entry.forwarder.abort();
            }
        });
        Ok(())
    }

    /// Publishes the envelope on the room's subject. Fails at once with a
    /// retryable [`Error::Unavailable`] while the client is disconnected,
    /// and with a non-retryable error naming both sizes when the envelope is
    /// over the server's `max_payload`.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let session = self.session()?;
        let subject = self.subject_of(room)?;
        let payload = envelope.encode(self.config.codec)?;
        self.publish_bytes(&session.client, subject, payload, Target::Room(room))
            .await
    }

    /// Publishes a control frame on `{control_prefix}all` or the target
    /// node's inbox, with the same fail-fast checks as [`publish`](Self::publish).
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let session = self.session()?;
        let prefix = self.config.control_prefix();
        let subject = match target {
            ControlTarget::Node(node) => control_node_subject(&prefix, node.as_str()),
            _ => control_all_subject(&prefix),
        };
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(error::subject_too_long("a control inbox", subject.len()));
        }
        let payload = bytes::Bytes::copy_from_slice(payload);
        self.publish_bytes(&session.client, subject, payload, Target::Control)
            .await
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

/// Delivers one room's messages into the sink while the room is wanted.
async fn forward_room(
    mut subscriber: Subscriber,
    room: RoomName,
    wanted: Arc<AtomicBool>,
    sink: EventSink,
    shared: Weak<Shared>,
    max_payload: usize,
) {
    while let Some(message) = subscriber.next().await {
        if !wanted.load(Ordering::Acquire) {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match wire::decode(&message.payload, max_payload) {
            Ok(envelope) => {
                shared.counters.record_received();
                let event = AdapterEvent::Message {
                    room: room.clone(),
                    envelope,
                };
                if sink.send(event) == SinkOutcome::Closed {
                    return;
                }
            }
            Err(failure) => shared.counters.record_decode_error(room.as_str(), &failure),
        }
    }
}

/// Delivers control frames into the sink.
async fn forward_control(mut subscriber: Subscriber, sink: EventSink) {
    while let Some(message) = subscriber.next().await {
        let event = AdapterEvent::Control {
            payload: message.payload,
        };
        if sink.send(event) == SinkOutcome::Closed {
            return;
        }
    }
}

/// Follows the client's connection: `MediumLost` once per outage, and
/// `Reconnected` once the client is back and the server has every
/// re-subscription (a round trip after the client's automatic re-SUBs).
struct Supervisor {
    client: Client,
    sink: Option<EventSink>,
    barrier: Option<Arc<Barrier>>,
    medium: String,
    shared: Weak<Shared>,
    flush_timeout: Duration,
    outage: Option<Instant>,
}

impl Supervisor {
    async fn run(mut self, mut events: tokio::sync::mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(STATE_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(Event::Disconnected) => self.lost("disconnected from the NATS server"),
                    Some(Event::Closed) => return,
                    Some(Event::LameDuckMode) => {
                        tracing::warn!("the NATS server entered lame duck mode; the client will move");
                    }
                    Some(Event::ServerError(failure)) => {
                        tracing::warn!(%failure, "NATS server error");
                    }
                    Some(Event::ClientError(failure)) => {
                        tracing::warn!(%failure, "NATS client error");
                    }
                    Some(_) => {}
                },
                _ = tick.tick() => {}
            }
            if self.shared.strong_count() == 0 {
                return;
            }
            match self.client.connection_state() {
                State::Connected => {
                    if self.outage.is_some() {
                        self.try_reconnected().await;
                    }
                }
                State::Disconnected | State::Pending => {
                    self.lost("the NATS client is disconnected");
                }
            }
        }
    }

    fn lost(&mut self, reason: &str) {
        if self.outage.is_some() {
            return;
        }
        self.outage = Some(Instant::now());
        tracing::warn!(reason, "NATS medium lost");
        if let Some(sink) = &self.sink {
            sink.push_lifecycle(AdapterEvent::MediumLost {
                reason: reason.to_owned(),
            });
        }
    }

    async fn try_reconnected(&mut self) {
        // The client re-sends every SUB before it handles any later
        // command: once this round trip is back, the server has them all.
        let confirmed = match &self.barrier {
            Some(barrier) => barrier
                .round_trip(
                    &self.client,
                    self.flush_timeout,
                    &self.medium,
                    "re-subscribe",
                )
                .await
                .is_ok(),
            None => matches!(
                tokio::time::timeout(self.flush_timeout, self.client.flush()).await,
                Ok(Ok(()))
            ),
        };
        if !confirmed {
            return;
        }
        let Some(since) = self.outage.take() else {
            return;
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.counters.record_reconnect();
        let mut rooms: Vec<RoomName> = shared
            .rooms
            .lock()
            .await
            .iter()
            .filter(|(_, entry)| entry.wanted.load(Ordering::Acquire))
            .map(|(room, _)| room.clone())
            .collect();
        rooms.sort();
        let outage = since.elapsed();
        tracing::info!(rooms = rooms.len(), ?outage, "NATS medium back");
        if let Some(sink) = &self.sink {
            sink.send_lifecycle(AdapterEvent::Reconnected { rooms, outage })
                .await;
        }
    }
}
