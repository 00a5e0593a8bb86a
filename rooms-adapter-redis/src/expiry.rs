//! When a publish with history asks Redis how long its room's keys have
//! left. Pure: the time is passed in.
//!
//! The publish script keeps both keys of a room's history expiring between
//! the ttl plus half the slack (the *low* mark) and the ttl plus the slack
//! after the room's latest message, where the slack is a sixteenth of the
//! ttl: when what is left (`PTTL`) is outside that window it sets the ttl
//! plus the slack. Once a node has seen the keys inside the window (or
//! refreshed them), they have at least the ttl left for the next half slack,
//! so its publishes to that room skip the `PTTL` call (one of the script's
//! five) until then: a busy room asks about once per 32nd of the ttl.
//!
//! The record is per node and bounded: when it holds [`CAPACITY`] rooms,
//! rooms whose half slack has passed are forgotten; if all are recent, a
//! new room is not recorded (its publishes keep checking, as before).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most rooms whose last check a node remembers.
pub(crate) const CAPACITY: usize = 4_096;

/// The slack: a sixteenth of the ttl, at least 1 ms.
pub(crate) fn slack_ms(ttl_ms: u128) -> u128 {
    (ttl_ms.max(1) / 16).max(1)
}

/// The expiry the script sets: the ttl plus the slack.
pub(crate) fn expiry_ms(ttl_ms: u128) -> u128 {
    ttl_ms.max(1).saturating_add(slack_ms(ttl_ms))
}

/// The low mark: below it, the script refreshes the expiry.
pub(crate) fn low_ms(ttl_ms: u128) -> u128 {
    ttl_ms.max(1).saturating_add(slack_ms(ttl_ms) / 2)
}

/// How long after a check the keys are known to have at least the ttl left.
fn quiet(ttl_ms: u128) -> Duration {
    Duration::from_millis(u64::try_from(slack_ms(ttl_ms) / 2).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Copy)]
struct Check {
    at: Instant,
    ttl_ms: u128,
}

impl Check {
    fn covers(&self, ttl_ms: u128, now: Instant) -> bool {
        self.ttl_ms == ttl_ms && now.saturating_duration_since(self.at) < quiet(ttl_ms)
    }
}

/// The last expiry check of each room this node publishes to with history.
#[derive(Debug, Default)]
pub(crate) struct ExpiryChecks {
    last: HashMap<String, Check>,
}

impl ExpiryChecks {
    /// Whether a publish to `channel` at `now` under a ttl of `ttl_ms` must
    /// check the expiry: no check of this room under this ttl within the
    /// last half slack.
    pub(crate) fn due(&self, channel: &str, ttl_ms: u128, now: Instant) -> bool {
        !self
            .last
            .get(channel)
            .is_some_and(|check| check.covers(ttl_ms, now))
    }

    /// Records a check of `channel` under `ttl_ms` sent at `at` (taken
    /// before the script was sent, so the record never outlives what it
    /// knows).
    pub(crate) fn checked(&mut self, channel: &str, ttl_ms: u128, at: Instant) {
        let check = Check { at, ttl_ms };
        if let Some(last) = self.last.get_mut(channel) {
            *last = check;
            return;
        }
        if self.last.len() >= CAPACITY {
            self.last.retain(|_, last| last.covers(last.ttl_ms, at));
            if self.last.len() >= CAPACITY {
                return;
            }
        }
        self.last.insert(channel.to_owned(), check);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u128 = 60_000;

    #[test]
    fn marks_of_the_window() {
        assert_eq!(slack_ms(TTL), 3_750);
        assert_eq!(low_ms(TTL), 61_875);
        assert_eq!(expiry_ms(TTL), 63_750);
        // A tiny ttl still has a window.
        assert_eq!((slack_ms(0), low_ms(0), expiry_ms(0)), (1, 1, 2));
        assert_eq!(expiry_ms(u128::MAX), u128::MAX);
    }

    #[test]
    fn a_check_covers_half_the_slack_under_the_same_ttl() {
        let mut checks = ExpiryChecks::default();
        let start = Instant::now();
        assert!(checks.due("room", TTL, start));
        checks.checked("room", TTL, start);
        assert!(!checks.due("room", TTL, start));
        let quiet = Duration::from_millis(1_875);
        assert!(!checks.due("room", TTL, start + quiet - Duration::from_millis(1)));
        assert!(checks.due("room", TTL, start + quiet));
        // Another ttl (a policy change) checks at once; another room too.
        assert!(checks.due("room", TTL / 2, start));
        assert!(checks.due("other", TTL, start));
        // A later check moves the mark.
        checks.checked("room", TTL, start + quiet);
        assert!(!checks.due("room", TTL, start + quiet));
    }

    #[test]
    fn bounded_forgetting_stale_rooms_first() {
        let mut checks = ExpiryChecks::default();
        let start = Instant::now();
        for n in 0..CAPACITY {
            checks.checked(&format!("room-{n}"), TTL, start);
        }
        assert_eq!(checks.len(), CAPACITY);
        // All recent: a new room is not recorded, and keeps checking.
        checks.checked("new", TTL, start);
        assert_eq!(checks.len(), CAPACITY);
        assert!(checks.due("new", TTL, start));
        assert!(!checks.due("room-0", TTL, start));
        // Once their half slack has passed, the stale ones make room.
        let later = start + Duration::from_secs(2);
        checks.checked("new", TTL, later);
        assert_eq!(checks.len(), 1);
        assert!(!checks.due("new", TTL, later));
    }
}
