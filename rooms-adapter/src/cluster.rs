//! Cluster awareness: which nodes are live ([`Rooms::nodes`]) and cross-node
//! queries ([`Rooms::cluster_member_count`], [`Rooms::cluster_rooms`]), built
//! by the engine on an adapter's control channel (adapters that declare
//! [`AdapterCapabilities::control`](crate::AdapterCapabilities::control)).
//!
//! - Every node sends a heartbeat to every node each
//!   [`heartbeat_interval`](RoomsBuilder::heartbeat_interval); a node is live
//!   from its first heartbeat until [`node_expiry`](RoomsBuilder::node_expiry)
//!   after its last one (or until it says it leaves, on
//!   [`Rooms::shutdown`]). [`RoomsEvent::NodeJoined`] and
//!   [`RoomsEvent::NodeLeft`] report the changes. A newcomer gets a heartbeat
//!   from every node that hears it, so it knows the cluster within a round
//!   trip.
//! - A query goes to every node; each answers from its local registry into
//!   the asker's inbox. The answer ([`ClusterAnswer`]) says how many nodes
//!   answered out of those known live, and which did not: a node that is
//!   dead but not yet expired makes the answer incomplete after the
//!   [`query_timeout`](RoomsBuilder::query_timeout), never hangs it.
//! - Control frames are JSON on their own channel ([`frame`] documents them),
//!   so nodes that do not speak them (TS nodes) never see them.
//!
//! ```
//! use std::sync::Arc;
//! use rooms_adapter::{ConnectOptions, Rooms};
//! use rooms_adapter_memory::MemoryBus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rooms_adapter::Error> {
//! let bus = MemoryBus::new();
//! let a = Rooms::builder(Arc::new(bus.adapter())).node_id("a").build().await?;
//! let b = Rooms::builder(Arc::new(bus.adapter())).node_id("b").build().await?;
//! let alice = a.connect(ConnectOptions::new()).await?;
//! a.join(alice.id(), "lobby").await?;
//! let bob = b.connect(ConnectOptions::new()).await?;
//! b.join(bob.id(), "lobby").await?;
//!
//! // Each node hears the other's first heartbeat at once.
//! while a.nodes()?.len() < 2 {
//!     tokio::task::yield_now().await;
//! }
//! let answer = a.cluster_member_count("lobby").await?;
//! assert_eq!(answer.value, 2);
//! assert_eq!((answer.answered, answer.known), (2, 2));
//! assert!(answer.is_complete());
//! # a.shutdown().await;
//! # b.shutdown().await;
//! # Ok(()) }
//! ```

pub mod frame;
mod nodes;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use self::frame::{Answer, AnswerKind, ControlFrame, Heartbeat, Query, QueryKind};
use self::nodes::{Heard, NodeTable};
use crate::adapter::{ControlTarget, RoomAdapter};
use crate::engine::{Rooms, RoomsBuilder, RoomsEvent};
use crate::error::Error;
use crate::ids::{NodeId, RoomName};

/// Default [`RoomsBuilder::heartbeat_interval`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Default [`RoomsBuilder::node_expiry`]: three missed heartbeats.
pub const DEFAULT_NODE_EXPIRY: Duration = Duration::from_secs(6);
/// Default [`RoomsBuilder::query_timeout`].
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Bounds of the settings, so a typo cannot flood the medium or keep a dead
/// node for a day.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
const MAX_HEARTBEAT: Duration = Duration::from_secs(300);
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// Control frames waiting to be published (answers, welcome heartbeats);
/// more are dropped and counted.
const OUTBOX: usize = 1_024;

/// One live node, as [`Rooms::nodes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// This node (the one asked).
    pub is_self: bool,
    /// Its local connections, as of its last heartbeat.
    pub connections: u64,
    /// Its rooms with local members, as of its last heartbeat.
    pub rooms: u64,
    /// How long ago its last heartbeat arrived (zero for this node).
    pub last_heard: Duration,
    /// How long it has been live, as far as this node knows.
    pub known_for: Duration,
}

/// A cross-node answer: the value summed over the nodes that answered, and
/// how complete it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterAnswer<T> {
    /// The value over every node that answered (this node included).
    pub value: T,
    /// Nodes that answered, this node included.
    pub answered: usize,
    /// Nodes known live when the query started (this node included), plus
    /// any other node that answered.
    pub known: usize,
    /// Known nodes that did not answer within the timeout.
    pub missing: Vec<NodeId>,
    /// How long the query took.
    pub elapsed: Duration,
}

impl<T> ClusterAnswer<T> {
    /// Whether every known node answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Why a node stopped being live, in [`RoomsEvent::NodeLeft`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeDeparture {
    /// It said so (it shut down).
    Left,
    /// No heartbeat arrived within its expiry.
    Expired,
}

/// The engine's cluster settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterSettings {
    pub(crate) heartbeat: Duration,
    pub(crate) expiry: Option<Duration>,
    pub(crate) query_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT_INTERVAL,
            expiry: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

