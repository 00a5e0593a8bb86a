//! Load tooling shared by `cargo xtask soak` and the end-to-end bench row:
//! `sse-chat` nodes as child processes ([`Node`]), real SSE clients
//! ([`spawn_client`]: hyper over one TCP connection each, parsing the SSE
//! frames themselves), a poster of chat messages ([`post`]), and `/proc`
//! sampling of the nodes ([`ProcSample`]).
//!
//! A chat message's text is `s=<seq> t=<µs>`: a sequence number and the send
//! time in microseconds since the run's base [`Instant`], so every client can
//! tell exactly which messages it got (once each) and how late. Message `seq`
//! goes to room `seq % rooms` (its number in that room is `seq / rooms`) through
//! node `(seq / rooms) % nodes`.

mod client;
mod node;
mod poster;
mod sse;
mod tally;

use std::time::{Duration, Instant};

pub use client::{ClientReport, ClientSpec, spawn_client};
pub use node::{Node, ProcSample, raise_nofile};
pub use poster::{PostPlan, PostRecord, drain, post, wait_ready};
pub use tally::Tally;

/// How long a node may take to print its listening line.
const NODE_START: Duration = Duration::from_secs(30);

/// How long one client may take to connect and get its `ready` event.
const CLIENT_JOIN: Duration = Duration::from_secs(30);

/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency histogram shards (clients record into `index % SHARDS`).
const SHARDS: usize = 16;

/// Latencies a client buffers before it takes a shard's lock.
const LATENCY_BATCH: usize = 256;

/// Highest latency the histograms track, in µs (larger values are clamped).
const LATENCY_MAX_US: u64 = 600_000_000;

/// Microseconds since `base`.
pub fn micros_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `value` in ms with 2 decimals, from µs.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::client::message_text;
    use super::client::parse_text;
    use super::node::clock_ticks;
    use super::node::cpu_secs_from_stat;
    use super::sse::SseEvent;
    use super::sse::SseParser;
    use super::tally::BitSet;
    use super::*;

    fn parse_all(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk.as_bytes(), |event| events.push(event));
        }
        events
    }

    #[test]
    fn parses_events_split_anywhere() {
        let stream = "retry: 2000\n\nevent: ready\ndata: {\"a\":1}\n\n: keep-alive\n\n\
                      id: x1\r\ndata:line1\ndata: line2\n\n";
        let whole = parse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "ready".into(),
                    id: None,
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    id: Some("x1".into()),
                    data: "line1\nline2".into()
                },
            ]
        );
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(parse_all(&[a, b]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn reads_message_text_and_proc_stat() {
        assert_eq!(parse_text(&message_text(42, 1234)), Some((42, 1234)));
        assert_eq!(parse_text("s=1"), None);
        assert_eq!(parse_text("hello"), None);
        let stat = "1 (a b) S 0 0 0 0 0 0 0 0 0 0 250 50 0 0 20 0";
        let ticks = clock_ticks();
        assert_eq!(cpu_secs_from_stat(stat), Some(300.0 / ticks));
        assert!(ProcSample::read(std::process::id()).is_some_and(|s| s.rss_bytes > 0));
    }

    #[test]
    fn bit_set_counts_repeats() {
        let mut set = BitSet::default();
        assert!(!set.insert(3));
        assert!(set.insert(3));
        assert!(!set.insert(1000));
        assert!(set.contains(1000) && set.contains(3) && !set.contains(4));
        assert!(!set.contains(1_000_000));
    }
}
