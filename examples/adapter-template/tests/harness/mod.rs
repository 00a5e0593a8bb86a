//! How the suite drives the bus: a fresh bus per case, one adapter per node,
//! and the bus's own cut, restore and raw publish.

use std::sync::Arc;

use adapter_template::Bus;
use rooms_conformance::prelude::*;

/// One bus shared by every node of a case.
pub struct BusHarness {
    bus: Bus,
}

#[async_trait]
impl Harness for BusHarness {
    async fn setup() -> Result<Self, Error> {
        Ok(Self { bus: Bus::new() })
    }

    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        Ok(Arc::new(self.bus.adapter()))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_fault_injection().with_raw_publish()
    }

    async fn cut(&self) -> Result<(), Error> {
        self.bus.cut();
        Ok(())
    }

    async fn restore(&self) -> Result<(), Error> {
        self.bus.restore();
        Ok(())
    }

    async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
        self.bus.publish_raw(room, payload)
    }
}
