//! The rooms engine: [`Rooms`] ties the registry, local connections and the
//! adapter together.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::adapter::{AdapterEvent, AdapterStats, EventSink, EventStream, RoomAdapter};
use crate::broadcast::{BroadcastOptions, BroadcastReport, DeliveryFilter};
use crate::connection::{
    ConnectOptions, ConnectionEntry, ConnectionReceiver, Delivery, SlowConsumerPolicy,
};
use crate::error::Error;
use crate::ids::{ConnectionId, NodeId, RoomName};
use crate::message::SseMessage;
use crate::registry::Registry;
use crate::sse;
use crate::wire::Envelope;

/// Default capacity of each connection's queue.
pub const DEFAULT_CONNECTION_QUEUE: usize = 256;
/// Default number of message ids each connection remembers for deduplication.
pub const DEFAULT_DEDUP_CAPACITY: usize = 1000;
/// Default capacity of the adapter-to-engine hand-off queue.
pub const DEFAULT_INBOUND_QUEUE: usize = 65_536;

const SUBSCRIPTION_SHARDS: usize = 64;

/// A lifecycle event of the medium, for the application (e.g. to tell clients
/// to resync after an outage).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomsEvent {
    /// The medium was lost and restored; these rooms may have missed messages.
    Reconnected {
        /// Rooms re-subscribed.
        rooms: Vec<RoomName>,
        /// How long the medium was gone.
        outage: Duration,
    },
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
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Builds a [`Rooms`] engine with validated settings.
pub struct RoomsBuilder {
    adapter: Arc<dyn RoomAdapter>,
    node: Option<NodeId>,
    connection_queue: usize,
    dedup_capacity: usize,
    inbound_queue: usize,
    policy: SlowConsumerPolicy,
    filter: Option<DeliveryFilter>,
}

