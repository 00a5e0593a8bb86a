//! The adapter contract: [`RoomAdapter`], the inbound [`AdapterEvent`]s, the
//! bounded [`EventSink`] they travel through, and [`AdapterStats`].
//!
//! A medium (in-process memory, Redis pub/sub, NATS, ...) plugs into the rooms
//! engine by implementing [`RoomAdapter`] and passing the `rooms-conformance`
//! suite. Nothing else in the core knows which medium is in use.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use async_trait::async_trait;
//! use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter};
//! use rooms_adapter::{Envelope, Error, NodeId, RoomName};
//!
//! /// A medium that loops every publish on a subscribed room straight back.
//! #[derive(Default)]
//! struct Loopback {
//!     sink: Mutex<Option<EventSink>>,
//!     rooms: Mutex<std::collections::HashSet<RoomName>>,
//! }
//!
//! #[async_trait]
//! impl RoomAdapter for Loopback {
//!     fn name(&self) -> &str { "loopback" }
//!     async fn connect(&self, _node: NodeId, sink: EventSink) -> Result<(), Error> {
//!         *self.sink.lock().unwrap() = Some(sink);
//!         Ok(())
//!     }
//!     async fn disconnect(&self) -> Result<(), Error> {
//!         self.sink.lock().unwrap().take();
//!         Ok(())
//!     }
//!     async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
//!         self.rooms.lock().unwrap().insert(room.clone());
//!         Ok(())
//!     }
//!     async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
//!         self.rooms.lock().unwrap().remove(room);
//!         Ok(())
//!     }
//!     async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
//!         if self.rooms.lock().unwrap().contains(room) {
//!             if let Some(sink) = &*self.sink.lock().unwrap() {
//!                 sink.send(AdapterEvent::Message { room: room.clone(), envelope: envelope.clone() });
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let adapter: Arc<dyn RoomAdapter> = Arc::new(Loopback::default());
//! let rooms = rooms_adapter::Rooms::builder(adapter).build().await?;
//! # rooms.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::gap::GapBoard;
use crate::history::{HistoryPage, HistoryPolicy, Position};
use crate::ids::{NodeId, RoomName};
use crate::wire::{DecodeError, DecodeErrorKind, Envelope};

/// What an adapter hands to the engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AdapterEvent {
    /// An envelope arrived on a room's channel.
    Message {
        /// The room (the channel with the prefix cut off).
        room: RoomName,
        /// The decoded envelope.
        envelope: Envelope,
    },
    /// The medium was lost and is back; every listed room is subscribed again.
    /// Messages published during the outage may have been missed: tell clients
    /// to resync.
    Reconnected {
        /// The rooms that were re-subscribed.
        rooms: Vec<RoomName>,
        /// How long the medium was unavailable.
        outage: Duration,
    },
    /// The medium is unreachable (a connection was lost, a server is down):
    /// messages from other nodes may be missed until
    /// [`Reconnected`](Self::Reconnected) says it is back. Sent once per outage.
    MediumLost {
        /// Why, as the adapter saw it.
        reason: String,
    },
    /// The medium dropped a room's subscription and will not restore it by
    /// itself (e.g. Redis refused to re-subscribe it after a reconnect: an ACL
    /// changed). The engine forgets the room's subscription, so the next join
    /// subscribes it again, and tells the application: its members miss
    /// messages from other nodes until then.
    SubscriptionLost {
        /// The room.
        room: RoomName,
        /// Why, as the medium said it.
        reason: String,
    },
    /// A frame arrived on the control channel (adapters with the
    /// [`control`](AdapterCapabilities::control) capability): node heartbeats
    /// and cross-node queries, decoded by the engine
    /// ([`cluster`](crate::cluster)). Opaque to the adapter.
    Control {
        /// The frame, as published with [`RoomAdapter::publish_control`].
        payload: bytes::Bytes,
    },
}

