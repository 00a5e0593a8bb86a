//! Local connections: each has a bounded queue of [`Delivery`]s that its
//! transport (an SSE stream, a WebSocket task, ...) drains through a
//! [`ConnectionReceiver`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

mod recovery;

pub(crate) use self::recovery::Covered;
use self::recovery::Recovery;
use crate::dedup::{Fingerprint, IdRing};
use crate::engine::{Inner, MAX_CONNECTION_QUEUE, MAX_CONNECTION_QUEUE_BYTES};
use crate::ids::ConnectionId;
use crate::message::SseMessage;
use crate::metrics::{Latencies, Sampler};

/// One message on its way to local connections, shared by reference count: the
/// SSE frame is built once per message, not once per connection.
#[derive(Debug)]
pub struct Delivery {
    message: Arc<SseMessage>,
    frame: Bytes,
    id_fingerprint: Option<Fingerprint>,
    /// When it was framed, just before it is queued: the start of its
    /// queue wait. Only one delivery in
    /// [`DELIVERY_SAMPLE`](crate::metrics::DELIVERY_SAMPLE) is stamped.
    framed_at: Option<Instant>,
}

/// `Some(now)` for one delivery in
/// [`DELIVERY_SAMPLE`](crate::metrics::DELIVERY_SAMPLE) framed on this
/// thread (a thread-local count: no shared atomic on the hot path).
fn stamp_framed() -> Option<Instant> {
    thread_local! {
        static FRAMED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let framed = FRAMED.with(|framed| {
        let n = framed.get();
        framed.set(n.wrapping_add(1));
        n
    });
    crate::metrics::sampled(framed).then(Instant::now)
}

impl Delivery {
    pub(crate) fn new(
        message: Arc<SseMessage>,
        frame: Bytes,
        id_fingerprint: Option<Fingerprint>,
    ) -> Self {
        Self {
            message,
            frame,
            id_fingerprint,
            framed_at: stamp_framed(),
        }
    }

    pub(crate) fn id_fingerprint(&self) -> Option<Fingerprint> {
        self.id_fingerprint
    }

    /// The message.
    pub fn message(&self) -> &SseMessage {
        &self.message
    }

    /// The complete SSE event (`event:`, `id:`, `retry:`, `data:` lines and the
    /// blank line), ready to write to an `text/event-stream` body.
    pub fn sse_frame(&self) -> &Bytes {
        &self.frame
    }
}

/// What happens when a connection's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Disconnect the lagging connection (it leaves every room and its receiver
    /// ends after the queued messages) and count it. The default: a client that
    /// missed messages should reconnect and resync (e.g. with `Last-Event-ID`).
    #[default]
    Disconnect,
    /// Drop the new message for this connection only, and count it.
    DropNewest,
}

/// Options for [`Rooms::connect`](crate::Rooms::connect).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub(crate) id: Option<ConnectionId>,
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) queue_bytes: Option<usize>,
    pub(crate) context: Option<Value>,
}

impl ConnectOptions {
    /// Default options: a random id, the engine's queue capacity, no context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this id instead of a random one. It must be unique in the cluster
    /// for `except` to work across nodes.
    #[must_use]
    pub fn id(mut self, id: impl Into<ConnectionId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Overrides the engine's per-connection queue capacity, in messages (1
    /// to [`MAX_CONNECTION_QUEUE`]).
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Overrides the engine's limit on queued bytes for this connection (1 to
    /// [`MAX_CONNECTION_QUEUE_BYTES`]).
    #[must_use]
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = Some(bytes);
        self
    }

    /// Attaches application data (e.g. the user's id and permissions) that the
    /// delivery filter sees as [`ConnectionInfo::context`].
    #[must_use]
    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }
}

/// What a delivery filter knows about a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo<'a> {
    /// The connection's id.
    pub id: &'a ConnectionId,
    /// The context given at connect time.
    pub context: Option<&'a Value>,
}

/// The engine's side of a connection.
///
/// `repr(C)`: the fields every delivery reads come first and sit together
/// (48 bytes after the `Arc`'s counts: one cache line, or two when the
/// allocation straddles a boundary). With 10,000 connections the entries do
/// not stay in cache between two broadcasts: each extra line read is a miss
/// per delivery.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ConnectionEntry {
    /// Set while rooms of this connection are recovered from history: their
    /// live deliveries wait in `recovery` until the replay is queued.
    recovering: AtomicBool,
    /// Set while the connection is in two or more rooms: only then can one
    /// broadcast reach it twice, and only then does it keep an [`IdRing`].
    multi_room: AtomicBool,
    closed: AtomicBool,
    queue_capacity: usize,
    queue_bytes_limit: usize,
    ring_capacity: usize,
    load: Arc<QueueLoad>,
    /// The queue itself is a tokio unbounded channel: its bound is enforced
    /// here, by count and by bytes, with one atomic word ([`QueueLoad`]) instead of
    /// a semaphore whose lock the receiver would take on every message.
    sender: mpsc::UnboundedSender<Arc<Delivery>>,
    pub(crate) id: ConnectionId,
    pub(crate) context: Option<Value>,
    ring: Mutex<Option<IdRing>>,
    recovery: Mutex<Recovery>,
}

