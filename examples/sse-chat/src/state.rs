//! The state every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rooms_adapter::Rooms;
use tokio::sync::Semaphore;

/// Shared by every request; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The rooms engine of this node.
    pub rooms: Rooms,
    /// Keep-alive interval of SSE streams.
    pub keep_alive: Duration,
    /// Most SSE streams served at once (the number of permits `streams` was
    /// created with).
    pub max_connections: u64,
    /// One permit per SSE stream being served, taken before joining and held
    /// by the response body: the `--max-connections` cap, race-free.
    pub streams: Arc<Semaphore>,
    /// How long a POST body may take to arrive.
    pub body_timeout: Duration,
    /// The application's own counters.
    pub counters: Arc<AppCounters>,
}

/// Counters of the chat application itself (the engine and adapter have
/// their own).
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Chat messages accepted and broadcast.
    pub messages_posted: AtomicU64,
    /// Requests rejected by validation.
    pub messages_rejected: AtomicU64,
    /// SSE connections refused because the node was full.
    pub connections_refused: AtomicU64,
    /// Broadcasts whose publish to the other nodes failed.
    pub publish_failures: AtomicU64,
    /// Sockets closed at once because `--max-sockets` were open.
    pub sockets_refused: AtomicU64,
    /// Connections closed because the request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// POSTs answered 408 because the body did not arrive in time.
    pub body_timeouts: AtomicU64,
    /// Connections reset because writing to them made no progress in time.
    pub write_stalls: AtomicU64,
}

impl AppCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
