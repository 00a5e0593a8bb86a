//! # rooms-adapter-postgres
//!
//! PostgreSQL `LISTEN`/`NOTIFY` medium for [`rooms_adapter`]: broadcast to a
//! room on one node, deliver on every node, for teams that run PostgreSQL
//! and nothing else. Built on [`tokio_postgres`] (one dedicated listening
//! connection per node) and [`deadpool_postgres`] (a pool for publishing),
//! only through the public contract of `rooms-adapter`, and proven by the
//! `rooms-conformance` suite.
//!
//! - [`PostgresAdapter`] implements [`RoomAdapter`](rooms_adapter::RoomAdapter);
//!   configure it with [`PostgresAdapter::builder`].
//! - **Channels** ([`channel`]): a channel is an identifier of at most 63
//!   bytes, so room `chat` listens on `sse_room_` + a 26-character hash
//!   (128 bits of SHA-256, base32): any room name fits, names sharing a
//!   long prefix never collide. `LISTEN`/`UNLISTEN` go in batches on the
//!   listening connection, one round trip for many rooms; a subscribe
//!   returns once the server confirmed its `LISTEN`. An emptied room stays
//!   listened for the unsubscribe delay (500 ms by default) in case it
//!   refills; nothing is delivered for it meanwhile.
//! - **Payloads** ([`frame`]): envelopes are wire format v1
//!   ([`rooms_adapter::wire`]), JSON by default or MessagePack. A `NOTIFY`
//!   payload is text under 8000 bytes: JSON travels as it is, MessagePack as
//!   `~` + base64. Undecodable payloads are skipped and counted.
//! - **Attachments**: a frame over the threshold (7999 bytes) is stored in
//!   the attachments table (`rooms_attachments` by default; created by
//!   `connect` if missing, or by a migration:
//!   [`PostgresAdapter::attachment_table_sql`]) and the notification carries
//!   `@{id}`. The `INSERT` and the `pg_notify` are one statement, so one
//!   transaction: receivers are notified when the row is visible, and read
//!   it through the pool (in arrival order: later messages wait for it).
//!   Every connected node deletes rows older than the attachment TTL (60 s)
//!   every cleanup interval (10 s); a node that reads an attachment later
//!   than the TTL misses its message (counted as a decode error). Rows over
//!   the receiver's `max_payload_bytes` are never transferred.
//! - Capabilities: publish-only emitters
//!   ([`connect_publisher`](rooms_adapter::RoomAdapter::connect_publisher):
//!   the pool only) and control frames (node liveness, cross-node queries)
//!   on `{control_prefix}all` and `{control_prefix}n{hash}`. No history.
//! - TLS (feature `tls`, on by default): rustls, every certificate
//!   verified; see [TLS](#tls).
//!
//! ## Connection loss
//!
//! The listening connection is probed (`SELECT 1`) every ping interval. When
//! it fails, breaks or the probe goes unanswered, the adapter reports
//! [`AdapterEvent::MediumLost`](rooms_adapter::AdapterEvent::MediumLost)
//! once, reconnects with capped exponential backoff and jitter, `LISTEN`s
//! every wanted room again, and reports
//! [`AdapterEvent::Reconnected`](rooms_adapter::AdapterEvent::Reconnected)
//! with the rooms and the outage's length. Notifications sent meanwhile are
//! lost (PostgreSQL only queues them for live sessions): tell clients to
//! resync.
//!
//! Publishing goes through the pool: while the server is down a publish
//! fails with a retryable error, at once when connections are refused and
//! within the publish timeout otherwise (local delivery by the engine goes
//! on). Subscribing while the listening connection is down fails at once,
//! and the room stays wanted.
//!
//! ## TLS
//!
//! With feature `tls` (on by default) both the publishing pool and the
//! listening connection speak TLS through rustls (tokio-postgres-rustls,
//! with rustls's `ring` provider chosen explicitly: nothing is installed
//! process-wide, and an application that also enables `aws-lc-rs` is not
//! disturbed). Every certificate is verified, host name included: against
//! the system's roots plus those of
//! [`tls_root_certificates`](PostgresAdapterBuilder::tls_root_certificates).
//! The adapter never speaks unverified TLS, so the connection string's
//! `sslmode` reads:
//!
//! | `sslmode` | TLS options of the builder | the connections |
//! |---|---|---|
//! | `disable` | none | plain |
//! | `disable` | any | a configuration error |
//! | `prefer`, or none (tokio-postgres's default) | none | plain (libpq's `prefer` does not verify; this adapter does not guess) |
//! | `prefer`, or none | root certificates or a client certificate | TLS, verified, when the server offers it; plain when it does not |
//! | `require` | any | TLS, verified; a server without TLS fails the connect |
//! | `prefer` or `require` | [`require_tls(true)`](PostgresAdapterBuilder::require_tls) | as `require` |
//!
//! So `require` here is libpq's `verify-full` (tokio-postgres reads neither
//! `verify-ca`/`verify-full` nor `sslrootcert`: use the builder). A client
//! certificate ([`tls_client_certificate`](PostgresAdapterBuilder::tls_client_certificate))
//! serves `cert` authentication (`clientcert=verify-full` in `pg_hba.conf`).
//! Certificate files are read by `build`: an unreadable or invalid one is a
//! [`Config`](rooms_adapter::Error::Config) error naming the file. A server
//! whose certificate is not trusted, a server without TLS when TLS is
//! required, or a refused client certificate fail the connect at once with
//! a [`Backend`](rooms_adapter::Error::Backend) error that is not
//! retryable; the listening connection keeps retrying in the background
//! after a later loss, as for any other failure.
//!
//! ```no_run
//! use rooms_adapter_postgres::PostgresAdapter;
//!
//! let adapter = PostgresAdapter::builder("postgres://app@db.internal:5432/app?sslmode=require")
//!     .tls_root_certificates("/etc/rooms/db-ca.pem")
//!     .tls_client_certificate("/etc/rooms/app.crt", "/etc/rooms/app.key")
//!     .build()?;
//! assert!(adapter.config().uses_tls());
//! # Ok::<(), rooms_adapter::Error>(())
//! ```
//!
//! Without feature `tls`, connections are plain and `sslmode=require` is a
//! configuration error.
//!
//! ## Server side
//!
//! - The database encoding must be UTF8 (the default).
//! - Each node holds one listening connection and up to `pool_size` (8)
//!   publishing connections: mind `max_connections`.
//! - A listening session that falls behind holds the server's notification
//!   queue (8 GB by default) back; the adapter reads without waiting on the
//!   engine (a full engine queue drops and counts), and waits only while
//!   attachments are read: when 256 notifications wait behind attachment
//!   reads it stops reading until the first is in (each read has the
//!   publish timeout). The probe's answer and `LISTEN` confirmations wait
//!   behind the unread notifications too, so that time counts neither
//!   against the probe (no false `MediumLost`) nor against the subscribe
//!   timeout (a subscribe waits for the reads).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rooms_adapter::Rooms;
//! use rooms_adapter_postgres::PostgresAdapter;
//!
//! # async fn run() -> Result<(), rooms_adapter::Error> {
//! let adapter = PostgresAdapter::builder("postgres://app@127.0.0.1:5432/app")
//!     .publish_timeout(Duration::from_secs(1))
//!     .build()?;
//! let rooms = Rooms::builder(Arc::new(adapter)).build().await?;
//! # rooms.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adapter;
mod batch;
mod builder;
pub mod channel;
mod config;
pub mod error;
pub mod frame;
mod listener;
mod publisher;
mod table;
mod tls;

pub use adapter::PostgresAdapter;
pub use builder::PostgresAdapterBuilder;
#[cfg(feature = "tls")]
pub use config::TlsSettings;
pub use config::{
    DEFAULT_ATTACHMENT_TABLE, DEFAULT_ATTACHMENT_TTL, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN,
    DEFAULT_CHANNEL_PREFIX, DEFAULT_CLEANUP_INTERVAL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CONTROL_PREFIX_HEAD, DEFAULT_PING_INTERVAL, DEFAULT_POOL_SIZE, DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_SUBSCRIBE_TIMEOUT, DEFAULT_UNSUBSCRIBE_DELAY, MAX_DURATION, MAX_PAYLOAD_LIMIT,
    PostgresConfig,
};

/// The deadpool-postgres crate of the publishing pool (0.14).
pub use deadpool_postgres;
/// The tokio-postgres crate this adapter is built on (0.7).
pub use tokio_postgres;
