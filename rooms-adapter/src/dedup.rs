//! Message-id deduplication without a copy of any id per connection.
//!
//! A message can reach a node twice in two ways, and each has its own guard:
//!
//! - **The same id into the same room again** (a publisher retried, or two
//!   publishers sent one event). [`RecentIds`] is one node-wide window of
//!   `(room, id)` fingerprints: the second copy is dropped for the whole room
//!   with one lookup per message, whatever the room's size. Connections pay
//!   nothing.
//! - **One broadcast to several rooms** reaches a connection that sits in two
//!   of them through each room's envelope. Only connections in two or more
//!   rooms can see that, so only they carry an [`IdRing`]: the fingerprints of
//!   the last ids they received, a fixed number of slots (24 bytes each, ring and index), allocated when
//!   the connection joins its second room.
//!
//! A fingerprint is a 64-bit hash of the id under a per-node random key, so
//! memory is bounded by slot count, not by the length of ids (which are capped
//! at [`MAX_ID_BYTES`](crate::message::MAX_ID_BYTES) anyway), and nobody
//! outside the node can aim for collisions.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// A keyed 64-bit hash of a message id (and, for [`RecentIds`], its room).
pub(crate) type Fingerprint = u64;

/// Hashes ids into fingerprints with a key chosen at random per node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fingerprinter {
    key: RandomState,
}

impl Fingerprinter {
    /// The fingerprint of a message id.
    pub(crate) fn id(&self, id: &str) -> Fingerprint {
        self.key.hash_one(id)
    }

    /// The fingerprint of a message id in a room.
    pub(crate) fn room_id(&self, room: &str, id: &str) -> Fingerprint {
        self.key.hash_one((room, id))
    }
}

/// A hasher for keys that already are uniformly distributed fingerprints.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A bounded first-in-first-out set of fingerprints: the node-wide window of
/// recent `(room, id)` pairs. About 25 bytes per slot.
#[derive(Debug)]
pub(crate) struct RecentIds {
    capacity: usize,
    order: VecDeque<Fingerprint>,
    seen: HashSet<Fingerprint, BuildHasherDefault<FingerprintHasher>>,
}

impl RecentIds {
    /// A window of `capacity` fingerprints; 0 remembers nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::default(),
        }
    }

    /// Records `fingerprint`; true if it was not in the window.
    pub(crate) fn first_time(&mut self, fingerprint: Fingerprint) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if !self.seen.insert(fingerprint) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(fingerprint);
        true
    }

    /// Whether `fingerprint` is in the window (without recording it).
    pub(crate) fn contains(&self, fingerprint: Fingerprint) -> bool {
        self.seen.contains(&fingerprint)
    }

    /// How many fingerprints the window holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// The last ids a connection in several rooms received, as fingerprints: a
/// fixed ring keeps their order (to forget the oldest) and a small
/// open-addressing table finds them in one or two probes, so a lookup touches
/// one cache line, not the whole ring. `24 * capacity` bytes at most (the
/// table has twice the ring's slots, rounded up to a power of two), allocated
/// once.
#[derive(Debug)]
pub(crate) struct IdRing {
    order: Box<[Fingerprint]>,
    next: usize,
    filled: usize,
    table: Box<[Fingerprint]>,
}

/// The table marks empty slots with 0, so fingerprints are never 0.
fn nonzero(fingerprint: Fingerprint) -> Fingerprint {
    fingerprint.max(1)
}

impl IdRing {
    /// A ring of `capacity` ids (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let table = (capacity * 2).next_power_of_two();
        Self {
            order: vec![0; capacity].into_boxed_slice(),
            next: 0,
            filled: 0,
            table: vec![0; table].into_boxed_slice(),
        }
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The table slot holding `fingerprint`, or the empty slot ending its run.
    fn probe(&self, fingerprint: Fingerprint) -> usize {
        let mask = self.mask();
        // Fingerprints are keyed hashes already: their low bits are uniform.
        let mut slot = fingerprint as usize & mask;
        while self.table[slot] != 0 && self.table[slot] != fingerprint {
            slot = (slot + 1) & mask;
        }
        slot
    }

