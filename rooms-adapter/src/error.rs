//! The one error type of the core and of the adapter contract: [`Error`].

use std::time::Duration;

use crate::ids::ConnectionId;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the rooms engine or in an adapter.
///
/// Each case says whether retrying can help: see [`Error::is_retryable`].
/// Adapters written by third parties report their failures with these cases too,
/// wrapping the client library's error in [`Error::Backend`] or
/// [`Error::Unavailable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The medium (Redis, a bus, ...) cannot be reached now. Retrying later can help.
    #[error("{medium} is unavailable: {reason}")]
    Unavailable {
        /// Which medium, e.g. `redis at 127.0.0.1:6379`.
        medium: String,
        /// Why, in words.
        reason: String,
        /// The client library's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation did not finish in time. Retrying can help.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done, e.g. `publish to room "chat"`.
        operation: String,
        /// The configured limit.
        after: Duration,
    },
    /// An envelope could not be encoded. Retrying the same input cannot help.
    #[error("cannot encode envelope as {codec}: {reason}")]
    Encode {
        /// The codec in use.
        codec: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// An envelope is larger than the configured limit. Retrying cannot help.
    #[error("envelope for room {room:?} is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The room it was meant for.
        room: String,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The adapter or engine was shut down (or never connected). Retrying cannot help.
    #[error("{what} is closed")]
    Closed {
        /// What is closed, e.g. `redis adapter` or `rooms engine`.
        what: &'static str,
    },
    /// A connection id that this engine does not know (never connected, or
    /// already disconnected).
    #[error("connection {0} is not connected to this node")]
    UnknownConnection(ConnectionId),
    /// A connection with this id is already connected to this node.
    #[error("connection {0} is already connected to this node")]
    ConnectionExists(ConnectionId),
    /// An SSE field would break the event stream, e.g. a line break in `event`
    /// or `id` (it would inject fields). Retrying cannot help.
    #[error("invalid SSE {field}: {reason}")]
    InvalidSseField {
        /// `event` or `id`.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A message's `data` is not valid JSON, or is not of the type asked for.
    #[error("invalid message data: {reason}")]
    InvalidData {
        /// The parser's message.
        reason: String,
    },
    /// The adapter does not offer this optional capability (see
    /// [`AdapterCapabilities`](crate::adapter::AdapterCapabilities)).
    #[error("the {adapter} adapter does not support {capability}")]
    Unsupported {
        /// The adapter's name.
        adapter: String,
        /// The capability asked for, e.g. `publish-only emitters`.
        capability: &'static str,
    },
    /// A configuration value is not valid. The message names the value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other failure of the backend's client library.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done when it failed.
        context: String,
        /// Whether retrying the same call can succeed.
        retryable: bool,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether retrying the same call later can succeed.
    ///
    /// ```
    /// use rooms_adapter::Error;
    /// assert!(!Error::Closed { what: "rooms engine" }.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } => true,
            Error::Backend { retryable, .. } => *retryable,
            Error::Encode { .. }
            | Error::PayloadTooLarge { .. }
            | Error::Closed { .. }
            | Error::UnknownConnection(_)
            | Error::ConnectionExists(_)
            | Error::InvalidSseField { .. }
            | Error::InvalidData { .. }
            | Error::Unsupported { .. }
            | Error::Config(_) => false,
        }
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
