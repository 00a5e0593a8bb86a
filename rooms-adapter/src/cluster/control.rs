//! The control runtime: the engine's side of the control channel. Takes
//! frames from the dispatcher (never waits there), keeps the live-node table,
//! answers other nodes' queries through a bounded outbox, gathers answers to
//! this node's queries, and runs the heartbeat/expiry task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::frame::{Answer, AnswerKind, ControlFrame, Heartbeat, Query, QueryKind};
use super::nodes::{Heard, NodeTable};
use super::{ClusterAnswer, ClusterSettings, NodeDeparture, NodeInfo};
use crate::adapter::{ControlTarget, RoomAdapter};
use crate::engine::RoomsEvent;
use crate::ids::{NodeId, RoomName};

/// Control frames waiting to be published (answers, welcome heartbeats);
/// more are dropped and counted.
const OUTBOX: usize = 1_024;

/// What the control runtime needs from the engine.
pub(crate) trait LocalView: Send + Sync + 'static {
    /// Local members of `room`.
    fn member_count(&self, room: &str) -> usize;
    /// Every local room with its members.
    fn room_counts(&self) -> Vec<(RoomName, usize)>;
    /// Local connections and rooms.
    fn totals(&self) -> (u64, u64);
    /// Tells the application.
    fn emit(&self, event: RoomsEvent);
}

type Outgoing = (ControlTarget, Vec<u8>);

/// Counters of the control runtime.
#[derive(Debug, Default)]
pub(crate) struct ControlCounters {
    /// Frames that could not be parsed, or from too many node ids.
    pub(crate) rejected: AtomicU64,
    /// Frames not sent: the outbox was full, or the publish failed.
    pub(crate) unsent: AtomicU64,
    /// Queries answered for other nodes.
    pub(crate) answered: AtomicU64,
}

/// The engine's side of the control channel.
pub(crate) struct Control {
    me: NodeId,
    settings: ClusterSettings,
    adapter: Arc<dyn RoomAdapter>,
    nodes: Mutex<NodeTable>,
    /// Queries in flight: id -> where their answers go.
    pending: Mutex<HashMap<u64, mpsc::Sender<(NodeId, AnswerKind)>>>,
    next_query: AtomicU64,
    outbox: mpsc::Sender<Outgoing>,
    pub(crate) counters: ControlCounters,
    started: Instant,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Removes a finished query's entry, however the query ends.
struct PendingQuery<'a> {
    control: &'a Control,
    id: u64,
}

impl Drop for PendingQuery<'_> {
    fn drop(&mut self) {
        self.control.pending().remove(&self.id);
    }
}

/// The answers a query gathered.
pub(crate) struct Gathered {
    pub(crate) answers: Vec<(NodeId, AnswerKind)>,
    known: usize,
    missing: Vec<NodeId>,
    elapsed: Duration,
}

