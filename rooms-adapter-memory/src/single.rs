//! [`MemoryAdapter`]: the single-node medium.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterStats, ControlTarget, EventSink, RoomAdapter,
};
use rooms_adapter::history::{HistoryPage, HistoryPolicy, Position};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};

use crate::history::Histories;

/// The medium for a single node: there is no other node, so publishing only
/// counts. Subscriptions are tracked so [`AdapterStats::subscriptions`] is
/// right.
///
/// ```
/// use std::sync::Arc;
/// use rooms_adapter::Rooms;
/// use rooms_adapter_memory::MemoryAdapter;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rooms_adapter::Error> {
/// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
/// assert_eq!(rooms.adapter_name(), "memory");
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryAdapter {
    subscriptions: Mutex<HashSet<RoomName>>,
    counters: AdapterCounters,
    histories: Mutex<Histories>,
}

impl MemoryAdapter {
    /// A new single-node adapter.
    pub fn new() -> Self {
        Self::default()
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashSet<RoomName>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl RoomAdapter for MemoryAdapter {
    fn name(&self) -> &str {
        "memory"
    }

    async fn connect(&self, _node: NodeId, _sink: EventSink) -> Result<(), Error> {
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), Error> {
        self.subscriptions().clear();
        Ok(())
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.subscriptions().insert(room.clone());
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.subscriptions().remove(room);
        Ok(())
    }

    async fn publish(&self, _room: &RoomName, _envelope: &Envelope) -> Result<(), Error> {
        self.counters.record_published();
        Ok(())
    }

    fn stats(&self) -> AdapterStats {
        self.counters.snapshot(self.subscriptions().len(), None)
    }

    /// One node and no medium: the cluster is this node alone, and cluster
    /// queries answer at once from it.
    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE.with_control().with_history()
    }

    async fn publish_with_history(
        &self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
    ) -> Result<Position, Error> {
        let (position, _) = self
            .histories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(room, envelope, policy, Instant::now())?;
        self.counters.record_published();
        Ok(position)
    }

    async fn read_history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        Ok(self
            .histories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(room, after, limit, Instant::now()))
    }

    /// Nobody else to hear it: accepted and dropped.
    async fn publish_control(&self, _target: &ControlTarget, _payload: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}
