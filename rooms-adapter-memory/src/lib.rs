//! # rooms-adapter-memory
//!
//! In-process media for `rooms`:
//!
//! - [`MemoryAdapter`]: one node, nothing to run. Remote publishing is a no-op;
//!   local delivery is all there is. The default medium.
//! - [`MemoryBus`]: many nodes in one process sharing a bus that honours
//!   subscriptions and can round-trip every envelope through a codec. It is the
//!   reference medium of the conformance suite, lets applications test
//!   multi-node behaviour without Redis, and injects faults (cut a node off,
//!   restore it) so lifecycle cases run without a server.
//!
//! ```
//! use std::sync::Arc;
//! use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
//! use rooms_adapter_memory::MemoryBus;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rooms_adapter::Error> {
//! let bus = MemoryBus::new();
//! let node_a = Rooms::builder(Arc::new(bus.adapter())).build().await?;
//! let node_b = Rooms::builder(Arc::new(bus.adapter())).build().await?;
//!
//! let mut bob = node_b.connect(ConnectOptions::new()).await?;
//! node_b.join(bob.id(), "chat").await?;
//!
//! node_a.broadcast("chat", SseMessage::new("hi from a"), BroadcastOptions::new()).await?;
//! let delivery = bob.recv().await.expect("delivered across the bus");
//! assert_eq!(delivery.message().data, "hi from a");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bus;
mod history;
mod single;

pub use bus::{MemoryBus, MemoryBusAdapter, MemoryBusBuilder};
pub use single::MemoryAdapter;
