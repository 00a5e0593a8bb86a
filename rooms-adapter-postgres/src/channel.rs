//! The PostgreSQL wire contract for channels: how a room name (any string)
//! becomes a `LISTEN`/`NOTIFY` channel, an identifier of at most
//! [`MAX_IDENTIFIER_BYTES`] bytes.
//!
//! # Room channels
//!
//! A room's channel is `{prefix}{hash}`, where `hash` is the first 128 bits
//! of the SHA-256 of the room name's UTF-8 bytes, in lowercase unpadded
//! base32 (RFC 4648 alphabet `a`–`z`, `2`–`7`): always
//! [`HASH_CHARS`] (26) characters. With the default prefix `sse_room_`,
//! room `chat` is `sse_room_` followed by 26 such characters.
//!
//! Why this shape:
//! - Every room name fits (empty, unicode, quotes, line breaks, megabytes):
//!   the channel has a fixed length, so a prefix of at most
//!   [`MAX_PREFIX_BYTES`] bytes always leaves a valid identifier.
//! - Names are not truncated, so two names that share their first 63 bytes
//!   (or any prefix) get unrelated channels; two different names collide
//!   only if SHA-256 collides in 128 bits (about 2^64 rooms for an even
//!   chance; none has ever been found).
//! - The hash is one-way: a node maps a channel back to its room through the
//!   rooms it listens to ([`ChannelMap`]), which is all it ever receives.
//! - Lowercase letters and digits: `LISTEN sse_room_…` typed unquoted in
//!   `psql` works too (Postgres folds unquoted identifiers to lowercase). The
//!   adapter always quotes ([`quote_identifier`]).
//!
//! Other languages implement it with any SHA-256 and base32 library, e.g.
//! in Node.js `prefix + base32(sha256(room).subarray(0, 16)).toLowerCase()`
//! without `=` padding.
//!
//! # Control channels
//!
//! With the control capability, node heartbeats and cross-node queries travel
//! on `{control_prefix}all` (every node) and `{control_prefix}n{hash}` (one
//! node's inbox), where the hash encodes the node id exactly like a room
//! name. The builder refuses a control prefix and a room prefix of which one
//! starts with the other, so a control channel is never a room channel.
//!
//! ```
//! use rooms_adapter_postgres::channel::{room_channel, quote_identifier, HASH_CHARS};
//!
//! let channel = room_channel("sse_room_", "chat");
//! assert_eq!(channel.len(), "sse_room_".len() + HASH_CHARS);
//! assert!(channel.starts_with("sse_room_"));
//! assert_eq!(quote_identifier(&channel), format!("\"{channel}\""));
//! assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
//! ```

use std::collections::HashMap;

use rooms_adapter::RoomName;
use sha2::{Digest, Sha256};

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer
/// channel names are an error in `pg_notify` and truncated in `LISTEN`.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The length of the hash part of every channel.
pub const HASH_CHARS: usize = 26;

/// The longest room prefix: a channel is the prefix plus [`HASH_CHARS`].
pub const MAX_PREFIX_BYTES: usize = MAX_IDENTIFIER_BYTES - HASH_CHARS;

/// The longest control prefix: a node inbox is the prefix, `n` and
/// [`HASH_CHARS`].
pub const MAX_CONTROL_PREFIX_BYTES: usize = MAX_IDENTIFIER_BYTES - HASH_CHARS - 1;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The 26-character hash of `name`: the first 128 bits of its SHA-256, in
/// lowercase unpadded base32.
pub fn name_hash(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut bits = 0u128;
    for byte in &digest[..16] {
        bits = (bits << 8) | u128::from(*byte);
    }
    // 26 groups of 5 bits cover 130 bits: the last group is padded with two
    // zero bits, as base32 does.
    let mut out = String::with_capacity(HASH_CHARS);
    for group in 1..=HASH_CHARS {
        let end = group * 5;
        let index = if end <= 128 {
            (bits >> (128 - end)) & 0x1f
        } else {
            (bits << (end - 128)) & 0x1f
        };
        out.push(char::from(BASE32[index as usize]));
    }
    out
}

/// The channel of `room` under `prefix`: `{prefix}{name_hash(room)}`.
pub fn room_channel(prefix: &str, room: &str) -> String {
    let mut channel = String::with_capacity(prefix.len() + HASH_CHARS);
    channel.push_str(prefix);
    channel.push_str(&name_hash(room));
    channel
}

/// The channel every node listens to for control frames.
pub fn control_all_channel(control_prefix: &str) -> String {
    format!("{control_prefix}all")
}

/// The channel of one node's control inbox.
pub fn control_node_channel(control_prefix: &str, node: &str) -> String {
    format!("{control_prefix}n{}", name_hash(node))
}

/// `identifier` as a quoted SQL identifier: in double quotes, each `"`
/// doubled. For names without a NUL byte (the builder checks prefixes).
pub fn quote_identifier(identifier: &str) -> String {
    let mut quoted = String::with_capacity(identifier.len() + 2);
    quoted.push('"');
    for c in identifier.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Whether `prefix` can start a channel of at most `max` bytes before the
/// hash: not empty, printable ASCII (a space and `"` included; the adapter
/// quotes), at most `max` bytes. The error names the setting and the value.
pub(crate) fn check_prefix(name: &str, prefix: &str, max: usize) -> Result<(), String> {
    if prefix.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if let Some(bad) = prefix.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "{name} {prefix:?} contains {bad:?}: a channel prefix is printable ASCII"
        ));
    }
    if prefix.len() > max {
        return Err(format!(
            "{name} {prefix:?} is {} bytes, over {max}: a PostgreSQL channel is an identifier \
             of at most {MAX_IDENTIFIER_BYTES} bytes, and the hash takes the rest",
            prefix.len()
        ));
    }
    Ok(())
}

