//! Cluster awareness: which nodes are live ([`Rooms::nodes`]) and cross-node
//! queries ([`Rooms::cluster_member_count`], [`Rooms::cluster_rooms`]), built
//! by the engine on an adapter's control channel (adapters that declare
//! [`AdapterCapabilities::control`](crate::AdapterCapabilities::control)).
//!
//! - Every node sends a heartbeat to every node each
//!   [`heartbeat_interval`](RoomsBuilder::heartbeat_interval); a node is live
//!   from its first heartbeat until [`node_expiry`](RoomsBuilder::node_expiry)
//!   after its last one (or until it says it leaves, on
//!   [`Rooms::shutdown`]). [`RoomsEvent::NodeJoined`](crate::RoomsEvent::NodeJoined) and
//!   [`RoomsEvent::NodeLeft`](crate::RoomsEvent::NodeLeft) report the changes. A newcomer gets a heartbeat
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

mod control;
pub mod frame;
mod nodes;

pub(crate) use self::control::{Control, LocalView, run};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use self::frame::{AnswerKind, QueryKind};
use crate::engine::{Rooms, RoomsBuilder};
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

/// Why a node stopped being live, in [`RoomsEvent::NodeLeft`](crate::RoomsEvent::NodeLeft).
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

#[cfg(test)]
mod tests;
