//! # rooms-adapter-redis
//!
//! Redis pub/sub medium for [`rooms_adapter`]: broadcast to a room on one node,
//! deliver on every node. Wire-compatible (v1, JSON) with the npm package
//! `@opinionated-machine/sse-rooms-redis`, so Rust and Node.js nodes can share a
//! Redis and a room.
//!
//! - [`RedisAdapter`] implements [`RoomAdapter`](rooms_adapter::RoomAdapter);
//!   configure it with [`RedisAdapter::builder`].
//! - Publishing goes through a [`PublishDriver`], chosen by cargo feature:
//!   `redis` (default, `RedisDriver`), `deadpool` (`DeadpoolDriver`),
//!   `bb8` (`Bb8Driver`), or your own implementation. Sentinel and Cluster
//!   use their own built-in driver (or yours).
//! - Subscribing always uses one dedicated connection per adapter (a subscribed
//!   Redis connection can run nothing else): **two connections per node**
//!   (more with a pool driver).
//! - TLS: `rediss://` URLs with feature `tls` (see [TLS](#tls)). ACL:
//!   `redis://user:password@host`.
//! - One adapter for every topology, one builder:
//!   [`RedisAdapter::builder`] (one server by URL),
//!   [`RedisAdapter::from_client`] (your own `redis::Client`),
//!   `RedisAdapter::sentinel` (feature `sentinel`: follows the master through
//!   failovers) and `RedisAdapter::cluster` (feature `cluster`, Redis 7+:
//!   sharded pub/sub, `SPUBLISH` / `SSUBSCRIBE`, one subscriber connection
//!   per master, following slot moves and failovers).
//! - Needs Redis 6 or later (the subscriber speaks RESP3). Valkey is not
//!   tested.
//! - [`RedisEventIdSequence`]: cluster-wide, string-sortable SSE event ids.
//! - [`redact_url`]: a Redis URL with its passwords masked, for logs and
//!   errors (the builders' `Debug` output uses it too).
//!
//! ## TLS
//!
//! With feature `tls`, `rediss://` URLs connect through rustls. redis-rs
//! builds the TLS configuration itself with rustls's process-wide default
//! crypto provider, and this crate never installs one: when the `ring`
//! provider this feature compiles in is the only one in the build, rustls
//! picks it by itself. When something else in the application also enables
//! rustls's `aws-lc-rs` provider, rustls cannot choose, and the application
//! installs one at start-up, before the first connection (as rustls asks of
//! every application):
//!
//! ```
//! # #[cfg(feature = "tls")]
//! let _ = rooms_adapter_redis::rustls::crypto::ring::default_provider().install_default();
//! ```
//!
//! ## Connection loss
//!
//! While Redis is down, publishes fail within the publish timeout with a
//! retryable error (local delivery by the engine goes on), and `subscribe`
//! fails after the subscribe timeout with a retryable error while the room
//! stays wanted. The subscriber reconnects with capped exponential backoff and
//! jitter, re-subscribes every wanted room in batches and emits
//! [`AdapterEvent::Reconnected`](rooms_adapter::AdapterEvent::Reconnected) with
//! the rooms and the length of the outage: messages published meanwhile are
//! lost to plain pub/sub, so tell clients to resync (or turn history on, see
//! below: what reached the history can be replayed). A subscription that
//! dies silently is caught by a periodic PING.
//!
//! ## Control channel
//!
//! The adapter offers the engine's control capability
//! ([`AdapterCapabilities::control`](rooms_adapter::AdapterCapabilities::control)):
//! node heartbeats and cross-node queries travel as opaque frames on two
//! channels per node, next to the room channels. This naming is wire
//! contract, for nodes written in other languages:
//!
//! | channel | subscribed by | [`ControlTarget`](rooms_adapter::ControlTarget) |
//! |---|---|---|
//! | `{control_prefix}all` | every node connected with `connect` | `All` |
//! | `{control_prefix}node:{node_id}` | node `node_id` | `Node(node_id)` |
//!
//! The control prefix defaults to `rooms-control:{channel_prefix}`
//! (`rooms-control:sse:room:` by default; [`default_control_prefix`]).
//! Frames are published with `PUBLISH` (`SPUBLISH` on a cluster) and handed
//! over undecoded; the channels are re-subscribed after reconnects,
//! failovers and slot moves like rooms, but are never counted as
//! subscriptions nor listed in `Reconnected`. Control frames are not
//! envelopes: they are not counted in the `published`, `publish_errors` and
//! `received` stats; an inbound frame over the payload limit is skipped and
//! counted as a `TooLarge` decode error. See
//! [`RedisAdapterBuilder::control_prefix`] and
//! [`RedisAdapterBuilder::control`].
//!
//! ## History
//!
//! The adapter offers the history capability
//! ([`AdapterCapabilities::history`](rooms_adapter::AdapterCapabilities::history))
//! on every topology (single server, Sentinel, Cluster) and with every
//! bundled driver (a custom [`PublishDriver`] needs
//! [`run_script`](PublishDriver::run_script)). Turn it on in the engine with
//! [`RoomsBuilder::history`](rooms_adapter::RoomsBuilder::history). This
//! layout is wire contract, for nodes written in other languages:
//!
//! | key | type | content |
//! |---|---|---|
//! | `rooms-history:{T}:{channel}` | Stream | one entry per message: id `{offset}-0`, field `d` = the encoded envelope, its message id set |
//! | `rooms-history-meta:{T}:{channel}` | Hash | `e` = the epoch (12 lowercase hex digits), `o` = the last offset given out |
//!
//! `channel` is the room's channel, `{prefix}{room}`. `T` is the channel's
//! *slot tag*: the first string of `0`, `1`, .. `9`, `a`, .. `z`, `00`,
//! `01`, .. `zz`, `000`, .. (all strings of length 1, then 2, then 3, ..,
//! each length in base-36 counting order over `0-9a-z`; every slot has a
//! tag of at most 4 characters, e.g. slot 277's is `03bg`) whose hash slot
//! ([`key_slot`]) is the channel's. Both keys thus
//! live in the channel's slot, whatever braces the room name holds, so on a
//! cluster one script on one master touches both keys and `SPUBLISH`es on
//! the channel. Single servers and Sentinel use the same names.
//!
//! A publish with history is one Lua script (`EVALSHA`, `EVAL` when the
//! server does not know it yet): it takes the epoch from the hash (or starts
//! a new one, dropping any stale stream, when the hash is missing or not
//! ours), increments `o`, writes the position id
//! `h1.{epoch}.{offset:016x}` into the encoded envelope in place of a
//! random placeholder id of the same length (the node sends the bytes
//! before and after it; a message with an id of its own is stored as it
//! is), `XADD`s it with `MAXLEN {max_len}` (exact),
//! makes sure both keys expire between `ttl` and `ttl` plus a sixteenth
//! after this message (`PEXPIRE`, only when what is left is outside that
//! window: a busy room refreshes the expiry about once per 32nd of `ttl`;
//! and a node that has checked a room's expiry skips the `PTTL` of its
//! publishes there for the next 32nd of `ttl`, when the keys are known to
//! have at least `ttl` left), and
//! publishes the same bytes on the channel (`PUBLISH`, `SPUBLISH` on a
//! cluster). Redis runs a script atomically, so a room's history order is
//! the order every node receives its messages in. A read is one script too:
//! the epoch and latest offset from the hash, the oldest entry's offset
//! (`first`), and at most `limit` entries after an offset (`XRANGE ..
//! COUNT limit`: one page; the engine reads
//! [`READ_PAGE`](rooms_adapter::history::READ_PAGE) at a time); entries that
//! do not decode are skipped and counted as decode errors (the next page
//! still starts after them). Publishing and
//! reading fail within the publish timeout with a retryable error while
//! Redis is down, like `publish`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rooms_adapter::Rooms;
//! use rooms_adapter_redis::RedisAdapter;
//!
//! # async fn run() -> Result<(), rooms_adapter::Error> {
//! let adapter = RedisAdapter::builder("redis://127.0.0.1:6379")
//!     .publish_timeout(Duration::from_secs(1))
//!     .build()?;
//! let rooms = Rooms::builder(Arc::new(adapter)).build().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adapter;
mod builder;
mod config;
mod control;
pub mod error;
mod expiry;
mod history;
mod publish;
mod sequence;
mod subscribe;

