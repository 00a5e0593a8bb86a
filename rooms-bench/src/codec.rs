//! Codec micro-benchmarks on the golden vectors captured from the TypeScript
//! package (`rooms-adapter/tests/fixtures/ts-v1-vectors.json`): encode and
//! decode, JSON vs MessagePack.
//!
//! [`measure`] runs the loops directly for the xtask's table (nanoseconds per
//! message, averaged over the whole vector set); `benches/codec.rs` runs the
//! same loops under criterion for detailed, per-vector statistics.
//!
//! The baseline is generic serde with the same codec: the vector's decoded
//! JSON value serialized with `serde_json::to_vec` / `rmp_serde::to_vec_named`,
//! and parsed back into a `serde_json::Value`: what a receiver that does not
//! know the envelope's shape would pay.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use rooms_adapter::Envelope;
use rooms_adapter::wire::{self, Codec, DEFAULT_MAX_PAYLOAD_BYTES};
use serde_json::{Value, json};

const VECTORS: &str = include_str!("../../rooms-adapter/tests/fixtures/ts-v1-vectors.json");

/// One golden vector: its description and the envelope its payload decodes to.
#[derive(Debug, Clone)]
pub struct Vector {
    /// What the vector is about, from the fixture.
    pub description: String,
    /// The decoded envelope.
    pub envelope: Envelope,
    /// The payload as a generic JSON value (the fixture's `decoded`).
    pub value: Value,
}

/// Every golden vector, decoded.
pub fn golden() -> Result<Vec<Vector>> {
    let vectors: Vec<Value> =
        serde_json::from_str(VECTORS).context("parsing the golden vectors")?;
    vectors
        .iter()
        .map(|vector| {
            let description = vector["description"].as_str().unwrap_or("?").to_owned();
            let payload = vector["payload"]
                .as_str()
                .with_context(|| format!("vector {description:?} has no payload"))?;
            let envelope = wire::decode(payload.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES)
                .map_err(|e| anyhow::anyhow!("vector {description:?} does not decode: {e}"))?;
            let value = vector["decoded"].clone();
            Ok(Vector {
                description,
                envelope,
                value,
            })
        })
        .collect()
}

/// A copy of `envelope` with an empty encoding cache (an [`Envelope`] caches
/// its encoding, so encoding the same one twice would measure the cache).
pub fn fresh(envelope: &Envelope) -> Envelope {
    Envelope::new(envelope.node().clone(), envelope.shared_message().clone())
        .with_except(envelope.except().cloned())
        .with_meta(envelope.meta().cloned())
}

/// Encodes `envelope` afresh.
pub fn encode(envelope: &Envelope, codec: Codec) -> Result<Bytes> {
    fresh(envelope)
        .encode(codec)
        .with_context(|| format!("encoding as {codec}"))
}

/// Every vector encoded in `codec`.
pub fn encoded(vectors: &[Vector], codec: Codec) -> Result<Vec<Bytes>> {
    vectors.iter().map(|v| encode(&v.envelope, codec)).collect()
}

/// Runs `pass` (one pass over `per_pass` messages) for about `budget`, in five
/// slices, and returns nanoseconds per message of the fastest slice (the
/// least disturbed by other work on the machine).
fn time_per_message(budget: Duration, per_pass: usize, mut pass: impl FnMut()) -> f64 {
    // Warm up.
    for _ in 0..3 {
        pass();
    }
    let slice = budget / 5;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        let mut passes = 0u64;
        while started.elapsed() < slice {
            pass();
            passes += 1;
        }
        let ns = started.elapsed().as_nanos() as f64 / (passes * per_pass as u64).max(1) as f64;
        best = best.min(ns);
    }
    best
}

/// Serializes a generic value with `codec` (the baseline's encoder).
pub fn encode_value(value: &Value, codec: Codec) -> Result<Vec<u8>> {
    match codec {
        Codec::MessagePack => rmp_serde::to_vec_named(value).context("msgpack encode"),
        _ => serde_json::to_vec(value).context("json encode"),
    }
}

/// Parses a payload of `codec` into a generic value (the baseline's decoder).
pub fn decode_value(payload: &[u8], codec: Codec) -> Result<Value> {
    match codec {
        Codec::MessagePack => rmp_serde::from_slice(payload).context("msgpack decode"),
        _ => serde_json::from_slice(payload).context("json decode"),
    }
}

/// Encode and decode, JSON and MessagePack, each for about `budget`, for the
/// wire codec and the generic-serde baseline.
pub fn measure(budget: Duration) -> Result<Value> {
    let vectors = golden()?;
    let count = vectors.len();
    let mut out = json!({ "vectors": count });
    for codec in [Codec::Json, Codec::MessagePack] {
        let payloads = encoded(&vectors, codec)?;
        let bytes: usize = payloads.iter().map(Bytes::len).sum();
        let encode_ns = time_per_message(budget, count, || {
            for vector in &vectors {
                black_box(fresh(&vector.envelope).encode(codec).ok());
            }
        });
        let decode_ns = time_per_message(budget, count, || {
            for payload in &payloads {
                black_box(wire::decode(payload, DEFAULT_MAX_PAYLOAD_BYTES).ok());
            }
        });
        let generic_encode_ns = time_per_message(budget, count, || {
            for vector in &vectors {
                black_box(encode_value(&vector.value, codec).ok());
            }
        });
        let generic_decode_ns = time_per_message(budget, count, || {
            for payload in &payloads {
                black_box(decode_value(payload, codec).ok());
            }
        });
        out[codec.name()] = json!({
            "encode_ns": encode_ns,
            "decode_ns": decode_ns,
            "generic_encode_ns": generic_encode_ns,
            "generic_decode_ns": generic_decode_ns,
            "mean_bytes": bytes as f64 / count.max(1) as f64,
        });
    }
    Ok(out)
}
