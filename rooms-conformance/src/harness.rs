//! How a backend plugs into the suite: [`Harness`] and [`Capabilities`].

use std::sync::Arc;

use async_trait::async_trait;
use rooms_adapter::{Error, RoomAdapter, RoomName};

/// What a harness's medium can do beyond the contract's minimum. Cases that need
/// a capability the harness lacks are reported as skipped, not passed.
///
/// The struct is `#[non_exhaustive]`: build it from [`NONE`](Self::NONE)
/// with the `const` `with_*` methods, or take [`ALL`](Self::ALL):
///
/// ```
/// use rooms_conformance::Capabilities;
///
/// const MINE: Capabilities = Capabilities::NONE.with_fault_injection();
/// assert!(MINE.fault_injection && !MINE.raw_publish);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`Harness::cut`] and [`Harness::restore`] work: the medium can be taken
    /// away from every node and brought back.
    pub fault_injection: bool,
    /// [`Harness::publish_raw`] works: raw bytes can be published on a room's
    /// channel, as a foreign (or broken) publisher would.
    pub raw_publish: bool,
    /// [`Harness::cut_node`] and [`Harness::restore_node`] work: one node
    /// loses the medium (it cannot publish, receive or read history) while
    /// the others keep it and go on publishing.
    pub node_fault_injection: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Capabilities = Capabilities {
        fault_injection: false,
        raw_publish: false,
        node_fault_injection: false,
    };

    /// Every optional capability.
    pub const ALL: Capabilities = Capabilities {
        fault_injection: true,
        raw_publish: true,
        node_fault_injection: true,
    };

    /// With [`fault_injection`](Self::fault_injection).
    #[must_use]
    pub const fn with_fault_injection(mut self) -> Self {
        self.fault_injection = true;
        self
    }

    /// With [`raw_publish`](Self::raw_publish).
    #[must_use]
    pub const fn with_raw_publish(mut self) -> Self {
        self.raw_publish = true;
        self
    }

    /// With [`node_fault_injection`](Self::node_fault_injection).
    #[must_use]
    pub const fn with_node_fault_injection(mut self) -> Self {
        self.node_fault_injection = true;
        self
    }
}

/// A backend under test: a shared medium on which new nodes (adapters) can be
/// made.
///
/// Each case calls [`Harness::setup`] once, makes the nodes it needs with
/// [`Harness::new_adapter`], and calls [`Harness::teardown`] at the end.
#[async_trait]
pub trait Harness: Send + Sync + Sized + 'static {
    /// A fresh, empty medium (e.g. a new in-process bus, or a throwaway
    /// `redis-server` on a free port).
    async fn setup() -> Result<Self, Error>;

    /// A new, not yet connected adapter on the shared medium: one more node.
    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error>;

    /// What this medium can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Makes the medium unavailable to every node (e.g. kills the server).
    async fn cut(&self) -> Result<(), Error> {
        Err(Error::Config("this harness cannot inject faults".into()))
    }

    /// Brings the medium back after [`cut`](Self::cut).
    async fn restore(&self) -> Result<(), Error> {
        Err(Error::Config("this harness cannot inject faults".into()))
    }

    /// Makes the medium unavailable to one node only: `node` (an adapter
    /// made by [`new_adapter`](Self::new_adapter)) can no longer publish,
    /// receive or read history, and notices (reports `MediumLost`), while
    /// every other node keeps the medium. E.g. a proxy per node that drops
    /// its connections, or a per-node ACL user that is disabled and whose
    /// connections are killed.
    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        let _ = node;
        Err(Error::Config(
            "this harness cannot cut a single node off the medium".into(),
        ))
    }

    /// Gives `node` the medium back after [`cut_node`](Self::cut_node); it
    /// reconnects on its own (and reports `Reconnected`).
    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        let _ = node;
        Err(Error::Config(
            "this harness cannot cut a single node off the medium".into(),
        ))
    }

    /// Publishes raw bytes on `room`'s channel, bypassing every codec.
    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        let _ = (room, payload);
        Err(Error::Config(
            "this harness cannot publish raw payloads".into(),
        ))
    }

    /// Releases the medium (e.g. stops the server).
    async fn teardown(self) {}
}
