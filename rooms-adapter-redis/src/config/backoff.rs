//! [`Backoff`]: capped exponential reconnect delays with jitter.

use std::time::Duration;

use super::{DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN};

/// Capped exponential backoff with jitter: attempt `n` waits a random time
/// between half and all of `min(max, min * 2^n)`.
///
/// ```
/// use std::time::Duration;
/// use rooms_adapter_redis::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// for attempt in 0..10 {
///     let delay = backoff.delay(attempt);
///     assert!(delay <= Duration::from_secs(2));
///     assert!(delay >= Duration::from_millis(50));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min` up to `max`. Validated by the builder that takes it.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// The first delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long to wait before attempt `attempt` (0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let capped = self.min.saturating_mul(factor).min(self.max);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BACKOFF_MIN, DEFAULT_BACKOFF_MAX)
    }
}

/// A number in `[0, 1)`, different on every call; good enough for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        assert!(backoff.delay(0) <= Duration::from_millis(20));
        assert!(backoff.delay(0) >= Duration::from_millis(10));
        assert!(backoff.delay(100) <= Duration::from_millis(500));
        assert!(backoff.delay(100) >= Duration::from_millis(250));
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff.delay(3)).collect();
        assert!(distinct.len() > 1, "jitter varies");
    }
}
