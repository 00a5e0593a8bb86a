//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`]);
//! - throwaway `redis-server` processes (added with the Redis backend).
#![warn(missing_docs)]

pub mod memory;
pub mod redis_cluster;
