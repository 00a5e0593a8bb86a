//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`], [`redis`],
//!   [`cluster_harness`], [`sentinel_harness`]);
//! - throwaway `redis-server` processes ([`redis_server`]), 3-master Redis
//!   Clusters ([`redis_cluster`]) and Redis Sentinel deployments (a master, a
//!   replica and three sentinels, with crash and failover:
//!   [`redis_sentinel`]).
#![warn(missing_docs)]

pub mod cluster_harness;
pub mod memory;
mod poll;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod sentinel_harness;
