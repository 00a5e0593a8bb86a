//! The link seam: how the subscriber loop talks to a medium's shards, and
//! where their pushes go.
//!
//! A [`Link`] discovers the topology (which shard owns which slot) and opens a
//! shard's connection; a [`ShardConnection`] sends a batch of (un)subscribes
//! as one pipeline and answers pings. Messages never travel through the loop:
//! a connection hands every push to [`Inbound`] *on its read path*, which
//! decodes and delivers it to the engine's sink without waiting (a full queue
//! is a counted drop). A frame on a control channel is handed over as it
//! came, never decoded. So the socket is read only as fast as messages are
//! decoded: no queue between the socket and the decoder, and a stalled
//! consumer backs up into TCP and Redis's output-buffer limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, SinkOutcome};
use rooms_adapter::wire::DecodeError;
use rooms_adapter::{Error, RoomName, wire};
use tokio::sync::mpsc;

use super::slot::{ShardId, Topology};
use super::table::{Ack, OpKind};
use super::topic::Topic;

/// A medium's way to reach its shards.
#[async_trait]
pub(crate) trait Link: Send + Sync + 'static {
    /// `redis at host:port`, `redis sentinel master m`, ...: for logs.
    fn medium(&self) -> &str;

    /// Which shard owns which slot now.
    async fn discover(&self) -> Result<Topology, Error>;

    /// Opens the connection `generation` to `shard`; its pushes go to
    /// `inbound`, tagged with the shard and the generation.
    async fn connect(
        &self,
        topology: &Topology,
        shard: &ShardId,
        generation: u64,
        inbound: Arc<Inbound>,
    ) -> Result<Arc<dyn ShardConnection>, Error>;
}

/// One open shard connection.
#[async_trait]
pub(crate) trait ShardConnection: Send + Sync + 'static {
    /// Subscribes or unsubscribes `channels` as one pipeline: one [`Ack`] per
    /// channel, or `Err` when the connection failed.
    async fn batch(&self, kind: OpKind, channels: &[String]) -> Result<Vec<Ack>, String>;

    /// A round trip on the connection.
    async fn ping(&self) -> Result<(), String>;
}

/// What a shard connection reports from its read path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Push<'a> {
    /// A message on a channel.
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
    },
    /// The channel is no longer subscribed (asked for, or Redis dropped it).
    Unsubscribed { channel: &'a [u8] },
    /// The connection closed.
    Disconnected,
}

/// A notice from a read path to the subscriber loop: only the server's
/// subscription bookkeeping (at most one per subscribed channel and one per
/// connection), never messages.
#[derive(Debug)]
pub(crate) enum Notice {
    Unsubscribed {
        shard: ShardId,
        generation: u64,
        topic: Topic,
    },
    Disconnected {
        shard: ShardId,
        generation: u64,
    },
}

/// Delivery on the read path: decode, count, hand to the engine.
pub(crate) struct Inbound {
    prefix: String,
    max_payload: usize,
    counters: Arc<AdapterCounters>,
    sink: EventSink,
    /// Topics whose messages are delivered. Written only by the subscriber
    /// loop (never across an await), read per message.
    wanted: RwLock<Wanted>,
    closed: AtomicBool,
    /// Pushes seen so far: a liveness probe stuck behind a backlog of
    /// messages is no sign of a dead connection.
    pushes: AtomicU64,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Inbound {
    pub(crate) fn new(
        prefix: String,
        max_payload: usize,
        counters: Arc<AdapterCounters>,
        sink: EventSink,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Self {
        Self {
            prefix,
            max_payload,
            counters,
            sink,
            wanted: RwLock::new(Wanted::default()),
            closed: AtomicBool::new(false),
            pushes: AtomicU64::new(0),
            notices,
        }
    }

    /// Handles one push of connection `generation` to `shard`.
    pub(crate) fn push(&self, shard: &ShardId, generation: u64, push: Push<'_>) {
        if self.is_closed() {
            return;
        }
        self.pushes.fetch_add(1, Ordering::Relaxed);
        match push {
            Push::Message { channel, payload } => self.deliver(channel, payload),
            Push::Unsubscribed { channel } => {
                if let Some(topic) = self.topic_of(channel) {
                    let _ = self.notices.send(Notice::Unsubscribed {
                        shard: Arc::clone(shard),
                        generation,
                        topic,
                    });
                }
            }
            Push::Disconnected => {
                let _ = self.notices.send(Notice::Disconnected {
                    shard: Arc::clone(shard),
                    generation,
                });
            }
        }
    }

    fn room_of<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|room| std::str::from_utf8(room).ok())
    }

    /// The topic of `channel`: a wanted control channel, or a room (the
    /// builder keeps the two kinds of channel apart).
    fn topic_of(&self, channel: &[u8]) -> Option<Topic> {
        let wanted = self.wanted.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(control) = wanted.control_of(channel) {
            return Some(Topic::Control(Arc::clone(control)));
        }
        drop(wanted);
        self.room_of(channel).map(Topic::from)
    }

    fn deliver(&self, channel: &[u8], payload: &[u8]) {
        // Only topics wanted now: an unsubscribed room is silent at once,
        // even while its UNSUBSCRIBE waits for the delay.
        let room = {
            let wanted = self.wanted.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(control) = wanted.control_of(channel) {
                let control = Arc::clone(control);
                drop(wanted);
                return self.deliver_control(&control, payload);
            }
            let Some(room) = self.room_of(channel) else {
                return;
            };
            match wanted.rooms.get(room) {
                Some(room) => room.clone(),
                None => return,
            }
        };
        match wire::decode(payload, self.max_payload) {
            Err(error) => self.counters.record_decode_error(room.as_str(), &error),
            Ok(envelope) => {
                self.counters.record_received();
                if self.sink.send(AdapterEvent::Message { room, envelope }) == SinkOutcome::Closed {
                    self.closed.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Hands a control frame over as it came (opaque to the adapter).
    fn deliver_control(&self, channel: &str, payload: &[u8]) {
        if payload.len() > self.max_payload {
            let error = DecodeError::TooLarge {
                size: payload.len(),
                limit: self.max_payload,
            };
            self.counters.record_decode_error(channel, &error);
            return;
        }
        let event = AdapterEvent::Control {
            payload: Bytes::copy_from_slice(payload),
        };
        if self.sink.send(event) == SinkOutcome::Closed {
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// How many pushes arrived so far.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Starts or stops delivering `topic`.
    pub(crate) fn set_wanted(&self, topic: Topic, wanted: bool) {
        let mut set = self.wanted.write().unwrap_or_else(PoisonError::into_inner);
        match (topic, wanted) {
            (Topic::Room(room), true) => {
                set.rooms.insert(room);
            }
            (Topic::Room(room), false) => {
                set.rooms.remove(&room);
            }
            (Topic::Control(channel), true) => {
                if !set.control.contains(&channel) {
                    set.control.push(channel);
                }
            }
            (Topic::Control(channel), false) => set.control.retain(|c| *c != channel),
        }
    }

    /// The engine is gone (its sink closed), or the subscriber stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn sink(&self) -> &EventSink {
        &self.sink
    }
}

/// What [`Inbound`] delivers.
#[derive(Default)]
struct Wanted {
    rooms: HashSet<RoomName>,
    /// A node's control channels: two at most, compared as they come.
    control: Vec<Arc<str>>,
}

impl Wanted {
    fn control_of(&self, channel: &[u8]) -> Option<&Arc<str>> {
        self.control
            .iter()
            .find(|control| control.as_bytes() == channel)
    }
}
