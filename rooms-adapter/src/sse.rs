//! SSE framing per the WHATWG `text/event-stream` format.
//!
//! - `data` that is a JSON string is sent as its text; any other value as compact
//!   JSON. Text with line breaks (LF, CR or CRLF) becomes several `data:` lines,
//!   which the browser joins back with `\n`.
//! - A CR or LF in `event` or `id` would inject fields into the stream: it is
//!   rejected with [`Error::InvalidSseField`]. So is a NUL in `id` (browsers
//!   ignore such an id).
//! - `retry` is a number of milliseconds.
//!
//! ```
//! use rooms_adapter::{sse, SseMessage};
//!
//! let frame = sse::frame(&SseMessage::new("line 1\nline 2").with_event("note").with_id("7"))?;
//! assert_eq!(&frame[..], b"event: note\nid: 7\ndata: line 1\ndata: line 2\n\n");
//!
//! let bad = SseMessage::new(1).with_event("x\ndata: injected");
//! assert!(sse::frame(&bad).is_err());
//! # Ok::<(), rooms_adapter::Error>(())
//! ```

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

use crate::error::Error;
use crate::json_text::{Strings, count_bytes};
use crate::message::{MAX_ID_BYTES, SseMessage};
use bytes::Bytes;

/// Checks that a message can be framed without injecting fields.
pub fn validate(message: &SseMessage) -> Result<(), Error> {
    if let Some(event) = &message.event
        && event.contains(['\r', '\n'])
    {
        return Err(Error::InvalidSseField {
            field: "event",
            reason: "contains a line break (CR or LF)",
        });
    }
    if let Some(id) = &message.id {
        if id.contains(['\r', '\n']) {
            return Err(Error::InvalidSseField {
                field: "id",
                reason: "contains a line break (CR or LF)",
            });
        }
        if id.len() > MAX_ID_BYTES {
            return Err(Error::InvalidSseField {
                field: "id",
                reason: "is longer than 256 bytes",
            });
        }
        if id.contains('\0') {
            return Err(Error::InvalidSseField {
                field: "id",
                reason: "contains a NUL character",
            });
        }
    }
    Ok(())
}

/// Frames one message as a complete SSE event (ending in a blank line).
pub fn frame(message: &SseMessage) -> Result<Bytes, Error> {
    validate(message)?;
    let fields =
        message.event.as_ref().map_or(0, String::len) + message.id.as_ref().map_or(0, String::len);
    let mut out = Vec::with_capacity(48 + fields + message.data.as_json().len());
    if let Some(event) = &message.event {
        push_field(&mut out, "event", event);
    }
    if let Some(id) = &message.id {
        push_field(&mut out, "id", id);
    }
    if let Some(retry) = message.retry {
        push_field(&mut out, "retry", itoa::Buffer::new().format(retry));
    }
    match message.data.as_str() {
        Some(text) => {
            for line in data_lines(&text) {
                push_field(&mut out, "data", line);
            }
        }
        None if message.data.is_string() => {
            // A JSON string no Rust string can hold (a lone surrogate escape).
            return Err(Error::InvalidData {
                reason: "data is a string with a lone UTF-16 surrogate".into(),
            });
        }
        None => {
            // Compact JSON has no raw line break, so it is one `data:` line,
            // copied from the text the message carries.
            out.extend_from_slice(b"data: ");
            push_compact_json(&mut out, message.data.as_json());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    Ok(Bytes::from(out))
}

/// Appends JSON text without whitespace outside strings. A raw CR or LF inside
/// a string (which valid JSON does not have) is written as its escape, so the
/// text can never break out of its `data:` line.
fn push_compact_json(out: &mut Vec<u8>, json: &str) {
    let bytes = json.as_bytes();
    if count_bytes(bytes, |b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) == 0 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let mut strings = Strings::default();
    for &byte in bytes {
        if strings.feed(byte) {
            match byte {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(byte),
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(byte);
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.reserve(name.len() + value.len() + 3);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// A comment line, e.g. for keep-alive: `: {text}\n\n`. Line breaks in `text`
/// are replaced by spaces.
pub fn comment(text: &str) -> Bytes {
    let clean = text.replace(['\r', '\n'], " ");
    Bytes::from(format!(": {clean}\n\n"))
}

/// Splits text at LF, CR or CRLF, as an SSE parser would.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Data;
    use serde_json::json;

    fn framed(message: SseMessage) -> String {
        String::from_utf8(frame(&message).expect("frames").to_vec()).expect("utf8")
    }

    #[test]
    fn frames_every_line_ending_as_separate_data_lines() {
        assert_eq!(
            framed(SseMessage::new("a\r\nb\rc\nd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(framed(SseMessage::new("")), "data: \n\n");
        assert_eq!(framed(SseMessage::new("end\n")), "data: end\ndata: \n\n");
    }

    #[test]
    fn frames_json_values_compactly_with_all_fields() {
        let message = SseMessage::new(json!({"a": [1, null]}))
            .with_event("e")
            .with_id("1")
            .with_retry(500);
        assert_eq!(
            framed(message),
            "event: e\nid: 1\nretry: 500\ndata: {\"a\":[1,null]}\n\n"
        );
        assert_eq!(framed(SseMessage::new(json!(null))), "data: null\n\n");
    }

    #[test]
    fn rejects_field_injection() {
        for bad in [
            SseMessage::new(1).with_event("a\rb"),
            SseMessage::new(1).with_event("a\nretry: 1"),
            SseMessage::new(1).with_id("1\r\nevent: x"),
            SseMessage::new(1).with_id("a\0b"),
        ] {
            assert!(
                matches!(frame(&bad), Err(Error::InvalidSseField { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn frames_json_text_compactly_and_never_breaks_the_line() {
        let spaced =
            Data::from_json("{ \"a\" :\n [1, \"x y\"],\r\n\t\"b\": \"q\\\" \" }").expect("json");
        assert_eq!(
            framed(SseMessage::new(spaced)),
            "data: {\"a\":[1,\"x y\"],\"b\":\"q\\\" \"}\n\n"
        );
        let mut out = Vec::new();
        push_compact_json(&mut out, "[\"a\nevent: x\"]");
        assert_eq!(out, b"[\"a\\nevent: x\"]");
    }

    #[test]
    fn rejects_overlong_ids() {
        let at_limit = SseMessage::new(1).with_id("i".repeat(MAX_ID_BYTES));
        assert!(frame(&at_limit).is_ok());
        let over = SseMessage::new(1).with_id("i".repeat(MAX_ID_BYTES + 1));
        assert!(matches!(
            frame(&over),
            Err(Error::InvalidSseField { field: "id", .. })
        ));
    }

    #[test]
    fn comment_cannot_inject() {
        assert_eq!(&comment("ping\ndata: x")[..], b": ping data: x\n\n");
    }
}