/// Where a control frame goes: every node, or one node's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlTarget {
    /// Every node connected to the medium (the publisher may hear it too; the
    /// engine ignores its own frames).
    All,
    /// Only the node with this id (the one that passed it to
    /// [`RoomAdapter::connect`]).
    Node(NodeId),
}

/// The optional capabilities an adapter offers, declared by
/// [`RoomAdapter::capabilities`], so callers (and the conformance suite) can
/// check before they ask instead of failing at run time.
///
/// The struct is `#[non_exhaustive]` (new capabilities may come): build it
/// from [`NONE`](Self::NONE) (or `Default`) with the `with_*` methods, which
/// are `const`:
///
/// ```
/// use rooms_adapter::AdapterCapabilities;
///
/// const MINE: AdapterCapabilities = AdapterCapabilities::NONE.with_emitter().with_control();
/// assert!(MINE.emitter && MINE.control && !MINE.history);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterCapabilities {
    /// [`RoomAdapter::connect_publisher`] works: the adapter can publish
    /// without subscribing, for an [`Emitter`](crate::emitter::Emitter).
    pub emitter: bool,
    /// [`RoomAdapter::publish_control`] works and connected adapters deliver
    /// [`AdapterEvent::Control`] frames: the engine builds node liveness
    /// ([`Rooms::nodes`](crate::Rooms::nodes)) and cross-node queries
    /// ([`Rooms::cluster_member_count`](crate::Rooms::cluster_member_count))
    /// on it.
    pub control: bool,
    /// [`RoomAdapter::publish_with_history`] and
    /// [`RoomAdapter::read_history`] work: rooms can keep a bounded history
    /// that every node reads ([`history`](crate::history)).
    pub history: bool,
}

impl AdapterCapabilities {
    /// No optional capability.
    pub const NONE: AdapterCapabilities = AdapterCapabilities {
        emitter: false,
        control: false,
        history: false,
    };

    /// With the emitter capability.
    #[must_use]
    pub const fn with_emitter(mut self) -> Self {
        self.emitter = true;
        self
    }

    /// With the control capability.
    #[must_use]
    pub const fn with_control(mut self) -> Self {
        self.control = true;
        self
    }

    /// With the history capability.
    #[must_use]
    pub const fn with_history(mut self) -> Self {
        self.history = true;
        self
    }
}

