//! [`ListenTable`]: which rooms the listening connection should `LISTEN` to,
//! which it does, and what to send next. Pure (no I/O, the clock passed in);
//! the listener task drives it.
//!
//! - A subscribe makes a room *wanted*; it is `LISTEN`ed in the next batch
//!   and its waiters are answered when the batch is confirmed.
//! - An unsubscribe stops delivery at once; the `UNLISTEN` waits out the
//!   unsubscribe delay and is dropped if the room is wanted again meanwhile.
//! - Batches go one at a time on the one connection, so their order is the
//!   order the server applies them in.
//! - Losing the connection forgets every `LISTEN` (the server did too);
//!   wanted rooms are `LISTEN`ed again after the reconnect.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rooms_adapter::RoomName;

use crate::channel::ChannelMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listen {
    /// Not listened (or lost with the connection).
    No,
    /// In the batch in flight.
    Sent,
    /// Confirmed.
    Yes,
}

#[derive(Debug)]
struct Entry<W> {
    channel: String,
    wanted: bool,
    listen: Listen,
    /// Bumped by every unsubscribe: a scheduled `UNLISTEN` of an older
    /// generation is stale.
    generation: u64,
    waiters: Vec<W>,
}

/// What a subscribe needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Subscribed<W> {
    /// Already listened: answer the waiter now.
    Ready(W),
    /// The connection is down: answer "unavailable" now; the room stays
    /// wanted and is listened after the reconnect.
    Down(W),
    /// Queued for the next batch; the waiter is answered with it.
    Queued,
}

/// One round trip of `LISTEN`s and `UNLISTEN`s.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Channels to listen to.
    pub(crate) listen: Vec<String>,
    /// Channels to stop listening to.
    pub(crate) unlisten: Vec<String>,
}

/// The state of every room the listener knows. `W` is whatever answers a
/// waiting subscribe (a oneshot sender in the adapter, a number in tests).
/// Every operation but [`lost`](Self::lost) and
/// [`wanted_rooms`](Self::wanted_rooms) costs what it touches, not the
/// number of rooms: the task consults it on every event.
#[derive(Debug)]
pub(crate) struct ListenTable<W> {
    rooms: HashMap<RoomName, Entry<W>>,
    channels: ChannelMap,
    /// Wanted rooms not listened (nor in flight).
    to_listen: HashSet<RoomName>,
    /// The rooms of the batch in flight.
    sent: Vec<RoomName>,
    /// Scheduled `UNLISTEN`s, in deadline order (the delay is constant).
    leaving: VecDeque<(Instant, RoomName, u64)>,
    delay: Duration,
    connected: bool,
    in_flight: bool,
    wanted: usize,
}

impl<W> ListenTable<W> {
    /// An empty table, disconnected, with this unsubscribe delay.
    pub(crate) fn new(delay: Duration) -> Self {
        Self {
            rooms: HashMap::new(),
            channels: ChannelMap::default(),
            to_listen: HashSet::new(),
            sent: Vec::new(),
            leaving: VecDeque::new(),
            delay,
            connected: false,
            in_flight: false,
            wanted: 0,
        }
    }

    /// Wants `room` (on `channel`).
    pub(crate) fn subscribe(
        &mut self,
        room: &RoomName,
        channel: String,
        waiter: W,
    ) -> Subscribed<W> {
        let entry = match self.rooms.get_mut(room) {
            Some(entry) => entry,
            None => {
                self.channels.insert(channel.clone(), room.clone());
                self.rooms.entry(room.clone()).or_insert(Entry {
                    channel,
                    wanted: false,
                    listen: Listen::No,
                    generation: 0,
                    waiters: Vec::new(),
                })
            }
        };
        if !entry.wanted {
            entry.wanted = true;
            self.wanted += 1;
            // A scheduled UNLISTEN is stale from now on.
            entry.generation += 1;
        }
        if !self.connected {
            if entry.listen == Listen::No {
                self.to_listen.insert(room.clone());
            }
            return Subscribed::Down(waiter);
        }
        match entry.listen {
            Listen::Yes => Subscribed::Ready(waiter),
            Listen::Sent => {
                entry.waiters.push(waiter);
                Subscribed::Queued
            }
            Listen::No => {
                entry.waiters.push(waiter);
                self.to_listen.insert(room.clone());
                Subscribed::Queued
            }
        }
    }

