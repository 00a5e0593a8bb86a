//! The rooms engine: [`Rooms`] ties the registry, local connections and the
//! adapter together.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::adapter::{AdapterStats, EventSink, RoomAdapter};
use crate::broadcast::DeliveryFilter;
use crate::cluster::{Control, LocalView, NodeDeparture};
use crate::connection::{ConnectOptions, ConnectionEntry, ConnectionReceiver, SlowConsumerPolicy};
use crate::dedup::{Fingerprinter, RecentIds};
use crate::error::Error;
use crate::gap::{GapBoard, GapScope};
use crate::history::HistoryPolicy;
use crate::ids::{ConnectionId, NodeId, RoomName};
use crate::metrics::{Latencies, LatencyStats};
use crate::registry::Registry;

/// Default capacity of each connection's queue, in messages. Slots cost
/// nothing until used; the byte limit ([`DEFAULT_CONNECTION_QUEUE_BYTES`])
/// usually cuts a stalled client off first.
pub const DEFAULT_CONNECTION_QUEUE: usize = 8_192;
/// Largest connection queue capacity accepted, in messages.
pub const MAX_CONNECTION_QUEUE: usize = 1 << 20;
/// Default limit on the SSE frames queued for one connection: 4 MiB.
pub const DEFAULT_CONNECTION_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Largest per-connection byte limit accepted: 1 GiB.
pub const MAX_CONNECTION_QUEUE_BYTES: usize = 1 << 30;
/// Default number of message ids remembered by each connection that is in two
/// or more rooms (24 bytes each; connections in one room keep none).
pub const DEFAULT_DEDUP_CAPACITY: usize = 128;
/// Largest per-connection dedup capacity accepted (96 KiB a connection).
pub const MAX_DEDUP_CAPACITY: usize = 4_096;
/// Default size of the node-wide window of recent `(room, message id)` pairs.
pub const DEFAULT_ROOM_DEDUP_CAPACITY: usize = 16_384;
/// Largest node-wide dedup window accepted.
pub const MAX_ROOM_DEDUP_CAPACITY: usize = 1 << 22;
/// Default capacity of the adapter-to-engine hand-off queue.
pub const DEFAULT_INBOUND_QUEUE: usize = 65_536;
/// Largest hand-off queue capacity accepted.
pub const MAX_INBOUND_QUEUE: usize = 1 << 22;

mod broadcasting;
mod builder;
mod catch_up;
mod delivery;
mod inbound;
mod recovery;
mod subscription;

pub use self::builder::RoomsBuilder;
pub use self::recovery::Resume;

/// Most inbound events the dispatcher handles per wake-up before it looks
/// at its other duties (gap notices) again.
const DISPATCH_BATCH: usize = 256;

/// Capacity of the lifecycle channel: room for one gap event per tracked room.
const LIFECYCLE_CAPACITY: usize = crate::gap::MAX_GAP_ROOMS + 64;