/// The medium between nodes. Object safe: the engine holds an
/// `Arc<dyn RoomAdapter>`.
///
/// `rooms-conformance` checks every rule below; its guide
/// (`rooms_conformance::guide`) walks through writing an adapter.
///
/// # Contract
/// - [`connect`](Self::connect) starts delivering inbound envelopes of subscribed
///   rooms into the [`EventSink`], including the node's own envelopes if the
///   medium echoes them (the engine drops those by node id). Take every piece
///   of state the reader needs *inside* `connect` (a receiver of the medium,
///   the current outage generation, ...), before it returns: a reader task
///   that takes its baseline later misses a cut and restore that happen
///   before it first runs, and never reports them.
/// - [`disconnect`](Self::disconnect) stops delivery, ends every background task,
///   and is idempotent. When it returns, nothing more reaches the sink: abort
///   the reader task *and await it* (aborting alone lets an event already
///   being handed over arrive after `disconnect` returned). `subscriptions`
///   in [`stats`](Self::stats) is then 0.
/// - [`subscribe`](Self::subscribe) and [`unsubscribe`](Self::unsubscribe) are
///   idempotent. `subscribe` returns once the medium has confirmed the
///   subscription: an envelope published after it returns is delivered. The
///   engine calls them only for the first local member of a room and after the
///   last one leaves, never once per connection. A retryable error from
///   `subscribe` still leaves the room wanted: the adapter subscribes it when the
///   medium is back and reports it in [`AdapterEvent::Reconnected`]; a room
///   the medium then refuses is reported in [`AdapterEvent::SubscriptionLost`].
///   After `unsubscribe` returns, nothing more of that room reaches the sink,
///   and `subscriptions` counts exactly the rooms subscribed now (it returns
///   to 0 when the last one is unsubscribed).
/// - When the medium becomes unreachable the adapter reports
///   [`AdapterEvent::MediumLost`] once, and [`AdapterEvent::Reconnected`]
///   (listing the re-subscribed rooms, possibly none) when it is back. A cut
///   and a restore with no await between them are still an outage: both
///   events are sent, in that order.
/// - [`publish`](Self::publish) sends one envelope to every node subscribed to
///   the room. While the medium is down it fails within a bounded time (the
///   suite allows 5 s) with a *retryable* error ([`Error::is_retryable`]:
///   [`Error::Unavailable`], [`Error::Timeout`] or a retryable
///   [`Error::Backend`]), and counts it
///   ([`AdapterCounters::record_publish_error`]).
/// - Inbound payloads that cannot be decoded are skipped and counted
///   ([`AdapterCounters::record_decode_error`]), never a panic.
/// - Inbound events go through [`EventSink::send`], which never waits: when
///   the engine's queue is full the event is dropped and counted by the sink,
///   so [`AdapterStats::dropped_inbound`] is exactly what overflowed (use
///   [`AdapterCounters::snapshot`] with the sink to report it).
///
/// ## Answers to the questions the rules above leave open
/// - **`subscribe` (or `publish`) before `connect`?** The engine never does
///   it: [`RoomsBuilder::build`](crate::RoomsBuilder::build) connects first.
///   An adapter may refuse it with [`Error::Closed`] (Redis, NATS) or accept
///   it and remember the room as wanted (the memory bus); the suite does not
///   test it.
/// - **A second `connect` without `disconnect`?** A caller's mistake the
///   engine never makes. Answer it with a non-retryable [`Error::Config`]
///   (as Redis does) rather than start a second reader; it must never make
///   the adapter deliver into two sinks. (NATS does the same; the memory bus
///   replaces the sink.) After `disconnect` an
///   adapter may refuse every call with [`Error::Closed`] (Redis and NATS
///   do): an application that starts again makes a new adapter.
/// - **Decode errors for rooms not subscribed?** Not counted: a payload of a
///   room the node is not subscribed to now is ignored before decoding
///   (every adapter here does so), so `decode_errors` counts only payloads
///   that would have been delivered.
/// - **Which rooms does `Reconnected` list when the medium kept the
///   subscriptions itself** (a client library that re-subscribes on its
///   own, as NATS does)? Every room wanted when the event is sent, whoever
///   re-subscribed it, sorted or not: the engine treats them all as possibly
///   having missed messages. Send it only once the medium confirms them.
/// - **How does an adapter report frames the medium lost?** Messages the
///   medium or its client dropped before the adapter saw them (NATS slow
///   consumers) go to [`AdapterCounters::record_medium_dropped`]
///   ([`AdapterStats::medium_dropped`]), not to `dropped_inbound`. Messages
///   published during an outage cannot be counted; `Reconnected` stands for
///   them.
/// - **Does `received` count envelopes the sink then dropped?** Yes:
///   [`AdapterCounters::record_received`] counts every envelope decoded for a
///   subscribed room, before [`EventSink::send`]; `received -
///   dropped_inbound` is what reached the engine's queue.
/// - **Must a raw publish fail while the medium is cut?** No rule: raw
///   publishing is the conformance harness's business (its `publish_raw`),
///   and the suite never does it while the medium is cut. A harness may fail
///   or drop it.
///
/// # Control channel (optional)
/// An adapter that declares [`AdapterCapabilities::control`] also carries
/// opaque control frames between nodes, apart from every room:
/// - while connected it listens on a broadcast control channel and on an
///   inbox of its own node (the id given to [`connect`](Self::connect)), and
///   hands each frame to the sink as [`AdapterEvent::Control`] with
///   [`EventSink::send`] (bounded: a flood of control frames is dropped and
///   counted like room messages); `connect` returns once both are listened to;
/// - [`publish_control`](Self::publish_control) sends a frame to every node
///   or to one node's inbox, and fails fast while the medium is down;
/// - control channels never collide with a room's channel, whatever the room
///   name, and nodes that do not speak the control protocol (such as TS
///   nodes on the same Redis) never see control frames.
///
/// # History (optional)
/// An adapter that declares [`AdapterCapabilities::history`] keeps a bounded
/// history per room where every node can read it:
/// - [`publish_with_history`](Self::publish_with_history) gives the envelope
///   the room's next offset, stores it and publishes it, as one atomic step:
///   the order of the history is the order every node receives the room's
///   messages in. A message without an id gets its [`Position`]'s
///   [`to_id`](Position::to_id) as its id, in the history and on every node.
///   The history keeps at most the policy's `max_len` messages and is
///   dropped `ttl` after the room's last message; a new history starts a new
///   epoch.
/// - [`read_history`](Self::read_history) returns one page: at most `limit`
///   of the entries kept after an offset, oldest first, with the epoch, the
///   latest offset, the oldest offset still kept, and where the next page
///   starts ([`HistoryPage::next_after`], `None` on the last page). A page
///   is a consistent read: its entries are contiguous in offsets and
///   `latest` is at least the last of them. `limit` 0 reads no entries (a
///   probe of the epoch and offsets). The engine reads
///   [`READ_PAGE`](crate::history::READ_PAGE) entries at a time, so a
///   client resuming from far back in a long history never makes one read
///   load all of it.
#[async_trait]
pub trait RoomAdapter: Send + Sync + 'static {
    /// A short name for logs and metrics, e.g. `memory` or `redis`.
    fn name(&self) -> &str;

    /// Starts delivering inbound events for `node` into `sink`.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error>;

    /// Stops delivery and releases the medium. Idempotent.
    async fn disconnect(&self) -> Result<(), Error>;

    /// Subscribes this node to a room. Idempotent.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error>;

    /// Unsubscribes this node from a room. Idempotent.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error>;

    /// Publishes one envelope to a room, on every subscribed node.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error>;

    /// Counters readable at run time.
    fn stats(&self) -> AdapterStats {
        AdapterStats::default()
    }

    /// The optional capabilities this adapter offers (none by default).
    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE
    }

    /// Connects for publishing only: no subscriber, no inbound events, and
    /// [`subscribe`](Self::subscribe) is not available. Used by an
    /// [`Emitter`](crate::emitter::Emitter); adapters that can declare
    /// [`AdapterCapabilities::emitter`]. The default answers
    /// [`Error::Unsupported`].
    async fn connect_publisher(&self, node: NodeId) -> Result<(), Error> {
        let _ = node;
        Err(Error::Unsupported {
            adapter: self.name().to_owned(),
            capability: "publish-only emitters",
        })
    }

    /// Publishes one control frame to `target` (adapters that declare
    /// [`AdapterCapabilities::control`]; see the contract above). The default
    /// answers [`Error::Unsupported`].
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let _ = (target, payload);
        Err(Error::Unsupported {
            adapter: self.name().to_owned(),
            capability: "control frames (node liveness, cross-node queries)",
        })
    }

    /// Stores the envelope in the room's history and publishes it (adapters
    /// that declare [`AdapterCapabilities::history`]; see the contract above).
    /// Returns its position. The default answers [`Error::Unsupported`].
    async fn publish_with_history(
        &self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
    ) -> Result<Position, Error> {
        let _ = (room, envelope, policy);
        Err(Error::Unsupported {
            adapter: self.name().to_owned(),
            capability: "history",
        })
    }

    /// One page of the room's history: the oldest `limit` entries after
    /// offset `after` (from the oldest kept for `None`); see the contract
    /// above. The default answers [`Error::Unsupported`].
    async fn read_history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let _ = (room, after, limit);
        Err(Error::Unsupported {
            adapter: self.name().to_owned(),
            capability: "history",
        })
    }
}

