//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`], [`redis`]);
//! - throwaway `redis-server` processes ([`redis_server`]).
#![warn(missing_docs)]

pub mod memory;
pub mod redis;
pub mod redis_cluster;
pub mod redis_server;
