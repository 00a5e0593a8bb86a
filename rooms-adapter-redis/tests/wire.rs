//! What arrives from the wire: every golden payload a Node.js node sends, and
//! bad payloads among good ones (real redis-server, raw PUBLISH).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter::wire::{self, Codec, DecodeErrorKind};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_testkit::poll::eventually;
use serde_json::Value;

use common::*;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rooms-adapter/tests/fixtures/ts-v1-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("golden vectors");
    serde_json::from_str::<Vec<Value>>(&text).expect("golden json")
}

/// Every payload the TypeScript adapter published, PUBLISHed by hand on its
/// channel, arrives as the same message, metadata and source node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_payload_arrives_as_the_typescript_node_sent_it() {
    let server = server().await;
    let url = server.url();
    let vectors = vectors();
    assert_eq!(vectors.len(), 27);

    // One adapter per channel prefix used by the vectors.
    let mut by_prefix: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for vector in &vectors {
        let prefix = vector["channelPrefix"].as_str().expect("prefix").to_owned();
        by_prefix.entry(prefix).or_default().push(vector);
    }
    let mut checked = 0;
    for (prefix, vectors) in by_prefix {
        let (adapter, mut events) =
            connected(&url, "rust-node", |b| b.channel_prefix(prefix.clone())).await;
        for vector in vectors {
            let description = vector["description"].as_str().expect("description");
            let room = RoomName::from(vector["room"].as_str().expect("room"));
            let channel = vector["channel"].as_str().expect("channel");
            assert_eq!(
                wire::channel_name(&prefix, room.as_str()),
                channel,
                "{description}"
            );
            adapter.subscribe(&room).await.expect("subscribe");

            let payload = vector["payload"].as_str().expect("payload");
            assert_eq!(
                publish_raw(&url, channel, payload.as_bytes()).await,
                1,
                "{description}"
            );
            let (got_room, envelope) = next_message(&mut events).await;

            let decoded = &vector["decoded"];
            let expected_message: SseMessage =
                serde_json::from_value(decoded["m"].clone()).expect("message");
            assert_eq!(got_room, room, "{description}");
            assert_eq!(envelope.message(), &expected_message, "{description}");
            assert_eq!(
                envelope.node().as_str(),
                decoded["n"].as_str().expect("n"),
                "{description}"
            );
            let expected_meta = match &vector["tsHandlerArgs"]["metadata"] {
                Value::String(s) if s == "__undefined__" => None,
                other => Some(other.clone()),
            };
            assert_eq!(envelope.meta(), expected_meta.as_ref(), "{description}");
            // What this node would send for it is the same JSON value (a
            // missing `data` reads as null and is sent as `"data":null`).
            let ours: Value =
                serde_json::from_slice(&envelope.encode(Codec::Json).expect("encode"))
                    .expect("json");
            let mut expected = decoded.clone();
            if let Some(m) = expected["m"].as_object_mut() {
                m.entry("data").or_insert(Value::Null);
            }
            assert_eq!(ours, expected, "{description}");
            adapter.unsubscribe(&room).await.expect("unsubscribe");
            checked += 1;
        }
        assert_eq!(adapter.stats().decode_errors_total(), 0);
        adapter.disconnect().await.expect("disconnect");
    }
    assert_eq!(checked, 27);
}