/// The bounded hand-off from an adapter's receive loop to the engine.
///
/// [`send`](Self::send) never waits: when the queue is full the event is dropped
/// and counted ([`dropped`](Self::dropped)). This is the one overflow policy for
/// every adapter, so a slow engine can never stall a medium's read loop.
#[derive(Debug, Clone)]
pub struct EventSink {
    /// Each event, with when it was handed over for one in
    /// [`DELIVERY_SAMPLE`](crate::metrics::DELIVERY_SAMPLE) (the start of
    /// the engine's delivery latency; a clock read per event would cost the
    /// receive path several percent).
    sender: mpsc::UnboundedSender<(AdapterEvent, Option<Instant>)>,
    /// Messages handed over, for picking the ones to stamp.
    handed: Arc<AtomicU64>,
    /// Events queued and not yet received: the bound is enforced here with
    /// one atomic, not by a semaphore the receiver would lock per event.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: Arc<AtomicU64>,
    gaps: Arc<GapBoard>,
}

/// The receiving end of an [`EventSink`]: the engine's inbound queue.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::UnboundedReceiver<(AdapterEvent, Option<Instant>)>,
    queued: Arc<AtomicUsize>,
}

impl EventStream {
    /// The next event; `None` once every sink is gone.
    pub async fn recv(&mut self) -> Option<AdapterEvent> {
        self.recv_stamped().await.map(|(event, _)| event)
    }

