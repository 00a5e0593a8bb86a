//! Which rooms' messages from other nodes wait while the rooms catch up from
//! history after an outage. Pure state; the engine does the I/O
//! ([`recovery`](super::recovery)).
//!
//! A medium delivers a room's messages again as soon as it has subscribed
//! the room anew, which may be well before it reports `Reconnected` (Redis
//! waits for every lost room, or a settle time). Delivered at once, such a
//! message would overtake the messages the room missed, which the engine
//! replays from history only after `Reconnected`. So, from the medium's loss
//! until the catch-up is over:
//! - a message whose position does not follow one this node delivered (a
//!   hole before it: the room missed messages) starts holding its room;
//! - every room `Reconnected` lists is held too, before its catch-up starts;
//! - a held room's messages wait, in arrival order (bounded: the rest are
//!   dropped and counted), until its catch-up has replayed the missed ones,
//!   then go through the usual path, which drops what the replay delivered.
//!
//! Rooms whose messages follow on without a hole (e.g. on Redis Cluster
//! shards that were not lost) are never held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::history::Position;
use crate::ids::RoomName;
use crate::wire::Envelope;

/// A message from another node and when the adapter handed it over.
pub(crate) type Arrival = (Envelope, Option<Instant>);

/// One held room's messages.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// In arrival order.
    pub(crate) arrivals: Vec<Arrival>,
    /// Messages dropped because too many were held.
    pub(crate) dropped: u64,
}

/// What to do with a message from another node.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Deliver it now.
    Deliver(Arrival),
    /// It waits for its room's catch-up.
    Held,
}

/// The rooms held, and whether an outage is on.
#[derive(Debug)]
pub(crate) struct CatchUp {
    /// The medium was lost and no catch-up since has ended.
    outage: bool,
    /// Counts losses, so a catch-up that ends does not end a later outage.
    losses: u64,
    rooms: HashMap<RoomName, Held>,
    /// Messages held in all rooms.
    held: usize,
    /// Most messages held in all rooms.
    capacity: usize,
}

impl CatchUp {
    /// Nothing held; at most `capacity` messages will be.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            outage: false,
            losses: 0,
            rooms: HashMap::new(),
            held: 0,
            capacity,
        }
    }

    /// The medium is lost: from now on a message after a hole holds its room.
    pub(crate) fn medium_lost(&mut self) {
        self.outage = true;
        self.losses += 1;
    }

    /// How many times the medium was lost (for [`end_outage`](Self::end_outage)).
    pub(crate) fn losses(&self) -> u64 {
        self.losses
    }

    /// Holds `room`'s messages until [`release`](Self::release).
    pub(crate) fn hold(&mut self, room: &RoomName) {
        self.rooms.entry(room.clone()).or_default();
    }

    /// Whether `room` is held.
    #[cfg(test)]
    pub(crate) fn is_held(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    /// Takes a message of `room` from another node. `delivered` tells
    /// whether this node delivered the message at a position (the one
    /// before the message's own).
    pub(crate) fn offer(
        &mut self,
        room: &RoomName,
        arrival: Arrival,
        delivered: impl FnOnce(&Position) -> bool,
    ) -> Offer {
        if !self.rooms.contains_key(room) {
            if !self.outage {
                return Offer::Deliver(arrival);
            }
            let before = arrival
                .0
                .message()
                .id
                .as_deref()
                .and_then(Position::parse)
                .filter(|position| position.offset() > 1)
                .and_then(|position| Position::new(position.epoch(), position.offset() - 1));
            match before {
                // A hole before it: the room missed messages.
                Some(before) if !delivered(&before) => self.hold(room),
                _ => return Offer::Deliver(arrival),
            }
        }
        let full = self.held >= self.capacity;
        if let Some(held) = self.rooms.get_mut(room) {
            if full {
                held.dropped += 1;
            } else {
                held.arrivals.push(arrival);
                self.held += 1;
            }
        }
        Offer::Held
    }

    /// Stops holding `room`: its held messages, to deliver in order.
    pub(crate) fn release(&mut self, room: &RoomName) -> Option<Held> {
        let held = self.rooms.remove(room)?;
        self.held -= held.arrivals.len();
        Some(held)
    }

    /// A catch-up that began after `losses` losses ended: unless the medium
    /// was lost again since, the outage is over and every room still held
    /// is released (returned, to deliver).
    pub(crate) fn end_outage(&mut self, losses: u64) -> Vec<(RoomName, Held)> {
        if self.losses != losses {
            return Vec::new();
        }
        self.outage = false;
        self.held = 0;
        self.rooms.drain().collect()
    }

    /// Nothing held and no outage: messages need not be offered.
    pub(crate) fn is_idle(&self) -> bool {
        !self.outage && self.rooms.is_empty()
    }
}

