//! [`decode`]: the size and nesting limits, codec detection, and the two
//! decoders, which read the envelope in one pass without a `Value` tree of
//! the message.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::nesting::{json_nests_deeper_than, msgpack_nests_deeper_than};
use super::{Codec, Envelope, MAX_NESTING_DEPTH};
use crate::ids::{ConnectionId, NodeId};
use crate::message::{MAX_ID_BYTES, SseMessage};
use std::sync::Arc;

/// Why an inbound payload was skipped. Every case is counted by kind
/// ([`DecodeErrorKind`]); none of them stops the receive loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is larger than the configured limit.
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Neither a JSON object nor a MessagePack map (empty, a BOM, plain text, a
    /// JSON array or scalar, ...).
    #[error("payload is neither a JSON object nor a MessagePack map (first byte {first_byte:?})")]
    UnknownFormat {
        /// The first non-whitespace byte, if any.
        first_byte: Option<u8>,
    },
    /// Syntax error: truncated or not valid in the detected codec.
    #[error("malformed {codec} payload: {reason}")]
    Malformed {
        /// The detected codec.
        codec: Codec,
        /// The parser's message.
        reason: String,
    },
    /// `v` is not 1 (or not a number).
    #[error("unsupported protocol version {found}")]
    UnsupportedVersion {
        /// What `v` held, as JSON text.
        found: String,
    },
    /// `v`, `m` or `n` is missing.
    #[error("required key `{field}` is missing")]
    MissingField {
        /// The key.
        field: &'static str,
    },
    /// A key holds a value of the wrong type, e.g. `m` is a string.
    #[error("key `{field}` is invalid: {reason}")]
    InvalidField {
        /// The key.
        field: &'static str,
        /// The parser's message.
        reason: String,
    },
}

/// The kind of a [`DecodeError`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// [`DecodeError::TooLarge`].
    TooLarge,
    /// [`DecodeError::UnknownFormat`].
    UnknownFormat,
    /// [`DecodeError::Malformed`].
    Malformed,
    /// [`DecodeError::UnsupportedVersion`].
    UnsupportedVersion,
    /// [`DecodeError::MissingField`].
    MissingField,
    /// [`DecodeError::InvalidField`].
    InvalidField,
}

impl DecodeErrorKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DecodeErrorKind; 6] = [
        DecodeErrorKind::TooLarge,
        DecodeErrorKind::UnknownFormat,
        DecodeErrorKind::Malformed,
        DecodeErrorKind::UnsupportedVersion,
        DecodeErrorKind::MissingField,
        DecodeErrorKind::InvalidField,
    ];

    /// A snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            DecodeErrorKind::TooLarge => "too_large",
            DecodeErrorKind::UnknownFormat => "unknown_format",
            DecodeErrorKind::Malformed => "malformed",
            DecodeErrorKind::UnsupportedVersion => "unsupported_version",
            DecodeErrorKind::MissingField => "missing_field",
            DecodeErrorKind::InvalidField => "invalid_field",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl DecodeError {
    /// The kind, for counting.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::TooLarge { .. } => DecodeErrorKind::TooLarge,
            DecodeError::UnknownFormat { .. } => DecodeErrorKind::UnknownFormat,
            DecodeError::Malformed { .. } => DecodeErrorKind::Malformed,
            DecodeError::UnsupportedVersion { .. } => DecodeErrorKind::UnsupportedVersion,
            DecodeError::MissingField { .. } => DecodeErrorKind::MissingField,
            DecodeError::InvalidField { .. } => DecodeErrorKind::InvalidField,
        }
    }
}

/// Which codec wrote `payload`, judged by its first byte after JSON whitespace:
/// `{` is JSON, a MessagePack map marker is MessagePack.
pub fn detect_codec(payload: &[u8]) -> Result<Codec, DecodeError> {
    let first = payload
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') => Ok(Codec::Json),
        Some(0x80..=0x8f | 0xde | 0xdf) => Ok(Codec::MessagePack),
        first_byte => Err(DecodeError::UnknownFormat { first_byte }),
    }
}

