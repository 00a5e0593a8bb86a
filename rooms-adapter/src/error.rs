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

impl Error {
    /// The HTTP status code that answers this error. With
    /// [`code`](Self::code) and [`public_message`](Self::public_message) it
    /// is what the axum `IntoResponse` impl (feature `axum`) answers, and
    /// what other frameworks can answer the same way.
    ///
    ///
    /// | case | status | `code` |
    /// |---|---|---|
    /// | [`InvalidSseField`](Error::InvalidSseField), [`InvalidData`](Error::InvalidData) | 400 Bad Request | `invalid_sse_field`, `invalid_data` |
    /// | [`UnknownConnection`](Error::UnknownConnection) | 404 Not Found | `unknown_connection` |
    /// | [`ConnectionExists`](Error::ConnectionExists) | 409 Conflict | `connection_exists` |
    /// | [`PayloadTooLarge`](Error::PayloadTooLarge) | 413 Content Too Large | `payload_too_large` |
    /// | [`Unavailable`](Error::Unavailable), [`Timeout`](Error::Timeout), retryable [`Backend`](Error::Backend) | 503 Service Unavailable, `Retry-After: 1` | `unavailable`, `timeout`, `backend` |
    /// | [`Closed`](Error::Closed) | 503 Service Unavailable | `closed` |
    /// | [`Unsupported`](Error::Unsupported) | 501 Not Implemented | `unsupported` |
    /// | [`Encode`](Error::Encode), [`Config`](Error::Config), other [`Backend`](Error::Backend) | 500 Internal Server Error | `encode`, `config`, `backend` |
    ///
    /// The public message of a client error (4xx) describes the request's
    /// input; that of a server error (5xx) is generic and never carries the
    /// error's text, which can name the medium (`redis at 10.0.0.5:6379`) or
    /// other internals.
    ///
    /// ```
    /// use rooms_adapter::Error;
    /// let error = Error::PayloadTooLarge { room: "lobby".into(), size: 5_000_000, limit: 4_194_304 };
    /// assert_eq!(error.http_status(), 413);
    /// ```
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidSseField { .. } | Error::InvalidData { .. } => 400,
            Error::UnknownConnection(_) => 404,
            Error::ConnectionExists(_) => 409,
            Error::PayloadTooLarge { .. } => 413,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Closed { .. } => 503,
            Error::Backend { retryable, .. } => {
                if *retryable {
                    503
                } else {
                    500
                }
            }
            Error::Unsupported { .. } => 501,
            Error::Encode { .. } | Error::Config(_) => 500,
        }
    }

    /// A stable, machine-readable name of the case, e.g. `unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::Encode { .. } => "encode",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Closed { .. } => "closed",
            Error::UnknownConnection(_) => "unknown_connection",
            Error::ConnectionExists(_) => "connection_exists",
            Error::InvalidSseField { .. } => "invalid_sse_field",
            Error::InvalidData { .. } => "invalid_data",
            Error::Unsupported { .. } => "unsupported",
            Error::Config(_) => "config",
            Error::Backend { .. } => "backend",
        }
    }

    /// What a client may be told: for a client error its full text (it is
    /// about the client's input), for a server error a generic sentence that
    /// names no medium, address or configuration value.
    ///
    /// ```
    /// use rooms_adapter::Error;
    /// let down = Error::Unavailable {
    ///     medium: "redis at 10.0.0.5:6379".into(),
    ///     reason: "connection refused".into(),
    ///     source: None,
    /// };
    /// assert!(!down.public_message().contains("10.0.0.5"));
    /// ```
    pub fn public_message(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Error::InvalidSseField { .. }
            | Error::InvalidData { .. }
            | Error::UnknownConnection(_)
            | Error::ConnectionExists(_) => Cow::Owned(self.to_string()),
            Error::PayloadTooLarge { size, limit, .. } => Cow::Owned(format!(
                "the message is {size} bytes encoded, over the limit of {limit} bytes"
            )),
            Error::Unavailable { .. } | Error::Timeout { .. } => {
                Cow::Borrowed("temporarily unavailable; try again later")
            }
            Error::Backend {
                retryable: true, ..
            } => Cow::Borrowed("temporarily unavailable; try again later"),
            Error::Closed { .. } => Cow::Borrowed("the server is shutting down"),
            Error::Unsupported { capability, .. } => Cow::Owned(format!(
                "this server's backend does not support {capability}"
            )),
            Error::Encode { .. } | Error::Config(_) | Error::Backend { .. } => {
                Cow::Borrowed("internal error")
            }
        }
    }
}