/// A lifecycle event of the medium, for the application (e.g. to tell clients
/// to resync after an outage).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomsEvent {
    /// The medium was lost and restored; these rooms may have missed messages
    /// from other nodes. Tell their clients to resync (e.g. reconnect with
    /// `Last-Event-ID`, or reload state).
    Reconnected {
        /// Rooms re-subscribed.
        rooms: Vec<RoomName>,
        /// How long the medium was gone.
        outage: Duration,
        /// With history on: the rooms whose missed messages were replayed
        /// to their local members from history before this event (in order,
        /// ahead of newer live messages), so their clients need no resync.
        /// Rooms listed in `rooms` but not here may have missed messages.
        recovered: Vec<RoomName>,
    },
    /// Messages for this room were dropped on this node under pressure: the
    /// engine's inbound queue was full ([`GapScope::AllMembers`]), or some
    /// connections' queues were full ([`GapScope::Connections`]). Sent once per
    /// affected room when the pressure is over (the inbound queue has
    /// drained), so the application can tell exactly those clients to resync,
    /// as for [`Reconnected`](Self::Reconnected). The drop counters in
    /// [`EngineStats`] move as well.
    Gap {
        /// The room.
        room: RoomName,
        /// Who may have missed messages.
        scope: GapScope,
        /// How many deliveries (or, for `AllMembers`, room messages) were lost.
        dropped: u64,
    },
    /// The medium is unreachable: messages from other nodes may be missed,
    /// and joins complete locally, until [`Reconnected`](Self::Reconnected).
    /// [`Rooms::medium_status`] says the same for readiness probes.
    MediumLost {
        /// Why, as the adapter saw it.
        reason: String,
    },
    /// The medium dropped this room's subscription and did not restore it
    /// (e.g. Redis refused it after a reconnect): until the room's next join
    /// on this node subscribes it again, its local members get no messages
    /// from other nodes. Tell them to resync, as for
    /// [`Reconnected`](Self::Reconnected).
    SubscriptionLost {
        /// The room.
        room: RoomName,
        /// Why, as the medium said it.
        reason: String,
    },
    /// Another node became live (its first heartbeat arrived); see
    /// [`Rooms::nodes`].
    NodeJoined {
        /// The node.
        node: NodeId,
    },
    /// Another node stopped being live: it left, or its heartbeats stopped.
    NodeLeft {
        /// The node.
        node: NodeId,
        /// Why.
        departure: NodeDeparture,
    },
}

/// Whether the medium between nodes is reachable, as far as this node knows:
/// from the adapter's [`MediumLost`](RoomsEvent::MediumLost) and
/// [`Reconnected`](RoomsEvent::Reconnected) reports and from the outcome of
/// its last call. Cheap to ask (a lock and a copy), e.g. by a readiness probe.
///
/// ```
/// # use std::sync::Arc;
/// # use rooms_adapter::{Rooms, engine::MediumStatus};
/// # use rooms_adapter_memory::MemoryAdapter;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rooms_adapter::Error> {
/// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
/// assert!(rooms.medium_status().is_up());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediumStatus {
    /// Reachable (or not known to be otherwise).
    Up,
    /// Unreachable since `since`.
    Down {
        /// When the node learnt it.
        since: std::time::Instant,
        /// Why.
        reason: String,
    },
}

