//! Property tests: every envelope round-trips through both codecs; decoding
//! arbitrary bytes never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rooms_adapter::wire::{self, Codec};
use rooms_adapter::{ConnectionId, Envelope, NodeId, SseMessage};
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
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
                data,
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
