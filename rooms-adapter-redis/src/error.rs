//! Turning redis-rs errors (and timeouts) into the one [`rooms_adapter::Error`].
//!
//! Public so that a third-party [`PublishDriver`](crate::PublishDriver) built on
//! redis-rs can report failures exactly as the bundled drivers do.

use std::fmt;
use std::time::Duration;

use redis::{ErrorKind, RedisError, RetryMethod};
use rooms_adapter::Error;

/// Maps a redis-rs error from `operation` against `medium` (e.g.
/// `redis at 127.0.0.1:6379`) to an [`Error`] that says whether retrying helps.
///
/// - I/O failures (refused, reset, closed, timed out) are
///   [`Error::Unavailable`]: retryable.
/// - Authentication and permission failures are [`Error::Backend`] with
///   `retryable: false`: a retry with the same credentials cannot succeed.
/// - Everything else is [`Error::Backend`], retryable when redis-rs says a retry
///   can help (e.g. `LOADING`, `TRYAGAIN`, `MASTERDOWN`).
///
/// ```
/// use rooms_adapter_redis::error::from_redis;
/// let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
/// let error = from_redis("publish", "redis at 127.0.0.1:1", io);
/// assert!(error.is_retryable());
/// assert!(error.to_string().contains("redis at 127.0.0.1:1 is unavailable"));
/// ```
pub fn from_redis(operation: &str, medium: &str, error: RedisError) -> Error {
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        let reason = if error.is_connection_refusal() {
            format!("{operation} failed: connection refused")
        } else if error.is_timeout() {
            format!("{operation} failed: timed out")
        } else if error.is_connection_dropped() {
            format!("{operation} failed: connection lost")
        } else {
            format!("{operation} failed: {error}")
        };
        return Error::Unavailable {
            medium: medium.to_owned(),
            reason,
            source: Some(Box::new(error)),
        };
    }
    let auth = matches!(error.kind(), ErrorKind::AuthenticationFailed)
        || matches!(error.code(), Some("NOPERM" | "WRONGPASS" | "NOAUTH"));
    let retryable = !auth
        && matches!(
            error.retry_method(),
            RetryMethod::RetryImmediately
                | RetryMethod::WaitAndRetry
                | RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
        );
    let context = if auth {
        format!("{operation} on {medium}: access denied")
    } else {
        format!("{operation} on {medium}")
    };
    Error::Backend {
        context,
        retryable,
        source: Box::new(error),
    }
}

/// The error for an operation that did not finish within `after`.
pub fn timeout(operation: impl Into<String>, after: Duration) -> Error {
    Error::Timeout {
        operation: operation.into(),
        after,
    }
}

/// The error of a call made after [`disconnect`](rooms_adapter::RoomAdapter::disconnect)
/// (or before `connect`).
pub(crate) fn closed() -> Error {
    Error::Closed {
        what: "redis adapter",
    }
}

/// A copy of `error` for one of several callers that share one failure (every
/// publish of a failed pipeline). The source chain is kept as text.
pub(crate) fn duplicate(error: &Error) -> Error {
    match error {
        Error::Unavailable { medium, reason, .. } => Error::Unavailable {
            medium: medium.clone(),
            reason: reason.clone(),
            source: None,
        },
        Error::Timeout { operation, after } => Error::Timeout {
            operation: operation.clone(),
            after: *after,
        },
        Error::Closed { what } => Error::Closed { what },
        Error::Backend {
            context,
            retryable,
            source,
        } => Error::Backend {
            context: context.clone(),
            retryable: *retryable,
            source: Box::new(Message(source.to_string())),
        },
        Error::PayloadTooLarge { room, size, limit } => Error::PayloadTooLarge {
            room: room.clone(),
            size: *size,
            limit: *limit,
        },
        Error::Config(message) => Error::Config(message.clone()),
        other => Error::Backend {
            context: "publish".to_owned(),
            retryable: other.is_retryable(),
            source: Box::new(Message(other.to_string())),
        },
    }
}

/// An error that is only a message.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_unavailable_and_retryable() {
        let error = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let mapped = from_redis("subscribe", "redis at x:1", error);
        assert!(matches!(mapped, Error::Unavailable { .. }), "{mapped:?}");
        assert!(mapped.is_retryable());
        assert!(duplicate(&mapped).is_retryable());
    }

    #[test]
    fn auth_errors_are_not_retryable() {
        let error = RedisError::from((ErrorKind::AuthenticationFailed, "bad password"));
        let mapped = from_redis("connect", "redis at x:1", error);
        assert!(!mapped.is_retryable(), "{mapped:?}");
        assert!(mapped.to_string().contains("access denied"), "{mapped}");
    }
}