pub use adapter::RedisAdapter;
pub use builder::RedisAdapterBuilder;
pub use config::url::redact_url;
pub use config::{
    Backoff, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, DEFAULT_PIPELINES_IN_FLIGHT, DEFAULT_POOL_SIZE,
    DEFAULT_PUBLISH_BATCH, DEFAULT_PUBLISH_QUEUE, DEFAULT_PUBLISH_TIMEOUT, DEFAULT_SUBSCRIBE_BATCH,
    DEFAULT_SUBSCRIBE_TIMEOUT, DEFAULT_UNSUBSCRIBE_DELAY, MAX_DURATION, MAX_POOL_SIZE, RedisConfig,
};
pub use control::{CONTROL_PREFIX_BASE, default_control_prefix};
#[cfg(feature = "cluster")]
pub use publish::ClusterDriver;
#[cfg(feature = "deadpool")]
pub use publish::DeadpoolDriver;
#[cfg(feature = "redis")]
pub use publish::RedisDriver;
#[cfg(feature = "bb8")]
pub use publish::{Bb8Driver, Bb8Pool};
pub use publish::{DriverOptions, PublishDriver, PublishItem, ScriptCall, run_script_on};
pub use sequence::RedisEventIdSequence;
pub use subscribe::{SLOT_COUNT, key_slot};

/// The redis-rs crate this adapter is built on (1.x), for custom drivers.
pub use redis;

/// The rustls crate the `tls` feature builds on (0.23, with its `ring`
/// provider compiled in), to install a process-wide crypto provider; see
/// [TLS](crate#tls).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;