    fn remove(&mut self, fingerprint: Fingerprint) {
        let mask = self.mask();
        let mut hole = self.probe(fingerprint);
        if self.table[hole] == 0 {
            return;
        }
        // Backward-shift deletion: pull later members of the run into the
        // hole when their home slot allows it, so no tombstones are needed.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let moved = self.table[next];
            if moved == 0 {
                break;
            }
            let home = moved as usize & mask;
            let between = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !between {
                self.table[hole] = moved;
                hole = next;
            }
        }
        self.table[hole] = 0;
    }

    /// Records `fingerprint`; true if it was not among the last `capacity`.
    pub(crate) fn first_time(&mut self, fingerprint: Fingerprint) -> bool {
        let fingerprint = nonzero(fingerprint);
        let slot = self.probe(fingerprint);
        if self.table[slot] == fingerprint {
            return false;
        }
        if self.filled == self.order.len() {
            let oldest = self.order[self.next];
            self.remove(oldest);
        } else {
            self.filled += 1;
        }
        // The removal may have moved entries: probe again.
        let slot = self.probe(fingerprint);
        self.table[slot] = fingerprint;
        self.order[self.next] = fingerprint;
        self.next = (self.next + 1) % self.order.len();
        true
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.order) + std::mem::size_of_val(&*self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest_and_stay_bounded() {
        let mut recent = RecentIds::new(2);
        assert!(recent.first_time(1));
        assert!(!recent.first_time(1));
        assert!(recent.first_time(2));
        assert!(recent.first_time(3));
        assert!(recent.first_time(1), "1 was evicted");
        assert!(recent.contains(1) && recent.contains(3) && !recent.contains(2));
        assert_eq!((recent.len(), recent.capacity()), (2, 2));
        assert_eq!(recent.seen.len(), 2);
        let mut off = RecentIds::new(0);
        assert!(off.first_time(1) && off.first_time(1));
    }

    #[test]
    fn ring_remembers_exactly_its_capacity() {
        let mut ring = IdRing::new(3);
        for fingerprint in [10, 11, 12] {
            assert!(ring.first_time(fingerprint));
        }
        assert!(!ring.first_time(10));
        assert!(ring.first_time(13), "new id");
        assert!(ring.first_time(10), "10 was overwritten by 13");
        assert!(!ring.first_time(12));
        assert_eq!(ring.heap_bytes(), 3 * 8 + 8 * 8);
        // A zero fingerprint in an empty slot is not mistaken for a seen id.
        let mut fresh = IdRing::new(4);
        assert!(fresh.first_time(0));
        assert!(!fresh.first_time(0));
    }

    #[test]
    fn ring_matches_a_plain_window_under_collisions() {
        // Fingerprints that share low bits (the table's home slots) exercise
        // probing and backward-shift deletion; compare with a plain window.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for capacity in [1usize, 2, 3, 8, 128] {
            let mut ring = IdRing::new(capacity);
            let mut window: VecDeque<u64> = VecDeque::new();
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Few distinct values and few distinct home slots.
                let fingerprint = (state % 64) << 8 | (state % 4);
                let expected = !window.contains(&nonzero(fingerprint));
                assert_eq!(
                    ring.first_time(fingerprint),
                    expected,
                    "capacity {capacity}"
                );
                if expected {
                    if window.len() == capacity {
                        window.pop_front();
                    }
                    window.push_back(nonzero(fingerprint));
                }
            }
            assert_eq!(ring.table.iter().filter(|&&f| f != 0).count(), window.len());
        }
    }

    #[test]
    fn fingerprints_separate_rooms_and_ids() {
        let f = Fingerprinter::default();
        assert_eq!(f.id("a"), f.id("a"));
        assert_ne!(f.id("a"), f.id("b"));
        assert_ne!(f.room_id("r1", "a"), f.room_id("r2", "a"));
        assert_ne!(f.room_id("ab", "c"), f.room_id("a", "bc"));
    }
}