impl RoomsBuilder {
    /// This node's id (default: a random v4 UUID). The engine hands it to the
    /// adapter, so the two can never disagree.
    #[must_use]
    pub fn node_id(mut self, node: impl Into<NodeId>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Capacity of each connection's queue (default 256, at least 1).
    #[must_use]
    pub fn connection_queue_capacity(mut self, capacity: usize) -> Self {
        self.connection_queue = capacity;
        self
    }

    /// How many message ids each connection remembers to drop duplicates
    /// (default 1000; 0 turns deduplication off).
    #[must_use]
    pub fn dedup_capacity(mut self, capacity: usize) -> Self {
        self.dedup_capacity = capacity;
        self
    }

    /// Capacity of the queue from the adapter's receive loop to the engine
    /// (default 65,536, at least 1). When it is full, inbound events are dropped
    /// and counted rather than stalling the medium.
    #[must_use]
    pub fn inbound_queue_capacity(mut self, capacity: usize) -> Self {
        self.inbound_queue = capacity;
        self
    }

    /// What to do when a connection's queue is full (default: disconnect it).
    #[must_use]
    pub fn slow_consumer_policy(mut self, policy: SlowConsumerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A filter run before every delivery to a local connection.
    #[must_use]
    pub fn filter(mut self, filter: DeliveryFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Validates the settings, connects the adapter and starts delivering.
    pub async fn build(self) -> Result<Rooms, Error> {
        if self.connection_queue == 0 {
            return Err(Error::Config(
                "connection_queue_capacity must be at least 1, got 0".into(),
            ));
        }
        if self.inbound_queue == 0 {
            return Err(Error::Config(
                "inbound_queue_capacity must be at least 1, got 0".into(),
            ));
        }
        if let Some(node) = &self.node
            && node.as_str().is_empty()
        {
            return Err(Error::Config("node_id must not be empty".into()));
        }
        let node = self.node.unwrap_or_else(NodeId::random);
        let (sink, stream) = EventSink::bounded(self.inbound_queue);
        let inner = Arc::new(Inner {
            node: node.clone(),
            adapter: self.adapter,
            registry: RwLock::new(Registry::default()),
            subscribed: Mutex::new(HashSet::new()),
            subscription_locks: (0..SUBSCRIPTION_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            connection_queue: self.connection_queue,
            dedup_capacity: self.dedup_capacity,
            policy: self.policy,
            filter: self.filter,
            counters: Counters::default(),
            lifecycle: broadcast::channel(64).0,
            sink: sink.clone(),
            closed: AtomicBool::new(false),
            dispatcher: Mutex::new(None),
        });
        inner.adapter.connect(node, sink).await?;
        let dispatcher = tokio::spawn(dispatch(Arc::downgrade(&inner), stream));
        *inner
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(dispatcher);
        Ok(Rooms { inner })
    }
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
    /// failure). Changed only under the room's subscription lock.
    subscribed: Mutex<HashSet<RoomName>>,
    subscription_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    connection_queue: usize,
    dedup_capacity: usize,
    policy: SlowConsumerPolicy,
    filter: Option<DeliveryFilter>,
    counters: Counters,
    lifecycle: broadcast::Sender<RoomsEvent>,
    sink: EventSink,
    closed: AtomicBool,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
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
        if let Some(task) = self
            .dispatcher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

enum Outcome {
    Delivered,
    Filtered,
    Duplicate,
    Dropped,
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

    fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed {
                what: "rooms engine",
            })
        } else {
            Ok(())
        }
    }

    fn subscription_lock(&self, room: &RoomName) -> &tokio::sync::Mutex<()> {
        let shard = (self.hasher.hash_one(room) % self.subscription_locks.len() as u64) as usize;
        &self.subscription_locks[shard]
    }

    /// Brings the adapter's subscription of `room` in line with whether the room
    /// has local members now. Serialised per room, so joins and leaves that race
    /// settle to the right state.
    async fn reconcile(&self, room: &RoomName) -> Result<(), Error> {
        let _guard = self.subscription_lock(room).lock().await;
        let want = self.read().has_members(room);
        let have = self.subscribed().contains(room);
        if want && !have {
            match self.adapter.subscribe(room).await {
                Ok(()) => {
                    self.subscribed().insert(room.clone());
                }
                Err(error) => {
                    bump(&self.counters.subscription_errors);
                    if error.is_retryable() {
                        // The adapter keeps the room wanted and subscribes it
                        // when the medium is back.
                        self.subscribed().insert(room.clone());
                    }
                    return Err(error);
                }
            }
        } else if !want && have {
            self.subscribed().remove(room);
            if let Err(error) = self.adapter.unsubscribe(room).await {
                bump(&self.counters.subscription_errors);
                return Err(error);
            }
        }
        Ok(())
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
        if emptied.is_empty() || self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(self);
            runtime.spawn(async move {
                for room in emptied {
                    if let Err(error) = inner.reconcile(&room).await {
                        tracing::warn!(%room, %error, "unsubscribe after disconnect failed");
                    }
                }
            });
        }
    }

    fn deliver(
        self: &Arc<Self>,
        entry: &ConnectionEntry,
        delivery: &Arc<Delivery>,
        metadata: Option<&Value>,
    ) -> Outcome {
        let message = delivery.message();
        if let Some(filter) = &self.filter
            && !filter(&entry.info(), message, metadata)
        {
            bump(&self.counters.filtered);
            return Outcome::Filtered;
        }
        if let Some(id) = &message.id
            && !entry.first_time(id)
        {
            bump(&self.counters.duplicates);
            return Outcome::Duplicate;
        }
        match entry.sender.try_send(Arc::clone(delivery)) {
            Ok(()) => {
                bump(&self.counters.deliveries);
                Outcome::Delivered
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                match self.policy {
                    SlowConsumerPolicy::DropNewest => bump(&self.counters.lagging_drops),
                    SlowConsumerPolicy::Disconnect => {
                        if entry.close() {
                            bump(&self.counters.lagging_disconnects);
                            tracing::debug!(connection = %entry.id, "disconnecting lagging connection");
                            self.connection_gone(&entry.id);
                        }
                    }
                }
                Outcome::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.connection_gone(&entry.id);
                Outcome::Dropped
            }
        }
    }

    fn frame(&self, message: Arc<SseMessage>) -> Result<Arc<Delivery>, Error> {
        let frame = sse::frame(&message)?;
        bump(&self.counters.frames_encoded);
        Ok(Arc::new(Delivery::new(message, frame)))
    }

    fn handle_remote(self: &Arc<Self>, room: RoomName, envelope: Envelope) {
        bump(&self.counters.remote_received);
        if envelope.node() == &self.node {
            bump(&self.counters.echoes_dropped);
            return;
        }
        let recipients = self
            .read()
            .recipients(std::slice::from_ref(&room), envelope.except());
        if recipients.is_empty() {
            return;
        }
        let delivery = match self.frame(Arc::clone(envelope.shared_message())) {
            Ok(delivery) => delivery,
            Err(error) => {
                bump(&self.counters.remote_rejected);
                tracing::debug!(%room, %error, "dropping remote message that cannot be framed");
                return;
            }
        };
        for entry in &recipients {
            self.deliver(entry, &delivery, envelope.meta());
        }
    }
}

async fn dispatch(engine: std::sync::Weak<Inner>, mut events: EventStream) {
    while let Some(event) = events.recv().await {
        let Some(inner) = engine.upgrade() else {
            return;
        };
        match event {
            AdapterEvent::Message { room, envelope } => inner.handle_remote(room, envelope),
            AdapterEvent::Reconnected { rooms, outage } => {
                bump(&inner.counters.reconnects);
                tracing::info!(rooms = rooms.len(), ?outage, "medium reconnected");
                // No receiver is fine: nobody listens for lifecycle events.
                let _ = inner
                    .lifecycle
                    .send(RoomsEvent::Reconnected { rooms, outage });
            }
        }
    }
}

impl Rooms {
    /// Starts building an engine over `adapter`.
    pub fn builder(adapter: Arc<dyn RoomAdapter>) -> RoomsBuilder {
        RoomsBuilder {
            adapter,
            node: None,
            connection_queue: DEFAULT_CONNECTION_QUEUE,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            inbound_queue: DEFAULT_INBOUND_QUEUE,
            policy: SlowConsumerPolicy::default(),
            filter: None,
        }
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
        if capacity == 0 {
            return Err(Error::Config(
                "queue_capacity must be at least 1, got 0".into(),
            ));
        }
        let id = options.id.unwrap_or_else(ConnectionId::random);
        let (sender, receiver) = mpsc::channel(capacity);
        let entry = ConnectionEntry::new(
            id.clone(),
            sender,
            options.context,
            self.inner.dedup_capacity,
        );
        self.inner.write().add_connection(Arc::new(entry))?;
        Ok(ConnectionReceiver::new(
            id,
            receiver,
            Arc::downgrade(&self.inner),
        ))
    }

