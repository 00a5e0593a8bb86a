//! # rooms-bench
//!
//! The benchmarks behind `cargo xtask bench` (design doc, section 7). Every
//! figure is measured next to a baseline in the same run, because the machines
//! are noisy: compare ratios, not absolute numbers.
//!
//! The `rooms-bench` binary has one subcommand per benchmark (or benchmark
//! side); the xtask spawns them as separate processes, reads the `READY` line of
//! a receiver before starting its publisher, and parses the one `RESULT {json}`
//! line each process prints. The modules here are the benchmarks themselves:
//!
//! - [`cross`]: cross-node throughput and latency through one Redis, with a
//!   publisher process and a receiver process, for the adapter and for raw
//!   redis-rs pub/sub.
//! - [`receive_path`]: decode + dispatch of pre-recorded payloads in one
//!   process, on one core.
//! - [`fanout`]: one broadcast to a room of many local connections.
//! - [`codec`]: encode/decode of the golden-vector envelopes, JSON vs
//!   MessagePack (criterion has the same loops in `benches/codec.rs`).
//! - [`memory`]: resident bytes per idle connection.
//! - [`memory_traffic`]: resident bytes per connection after messages with
//!   ids, against a registry that keeps each connection's own copy of its ids.
//! - [`pg`]: the raw tokio-postgres sides of cross-node runs over
//!   PostgreSQL, and the attachment path's cost.
//! - [`join`]: join latency of new rooms while redis-server is frozen.
#![warn(missing_docs)]

pub mod cluster;
pub mod codec;
pub mod common;
pub mod cross;
pub mod fanout;
pub mod history;
pub mod join;
pub mod memory;
pub mod memory_traffic;
pub mod pg;
pub mod receive_path;
