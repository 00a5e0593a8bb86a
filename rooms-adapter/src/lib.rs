//! # rooms-adapter
//!
//! The core of `rooms`: cross-node room broadcasting for server-sent events.
//!
//! A server keeps many long-lived client connections; each joins named rooms; a
//! broadcast to a room reaches every member on every node. This crate is
//! transport- and medium-agnostic:
//!
//! - [`message`]: [`SseMessage`], what a broadcast carries.
//! - [`wire`]: the v1 [`Envelope`], its JSON (TypeScript-compatible) and
//!   MessagePack codecs, and decoding with auto-detection.
//! - [`adapter`]: the [`RoomAdapter`] contract a medium implements (memory,
//!   Redis, ...).
//! - [`Rooms`]: the engine — registry, bounded per-connection queues, broadcast,
//!   remote delivery with echo suppression, exclusion, dedup and filtering.
//! - [`Rooms::to`]: a broadcast in one line,
//!   `rooms.to("lobby").except(sender).emit("chat", &data)` (data from any
//!   `Serialize`); [`broadcast`] has the options form and the report.
//! - [`sse`]: WHATWG SSE framing, and with feature `axum` an axum response
//!   (`sse::axum`), an `IntoResponse` for [`Error`] (status per case, see
//!   [`Error::http_status`]) and the graceful-shutdown recipe.
//! - [`metrics`]: latency histograms, and with feature `prometheus` a
//!   `prometheus-client` collector of every counter and histogram.
//!
//! ## Features
//!
//! - `axum`: the axum SSE transport ([`sse`]`::axum`) and `IntoResponse` for
//!   [`Error`].
//! - `prometheus`: a `prometheus-client` collector ([`metrics`]).
//! - `float-roundtrip`: exact `f64` round-trip of metadata (and of parsed
//!   `data`) through the JSON codec, by serde_json's `float_roundtrip` (which
//!   applies to the whole build, hence opt-in; without it a few values read
//!   back one unit in the last place off). MessagePack is always exact.
//!
//! The core knows nothing of Redis: see `rooms-adapter-memory` and
//! `rooms-adapter-redis` for media, and `rooms-conformance` for the suite every
//! medium must pass.
//!
//! ## Tracing
//! The engine opens [`tracing`](https://docs.rs/tracing) spans with the
//! fields an operator filters on: `rooms.connect`, `rooms.disconnect`,
//! `rooms.join`, `rooms.leave` and `rooms.join_from` (debug; `node`,
//! `medium`, `connection`, `room`), `rooms.broadcast` (debug; `room`, then
//! `delivered` and `published`), `rooms.publish` and `rooms.deliver` (trace,
//! one per message and room) and `rooms.reconnect` (info; `rooms`,
//! `outage_ms`, covering the history recovery that follows). A level that is
//! off costs a cached check.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod broadcast;
pub mod cluster;
pub mod connection;
mod dedup;
pub mod emitter;
pub mod engine;
pub mod error;
pub mod gap;
pub mod history;
pub mod ids;
mod json_text;
pub mod message;
pub mod metrics;
mod registry;
pub mod sequence;
pub mod sse;
pub mod wire;

pub use adapter::{
    AdapterCapabilities, AdapterCounters, AdapterEvent, AdapterStats, ControlTarget, EventSink,
    EventStream, RoomAdapter, SinkOutcome,
};
pub use broadcast::{Broadcast, BroadcastOptions, BroadcastReport, DeliveryFilter};
pub use connection::{
    ConnectOptions, ConnectionInfo, ConnectionReceiver, Delivery, SlowConsumerPolicy,
};
pub use engine::{EngineStats, MediumStatus, Resume, Rooms, RoomsBuilder, RoomsEvent};
pub use error::{Error, Result};
pub use gap::GapScope;
pub use ids::{ConnectionId, NodeId, RoomName};
pub use message::{Data, SseMessage};
pub use wire::{Codec, Envelope};

/// The workspace README's Rust examples, compiled and run by `cargo test --doc`
/// (with feature `axum`, which some of them use) so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "axum"))]
pub struct ReadmeDoctests;

/// The `#[async_trait]` attribute [`RoomAdapter`] is written with: implement
/// the trait without a dependency of your own.
pub use async_trait::async_trait;
/// The `bytes` crate: [`AdapterEvent::Control`] frames and encoded envelopes
/// are [`bytes::Bytes`].
pub use bytes;
