//! Which other nodes are live: a pure table fed with heartbeats and leaves,
//! with the time passed in, so every rule is unit-tested without a medium.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::frame::Heartbeat;
use crate::ids::NodeId;

/// The most peers remembered: heartbeats from more node ids (a hostile
/// publisher inventing ids) are ignored and counted.
pub(crate) const MAX_PEERS: usize = 4_096;

/// The longest expiry a heartbeat may ask for; longer ones are cut to it, so
/// a node never outlives its silence by more than this.
pub(crate) const MAX_EXPIRY: Duration = Duration::from_secs(600);

/// What the table knows of one peer.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) last_heard: Instant,
    pub(crate) first_heard: Instant,
    pub(crate) expiry: Duration,
    pub(crate) connections: u64,
    pub(crate) rooms: u64,
}

/// What a heartbeat did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A node not known before.
    Joined,
    /// A known node, refreshed.
    Refreshed,
    /// Ignored: the table is full.
    Full,
}

/// The live peers of one node (never the node itself).
#[derive(Debug)]
pub(crate) struct NodeTable {
    me: NodeId,
    peers: HashMap<NodeId, Peer>,
}

impl NodeTable {
    pub(crate) fn new(me: NodeId) -> Self {
        Self {
            me,
            peers: HashMap::new(),
        }
    }

    /// Takes a heartbeat heard at `now`. The node's own are ignored.
    pub(crate) fn heard(&mut self, heartbeat: &Heartbeat, now: Instant) -> Heard {
        let expiry = Duration::from_millis(heartbeat.expiry_ms).min(MAX_EXPIRY);
        if heartbeat.node == self.me.as_str() {
            return Heard::Refreshed;
        }
        if let Some(peer) = self.peers.get_mut(heartbeat.node.as_str()) {
            peer.last_heard = now;
            peer.expiry = expiry;
            peer.connections = heartbeat.connections;
            peer.rooms = heartbeat.rooms;
            return Heard::Refreshed;
        }
        if self.peers.len() >= MAX_PEERS {
            return Heard::Full;
        }
        self.peers.insert(
            NodeId::from(heartbeat.node.as_str()),
            Peer {
                last_heard: now,
                first_heard: now,
                expiry,
                connections: heartbeat.connections,
                rooms: heartbeat.rooms,
            },
        );
        Heard::Joined
    }

    /// Forgets a node that said it leaves; whether it was known.
    pub(crate) fn left(&mut self, node: &str) -> Option<NodeId> {
        self.peers.remove_entry(node).map(|(id, _)| id)
    }

    /// Forgets every peer not heard from within its expiry; those forgotten.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let mut gone = Vec::new();
        self.peers.retain(|id, peer| {
            let live = now.saturating_duration_since(peer.last_heard) < peer.expiry;
            if !live {
                gone.push(id.clone());
            }
            live
        });
        gone.sort();
        gone
    }

    /// When the next peer expires, if any.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .map(|peer| peer.last_heard + peer.expiry)
            .min()
    }

    /// The live peers' ids, sorted.
    pub(crate) fn peer_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.peers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The live peers, sorted by id.
    pub(crate) fn peers(&self) -> Vec<(NodeId, Peer)> {
        let mut peers: Vec<(NodeId, Peer)> = self
            .peers
            .iter()
            .map(|(id, peer)| (id.clone(), peer.clone()))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, expiry_ms: u64) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            interval_ms: expiry_ms / 3,
            expiry_ms,
            connections: 2,
            rooms: 1,
        }
    }

    #[test]
    fn a_node_joins_once_and_expires_after_its_own_expiry() {
        let start = Instant::now();
        let mut table = NodeTable::new("me".into());
        assert_eq!(table.heard(&beat("b", 3_000), start), Heard::Joined);
        assert_eq!(table.heard(&beat("c", 9_000), start), Heard::Joined);
        let later = start + Duration::from_secs(2);
        assert_eq!(table.heard(&beat("b", 3_000), later), Heard::Refreshed);
        assert_eq!(table.next_expiry(), Some(later + Duration::from_secs(3)));
        assert!(
            table
                .expire(start + Duration::from_millis(4_999))
                .is_empty()
        );
        assert_eq!(
            table.expire(start + Duration::from_secs(5)),
            vec![NodeId::from("b")]
        );
        assert_eq!(table.peer_ids(), vec![NodeId::from("c")]);
        assert_eq!(
            table.expire(start + Duration::from_secs(9)),
            vec![NodeId::from("c")]
        );
        assert_eq!(table.next_expiry(), None);
    }

    #[test]
    fn own_heartbeats_are_not_a_peer() {
        let mut table = NodeTable::new("me".into());
        table.heard(&beat("me", 3_000), Instant::now());
        assert!(table.peer_ids().is_empty());
    }

    #[test]
    fn leave_forgets_at_once() {
        let now = Instant::now();
        let mut table = NodeTable::new("me".into());
        table.heard(&beat("b", 3_000), now);
        assert_eq!(table.left("b"), Some(NodeId::from("b")));
        assert_eq!(table.left("b"), None);
        assert!(table.peers().is_empty());
    }

    #[test]
    fn expiry_is_capped_and_the_table_is_bounded() {
        let now = Instant::now();
        let mut table = NodeTable::new("me".into());
        table.heard(&beat("forever", u64::MAX), now);
        assert_eq!(
            table.expire(now + MAX_EXPIRY),
            vec![NodeId::from("forever")]
        );
        for n in 0..MAX_PEERS {
            assert_eq!(
                table.heard(&beat(&n.to_string(), 1_000), now),
                Heard::Joined
            );
        }
        assert_eq!(table.heard(&beat("one-more", 1_000), now), Heard::Full);
        assert_eq!(table.heard(&beat("7", 1_000), now), Heard::Refreshed);
    }

    #[test]
    fn peers_carry_their_last_counts() {
        let now = Instant::now();
        let mut table = NodeTable::new("me".into());
        table.heard(&beat("b", 3_000), now);
        let mut newer = beat("b", 3_000);
        newer.connections = 40;
        table.heard(&newer, now + Duration::from_secs(1));
        let peers = table.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].1.connections, 40);
        assert_eq!(peers[0].1.first_heard, now);
    }
}
