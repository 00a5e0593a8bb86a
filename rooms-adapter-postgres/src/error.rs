//! [`PostgresError`]: what goes wrong in this crate, and how it becomes the
//! one [`rooms_adapter::Error`] of the contract (each case says whether
//! retrying helps).

use std::time::Duration;

use rooms_adapter::Error;

/// Everything that goes wrong in this crate: settings, the server, TLS,
/// timeouts, and notification payloads that are not frames
/// ([`frame::parse`](crate::frame::parse)). Converted into
/// [`rooms_adapter::Error`] at the adapter's surface:
///
/// ```
/// use rooms_adapter_postgres::error::PostgresError;
///
/// let error: rooms_adapter::Error = PostgresError::InvalidSetting {
///     setting: "channel_prefix",
///     reason: "channel_prefix must not be empty".into(),
/// }
/// .into();
/// assert!(!error.is_retryable());
/// assert!(error.to_string().contains("channel_prefix"), "{error}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// A builder setting is invalid; the reason names the value.
    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// Why, naming the bad value.
        reason: String,
    },
    /// The server cannot be reached, or the connection broke.
    #[error("{medium} is unavailable: {operation} failed: {}", in_words(.source))]
    Unavailable {
        /// E.g. `postgres at 127.0.0.1:5432/test`.
        medium: String,
        /// What was being done.
        operation: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection from the pool (the server is down, or every connection
    /// is busy for longer than the timeout).
    #[error("{medium} is unavailable: no connection for {operation}: {reason}")]
    Pool {
        /// The medium.
        medium: String,
        /// What was being done.
        operation: String,
        /// The pool's error, in words.
        reason: String,
    },
    /// The server refused a statement for a reason retrying cannot fix
    /// (permissions, a missing table, ...).
    #[error("{operation} was refused by {medium}: {}", in_words(.source))]
    Refused {
        /// The medium.
        medium: String,
        /// What was being done.
        operation: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// TLS failed in a way retrying cannot fix: the server's certificate is
    /// not trusted (or not for this host), the server has no TLS while it
    /// is required, or the server refused the client certificate.
    #[error("TLS with {medium} failed: {reason}")]
    Tls {
        /// The medium.
        medium: String,
        /// What was being done.
        operation: String,
        /// What went wrong, in words (rustls's, and what to check).
        reason: String,
        /// The client's error (it carries rustls's words).
        #[source]
        source: tokio_postgres::Error,
    },
    /// A `~` notification payload (inline binary, see
    /// [`frame`](crate::frame)) whose rest is not base64.
    #[error("a `~` frame is not valid base64: {reason}")]
    InvalidBinaryFrame {
        /// The decoder's words.
        reason: String,
    },
    /// An `@` notification payload (attachment reference) whose rest is not
    /// a positive decimal row id.
    #[error("an `@` frame is not a row id: {found:?}")]
    InvalidReferenceFrame {
        /// What follows the `@` (its first 40 characters).
        found: String,
    },
    /// An operation took too long.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// The limit.
        after: Duration,
    },
}

impl PostgresError {
    /// A client error of `operation`: `Refused` when the server answered
    /// with an error that is not about the connection, else `Unavailable`.
    pub(crate) fn from_client(
        medium: &str,
        operation: impl std::fmt::Display,
        source: tokio_postgres::Error,
    ) -> Self {
        let refused = source.as_db_error().is_some_and(|db| {
            // Class 08 (connection exception), 53 (insufficient resources),
            // 57 (operator intervention: shutdown, admin shutdown) and 40
            // (serialization failure, deadlock) are worth retrying.
            let code = db.code().code();
            !(code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code.starts_with("40"))
        });
        let (medium, operation) = (medium.to_owned(), operation.to_string());
        if let Some(reason) = crate::tls::setup_error(&source) {
            PostgresError::Tls {
                medium,
                operation,
                reason,
                source,
            }
        } else if refused {
            PostgresError::Refused {
                medium,
                operation,
                source,
            }
        } else {
            PostgresError::Unavailable {
                medium,
                operation,
                source,
            }
        }
    }
}

impl From<PostgresError> for Error {
    fn from(error: PostgresError) -> Self {
        match error {
            PostgresError::InvalidSetting { .. } => Error::Config(error.to_string()),
            PostgresError::Timeout { operation, after } => Error::Timeout { operation, after },
            PostgresError::Unavailable {
                ref medium,
                ref operation,
                ref source,
            } => Error::Unavailable {
                medium: medium.clone(),
                reason: format!("{operation} failed: {}", in_words(source)),
                source: Some(Box::new(error)),
            },
            PostgresError::Pool {
                ref medium,
                ref operation,
                ref reason,
            } => Error::Unavailable {
                medium: medium.clone(),
                reason: format!("no connection for {operation}: {reason}"),
                source: Some(Box::new(error)),
            },
            PostgresError::Refused { ref operation, .. } => Error::Backend {
                context: operation.clone(),
                retryable: false,
                source: Box::new(error),
            },
            PostgresError::InvalidBinaryFrame { .. }
            | PostgresError::InvalidReferenceFrame { .. } => Error::Backend {
                context: "read a notification payload".into(),
                retryable: false,
                source: Box::new(error),
            },
            PostgresError::Tls { ref operation, .. } => Error::Backend {
                context: operation.clone(),
                retryable: false,
                source: Box::new(error),
            },
        }
    }
}

/// A client error with its causes: tokio-postgres's own words ("db error",
/// "error performing TLS handshake") say little without them.
pub(crate) fn in_words(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

/// The error of a call made after `disconnect` (or before `connect`).
pub(crate) fn closed() -> Error {
    Error::Closed {
        what: "postgres adapter",
    }
}
