//! [`RoomsBuilder`]: the engine's settings, validated, and the start of an
//! engine (adapter connected, dispatcher and control tasks spawned).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::broadcast;

use super::inbound::dispatch;
use super::{
    Counters, DEFAULT_CONNECTION_QUEUE, DEFAULT_CONNECTION_QUEUE_BYTES, DEFAULT_DEDUP_CAPACITY,
    DEFAULT_INBOUND_QUEUE, DEFAULT_ROOM_DEDUP_CAPACITY, Inner, LIFECYCLE_CAPACITY,
    MAX_CONNECTION_QUEUE, MAX_CONNECTION_QUEUE_BYTES, MAX_DEDUP_CAPACITY, MAX_INBOUND_QUEUE,
    MAX_ROOM_DEDUP_CAPACITY, Rooms, catch_up, check_range,
};
use crate::adapter::{EventSink, RoomAdapter};
use crate::broadcast::DeliveryFilter;
use crate::cluster::{ClusterSettings, Control, LocalView};
use crate::connection::SlowConsumerPolicy;
use crate::dedup::{Fingerprinter, RecentIds};
use crate::error::Error;
use crate::history::HistoryPolicy;
use crate::ids::NodeId;
use crate::registry::Registry;

/// Builds a [`Rooms`] engine with validated settings.
pub struct RoomsBuilder {
    adapter: Arc<dyn RoomAdapter>,
    node: Option<NodeId>,
    connection_queue: usize,
    connection_queue_bytes: usize,
    dedup_capacity: usize,
    room_dedup_capacity: usize,
    inbound_queue: usize,
    policy: SlowConsumerPolicy,
    filter: Option<DeliveryFilter>,
    pub(crate) cluster: ClusterSettings,
    history: Option<HistoryPolicy>,
}

impl RoomsBuilder {
    /// The defaults, for [`Rooms::builder`].
    pub(super) fn new(adapter: Arc<dyn RoomAdapter>) -> Self {
        Self {
            adapter,
            node: None,
            connection_queue: DEFAULT_CONNECTION_QUEUE,
            connection_queue_bytes: DEFAULT_CONNECTION_QUEUE_BYTES,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            room_dedup_capacity: DEFAULT_ROOM_DEDUP_CAPACITY,
            inbound_queue: DEFAULT_INBOUND_QUEUE,
            policy: SlowConsumerPolicy::default(),
            filter: None,
            cluster: ClusterSettings::default(),
            history: None,
        }
    }

