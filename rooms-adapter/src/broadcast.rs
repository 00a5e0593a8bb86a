//! Broadcast options, results and the delivery filter.

use std::sync::Arc;

use serde_json::Value;

use crate::connection::ConnectionInfo;
use crate::ids::ConnectionId;
use crate::message::SseMessage;

/// Options of one broadcast.
///
/// ```
/// use rooms_adapter::BroadcastOptions;
/// use serde_json::json;
///
/// let options = BroadcastOptions::new()
///     .except("conn-1")
///     .metadata(json!({"projectId": 42}));
/// assert!(!options.is_local_only());
/// ```
#[derive(Debug, Clone, Default)]
pub struct BroadcastOptions {
    pub(crate) except: Option<ConnectionId>,
    pub(crate) local_only: bool,
    pub(crate) metadata: Option<Value>,
}

impl BroadcastOptions {
    /// Deliver to every member on every node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Skip this connection (typically the sender) on every node.
    #[must_use]
    pub fn except(mut self, connection: impl Into<ConnectionId>) -> Self {
        self.except = Some(connection.into());
        self
    }

    /// Deliver on this node only; publish nothing to the medium.
    #[must_use]
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Opaque metadata for the delivery filter on every node; never sent to
    /// clients.
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Whether this broadcast stays on this node.
    pub fn is_local_only(&self) -> bool {
        self.local_only
    }
}

/// What a broadcast did on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Local connections that got the message queued.
    pub delivered: usize,
    /// Local connections the delivery filter rejected.
    pub filtered: usize,
    /// Local connections that could not take it (queue full or gone).
    pub dropped: usize,
    /// Rooms the envelope was published to (0 for a local-only broadcast).
    pub published: usize,
    /// With history on: the message's SSE id (its application id, or its
    /// history position; for several rooms, the last room's), which a client
    /// can resume from.
    pub id: Option<String>,
}

/// Decides, before delivery, whether a connection gets a message: `(connection,
/// message, metadata) -> bool`. It runs for local and remote broadcasts alike.
///
/// ```
/// use std::sync::Arc;
/// use rooms_adapter::DeliveryFilter;
///
/// // Deliver only to connections whose context names the message's project.
/// let filter: DeliveryFilter = Arc::new(|connection, _message, metadata| {
///     match (connection.context, metadata) {
///         (Some(context), Some(meta)) => context["projectId"] == meta["projectId"],
///         _ => true,
///     }
/// });
/// # let _ = filter;
/// ```
pub type DeliveryFilter =
    Arc<dyn Fn(&ConnectionInfo<'_>, &SseMessage, Option<&Value>) -> bool + Send + Sync>;
