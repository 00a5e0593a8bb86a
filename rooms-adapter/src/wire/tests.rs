//! Unit tests of the wire format: encode, decode, limits.

use super::decode::interned_node;
use super::nesting::msgpack_nests_deeper_than;
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
