//! The PostgreSQL wire contract for payloads: how an encoded envelope (or a
//! control frame: any bytes) travels in a `NOTIFY` payload, which is text of
//! fewer than 8000 bytes in the database encoding, without NUL bytes.
//!
//! A notification payload is one of:
//!
//! | first character | frame | what follows |
//! |---|---|---|
//! | `~` | inline binary | the bytes in standard base64 (with `=` padding) |
//! | `@` | attachment reference | the decimal id of a row of the attachments table |
//! | anything else | inline text | the bytes themselves (UTF-8) |
//!
//! - A JSON envelope starts with `{`: it travels as it is, readable with
//!   `LISTEN` in `psql`, and TypeScript or SQL publishers can send one with
//!   a plain `pg_notify`.
//! - MessagePack (and any bytes that are not UTF-8, contain a NUL, or start
//!   with `~` or `@`) travels as `~` + base64: 4 characters per 3 bytes, so
//!   about 6,000 bytes of MessagePack fit inline.
//! - Whatever does not fit in [`MAX_NOTIFY_PAYLOAD`] bytes (or the
//!   configured threshold) is stored in the attachments table, and the
//!   notification carries `@{id}` (see the crate docs for the table and
//!   its cleanup).
//!
//! The database encoding must be UTF8 (the default) for inline text with
//! non-ASCII characters.
//!
//! ```
//! use rooms_adapter_postgres::frame::{inline_text, parse, Frame};
//!
//! let json = br#"{"v":1,"m":{"data":"hi"},"n":"a"}"#;
//! let text = inline_text(json, 7999).unwrap();
//! assert_eq!(text.as_bytes(), json); // JSON as it is
//! assert_eq!(parse(&text).unwrap(), Frame::Inline(json.as_slice().into()));
//!
//! let packed = [0x83, 0xa1, b'v', 0x01];
//! let text = inline_text(&packed, 7999).unwrap();
//! assert_eq!(text, "~g6F2AQ==");
//! assert_eq!(parse(&text).unwrap(), Frame::Inline(packed.as_slice().into()));
//!
//! assert_eq!(parse("@42").unwrap(), Frame::Attachment(42));
//! assert_eq!(inline_text(&[b'x'; 9000], 7999), None); // needs an attachment
//! ```

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::PostgresError;

/// The largest `NOTIFY` payload a default PostgreSQL build accepts (it must
/// be shorter than 8000 bytes).
pub const MAX_NOTIFY_PAYLOAD: usize = 7999;

/// Marks an inline binary frame.
pub const BINARY_MARKER: u8 = b'~';

/// Marks an attachment reference.
pub const ATTACHMENT_MARKER: u8 = b'@';

/// A parsed notification payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The bytes are in the notification.
    Inline(Cow<'a, [u8]>),
    /// The bytes are in the attachments table, in the row with this id.
    Attachment(i64),
}

/// Whether `bytes` can travel as they are: UTF-8 without NUL, not starting
/// with a marker.
fn is_plain_text(bytes: &[u8]) -> Option<&str> {
    if matches!(bytes.first(), Some(&BINARY_MARKER | &ATTACHMENT_MARKER)) || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The inline frame of `bytes` if it fits in `limit` bytes: the text itself
/// when it can travel as it is, else `~` + base64; `None` when it needs an
/// attachment.
pub fn inline_text(bytes: &[u8], limit: usize) -> Option<Cow<'_, str>> {
    if let Some(text) = is_plain_text(bytes) {
        return (text.len() <= limit).then_some(Cow::Borrowed(text));
    }
    let encoded_len = 1 + bytes.len().div_ceil(3) * 4;
    if encoded_len > limit {
        return None;
    }
    let mut text = String::with_capacity(encoded_len);
    text.push(char::from(BINARY_MARKER));
    STANDARD.encode_string(bytes, &mut text);
    Some(Cow::Owned(text))
}

/// The text of a reference to attachment `id`.
pub fn attachment_reference(id: i64) -> String {
    format!("@{id}")
}

/// Parses a notification payload. The error
/// ([`InvalidBinaryFrame`](PostgresError::InvalidBinaryFrame) or
/// [`InvalidReferenceFrame`](PostgresError::InvalidReferenceFrame)) names
/// what is wrong with it.
pub fn parse(payload: &str) -> Result<Frame<'_>, PostgresError> {
    match payload.as_bytes().first() {
        Some(&BINARY_MARKER) => STANDARD
            .decode(&payload[1..])
            .map(|bytes| Frame::Inline(Cow::Owned(bytes)))
            .map_err(|error| PostgresError::InvalidBinaryFrame {
                reason: error.to_string(),
            }),
        Some(&ATTACHMENT_MARKER) => {
            let digits = &payload[1..];
            match digits.parse::<i64>() {
                Ok(id) if id > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(Frame::Attachment(id))
                }
                _ => Err(PostgresError::InvalidReferenceFrame {
                    found: digits.chars().take(40).collect(),
                }),
            }
        }
        _ => Ok(Frame::Inline(Cow::Borrowed(payload.as_bytes()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_travels_as_it_is() {
        let json = r#"{"v":1,"m":{"data":"ü 日本"},"n":"a"}"#;
        assert_eq!(
            inline_text(json.as_bytes(), MAX_NOTIFY_PAYLOAD).as_deref(),
            Some(json)
        );
    }

    #[test]
    fn unsafe_text_is_base64() {
        for bytes in [&b"~tilde"[..], b"@at", b"nul\0inside", b"\xff\xfe", b""] {
            let text = inline_text(bytes, MAX_NOTIFY_PAYLOAD).unwrap();
            assert!(!text.contains('\0'));
            assert_eq!(
                parse(&text).unwrap(),
                Frame::Inline(bytes.into()),
                "{bytes:?}"
            );
        }
        // The empty payload is plain text.
        assert_eq!(inline_text(b"", 10).as_deref(), Some(""));
    }

    #[test]
    fn limits_are_exact() {
        assert!(inline_text(&[b'a'; 7999], 7999).is_some());
        assert!(inline_text(&[b'a'; 8000], 7999).is_none());
        // 5997 bytes are 7996 base64 characters plus the marker.
        assert!(inline_text(&[0x80; 5997], 7999).is_some());
        assert!(inline_text(&[0x80; 6000], 7999).is_none());
    }

    #[test]
    fn bad_frames_are_errors() {
        let error = parse("~not base64!").unwrap_err();
        assert!(
            matches!(error, PostgresError::InvalidBinaryFrame { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("base64"), "{error}");
        for bad in ["@", "@x", "@-1", "@0", "@+5", "@99999999999999999999"] {
            let error = parse(bad).unwrap_err();
            assert!(
                matches!(error, PostgresError::InvalidReferenceFrame { .. }),
                "{bad}"
            );
            assert!(
                error.to_string().contains(&format!("{:?}", &bad[1..])),
                "{error}"
            );
        }
        assert_eq!(
            parse(&attachment_reference(7)).unwrap(),
            Frame::Attachment(7)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let text = inline_text(&bytes, MAX_NOTIFY_PAYLOAD).unwrap();
            prop_assert!(!text.contains('\0'));
            prop_assert!(text.len() <= MAX_NOTIFY_PAYLOAD);
            prop_assert_eq!(parse(&text).unwrap(), Frame::Inline(bytes.as_slice().into()));
        }
    }
}
