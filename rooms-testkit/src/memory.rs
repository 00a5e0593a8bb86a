//! Conformance harnesses for the in-process [`MemoryBus`].

use std::sync::Arc;

use async_trait::async_trait;
use rooms_adapter::wire::Codec;
use rooms_adapter::{Error, RoomAdapter, RoomName};
use rooms_adapter_memory::{MemoryBus, MemoryBusAdapter};
use rooms_conformance::{Capabilities, Harness};

use crate::nodes::Nodes;

/// A [`MemoryBus`] that hands envelopes over as they are. Every capability:
/// [`cut`](Harness::cut) cuts every node off the bus,
/// [`cut_node`](Harness::cut_node) one node.
#[derive(Debug)]
pub struct MemoryHarness {
    bus: MemoryBus,
    nodes: Nodes<Arc<MemoryBusAdapter>>,
}

/// A [`MemoryBus`] that round-trips every envelope through JSON.
#[derive(Debug)]
pub struct MemoryJsonHarness(MemoryHarness);

/// A [`MemoryBus`] that round-trips every envelope through MessagePack.
#[derive(Debug)]
pub struct MemoryMsgpackHarness(MemoryHarness);

impl MemoryHarness {
    /// A harness over `bus`.
    pub fn new(bus: MemoryBus) -> Self {
        Self {
            bus,
            nodes: Nodes::default(),
        }
    }

    /// The bus, e.g. to cut off single nodes.
    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn setup() -> Result<Self, Error> {
        Ok(Self::new(MemoryBus::new()))
    }

    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        let node = Arc::new(self.bus.adapter());
        let adapter: Arc<dyn RoomAdapter> = node.clone();
        self.nodes.add(&adapter, node);
        Ok(adapter)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn cut(&self) -> Result<(), Error> {
        self.bus.cut_all();
        Ok(())
    }

    async fn restore(&self) -> Result<(), Error> {
        self.bus.restore_all().await;
        Ok(())
    }

    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.nodes.find(node)?.cut_off();
        Ok(())
    }

    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.nodes.find(node)?.restore().await;
        Ok(())
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        self.bus.publish_raw(room, payload);
        Ok(())
    }
}

macro_rules! codec_harness {
    ($name:ident, $codec:expr) => {
        #[async_trait]
        impl Harness for $name {
            async fn setup() -> Result<Self, Error> {
                Ok(Self(MemoryHarness::new(
                    MemoryBus::builder().codec($codec).build(),
                )))
            }

            async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
                self.0.new_adapter().await
            }

            fn capabilities(&self) -> Capabilities {
                self.0.capabilities()
            }

            async fn cut(&self) -> Result<(), Error> {
                self.0.cut().await
            }

            async fn restore(&self) -> Result<(), Error> {
                self.0.restore().await
            }

            async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
                self.0.cut_node(node).await
            }

            async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
                self.0.restore_node(node).await
            }

            async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
                self.0.publish_raw(room, payload).await
            }
        }
    };
}

codec_harness!(MemoryJsonHarness, Codec::Json);
codec_harness!(MemoryMsgpackHarness, Codec::MessagePack);
