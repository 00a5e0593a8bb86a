//! The v1 wire format against payloads captured from the real TypeScript
//! package (`@opinionated-machine/sse-rooms-redis@2.0.0`): see
//! `tests/fixtures/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rooms_adapter::wire::{self, Codec, DEFAULT_CHANNEL_PREFIX, DecodeErrorKind};
use rooms_adapter::{Envelope, NodeId, SseMessage};
use serde_json::{Value, json};

const VECTORS: &str = include_str!("fixtures/ts-v1-vectors.json");
const RECEIVE: &str = include_str!("fixtures/ts-v1-receive-behaviour.json");
const PUBLISH_EDGES: &str = include_str!("fixtures/ts-v1-publish-edge-cases.json");

/// The TS fixtures mark JavaScript `undefined` with this string.
const UNDEFINED: &str = "__undefined__";

fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The message as the Rust side models it: JavaScript `undefined` data has no
/// Rust counterpart and decodes as null; unknown keys inside `m` (which never
/// reach an SSE client) are ignored.
fn ts_message_as_rust(message: &Value) -> Value {
    let mut message = message.clone();
    if let Some(fields) = message.as_object_mut() {
        fields.retain(|key, _| matches!(key.as_str(), "event" | "data" | "id" | "retry"));
        fields.entry("data").or_insert(Value::Null);
    }
    message
}

fn defined(value: &Value) -> Option<&Value> {
    (value != UNDEFINED).then_some(value)
}

fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("encoder writes JSON")
}

