//! Turning async-nats errors (and timeouts) into the one
//! [`rooms_adapter::Error`]: every case says whether retrying helps.

use std::fmt;
use std::time::Duration;

use async_nats::ConnectErrorKind;
use rooms_adapter::Error;

/// Maps a failed connect to `medium` (e.g. `nats at 127.0.0.1:4222`).
///
/// - Authentication, authorization and TLS failures (a bad setup, an
///   untrusted server certificate), and unparsable server lists, are
///   [`Error::Backend`] with `retryable: false`: retrying with the same
///   settings cannot succeed.
/// - Everything else (refused, DNS, timed out, I/O) is
///   [`Error::Unavailable`]: retryable.
///
/// ```
/// use rooms_adapter_nats::error::from_connect;
/// let error = async_nats::ConnectError::new(async_nats::ConnectErrorKind::Io);
/// let mapped = from_connect("nats at 127.0.0.1:1", error);
/// assert!(mapped.is_retryable());
/// assert!(mapped.to_string().contains("nats at 127.0.0.1:1 is unavailable"), "{mapped}");
///
/// let denied = async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation);
/// assert!(!from_connect("nats at x:1", denied).is_retryable());
/// ```
pub fn from_connect(medium: &str, error: async_nats::ConnectError) -> Error {
    // async-nats reports TLS failures as I/O errors; rustls's error under
    // them says what it is. Retrying cannot fix it.
    if let Some(tls) = rustls_error(&error) {
        use async_nats::rustls::Error as Tls;
        let what = match tls {
            Tls::InvalidCertificate(_) => {
                "the server's certificate is not trusted (add its CA with tls_root_certificates)"
            }
            Tls::AlertReceived(_) => {
                "the server refused the handshake (does it accept the client certificate of \
                 tls_client_certificate?)"
            }
            _ => {
                "the handshake failed (does the server speak TLS? require_tls and tls:// URLs ask for it)"
            }
        };
        return Error::Backend {
            context: format!("connect to {medium}: TLS: {what}"),
            retryable: false,
            source: Box::new(error),
        };
    }
    match error.kind() {
        ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls
        | ConnectErrorKind::ServerParse => Error::Backend {
            context: format!("connect to {medium}: {}", error.kind()),
            retryable: false,
            source: Box::new(error),
        },
        _ => Error::Unavailable {
            medium: medium.to_owned(),
            reason: format!("connect failed: {error}"),
            source: Some(Box::new(error)),
        },
    }
}

/// The rustls error under a connect error, if any.
fn rustls_error(error: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<async_nats::rustls::Error>() {
            return Some(found);
        }
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        cause = current.source();
    }
    None
}

/// The retryable error of an operation tried while the client is not
/// connected (it would only be buffered).
pub(crate) fn disconnected(medium: &str, operation: &str) -> Error {
    Error::Unavailable {
        medium: medium.to_owned(),
        reason: format!("{operation} failed: the client is disconnected (reconnecting)"),
        source: None,
    }
}

/// Maps any other client error of `operation`: the client is gone or
/// disconnected, so retrying later can help.
pub(crate) fn unavailable(
    medium: &str,
    operation: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Unavailable {
        medium: medium.to_owned(),
        reason: format!("{operation} failed: {error}"),
        source: Some(Box::new(error)),
    }
}

/// The error for an operation that did not finish within `after`.
pub(crate) fn timeout(operation: impl Into<String>, after: Duration) -> Error {
    Error::Timeout {
        operation: operation.into(),
        after,
    }
}

/// The error of a call made after `disconnect` (or before `connect`).
pub(crate) fn closed() -> Error {
    Error::Closed {
        what: "nats adapter",
    }
}

/// An envelope larger than the server's `max_payload`.
pub(crate) fn over_server_max_payload(target: &str, size: usize, server_max: usize) -> Error {
    Error::Backend {
        context: format!("publish to {target}"),
        retryable: false,
        source: Box::new(Message(format!(
            "the envelope is {size} bytes, over the NATS server's max_payload of {server_max} \
             bytes (raise max_payload in the server's configuration, or send less)"
        ))),
    }
}

/// A room (or node) whose subject would be too long for the server.
pub(crate) fn subject_too_long(what: &str, subject_len: usize) -> Error {
    Error::Backend {
        context: format!("the subject of {what}"),
        retryable: false,
        source: Box::new(Message(format!(
            "it is {subject_len} bytes, over the limit of {} bytes (a NATS server drops a \
             connection whose protocol line exceeds its max_control_line)",
            crate::subject::MAX_SUBJECT_BYTES
        ))),
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
