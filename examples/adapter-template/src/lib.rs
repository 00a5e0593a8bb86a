//! A template `rooms` adapter: an in-process broadcast bus (on
//! [`tokio::sync::broadcast`]) as the medium between nodes. Copy it, swap
//! the bus for your medium, and keep `tests/conformance.rs` green.
//!
//! Every frame on the bus reaches every node's reader, which keeps what its
//! node subscribed to: envelopes of subscribed rooms, control frames for
//! every node or for this node. Envelopes cross as JSON bytes, as on a real
//! medium, so foreign or broken payloads are possible (and counted).
//!
//! The rules it follows are the `# Contract` of [`RoomAdapter`]; the comments
//! below point at the ones that are easy to miss.
#![warn(missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rooms_adapter::bytes::Bytes;
use rooms_adapter::wire::{self, Codec, DEFAULT_MAX_PAYLOAD_BYTES};
use rooms_adapter::{
    AdapterCapabilities, AdapterCounters, AdapterEvent, AdapterStats, ControlTarget, Envelope,
    Error, EventSink, NodeId, RoomAdapter, RoomName, async_trait,
};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Frames the bus holds for a slow reader before it loses the oldest.
const BUS_CAPACITY: usize = 1 << 16;

/// Where a frame goes.
#[derive(Debug, Clone)]
enum To {
    Room(RoomName),
    AllNodes,
    Node(NodeId),
}

#[derive(Debug, Clone)]
struct Frame {
    to: To,
    payload: Bytes,
}

/// The bus's link: up or down, and how many outages there were (so a cut and
/// restore with nothing in between is still seen as an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    up: bool,
    outages: u64,
}

/// The medium: an in-process bus many nodes share. Clones are the same bus.
#[derive(Debug, Clone)]
pub struct Bus {
    frames: broadcast::Sender<Frame>,
    link: Arc<watch::Sender<Link>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A new, empty bus.
    pub fn new() -> Self {
        let (frames, _) = broadcast::channel(BUS_CAPACITY);
        let (link, _) = watch::channel(Link {
            up: true,
            outages: 0,
        });
        Self {
            frames,
            link: Arc::new(link),
        }
    }

