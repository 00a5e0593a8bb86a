//! Property tests: every envelope round-trips through both codecs; decoding
//! arbitrary bytes never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rooms_adapter::wire::{self, Codec};
use rooms_adapter::{ConnectionId, Envelope, NodeId, SseMessage};
use serde_json::{Map, Value};

/// Whether serde_json reads the float it writes back bit for bit. Always with
/// feature `float-roundtrip` (serde_json's `float_roundtrip`); without it,
/// serde_json's faster parser can be one unit in the last place off for a few
/// values, which are left out here.
fn reads_back_exactly(float: f64) -> bool {
    let text = serde_json::to_string(&float).unwrap();
    let exact = serde_json::from_str::<f64>(&text).unwrap() == float;
    assert!(
        exact || cfg!(not(feature = "float-roundtrip")),
        "{text} does not read back as {float:e} with float-roundtrip on"
    );
    exact
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300)
            .prop_filter("reads back exactly", |float| reads_back_exactly(*float))
            .prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        json_value(),
        proptest::option::of(".*"),
        proptest::option::of(".*"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(".*"),
        ".+",
        proptest::option::of(json_value()),
    )
        .prop_map(|(data, event, id, retry, except, node, meta)| {
            let message = SseMessage {
                event,
                data: data.into(),
                id,
                retry,
            };
            Envelope::new(NodeId::from(node), message)
                .with_except(except.map(ConnectionId::from))
                .with_meta(meta)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_envelope_round_trips_through_both_codecs(envelope in envelope()) {
        for codec in [Codec::Json, Codec::MessagePack] {
            let bytes = envelope.encode(codec).unwrap();
            prop_assert_eq!(wire::detect_codec(&bytes).unwrap(), codec);
            let decoded = wire::decode(&bytes, usize::MAX).unwrap();
            prop_assert_eq!(&decoded, &envelope);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&bytes, 256);
    }

    #[test]
    fn decoding_mutated_envelopes_never_panics(
        envelope in envelope(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for codec in [Codec::Json, Codec::MessagePack] {
            let mut bytes = envelope.encode(codec).unwrap().to_vec();
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            let _ = wire::decode(&bytes, usize::MAX);
            let _ = wire::decode(&bytes[..cut.index(bytes.len())], usize::MAX);
        }
    }

}

/// Hostile shapes, up to several MiB: deep nesting of every container kind in
/// both codecs, many keys, huge strings and long runs of one marker byte.
fn hostile_payload() -> impl Strategy<Value = Vec<u8>> {
    let depth = 0usize..200_000;
    prop_oneof![
        // JSON nesting, mixed arrays and objects, inside `m.data` or anywhere.
        (depth.clone(), any::<bool>()).prop_map(|(depth, in_data)| {
            let open: String = (0..depth)
                .map(|i| if i % 3 == 0 { "{\"k\":" } else { "[" })
                .collect();
            let close: String = (0..depth)
                .rev()
                .map(|i| if i % 3 == 0 { "}" } else { "]" })
                .collect();
            let data = format!("{open}0{close}");
            if in_data {
                format!(r#"{{"v":1,"m":{{"data":{data}}},"n":"x"}}"#).into_bytes()
            } else {
                format!(r#"{{"v":1,"meta":{data},"m":{{}},"n":"x"}}"#).into_bytes()
            }
        }),
        // MessagePack nesting with every container marker.
        (
            depth.clone(),
            prop::sample::select(vec![0x91u8, 0x81, 0xdc, 0xde])
        )
            .prop_map(|(depth, marker)| {
                let mut out = vec![0x83, 0xa1, b'v', 0x01, 0xa1, b'n', 0xa1, b'x', 0xa1, b'm'];
                for _ in 0..depth {
                    match marker {
                        0x81 => out.extend_from_slice(&[0x81, 0xa1, b'k']),
                        0xdc => out.extend_from_slice(&[0xdc, 0x00, 0x01]),
                        0xde => out.extend_from_slice(&[0xde, 0x00, 0x01, 0xa1, b'k']),
                        other => out.push(other),
                    }
                }
                out.push(0xc0);
                out
            },),
        // Many keys.
        (0usize..200_000).prop_map(|keys| {
            let body: Vec<String> = (0..keys).map(|i| format!(r#""k{i}":{i}"#)).collect();
            format!(r#"{{"v":1,"m":{{"data":{{{}}}}},"n":"x"}}"#, body.join(",")).into_bytes()
        }),
        // A huge string, with escapes.
        (0usize..4_000_000).prop_map(|len| {
            let text = "a\\\"\\u00e9 ".repeat(len / 12 + 1);
            format!(
                r#"{{"v":1,"m":{{"data":"{text}","id":"{}"}},"n":"x"}}"#,
                "i".repeat(len % 400)
            )
            .into_bytes()
        }),
        // A run of one byte.
        (any::<u8>(), 0usize..4_000_000).prop_map(|(byte, len)| vec![byte; len]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decoding_large_and_deep_inputs_never_panics(payload in hostile_payload()) {
        // Run where a tokio worker would: a 2 MiB stack, whatever the profile.
        let outcome = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || wire::decode(&payload, 8 * 1024 * 1024).map(|e| e.message().data.as_json().len()))
            .unwrap()
            .join();
        prop_assert!(outcome.is_ok(), "decode panicked");
    }
}