    /// An event if one is queued now.
    pub fn try_recv(&mut self) -> Result<AdapterEvent, mpsc::error::TryRecvError> {
        self.try_recv_stamped().map(|(event, _)| event)
    }

    /// The next event and, if it was sampled, when the adapter handed it
    /// over.
    pub(crate) async fn recv_stamped(&mut self) -> Option<(AdapterEvent, Option<Instant>)> {
        let event = self.receiver.recv().await;
        if event.is_some() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        event
    }

    /// [`try_recv`](Self::try_recv) with when the adapter handed it over.
    pub(crate) fn try_recv_stamped(
        &mut self,
    ) -> Result<(AdapterEvent, Option<Instant>), mpsc::error::TryRecvError> {
        let event = self.receiver.try_recv()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(event)
    }

    /// How many events are queued.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether [`EventSink::send`] handed the event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Queued for the engine.
    Queued,
    /// The queue was full; the event was dropped and counted.
    DroppedFull,
    /// The engine is gone; the adapter should stop.
    Closed,
}

impl EventSink {
    /// A sink that holds at most `capacity` events (at least 1), and its stream.
    pub fn bounded(capacity: usize) -> (EventSink, EventStream) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            EventSink {
                sender,
                handed: Arc::default(),
                queued: Arc::clone(&queued),
                capacity: capacity.max(1),
                dropped: Arc::new(AtomicU64::new(0)),
                gaps: Arc::default(),
            },
            EventStream { receiver, queued },
        )
    }

    /// Hands an event over without waiting; drops and counts it when full, and
    /// marks its room for the engine's gap signal ([`RoomsEvent::Gap`](crate::RoomsEvent::Gap)).
    pub fn send(&self, event: AdapterEvent) -> SinkOutcome {
        if self.sender.is_closed() {
            return SinkOutcome::Closed;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let AdapterEvent::Message { room, .. } = event {
                // The engine reports the room once the queue has drained.
                self.gaps.record(|gaps| gaps.room_dropped(&room, 1));
            }
            return SinkOutcome::DroppedFull;
        }
        self.push(event)
    }

    fn push(&self, event: AdapterEvent) -> SinkOutcome {
        let stamp = match &event {
            AdapterEvent::Message { .. } => {
                crate::metrics::sampled(self.handed.fetch_add(1, Ordering::Relaxed))
                    .then(Instant::now)
            }
            _ => None,
        };
        match self.sender.send((event, stamp)) {
            Ok(()) => SinkOutcome::Queued,
            Err(_) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                SinkOutcome::Closed
            }
        }
    }

    /// Hands over a lifecycle event (such as [`AdapterEvent::Reconnected`])
    /// even when the queue is full: these are rare and must not be lost.
    pub async fn send_lifecycle(&self, event: AdapterEvent) -> SinkOutcome {
        self.push_lifecycle(event)
    }

    /// [`send_lifecycle`](Self::send_lifecycle) for code that cannot await
    /// (it never waits either).
    pub fn push_lifecycle(&self, event: AdapterEvent) -> SinkOutcome {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.push(event)
    }

    /// How many events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drops recorded for the gap signal, shared with the engine.
    pub(crate) fn gaps(&self) -> Arc<GapBoard> {
        Arc::clone(&self.gaps)
    }

    /// Whether the engine has gone away.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A snapshot of an adapter's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterStats {
    /// Room envelopes published (cluster control frames such as heartbeats
    /// are not counted: a local-only broadcast must leave this unchanged).
    pub published: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// Envelopes received and decoded.
    pub received: u64,
    /// Inbound payloads skipped, by reason.
    pub decode_errors: BTreeMap<DecodeErrorKind, u64>,
    /// Inbound events dropped because the engine's hand-off queue was full.
    pub dropped_inbound: u64,
    /// Times the medium was lost and restored.
    pub reconnects: u64,
    /// Inbound messages the medium (or its client library) dropped before
    /// the adapter saw them, when the medium says so: e.g. NATS
    /// slow-consumer drops. Not part of
    /// [`dropped_inbound`](Self::dropped_inbound), which counts only what
    /// overflowed the [`EventSink`]. Zero for media that cannot tell.
    pub medium_dropped: u64,
    /// Rooms subscribed now.
    pub subscriptions: u64,
}