/// The rooms a node listens to, by channel: how a notification's channel
/// becomes a room again (the hash is one-way). Pure; the listener task owns
/// one.
#[derive(Debug, Default, Clone)]
pub struct ChannelMap {
    rooms: HashMap<String, RoomName>,
}

impl ChannelMap {
    /// Records that `channel` is `room`'s.
    pub fn insert(&mut self, channel: String, room: RoomName) {
        self.rooms.insert(channel, room);
    }

    /// Forgets `channel`.
    pub fn remove(&mut self, channel: &str) -> Option<RoomName> {
        self.rooms.remove(channel)
    }

    /// The room of `channel`, if it is one of ours.
    pub fn room(&self, channel: &str) -> Option<&RoomName> {
        self.rooms.get(channel)
    }

    /// How many channels are mapped.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_identifier_safe(channel: &str) -> bool {
        channel.len() <= MAX_IDENTIFIER_BYTES
            && channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn known_vectors() {
        // SHA-256("") starts e3b0c442 98fc1c14 9afbf4c8 996fb924.
        assert_eq!(name_hash(""), "4oymiquy7qobjgx36tejs35zeq");
        assert_eq!(name_hash("chat").len(), HASH_CHARS);
        assert_eq!(room_channel("p_", "").len(), 2 + HASH_CHARS);
        assert_eq!(control_all_channel("c_"), "c_all");
        assert!(control_node_channel("c_", "node-1").starts_with("c_n"));
        assert_eq!(control_node_channel("c_", "node-1").len(), 3 + HASH_CHARS);
    }

    #[test]
    fn long_names_and_common_prefixes_do_not_collide() {
        let common = "x".repeat(63);
        let a = format!("{common}a");
        let b = format!("{common}b");
        let long = "y".repeat(10_000);
        let channels = [
            room_channel("sse_room_", &common),
            room_channel("sse_room_", &a),
            room_channel("sse_room_", &b),
            room_channel("sse_room_", &long),
        ];
        for channel in &channels {
            assert!(is_identifier_safe(channel), "{channel}");
        }
        let distinct: std::collections::HashSet<_> = channels.iter().collect();
        assert_eq!(distinct.len(), channels.len());
    }

    #[test]
    fn the_suites_odd_names_map_to_safe_distinct_channels() {
        let mut names = rooms_conformance::odd_room_names();
        names.push("\"quoted\"".to_owned());
        let mut map = ChannelMap::default();
        for name in &names {
            let channel = room_channel("sse_room_", name);
            assert!(is_identifier_safe(&channel), "{name:?} -> {channel}");
            assert!(map.room(&channel).is_none(), "collision for {name:?}");
            map.insert(channel, RoomName::from(name.as_str()));
        }
        for name in &names {
            assert_eq!(
                map.room(&room_channel("sse_room_", name))
                    .map(RoomName::as_str),
                Some(name.as_str())
            );
        }
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier("plain"), "\"plain\"");
        assert_eq!(quote_identifier("a\"b\"\""), "\"a\"\"b\"\"\"\"\"");
        assert_eq!(quote_identifier("with space"), "\"with space\"");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("channel_prefix", "sse_room_", MAX_PREFIX_BYTES).is_ok());
        assert!(check_prefix("channel_prefix", "A \"q\" :.", MAX_PREFIX_BYTES).is_ok());
        let too_long = "p".repeat(MAX_PREFIX_BYTES + 1);
        for bad in ["", "tab\t", "nul\0", "é", too_long.as_str()] {
            let error = check_prefix("channel_prefix", bad, MAX_PREFIX_BYTES).unwrap_err();
            assert!(error.contains("channel_prefix"), "{error}");
        }
    }

    proptest! {
        #[test]
        fn any_name_maps_to_a_short_identifier_and_back(name in any::<String>()) {
            let channel = room_channel("sse_room_", &name);
            prop_assert!(is_identifier_safe(&channel));
            prop_assert_eq!(channel.len(), "sse_room_".len() + HASH_CHARS);
            let mut map = ChannelMap::default();
            map.insert(channel.clone(), RoomName::from(name.as_str()));
            prop_assert_eq!(map.room(&channel).map(RoomName::as_str), Some(name.as_str()));
            // Deterministic: every node computes the same channel.
            prop_assert_eq!(room_channel("sse_room_", &name), channel);
        }

        #[test]
        fn names_with_a_common_63_byte_prefix_never_collide(
            tail_a in any::<String>(),
            tail_b in any::<String>(),
        ) {
            prop_assume!(tail_a != tail_b);
            let common = "c".repeat(MAX_IDENTIFIER_BYTES);
            prop_assert_ne!(
                room_channel("sse_room_", &format!("{common}{tail_a}")),
                room_channel("sse_room_", &format!("{common}{tail_b}"))
            );
        }

        #[test]
        fn distinct_names_never_collide(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(name_hash(&a), name_hash(&b));
        }
    }
}
