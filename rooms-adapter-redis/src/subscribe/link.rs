//! The link seam: how the subscriber loop talks to a medium's shards, and
//! where their pushes go.
//!
//! A [`Link`] discovers the topology (which shard owns which slot) and opens a
//! shard's connection; a [`ShardConnection`] sends a batch of (un)subscribes
//! as one pipeline and answers pings. Messages never travel through the loop:
//! a connection hands every push to [`Inbound`] *on its read path*, which
//! decodes and delivers it to the engine's sink without waiting (a full queue
//! is a counted drop). So the socket is read only as fast as messages are
//! decoded: no queue between the socket and the decoder, and a stalled
//! consumer backs up into TCP and Redis's output-buffer limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, SinkOutcome};
use rooms_adapter::{Error, RoomName, wire};
use tokio::sync::mpsc;

use super::slot::{ShardId, Topology};
use super::table::{Ack, OpKind};

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
        room: RoomName,
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
    /// Rooms whose messages are delivered. Written only by the subscriber
    /// loop (never across an await), read per message.
    wanted: RwLock<HashSet<RoomName>>,
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
            wanted: RwLock::new(HashSet::new()),
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
                if let Some(room) = self.room_of(channel) {
                    let _ = self.notices.send(Notice::Unsubscribed {
                        shard: Arc::clone(shard),
                        generation,
                        room: RoomName::from(room),
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

    fn deliver(&self, channel: &[u8], payload: &[u8]) {
        let Some(room) = self.room_of(channel) else {
            return;
        };
        // Only rooms wanted now: an unsubscribed room is silent at once, even
        // while its UNSUBSCRIBE waits for the delay.
        let room = {
            let wanted = self.wanted.read().unwrap_or_else(PoisonError::into_inner);
            match wanted.get(room) {
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

    /// How many pushes arrived so far.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Starts or stops delivering `room`.
    pub(crate) fn set_wanted(&self, room: RoomName, wanted: bool) {
        let mut set = self.wanted.write().unwrap_or_else(PoisonError::into_inner);
        if wanted {
            set.insert(room);
        } else {
            set.remove(&room);
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