/// How much is queued for one connection, shared by the engine (which adds)
/// and the receiver (which takes): the message count and the bytes in one
/// atomic word, so a push and a take each cost one read-modify-write on a
/// line the two sides share. Messages sit above [`QueueLoad::BYTE_BITS`],
/// bytes below.
#[derive(Debug, Default)]
pub(crate) struct QueueLoad(AtomicU64);

impl QueueLoad {
    /// Bits of the word counting bytes: 4 TiB, far above
    /// [`MAX_CONNECTION_QUEUE_BYTES`] plus the frames in flight.
    const BYTE_BITS: u32 = 42;
    const ONE_MESSAGE: u64 = 1 << Self::BYTE_BITS;
    const BYTE_MASK: u64 = Self::ONE_MESSAGE - 1;

    /// One message of `size` bytes as a word to add or subtract (a frame
    /// over 4 TiB, which cannot exist, would count as 4 TiB both ways).
    fn word(size: usize) -> u64 {
        Self::ONE_MESSAGE + u64::try_from(size).map_or(Self::BYTE_MASK, |s| s.min(Self::BYTE_MASK))
    }

    /// Adds one message of `size` bytes; returns the messages and bytes
    /// queued before it.
    fn add(&self, size: usize) -> (usize, usize) {
        let before = self.0.fetch_add(Self::word(size), Ordering::AcqRel);
        Self::split(before)
    }

    fn taken(&self, size: usize) {
        self.0.fetch_sub(Self::word(size), Ordering::AcqRel);
    }

    fn bytes(&self) -> usize {
        Self::split(self.0.load(Ordering::Acquire)).1
    }

    fn split(word: u64) -> (usize, usize) {
        let messages = usize::try_from(word >> Self::BYTE_BITS).unwrap_or(usize::MAX);
        let bytes = usize::try_from(word & Self::BYTE_MASK).unwrap_or(usize::MAX);
        (messages, bytes)
    }
}

// The message count (at most `MAX_CONNECTION_QUEUE`, plus one per pusher in
// flight) must fit above the bytes.
const _: () = assert!((MAX_CONNECTION_QUEUE as u64) < 1 << (63 - QueueLoad::BYTE_BITS));
const _: () = assert!((MAX_CONNECTION_QUEUE_BYTES as u64) < 1 << (QueueLoad::BYTE_BITS - 2));

/// What [`ConnectionEntry::push`] did.
pub(crate) enum Push {
    Queued,
    Duplicate,
    Full,
    Closed,
}

impl ConnectionEntry {
    pub(crate) fn new(
        id: ConnectionId,
        sender: mpsc::UnboundedSender<Arc<Delivery>>,
        context: Option<Value>,
        (queue_capacity, queue_bytes_limit): (usize, usize),
        ring_capacity: usize,
    ) -> Self {
        Self {
            id,
            sender,
            context,
            load: Arc::default(),
            queue_capacity,
            queue_bytes_limit,
            multi_room: AtomicBool::new(false),
            ring: Mutex::new(None),
            ring_capacity,
            closed: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            recovery: Mutex::new(Recovery::default()),
        }
    }