impl AdapterStats {
    /// All decode errors, of every kind.
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.values().sum()
    }
}

/// Lock-free counters an adapter can embed to produce [`AdapterStats`].
#[derive(Debug, Default)]
pub struct AdapterCounters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    decode_errors: [AtomicU64; DecodeErrorKind::ALL.len()],
    reconnects: AtomicU64,
    medium_dropped: AtomicU64,
}

impl AdapterCounters {
    /// Counts one published envelope.
    pub fn record_published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed publish.
    pub fn record_publish_error(&self) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one received envelope.
    pub fn record_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one skipped payload, and logs why at debug level.
    pub fn record_decode_error(&self, room: &str, error: &DecodeError) {
        tracing::debug!(room, %error, "skipping inbound payload");
        self.decode_errors[error.kind().index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one reconnect.
    pub fn record_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `count` inbound messages the medium reported as lost before
    /// they reached the adapter ([`AdapterStats::medium_dropped`]).
    pub fn record_medium_dropped(&self, count: u64) {
        self.medium_dropped.fetch_add(count, Ordering::Relaxed);
    }

    /// A snapshot, given what only the adapter knows: the current number of
    /// subscriptions and the sink it delivers into.
    pub fn snapshot(&self, subscriptions: usize, sink: Option<&EventSink>) -> AdapterStats {
        let decode_errors = DecodeErrorKind::ALL
            .iter()
            .map(|kind| {
                (
                    *kind,
                    self.decode_errors[kind.index()].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        AdapterStats {
            published: self.published.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            decode_errors,
            dropped_inbound: sink.map_or(0, EventSink::dropped),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            medium_dropped: self.medium_dropped.load(Ordering::Relaxed),
            subscriptions: subscriptions as u64,
        }
    }
}
