//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`], [`redis`], and
//!   `cluster_harness` with feature `cluster`, `sentinel_harness` with
//!   feature `sentinel`);
//! - throwaway `redis-server` processes ([`redis_server`]), 3-master Redis
//!   Clusters ([`redis_cluster`]) and Redis Sentinel deployments (a master, a
//!   replica and three sentinels, with crash and failover:
//!   [`redis_sentinel`]).
//!
//! Features `deadpool`, `bb8`, `cluster` and `sentinel` enable the harnesses
//! (and the same features of `rooms-adapter-redis`) for those drivers and
//! topologies: a dev-dependent crate enables only what its tests use, so the
//! crate under test keeps its own features.
#![warn(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster_harness;
pub mod memory;
mod poll;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
#[cfg(feature = "sentinel")]
pub mod sentinel_harness;