    /// A new node on this bus, not yet connected.
    pub fn adapter(&self) -> BusAdapter {
        BusAdapter {
            bus: self.clone(),
            shared: Arc::default(),
            sink: Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    /// Takes the bus away from every node: publishes fail, nothing arrives.
    pub fn cut(&self) {
        self.link.send_modify(|link| {
            if link.up {
                link.up = false;
                link.outages += 1;
            }
        });
    }

    /// Brings the bus back after [`cut`](Self::cut).
    pub fn restore(&self) {
        self.link.send_modify(|link| link.up = true);
    }

    /// Publishes raw bytes on `room`'s channel, as a foreign or broken
    /// publisher would. Fails while the bus is cut.
    pub fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        self.send(Frame {
            to: To::Room(room.clone()),
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// Hands a frame to every reader; fails fast (and retryably) while cut.
    fn send(&self, frame: Frame) -> Result<(), Error> {
        if !self.link.borrow().up {
            return Err(Error::Unavailable {
                medium: "broadcast bus".into(),
                reason: "the bus is cut".into(),
                source: None,
            });
        }
        // No receiver (no node connected) is not an error: nobody listens.
        let _ = self.frames.send(frame);
        Ok(())
    }
}

/// What the adapter and its reader task share.
#[derive(Debug, Default)]
struct Shared {
    rooms: Mutex<HashSet<RoomName>>,
    counters: AdapterCounters,
}

impl Shared {
    fn rooms(&self) -> MutexGuard<'_, HashSet<RoomName>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node on a [`Bus`].
#[derive(Debug)]
pub struct BusAdapter {
    bus: Bus,
    shared: Arc<Shared>,
    sink: Mutex<Option<EventSink>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl RoomAdapter for BusAdapter {
    fn name(&self) -> &str {
        "broadcast-bus"
    }

    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE.with_emitter().with_control()
    }

    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        let mut reader = lock(&self.reader);
        if reader.is_some() {
            return Err(Error::Config("the bus adapter is already connected".into()));
        }
        // Take every baseline here, not in the task: a cut and restore before
        // the task first runs would otherwise go unreported.
        let frames = self.bus.frames.subscribe();
        let mut link = self.bus.link.subscribe();
        let seen = *link.borrow_and_update();
        *lock(&self.sink) = Some(sink.clone());
        let task = Reader {
            node,
            sink,
            shared: Arc::clone(&self.shared),
            lost_since: None,
        };
        *reader = Some(tokio::spawn(task.run(frames, link, seen)));
        Ok(())
    }

    /// Publish-only (for an `Emitter`): the bus needs no connection to publish.
    async fn connect_publisher(&self, _node: NodeId) -> Result<(), Error> {
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), Error> {
        let reader = lock(&self.reader).take();
        if let Some(reader) = reader {
            // Abort *and await*: once this returns, nothing reaches the sink.
            reader.abort();
            let _ = reader.await;
        }
        self.shared.rooms().clear();
        lock(&self.sink).take();
        Ok(())
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        // Wanted even while cut: listed in `Reconnected` once the bus is back.
        self.shared.rooms().insert(room.clone());
        if self.bus.link.borrow().up {
            Ok(())
        } else {
            Err(Error::Unavailable {
                medium: "broadcast bus".into(),
                reason: "the bus is cut; the room is subscribed when it is back".into(),
                source: None,
            })
        }
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.shared.rooms().remove(room);
        Ok(())
    }

    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let payload = envelope.encode(Codec::Json)?;
        let to = To::Room(room.clone());
        match self.bus.send(Frame { to, payload }) {
            Ok(()) => self.shared.counters.record_published(),
            Err(error) => {
                self.shared.counters.record_publish_error();
                return Err(error);
            }
        }
        Ok(())
    }

    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let to = match target {
            ControlTarget::Node(node) => To::Node(node.clone()),
            _ => To::AllNodes,
        };
        let payload = Bytes::copy_from_slice(payload);
        self.bus.send(Frame { to, payload })
    }

    fn stats(&self) -> AdapterStats {
        let rooms = self.shared.rooms().len();
        // With the sink: `dropped_inbound` is what overflowed it.
        self.shared
            .counters
            .snapshot(rooms, lock(&self.sink).as_ref())
    }
}

/// A node's receive loop.
struct Reader {
    node: NodeId,
    sink: EventSink,
    shared: Arc<Shared>,
    lost_since: Option<Instant>,
}

impl Reader {
    async fn run(
        mut self,
        mut frames: broadcast::Receiver<Frame>,
        mut link: watch::Receiver<Link>,
        mut seen: Link,
    ) {
        loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Ok(frame) => self.deliver(frame),
                    // The bus overwrote frames this reader had not read yet.
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        self.shared.counters.record_medium_dropped(lost);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = link.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = *link.borrow_and_update();
                    self.link_changed(seen, now);
                    seen = now;
                }
            }
        }
    }

    /// `MediumLost` once per outage, `Reconnected` when the bus is back.
    fn link_changed(&mut self, seen: Link, now: Link) {
        if now.outages != seen.outages && self.lost_since.is_none() {
            self.lost_since = Some(Instant::now());
            self.sink.push_lifecycle(AdapterEvent::MediumLost {
                reason: "the bus was cut".into(),
            });
        }
        if let (true, Some(since)) = (now.up, self.lost_since) {
            self.lost_since = None;
            self.shared.counters.record_reconnect();
            let mut rooms: Vec<RoomName> = self.shared.rooms().iter().cloned().collect();
            rooms.sort();
            self.sink.push_lifecycle(AdapterEvent::Reconnected {
                rooms,
                outage: since.elapsed(),
            });
        }
    }

    fn deliver(&self, frame: Frame) {
        match frame.to {
            To::AllNodes => {
                self.sink.send(AdapterEvent::Control {
                    payload: frame.payload,
                });
            }
            To::Node(node) if node == self.node => {
                self.sink.send(AdapterEvent::Control {
                    payload: frame.payload,
                });
            }
            To::Node(_) => {}
            To::Room(room) => {
                // Checked and handed over under the lock: once `unsubscribe`
                // returns, nothing more of the room arrives. Rooms not
                // subscribed are not decoded (nor counted).
                let rooms = self.shared.rooms();
                if !rooms.contains(&room) {
                    return;
                }
                let counters = &self.shared.counters;
                match wire::decode(&frame.payload, DEFAULT_MAX_PAYLOAD_BYTES) {
                    Ok(envelope) => {
                        // Counted even if the sink then drops it as full.
                        counters.record_received();
                        self.sink.send(AdapterEvent::Message { room, envelope });
                    }
                    Err(error) => counters.record_decode_error(room.as_str(), &error),
                }
            }
        }
    }
}
