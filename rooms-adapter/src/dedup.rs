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
//!   the last ids they received, a fixed number of 8-byte slots, allocated when
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// The last ids a connection in several rooms received, as fingerprints in a
/// fixed ring: `8 * capacity` bytes, allocated once.
#[derive(Debug)]
pub(crate) struct IdRing {
    slots: Box<[Fingerprint]>,
    next: usize,
    filled: usize,
}

impl IdRing {
    /// A ring of `capacity` slots (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: vec![0; capacity.max(1)].into_boxed_slice(),
            next: 0,
            filled: 0,
        }
    }

    /// Records `fingerprint`; true if it was not among the last `capacity`.
    pub(crate) fn first_time(&mut self, fingerprint: Fingerprint) -> bool {
        if self.slots[..self.filled].contains(&fingerprint) {
            return false;
        }
        self.slots[self.next] = fingerprint;
        self.next = (self.next + 1) % self.slots.len();
        self.filled = (self.filled + 1).min(self.slots.len());
        true
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
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
        assert_eq!(recent.len(), 2);
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
        assert_eq!(ring.heap_bytes(), 24);
        // A zero fingerprint in an empty slot is not mistaken for a seen id.
        let mut fresh = IdRing::new(4);
        assert!(fresh.first_time(0));
        assert!(!fresh.first_time(0));
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