impl MediumStatus {
    /// Whether the medium is up.
    pub fn is_up(&self) -> bool {
        matches!(self, MediumStatus::Up)
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Connected local connections.
    pub connections: u64,
    /// Rooms with at least one local member.
    pub rooms: u64,
    /// Broadcasts made on this node.
    pub broadcasts: u64,
    /// Messages queued to local connections (local and remote broadcasts).
    pub deliveries: u64,
    /// Deliveries the filter rejected.
    pub filtered: u64,
    /// Deliveries skipped because the connection already had this message id.
    pub duplicates: u64,
    /// SSE frames built: one per message with local recipients, never one per
    /// connection.
    pub frames_encoded: u64,
    /// Envelopes received from the adapter.
    pub remote_received: u64,
    /// Envelopes from this node that the medium echoed back, dropped.
    pub echoes_dropped: u64,
    /// Remote envelopes whose message could not be framed (field injection).
    pub remote_rejected: u64,
    /// Connections disconnected because their queue was full.
    pub lagging_disconnects: u64,
    /// Messages dropped for a full queue under [`SlowConsumerPolicy::DropNewest`].
    pub lagging_drops: u64,
    /// Inbound adapter events dropped because the hand-off queue was full.
    pub inbound_dropped: u64,
    /// `Reconnected` events seen.
    pub reconnects: u64,
    /// Subscription changes the adapter reported as failed.
    pub subscription_errors: u64,
    /// Joins that completed locally at once because the medium was known to
    /// be down; their rooms are subscribed in the background.
    pub deferred_subscriptions: u64,
    /// [`RoomsEvent::Gap`] events sent.
    pub gaps_signalled: u64,
    /// Control frames skipped: malformed, of another version, or from more
    /// node ids than the engine remembers.
    pub control_rejected: u64,
    /// Control frames not sent (heartbeats, answers, queries): the medium
    /// failed or the outbox was full.
    pub control_unsent: u64,
    /// Cross-node queries this node answered for others.
    pub queries_answered: u64,
    /// Joins that resumed from a `Last-Event-ID` ([`Rooms::join_from`]),
    /// with a replay or a gap event.
    pub resumes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    broadcasts: AtomicU64,
    deliveries: AtomicU64,
    filtered: AtomicU64,
    duplicates: AtomicU64,
    frames_encoded: AtomicU64,
    remote_received: AtomicU64,
    echoes_dropped: AtomicU64,
    remote_rejected: AtomicU64,
    lagging_disconnects: AtomicU64,
    lagging_drops: AtomicU64,
    reconnects: AtomicU64,
    subscription_errors: AtomicU64,
    deferred_subscriptions: AtomicU64,
    gaps_signalled: AtomicU64,
    replayed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn check_range(name: &str, value: usize, min: usize, max: usize) -> Result<(), Error> {
    if value < min || value > max {
        return Err(Error::Config(format!(
            "{name} must be between {min} and {max}, got {value}"
        )));
    }
    Ok(())
}

/// The rooms engine of one node: local connections, their rooms, and
/// broadcasting through an adapter to every other node.
///
/// Cheap to clone; every clone is the same engine.
///
/// ```
/// use std::sync::Arc;
/// use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
/// # use rooms_adapter::adapter::{EventSink, RoomAdapter};
/// # use rooms_adapter::{Envelope, Error, NodeId, RoomName};
/// # struct Local;
/// # #[async_trait::async_trait]
/// # impl RoomAdapter for Local {
/// #     fn name(&self) -> &str { "local" }
/// #     async fn connect(&self, _: NodeId, _: EventSink) -> Result<(), Error> { Ok(()) }
/// #     async fn disconnect(&self) -> Result<(), Error> { Ok(()) }
/// #     async fn subscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
/// #     async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
/// #     async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> { Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// // Any adapter: rooms_adapter_memory::MemoryAdapter for one node, Redis for many.
/// # let adapter = Arc::new(Local);
/// let rooms = Rooms::builder(adapter).node_id("node-a").build().await?;
///
/// let mut alice = rooms.connect(ConnectOptions::new().id("alice")).await?;
/// rooms.join(alice.id(), "chat").await?;
///
/// let report = rooms
///     .broadcast("chat", SseMessage::new("hello").with_event("chat"), BroadcastOptions::new())
///     .await?;
/// assert_eq!(report.delivered, 1);
///
/// let delivery = alice.recv().await.expect("queued");
/// assert_eq!(&delivery.sse_frame()[..], b"event: chat\ndata: hello\n\n");
/// rooms.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("node", &self.inner.node)
            .field("adapter", &self.inner.adapter.name())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    node: NodeId,
    adapter: Arc<dyn RoomAdapter>,
    registry: RwLock<Registry>,
    /// Rooms the adapter is subscribed to (or wants to be, after a retryable
    /// failure). Changed only under the room's lock.
    subscribed: Mutex<HashSet<RoomName>>,
    /// One lock per room with a subscription change in flight, so a room
    /// never waits behind another room's I/O. Entries go when unused.
    room_locks: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<()>>>>,
    /// Rooms with a background subscription change queued or running.
    subscribing: Mutex<HashSet<RoomName>>,
    /// The last adapter call failed as retryable, or the adapter reported
    /// the medium lost, and no `Reconnected` or success has come since: joins
    /// complete locally at once.
    medium_down: AtomicBool,
    /// Since when and why the medium is down (`None` while up). Never held
    /// across an await.
    medium_lost: Mutex<Option<(std::time::Instant, String)>>,
    connection_queue: usize,
    connection_queue_bytes: usize,
    dedup_capacity: usize,
    fingerprints: Fingerprinter,
    recent: Mutex<RecentIds>,
    policy: SlowConsumerPolicy,
    filter: Option<DeliveryFilter>,
    counters: Counters,
    /// Latency histograms ([`Rooms::latency_stats`]), shared with every
    /// connection's receiver (queue wait).
    pub(crate) latency: Arc<Latencies>,
    lifecycle: broadcast::Sender<RoomsEvent>,
    /// Drops waiting to be signalled (shared with the sink, which records
    /// inbound drops).
    gaps: Arc<GapBoard>,
    sink: EventSink,
    closed: AtomicBool,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// Node liveness and cross-node queries (adapters with the control
    /// capability).
    pub(crate) control: Option<Arc<Control>>,
    control_task: Mutex<Option<JoinHandle<()>>>,
    /// Every room keeps this much history ([`RoomsBuilder::history`]).
    history: Option<HistoryPolicy>,
    /// Rooms whose messages from other nodes wait for their catch-up from
    /// history after an outage.
    catch_up: catch_up::CatchUpBoard,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in [&mut self.dispatcher, &mut self.control_task] {
            if let Some(task) = task
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                task.abort();
            }
        }
    }
}

