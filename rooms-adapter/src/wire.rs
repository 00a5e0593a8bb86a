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

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::ids::{ConnectionId, NodeId};
use crate::message::SseMessage;

mod decode;
mod nesting;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, DecodeErrorKind, decode, detect_codec};

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
