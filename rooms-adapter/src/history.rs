//! Per-room history and recovery: what a client that reconnects with
//! `Last-Event-ID` missed.
//!
//! With history on ([`RoomsBuilder::history`](crate::RoomsBuilder::history)),
//! a broadcast is stored in the room's history by the medium (adapters that
//! declare [`AdapterCapabilities::history`](crate::AdapterCapabilities::history)),
//! which gives it the next [`Position`] of the room: an epoch (which changes
//! when the room's history is lost) and an offset. A message without an id of
//! its own gets the position as its SSE `id`, so the `Last-Event-ID` a browser
//! sends back says where to resume ([`Rooms::join_from`](crate::Rooms::join_from)).
//! Messages with an application id keep it and are found by it.
//!
//! ```
//! use rooms_adapter::history::Position;
//!
//! let position = Position::new("0f3a9c21b7d4", 17).expect("a 12-digit hex epoch");
//! let id = position.to_id();
//! assert_eq!(id, "h1.0f3a9c21b7d4.0000000000000011");
//! assert_eq!(Position::parse(&id), Some(position));
//! assert_eq!(Position::parse("an application id"), None);
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::wire::Envelope;

/// Length of an epoch: hex digits.
pub const EPOCH_LEN: usize = 12;
/// Length of every id made by [`Position::to_id`].
pub const POSITION_ID_LEN: usize = 3 + EPOCH_LEN + 1 + 16;

/// Most messages a room's history may keep.
pub const MAX_HISTORY_LEN: usize = 1_000_000;
/// Longest a room's history may be kept after its last message.
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most entries the engine asks for in one
/// [`read_history`](crate::RoomAdapter::read_history): a resume or a catch-up
/// after an outage reads page by page, so no read holds more than this many
/// messages at once.
pub const READ_PAGE: usize = 256;

/// Where a message sits in its room's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    epoch: Arc<str>,
    offset: u64,
}

impl Position {
    /// A position; the epoch must be [`EPOCH_LEN`] lowercase hex digits.
    pub fn new(epoch: &str, offset: u64) -> Option<Position> {
        valid_epoch(epoch).then(|| Position {
            epoch: Arc::from(epoch),
            offset,
        })
    }

    /// The history's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The message's offset in the room (the first message is 1).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The SSE id: `h1.{epoch}.{offset as 16 hex digits}`, always
    /// [`POSITION_ID_LEN`] bytes (so a medium can write it into an encoded
    /// envelope in place).
    pub fn to_id(&self) -> String {
        // By hand into a fixed buffer: `format!` (or a `push` per digit)
        // costs a measurable share of a broadcast with history (one or two
        // ids a message).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [b'.'; POSITION_ID_LEN];
        let (head, digits) = id.split_at_mut(POSITION_ID_LEN - 16);
        if let Some(prefix) = head.get_mut(..3) {
            prefix.copy_from_slice(b"h1.");
        }
        if let Some(epoch) = head.get_mut(3..3 + EPOCH_LEN) {
            epoch.copy_from_slice(self.epoch.as_bytes());
        }
        let mut offset = self.offset;
        for digit in digits.iter_mut().rev() {
            *digit = HEX[(offset & 0xf) as usize];
            offset >>= 4;
        }
        // ASCII by construction (the epoch is validated hex).
        std::str::from_utf8(&id)
            .map(str::to_owned)
            .unwrap_or_default()
    }

    /// The position `offset` in the same history (no copy or check of the
    /// epoch).
    #[must_use]
    pub fn at(&self, offset: u64) -> Position {
        Position {
            epoch: Arc::clone(&self.epoch),
            offset,
        }
    }

    /// The position an id made by [`to_id`](Self::to_id) names; `None` for
    /// any other id.
    pub fn parse(id: &str) -> Option<Position> {
        let rest = id.strip_prefix("h1.")?;
        let (epoch, offset) = rest.split_once('.')?;
        if offset.len() != 16 || !offset.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let offset = u64::from_str_radix(offset, 16).ok()?;
        Position::new(epoch, offset)
    }
}

fn valid_epoch(epoch: &str) -> bool {
    epoch.len() == EPOCH_LEN
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random epoch.
pub fn new_epoch() -> String {
    let mut epoch = uuid::Uuid::new_v4().simple().to_string();
    epoch.truncate(EPOCH_LEN);
    epoch
}

/// How much history a room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    max_len: usize,
    ttl: Duration,
}

impl HistoryPolicy {
    /// Keep at most `max_len` messages (1 to [`MAX_HISTORY_LEN`]), and the
    /// room's history for `ttl` after its last message (1 s to
    /// [`MAX_HISTORY_TTL`]).
    pub fn new(max_len: usize, ttl: Duration) -> Result<HistoryPolicy, Error> {
        if !(1..=MAX_HISTORY_LEN).contains(&max_len) {
            return Err(Error::Config(format!(
                "history max_len must be within 1..={MAX_HISTORY_LEN}, got {max_len}"
            )));
        }
        if !(Duration::from_secs(1)..=MAX_HISTORY_TTL).contains(&ttl) {
            return Err(Error::Config(format!(
                "history ttl must be within 1s..={MAX_HISTORY_TTL:?}, got {ttl:?}"
            )));
        }
        Ok(HistoryPolicy { max_len, ttl })
    }

