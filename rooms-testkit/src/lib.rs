//! Test tooling for `rooms` (not published):
//! - conformance harnesses for every backend ([`memory`], [`redis`], and
//!   `cluster_harness` with feature `cluster`, `sentinel_harness` with
//!   feature `sentinel`, `nats` with feature `nats`, `postgres` with feature
//!   `postgres`);
//! - throwaway `redis-server` processes ([`redis_server`]), 3-master Redis
//!   Clusters ([`redis_cluster`]) and Redis Sentinel deployments (a master, a
//!   replica and three sentinels, with crash and failover:
//!   [`redis_sentinel`]);
//! - throwaway `nats-server` processes and 3-server NATS clusters with
//!   routes ([`nats_server`]);
//! - a fault-injecting TCP proxy ([`tcp_proxy`]), and the PostgreSQL
//!   harnesses on it (`postgres`, feature `postgres`); throwaway PostgreSQL
//!   clusters ([`postgres_server`]);
//! - certificates made at test time, for TLS ([`certs`]), and the check
//!   that a refused connect fails fast and for good ([`refusal`]);
//! - waiting for a condition with a deadline instead of sleeping a fixed
//!   time ([`poll`]);
//! - [`nodes::Nodes`], which finds a harness's node again by its adapter
//!   (for `Harness::cut_node`).
//!
//! Features `deadpool`, `bb8`, `cluster`, `sentinel`, `nats` and `postgres` enable the harnesses
//! (and the same features of `rooms-adapter-redis`) for those drivers and
//! topologies: a dev-dependent crate enables only what its tests use, so the
//! crate under test keeps its own features.
#![warn(missing_docs)]

pub mod certs;
#[cfg(feature = "cluster")]
pub mod cluster_harness;
pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod nats_server;
pub mod nodes;
pub mod poll;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod postgres_server;
mod process;
pub mod redis;
pub mod redis_acl;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod refusal;
#[cfg(feature = "sentinel")]
pub mod sentinel_harness;
pub mod tcp_proxy;