    /// Removes a connection from every room and ends its receiver. Returns
    /// whether it was connected; disconnecting twice is fine.
    pub async fn disconnect(&self, connection: &ConnectionId) -> Result<bool, Error> {
        let removed = self.inner.write().remove_connection(connection);
        let Some((entry, emptied)) = removed else {
            return Ok(false);
        };
        entry.close();
        drop(entry);
        let mut first_error = None;
        for room in emptied {
            if let Err(error) = self.inner.reconcile(&room).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(true), Err)
    }

    /// Adds a connection to a room. Returns whether it was not a member before.
    ///
    /// When this is the room's first local member the adapter subscribes, and
    /// this returns once the medium confirmed it. If the adapter fails, the
    /// connection stays in the room (local delivery works) and the error is
    /// returned; a retryable failure is healed by the adapter's reconnect.
    pub async fn join(
        &self,
        connection: &ConnectionId,
        room: impl Into<RoomName>,
    ) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let room = room.into();
        let joined = self.inner.write().join(connection, &room)?;
        if !self.inner.subscribed().contains(&room) {
            self.inner.reconcile(&room).await?;
        }
        Ok(joined.newly_joined)
    }

    /// Removes a connection from a room. Returns whether it was a member.
    pub async fn leave(
        &self,
        connection: &ConnectionId,
        room: impl Into<RoomName>,
    ) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let room = room.into();
        let left = self.inner.write().leave(connection, &room)?;
        if left.room_now_empty {
            self.inner.reconcile(&room).await?;
        }
        Ok(left.was_member)
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