#[test]
fn every_ts_payload_decodes_to_what_the_ts_handler_saw() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(vectors.len(), 27);
    for vector in &vectors {
        let name = vector["description"].as_str().unwrap();
        let payload = vector["payload"].as_str().unwrap();
        assert_eq!(
            decode_base64(vector["payloadBytesBase64"].as_str().unwrap()),
            payload.as_bytes()
        );
        let envelope = wire::decode(payload.as_bytes(), wire::DEFAULT_MAX_PAYLOAD_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let args = &vector["tsHandlerArgs"];
        let expected_message = ts_message_as_rust(&args["message"]);
        assert_eq!(
            serde_json::to_value(envelope.message()).unwrap(),
            expected_message,
            "{name}"
        );
        assert_eq!(
            envelope.node().as_str(),
            args["sourceNodeId"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(envelope.meta(), defined(&args["metadata"]), "{name}");
        assert_eq!(envelope.except(), None, "{name}");

        let prefix = vector["channelPrefix"].as_str().unwrap();
        let room = vector["room"].as_str().unwrap();
        assert_eq!(
            wire::channel_name(prefix, room),
            vector["channel"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn re_encoding_gives_the_ts_payload_as_a_json_value() {
    let vectors: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
    for vector in &vectors {
        let name = vector["description"].as_str().unwrap();
        let envelope =
            wire::decode(vector["payload"].as_str().unwrap().as_bytes(), usize::MAX).unwrap();
        let mut expected = vector["decoded"].clone();
        // The one documented difference: absent data is re-encoded as null.
        expected["m"] = ts_message_as_rust(&expected["m"]);
        assert_eq!(
            as_json(&envelope.encode(Codec::Json).unwrap()),
            expected,
            "{name}"
        );

        // And building the same message by hand from the publish arguments.
        let args = &vector["publishArgs"];
        let message: SseMessage = serde_json::from_value(args["message"].clone()).unwrap();
        let node = NodeId::from(vector["decoded"]["n"].as_str().unwrap());
        let by_hand = Envelope::new(node, message).with_meta(defined(&args["metadata"]).cloned());
        assert_eq!(
            as_json(&by_hand.encode(Codec::Json).unwrap()),
            expected,
            "{name} (by hand)"
        );

        // MessagePack carries exactly the same envelope.
        let packed = envelope.encode(Codec::MessagePack).unwrap();
        assert_eq!(
            wire::decode(&packed, usize::MAX).unwrap(),
            envelope,
            "{name} (msgpack)"
        );
        assert!(
            packed.len() < vector["payloadByteLength"].as_u64().unwrap() as usize + 8,
            "{name}"
        );
    }
}

/// The TS adapter checks only `v === 1`; the Rust decoder is stricter where a
/// payload is not a well-formed envelope, and reads MessagePack, which a TS node
/// ignores. Every other case must behave exactly as the TS adapter did.
fn rust_differs(description: &str) -> Option<Result<(), DecodeErrorKind>> {
    use DecodeErrorKind::*;
    Some(match description {
        "missing m" | "missing n" => Err(MissingField),
        "m is null"
        | "m is a string"
        | "m is an array"
        | "m with wrong field types (event number, id number, retry string)"
        | "n is a number" => Err(InvalidField),
        // Accepted, as by TS: `data` is carried as the JSON text that arrived.
        // A Rust String cannot hold a lone UTF-16 surrogate, so that string is
        // refused when framed for SSE (and counted as `remote_rejected`).
        "lone surrogate escape inside a string" => Ok(()),
        "msgpack-encoded binary blob of {v:1,m:{data:\"x\"},n:\"a\"}" => Ok(()),
        _ => return None,
    })
}

#[test]
fn receive_behaviour_matches_the_ts_adapter_or_is_documented_stricter() {
    let fixture: Value = serde_json::from_str(RECEIVE).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 39);
    let mut stricter = 0;
    for case in cases {
        let name = case["description"].as_str().unwrap();
        let payload = decode_base64(case["rawPayloadBase64"].as_str().unwrap());
        let decoded = wire::decode(&payload, wire::DEFAULT_MAX_PAYLOAD_BYTES);
        match rust_differs(name) {
            Some(expected) => {
                stricter += 1;
                assert_eq!(
                    decoded.as_ref().map(|_| ()).map_err(|e| e.kind()),
                    expected,
                    "{name}"
                );
            }
            None if case["handlerCalled"] == true => {
                let envelope =
                    decoded.unwrap_or_else(|e| panic!("{name}: TS accepted it, Rust said {e}"));
                let args = &case["handlerArgs"][0];
                assert_eq!(
                    serde_json::to_value(envelope.message()).unwrap(),
                    ts_message_as_rust(&args["message"]),
                    "{name}"
                );
                assert_eq!(
                    envelope.node().as_str(),
                    args["sourceNodeId"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(envelope.meta(), defined(&args["metadata"]), "{name}");
            }
            None => assert!(decoded.is_err(), "{name}: TS skipped it, Rust accepted it"),
        }
    }
    assert_eq!(stricter, 9);
}

#[test]
fn publish_edge_cases_match_what_ts_puts_on_the_wire() {
    let fixture: Value = serde_json::from_str(PUBLISH_EDGES).unwrap();
    let wire_of = |description: &str| -> Value {
        let case = fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["description"].as_str().unwrap().starts_with(description))
            .unwrap();
        serde_json::from_str(case["payloadsOnWire"][0].as_str().unwrap()).unwrap()
    };
    let node = || NodeId::from("node-ts-golden-1");

    // NaN and Infinity have no JSON form: serde_json holds them as null, like JSON.stringify.
    let nan = SseMessage::new(json!([f64::NAN, f64::INFINITY])).with_event("nan");
    let encoded = Envelope::new(node(), nan).encode(Codec::Json).unwrap();
    assert_eq!(as_json(&encoded), wire_of("data is NaN/Infinity"));

    // Undefined data: the TS payload decodes, with null data.
    let undefined = wire_of("data is undefined");
    let envelope = wire::decode(undefined.to_string().as_bytes(), usize::MAX).unwrap();
    assert_eq!(
        envelope.message(),
        &SseMessage {
            event: Some("u".into()),
            ..SseMessage::default()
        }
    );

    // BigInt and cyclic values cannot exist in a serde_json::Value; nothing to test.
}

#[test]
fn default_prefix_is_the_ts_default() {
    assert_eq!(DEFAULT_CHANNEL_PREFIX, "sse:room:");
}