/// Answers an [`Error`] from an axum handler: the status of
/// [`Error::http_status`] (with `Retry-After: 1` when
/// [retryable](Error::is_retryable)) and a JSON body
/// `{"error": <public_message>, "code": <code>}`. A server error's details
/// are logged (at `warn` when retryable, `error` otherwise), never answered.
///
/// ```
/// use axum::response::IntoResponse;
/// use rooms_adapter::{ConnectionId, Error, Rooms};
///
/// // A handler can return the engine's errors with `?`:
/// async fn kick(rooms: Rooms, id: String) -> Result<&'static str, Error> {
///     rooms.leave_all(&ConnectionId::from(id)).await?;
///     Ok("kicked")
/// }
///
/// let response = Error::UnknownConnection("c-1".into()).into_response();
/// assert_eq!(response.status(), 404);
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{HeaderValue, StatusCode, header};

        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            if self.is_retryable() {
                tracing::warn!(error = %self, status = status.as_u16(), "answering an engine error");
            } else if !matches!(self, Error::Closed { .. }) {
                tracing::error!(error = %self, status = status.as_u16(), "answering an engine error");
            }
        }
        let body = serde_json::json!({"error": self.public_message(), "code": self.code()});
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.is_retryable() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn every_case() -> Vec<Error> {
        vec![
            Error::Unavailable {
                medium: "redis at 10.1.2.3:6380".into(),
                reason: "connection refused (redis://10.1.2.3:6380)".into(),
                source: None,
            },
            Error::Timeout {
                operation: "publish to redis at 10.1.2.3:6380".into(),
                after: Duration::from_secs(2),
            },
            Error::Encode {
                codec: "msgpack",
                reason: "10.1.2.3".into(),
            },
            Error::PayloadTooLarge {
                room: "lobby".into(),
                size: 10,
                limit: 5,
            },
            Error::Closed {
                what: "rooms engine",
            },
            Error::UnknownConnection("c-1".into()),
            Error::ConnectionExists("c-1".into()),
            Error::InvalidSseField {
                field: "id",
                reason: "contains a line break (CR or LF)",
            },
            Error::InvalidData {
                reason: "expected value at line 1 column 1".into(),
            },
            Error::Unsupported {
                adapter: "redis at 10.1.2.3:6380".into(),
                capability: "history",
            },
            Error::Config("redis://10.1.2.3:6380".into()),
            Error::Backend {
                context: "publish to redis at 10.1.2.3:6380".into(),
                retryable: true,
                source: "Connection refused 10.1.2.3:6380".into(),
            },
            Error::Backend {
                context: "subscribe on redis at 10.1.2.3:6380".into(),
                retryable: false,
                source: "NOAUTH 10.1.2.3:6380".into(),
            },
        ]
    }

    #[test]
    fn http_status_of_every_case() {
        let statuses: Vec<(&str, u16)> = every_case()
            .iter()
            .map(|error| (error.code(), error.http_status()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("unavailable", 503),
                ("timeout", 503),
                ("encode", 500),
                ("payload_too_large", 413),
                ("closed", 503),
                ("unknown_connection", 404),
                ("connection_exists", 409),
                ("invalid_sse_field", 400),
                ("invalid_data", 400),
                ("unsupported", 501),
                ("config", 500),
                ("backend", 503),
                ("backend", 500),
            ]
        );
    }

    #[test]
    fn server_errors_never_name_the_medium() {
        for error in every_case() {
            if error.http_status() >= 500 {
                let message = error.public_message();
                for leak in ["10.1.2.3", "6380", "redis"] {
                    assert!(
                        !message.contains(leak),
                        "{message:?} leaks {leak} of {error}"
                    );
                }
            }
        }
        let input = Error::InvalidSseField {
            field: "event",
            reason: "contains a line break (CR or LF)",
        };
        assert_eq!(input.public_message(), input.to_string());
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn into_response_answers_status_retry_after_and_json() {
        use axum::http::header;
        use axum::response::IntoResponse;

        for error in every_case() {
            let (status, retryable, code, message) = (
                error.http_status(),
                error.is_retryable(),
                error.code(),
                error.public_message().into_owned(),
            );
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{code}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).is_some(),
                retryable,
                "{code}"
            );
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .expect("body");
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["code"], code);
            assert_eq!(body["error"], message.as_str());
        }
    }
}
