//! The state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
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
    /// What `GET /metrics` encodes ([`metrics::registry`](crate::metrics::registry)).
    pub metrics: Arc<Registry>,
}

/// Counters of the chat application itself (the engine and adapter have
/// their own), `prometheus_client` counters registered in the `/metrics`
/// registry.
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Chat messages accepted and broadcast.
    pub messages_posted: Counter,
    /// Requests rejected by validation.
    pub messages_rejected: Counter,
    /// SSE connections refused because the node was full.
    pub connections_refused: Counter,
    /// Broadcasts whose publish to the other nodes failed.
    pub publish_failures: Counter,
    /// Sockets closed at once because `--max-sockets` were open.
    pub sockets_refused: Counter,
    /// Connections closed because the request head did not arrive in time.
    pub header_timeouts: Counter,
    /// POSTs answered 408 because the body did not arrive in time.
    pub body_timeouts: Counter,
    /// Connections reset because writing to them made no progress in time.
    pub write_stalls: Counter,
}

impl AppCounters {
    /// Adds one to a counter.
    pub fn bump(counter: &Counter) {
        counter.inc();
    }
}
