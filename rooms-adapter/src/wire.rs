//! Wire format v1: the [`Envelope`] published once per room broadcast, its two
//! codecs, and [`decode`] with codec auto-detection.
//!
//! | key    | type              | meaning                                            |
//! |--------|-------------------|----------------------------------------------------|
//! | `v`    | integer, always 1 | protocol version                                   |
//! | `m`    | object            | the [`SseMessage`]                                 |
//! | `e`    | string, optional  | connection id to exclude on every node             |
//! | `n`    | string            | id of the source node (echo suppression)           |
//! | `meta` | any, optional     | opaque metadata for filtering; never sent to clients |
//!
//! JSON is byte-compatible with the TypeScript package
//! `@opinionated-machine/sse-rooms-redis`; MessagePack (named maps, same keys) is
//! for all-Rust clusters. [`decode`] tells them apart by the first byte, so a
//! cluster can move from one codec to the other node by node.
//!
//! ```
//! use rooms_adapter::wire::{decode, Codec, Envelope, DEFAULT_MAX_PAYLOAD_BYTES};
//! use rooms_adapter::{NodeId, SseMessage};
//!
//! let envelope = Envelope::new(NodeId::from("node-a"), SseMessage::new("[DONE]").with_event("done"));
//! let json = envelope.encode(Codec::Json)?;
//! assert_eq!(&json[..], br#"{"v":1,"m":{"event":"done","data":"[DONE]"},"n":"node-a"}"#);
//!
//! let packed = envelope.encode(Codec::MessagePack)?;
//! assert_eq!(decode(&packed, DEFAULT_MAX_PAYLOAD_BYTES)?, envelope);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::ids::{ConnectionId, NodeId};
use crate::json_text::Strings;
use crate::message::{MAX_ID_BYTES, SseMessage};

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Default channel prefix: the channel of room `chat` is `sse:room:chat`.
pub const DEFAULT_CHANNEL_PREFIX: &str = "sse:room:";

/// Default limit on an inbound or outbound payload: 4 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// How deeply maps and arrays may nest in an inbound payload, the envelope
/// itself included, in either codec. Deeper payloads are skipped as
/// [`DecodeError::Malformed`] before any parser recurses into them, so the
/// limit holds whatever the build profile and the thread's stack size.
pub const MAX_NESTING_DEPTH: usize = 128;

/// The channel name of a room: `{prefix}{room}`, no separator added.
///
/// ```
/// assert_eq!(rooms_adapter::wire::channel_name("sse:room:", "chat"), "sse:room:chat");
/// ```
pub fn channel_name(prefix: &str, room: &str) -> String {
    let mut channel = String::with_capacity(prefix.len() + room.len());
    channel.push_str(prefix);
    channel.push_str(room);
    channel
}

/// How envelopes are encoded on the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON, exactly as the TypeScript package writes it. The default.
    #[default]
    Json,
    /// MessagePack with named maps (the same keys as JSON). Smaller and faster;
    /// TypeScript nodes ignore it, so use it only in all-Rust clusters.
    MessagePack,
}