    /// Most messages kept.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// How long the history lives after the room's last message.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// One stored message.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its offset.
    pub offset: u64,
    /// The envelope, its message id set (to the position, if it had none).
    pub envelope: Envelope,
}

/// What a medium holds of a room's history now: one page of it.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The current epoch (a fresh one if the room has no history).
    pub epoch: String,
    /// The offset of the last message ever stored in this epoch (0 if none).
    pub latest: u64,
    /// The entries asked for, oldest first: at most the read's `limit`.
    pub entries: Vec<HistoryEntry>,
    /// The offset of the oldest entry still kept (`latest + 1` if none):
    /// anything older was trimmed.
    pub first: u64,
    /// `Some(offset)` when entries after this page follow: read the next
    /// page after `offset` (the last entry this page covered, including one
    /// the adapter skipped because it could not decode it); `None` when the
    /// page reached the latest entry.
    pub next_after: Option<u64>,
}

impl HistoryPage {
    /// An empty page of a room without history: a fresh epoch, nothing
    /// stored.
    pub fn empty() -> HistoryPage {
        HistoryPage {
            epoch: new_epoch(),
            latest: 0,
            entries: Vec::new(),
            first: 1,
            next_after: None,
        }
    }

    /// Where the next page starts for a read of at most `limit` entries
    /// after `after` that got raw entries up to `last_read` (the offset of
    /// the last entry read, `None` if none), `count` of them, in a history
    /// whose entries run from `first` to `latest`: for adapters filling
    /// [`next_after`](Self::next_after).
    ///
    /// ```
    /// use rooms_adapter::history::HistoryPage;
    ///
    /// // Entries 1..=10 kept, 4 read after 2: 3..=6, more follow after 6.
    /// assert_eq!(HistoryPage::next_after_of(Some(2), 4, Some(6), 4, 1, 10), Some(6));
    /// // The last page.
    /// assert_eq!(HistoryPage::next_after_of(Some(6), 4, Some(10), 4, 1, 10), None);
    /// // A probe (limit 0) of a history with entries after `after`.
    /// assert_eq!(HistoryPage::next_after_of(None, 0, None, 0, 3, 10), Some(2));
    /// ```
    pub fn next_after_of(
        after: Option<u64>,
        limit: usize,
        last_read: Option<u64>,
        count: usize,
        first: u64,
        latest: u64,
    ) -> Option<u64> {
        let from = after.unwrap_or(0).max(first.saturating_sub(1));
        let reached = last_read.unwrap_or(from);
        (count >= limit && reached < latest).then_some(reached)
    }
}

/// How a connection joining with a `Last-Event-ID` continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePlan {
    /// Replay the page's entries from this index on (possibly none), then
    /// live messages.
    Replay {
        /// Index into [`HistoryPage::entries`].
        from: usize,
    },
    /// The history cannot cover the id: one explicit resync event, then live
    /// messages.
    Gap {
        /// Why, for the event and logs.
        reason: GapReason,
    },
}

/// Why history could not cover a `Last-Event-ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapReason {
    /// The position is from another epoch: the room's history was lost
    /// (expired, flushed) since.
    EpochChanged,
    /// Messages after the position were trimmed already.
    Trimmed,
    /// Neither a position nor the id of a message still in the history.
    UnknownId,
    /// The history could not be read (the medium is down).
    Unavailable,
}

impl GapReason {
    /// A short name: `epoch_changed`, `trimmed`, `unknown_id` or
    /// `unavailable`.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::EpochChanged => "epoch_changed",
            GapReason::Trimmed => "trimmed",
            GapReason::UnknownId => "unknown_id",
            GapReason::Unavailable => "unavailable",
        }
    }
}