/// Decodes one payload, detecting the codec. Unknown keys are ignored; when a key
/// repeats, the last one wins (as `JSON.parse` does).
///
/// A JSON payload with invalid UTF-8 is read with each bad sequence replaced by
/// U+FFFD, as a Node.js subscriber does.
pub fn decode(payload: &[u8], max_payload_bytes: usize) -> Result<Envelope, DecodeError> {
    if payload.len() > max_payload_bytes {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            limit: max_payload_bytes,
        });
    }
    let codec = detect_codec(payload)?;
    let too_deep = match codec {
        Codec::Json => json_nests_deeper_than(payload, MAX_NESTING_DEPTH),
        Codec::MessagePack => msgpack_nests_deeper_than(payload, MAX_NESTING_DEPTH),
    };
    if too_deep {
        return Err(DecodeError::Malformed {
            codec,
            reason: format!("maps and arrays nest deeper than {MAX_NESTING_DEPTH} levels"),
        });
    }
    match codec {
        Codec::Json => decode_json(payload),
        Codec::MessagePack => decode_msgpack(payload),
    }
}

fn decode_json(payload: &[u8]) -> Result<Envelope, DecodeError> {
    match parse_json(serde_json::Deserializer::from_slice(payload)) {
        Err(_) if std::str::from_utf8(payload).is_err() => {
            // Node.js turns invalid UTF-8 into U+FFFD before parsing; do the same.
            let text = String::from_utf8_lossy(payload);
            parse_json(serde_json::Deserializer::from_str(&text))
        }
        result => result,
    }
}

fn parse_json<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Envelope, DecodeError> {
    let field = Cell::new("");
    let wire = EnvelopeSeed { field: &field }
        .deserialize(&mut de)
        .and_then(|wire| de.end().map(|()| wire))
        .map_err(|e| json_error(e, field.get()))?;
    wire.finish()
}

fn json_error(err: serde_json::Error, field: &'static str) -> DecodeError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data if !field.is_empty() => DecodeError::InvalidField {
            field,
            reason: err.to_string(),
        },
        _ => DecodeError::Malformed {
            codec: Codec::Json,
            reason: err.to_string(),
        },
    }
}

fn decode_msgpack(payload: &[u8]) -> Result<Envelope, DecodeError> {
    use rmp_serde::decode::Error as MsgpackError;
    let field = Cell::new("");
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    match (EnvelopeSeed { field: &field }).deserialize(&mut de) {
        Ok(envelope) => envelope.finish(),
        Err(err) => {
            let data_error = matches!(
                err,
                MsgpackError::TypeMismatch(_)
                    | MsgpackError::Syntax(_)
                    | MsgpackError::Utf8Error(_)
            );
            let field = field.get();
            Err(if data_error && !field.is_empty() {
                DecodeError::InvalidField {
                    field,
                    reason: err.to_string(),
                }
            } else {
                DecodeError::Malformed {
                    codec: Codec::MessagePack,
                    reason: err.to_string(),
                }
            })
        }
    }
}

/// What the map visitor collected, before the required keys are checked.
#[derive(Default)]
struct WireEnvelope {
    version: Option<Value>,
    message: Option<SseMessage>,
    except: Option<Value>,
    node: Option<NodeId>,
    meta: Option<Value>,
}

impl WireEnvelope {
    fn finish(self) -> Result<Envelope, DecodeError> {
        let version = self
            .version
            .ok_or(DecodeError::MissingField { field: "v" })?;
        let is_one = match &version {
            Value::Number(n) => n.as_f64() == Some(1.0),
            _ => false,
        };
        if !is_one {
            return Err(DecodeError::UnsupportedVersion {
                found: version.to_string(),
            });
        }
        let message = self
            .message
            .ok_or(DecodeError::MissingField { field: "m" })?;
        if let Some(id) = &message.id
            && id.len() > MAX_ID_BYTES
        {
            return Err(DecodeError::InvalidField {
                field: "m",
                reason: format!(
                    "id is {} bytes, over the limit of {MAX_ID_BYTES} bytes",
                    id.len()
                ),
            });
        }
        let node = self.node.ok_or(DecodeError::MissingField { field: "n" })?;
        // A non-string `e` cannot name a connection; like the TS adapter, ignore it.
        let except = match self.except {
            Some(Value::String(id)) => Some(ConnectionId::from(id)),
            _ => None,
        };
        Ok(Envelope {
            message: Arc::new(message),
            except,
            node,
            meta: self.meta,
            encoded: Default::default(),
        })
    }
}