impl ClusterSettings {
    /// The expiry: as set, or three heartbeat intervals.
    fn expiry(&self) -> Duration {
        self.expiry.unwrap_or(self.heartbeat * 3)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !(MIN_HEARTBEAT..=MAX_HEARTBEAT).contains(&self.heartbeat) {
            return Err(Error::Config(format!(
                "heartbeat_interval must be within {MIN_HEARTBEAT:?}..={MAX_HEARTBEAT:?}, got {:?}",
                self.heartbeat
            )));
        }
        let expiry = self.expiry();
        if expiry <= self.heartbeat || expiry > nodes::MAX_EXPIRY {
            return Err(Error::Config(format!(
                "node_expiry must be longer than heartbeat_interval ({:?}) and at most {:?}, got {expiry:?}",
                self.heartbeat,
                nodes::MAX_EXPIRY
            )));
        }
        if self.query_timeout.is_zero() || self.query_timeout > MAX_QUERY_TIMEOUT {
            return Err(Error::Config(format!(
                "query_timeout must be within 1ns..={MAX_QUERY_TIMEOUT:?}, got {:?}",
                self.query_timeout
            )));
        }
        Ok(())
    }
}

impl RoomsBuilder {
    /// How often this node sends a heartbeat (default
    /// [`DEFAULT_HEARTBEAT_INTERVAL`], 10 ms to 5 min). Only with an adapter
    /// that has the control capability; see [`cluster`](crate::cluster).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.cluster.heartbeat = interval;
        self
    }

    /// How long after its last heartbeat a silent node counts as gone
    /// (default three heartbeat intervals; longer than the interval, at most
    /// 10 min). Sent with each heartbeat: other nodes expire this node by it.
    #[must_use]
    pub fn node_expiry(mut self, expiry: Duration) -> Self {
        self.cluster.expiry = Some(expiry);
        self
    }

    /// How long a cross-node query waits for answers (default
    /// [`DEFAULT_QUERY_TIMEOUT`], at most 5 min).
    #[must_use]
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.cluster.query_timeout = timeout;
        self
    }
}

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
    answers: Vec<(NodeId, AnswerKind)>,
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

impl Rooms {
    fn control(&self) -> Result<&Arc<Control>, Error> {
        self.inner_ref().ensure_open()?;
        self.inner_ref()
            .control
            .as_ref()
            .ok_or_else(|| Error::Unsupported {
                adapter: self.adapter_name().to_owned(),
                capability: "node liveness and cross-node queries",
            })
    }

    /// The live nodes: this one first, then every node heard from within its
    /// expiry, by id. Needs an adapter with the control capability
    /// ([`Error::Unsupported`] otherwise).
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let control = self.control()?;
        Ok(control.live_nodes(&**self.inner_ref()))
    }

    /// How many members `room` has on every live node, waiting at most the
    /// [`query_timeout`](RoomsBuilder::query_timeout). See [`ClusterAnswer`]
    /// for how complete it is.
    pub async fn cluster_member_count(
        &self,
        room: impl Into<RoomName>,
    ) -> Result<ClusterAnswer<usize>, Error> {
        let room = room.into();
        let control = self.control()?;
        let own = AnswerKind::MemberCount {
            count: self.member_count(&room) as u64,
        };
        let query = QueryKind::MemberCount {
            room: room.as_str().to_owned(),
        };
        let gathered = control.ask(query, own).await;
        let value = gathered
            .answers
            .iter()
            .map(|(_, answer)| match answer {
                AnswerKind::MemberCount { count } => usize::try_from(*count).unwrap_or(usize::MAX),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add);
        Ok(gathered.into_answer(value))
    }

    /// Every room with members on any live node, with its members summed
    /// over the nodes, waiting at most the
    /// [`query_timeout`](RoomsBuilder::query_timeout).
    pub async fn cluster_rooms(&self) -> Result<ClusterAnswer<BTreeMap<RoomName, usize>>, Error> {
        let control = self.control()?;
        let own = AnswerKind::Rooms {
            rooms: self
                .inner_ref()
                .room_counts()
                .into_iter()
                .map(|(room, count)| (room.as_str().to_owned(), count as u64))
                .collect(),
        };
        let gathered = control.ask(QueryKind::Rooms, own).await;
        let mut value: BTreeMap<RoomName, usize> = BTreeMap::new();
        for (_, answer) in &gathered.answers {
            if let AnswerKind::Rooms { rooms } = answer {
                for (room, count) in rooms {
                    let members = value.entry(RoomName::from(room.as_str())).or_default();
                    *members =
                        members.saturating_add(usize::try_from(*count).unwrap_or(usize::MAX));
                }
            }
        }
        Ok(gathered.into_answer(value))
    }
}

impl Gathered {
    fn into_answer<T>(self, value: T) -> ClusterAnswer<T> {
        ClusterAnswer {
            value,
            answered: self.answers.len(),
            known: self.known,
            missing: self.missing,
            elapsed: self.elapsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_naming_the_value() {
        let ok = ClusterSettings::default();
        assert!(ok.validate().is_ok());
        assert_eq!(ok.expiry(), DEFAULT_NODE_EXPIRY);
        let too_fast = ClusterSettings {
            heartbeat: Duration::from_millis(1),
            ..ok
        };
        assert!(
            matches!(too_fast.validate(), Err(Error::Config(m)) if m.contains("heartbeat_interval"))
        );
        let short_expiry = ClusterSettings {
            expiry: Some(Duration::from_secs(1)),
            ..ok
        };
        assert!(
            matches!(short_expiry.validate(), Err(Error::Config(m)) if m.contains("node_expiry"))
        );
        let no_wait = ClusterSettings {
            query_timeout: Duration::ZERO,
            ..ok
        };
        assert!(matches!(no_wait.validate(), Err(Error::Config(m)) if m.contains("query_timeout")));
    }
}