impl LocalView for Inner {
    fn member_count(&self, room: &str) -> usize {
        self.read().member_count(room)
    }

    fn room_counts(&self) -> Vec<(RoomName, usize)> {
        self.read().room_counts()
    }

    fn totals(&self) -> (u64, u64) {
        let registry = self.read();
        (
            registry.connection_count() as u64,
            registry.room_count() as u64,
        )
    }

    fn emit(&self, event: RoomsEvent) {
        // No receiver is fine: nobody listens for lifecycle events.
        let _ = self.lifecycle.send(event);
    }
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribed(&self) -> std::sync::MutexGuard<'_, HashSet<RoomName>> {
        self.subscribed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed {
                what: "rooms engine",
            })
        } else {
            Ok(())
        }
    }

    /// Called when a receiver is dropped or found closed or lagging: the
    /// connection leaves every room now; adapter unsubscriptions follow in the
    /// background.
    pub(crate) fn connection_gone(self: &Arc<Self>, id: &ConnectionId) {
        let removed = self.write().remove_connection(id);
        let Some((entry, emptied)) = removed else {
            return;
        };
        entry.close();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        for room in emptied {
            self.reconcile_in_background(room);
        }
    }

    /// The span of one publish to the medium (trace level: one per room
    /// and message).
    pub(crate) fn publish_span(&self, room: &RoomName) -> tracing::Span {
        tracing::trace_span!(
            "rooms.publish",
            node = %self.node,
            medium = self.adapter.name(),
            room = %room,
        )
    }
}

impl Rooms {
    /// Starts building an engine over `adapter`.
    pub fn builder(adapter: Arc<dyn RoomAdapter>) -> RoomsBuilder {
        RoomsBuilder::new(adapter)
    }