struct EnvelopeSeed<'a> {
    field: &'a Cell<&'static str>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = WireEnvelope;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = WireEnvelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a v1 envelope map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut wire = WireEnvelope::default();
        while let Some(key) = map.next_key::<WireKey>()? {
            match key {
                WireKey::V => {
                    self.field.set("v");
                    wire.version = Some(map.next_value()?);
                }
                WireKey::M => {
                    self.field.set("m");
                    wire.message = Some(map.next_value()?);
                }
                WireKey::E => {
                    self.field.set("e");
                    wire.except = Some(map.next_value()?);
                }
                WireKey::N => {
                    self.field.set("n");
                    wire.node = Some(map.next_value::<NodeField>()?.0);
                }
                WireKey::Meta => {
                    self.field.set("meta");
                    wire.meta = Some(map.next_value()?);
                }
                WireKey::Other => {
                    self.field.set("");
                    map.next_value::<IgnoredAny>()?;
                }
            }
            self.field.set("");
        }
        Ok(wire)
    }
}

/// The node id, built straight from the text the parser holds (one
/// allocation, no intermediate `String`).
struct NodeField(NodeId);

impl<'de> Deserialize<'de> for NodeField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl Visitor<'_> for NodeVisitor {
            type Value = NodeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id string")
            }
            fn visit_str<E: de::Error>(self, id: &str) -> Result<NodeField, E> {
                Ok(NodeField(interned_node(id)))
            }
            fn visit_bytes<E: de::Error>(self, id: &[u8]) -> Result<NodeField, E> {
                std::str::from_utf8(id)
                    .map(|id| NodeField(interned_node(id)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Bytes(id), &self))
            }
        }
        deserializer.deserialize_str(NodeVisitor)
    }
}

/// The node id `id` names, shared with the last envelopes decoded on this
/// thread when they came from the same node: a cluster has few nodes, so
/// most envelopes reuse one of the last few ids instead of allocating.
pub(super) fn interned_node(id: &str) -> NodeId {
    /// Node ids kept per thread, most recent first.
    const KEPT: usize = 4;
    /// Longer ids are not kept (they cannot be a cheap comparison).
    const MAX_KEPT_LEN: usize = 128;
    thread_local! {
        static RECENT: std::cell::RefCell<Vec<NodeId>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if id.len() > MAX_KEPT_LEN {
        return NodeId::from(id);
    }
    RECENT.with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return NodeId::from(id);
        };
        if let Some(at) = recent.iter().position(|node| node.as_str() == id) {
            if at > 0 {
                let node = recent.remove(at);
                recent.insert(0, node);
            }
            return recent[0].clone();
        }
        let node = NodeId::from(id);
        recent.truncate(KEPT - 1);
        recent.insert(0, node.clone());
        node
    })
}

enum WireKey {
    V,
    M,
    E,
    N,
    Meta,
    Other,
}

impl<'de> Deserialize<'de> for WireKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = WireKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<WireKey, E> {
                Ok(match key {
                    "v" => WireKey::V,
                    "m" => WireKey::M,
                    "e" => WireKey::E,
                    "n" => WireKey::N,
                    "meta" => WireKey::Meta,
                    _ => WireKey::Other,
                })
            }
            fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<WireKey, E> {
                match std::str::from_utf8(key) {
                    Ok(key) => self.visit_str(key),
                    Err(_) => Ok(WireKey::Other),
                }
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<WireKey, E> {
                Ok(WireKey::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<WireKey, E> {
                Ok(WireKey::Other)
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}
