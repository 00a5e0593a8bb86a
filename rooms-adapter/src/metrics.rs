//! Latency histograms of the engine, and (feature `prometheus`) a collector
//! for [`prometheus-client`](https://docs.rs/prometheus-client).
//!
//! The engine always keeps three latency histograms, read with
//! [`Rooms::latency_stats`](crate::Rooms::latency_stats):
//!
//! | histogram | from | to |
//! | --- | --- | --- |
//! | [`publish`](LatencyStats::publish) | a broadcast call | the medium accepted it for every room |
//! | [`delivery`](LatencyStats::delivery) | the adapter handed a message from the medium to the engine | it was queued to every local recipient |
//! | [`queue_wait`](LatencyStats::queue_wait) | a delivery was queued to a connection | the connection's transport took it (sampled) |
//!
//! Recording one costs a clock read and two relaxed atomic additions. On
//! the receive path, where a clock read is a measurable share of a
//! message's cost, both are sampled: the delivery latency of one message in
//! [`DELIVERY_SAMPLE`] from the medium (after the first eight), and the
//! queue wait of one delivery in [`DELIVERY_SAMPLE`] (stamped when it is
//! framed; after the first eight of each thread), of which each
//! connection records its first, then one in [`QUEUE_WAIT_SAMPLE`] (it is
//! paid per connection, not per message). Their counts are therefore not
//! message counts; the publish histogram counts every broadcast.
//! Counters ([`EngineStats`](crate::EngineStats),
//! [`AdapterStats`](crate::AdapterStats)) cost nothing extra: a collector
//! reads their snapshots at scrape time.
//!
//! With feature `prometheus`, [`Rooms::register_metrics`](crate::Rooms::register_metrics)
//! puts all of it into a `prometheus_client` registry; see
//! [`RoomsCollector`] for the metric names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "prometheus")]
mod prometheus;

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use self::prometheus::RoomsCollector;

/// Upper bounds of the histogram buckets, in seconds: 10 µs to 10 s. A
/// last, unbounded bucket (`+Inf`) follows.
pub const BUCKETS_SECONDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for recording without floats.
const BUCKETS_NANOS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A connection's queue wait is recorded for its first stamped delivery,
/// then for one stamped delivery in this many.
pub const QUEUE_WAIT_SAMPLE: u32 = 16;

/// After the first this many, one message from the medium in this many has
/// its delivery latency recorded, and one delivery in this many is stamped
/// for the queue wait.
pub const DELIVERY_SAMPLE: u64 = 8;

/// Whether the `n`th (from 0) message or delivery is sampled: the first
/// [`DELIVERY_SAMPLE`], then one in [`DELIVERY_SAMPLE`].
pub(crate) fn sampled(n: u64) -> bool {
    n < DELIVERY_SAMPLE || n.is_multiple_of(DELIVERY_SAMPLE)
}

/// A histogram of durations with fixed buckets ([`BUCKETS_SECONDS`]): one
/// relaxed atomic per bucket, and the sum in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = BUCKETS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(BUCKETS_NANOS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    pub(crate) fn record_since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS_SECONDS.len());
        for (bound, count) in BUCKETS_SECONDS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.buckets[BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The engine's latency histograms.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    pub(crate) publish: AtomicHistogram,
    pub(crate) delivery: AtomicHistogram,
    pub(crate) queue_wait: AtomicHistogram,
}

impl Latencies {
    pub(crate) fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            publish: self.publish.snapshot(),
            delivery: self.delivery.snapshot(),
            queue_wait: self.queue_wait.snapshot(),
        }
    }
}

/// A snapshot of one latency histogram.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative,
    /// for each bound of [`BUCKETS_SECONDS`]; the `+Inf` bucket is
    /// [`count`](Self::count).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
}

/// A snapshot of the engine's latency histograms; see the [module](self)
/// docs for what each measures.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LatencyStats {
    /// From a broadcast call until the medium accepted it for every room
    /// (successful publishes only; local-only broadcasts are not counted).
    pub publish: HistogramSnapshot,
    /// From the adapter's hand-off of a message from the medium until it
    /// was queued to every local recipient (messages with local recipients
    /// only).
    pub delivery: HistogramSnapshot,
    /// From a delivery's queueing to a connection until its transport took
    /// it, sampled ([`QUEUE_WAIT_SAMPLE`]).
    pub queue_wait: HistogramSnapshot,
}

/// Decides per connection which deliveries' queue wait is recorded.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    taken: u32,
}

impl Sampler {
    /// Whether to record this one: the first, then one in
    /// [`QUEUE_WAIT_SAMPLE`].
    pub(crate) fn sample(&mut self) -> bool {
        let pick = self.taken == 0;
        self.taken += 1;
        if self.taken == QUEUE_WAIT_SAMPLE {
            self.taken = 0;
        }
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_the_first_eight_then_one_in_eight() {
        let picked: Vec<u64> = (0..40).filter(|&n| sampled(n)).collect();
        assert_eq!(picked, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 24, 32]);
    }

    #[test]
    fn buckets_are_cumulative_and_sum_is_kept() {
        let histogram = AtomicHistogram::default();
        histogram.record(Duration::from_micros(5));
        histogram.record(Duration::from_micros(10));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets.len(), BUCKETS_SECONDS.len());
        // 5 µs and 10 µs are both at or below the first bound (10 µs).
        assert_eq!(snapshot.buckets[0], (0.000_01, 2));
        let at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| (*b - bound).abs() < 1e-12)
                .map(|(_, count)| *count)
        };
        assert_eq!(at(0.0025), Some(2));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(10.0), Some(3));
        assert_eq!(
            snapshot.sum,
            Duration::from_micros(15) + Duration::from_millis(3) + Duration::from_secs(60)
        );
        for pair in snapshot.buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        }
    }

    #[test]
    fn bounds_agree_in_both_units() {
        for (seconds, nanos) in BUCKETS_SECONDS.iter().zip(BUCKETS_NANOS) {
            assert_eq!(
                Duration::from_secs_f64(*seconds),
                Duration::from_nanos(nanos)
            );
        }
    }

    #[test]
    fn sampler_takes_the_first_then_one_in_n() {
        let mut sampler = Sampler::default();
        let picks: Vec<usize> = (0..(QUEUE_WAIT_SAMPLE as usize * 3))
            .filter(|_| sampler.sample())
            .collect();
        let n = QUEUE_WAIT_SAMPLE as usize;
        assert_eq!(picks, vec![0, n, 2 * n]);
    }
}
