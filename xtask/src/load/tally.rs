//! What the clients of a run received: per-message counts and latencies.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use super::{LATENCY_MAX_US, SHARDS};

/// A growable bit set of the message numbers one client has seen.
#[derive(Debug, Default, Clone)]
pub struct BitSet {
    pub(super) words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `index`; returns whether it was already set.
    pub fn insert(&mut self, index: u64) -> bool {
        let word = usize::try_from(index / 64).unwrap_or(usize::MAX);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (index % 64);
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        was
    }

    /// Whether bit `index` is set.
    pub fn contains(&self, index: u64) -> bool {
        usize::try_from(index / 64)
            .ok()
            .and_then(|word| self.words.get(word))
            .is_some_and(|word| word & (1u64 << (index % 64)) != 0)
    }
}

/// Counters and latencies shared by every client of a run.
pub struct Tally {
    /// Clients that got their `ready` event.
    pub ready: AtomicUsize,
    /// Clients that could not connect or join.
    pub failed: AtomicUsize,
    /// Chat messages received for the first time (all clients).
    pub delivered: AtomicU64,
    /// When the last chat message was received (µs since base).
    pub last_delivery_us: AtomicU64,
    /// When a client first saw a `reconnected` notice (µs since base; 0 = never).
    pub first_notice_us: AtomicU64,
    /// When a client last saw a `reconnected` notice (µs since base).
    pub last_notice_us: AtomicU64,
    pub(super) latency: Vec<Mutex<Histogram<u64>>>,
}

impl Tally {
    /// Empty counters.
    pub fn new() -> Result<Arc<Self>, String> {
        let latency = (0..SHARDS)
            .map(|_| new_histogram().map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Self {
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            first_notice_us: AtomicU64::new(0),
            last_notice_us: AtomicU64::new(0),
            latency,
        }))
    }

    pub(super) fn record(&self, shard: usize, latencies: &mut Vec<u64>) {
        if latencies.is_empty() {
            return;
        }
        if let Some(Ok(mut histogram)) = self.latency.get(shard % SHARDS).map(|m| m.lock()) {
            for &us in latencies.iter() {
                histogram.saturating_record(us.max(1));
            }
        }
        latencies.clear();
    }

    /// Every latency recorded so far (µs), merged.
    pub fn latency(&self) -> Result<Histogram<u64>, String> {
        let mut all = new_histogram()?;
        for shard in &self.latency {
            let shard = shard.lock().map_err(|_| "a latency shard is poisoned")?;
            all.add(&*shard)
                .map_err(|e| format!("cannot merge latencies: {e}"))?;
        }
        Ok(all)
    }
}

pub(super) fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .map_err(|e| format!("cannot create a histogram: {e}"))
}
