//! The NATS wire contract for subjects: how a room name (any string) becomes
//! one subject-safe token, and back.
//!
//! # Room tokens
//!
//! A room's token is the letter `r` followed by the room name's UTF-8 bytes in
//! unpadded base64url (RFC 4648 §5: `A`–`Z`, `a`–`z`, `0`–`9`, `-`, `_`; no
//! `=`). The empty room is the token `r`. A room's subject is
//! `{prefix}{token}`; with the default prefix `sse.room.`, room `chat` is
//! `sse.room.rY2hhdA`.
//!
//! Why this shape:
//! - Every room name is allowed (empty, unicode, `*`, `>`, `.`, spaces,
//!   line breaks, any length up to [`MAX_SUBJECT_BYTES`] once encoded), and
//!   none can inject a wildcard or an extra subject token.
//! - It is reversible ([`decode_room_token`]) and collision-free: two
//!   different names never share a token, because base64 without padding is
//!   one-to-one and the decoder accepts only the canonical form.
//! - The leading `r` keeps the empty room a valid (non-empty) token, and
//!   leaves room for other schemes later without ambiguity.
//! - Tokens never contain a `.`, so a room subject always has exactly one
//!   token after the prefix: `{prefix}*` matches every room and nothing
//!   else.
//!
//! Other languages implement it in one line, e.g. in TypeScript
//! `"r" + Buffer.from(room, "utf8").toString("base64url")`.
//!
//! # Control subjects
//!
//! With the control capability, node heartbeats and cross-node queries
//! travel on `{control_prefix}all` (every node) and
//! `{control_prefix}node.{node token}` (one node's inbox), where the node
//! token encodes the node id exactly like a room name. The default control
//! prefix is `rooms-control.` followed by the room prefix
//! (`rooms-control.sse.room.`); the builder refuses a control prefix and a
//! room prefix of which one starts with the other, so a control subject can
//! never be a room subject.
//!
//! ```
//! use rooms_adapter_nats::subject::{decode_room_token, room_subject, room_token};
//!
//! assert_eq!(room_token("chat"), "rY2hhdA");
//! assert_eq!(room_token(""), "r");
//! assert_eq!(room_subject("sse.room.", "a.b *>"), "sse.room.rYS5iICo-");
//! assert_eq!(decode_room_token("rYS5iICo-").as_deref(), Some("a.b *>"));
//! assert_eq!(decode_room_token("not a token"), None);
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The marker that starts every token of this scheme.
pub const TOKEN_MARKER: char = 'r';

/// The longest subject the adapter publishes or subscribes to, prefix
/// included, in bytes. A NATS server closes a connection whose protocol line
/// is longer than its `max_control_line` (4 KiB by default), which would cut
/// every room of the node off at once: longer subjects are refused up front.
/// A room name of up to about 2,900 bytes fits with the default prefix.
pub const MAX_SUBJECT_BYTES: usize = 4_000;

/// The token of `room`: `r` + unpadded base64url of its UTF-8 bytes.
pub fn room_token(room: &str) -> String {
    let mut token = String::with_capacity(1 + room.len().div_ceil(3) * 4);
    token.push(TOKEN_MARKER);
    URL_SAFE_NO_PAD.encode_string(room.as_bytes(), &mut token);
    token
}

/// The subject of `room` under `prefix`: `{prefix}{token}`.
pub fn room_subject(prefix: &str, room: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + room.len().div_ceil(3) * 4);
    subject.push_str(prefix);
    subject.push(TOKEN_MARKER);
    URL_SAFE_NO_PAD.encode_string(room.as_bytes(), &mut subject);
    subject
}

/// The room name of a token, or `None` if `token` is not a canonical token of
/// this scheme (no leading `r`, a character outside base64url, padding,
/// non-canonical trailing bits, or bytes that are not UTF-8).
pub fn decode_room_token(token: &str) -> Option<String> {
    let encoded = token.strip_prefix(TOKEN_MARKER)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// The subject every node listens to for control frames.
pub fn control_all_subject(control_prefix: &str) -> String {
    format!("{control_prefix}all")
}

/// The subject of one node's control inbox.
pub fn control_node_subject(control_prefix: &str, node: &str) -> String {
    format!("{control_prefix}node.{}", room_token(node))
}

/// Whether `prefix` can start a subject: empty, or printable ASCII without
/// whitespace, `*` or `>`, not starting with `.` and without `..`.
pub(crate) fn check_prefix(name: &str, prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '*' | '>'))
    {
        return Err(format!(
            "{name} {prefix:?} contains {bad:?}: a NATS subject prefix is printable ASCII \
             without whitespace, `*` or `>`"
        ));
    }
    if prefix.starts_with('.') || prefix.contains("..") {
        return Err(format!(
            "{name} {prefix:?} has an empty subject token (a leading `.` or `..`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_subject_safe(token: &str) -> bool {
        !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    #[test]
    fn the_suites_odd_names_round_trip_into_safe_distinct_tokens() {
        let mut names = rooms_conformance::odd_room_names();
        names.extend([">", ".", "a.b", "\r\n"].map(str::to_owned));
        let long = "x".repeat(1000);
        let mut seen = std::collections::HashSet::new();
        for name in &names {
            let token = room_token(name);
            assert!(is_subject_safe(&token), "{name:?} -> {token:?}");
            assert_eq!(decode_room_token(&token).as_deref(), Some(name.as_str()));
            assert!(seen.insert(token), "collision for {name:?}");
        }
        assert!(room_subject("sse.room.", &long).len() < MAX_SUBJECT_BYTES);
    }

    #[test]
    fn known_vectors() {
        assert_eq!(room_token(""), "r");
        assert_eq!(room_token("chat"), "rY2hhdA");
        assert_eq!(room_token("ü"), "rw7w");
        assert_eq!(room_subject("sse.room.", "chat"), "sse.room.rY2hhdA");
        assert_eq!(
            control_all_subject("rooms-control.sse.room."),
            "rooms-control.sse.room.all"
        );
        assert_eq!(control_node_subject("c.", "node-1"), "c.node.rbm9kZS0x");
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        for token in ["", "x", "rY2hhdA=", "rY2hhdB", "r*", "r.a", "r+/", "r/w=="] {
            assert_eq!(decode_room_token(token), None, "{token:?}");
        }
        // Bytes that are not UTF-8.
        assert_eq!(decode_room_token("r__8"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("prefix", "sse.room.").is_ok());
        assert!(check_prefix("prefix", "rooms_").is_ok());
        for bad in ["", "a b.", "a.*.", "a.>", ".a.", "a..b.", "tab\t"] {
            let error = check_prefix("prefix", bad).unwrap_err();
            assert!(error.contains("prefix"), "{error}");
        }
    }

    proptest! {
        #[test]
        fn any_name_round_trips(name in any::<String>()) {
            let token = room_token(&name);
            prop_assert!(is_subject_safe(&token));
            prop_assert_eq!(decode_room_token(&token), Some(name.clone()));
            prop_assert_eq!(room_subject("p.", &name), format!("p.{token}"));
        }

        #[test]
        fn distinct_names_never_collide(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(room_token(&a), room_token(&b));
        }

        #[test]
        fn decoding_then_encoding_is_the_identity(token in "r[A-Za-z0-9_-]{0,40}") {
            if let Some(name) = decode_room_token(&token) {
                prop_assert_eq!(room_token(&name), token);
            }
        }
    }
}
