//! Room histories kept in memory: a ring per room, shared by every node of a
//! [`MemoryBus`](crate::MemoryBus) (or owned by one
//! [`MemoryAdapter`](crate::MemoryAdapter)). Pure: the time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rooms_adapter::history::{HistoryEntry, HistoryPage, HistoryPolicy, Position, new_epoch};
use rooms_adapter::{Envelope, Error, RoomName};

/// Appends between two sweeps of expired rooms.
const SWEEP_EVERY: u64 = 1_024;

#[derive(Debug)]
struct Ring {
    /// Offset 0 of this history: its epoch, checked once.
    start: Position,
    latest: u64,
    entries: VecDeque<HistoryEntry>,
    last_write: Instant,
    ttl: Duration,
}

impl Ring {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_write) >= self.ttl
    }

    /// Stores `envelope` as the next message (its id set to the position if
    /// it has none), dropping the oldest beyond the policy's length.
    fn append(
        &mut self,
        envelope: &Envelope,
        policy: &HistoryPolicy,
        now: Instant,
    ) -> (Position, Envelope) {
        self.latest += 1;
        self.last_write = now;
        self.ttl = policy.ttl();
        let position = self.start.at(self.latest);
        let stored = match envelope.message().id {
            Some(_) => envelope.clone(),
            None => envelope.with_message_id(position.to_id()),
        };
        while self.entries.len() >= policy.max_len().max(1) {
            self.entries.pop_front();
        }
        self.entries.push_back(HistoryEntry {
            offset: self.latest,
            envelope: stored.clone(),
        });
        (position, stored)
    }
}

/// Every room's history.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    rooms: HashMap<RoomName, Ring>,
    appends: u64,
}

impl Histories {
    /// Stores `envelope` as the room's next message (its id set to the
    /// position if it has none); returns the position and the stored envelope.
    pub(crate) fn append(
        &mut self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
        now: Instant,
    ) -> Result<(Position, Envelope), Error> {
        self.appends += 1;
        if self.appends.is_multiple_of(SWEEP_EVERY) {
            self.rooms.retain(|_, ring| !ring.expired(now));
        }
        // One lookup for a room with a live history; no copy of the room's
        // name unless it starts one.
        if let Some(ring) = self.rooms.get_mut(room)
            && !ring.expired(now)
        {
            return Ok(ring.append(envelope, policy, now));
        }
        let epoch = new_epoch();
        let mut ring = Ring {
            start: Position::new(&epoch, 0)
                .ok_or_else(|| Error::Config(format!("history epoch {epoch:?} is not valid")))?,
            latest: 0,
            entries: VecDeque::new(),
            last_write: now,
            ttl: policy.ttl(),
        };
        let appended = ring.append(envelope, policy, now);
        self.rooms.insert(room.clone(), ring);
        Ok(appended)
    }

    /// At most `limit` of the room's entries after `after` (from the oldest
    /// for `None`).
    pub(crate) fn read(
        &mut self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
        now: Instant,
    ) -> HistoryPage {
        if self.rooms.get(room).is_some_and(|ring| ring.expired(now)) {
            self.rooms.remove(room);
        }
        let Some(ring) = self.rooms.get(room) else {
            return HistoryPage::empty();
        };
        let first = ring
            .entries
            .front()
            .map_or(ring.latest + 1, |entry| entry.offset);
        // Offsets are contiguous: the entry after `after` is at a known index.
        let skip = after.map_or(0, |after| {
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX)
        });
        let entries: Vec<HistoryEntry> = ring
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let next_after = HistoryPage::next_after_of(
            after,
            limit,
            entries.last().map(|entry| entry.offset),
            entries.len(),
            first,
            ring.latest,
        );
        HistoryPage {
            epoch: ring.start.epoch().to_owned(),
            latest: ring.latest,
            first,
            entries,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rooms_adapter::{NodeId, SseMessage};

    fn envelope(data: &str) -> Envelope {
        Envelope::new(NodeId::from("n"), SseMessage::new(data))
    }

    #[test]
    fn appends_number_trim_and_expire() -> Result<(), Error> {
        let policy = HistoryPolicy::new(3, Duration::from_secs(10))?;
        let mut histories = Histories::default();
        let room = RoomName::from("r");
        let start = Instant::now();
        let mut epoch = String::new();
        for n in 1..=5u64 {
            let (position, stored) = histories.append(&room, &envelope("x"), &policy, start)?;
            assert_eq!(position.offset(), n);
            assert_eq!(
                stored.message().id.as_deref(),
                Some(position.to_id().as_str())
            );
            epoch = position.epoch().to_owned();
        }
        let page = histories.read(&room, None, 100, start);
        assert_eq!((page.first, page.latest, page.entries.len()), (3, 5, 3));
        assert_eq!(page.next_after, None);
        assert_eq!(histories.read(&room, Some(4), 100, start).entries.len(), 1);
        let offsets =
            |page: &HistoryPage| page.entries.iter().map(|e| e.offset).collect::<Vec<_>>();
        let head = histories.read(&room, Some(1), 2, start);
        assert_eq!((offsets(&head), head.next_after), (vec![3, 4], Some(4)));
        let tail = histories.read(&room, head.next_after, 2, start);
        assert_eq!((offsets(&tail), tail.next_after), (vec![5], None));
        let probe = histories.read(&room, None, 0, start);
        assert_eq!((probe.entries.len(), probe.next_after), (0, Some(2)));
        let with_id = Envelope::new(NodeId::from("n"), SseMessage::new("y").with_id("app"));
        let (_, stored) = histories.append(&room, &with_id, &policy, start)?;
        assert_eq!(stored.message().id.as_deref(), Some("app"));

        let later = start + Duration::from_secs(10);
        let expired = histories.read(&room, None, 100, later);
        assert!(expired.entries.is_empty() && expired.latest == 0);
        let (position, _) = histories.append(&room, &envelope("z"), &policy, later)?;
        assert_eq!(position.offset(), 1);
        assert_ne!(position.epoch(), epoch);
        Ok(())
    }
}
