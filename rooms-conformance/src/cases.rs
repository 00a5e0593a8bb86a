//! The cases. Each takes the harness (its medium is fresh) and returns an
//! [`Outcome`](crate::Outcome) or the reason it failed. Waits are by
//! condition with a deadline; a check that something does *not* arrive first
//! waits for a sentinel sent after it, then listens for a short quiet period.

use rooms_adapter::BroadcastOptions;

mod cluster;
mod delivery;
mod history;
mod lifecycle;
mod load;
mod outage;
mod payloads;

pub use self::cluster::*;
pub use self::delivery::*;
pub use self::history::*;
pub use self::lifecycle::*;
pub use self::load::*;
pub use self::outage::*;
pub use self::payloads::*;

fn opts() -> BroadcastOptions {
    BroadcastOptions::new()
}
