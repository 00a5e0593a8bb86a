//! [`Emitter`]: publish into rooms from a process that holds no
//! connections (a worker, a cron job, another service), without subscribing
//! to anything: the counterpart of socket.io's Redis emitter.
//!
//! It sends v1 envelopes like a node's broadcast, with `except` and metadata,
//! so every node (Rust or TypeScript) on the medium delivers them to its
//! members. It needs an adapter that declares
//! [`AdapterCapabilities::emitter`](crate::adapter::AdapterCapabilities).
//!
//! ```
//! use std::sync::Arc;
//! use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
//! use rooms_adapter::emitter::Emitter;
//! use rooms_adapter_memory::MemoryBus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rooms_adapter::Error> {
//! let bus = MemoryBus::new();
//! let node = Rooms::builder(Arc::new(bus.adapter())).build().await?;
//! let mut member = node.connect(ConnectOptions::new()).await?;
//! node.join(member.id(), "news").await?;
//!
//! // A worker with no connections publishes into the room.
//! let emitter = Emitter::connect(Arc::new(bus.adapter()), "worker-1").await?;
//! emitter.emit("news", SseMessage::new("hello"), BroadcastOptions::new()).await?;
//! let delivery = member.recv().await.expect("delivered");
//! assert_eq!(delivery.message().data, "hello");
//! emitter.close().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use crate::adapter::RoomAdapter;
use crate::broadcast::BroadcastOptions;
use crate::error::Error;
use crate::ids::{NodeId, RoomName};
use crate::message::SseMessage;
use crate::wire::Envelope;

/// A publish-only handle; see the [module docs](self).
pub struct Emitter {
    adapter: Arc<dyn RoomAdapter>,
    node: NodeId,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("adapter", &self.adapter.name())
            .field("node", &self.node)
            .finish()
    }
}

impl Emitter {
    /// Connects `adapter` for publishing only, as node `node` (the envelopes'
    /// source: nodes drop only their own echoes, so use an id no node has).
    /// Fails with [`Error::Unsupported`] when the adapter cannot.
    pub async fn connect(
        adapter: Arc<dyn RoomAdapter>,
        node: impl Into<NodeId>,
    ) -> Result<Self, Error> {
        let node = node.into();
        adapter.connect_publisher(node.clone()).await?;
        Ok(Self { adapter, node })
    }

    /// This emitter's node id.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// Publishes `message` into `room` on every node, honouring
    /// `options.except` and `options.metadata` there. A local-only option has
    /// nothing to stay on and is refused.
    pub async fn emit(
        &self,
        room: impl Into<RoomName>,
        message: SseMessage,
        options: BroadcastOptions,
    ) -> Result<(), Error> {
        if options.local_only {
            return Err(Error::Config(
                "an emitter has no local members: local_only() is not allowed".into(),
            ));
        }
        let room = room.into();
        crate::sse::validate(&message)?;
        let envelope = Envelope::new(self.node.clone(), message)
            .with_except(options.except)
            .with_meta(options.metadata);
        self.adapter.publish(&room, &envelope).await
    }

    /// Disconnects the adapter.
    pub async fn close(self) {
        if let Err(error) = self.adapter.disconnect().await {
            tracing::debug!(%error, "emitter disconnect failed");
        }
    }
}
