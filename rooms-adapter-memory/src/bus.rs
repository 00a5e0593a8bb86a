//! [`MemoryBus`]: many nodes in one process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterEvent, AdapterStats, ControlTarget, EventSink,
    RoomAdapter,
};
use rooms_adapter::history::{HistoryPage, HistoryPolicy, Position};
use rooms_adapter::wire::{self, Codec, DEFAULT_MAX_PAYLOAD_BYTES};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};

use crate::history::Histories;

/// An in-process bus shared by many nodes. Cheap to clone; clones are the same
/// bus.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

/// Settings of a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemoryBusBuilder {
    codec: Option<Codec>,
    max_payload_bytes: usize,
}

#[derive(Debug)]
struct BusInner {
    codec: Option<Codec>,
    max_payload_bytes: usize,
    state: Mutex<BusState>,
}

#[derive(Debug, Default)]
struct BusState {
    next_node: u64,
    nodes: HashMap<u64, NodeState>,
    /// Rooms' histories, written under the same lock as deliveries: the
    /// history's order is the order every node receives.
    histories: Histories,
}

#[derive(Debug)]
struct NodeState {
    /// The engine's node id, from `connect`: the inbox of control frames.
    node: Option<NodeId>,
    subscriptions: HashSet<RoomName>,
    sink: Option<EventSink>,
    counters: Arc<AdapterCounters>,
    cut_since: Option<Instant>,
    closed: bool,
}

