//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`], [`redis`], and
//!   `cluster_harness` with feature `cluster`);
//! - throwaway `redis-server` processes ([`redis_server`]) and 3-master Redis
//!   Clusters ([`redis_cluster`]).
//!
//! Features `deadpool`, `bb8` and `cluster` enable the harnesses (and the
//! same features of `rooms-adapter-redis`) for those drivers and for
//! `RedisClusterAdapter`: a dev-dependent crate enables only what its tests
//! use, so the crate under test keeps its own features.
#![warn(missing_docs)]

#[cfg(feature = "cluster")]
pub mod cluster_harness;
pub mod memory;
pub mod redis;
pub mod redis_cluster;
pub mod redis_server;