/// Garbage, a future version, truncated MessagePack and an over-limit payload
/// are skipped and counted by kind; the good messages around them arrive in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_skipped_and_counted_between_good_ones() {
    const LIMIT: usize = 1024;
    let server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "rust-node", |b| b.max_payload_bytes(LIMIT)).await;
    let room = RoomName::from("mixed");
    adapter.subscribe(&room).await.expect("subscribe");
    let channel = wire::channel_name(wire::DEFAULT_CHANNEL_PREFIX, "mixed");

    let good = |n: u64| {
        Envelope::new(NodeId::from("foreign"), SseMessage::new(n))
            .encode(Codec::Json)
            .expect("encode")
    };
    let good_msgpack = Envelope::new(NodeId::from("foreign"), SseMessage::new(2))
        .encode(Codec::MessagePack)
        .expect("encode");
    let oversized = Envelope::new(
        NodeId::from("foreign"),
        SseMessage::new("x".repeat(2 * LIMIT)),
    )
    .encode(Codec::Json)
    .expect("encode");
    let truncated = &good_msgpack[..good_msgpack.len() / 2];

    publish_raw(&url, &channel, &good(1)).await;
    publish_raw(&url, &channel, b"garbage \xde\xad\xff").await;
    publish_raw(&url, &channel, br#"{"v":2,"m":{"data":1},"n":"future"}"#).await;
    publish_raw(&url, &channel, &good_msgpack).await;
    publish_raw(&url, &channel, truncated).await;
    publish_raw(&url, &channel, &oversized).await;
    publish_raw(&url, &channel, br#"{"v":1,"n":"no message"}"#).await;
    publish_raw(&url, &channel, &good(3)).await;

    for expected in 1..=3u64 {
        let (got_room, envelope) = next_message(&mut events).await;
        assert_eq!(got_room, room);
        assert_eq!(envelope.message().data, Value::from(expected));
    }
    eventually("five bad payloads counted", DEADLINE, || async {
        adapter.stats().decode_errors_total() == 5
    })
    .await;
    let stats = adapter.stats();
    let kind = |k| stats.decode_errors.get(&k).copied().unwrap_or(0);
    assert_eq!(kind(DecodeErrorKind::UnknownFormat), 1, "{stats:?}");
    assert_eq!(kind(DecodeErrorKind::UnsupportedVersion), 1, "{stats:?}");
    assert_eq!(kind(DecodeErrorKind::Malformed), 1, "{stats:?}");
    assert_eq!(kind(DecodeErrorKind::TooLarge), 1, "{stats:?}");
    assert_eq!(kind(DecodeErrorKind::MissingField), 1, "{stats:?}");
    assert_eq!(stats.received, 3);

    // Outbound: an envelope over the limit is refused before it reaches Redis.
    let error = adapter
        .publish(
            &room,
            &Envelope::new(NodeId::from("me"), SseMessage::new("y".repeat(2 * LIMIT))),
        )
        .await
        .expect_err("oversized publish fails");
    assert!(
        matches!(
            error,
            rooms_adapter::Error::PayloadTooLarge { limit: LIMIT, .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(adapter.stats().publish_errors, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.recv())
            .await
            .is_err(),
        "nothing else arrives"
    );
    adapter.disconnect().await.expect("disconnect");
}

/// A MessagePack envelope nested 1,000 arrays deep is about 1 KB; published by
/// anyone on a room's channel it used to overflow the stack of every
/// debug-built node subscribed. Now it is skipped and counted, whatever the
/// depth or codec, and the good message after it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_payloads_are_skipped_and_the_node_survives() {
    let server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "rust-node", |b| b).await;
    let room = RoomName::from("deep");
    adapter.subscribe(&room).await.expect("subscribe");
    let channel = wire::channel_name(wire::DEFAULT_CHANNEL_PREFIX, "deep");

    let msgpack = |depth: usize| {
        let mut out = vec![0x83, 0xa1, b'v', 0x01, 0xa1, b'n', 0xa1, b'x', 0xa1, b'm'];
        out.extend_from_slice(&[0x81, 0xa4, b'd', b'a', b't', b'a']);
        out.extend(std::iter::repeat_n(0x91, depth));
        out.push(0xc0);
        out
    };
    let json = |depth: usize| {
        format!(
            r#"{{"v":1,"m":{{"data":{}0{}}},"n":"x"}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
        .into_bytes()
    };
    let overlong_id = format!(
        r#"{{"v":1,"m":{{"data":1,"id":"{}"}},"n":"x"}}"#,
        "i".repeat(rooms_adapter::message::MAX_ID_BYTES + 1)
    );
    assert!(msgpack(1_000).len() < 1_100);
    publish_raw(&url, &channel, &msgpack(1_000)).await;
    publish_raw(&url, &channel, &msgpack(200_000)).await;
    publish_raw(&url, &channel, &json(1_000)).await;
    publish_raw(&url, &channel, overlong_id.as_bytes()).await;
    let good = Envelope::new(NodeId::from("foreign"), SseMessage::new("after"))
        .encode(Codec::MessagePack)
        .expect("encode");
    publish_raw(&url, &channel, &good).await;

    let (_, envelope) = next_message(&mut events).await;
    assert_eq!(envelope.message().data, "after");
    let stats = adapter.stats();
    let kind = |k| stats.decode_errors.get(&k).copied().unwrap_or(0);
    assert_eq!(kind(DecodeErrorKind::Malformed), 3, "{stats:?}");
    assert_eq!(kind(DecodeErrorKind::InvalidField), 1, "{stats:?}");
    adapter.disconnect().await.expect("disconnect");
}
