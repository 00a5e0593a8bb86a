//! Local connections: each has a bounded queue of [`Delivery`]s that its
//! transport (an SSE stream, a WebSocket task, ...) drains through a
//! [`ConnectionReceiver`].

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::engine::Inner;
use crate::ids::ConnectionId;
use crate::message::SseMessage;

/// One message on its way to local connections, shared by reference count: the
/// SSE frame is built once per message, not once per connection.
#[derive(Debug)]
pub struct Delivery {
    message: Arc<SseMessage>,
    frame: Bytes,
}

impl Delivery {
    pub(crate) fn new(message: Arc<SseMessage>, frame: Bytes) -> Self {
        Self { message, frame }
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

    /// Overrides the engine's per-connection queue capacity (at least 1).
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
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
#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub(crate) id: ConnectionId,
    pub(crate) sender: mpsc::Sender<Arc<Delivery>>,
    pub(crate) context: Option<Value>,
    dedup: Mutex<DedupCache>,
    closed: AtomicBool,
}

impl ConnectionEntry {
    pub(crate) fn new(
        id: ConnectionId,
        sender: mpsc::Sender<Arc<Delivery>>,
        context: Option<Value>,
        dedup_capacity: usize,
    ) -> Self {
        Self {
            id,
            sender,
            context,
            dedup: Mutex::new(DedupCache::new(dedup_capacity)),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn info(&self) -> ConnectionInfo<'_> {
        ConnectionInfo {
            id: &self.id,
            context: self.context.as_ref(),
        }
    }

    /// True the first time this message id is seen by this connection.
    pub(crate) fn first_time(&self, message_id: &str) -> bool {
        self.dedup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first_time(message_id)
    }

    /// Marks the connection closed; true if it was open.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}

/// A bounded record of the last message ids a connection received, so a
/// message that reaches a node through two rooms is delivered once.
#[derive(Debug)]
struct DedupCache {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl DedupCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    fn first_time(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Arc<str> = id.into();
        self.order.push_back(id.clone());
        self.seen.insert(id);
        true
    }
}

/// The transport's end of a connection: the deliveries for one client, in order.
///
/// Dropping it (the client went away) removes the connection from every room.
#[derive(Debug)]
pub struct ConnectionReceiver {
    id: ConnectionId,
    receiver: mpsc::Receiver<Arc<Delivery>>,
    engine: Weak<Inner>,
}

impl ConnectionReceiver {
    pub(crate) fn new(
        id: ConnectionId,
        receiver: mpsc::Receiver<Arc<Delivery>>,
        engine: Weak<Inner>,
    ) -> Self {
        Self {
            id,
            receiver,
            engine,
        }
    }

    /// This connection's id.
    pub fn id(&self) -> &ConnectionId {
        &self.id
    }

    /// The next delivery; `None` once the connection was disconnected (by the
    /// application, by the slow-consumer policy, or at shutdown) and its queue
    /// is drained.
    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        self.receiver.recv().await
    }

    /// Polls for the next delivery (for `Stream` adapters).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Delivery>>> {
        self.receiver.poll_recv(cx)
    }

    /// A delivery if one is queued now.
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        self.receiver.try_recv().ok()
    }

    /// How many deliveries are queued.
    pub fn queued(&self) -> usize {
        self.receiver.len()
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
    use super::DedupCache;

    #[test]
    fn dedup_is_bounded_and_forgets_the_oldest() {
        let mut cache = DedupCache::new(2);
        assert!(cache.first_time("a"));
        assert!(!cache.first_time("a"));
        assert!(cache.first_time("b"));
        assert!(cache.first_time("c"));
        assert!(cache.first_time("a"), "a was evicted");
        assert_eq!(cache.order.len(), 2);
        assert_eq!(cache.seen.len(), 2);
    }

    #[test]
    fn zero_capacity_disables_dedup() {
        let mut cache = DedupCache::new(0);
        assert!(cache.first_time("a"));
        assert!(cache.first_time("a"));
    }
}
