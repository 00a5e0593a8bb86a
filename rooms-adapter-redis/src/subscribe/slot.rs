//! Hash slots and the cluster's slot map ([`Topology`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use redis::Value;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16_384;

/// The hash slot of a key or shard channel, as Redis computes it
/// (`CRC16(key) mod 16384`, XMODEM variant). When the key holds a non-empty
/// hash tag (`{...}`, the first `{` and the first `}` after it), only the tag
/// is hashed.
///
/// ```
/// use rooms_adapter_redis::key_slot;
/// assert_eq!(key_slot(b"foo"), 12182);
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
/// assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}")); // empty tag: whole key
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOT_COUNT
}

fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|b| *b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|b| *b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), bit by bit: slots are computed
/// once per room, never on the message path.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A shard's name: a cluster master's address, `host:port`, or the one
/// shard of a single server or a Sentinel deployment.
pub(crate) type ShardId = Arc<str>;

/// Which master serves each slot, from `CLUSTER SLOTS`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Topology {
    /// Masters: (id, host, port).
    masters: Vec<(ShardId, String, u16)>,
    /// Per slot, an index into `masters`, or `u16::MAX` when unassigned.
    owners: Vec<u16>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let covered = self.owners.iter().filter(|o| **o != u16::MAX).count();
        f.debug_struct("Topology")
            .field(
                "masters",
                &self.masters.iter().map(|m| &m.0).collect::<Vec<_>>(),
            )
            .field("covered_slots", &covered)
            .finish()
    }
}

impl Topology {
    /// One shard that owns every slot: a single server, or a Sentinel
    /// deployment's master (wherever it is now).
    pub(crate) fn single(id: &str) -> Self {
        Topology {
            masters: vec![(Arc::from(id), String::new(), 0)],
            owners: vec![0; usize::from(SLOT_COUNT)],
        }
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ..],
    /// replicas..], ..]`. An empty host means "the node you asked";
    /// `fallback_host` stands in.
    pub(crate) fn from_cluster_slots(reply: &Value, fallback_host: &str) -> Result<Self, String> {
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS: expected an array, got {reply:?}"));
        };
        let mut topology = Topology {
            masters: Vec::new(),
            owners: vec![u16::MAX; usize::from(SLOT_COUNT)],
        };
        let mut index: HashMap<ShardId, u16> = HashMap::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(format!("CLUSTER SLOTS: bad range {range:?}"));
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (int(fields.first()), int(fields.get(1)), fields.get(2))
            else {
                return Err(format!("CLUSTER SLOTS: bad range {range:?}"));
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(format!("CLUSTER SLOTS: bad node {master:?}")),
            };
            let host = if host.is_empty() || host == "?" {
                fallback_host.to_owned()
            } else {
                host
            };
            let Some(port) = int(master.get(1)).and_then(|p| u16::try_from(p).ok()) else {
                return Err(format!("CLUSTER SLOTS: bad port in {master:?}"));
            };
            let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(end)) else {
                return Err(format!("CLUSTER SLOTS: bad slot range {start}-{end}"));
            };
            if start > end || end >= SLOT_COUNT {
                return Err(format!("CLUSTER SLOTS: bad slot range {start}-{end}"));
            }
            let id: ShardId = Arc::from(shard_id(&host, port));
            let master_index = match index.get(&id) {
                Some(i) => *i,
                None => {
                    let i = u16::try_from(topology.masters.len())
                        .map_err(|_| "CLUSTER SLOTS: too many masters".to_owned())?;
                    topology.masters.push((Arc::clone(&id), host, port));
                    index.insert(id, i);
                    i
                }
            };
            for slot in start..=end {
                topology.owners[usize::from(slot)] = master_index;
            }
        }
        Ok(topology)
    }

    /// The master serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&ShardId> {
        let index = *self.owners.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).map(|m| &m.0)
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    /// The host and port of the master serving `slot`, if any.
    pub(crate) fn owner_addr(&self, slot: u16) -> Option<(&str, u16)> {
        let index = *self.owners.get(usize::from(slot))?;
        self.masters
            .get(usize::from(index))
            .map(|m| (m.1.as_str(), m.2))
    }

    /// Every master's (id, host, port).
    pub(crate) fn masters(&self) -> impl Iterator<Item = (&ShardId, &str, u16)> {
        self.masters
            .iter()
            .map(|(id, host, port)| (id, host.as_str(), *port))
    }

    /// Whether every slot is served.
    pub(crate) fn is_complete(&self) -> bool {
        self.owners.iter().all(|owner| *owner != u16::MAX)
    }
}

/// The adapter's current slot map, shared by the subscriber task (which
/// refreshes it) and the publish driver (which reads it, and flags it stale
/// when a publish lands on the wrong master). Never locked across an await.
#[derive(Debug, Default)]
pub(crate) struct SlotMap {
    topology: RwLock<Option<Arc<Topology>>>,
    stale: AtomicBool,
}

impl SlotMap {
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn current(&self) -> Option<Arc<Topology>> {
        self.topology
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, topology: Arc<Topology>) {
        *self
            .topology
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(topology);
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether someone flagged it stale since the last call.
    pub(crate) fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::Relaxed)
    }
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
/// `host:port`.
pub(crate) fn shard_id(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{foo}bar"), 12182);
        assert_eq!(key_slot(b"x{}y"), crc16(b"x{}y") % SLOT_COUNT);
        assert_eq!(key_slot(b"{a}{b}"), key_slot(b"a"));
        assert_eq!(key_slot(b"no}close{"), crc16(b"no}close{") % SLOT_COUNT);
    }

    #[test]
    fn parses_cluster_slots() {
        let node = |host: &str, port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 7000, "a"),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node("", 7001, "b"),
            ]),
        ]);
        let topology = Topology::from_cluster_slots(&reply, "seed").expect("parses");
        assert_eq!(topology.owner(0).map(|s| &**s), Some("10.0.0.1:7000"));
        assert_eq!(topology.owner(16383).map(|s| &**s), Some("seed:7001"));
        assert!(topology.is_complete());
        assert_eq!(topology.masters().count(), 2);

        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(5),
            Value::Int(5),
            node("h", 1, "c"),
        ])]);
        let topology = Topology::from_cluster_slots(&partial, "seed").expect("parses");
        assert!(topology.owner(4).is_none());
        assert!(!topology.is_complete());

        assert!(Topology::from_cluster_slots(&Value::Int(1), "x").is_err());
        let bad = Value::Array(vec![Value::Array(vec![Value::Int(9), Value::Int(1)])]);
        assert!(Topology::from_cluster_slots(&bad, "x").is_err());
    }
}
