//! The time the listener spends not reading its connection on purpose
//! (backpressure), kept apart from the time it waits for the server.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The time the listener spends not reading its connection on purpose
/// (backpressure), so that the timers judging the server (the probe's
/// deadline, a subscribe's timeout) leave it out. While paused, the
/// listener holds back.
#[derive(Debug, Default)]
pub(crate) struct Pauses {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Paused time before the current pause.
    before: Duration,
    /// Since when it is paused; `None` while reading.
    since: Option<Instant>,
}

impl Pauses {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the listener is not reading now.
    pub(crate) fn is_paused(&self) -> bool {
        self.state().since.is_some()
    }

    /// The listener stops reading at `at` (no-op while paused).
    pub(crate) fn pause(&self, at: Instant) {
        self.state().since.get_or_insert(at);
    }

    /// The listener reads again at `at`; returns how long it paused.
    pub(crate) fn resume(&self, at: Instant) -> Duration {
        let mut state = self.state();
        let paused = state
            .since
            .take()
            .map_or(Duration::ZERO, |since| at.saturating_duration_since(since));
        state.before += paused;
        paused
    }

    /// All the time paused up to `now`, the current pause included.
    pub(crate) fn total(&self, now: Instant) -> Duration {
        let state = self.state();
        state.before
            + state
                .since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_add_up_and_count_the_current_one() {
        let pauses = Pauses::default();
        assert!(!pauses.is_paused());
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(pauses.total(at(1)), Duration::ZERO);
        pauses.pause(at(1));
        assert!(pauses.is_paused());
        assert_eq!(pauses.total(at(2)), Duration::from_secs(1));
        assert_eq!(pauses.resume(at(3)), Duration::from_secs(2));
        assert!(!pauses.is_paused());
        assert_eq!(pauses.total(at(9)), Duration::from_secs(2));
        // A pause while paused keeps the first start.
        pauses.pause(at(10));
        pauses.pause(at(11));
        assert_eq!(pauses.total(at(12)), Duration::from_secs(4));
        assert_eq!(pauses.resume(at(12)), Duration::from_secs(2));
        // Resuming while reading changes nothing.
        assert_eq!(pauses.resume(at(13)), Duration::ZERO);
        assert_eq!(pauses.total(at(20)), Duration::from_secs(4));
    }
}