    /// Broadcasts to one room on every node.
    pub async fn broadcast(
        &self,
        room: impl Into<RoomName>,
        message: impl Into<Arc<SseMessage>>,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport, Error> {
        self.broadcast_to([room.into()], message, options).await
    }

    /// Broadcasts to several rooms on every node. A local connection in more
    /// than one of them gets one copy. The SSE frame is built once, the envelope
    /// encoded once, and one envelope is published per room.
    ///
    /// Local delivery happens first; if publishing then fails (the medium is
    /// down), the error is returned and local members have the message.
    pub async fn broadcast_to<I, R>(
        &self,
        rooms: I,
        message: impl Into<Arc<SseMessage>>,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport, Error>
    where
        I: IntoIterator<Item = R>,
        R: Into<RoomName>,
    {
        self.inner.ensure_open()?;
        let message = message.into();
        sse::validate(&message)?;
        let mut rooms: Vec<RoomName> = rooms.into_iter().map(Into::into).collect();
        if rooms.len() > 1 {
            rooms.sort();
            rooms.dedup();
        }
        bump(&self.inner.counters.broadcasts);

        let mut report = BroadcastReport::default();
        let recipients = self
            .inner
            .read()
            .recipients(&rooms, options.except.as_ref());
        if !recipients.is_empty() {
            let delivery = self.inner.frame(Arc::clone(&message))?;
            for entry in &recipients {
                match self
                    .inner
                    .deliver(entry, &delivery, options.metadata.as_ref())
                {
                    Outcome::Delivered => report.delivered += 1,
                    Outcome::Filtered => report.filtered += 1,
                    Outcome::Dropped => report.dropped += 1,
                    Outcome::Duplicate => {}
                }
            }
        }

        if options.local_only {
            return Ok(report);
        }
        let envelope = Envelope::new(self.inner.node.clone(), message)
            .with_except(options.except)
            .with_meta(options.metadata);
        let adapter = &self.inner.adapter;
        if let [room] = rooms.as_slice() {
            // The common case: no fan-out of futures to join.
            adapter.publish(room, &envelope).await?;
            report.published = 1;
            return Ok(report);
        }
        let results = futures_util::future::join_all(
            rooms.iter().map(|room| adapter.publish(room, &envelope)),
        )
        .await;
        for result in results {
            result?;
            report.published += 1;
        }
        Ok(report)
    }

    /// The rooms a connection is in (`None` if it is not connected).
    pub fn rooms_of(&self, connection: &ConnectionId) -> Option<Vec<RoomName>> {
        self.inner.read().rooms_of(connection)
    }

    /// The local members of a room.
    pub fn members_of(&self, room: &RoomName) -> Vec<ConnectionId> {
        self.inner.read().members_of(room)
    }

    /// How many local members a room has.
    pub fn member_count(&self, room: &RoomName) -> usize {
        self.inner.read().member_count(room)
    }

    /// Whether a connection is in a room.
    pub fn is_in_room(&self, connection: &ConnectionId, room: &RoomName) -> bool {
        self.inner.read().is_in_room(connection, room)
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

    /// Lifecycle events of the medium, such as [`RoomsEvent::Reconnected`].
    pub fn lifecycle(&self) -> broadcast::Receiver<RoomsEvent> {
        self.inner.lifecycle.subscribe()
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
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
        }
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