    /// This node's id (default: a random v4 UUID). The engine hands it to the
    /// adapter, so the two can never disagree.
    #[must_use]
    pub fn node_id(mut self, node: impl Into<NodeId>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Capacity of each connection's queue in messages (default 8,192; 1 to
    /// [`MAX_CONNECTION_QUEUE`]). A full queue applies the
    /// [`SlowConsumerPolicy`].
    #[must_use]
    pub fn connection_queue_capacity(mut self, capacity: usize) -> Self {
        self.connection_queue = capacity;
        self
    }

    /// Limit on the bytes of SSE frames queued for one connection (default
    /// 4 MiB; 1 to [`MAX_CONNECTION_QUEUE_BYTES`]). Past it the queue counts
    /// as full. A single message larger than the limit still reaches an empty
    /// queue.
    #[must_use]
    pub fn connection_queue_bytes(mut self, bytes: usize) -> Self {
        self.connection_queue_bytes = bytes;
        self
    }

    /// How many message ids a connection in two or more rooms remembers, to
    /// get one copy of a broadcast sent to several of its rooms (default 128,
    /// 24 bytes each; at most [`MAX_DEDUP_CAPACITY`]; 0 turns it off).
    /// Connections in one room keep nothing.
    #[must_use]
    pub fn dedup_capacity(mut self, capacity: usize) -> Self {
        self.dedup_capacity = capacity;
        self
    }

    /// How many recent `(room, message id)` pairs the node remembers, to drop
    /// a message id repeated into the same room (default 16,384, about 25
    /// bytes each; at most [`MAX_ROOM_DEDUP_CAPACITY`]; 0 turns it off).
    #[must_use]
    pub fn room_dedup_capacity(mut self, capacity: usize) -> Self {
        self.room_dedup_capacity = capacity;
        self
    }

    /// Capacity of the queue from the adapter's receive loop to the engine
    /// (default 65,536; 1 to [`MAX_INBOUND_QUEUE`]). When it is full, inbound
    /// events are dropped, counted, and signalled as
    /// [`RoomsEvent::Gap`](super::RoomsEvent::Gap) rather than stalling the
    /// medium.
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

    /// Keeps a history of every room in the medium, bounded by `policy`, so a
    /// client that reconnects with `Last-Event-ID` gets what it missed
    /// ([`Rooms::join_from`]); see [`history`](crate::history). Needs an
    /// adapter with the history capability ([`Error::Unsupported`] from
    /// [`build`](Self::build) otherwise).
    #[must_use]
    pub fn history(mut self, policy: HistoryPolicy) -> Self {
        self.history = Some(policy);
        self
    }

    /// Validates the settings, connects the adapter and starts delivering.
    pub async fn build(self) -> Result<Rooms, Error> {
        check_range(
            "connection_queue_capacity",
            self.connection_queue,
            1,
            MAX_CONNECTION_QUEUE,
        )?;
        check_range(
            "connection_queue_bytes",
            self.connection_queue_bytes,
            1,
            MAX_CONNECTION_QUEUE_BYTES,
        )?;
        check_range("dedup_capacity", self.dedup_capacity, 0, MAX_DEDUP_CAPACITY)?;
        check_range(
            "room_dedup_capacity",
            self.room_dedup_capacity,
            0,
            MAX_ROOM_DEDUP_CAPACITY,
        )?;
        check_range(
            "inbound_queue_capacity",
            self.inbound_queue,
            1,
            MAX_INBOUND_QUEUE,
        )?;
        if let Some(node) = &self.node
            && node.as_str().is_empty()
        {
            return Err(Error::Config("node_id must not be empty".into()));
        }
        self.cluster.validate()?;
        if self.history.is_some() && !self.adapter.capabilities().history {
            return Err(Error::Unsupported {
                adapter: self.adapter.name().to_owned(),
                capability: "history",
            });
        }
        let node = self.node.unwrap_or_else(NodeId::random);
        let (sink, stream) = EventSink::bounded(self.inbound_queue);
        let control = self
            .adapter
            .capabilities()
            .control
            .then(|| Control::new(node.clone(), self.cluster, Arc::clone(&self.adapter)));
        let (control, outbox) = match control {
            Some((control, outbox)) => (Some(control), Some(outbox)),
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            node: node.clone(),
            adapter: self.adapter,
            registry: RwLock::new(Registry::default()),
            subscribed: Mutex::new(HashSet::new()),
            room_locks: Mutex::new(HashMap::new()),
            subscribing: Mutex::new(HashSet::new()),
            medium_down: AtomicBool::new(false),
            medium_lost: Mutex::new(None),
            connection_queue: self.connection_queue,
            connection_queue_bytes: self.connection_queue_bytes,
            dedup_capacity: self.dedup_capacity,
            fingerprints: Fingerprinter::default(),
            recent: Mutex::new(RecentIds::new(self.room_dedup_capacity)),
            policy: self.policy,
            filter: self.filter,
            counters: Counters::default(),
            latency: Arc::default(),
            lifecycle: broadcast::channel(LIFECYCLE_CAPACITY).0,
            gaps: sink.gaps(),
            sink: sink.clone(),
            closed: AtomicBool::new(false),
            dispatcher: Mutex::new(None),
            control,
            control_task: Mutex::new(None),
            history: self.history,
            catch_up: catch_up::CatchUpBoard::new(self.inbound_queue),
        });
        inner.adapter.connect(node, sink).await?;
        let dispatcher = tokio::spawn(dispatch(
            Arc::downgrade(&inner),
            stream,
            Arc::clone(&inner.gaps),
        ));
        *inner
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(dispatcher);
        if let (Some(control), Some(outbox)) = (&inner.control, outbox) {
            let local: std::sync::Weak<dyn LocalView> = Arc::downgrade(&inner) as _;
            let task = tokio::spawn(crate::cluster::run(Arc::clone(control), local, outbox));
            *inner
                .control_task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
        Ok(Rooms { inner })
    }
}