    /// Stops wanting `room`: nothing is delivered for it from now on; the
    /// `UNLISTEN` is due after the delay. Returns the waiters of a
    /// subscribe not sent yet, to answer now (there is nothing to wait for).
    pub(crate) fn unsubscribe(&mut self, room: &RoomName, now: Instant) -> Vec<W> {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if !entry.wanted {
            return Vec::new();
        }
        entry.wanted = false;
        self.wanted -= 1;
        entry.generation += 1;
        if entry.listen == Listen::No {
            let waiters = std::mem::take(&mut entry.waiters);
            let channel = entry.channel.clone();
            self.rooms.remove(room);
            self.channels.remove(&channel);
            self.to_listen.remove(room);
            return waiters;
        }
        self.leaving
            .push_back((now + self.delay, room.clone(), entry.generation));
        Vec::new()
    }

    /// The room of a notification's channel, if it is wanted now.
    pub(crate) fn deliverable(&self, channel: &str) -> Option<&RoomName> {
        let room = self.channels.room(channel)?;
        self.rooms
            .get(room)
            .is_some_and(|entry| entry.wanted)
            .then_some(room)
    }

    /// Whether `room` is wanted now.
    pub(crate) fn is_wanted(&self, room: &RoomName) -> bool {
        self.rooms.get(room).is_some_and(|entry| entry.wanted)
    }

    /// How many rooms are wanted.
    pub(crate) fn wanted_count(&self) -> usize {
        self.wanted
    }