    /// The most deliveries its queue holds.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    pub(crate) fn info(&self) -> ConnectionInfo<'_> {
        ConnectionInfo {
            id: &self.id,
            context: self.context.as_ref(),
        }
    }

    pub(crate) fn load(&self) -> Arc<QueueLoad> {
        Arc::clone(&self.load)
    }

    /// Told by the registry when the connection's room count crosses two.
    pub(crate) fn set_multi_room(&self, multi_room: bool) {
        self.multi_room.store(multi_room, Ordering::Relaxed);
        if !multi_room {
            // Back in one room: cross-room duplicates are impossible again.
            *self.ring.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// Queues a delivery unless it repeats an id this connection got through
    /// another room, or the queue is full (by count or by bytes).
    pub(crate) fn push(&self, delivery: &Arc<Delivery>) -> Push {
        if self.ring_capacity > 0
            && self.multi_room.load(Ordering::Relaxed)
            && let Some(fingerprint) = delivery.id_fingerprint()
        {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let ring = ring.get_or_insert_with(|| IdRing::new(self.ring_capacity));
            if !ring.first_time(fingerprint) {
                return Push::Duplicate;
            }
        }
        let size = delivery.frame.len();
        let (messages, bytes) = self.load.add(size);
        // One message always fits an empty queue, however large it is.
        let over_bytes = bytes > 0 && bytes.saturating_add(size) > self.queue_bytes_limit;
        if messages >= self.queue_capacity || over_bytes {
            self.load.taken(size);
            return Push::Full;
        }
        match self.sender.send(Arc::clone(delivery)) {
            Ok(()) => Push::Queued,
            Err(_) => {
                self.load.taken(size);
                Push::Closed
            }
        }
    }

    /// Marks the connection closed; true if it was open.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}

/// The transport's end of a connection: the deliveries for one client, in order.
///
/// Dropping it (the client went away) removes the connection from every room.
#[derive(Debug)]
pub struct ConnectionReceiver {
    id: ConnectionId,
    receiver: mpsc::UnboundedReceiver<Arc<Delivery>>,
    load: Arc<QueueLoad>,
    engine: Weak<Inner>,
    latency: Arc<Latencies>,
    sampler: Sampler,
}

impl ConnectionReceiver {
    pub(crate) fn new(
        id: ConnectionId,
        receiver: mpsc::UnboundedReceiver<Arc<Delivery>>,
        load: Arc<QueueLoad>,
        engine: Weak<Inner>,
        latency: Arc<Latencies>,
    ) -> Self {
        Self {
            id,
            receiver,
            load,
            engine,
            latency,
            sampler: Sampler::default(),
        }
    }

    fn taken(&mut self, delivery: Option<Arc<Delivery>>) -> Option<Arc<Delivery>> {
        if let Some(delivery) = &delivery {
            self.load.taken(delivery.frame.len());
            if let Some(framed_at) = delivery.framed_at
                && self.sampler.sample()
            {
                self.latency.queue_wait.record_since(framed_at);
            }
        }
        delivery
    }

    /// This connection's id.
    pub fn id(&self) -> &ConnectionId {
        &self.id
    }

    /// The next delivery; `None` once the connection was disconnected (by the
    /// application, by the slow-consumer policy, or at shutdown) and its queue
    /// is drained.
    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        let delivery = self.receiver.recv().await;
        self.taken(delivery)
    }

    /// Takes up to `limit` deliveries into `buffer`, waiting until at least one
    /// is queued; returns how many were taken (0 once the connection ended).
    /// A transport writes them with one write.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Arc<Delivery>>, limit: usize) -> usize {
        let start = buffer.len();
        let taken = self.receiver.recv_many(buffer, limit).await;
        let mut now = None;
        for delivery in &buffer[start..] {
            self.load.taken(delivery.frame.len());
            if let Some(framed_at) = delivery.framed_at
                && self.sampler.sample()
            {
                // One clock read for the whole batch.
                let now = *now.get_or_insert_with(Instant::now);
                self.latency
                    .queue_wait
                    .record(now.saturating_duration_since(framed_at));
            }
        }
        taken
    }

    /// Polls for the next delivery (for `Stream` adapters).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Delivery>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(delivery) => Poll::Ready(self.taken(delivery)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A delivery if one is queued now.
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        let delivery = self.receiver.try_recv().ok();
        self.taken(delivery)
    }

    /// How many deliveries are queued.
    pub fn queued(&self) -> usize {
        self.receiver.len()
    }

    /// How many bytes of SSE frames are queued.
    pub fn queued_bytes(&self) -> usize {
        self.load.bytes()
    }
}

impl Drop for ConnectionReceiver {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.connection_gone(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_load_counts_messages_and_bytes_in_one_word() {
        let load = QueueLoad::default();
        assert_eq!(load.add(100), (0, 0));
        assert_eq!(load.add(MAX_CONNECTION_QUEUE_BYTES), (1, 100));
        assert_eq!(load.bytes(), 100 + MAX_CONNECTION_QUEUE_BYTES);
        load.taken(100);
        assert_eq!(load.add(0), (1, MAX_CONNECTION_QUEUE_BYTES));
        load.taken(0);
        load.taken(MAX_CONNECTION_QUEUE_BYTES);
        assert_eq!(load.bytes(), 0);
        // A full queue by count never carries into the byte field.
        for _ in 0..MAX_CONNECTION_QUEUE {
            load.add(1);
        }
        assert_eq!(
            QueueLoad::split(load.0.load(Ordering::Relaxed)),
            (MAX_CONNECTION_QUEUE, MAX_CONNECTION_QUEUE)
        );
        // An impossible frame size saturates the same way both ways.
        load.add(usize::MAX);
        load.taken(usize::MAX);
        assert_eq!(load.bytes(), MAX_CONNECTION_QUEUE);
    }
}
