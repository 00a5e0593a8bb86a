//! Per-room gap signalling: which rooms (and which of their connections) lost
//! messages, collected while under pressure and reported once it is over.
//!
//! Pure bookkeeping with no I/O: the engine records drops into a tracker and
//! turns what it collected into [`RoomsEvent::Gap`](crate::RoomsEvent::Gap)
//! events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::ids::{ConnectionId, RoomName};

/// Rooms tracked at once; past this, every room with members is reported.
pub(crate) const MAX_GAP_ROOMS: usize = 4_096;
/// Connections named per room; past this, the whole room is reported.
pub(crate) const MAX_GAP_CONNECTIONS: usize = 1_024;

/// Who in a room may have missed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapScope {
    /// Every local member: messages for the room were dropped before they
    /// reached any connection (the engine's inbound queue was full).
    AllMembers,
    /// Only these connections: their own queues were full
    /// ([`SlowConsumerPolicy`](crate::SlowConsumerPolicy)). A connection that
    /// was disconnected for lagging is named too; its client should resume
    /// with `Last-Event-ID` when it reconnects.
    Connections(Vec<ConnectionId>),
}

/// One room's gap, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomGap {
    pub(crate) room: RoomName,
    pub(crate) scope: GapScope,
    pub(crate) dropped: u64,
}

#[derive(Debug, Default)]
struct Pending {
    all_members: bool,
    connections: Vec<ConnectionId>,
    dropped: u64,
}

/// Drops recorded since the last report, bounded in rooms and connections.
#[derive(Debug, Default)]
pub(crate) struct GapTracker {
    rooms: HashMap<RoomName, Pending>,
    /// More rooms lost messages than are tracked.
    overflowed: bool,
}

impl GapTracker {
    /// `dropped` messages for `room` never reached any of its connections.
    pub(crate) fn room_dropped(&mut self, room: &RoomName, dropped: u64) {
        if let Some(pending) = self.pending(room) {
            pending.all_members = true;
            pending.connections = Vec::new();
            pending.dropped = pending.dropped.saturating_add(dropped);
        }
    }

    /// One message for `room` did not reach `connection`.
    pub(crate) fn connection_dropped(&mut self, room: &RoomName, connection: &ConnectionId) {
        if let Some(pending) = self.pending(room) {
            pending.dropped = pending.dropped.saturating_add(1);
            if pending.all_members || pending.connections.contains(connection) {
                return;
            }
            if pending.connections.len() < MAX_GAP_CONNECTIONS {
                pending.connections.push(connection.clone());
            } else {
                pending.all_members = true;
                pending.connections = Vec::new();
            }
        }
    }

    fn pending(&mut self, room: &RoomName) -> Option<&mut Pending> {
        if !self.rooms.contains_key(room) && self.rooms.len() >= MAX_GAP_ROOMS {
            self.overflowed = true;
            return None;
        }
        Some(self.rooms.entry(room.clone()).or_default())
    }

    /// Whether anything is waiting to be reported.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty() && !self.overflowed
    }

    /// Everything recorded, one entry per room, and clears the tracker. When
    /// more rooms lost messages than could be tracked, every room in
    /// `all_rooms` not already listed is reported for all its members.
    pub(crate) fn take(&mut self, all_rooms: impl FnOnce() -> Vec<RoomName>) -> Vec<RoomGap> {
        let mut gaps: Vec<RoomGap> = self
            .rooms
            .drain()
            .map(|(room, pending)| RoomGap {
                room,
                scope: if pending.all_members {
                    GapScope::AllMembers
                } else {
                    GapScope::Connections(pending.connections)
                },
                dropped: pending.dropped,
            })
            .collect();
        if std::mem::take(&mut self.overflowed) {
            let listed: std::collections::HashSet<RoomName> =
                gaps.iter().map(|gap| gap.room.clone()).collect();
            gaps.extend(
                all_rooms()
                    .into_iter()
                    .filter(|room| !listed.contains(room))
                    .map(|room| RoomGap {
                        room,
                        scope: GapScope::AllMembers,
                        dropped: 0,
                    }),
            );
        }
        gaps.sort_by(|a, b| a.room.cmp(&b.room));
        gaps
    }
}

/// A [`GapTracker`] shared by the sink (inbound drops) and the engine
/// (connection drops), with a flag so that checking for nothing costs one
/// atomic load rather than a lock, and a wake-up for the dispatcher, which
/// reports what was recorded.
#[derive(Debug, Default)]
pub(crate) struct GapBoard {
    pending: AtomicBool,
    tracker: Mutex<GapTracker>,
    recorded: Notify,
}

impl GapBoard {
    /// Records drops, and wakes the dispatcher to report them.
    pub(crate) fn record(&self, record: impl FnOnce(&mut GapTracker)) {
        record(&mut self.tracker.lock().unwrap_or_else(PoisonError::into_inner));
        self.pending.store(true, Ordering::Release);
        self.recorded.notify_one();
    }

    /// Resolves after the next [`record`](Self::record) (or at once if one
    /// happened since the last wait).
    pub(crate) fn recorded(&self) -> tokio::sync::futures::Notified<'_> {
        self.recorded.notified()
    }

    /// Everything recorded since the last call (see [`GapTracker::take`]).
    pub(crate) fn take(&self, all_rooms: impl FnOnce() -> Vec<RoomName>) -> Vec<RoomGap> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(all_rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::from(name)
    }

    #[test]
    fn one_entry_per_room_naming_each_connection_once() {
        let mut gaps = GapTracker::default();
        let (a, b) = (ConnectionId::from("a"), ConnectionId::from("b"));
        gaps.connection_dropped(&room("r"), &a);
        gaps.connection_dropped(&room("r"), &a);
        gaps.connection_dropped(&room("r"), &b);
        gaps.room_dropped(&room("s"), 3);
        let taken = gaps.take(Vec::new);
        assert_eq!(
            taken,
            vec![
                RoomGap {
                    room: room("r"),
                    scope: GapScope::Connections(vec![a, b]),
                    dropped: 3
                },
                RoomGap {
                    room: room("s"),
                    scope: GapScope::AllMembers,
                    dropped: 3
                },
            ]
        );
        assert!(gaps.is_empty());
        assert!(gaps.take(Vec::new).is_empty());
    }

    #[test]
    fn a_room_wide_drop_covers_its_connections() {
        let mut gaps = GapTracker::default();
        gaps.connection_dropped(&room("r"), &ConnectionId::from("a"));
        gaps.room_dropped(&room("r"), 1);
        gaps.connection_dropped(&room("r"), &ConnectionId::from("b"));
        let taken = gaps.take(Vec::new);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].scope, GapScope::AllMembers);
        assert_eq!(taken[0].dropped, 3);
    }

    #[test]
    fn bounded_in_connections_and_rooms() {
        let mut gaps = GapTracker::default();
        for i in 0..=MAX_GAP_CONNECTIONS {
            gaps.connection_dropped(&room("r"), &ConnectionId::from(format!("c{i}")));
        }
        assert_eq!(gaps.take(Vec::new)[0].scope, GapScope::AllMembers);

        for i in 0..MAX_GAP_ROOMS + 10 {
            gaps.room_dropped(&room(&format!("r{i}")), 1);
        }
        let everything = || {
            (0..MAX_GAP_ROOMS + 20)
                .map(|i| room(&format!("r{i}")))
                .collect()
        };
        let taken = gaps.take(everything);
        assert_eq!(taken.len(), MAX_GAP_ROOMS + 20);
        assert!(gaps.is_empty());
    }
}