    /// Every wanted room, sorted.
    pub(crate) fn wanted_rooms(&self) -> Vec<RoomName> {
        let mut rooms: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|(_, entry)| entry.wanted)
            .map(|(room, _)| room.clone())
            .collect();
        rooms.sort();
        rooms
    }

    /// Whether every wanted room is listened (and nothing is in flight).
    pub(crate) fn settled(&self) -> bool {
        self.connected && !self.in_flight && self.to_listen.is_empty()
    }

    /// The earliest pending `UNLISTEN` (possibly a stale one: waking up
    /// early is harmless).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leaving.front().map(|(at, _, _)| *at)
    }

    /// The next batch, at most `max` statements, if the connection is up,
    /// nothing is in flight and there is work; marks it in flight.
    pub(crate) fn take_batch(&mut self, now: Instant, max: usize) -> Option<Batch> {
        if !self.connected || self.in_flight {
            return None;
        }
        let mut batch = Batch::default();
        while batch.unlisten.len() < max {
            match self.leaving.front() {
                Some((at, _, _)) if *at <= now => {}
                _ => break,
            }
            let Some((_, room, generation)) = self.leaving.pop_front() else {
                break;
            };
            let due = self.rooms.get(&room).is_some_and(|entry| {
                !entry.wanted && entry.generation == generation && entry.listen != Listen::Sent
            });
            if !due {
                continue;
            }
            if let Some(entry) = self.rooms.remove(&room) {
                self.channels.remove(&entry.channel);
                if entry.listen == Listen::Yes {
                    batch.unlisten.push(entry.channel);
                }
            }
        }
        let room_left = max.saturating_sub(batch.unlisten.len());
        let picked: Vec<RoomName> = self.to_listen.iter().take(room_left).cloned().collect();
        for room in picked {
            self.to_listen.remove(&room);
            if let Some(entry) = self.rooms.get_mut(&room) {
                entry.listen = Listen::Sent;
                batch.listen.push(entry.channel.clone());
                self.sent.push(room);
            }
        }
        if batch.listen.is_empty() && batch.unlisten.is_empty() {
            return None;
        }
        self.in_flight = true;
        Some(batch)
    }

    /// The batch in flight was confirmed: its rooms are listened; returns
    /// the waiters to answer.
    pub(crate) fn batch_done(&mut self) -> Vec<W> {
        self.in_flight = false;
        let mut waiters = Vec::new();
        for room in std::mem::take(&mut self.sent) {
            if let Some(entry) = self.rooms.get_mut(&room)
                && entry.listen == Listen::Sent
            {
                entry.listen = Listen::Yes;
                waiters.append(&mut entry.waiters);
            }
        }
        waiters
    }

    /// The connection is up (again): wanted rooms are listened in the next
    /// batches.
    pub(crate) fn connected(&mut self) {
        self.connected = true;
    }

    /// The connection was lost: every `LISTEN` is forgotten, unwanted rooms
    /// are dropped; returns the waiters to answer "unavailable" (their rooms
    /// stay wanted).
    pub(crate) fn lost(&mut self) -> Vec<W> {
        self.connected = false;
        self.in_flight = false;
        self.sent.clear();
        self.leaving.clear();
        let mut waiters = Vec::new();
        let mut gone = Vec::new();
        for (room, entry) in &mut self.rooms {
            entry.listen = Listen::No;
            waiters.append(&mut entry.waiters);
            if entry.wanted {
                self.to_listen.insert(room.clone());
            } else {
                gone.push(room.clone());
            }
        }
        for room in gone {
            if let Some(entry) = self.rooms.remove(&room) {
                self.channels.remove(&entry.channel);
            }
        }
        waiters
    }

    /// Whether the connection is up.
    #[cfg(test)]
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::from(name)
    }

    fn channel(name: &str) -> String {
        format!("c_{name}")
    }

    fn table() -> (ListenTable<u32>, Instant) {
        let mut table = ListenTable::new(Duration::from_millis(500));
        table.connected();
        (table, Instant::now())
    }

    #[test]
    fn subscribes_are_batched_and_answered_when_confirmed() {
        let (mut table, now) = table();
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 1),
            Subscribed::Queued
        );
        assert_eq!(
            table.subscribe(&room("b"), channel("b"), 2),
            Subscribed::Queued
        );
        let mut batch = table.take_batch(now, 100).unwrap();
        batch.listen.sort();
        assert_eq!(batch.listen, vec![channel("a"), channel("b")]);
        // One batch at a time.
        assert_eq!(
            table.subscribe(&room("c"), channel("c"), 3),
            Subscribed::Queued
        );
        assert!(table.take_batch(now, 100).is_none());
        let mut answered = table.batch_done();
        answered.sort();
        assert_eq!(answered, vec![1, 2]);
        assert!(!table.settled());
        assert_eq!(
            table.take_batch(now, 100).unwrap().listen,
            vec![channel("c")]
        );
        assert_eq!(table.batch_done(), vec![3]);
        assert!(table.settled());
        // Already listened: answered at once, no batch.
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 4),
            Subscribed::Ready(4)
        );
        assert!(table.take_batch(now, 100).is_none());
        assert_eq!(table.wanted_count(), 3);
    }

    #[test]
    fn batches_are_capped() {
        let (mut table, now) = table();
        for i in 0..5u32 {
            table.subscribe(&room(&i.to_string()), channel(&i.to_string()), i);
        }
        assert_eq!(table.take_batch(now, 2).unwrap().listen.len(), 2);
        assert_eq!(table.batch_done().len(), 2);
        assert_eq!(table.take_batch(now, 2).unwrap().listen.len(), 2);
        table.batch_done();
        assert_eq!(table.take_batch(now, 2).unwrap().listen.len(), 1);
        table.batch_done();
        assert!(table.settled());
    }

    #[test]
    fn unsubscribe_stops_delivery_at_once_and_unlistens_after_the_delay() {
        let (mut table, now) = table();
        table.subscribe(&room("a"), channel("a"), 1);
        table.take_batch(now, 100);
        table.batch_done();
        assert_eq!(table.deliverable(&channel("a")), Some(&room("a")));
        table.unsubscribe(&room("a"), now);
        assert_eq!(table.deliverable(&channel("a")), None);
        assert_eq!(table.wanted_count(), 0);
        assert_eq!(
            table.next_deadline(),
            Some(now + Duration::from_millis(500))
        );
        assert!(table.take_batch(now, 100).is_none(), "not due yet");
        let later = now + Duration::from_millis(500);
        assert_eq!(
            table.take_batch(later, 100).unwrap(),
            Batch {
                listen: vec![],
                unlisten: vec![channel("a")]
            }
        );
        table.batch_done();
        assert_eq!(table.next_deadline(), None);
        // Idempotent.
        table.unsubscribe(&room("a"), later);
        table.unsubscribe(&room("never"), later);
        assert_eq!(table.wanted_count(), 0);
    }

    #[test]
    fn a_room_that_refills_within_the_delay_keeps_its_listen() {
        let (mut table, now) = table();
        table.subscribe(&room("a"), channel("a"), 1);
        table.take_batch(now, 100);
        table.batch_done();
        table.unsubscribe(&room("a"), now);
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 2),
            Subscribed::Ready(2)
        );
        assert!(
            table
                .take_batch(now + Duration::from_secs(10), 100)
                .is_none()
        );
        assert_eq!(table.deliverable(&channel("a")), Some(&room("a")));
    }

    #[test]
    fn a_room_relistened_while_its_unlisten_is_in_flight_is_listened_again() {
        let (mut table, now) = table();
        table.subscribe(&room("a"), channel("a"), 1);
        table.take_batch(now, 100);
        table.batch_done();
        table.unsubscribe(&room("a"), now);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            table.take_batch(later, 100).unwrap().unlisten,
            vec![channel("a")]
        );
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 2),
            Subscribed::Queued
        );
        table.batch_done();
        assert_eq!(
            table.take_batch(later, 100).unwrap().listen,
            vec![channel("a")]
        );
        assert_eq!(table.batch_done(), vec![2]);
    }

    #[test]
    fn never_listened_rooms_leave_at_once() {
        let mut table: ListenTable<u32> = ListenTable::new(Duration::from_millis(500));
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 1),
            Subscribed::Down(1)
        );
        table.unsubscribe(&room("a"), Instant::now());
        assert_eq!(table.wanted_count(), 0);
        assert!(table.wanted_rooms().is_empty());
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn a_subscribe_not_sent_yet_is_answered_by_its_unsubscribe() {
        let (mut table, now) = table();
        assert_eq!(
            table.subscribe(&room("a"), channel("a"), 1),
            Subscribed::Queued
        );
        assert_eq!(table.unsubscribe(&room("a"), now), vec![1]);
        assert!(table.take_batch(now, 100).is_none());
        assert!(table.settled());
        assert_eq!(table.deliverable(&channel("a")), None);
    }

    #[test]
    fn losing_the_connection_relistens_wanted_rooms_only() {
        let (mut table, now) = table();
        table.subscribe(&room("keep"), channel("keep"), 1);
        table.subscribe(&room("gone"), channel("gone"), 2);
        table.take_batch(now, 100);
        table.batch_done();
        table.unsubscribe(&room("gone"), now);
        table.subscribe(&room("waiting"), channel("waiting"), 3);
        table.take_batch(now, 100);
        assert_eq!(table.lost(), vec![3]);
        assert!(!table.is_connected());
        // While down: subscribes are answered "down", the room stays wanted.
        assert_eq!(
            table.subscribe(&room("new"), channel("new"), 4),
            Subscribed::Down(4)
        );
        assert!(table.take_batch(now, 100).is_none());
        table.connected();
        let mut batch = table.take_batch(now, 100).unwrap();
        batch.listen.sort();
        assert_eq!(
            batch.listen,
            vec![channel("keep"), channel("new"), channel("waiting")]
        );
        assert!(batch.unlisten.is_empty());
        assert!(table.batch_done().is_empty());
        assert!(table.settled());
        assert_eq!(
            table.wanted_rooms(),
            vec![room("keep"), room("new"), room("waiting")]
        );
        assert_eq!(table.deliverable(&channel("gone")), None);
    }
}
