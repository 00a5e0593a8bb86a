//! # rooms-adapter-nats
//!
//! NATS core pub/sub medium for [`rooms_adapter`]: broadcast to a room on one
//! node, deliver on every node, over one NATS server or a NATS cluster. Built
//! on [`async_nats`], only through the public contract of `rooms-adapter`
//! (and proven by the `rooms-conformance` suite).
//!
//! - [`NatsAdapter`] implements [`RoomAdapter`](rooms_adapter::RoomAdapter);
//!   configure it with [`NatsAdapter::builder`] (one URL) or
//!   [`NatsAdapter::servers`] (several servers of a cluster).
//! - Envelopes are wire format v1 ([`rooms_adapter::wire`]), JSON by default or
//!   MessagePack; decoding auto-detects, so nodes can switch codecs one by
//!   one. Undecodable payloads are skipped and counted.
//! - **Subjects** (the NATS wire contract, see [`subject`]): room `chat` is
//!   `sse.room.rY2hhdA`, i.e. `{prefix}r{base64url(room)}` without padding.
//!   Any room name works (empty, unicode, `*`, `>`, `.`, spaces, line
//!   breaks); encoded subjects over [`subject::MAX_SUBJECT_BYTES`] are
//!   refused.
//! - One client connection per adapter; one NATS subscription per room with
//!   local members. A subscribe returns once the server has it: the client
//!   publishes a sequence number on its own inbox (`_INBOX.>`, so the
//!   credentials must allow it) and waits for it to come back; a server
//!   handles one connection's messages in order. (async-nats's `flush`
//!   only waits for the socket.) In a cluster, other servers learn of the
//!   subscription a moment later, through the routes. An emptied room stays subscribed for the unsubscribe delay (500 ms
//!   by default) in case it refills; nothing is delivered for it meanwhile.
//! - Capabilities: publish-only emitters
//!   ([`connect_publisher`](rooms_adapter::RoomAdapter::connect_publisher))
//!   and control frames (node liveness, cross-node queries) on
//!   `{control_prefix}all` and `{control_prefix}node.{node token}`.
//! - Credentials: user and password, token, NKey seed or `.creds` file
//!   (feature `nkeys`, on by default). TLS: `tls://` URLs or
//!   [`require_tls`](NatsAdapterBuilder::require_tls), extra root
//!   certificates and client certificates (rustls with `ring`). Certificate
//!   and key files are checked by `build` (an unreadable file, or one without
//!   the PEM block it should hold, is a `Config` error naming it); an
//!   untrusted server, a refused client certificate or a server without TLS
//!   fail the connect at once with a `Backend` error that is not retryable
//!   and says what to check. Every option is tested against a real
//!   `nats-server` (operator/JWT mode for `.creds`).
//!
//! ## Connection loss
//!
//! async-nats reconnects by itself (with the configured backoff, forever,
//! moving to another server of the cluster when there are several) and
//! re-subscribes every room. The adapter reports the outage as
//! [`AdapterEvent::MediumLost`](rooms_adapter::AdapterEvent::MediumLost) once,
//! and [`AdapterEvent::Reconnected`](rooms_adapter::AdapterEvent::Reconnected)
//! with every room and the outage's length once the server has confirmed the
//! re-subscriptions: messages published meanwhile are lost (core NATS has no
//! history), so tell clients to resync.
//!
//! The client would buffer publishes while disconnected and send them,
//! late, after the reconnect; the adapter fails them at once with a
//! retryable [`Error::Unavailable`](rooms_adapter::Error::Unavailable)
//! instead (local delivery by the engine goes on). Subscribing while
//! disconnected fails the same way, and the room stays wanted.
//!
//! A publish that succeeded was handed to the client, which writes it to the
//! server moments later: one made in the instant between a server's crash
//! and the client noticing it (on loopback, about a millisecond) is lost,
//! as with any pub/sub medium.
//!
//! Messages the client drops because a room's buffer is full (a *slow
//! consumer*; see
//! [`subscription_capacity`](NatsAdapterBuilder::subscription_capacity)) are
//! counted in [`AdapterStats::medium_dropped`](rooms_adapter::adapter::AdapterStats::medium_dropped),
//! from the client's slow-consumer events (a lower bound: the client drops
//! its own events when their queue is full). The adapter drains each room's
//! buffer straight into the engine's bounded queue, so this takes a starved
//! runtime; the engine's own overflow is counted in `dropped_inbound` as usual.
//!
//! ## Server settings
//!
//! A NATS server accepts payloads up to its `max_payload`: **1 MiB by
//! default**. The adapter reads it from the server's INFO and fails a larger
//! publish with a non-retryable error naming both sizes. To broadcast
//! messages up to the adapter's own limit (4 MiB by default,
//! [`max_payload_bytes`](NatsAdapterBuilder::max_payload_bytes)), set it in
//! the server configuration of every server of the cluster, e.g.
//! `max_payload: 8MB` (at most 64 MB), and keep `max_pending` above it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rooms_adapter::Rooms;
//! use rooms_adapter_nats::NatsAdapter;
//!
//! # async fn run() -> Result<(), rooms_adapter::Error> {
//! let adapter = NatsAdapter::builder("nats://127.0.0.1:4222")
//!     .publish_timeout(Duration::from_secs(1))
//!     .build()?;
//! let rooms = Rooms::builder(Arc::new(adapter)).build().await?;
//! # rooms.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adapter;
mod builder;
mod config;
pub mod error;
pub mod subject;

pub use adapter::NatsAdapter;
pub use builder::NatsAdapterBuilder;
pub use config::{
    Credentials, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CONTROL_PREFIX_HEAD, DEFAULT_PING_INTERVAL, DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_SUBJECT_PREFIX, DEFAULT_SUBSCRIBE_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY,
    DEFAULT_UNSUBSCRIBE_DELAY, MAX_DURATION, MAX_PAYLOAD_LIMIT, NatsConfig, TlsSettings,
};

/// The async-nats crate this adapter is built on (0.51).
pub use async_nats;

/// A NATS URL with its password or token masked, for logs and errors.
///
/// ```
/// use rooms_adapter_nats::redact_url;
/// assert_eq!(redact_url("nats://app:secret@10.0.0.1:4222"), "nats://app:***@10.0.0.1:4222");
/// assert_eq!(redact_url("nats://s3cr3t@host:4222"), "nats://***@host:4222");
/// assert_eq!(redact_url("tls://host:4222"), "tls://host:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_owned(),
    };
    format!("{scheme}{masked}{}", &rest[at..])
}