    pub(crate) fn inner_ref(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The engine behind an `Inner` (e.g. upgraded from a weak reference).
    #[cfg(feature = "prometheus")]
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The history every room keeps, if on ([`RoomsBuilder::history`]).
    pub fn history_policy(&self) -> Option<HistoryPolicy> {
        self.inner.history
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node
    }

    /// The adapter's name (`memory`, `redis`, ...).
    pub fn adapter_name(&self) -> &str {
        self.inner.adapter.name()
    }

    /// Registers a local connection and returns the receiver its transport
    /// drains. Dropping the receiver disconnects it.
    pub async fn connect(&self, options: ConnectOptions) -> Result<ConnectionReceiver, Error> {
        self.inner.ensure_open()?;
        let capacity = options
            .queue_capacity
            .unwrap_or(self.inner.connection_queue);
        check_range("queue_capacity", capacity, 1, MAX_CONNECTION_QUEUE)?;
        let queue_bytes = options
            .queue_bytes
            .unwrap_or(self.inner.connection_queue_bytes);
        check_range("queue_bytes", queue_bytes, 1, MAX_CONNECTION_QUEUE_BYTES)?;
        let id = options.id.unwrap_or_else(ConnectionId::random);
        let span = tracing::debug_span!(
            "rooms.connect",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            connection = %id,
        );
        let _entered = span.enter();
        // Bounded by the entry (count and bytes), see `ConnectionEntry::push`.
        let (sender, receiver) = mpsc::unbounded_channel();
        let entry = ConnectionEntry::new(
            id.clone(),
            sender,
            options.context,
            (capacity, queue_bytes),
            self.inner.dedup_capacity,
        );
        let load = entry.load();
        self.inner.write().add_connection(Arc::new(entry))?;
        Ok(ConnectionReceiver::new(
            id,
            receiver,
            load,
            Arc::downgrade(&self.inner),
            Arc::clone(&self.inner.latency),
        ))
    }

    /// Removes a connection from every room and ends its receiver. Returns
    /// whether it was connected; disconnecting twice is fine.
    pub async fn disconnect(&self, connection: &ConnectionId) -> Result<bool, Error> {
        let span = tracing::debug_span!(
            "rooms.disconnect",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            connection = %connection,
        );
        self.disconnect_inner(connection).instrument(span).await
    }

    async fn disconnect_inner(&self, connection: &ConnectionId) -> Result<bool, Error> {
        let removed = self.inner.write().remove_connection(connection);
        let Some((entry, emptied)) = removed else {
            return Ok(false);
        };
        entry.close();
        drop(entry);
        let mut first_error = None;
        for room in emptied {
            if let Err(error) = self.inner.reconcile_or_defer(&room).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(true), Err)
    }

    /// Adds a connection to a room. Returns whether it was not a member before.
    ///
    /// When this is the room's first local member the adapter subscribes, and
    /// this returns once the medium confirmed it. A join waits only for its
    /// own room: one subscription change per room is in flight at a time,
    /// and other rooms' I/O never holds it up. If the adapter fails, the
    /// connection stays in the room (local delivery works) and the error is
    /// returned; a retryable failure is healed by the adapter's reconnect.
    ///
    /// While the medium is known to be down (the last adapter call failed as
    /// retryable, and no success or [`RoomsEvent::Reconnected`] came since),
    /// a join completes locally at once: the room is subscribed in the
    /// background and listed in the `Reconnected` event when the medium
    /// returns.
    pub async fn join(
        &self,
        connection: &ConnectionId,
        room: impl Into<RoomName>,
    ) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let room = room.into();
        let span = tracing::debug_span!(
            "rooms.join",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            room = %room,
            connection = %connection,
        );
        async {
            let joined = self.inner.write().join(connection, &room)?;
            if !self.inner.subscribed().contains(&room) {
                self.inner.reconcile_or_defer(&room).await?;
            }
            Ok(joined.newly_joined)
        }
        .instrument(span)
        .await
    }