impl Control {
    /// The runtime and the receiving end of its outbox (for [`run`]).
    pub(crate) fn new(
        me: NodeId,
        settings: ClusterSettings,
        adapter: Arc<dyn RoomAdapter>,
    ) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let control = Arc::new(Self {
            nodes: Mutex::new(NodeTable::new(me.clone())),
            me,
            settings,
            adapter,
            pending: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            outbox,
            counters: ControlCounters::default(),
            started: Instant::now(),
        });
        (control, outbox_rx)
    }

    fn nodes(&self) -> MutexGuard<'_, NodeTable> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<(NodeId, AnswerKind)>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn heartbeat(&self, local: &dyn LocalView) -> Vec<u8> {
        let (connections, rooms) = local.totals();
        ControlFrame::Heartbeat(Heartbeat {
            node: self.me.as_str().to_owned(),
            interval_ms: millis(self.settings.heartbeat),
            expiry_ms: millis(self.settings.expiry()),
            connections,
            rooms,
        })
        .encode()
    }

    /// Queues a frame for the runtime's task; a full outbox drops it.
    fn send(&self, target: ControlTarget, frame: Vec<u8>) {
        if self.outbox.try_send((target, frame)).is_err() {
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Handles one frame from the control channel (on the engine's
    /// dispatcher: never waits).
    pub(crate) fn receive(&self, payload: &[u8], local: &dyn LocalView) {
        let frame = match ControlFrame::decode(payload) {
            Ok(frame) => frame,
            Err(error) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "skipping control frame");
                return;
            }
        };
        if frame.node() == self.me.as_str() {
            return;
        }
        match frame {
            ControlFrame::Heartbeat(heartbeat) => {
                let heard = self.nodes().heard(&heartbeat, Instant::now());
                match heard {
                    Heard::Joined => {
                        let node = NodeId::from(heartbeat.node.as_str());
                        tracing::info!(%node, "node joined");
                        // Welcome it: it learns of this node at once.
                        self.send(ControlTarget::Node(node.clone()), self.heartbeat(local));
                        local.emit(RoomsEvent::NodeJoined { node });
                    }
                    Heard::Refreshed => {}
                    Heard::Full => {
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            ControlFrame::Leave { node } => {
                let left = self.nodes().left(&node);
                if let Some(node) = left {
                    tracing::info!(%node, "node left");
                    local.emit(RoomsEvent::NodeLeft {
                        node,
                        departure: NodeDeparture::Left,
                    });
                }
            }
            ControlFrame::Query(query) => {
                let answer = match &query.query {
                    QueryKind::MemberCount { room } => AnswerKind::MemberCount {
                        count: local.member_count(room) as u64,
                    },
                    QueryKind::Rooms => AnswerKind::Rooms {
                        rooms: local
                            .room_counts()
                            .into_iter()
                            .map(|(room, count)| (room.as_str().to_owned(), count as u64))
                            .collect(),
                    },
                };
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                let frame = ControlFrame::Answer(Answer {
                    node: self.me.as_str().to_owned(),
                    id: query.id,
                    answer,
                });
                self.send(
                    ControlTarget::Node(NodeId::from(query.node.as_str())),
                    frame.encode(),
                );
            }
            ControlFrame::Answer(answer) => {
                let pending = self.pending().get(&answer.id).cloned();
                if let Some(answers) = pending {
                    // Full only if a node answers many times: drop the extra.
                    let _ = answers.try_send((NodeId::from(answer.node.as_str()), answer.answer));
                }
            }
        }
    }

    /// Live nodes, this one first.
    pub(crate) fn live_nodes(&self, local: &dyn LocalView) -> Vec<NodeInfo> {
        let now = Instant::now();
        let (connections, rooms) = local.totals();
        let mut list = vec![NodeInfo {
            id: self.me.clone(),
            is_self: true,
            connections,
            rooms,
            last_heard: Duration::ZERO,
            known_for: now.saturating_duration_since(self.started),
        }];
        list.extend(self.nodes().peers().into_iter().map(|(id, peer)| NodeInfo {
            id,
            is_self: false,
            connections: peer.connections,
            rooms: peer.rooms,
            last_heard: now.saturating_duration_since(peer.last_heard),
            known_for: now.saturating_duration_since(peer.first_heard),
        }));
        list
    }

    /// Asks every live node, waits for their answers (at most the query
    /// timeout) and adds this node's `own` answer.
    pub(crate) async fn ask(&self, query: QueryKind, own: AnswerKind) -> Gathered {
        let started = Instant::now();
        let deadline = started + self.settings.query_timeout;
        let known = self.nodes().peer_ids();
        let mut answers: HashMap<NodeId, AnswerKind> = HashMap::new();
        if !known.is_empty() {
            let id = self.next_query.fetch_add(1, Ordering::Relaxed);
            let (sender, mut receiver) = mpsc::channel(known.len() + 16);
            self.pending().insert(id, sender);
            let _pending = PendingQuery { control: self, id };
            let frame = ControlFrame::Query(Query {
                node: self.me.as_str().to_owned(),
                id,
                query,
            })
            .encode();
            let sent = tokio::time::timeout_at(
                deadline,
                self.adapter.publish_control(&ControlTarget::All, &frame),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    while !known.iter().all(|node| answers.contains_key(node)) {
                        match tokio::time::timeout_at(deadline, receiver.recv()).await {
                            Ok(Some((node, answer))) => {
                                answers.insert(node, answer);
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                Ok(Err(error)) => {
                    self.counters.unsent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "cross-node query not sent");
                }
                Err(_) => {
                    self.counters.unsent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let missing: Vec<NodeId> = known
            .iter()
            .filter(|node| !answers.contains_key(*node))
            .cloned()
            .collect();
        let strangers = answers.keys().filter(|node| !known.contains(node)).count();
        let mut answers: Vec<(NodeId, AnswerKind)> = answers.into_iter().collect();
        answers.push((self.me.clone(), own));
        Gathered {
            answers,
            known: known.len() + strangers + 1,
            missing,
            elapsed: started.elapsed(),
        }
    }

    /// Tells every node this one leaves (bounded by the query timeout).
    pub(crate) async fn leave(&self) {
        let frame = ControlFrame::Leave {
            node: self.me.as_str().to_owned(),
        }
        .encode();
        let limit = self.settings.query_timeout.min(Duration::from_secs(1));
        let sent = tokio::time::timeout(
            limit,
            self.adapter.publish_control(&ControlTarget::All, &frame),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!("leave frame not sent");
        }
    }

    async fn publish(&self, target: &ControlTarget, frame: &[u8]) {
        let sent = tokio::time::timeout(
            self.settings.heartbeat.max(Duration::from_millis(100)),
            self.adapter.publish_control(target, frame),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The control task: heartbeats, expiry, and the outbox. Ends when the engine
/// is gone.
pub(crate) async fn run(
    control: Arc<Control>,
    local: Weak<dyn LocalView>,
    mut outbox: mpsc::Receiver<Outgoing>,
) {
    let mut next_beat = Instant::now();
    loop {
        let wake = control
            .nodes()
            .next_expiry()
            .map_or(next_beat, |expiry| expiry.min(next_beat));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            outgoing = outbox.recv() => match outgoing {
                Some((target, frame)) => control.publish(&target, &frame).await,
                None => return,
            },
        }
        let Some(local) = local.upgrade() else {
            return;
        };
        let now = Instant::now();
        let expired = control.nodes().expire(now);
        for node in expired {
            tracing::info!(%node, "node expired");
            local.emit(RoomsEvent::NodeLeft {
                node,
                departure: NodeDeparture::Expired,
            });
        }
        if now >= next_beat {
            next_beat = now + control.settings.heartbeat;
            let beat = control.heartbeat(&*local);
            drop(local);
            control.publish(&ControlTarget::All, &beat).await;
        }
    }
}

impl Gathered {
    pub(crate) fn into_answer<T>(self, value: T) -> ClusterAnswer<T> {
        ClusterAnswer {
            value,
            answered: self.answers.len(),
            known: self.known,
            missing: self.missing,
            elapsed: self.elapsed,
        }
    }
}
