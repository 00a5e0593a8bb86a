//! Checking deliveries against the posts, outside the outage window.

use super::Options;
use crate::load::{ClientReport, PostRecord};

/// The send times (µs since base) in which deliveries may be missing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Window {
    pub(super) fn contains(&self, us: u64) -> bool {
        (self.start..=self.end).contains(&us)
    }
}

#[derive(Debug, Default)]
pub(super) struct Deliveries {
    pub(super) messages_outside: u64,
    pub(super) expected_outside: u64,
    pub(super) received_outside: u64,
    pub(super) missing: u64,
    pub(super) expected_inside: u64,
    pub(super) received_inside: u64,
    pub(super) posts_outside_ok: u64,
    pub(super) posts_outside_failed: u64,
    pub(super) posts_inside_ok: u64,
    pub(super) posts_inside_failed: u64,
    pub(super) duplicates: u64,
    pub(super) foreign: u64,
    pub(super) without_id: u64,
    pub(super) malformed: u64,
    /// Up to a few posts refused outside the window: (seq, sent µs, done µs, status).
    pub(super) refused_examples: Vec<(u64, u64, u64, Option<u16>)>,
    /// Up to a few messages with missing deliveries: (seq, sent µs, received, members).
    pub(super) missing_examples: Vec<(u64, u64, u64, u64)>,
}

pub(super) fn tally_deliveries(
    options: &Options,
    records: &[PostRecord],
    reports: &[ClientReport],
    window: Window,
) -> Deliveries {
    let rooms = options.rooms as u64;
    let mut by_room: Vec<Vec<&ClientReport>> = vec![Vec::new(); options.rooms];
    let mut out = Deliveries::default();
    for report in reports {
        if let Some(room) = by_room.get_mut(report.room as usize) {
            room.push(report);
        }
        out.duplicates += report.duplicates;
        out.foreign += report.foreign;
        out.malformed += report.malformed;
    }
    for record in records {
        // Outside only if both the send and the answer are outside.
        let inside = window.contains(record.sent_us)
            || window.contains(record.done_us)
            || (record.sent_us < window.start && record.done_us > window.end);
        match (inside, record.accepted()) {
            (false, true) => out.posts_outside_ok += 1,
            (false, false) => {
                out.posts_outside_failed += 1;
                if out.refused_examples.len() < 5 {
                    out.refused_examples.push((
                        record.seq,
                        record.sent_us,
                        record.done_us,
                        record.status,
                    ));
                }
            }
            (true, true) => out.posts_inside_ok += 1,
            (true, false) => out.posts_inside_failed += 1,
        }
        if !record.accepted() {
            continue;
        }
        let members = &by_room[(record.seq % rooms) as usize];
        let number = record.seq / rooms;
        // Accepted posts must arrive with an id; a refused one (503, the
        // medium down) is delivered on its node only, without a history
        // position, and is not counted.
        out.without_id += members
            .iter()
            .filter(|m| m.without_id_numbers.contains(number))
            .count() as u64;
        let received = members
            .iter()
            .filter(|m| m.received.contains(number))
            .count() as u64;
        if inside {
            out.expected_inside += members.len() as u64;
            out.received_inside += received;
        } else {
            out.messages_outside += 1;
            out.expected_outside += members.len() as u64;
            out.received_outside += received;
            out.missing += members.len() as u64 - received;
            if received < members.len() as u64 && out.missing_examples.len() < 5 {
                out.missing_examples.push((
                    record.seq,
                    record.sent_us,
                    received,
                    members.len() as u64,
                ));
            }
        }
    }
    out
}
