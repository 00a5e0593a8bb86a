//! A connection's recovery from history: while a room it joins is replayed,
//! that room's live deliveries are held, then queued after the replay unless
//! the read already covered them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{ConnectionEntry, Delivery, Push};
use crate::history::Position;
use crate::ids::RoomName;

/// Live deliveries held while rooms are recovered from history.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    rooms: HashMap<RoomName, RoomRecovery>,
    held: Vec<(RoomName, Arc<Delivery>)>,
    /// Rooms whose held deliveries overflowed (more than the queue holds).
    overflowed: HashSet<RoomName>,
}

/// Where one room's recovery is.
#[derive(Debug)]
enum RoomRecovery {
    /// Live deliveries are held.
    Holding,
    /// The replay is queued; live deliveries still in flight that the read
    /// already covered (positions of `epoch` up to `latest`) are dropped,
    /// until the first later one arrives.
    Floor { epoch: String, latest: u64 },
}

/// What the history read covered, for [`ConnectionEntry::finish_recovery`].
#[derive(Debug, Default)]
pub(crate) struct Covered {
    /// The epoch and latest offset of the read (positions up to it are
    /// covered).
    pub(crate) floor: Option<(String, u64)>,
    /// Ids of every entry read (covers application ids).
    pub(crate) ids: HashSet<String>,
}

impl Covered {
    fn covers(&self, delivery: &Delivery) -> bool {
        let Some(id) = delivery.message().id.as_deref() else {
            return false;
        };
        self.ids.contains(id)
            || self
                .floor
                .as_ref()
                .is_some_and(|(epoch, latest)| at_or_before(delivery, epoch, *latest))
    }
}

/// Whether `delivery`'s id is a history position of `epoch` up to `latest`.
fn at_or_before(delivery: &Delivery, epoch: &str, latest: u64) -> bool {
    delivery
        .message()
        .id
        .as_deref()
        .and_then(Position::parse)
        .is_some_and(|position| position.epoch() == epoch && position.offset() <= latest)
}

impl ConnectionEntry {
    fn recovery(&self) -> std::sync::MutexGuard<'_, Recovery> {
        self.recovery.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts holding live deliveries of `room` (before the connection joins
    /// it), until [`finish_recovery`](Self::finish_recovery).
    pub(crate) fn begin_recovery(&self, room: &RoomName) {
        let mut recovery = self.recovery();
        recovery.rooms.insert(room.clone(), RoomRecovery::Holding);
        self.recovering.store(true, Ordering::Release);
    }

    /// Holds a live delivery of a room under recovery; false if the room is
    /// not under recovery (queue it as usual). One atomic load when no room
    /// is.
    pub(crate) fn hold(&self, room: &RoomName, delivery: &Arc<Delivery>) -> bool {
        if !self.recovering.load(Ordering::Acquire) {
            return false;
        }
        let mut recovery = self.recovery();
        match recovery.rooms.get(room) {
            None => return false,
            Some(RoomRecovery::Floor { epoch, latest }) => {
                let covered = at_or_before(delivery, epoch, *latest);
                if !covered {
                    // Past the replay: the room is live again.
                    recovery.rooms.remove(room);
                    if recovery.rooms.is_empty() {
                        self.recovering.store(false, Ordering::Release);
                    }
                }
                return covered;
            }
            Some(RoomRecovery::Holding) => {}
        }
        if recovery.held.len() >= self.queue_capacity {
            recovery.overflowed.insert(room.clone());
        } else {
            recovery.held.push((room.clone(), Arc::clone(delivery)));
        }
        true
    }

    /// Ends the recovery of `room`: queues `gap` (if any), then `replay` in
    /// order, then the live deliveries held meanwhile that the read did not
    /// already cover, then a gap event if held deliveries were lost.
    /// Deliveries arriving meanwhile wait for the lock, so they queue after
    /// all of these; those the read covered (in flight during the read) are
    /// dropped until the first later one. Returns how many deliveries did
    /// not fit the queue.
    pub(crate) fn finish_recovery(
        &self,
        room: &RoomName,
        gap: Option<&Arc<Delivery>>,
        replay: &[Arc<Delivery>],
        covered: Covered,
        overflow_gap: impl FnOnce() -> Option<Arc<Delivery>>,
    ) -> usize {
        let mut recovery = self.recovery();
        let mut full = 0;
        // A duplicate (an id this connection got through another room) is
        // skipped; a closed connection is removed by its receiver's drop.
        let queue = |delivery: &Arc<Delivery>, full: &mut usize| {
            if matches!(self.push(delivery), Push::Full) {
                *full += 1;
            }
        };
        if let Some(gap) = gap {
            queue(gap, &mut full);
        }
        for delivery in replay {
            queue(delivery, &mut full);
        }
        let held = std::mem::take(&mut recovery.held);
        for (held_room, delivery) in held {
            if held_room != *room {
                recovery.held.push((held_room, delivery));
                continue;
            }
            if !covered.covers(&delivery) {
                queue(&delivery, &mut full);
            }
        }
        if recovery.overflowed.remove(room)
            && let Some(gap) = overflow_gap()
        {
            queue(&gap, &mut full);
        }
        match covered.floor {
            Some((epoch, latest)) => {
                recovery
                    .rooms
                    .insert(room.clone(), RoomRecovery::Floor { epoch, latest });
            }
            None => {
                recovery.rooms.remove(room);
                if recovery.rooms.is_empty() {
                    self.recovering.store(false, Ordering::Release);
                }
            }
        }
        full
    }
}