impl Codec {
    /// A short name: `json` or `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
        }
    }

    fn slot(self) -> usize {
        match self {
            Codec::Json => 0,
            Codec::MessagePack => 1,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One room broadcast as it travels between nodes.
///
/// The encoded bytes are cached per codec, so a broadcast to many rooms encodes
/// once. Fields are read through accessors so the cache cannot go stale.
#[derive(Clone)]
pub struct Envelope {
    message: Arc<SseMessage>,
    except: Option<ConnectionId>,
    node: NodeId,
    meta: Option<Value>,
    encoded: [OnceLock<Bytes>; 2],
}

impl Envelope {
    /// An envelope of `message` sent by `node`, with no exclusion and no metadata.
    pub fn new(node: NodeId, message: impl Into<Arc<SseMessage>>) -> Self {
        Self {
            message: message.into(),
            except: None,
            node,
            meta: None,
            encoded: Default::default(),
        }
    }

    /// Excludes one connection (`e`) on every node.
    #[must_use]
    pub fn with_except(mut self, except: Option<ConnectionId>) -> Self {
        self.except = except;
        self.encoded = Default::default();
        self
    }

    /// Attaches opaque metadata (`meta`). `Some(Value::Null)` is sent as
    /// `"meta":null`, as the TypeScript package does; `None` leaves the key out.
    #[must_use]
    pub fn with_meta(mut self, meta: Option<Value>) -> Self {
        self.meta = meta;
        self.encoded = Default::default();
        self
    }

    /// The same envelope with its message's id set to `id` (for a medium
    /// that gives a stored message its history position as id).
    #[must_use]
    pub fn with_message_id(&self, id: impl Into<String>) -> Self {
        let mut message = SseMessage::clone(&self.message);
        message.id = Some(id.into());
        Self {
            message: Arc::new(message),
            except: self.except.clone(),
            node: self.node.clone(),
            meta: self.meta.clone(),
            encoded: Default::default(),
        }
    }

    /// The message.
    pub fn message(&self) -> &SseMessage {
        &self.message
    }

    /// The message, shared.
    pub fn shared_message(&self) -> &Arc<SseMessage> {
        &self.message
    }

    /// The connection to skip on every node, if any.
    pub fn except(&self) -> Option<&ConnectionId> {
        self.except.as_ref()
    }

    /// The node that published it.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The metadata, if any.
    pub fn meta(&self) -> Option<&Value> {
        self.meta.as_ref()
    }

    /// The encoded bytes in `codec`; encoded on the first call, then cached.
    pub fn encode(&self, codec: Codec) -> Result<Bytes, Error> {
        let slot = &self.encoded[codec.slot()];
        if let Some(bytes) = slot.get() {
            return Ok(bytes.clone());
        }
        let bytes = encode_uncached(self, codec)?;
        Ok(slot.get_or_init(|| bytes).clone())
    }
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
            && self.except == other.except
            && self.node == other.node
            && self.meta == other.meta
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("message", &self.message)
            .field("except", &self.except)
            .field("node", &self.node)
            .field("meta", &self.meta)
            .finish()
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    v: u8,
    m: &'a SseMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<&'a str>,
    n: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a Value>,
}

fn encode_uncached(envelope: &Envelope, codec: Codec) -> Result<Bytes, Error> {
    let wire = WireRef {
        v: PROTOCOL_VERSION,
        m: &envelope.message,
        e: envelope.except.as_ref().map(ConnectionId::as_str),
        n: envelope.node.as_str(),
        meta: envelope.meta.as_ref(),
    };
    let encoded = match codec {
        Codec::Json => serde_json::to_vec(&wire).map_err(|e| e.to_string()),
        Codec::MessagePack => rmp_serde::to_vec_named(&wire).map_err(|e| e.to_string()),
    };
    encoded.map(Bytes::from).map_err(|reason| Error::Encode {
        codec: codec.name(),
        reason,
    })
}

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

/// Whether JSON text opens more than `limit` nested objects or arrays. A
/// payload with at most `limit` brackets in all is answered by one counting
/// pass; only the rare one with more is walked string by string.
fn json_nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    let openers = payload.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if openers <= limit {
        return false;
    }
    let (mut depth, mut strings) = (0usize, Strings::default());
    for &byte in payload {
        if strings.feed(byte) {
            continue;
        }
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether a MessagePack value nests more than `limit` maps or arrays. Walks
/// the markers without recursion; a truncated or invalid payload answers
/// `false` and is left to the decoder to report.
fn msgpack_nests_deeper_than(payload: &[u8], limit: usize) -> bool {
    // Every container starts with one of these bytes; a payload with at most
    // `limit` of them (counting look-alikes inside strings and numbers too)
    // cannot nest deeper, and is answered by one counting pass.
    let markers = payload
        .iter()
        .filter(|&&b| matches!(b, 0x80..=0x9f | 0xdc..=0xdf))
        .count();
    if markers <= limit {
        return false;
    }
    // Items still to read in each open container; the root holds one value.
    let mut pending: Vec<u64> = vec![1];
    let mut pos = 0usize;
    let len_at = |at: usize, width: usize| -> Option<u64> {
        let bytes = payload.get(at..at.checked_add(width)?)?;
        Some(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    };
    while let Some(last) = pending.last_mut() {
        if *last == 0 {
            pending.pop();
            continue;
        }
        *last -= 1;
        let Some(&marker) = payload.get(pos) else {
            return false;
        };
        // (bytes of this item before its children, children to read)
        let (skip, children): (Option<u64>, u64) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (Some(1), 0),
            0x80..=0x8f => (Some(1), u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (Some(1), u64::from(marker & 0x0f)),
            0xa0..=0xbf => (Some(1 + u64::from(marker & 0x1f)), 0),
            0xc4 | 0xd9 => (len_at(pos + 1, 1).map(|n| 2 + n), 0),
            0xc5 | 0xda => (len_at(pos + 1, 2).map(|n| 3 + n), 0),
            0xc6 | 0xdb => (len_at(pos + 1, 4).map(|n| 5 + n), 0),
            0xc7 => (len_at(pos + 1, 1).map(|n| 3 + n), 0),
            0xc8 => (len_at(pos + 1, 2).map(|n| 4 + n), 0),
            0xc9 => (len_at(pos + 1, 4).map(|n| 6 + n), 0),
            0xcc | 0xd0 => (Some(2), 0),
            0xcd | 0xd1 => (Some(3), 0),
            0xca | 0xce | 0xd2 => (Some(5), 0),
            0xcb | 0xcf | 0xd3 => (Some(9), 0),
            0xd4 => (Some(3), 0),
            0xd5 => (Some(4), 0),
            0xd6 => (Some(6), 0),
            0xd7 => (Some(10), 0),
            0xd8 => (Some(18), 0),
            0xdc => (Some(3), len_at(pos + 1, 2).unwrap_or(0)),
            0xdd => (Some(5), len_at(pos + 1, 4).unwrap_or(0)),
            0xde => (Some(3), len_at(pos + 1, 2).unwrap_or(0) * 2),
            0xdf => (Some(5), len_at(pos + 1, 4).unwrap_or(0) * 2),
            0xc1 => (None, 0),
        };
        let Some(next) = skip
            .and_then(|skip| usize::try_from(skip).ok())
            .and_then(|skip| pos.checked_add(skip))
        else {
            return false;
        };
        pos = next;
        if matches!(marker, 0x80..=0x9f | 0xdc..=0xdf) {
            if pending.len() > limit {
                return true;
            }
            pending.push(children);
        }
    }
    false
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
fn interned_node(id: &str) -> NodeId {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limit() -> usize {
        DEFAULT_MAX_PAYLOAD_BYTES
    }

    #[test]
    fn detects_codec_after_whitespace() {
        assert_eq!(detect_codec(b" \n{}").ok(), Some(Codec::Json));
        assert_eq!(detect_codec(&[0x83]).ok(), Some(Codec::MessagePack));
        assert!(detect_codec(b"").is_err());
        assert!(detect_codec(b"\xEF\xBB\xBF{}").is_err());
    }

    #[test]
    fn last_duplicate_key_wins() {
        let accepted = decode(br#"{"v":2,"v":1,"m":{"data":1},"n":"x"}"#, limit());
        assert!(accepted.is_ok(), "{accepted:?}");
        let rejected = decode(br#"{"v":1,"v":2,"m":{"data":1},"n":"x"}"#, limit());
        assert_eq!(
            rejected.map_err(|e| e.kind()),
            Err(DecodeErrorKind::UnsupportedVersion)
        );
    }

    #[test]
    fn classifies_errors() {
        let kind = |p: &[u8]| decode(p, limit()).map_err(|e| e.kind()).err();
        assert_eq!(kind(b"not json"), Some(DecodeErrorKind::UnknownFormat));
        assert_eq!(kind(br#"{"v":1,"m":"#), Some(DecodeErrorKind::Malformed));
        assert_eq!(
            kind(br#"{"m":{"data":1},"n":"x"}"#),
            Some(DecodeErrorKind::MissingField)
        );
        assert_eq!(
            kind(br#"{"v":1,"n":"x"}"#),
            Some(DecodeErrorKind::MissingField)
        );
        assert_eq!(
            kind(br#"{"v":1,"m":{"data":1}}"#),
            Some(DecodeErrorKind::MissingField)
        );
        assert_eq!(
            kind(br#"{"v":1,"m":"s","n":"x"}"#),
            Some(DecodeErrorKind::InvalidField)
        );
        assert_eq!(
            kind(br#"{"v":1,"m":{"data":1},"n":7}"#),
            Some(DecodeErrorKind::InvalidField)
        );
        assert_eq!(
            kind(br#"{"v":true,"m":{},"n":"x"}"#),
            Some(DecodeErrorKind::UnsupportedVersion)
        );
        assert_eq!(kind(&[b'{'; 10]), Some(DecodeErrorKind::Malformed));
        assert_eq!(
            decode(br#"{"v":1,"m":{},"n":"x"}"#, 5)
                .map_err(|e| e.kind())
                .err(),
            Some(DecodeErrorKind::TooLarge)
        );
        assert_eq!(kind(&[0x83, 0xa1, b'v']), Some(DecodeErrorKind::Malformed));
    }

    #[test]
    fn meta_null_is_kept_and_non_string_except_ignored() {
        let envelope = decode(
            br#"{"v":1,"m":{"data":1},"n":"x","meta":null,"e":{"a":1}}"#,
            limit(),
        )
        .expect("decodes");
        assert_eq!(envelope.meta(), Some(&Value::Null));
        assert_eq!(envelope.except(), None);
        let json: Value =
            serde_json::from_slice(&envelope.encode(Codec::Json).expect("encodes")).expect("json");
        assert_eq!(json, json!({"v":1,"m":{"data":1},"n":"x","meta":null}));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let envelope = decode(
            b"{\"v\":1,\"m\":{\"data\":\"a\xffb\"},\"n\":\"x\"}",
            limit(),
        )
        .expect("decodes");
        assert_eq!(envelope.message().data, json!("a\u{fffd}b"));
    }

    /// A v1 envelope whose `data` is `depth` arrays deep, in `codec`.
    fn nested(codec: Codec, depth: usize) -> Vec<u8> {
        let mut data = String::from("0");
        for _ in 0..depth {
            data = format!("[{data}]");
        }
        let json = format!(r#"{{"v":1,"m":{{"data":{data}}},"n":"x"}}"#);
        match codec {
            Codec::Json => json.into_bytes(),
            Codec::MessagePack => {
                // Build the msgpack by hand: serde_json cannot parse this deep.
                let mut out = vec![0x83, 0xa1, b'v', 0x01, 0xa1, b'm', 0x81, 0xa4];
                out.extend_from_slice(b"data");
                out.extend(std::iter::repeat_n(0x91, depth));
                out.push(0x00);
                out.extend_from_slice(&[0xa1, b'n', 0xa1, b'x']);
                out
            }
        }
    }

    #[test]
    fn nesting_is_limited_in_both_codecs() {
        for codec in [Codec::Json, Codec::MessagePack] {
            // The envelope and `m` are two levels; data may use the rest.
            let at_limit = decode(&nested(codec, MAX_NESTING_DEPTH - 2), limit());
            assert!(at_limit.is_ok(), "{codec}: {at_limit:?}");
            for depth in [MAX_NESTING_DEPTH - 1, 1_000, 100_000] {
                let deep = decode(&nested(codec, depth), limit());
                assert!(
                    matches!(&deep, Err(DecodeError::Malformed { reason, .. }) if reason.contains("nest deeper")),
                    "{codec} at {depth}: {deep:?}"
                );
            }
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let text = "[{".repeat(MAX_NESTING_DEPTH * 2);
        let payload = format!(r#"{{"v":1,"m":{{"data":"{text}"}},"n":"x"}}"#);
        let envelope = decode(payload.as_bytes(), limit()).expect("decodes");
        assert_eq!(envelope.message().data, text.as_str());
        let escaped = format!(r#"{{"v":1,"m":{{"data":"\"{text}"}},"n":"x"}}"#);
        assert!(decode(escaped.as_bytes(), limit()).is_ok());
    }

    #[test]
    fn msgpack_depth_walk_survives_hostile_lengths() {
        // A map32 claiming four billion entries, truncated: left to the decoder.
        assert!(!msgpack_nests_deeper_than(
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
            4
        ));
        assert!(!msgpack_nests_deeper_than(
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            4
        ));
        assert!(!msgpack_nests_deeper_than(&[0xc1], 4));
        // Marker look-alikes inside a string: counted, then walked, not deep.
        let text = "\u{90}".repeat(MAX_NESTING_DEPTH * 2);
        let envelope = Envelope::new(NodeId::from("x"), SseMessage::new(text.as_str()));
        let packed = envelope.encode(Codec::MessagePack).expect("encodes");
        assert!(!msgpack_nests_deeper_than(&packed, MAX_NESTING_DEPTH));
        assert_eq!(
            decode(&packed, limit()).expect("decodes").message().data,
            text.as_str()
        );
        assert!(msgpack_nests_deeper_than(&[0x91, 0x91, 0x91, 0x90], 3));
        assert!(!msgpack_nests_deeper_than(&[0x91, 0x91, 0x90], 3));
    }

    #[test]
    fn node_ids_of_recent_envelopes_are_shared() {
        let a = interned_node("node-a");
        let b = interned_node("node-b");
        assert_eq!(
            interned_node("node-a").as_str().as_ptr(),
            a.as_str().as_ptr()
        );
        assert_eq!(
            interned_node("node-b").as_str().as_ptr(),
            b.as_str().as_ptr()
        );
        for other in ["c", "d", "e", "f"] {
            interned_node(other);
        }
        // Pushed out by four others: a new allocation, the same text.
        assert_eq!(interned_node("node-a").as_str(), "node-a");
        let long = "n".repeat(1_000);
        assert_eq!(interned_node(&long).as_str(), long);
    }

    #[test]
    fn overlong_ids_are_skipped() {
        let id = "i".repeat(crate::message::MAX_ID_BYTES + 1);
        let payload = format!(r#"{{"v":1,"m":{{"data":1,"id":"{id}"}},"n":"x"}}"#);
        assert_eq!(
            decode(payload.as_bytes(), limit())
                .map_err(|e| e.kind())
                .err(),
            Some(DecodeErrorKind::InvalidField)
        );
    }

    #[test]
    fn json_data_is_kept_as_it_arrived() {
        let envelope = decode(
            br#"{"v":1,"m":{"data":{"b": 1.50, "a":[1e2]}},"n":"x"}"#,
            limit(),
        )
        .expect("decodes");
        assert_eq!(
            envelope.message().data.as_json(),
            r#"{"b": 1.50, "a":[1e2]}"#
        );
    }

    #[test]
    fn encode_is_cached_and_except_is_sent() {
        let envelope = Envelope::new(NodeId::from("n1"), SseMessage::new(1))
            .with_except(Some(ConnectionId::from("c1")));
        let first = envelope.encode(Codec::Json).expect("encodes");
        let second = envelope.encode(Codec::Json).expect("encodes");
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert_eq!(&first[..], br#"{"v":1,"m":{"data":1},"e":"c1","n":"n1"}"#);
    }
}