/// Decides how a connection that last saw `last_event_id` resumes from
/// `page`: for a position, the first page read after it; for an
/// application id, a page read from the oldest entry kept (the engine reads
/// the following pages while the id is not found,
/// [`GapReason::UnknownId`] with [`next_after`](HistoryPage::next_after)
/// set). Pure: no I/O.
pub fn plan_resume(page: &HistoryPage, last_event_id: &str) -> ResumePlan {
    match Position::parse(last_event_id) {
        Some(position) => {
            if position.epoch() != page.epoch || position.offset() > page.latest {
                return ResumePlan::Gap {
                    reason: GapReason::EpochChanged,
                };
            }
            // Every message after the position must still be kept.
            if position.offset().saturating_add(1) < page.first {
                return ResumePlan::Gap {
                    reason: GapReason::Trimmed,
                };
            }
            let from = page
                .entries
                .iter()
                .position(|entry| entry.offset > position.offset())
                .unwrap_or(page.entries.len());
            ResumePlan::Replay { from }
        }
        None => match page
            .entries
            .iter()
            .position(|entry| entry.envelope.message().id.as_deref() == Some(last_event_id))
        {
            Some(index) => ResumePlan::Replay { from: index + 1 },
            None => ResumePlan::Gap {
                reason: GapReason::UnknownId,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::message::SseMessage;

    const EPOCH: &str = "00000000abcd";

    fn page(first: u64, latest: u64) -> HistoryPage {
        let entries = (first..=latest)
            .map(|offset| {
                let id = match offset {
                    5 => "app-5".to_owned(),
                    _ => Position::new(EPOCH, offset)
                        .map(|p| p.to_id())
                        .unwrap_or_default(),
                };
                HistoryEntry {
                    offset,
                    envelope: Envelope::new(NodeId::from("n"), SseMessage::new(offset).with_id(id)),
                }
            })
            .collect();
        HistoryPage {
            epoch: EPOCH.into(),
            latest,
            entries,
            first,
            next_after: None,
        }
    }

    fn id(offset: u64) -> String {
        Position::new(EPOCH, offset)
            .map(|p| p.to_id())
            .unwrap_or_default()
    }

    #[test]
    fn ids_round_trip_and_other_ids_are_not_positions() {
        for offset in [0, 1, 255, 0xdead_beef, u64::MAX] {
            let position = Position::new(EPOCH, offset).expect("valid epoch");
            assert_eq!(position.to_id(), format!("h1.{EPOCH}.{offset:016x}"));
            assert_eq!(position.to_id().len(), POSITION_ID_LEN);
            assert_eq!(
                Position::new(EPOCH, 3).map(|p| p.at(offset)),
                Some(position.clone())
            );
            assert_eq!(Position::parse(&position.to_id()), Some(position));
        }
        for other in [
            "",
            "h1.",
            "h1.00000000abcd.1",
            "h1.00000000ABCD.0000000000000001",
            "h1.00000000abc.00000000000000001",
            "h1.00000000abcd.000000000000000g",
            "h2.00000000abcd.0000000000000001",
            "h1.00000000abcd.0000000000000001.",
        ] {
            assert_eq!(Position::parse(other), None, "{other:?}");
        }
        assert_eq!(new_epoch().len(), EPOCH_LEN);
        assert!(Position::new(&new_epoch(), 1).is_some());
    }

    #[test]
    fn a_position_in_range_replays_what_follows() {
        let page = page(3, 9);
        assert_eq!(plan_resume(&page, &id(3)), ResumePlan::Replay { from: 1 });
        assert_eq!(plan_resume(&page, &id(2)), ResumePlan::Replay { from: 0 });
        assert_eq!(plan_resume(&page, &id(9)), ResumePlan::Replay { from: 7 });
        assert_eq!(plan_resume(&page, "app-5"), ResumePlan::Replay { from: 3 });
    }

    #[test]
    fn what_history_cannot_cover_is_a_gap_with_its_reason() {
        let page = page(3, 9);
        let gap = |reason| ResumePlan::Gap { reason };
        assert_eq!(plan_resume(&page, &id(1)), gap(GapReason::Trimmed));
        assert_eq!(plan_resume(&page, &id(10)), gap(GapReason::EpochChanged));
        let other = Position::new("ffffffffffff", 4)
            .map(|p| p.to_id())
            .unwrap_or_default();
        assert_eq!(plan_resume(&page, &other), gap(GapReason::EpochChanged));
        assert_eq!(plan_resume(&page, "app-1"), gap(GapReason::UnknownId));
    }

    #[test]
    fn an_empty_history_of_the_same_epoch_is_up_to_date() {
        let mut empty = page(8, 7);
        empty.entries.clear();
        assert_eq!(plan_resume(&empty, &id(7)), ResumePlan::Replay { from: 0 });
        assert_eq!(
            plan_resume(&empty, &id(6)),
            ResumePlan::Gap {
                reason: GapReason::Trimmed
            }
        );
    }

    #[test]
    fn pages_say_where_the_next_one_starts() {
        // Entries 3..=9 kept.
        let next =
            |after, limit, last, count| HistoryPage::next_after_of(after, limit, last, count, 3, 9);
        assert_eq!(next(None, 4, Some(6), 4), Some(6));
        assert_eq!(next(Some(6), 4, Some(9), 3), None);
        assert_eq!(next(Some(5), 4, Some(9), 4), None);
        assert_eq!(next(Some(9), 4, None, 0), None);
        assert_eq!(next(Some(1), 0, None, 0), Some(2));
        assert_eq!(next(Some(9), 0, None, 0), None);
    }

    #[test]
    fn policies_are_bounded() {
        assert!(HistoryPolicy::new(100, Duration::from_secs(60)).is_ok());
        assert!(
            matches!(HistoryPolicy::new(0, Duration::from_secs(60)), Err(Error::Config(m)) if m.contains("max_len"))
        );
        assert!(
            matches!(HistoryPolicy::new(1, Duration::ZERO), Err(Error::Config(m)) if m.contains("ttl"))
        );
    }
}
