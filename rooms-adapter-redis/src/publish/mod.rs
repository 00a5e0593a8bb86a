//! The publish path: the [`PublishDriver`] seam, the bundled drivers (one per
//! cargo feature), and the [`Publisher`](publisher::Publisher) that coalesces
//! concurrent publishes into pipelines.

#[cfg(feature = "bb8")]
mod bb8;
#[cfg(feature = "deadpool")]
mod deadpool;
mod driver;
#[cfg(feature = "redis")]
mod manager;
pub(crate) mod publisher;
#[cfg(feature = "sentinel")]
mod sentinel;
#[cfg(feature = "cluster")]
mod sharded;

#[cfg(feature = "bb8")]
pub use self::bb8::{Bb8Driver, Bb8Pool};
#[cfg(feature = "deadpool")]
pub use self::deadpool::DeadpoolDriver;
pub use self::driver::{DriverOptions, PublishDriver, PublishItem, ScriptCall, run_script_on};
pub(crate) use self::driver::{ScriptArg, medium_of};
#[cfg(feature = "redis")]
pub use self::manager::RedisDriver;
#[cfg(feature = "sentinel")]
pub(crate) use self::sentinel::SentinelDriver;
#[cfg(feature = "cluster")]
pub use self::sharded::ClusterDriver;