    /// Removes a connection from a room. Returns whether it was a member.
    pub async fn leave(
        &self,
        connection: &ConnectionId,
        room: impl Into<RoomName>,
    ) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let room = room.into();
        let span = tracing::debug_span!(
            "rooms.leave",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            room = %room,
            connection = %connection,
        );
        async {
            let left = self.inner.write().leave(connection, &room)?;
            if left.room_now_empty {
                self.inner.reconcile_or_defer(&room).await?;
            }
            Ok(left.was_member)
        }
        .instrument(span)
        .await
    }

    /// Removes a connection from every room but keeps it connected. Returns the
    /// rooms it left.
    pub async fn leave_all(&self, connection: &ConnectionId) -> Result<Vec<RoomName>, Error> {
        self.inner.ensure_open()?;
        let rooms = self
            .inner
            .read()
            .rooms_of(connection)
            .ok_or_else(|| Error::UnknownConnection(connection.clone()))?;
        for room in &rooms {
            self.leave(connection, room.clone()).await?;
        }
        Ok(rooms)
    }

    /// The rooms a connection is in (`None` if it is not connected).
    pub fn rooms_of(&self, connection: &ConnectionId) -> Option<Vec<RoomName>> {
        self.inner.read().rooms_of(connection)
    }

    /// The local members of a room.
    pub fn members_of(&self, room: impl AsRef<str>) -> Vec<ConnectionId> {
        self.inner.read().members_of(room.as_ref())
    }

    /// How many local members a room has.
    pub fn member_count(&self, room: impl AsRef<str>) -> usize {
        self.inner.read().member_count(room.as_ref())
    }

    /// Whether a connection is in a room.
    pub fn is_in_room(&self, connection: &ConnectionId, room: impl AsRef<str>) -> bool {
        self.inner.read().is_in_room(connection, room.as_ref())
    }

    /// Whether a connection is connected to this node.
    pub fn is_connected(&self, connection: &ConnectionId) -> bool {
        self.inner.read().contains_connection(connection)
    }

    /// Every room with at least one local member.
    pub fn rooms(&self) -> Vec<RoomName> {
        self.inner.read().all_rooms()
    }

    /// Rooms the adapter is subscribed to (or wants to be).
    pub fn subscribed_rooms(&self) -> Vec<RoomName> {
        self.inner.subscribed().iter().cloned().collect()
    }

    /// Whether the medium is reachable, for readiness probes; see
    /// [`MediumStatus`].
    pub fn medium_status(&self) -> MediumStatus {
        let lost = self
            .inner
            .medium_lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*lost {
            Some((since, reason)) => MediumStatus::Down {
                since: *since,
                reason: reason.clone(),
            },
            None => MediumStatus::Up,
        }
    }

    /// Lifecycle events of the medium, such as [`RoomsEvent::Reconnected`].
    pub fn lifecycle(&self) -> broadcast::Receiver<RoomsEvent> {
        self.inner.lifecycle.subscribe()
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let control = self
            .inner
            .control
            .as_deref()
            .map(|control| &control.counters);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (connections, rooms) = {
            let registry = self.inner.read();
            (
                registry.connection_count() as u64,
                registry.room_count() as u64,
            )
        };
        EngineStats {
            connections,
            rooms,
            broadcasts: load(&c.broadcasts),
            deliveries: load(&c.deliveries),
            filtered: load(&c.filtered),
            duplicates: load(&c.duplicates),
            frames_encoded: load(&c.frames_encoded),
            remote_received: load(&c.remote_received),
            echoes_dropped: load(&c.echoes_dropped),
            remote_rejected: load(&c.remote_rejected),
            lagging_disconnects: load(&c.lagging_disconnects),
            lagging_drops: load(&c.lagging_drops),
            inbound_dropped: self.inner.sink.dropped(),
            reconnects: load(&c.reconnects),
            subscription_errors: load(&c.subscription_errors),
            deferred_subscriptions: load(&c.deferred_subscriptions),
            gaps_signalled: load(&c.gaps_signalled),
            control_rejected: control.map_or(0, |c| load(&c.rejected)),
            control_unsent: control.map_or(0, |c| load(&c.unsent)),
            queries_answered: control.map_or(0, |c| load(&c.answered)),
            resumes: load(&c.replayed),
        }
    }

    /// The engine's latency histograms: publish, delivery from the medium,
    /// and queue wait; see [`metrics`](crate::metrics).
    pub fn latency_stats(&self) -> LatencyStats {
        self.inner.latency.snapshot()
    }

    /// The adapter's counters.
    pub fn adapter_stats(&self) -> AdapterStats {
        self.inner.adapter.stats()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Disconnects the adapter, ends every connection's receiver and stops the
    /// engine. Idempotent; later calls to other methods return
    /// [`Error::Closed`].
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(control) = &self.inner.control {
            control.leave().await;
        }
        let control_task = self
            .inner
            .control_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = control_task {
            task.abort();
        }
        if let Err(error) = self.inner.adapter.disconnect().await {
            tracing::warn!(%error, "adapter disconnect failed during shutdown");
        }
        let task = self
            .inner
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
        let connections = self.inner.write().drain();
        for entry in connections {
            entry.close();
        }
        self.inner.subscribed().clear();
    }
}