/// [`CatchUp`] behind a lock, with a flag read without it on the receive
/// path.
#[derive(Debug)]
pub(crate) struct CatchUpBoard {
    active: AtomicBool,
    state: Mutex<CatchUp>,
}

impl CatchUpBoard {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            active: AtomicBool::new(false),
            state: Mutex::new(CatchUp::new(capacity)),
        }
    }

    /// Whether messages must be offered (one atomic load).
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The state; [`CatchUpGuard`] updates the flag when dropped.
    pub(crate) fn lock(&self) -> CatchUpGuard<'_> {
        CatchUpGuard {
            active: &self.active,
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// The locked [`CatchUp`].
pub(crate) struct CatchUpGuard<'a> {
    active: &'a AtomicBool,
    state: MutexGuard<'a, CatchUp>,
}

impl std::ops::Deref for CatchUpGuard<'_> {
    type Target = CatchUp;
    fn deref(&self) -> &CatchUp {
        &self.state
    }
}

impl std::ops::DerefMut for CatchUpGuard<'_> {
    fn deref_mut(&mut self) -> &mut CatchUp {
        &mut self.state
    }
}

impl Drop for CatchUpGuard<'_> {
    fn drop(&mut self) {
        self.active.store(!self.state.is_idle(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::message::SseMessage;

    const EPOCH: &str = "00000000abcd";

    fn at(offset: u64) -> Arrival {
        let id = Position::new(EPOCH, offset)
            .map(|p| p.to_id())
            .unwrap_or_default();
        (
            Envelope::new(NodeId::from("a"), SseMessage::new(offset).with_id(id)),
            None,
        )
    }

    fn offsets(held: &Held) -> Vec<u64> {
        held.arrivals
            .iter()
            .filter_map(|(envelope, _)| envelope.message().id.as_deref().and_then(Position::parse))
            .map(|position| position.offset())
            .collect()
    }

    #[test]
    fn without_an_outage_everything_is_delivered() {
        let mut catch_up = CatchUp::new(8);
        let room = RoomName::from("r");
        assert!(catch_up.is_idle());
        assert!(matches!(
            catch_up.offer(&room, at(5), |_| false),
            Offer::Deliver(_)
        ));
    }

    #[test]
    fn a_hole_during_an_outage_holds_the_room_until_released() {
        let mut catch_up = CatchUp::new(8);
        let (gap, fine) = (RoomName::from("gap"), RoomName::from("fine"));
        catch_up.medium_lost();
        // 4 was delivered: 5 follows on.
        assert!(matches!(
            catch_up.offer(&fine, at(5), |p| p.offset() == 4),
            Offer::Deliver(_)
        ));
        // 8 after an undelivered 7: held, and what follows too.
        assert!(matches!(
            catch_up.offer(&gap, at(8), |_| false),
            Offer::Held
        ));
        assert!(matches!(catch_up.offer(&gap, at(9), |_| true), Offer::Held));
        // The first message of an epoch, or one without a position, flows.
        assert!(matches!(
            catch_up.offer(&fine, at(1), |_| false),
            Offer::Deliver(_)
        ));
        let plain = (Envelope::new(NodeId::from("a"), SseMessage::new(0)), None);
        assert!(matches!(
            catch_up.offer(&fine, plain, |_| false),
            Offer::Deliver(_)
        ));
        let held = catch_up.release(&gap).expect("held");
        assert_eq!((offsets(&held), held.dropped), (vec![8, 9], 0));
        assert!(!catch_up.is_held(&gap) && !catch_up.is_idle());
        assert!(catch_up.end_outage(catch_up.losses()).is_empty());
        assert!(catch_up.is_idle());
    }

    #[test]
    fn held_rooms_are_bounded_and_end_with_the_outage() {
        let mut catch_up = CatchUp::new(2);
        let room = RoomName::from("r");
        catch_up.medium_lost();
        let losses = catch_up.losses();
        catch_up.hold(&room);
        for offset in 1..=4 {
            assert!(matches!(
                catch_up.offer(&room, at(offset), |_| true),
                Offer::Held
            ));
        }
        // Lost again before the catch-up ended: the outage goes on.
        catch_up.medium_lost();
        assert!(catch_up.end_outage(losses).is_empty());
        assert!(catch_up.is_held(&room));
        let released = catch_up.end_outage(catch_up.losses());
        let [(name, held)] = released.as_slice() else {
            panic!("one room released: {released:?}");
        };
        assert_eq!((name, offsets(held), held.dropped), (&room, vec![1, 2], 2));
        assert!(catch_up.is_idle());
    }

    #[test]
    fn the_board_flag_follows_the_state() {
        let board = CatchUpBoard::new(4);
        assert!(!board.is_active());
        board.lock().medium_lost();
        assert!(board.is_active());
        let losses = board.lock().losses();
        let _ = board.lock().end_outage(losses);
        assert!(!board.is_active());
    }
}