impl MemoryBusBuilder {
    /// Round-trips every envelope through `codec` (encode once per publish,
    /// decode on every receiving node), as a real medium would. Off by default:
    /// envelopes are handed over as they are.
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Inbound payloads larger than this are skipped and counted (default
    /// 4 MiB). Applies to codec round-trips and [`MemoryBus::publish_raw`].
    #[must_use]
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// Builds the bus.
    pub fn build(self) -> MemoryBus {
        MemoryBus {
            inner: Arc::new(BusInner {
                codec: self.codec,
                max_payload_bytes: self.max_payload_bytes,
                state: Mutex::new(BusState::default()),
            }),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus that hands envelopes over without encoding.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings for a bus.
    pub fn builder() -> MemoryBusBuilder {
        MemoryBusBuilder {
            codec: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// A new node on this bus.
    pub fn adapter(&self) -> MemoryBusAdapter {
        let mut state = self.inner.lock();
        let id = state.next_node;
        state.next_node += 1;
        state.nodes.insert(
            id,
            NodeState {
                node: None,
                subscriptions: HashSet::new(),
                sink: None,
                counters: Arc::new(AdapterCounters::default()),
                cut_since: None,
                closed: false,
            },
        );
        MemoryBusAdapter {
            bus: Arc::clone(&self.inner),
            id,
        }
    }

    /// Publishes raw bytes on a room's channel, as a foreign or broken
    /// publisher would. Each subscribed node decodes them (auto-detecting the
    /// codec) and skips and counts what it cannot decode.
    pub fn publish_raw(&self, room: &RoomName, payload: &[u8]) {
        let state = self.inner.lock();
        for node in state.nodes.values() {
            self.inner.deliver_bytes(node, room, payload);
        }
    }

    /// Cuts every node off the bus (as if the server died).
    pub fn cut_all(&self) {
        let mut state = self.inner.lock();
        let now = Instant::now();
        for node in state.nodes.values_mut() {
            node.cut_off(now);
        }
    }

    /// Restores every node that was cut off; each emits `Reconnected`.
    pub async fn restore_all(&self) {
        let ids: Vec<u64> = self.inner.lock().nodes.keys().copied().collect();
        for id in ids {
            self.inner.restore(id).await;
        }
    }
}

impl NodeState {
    /// Cuts the node off; the first cut of an outage reports `MediumLost`.
    fn cut_off(&mut self, now: Instant) {
        if self.cut_since.is_some() {
            return;
        }
        self.cut_since = Some(now);
        if let Some(sink) = &self.sink {
            sink.push_lifecycle(AdapterEvent::MediumLost {
                reason: "cut off from the memory bus".into(),
            });
        }
    }

    /// The sink, if this node is connected, not cut off and subscribed to `room`.
    fn receiving(&self, room: &RoomName) -> Option<&EventSink> {
        let listening = self.cut_since.is_none() && self.subscriptions.contains(room);
        self.sink.as_ref().filter(|_| listening)
    }
}

impl BusInner {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver_bytes(&self, node: &NodeState, room: &RoomName, payload: &[u8]) {
        let Some(sink) = node.receiving(room) else {
            return;
        };
        match wire::decode(payload, self.max_payload_bytes) {
            Ok(envelope) => {
                node.counters.record_received();
                sink.send(AdapterEvent::Message {
                    room: room.clone(),
                    envelope,
                });
            }
            Err(error) => node.counters.record_decode_error(room.as_str(), &error),
        }
    }

    fn deliver_envelope(&self, node: &NodeState, room: &RoomName, envelope: &Envelope) {
        let Some(sink) = node.receiving(room) else {
            return;
        };
        node.counters.record_received();
        sink.send(AdapterEvent::Message {
            room: room.clone(),
            envelope: envelope.clone(),
        });
    }

    /// Hands one published envelope (or its encoding) to every node.
    fn deliver_all(
        &self,
        state: &BusState,
        room: &RoomName,
        envelope: &Envelope,
        encoded: Option<&Bytes>,
    ) {
        for node in state.nodes.values() {
            match encoded {
                Some(bytes) => self.deliver_bytes(node, room, bytes),
                None => self.deliver_envelope(node, room, envelope),
            }
        }
    }

    async fn restore(&self, id: u64) {
        let reconnected = {
            let mut state = self.lock();
            let Some(node) = state.nodes.get_mut(&id) else {
                return;
            };
            let Some(since) = node.cut_since.take() else {
                return;
            };
            node.counters.record_reconnect();
            node.sink.clone().map(|sink| {
                let mut rooms: Vec<RoomName> = node.subscriptions.iter().cloned().collect();
                rooms.sort();
                (sink, rooms, since.elapsed())
            })
        };
        if let Some((sink, rooms, outage)) = reconnected {
            sink.send_lifecycle(AdapterEvent::Reconnected { rooms, outage })
                .await;
        }
    }
}

/// One node on a [`MemoryBus`]. Dropping it removes the node from the bus.
#[derive(Debug)]
pub struct MemoryBusAdapter {
    bus: Arc<BusInner>,
    id: u64,
}

impl MemoryBusAdapter {
    /// Cuts this node off the bus: its publishes fail fast and it receives
    /// nothing until [`restore`](Self::restore).
    pub fn cut_off(&self) {
        if let Some(node) = self.bus.lock().nodes.get_mut(&self.id) {
            node.cut_off(Instant::now());
        }
    }

    /// Reconnects this node; it emits `Reconnected` with every subscribed room.
    pub async fn restore(&self) {
        self.bus.restore(self.id).await;
    }

    fn with_node<T>(&self, f: impl FnOnce(&mut NodeState) -> Result<T, Error>) -> Result<T, Error> {
        let mut state = self.bus.lock();
        match state.nodes.get_mut(&self.id) {
            Some(node) if !node.closed => f(node),
            _ => Err(Error::Closed {
                what: "memory bus adapter",
            }),
        }
    }
}

impl MemoryBusAdapter {
    /// Whether this node may publish now; counts the attempt.
    fn publishing(&self, state: &BusState) -> Result<(), Error> {
        let me = match state.nodes.get(&self.id) {
            Some(node) if !node.closed => node,
            _ => {
                return Err(Error::Closed {
                    what: "memory bus adapter",
                });
            }
        };
        if me.cut_since.is_some() {
            me.counters.record_publish_error();
            return Err(unavailable());
        }
        me.counters.record_published();
        Ok(())
    }
}

fn unavailable() -> Error {
    Error::Unavailable {
        medium: "memory bus".into(),
        reason: "this node is cut off the bus".into(),
        source: None,
    }
}

impl Drop for MemoryBusAdapter {
    fn drop(&mut self) {
        self.bus.lock().nodes.remove(&self.id);
    }
}

#[async_trait]
impl RoomAdapter for MemoryBusAdapter {
    fn name(&self) -> &str {
        "memory-bus"
    }

    async fn connect(&self, id: NodeId, sink: EventSink) -> Result<(), Error> {
        let mut state = self.bus.lock();
        let node = state.nodes.get_mut(&self.id).ok_or(Error::Closed {
            what: "memory bus adapter",
        })?;
        node.node = Some(id);
        node.sink = Some(sink);
        node.closed = false;
        Ok(())
    }

    /// Joins the bus without a sink: publishes reach every node, nothing is
    /// received.
    async fn connect_publisher(&self, _node: NodeId) -> Result<(), Error> {
        let mut state = self.bus.lock();
        let node = state.nodes.get_mut(&self.id).ok_or(Error::Closed {
            what: "memory bus adapter",
        })?;
        node.sink = None;
        node.closed = false;
        Ok(())
    }

    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE
            .with_emitter()
            .with_control()
            .with_history()
    }

    /// Hands the frame to every connected node that is not cut off (or to
    /// the one whose engine has the target's node id).
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let state = self.bus.lock();
        match state.nodes.get(&self.id) {
            Some(node) if !node.closed => {
                if node.cut_since.is_some() {
                    return Err(unavailable());
                }
            }
            _ => {
                return Err(Error::Closed {
                    what: "memory bus adapter",
                });
            }
        }
        if payload.len() > self.bus.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                room: "(control channel)".into(),
                size: payload.len(),
                limit: self.bus.max_payload_bytes,
            });
        }
        let frame = bytes::Bytes::copy_from_slice(payload);
        for node in state.nodes.values() {
            let addressed = match target {
                ControlTarget::Node(id) => node.node.as_ref() == Some(id),
                _ => true,
            };
            if let Some(sink) = node
                .sink
                .as_ref()
                .filter(|_| addressed && node.cut_since.is_none())
            {
                sink.send(AdapterEvent::Control {
                    payload: frame.clone(),
                });
            }
        }
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), Error> {
        if let Some(node) = self.bus.lock().nodes.get_mut(&self.id) {
            node.closed = true;
            node.sink = None;
            node.subscriptions.clear();
        }
        Ok(())
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.with_node(|node| {
            // Wanted even while cut off: re-subscribed (and reported) on restore.
            node.subscriptions.insert(room.clone());
            match node.cut_since {
                Some(_) => Err(unavailable()),
                None => Ok(()),
            }
        })
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.with_node(|node| {
            node.subscriptions.remove(room);
            Ok(())
        })
    }

    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let encoded = match self.bus.codec {
            Some(codec) => Some(envelope.encode(codec)?),
            None => None,
        };
        let state = self.bus.lock();
        self.publishing(&state)?;
        self.bus
            .deliver_all(&state, room, envelope, encoded.as_ref());
        Ok(())
    }

    async fn publish_with_history(
        &self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
    ) -> Result<Position, Error> {
        let mut state = self.bus.lock();
        self.publishing(&state)?;
        let (position, stored) = state
            .histories
            .append(room, envelope, policy, Instant::now())?;
        let encoded = match self.bus.codec {
            Some(codec) => Some(stored.encode(codec)?),
            None => None,
        };
        self.bus
            .deliver_all(&state, room, &stored, encoded.as_ref());
        Ok(position)
    }

    async fn read_history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let mut state = self.bus.lock();
        match state.nodes.get(&self.id) {
            Some(node) if !node.closed && node.cut_since.is_none() => {}
            Some(node) if !node.closed => return Err(unavailable()),
            _ => {
                return Err(Error::Closed {
                    what: "memory bus adapter",
                });
            }
        }
        Ok(state.histories.read(room, after, limit, Instant::now()))
    }

    fn stats(&self) -> AdapterStats {
        let state = self.bus.lock();
        match state.nodes.get(&self.id) {
            Some(node) => node
                .counters
                .snapshot(node.subscriptions.len(), node.sink.as_ref()),
            None => AdapterStats::default(),
        }
    }
}
