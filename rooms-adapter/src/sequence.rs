//! Event-id sequences: ids that sort in allocation order, for `Last-Event-ID`.
//!
//! Per-process counters break `Last-Event-ID` ordering as soon as several nodes
//! broadcast into one room; a shared sequence (e.g. Redis `INCR` in
//! `rooms-adapter-redis`) does not. Ids look like `0-000000000001`: a constant
//! epoch, a dash, and the counter zero-padded to 12 digits, so they sort as
//! strings. The sequence orders *allocation*, not delivery: two nodes that
//! allocate 5 and 6 may still deliver 6 first.
//!
//! ```
//! use rooms_adapter::sequence::{EventIdSequence, MemoryEventIdSequence};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rooms_adapter::Error> {
//! let sequence = MemoryEventIdSequence::new();
//! assert_eq!(sequence.next_id().await?, "0-000000000001");
//! assert_eq!(sequence.next_id().await?, "0-000000000002");
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::error::Error;

/// The epoch every id starts with (the TypeScript package uses the same).
pub const EVENT_ID_EPOCH: u64 = 0;

/// Formats counter `n` as an event id: `{epoch}-{n:012}`.
///
/// ```
/// assert_eq!(rooms_adapter::sequence::format_event_id(0, 42), "0-000000000042");
/// ```
pub fn format_event_id(epoch: u64, n: u64) -> String {
    format!("{epoch}-{n:012}")
}

/// A source of increasing event ids.
#[async_trait]
pub trait EventIdSequence: Send + Sync {
    /// The next id; one allocation per call, never reserved in blocks.
    async fn next_id(&self) -> Result<String, Error>;
}

/// A sequence for one node, in memory.
#[derive(Debug, Default)]
pub struct MemoryEventIdSequence {
    counter: AtomicU64,
}

impl MemoryEventIdSequence {
    /// Starts at 1.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventIdSequence for MemoryEventIdSequence {
    async fn next_id(&self) -> Result<String, Error> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(format_event_id(EVENT_ID_EPOCH, n))
    }
}
