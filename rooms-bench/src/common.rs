//! What every benchmark shares: the benchmark message, clocks, result lines,
//! latency histograms and resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rooms_adapter::wire::Codec;
use rooms_adapter::{Envelope, NodeId, SseMessage};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The room every cross-node benchmark uses.
pub const ROOM: &str = "bench";

/// Its channel with the default prefix.
pub const CHANNEL: &str = "sse:room:bench";

/// The node id the raw baseline writes into its envelopes: as long as the
/// engine's default (a v4 UUID), so both sides carry the same bytes.
pub const RAW_NODE: &str = "0b6c5a1e-7d3f-4c1a-9e2b-5f8d7c6a4b3e";

/// Padding that brings a JSON envelope of [`bench_message`] to about 150
/// bytes.
const PAD: &str = "abcdefghijklmnopqrstuvw";

/// The message every benchmark sends: `{"pad", "seq", "ts"}` under event
/// `tick`. Its JSON envelope is about 150 bytes; `ts` is the send time in
/// nanoseconds since the Unix epoch (0 when latency is not measured).
pub fn bench_message(seq: u64, ts_ns: u64) -> SseMessage {
    SseMessage::new(json!({ "pad": PAD, "seq": seq, "ts": ts_ns })).with_event("tick")
}

/// The payload the raw baseline publishes: exactly the bytes an adapter node
/// would publish for the same message.
pub fn raw_payload(seq: u64, ts_ns: u64, codec: Codec) -> Result<Bytes> {
    Envelope::new(NodeId::from(RAW_NODE), bench_message(seq, ts_ns))
        .encode(codec)
        .context("encoding the benchmark envelope")
}

/// Wall-clock nanoseconds since the Unix epoch. Publisher and receiver run on
/// the same machine, so they share this clock: one-way latency is
/// `receive - send` of the same clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Finds `key` (e.g. `"ts":`) in a JSON payload and reads the unsigned
/// integer after it; what a receiver without a decoder would do.
pub fn scan_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value: u64 = 0;
    let mut any = false;
    for digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// Prints the line a receiver prints once it is subscribed; the xtask starts
/// the publisher only after it.
pub fn ready() {
    println!("READY");
}

/// Prints the one result line of a process: `RESULT {json}`.
pub fn emit(result: &Value) {
    println!("RESULT {result}");
}

/// Events per second over `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The resident set size of this process, in bytes (`VmRSS` of
/// `/proc/self/status`).
pub fn rss_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS line has no value")?
        .parse()
        .context("VmRSS value is not a number")?;
    Ok(kib * 1024)
}

/// CPU time (user + system) this process has used so far, ended threads
/// included, in seconds: fields `utime` and `stime` of `/proc/self/stat`, in
/// clock ticks of 1/100 s (Linux's `USER_HZ`). Good to compare the work per
/// message when the machine is too noisy for wall-clock rates.
pub fn cpu_seconds() -> Result<f64> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name may contain spaces; the fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the full line, utime 14, stime 15.
    let ticks = |index: usize| -> Result<f64> {
        fields
            .get(index - 3)
            .and_then(|value| value.parse::<f64>().ok())
            .with_context(|| format!("field {index} of /proc/self/stat"))
    };
    Ok((ticks(14)? + ticks(15)?) / TICKS_PER_SECOND)
}

/// A latency histogram in nanoseconds (1 ns to 60 s, 3 significant digits).
pub fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("creating the latency histogram")
}

/// p50, p99, p99.9 and max of a nanosecond histogram, in milliseconds.
pub fn latency_summary(histogram: &Histogram<u64>) -> Value {
    let ms = |ns: u64| ns as f64 / 1e6;
    json!({
        "samples": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "p999_ms": ms(histogram.value_at_quantile(0.999)),
        "max_ms": ms(histogram.max()),
        "mean_ms": histogram.mean() / 1e6,
    })
}

/// What a cross-node receiver measures.
#[derive(Debug)]
pub struct Tally {
    expected: u64,
    received: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    warmup: u64,
    latency: Option<Histogram<u64>>,
    seen: Vec<u64>,
    duplicates: u64,
    out_of_range: u64,
    progress: Arc<AtomicU64>,
}

impl Tally {
    /// A tally for `expected` messages; with `latency`, the first `warmup`
    /// messages are left out of the histogram.
    pub fn new(expected: u64, latency: bool, warmup: u64) -> Result<Self> {
        let words = usize::try_from(expected.div_ceil(64)).context("count too large")?;
        Ok(Self {
            expected,
            received: 0,
            first: None,
            last: None,
            warmup,
            latency: if latency {
                Some(latency_histogram()?)
            } else {
                None
            },
            seen: vec![0; words],
            duplicates: 0,
            out_of_range: 0,
            progress: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The shared count of received messages, for the [`Watchdog`].
    pub fn progress(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.progress)
    }

    /// Whether a latency histogram is kept.
    pub fn wants_latency(&self) -> bool {
        self.latency.is_some()
    }

    /// Counts one message; `seq` (when the receiver reads it) detects
    /// duplicates, `sent_ns` (with latency) records the one-way latency.
    pub fn record(&mut self, seq: Option<u64>, sent_ns: Option<u64>) {
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
        }
        self.last = Some(now);
        if let (Some(histogram), Some(sent)) = (self.latency.as_mut(), sent_ns)
            && self.received >= self.warmup
        {
            let latency = now_ns().saturating_sub(sent).max(1);
            histogram.saturating_record(latency);
        }
        if let Some(seq) = seq {
            match usize::try_from(seq / 64)
                .ok()
                .and_then(|i| self.seen.get_mut(i))
            {
                Some(word) => {
                    let bit = 1u64 << (seq % 64);
                    if *word & bit != 0 {
                        self.duplicates += 1;
                    }
                    *word |= bit;
                }
                None => self.out_of_range += 1,
            }
        }
        self.received += 1;
        self.progress.store(self.received, Ordering::Relaxed);
    }

    /// Whether every expected message arrived.
    pub fn done(&self) -> bool {
        self.received >= self.expected
    }

    /// The result: count, lost, duplicates, rate from first to last receipt,
    /// and latency percentiles when kept.
    pub fn finish(&self, side: &str, extra: Value) -> Value {
        let elapsed = match (self.first, self.last) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        };
        let mut result = json!({
            "side": side,
            "expected": self.expected,
            "received": self.received,
            "lost": self.expected.saturating_sub(self.received),
            "duplicates": self.duplicates,
            "out_of_range": self.out_of_range,
            "elapsed_s": elapsed.as_secs_f64(),
            "msgs_per_s": rate(self.received.saturating_sub(1), elapsed),
            "extra": extra,
        });
        if let Some(histogram) = &self.latency {
            result["latency"] = latency_summary(histogram);
        }
        result
    }
}

/// Ends a receive loop when messages stop coming: no first message within
/// `start_timeout`, or no new one for `idle` after that.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<Notify>,
}

impl Watchdog {
    /// Starts watching `progress`.
    pub fn spawn(progress: Arc<AtomicU64>, start_timeout: Duration, idle: Duration) -> Self {
        let stop = Arc::new(Notify::new());
        let signal = Arc::clone(&stop);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            let mut last_change = started;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = Instant::now();
                let seen = progress.load(Ordering::Relaxed);
                if seen != last {
                    last = seen;
                    last_change = now;
                }
                let stalled = if seen == 0 {
                    now - started > start_timeout
                } else {
                    now - last_change > idle
                };
                if stalled {
                    signal.notify_one();
                    return;
                }
            }
        });
        Self { stop }
    }

    /// Resolves once the watchdog gave up waiting.
    pub async fn stopped(&self) {
        self.stop.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_envelope_is_about_150_bytes() {
        let json = raw_payload(123_456, 1_712_345_678_901_234_567, Codec::Json).expect("encodes");
        assert!((145..=155).contains(&json.len()), "{}", json.len());
        let packed = raw_payload(123_456, 1, Codec::MessagePack).expect("encodes");
        assert!(packed.len() < json.len());
    }

    #[test]
    fn scans_integers() {
        let json = raw_payload(42, 77, Codec::Json).expect("encodes");
        assert_eq!(scan_u64(&json, b"\"seq\":"), Some(42));
        assert_eq!(scan_u64(&json, b"\"ts\":"), Some(77));
        assert_eq!(scan_u64(b"{}", b"\"ts\":"), None);
    }

    #[test]
    fn tally_counts_duplicates_and_loss() {
        let mut tally = Tally::new(3, false, 0).expect("tally");
        tally.record(Some(0), None);
        tally.record(Some(0), None);
        tally.record(Some(99), None);
        let result = tally.finish("x", Value::Null);
        assert_eq!(result["duplicates"], 1);
        assert_eq!(result["out_of_range"], 1);
        assert_eq!(result["lost"], 0);
    }
}
