//! Criterion benchmarks of the v1 codecs on the golden vectors captured from
//! the TypeScript package: encode and decode, JSON vs MessagePack.
//!
//! `cargo bench -p rooms-bench --bench codec` (add `-- --quick` for a short
//! run). `cargo xtask bench codec` measures the same loops without criterion
//! for its summary table.
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rooms_adapter::wire::{self, Codec, DEFAULT_MAX_PAYLOAD_BYTES};
use rooms_bench::codec::{decode_value, encode_value, encoded, fresh, golden};

fn codecs(c: &mut Criterion) {
    let vectors = golden().expect("golden vectors decode");
    for codec in [Codec::Json, Codec::MessagePack] {
        let payloads = encoded(&vectors, codec).expect("golden vectors encode");

        let mut group = c.benchmark_group(format!("encode/{codec}"));
        group.throughput(Throughput::Elements(vectors.len() as u64));
        group.bench_function("all-vectors", |b| {
            b.iter(|| {
                for vector in &vectors {
                    black_box(fresh(&vector.envelope).encode(codec).ok());
                }
            });
        });
        group.bench_function("all-vectors/generic-serde", |b| {
            b.iter(|| {
                for vector in &vectors {
                    black_box(encode_value(&vector.value, codec).ok());
                }
            });
        });
        for (i, vector) in vectors.iter().enumerate() {
            group.bench_with_input(BenchmarkId::new("vector", i), vector, |b, vector| {
                b.iter(|| black_box(fresh(&vector.envelope).encode(codec).ok()));
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("decode/{codec}"));
        group.throughput(Throughput::Elements(payloads.len() as u64));
        group.bench_function("all-vectors", |b| {
            b.iter(|| {
                for payload in &payloads {
                    black_box(wire::decode(payload, DEFAULT_MAX_PAYLOAD_BYTES).ok());
                }
            });
        });
        group.bench_function("all-vectors/generic-serde", |b| {
            b.iter(|| {
                for payload in &payloads {
                    black_box(decode_value(payload, codec).ok());
                }
            });
        });
        for (i, payload) in payloads.iter().enumerate() {
            group.bench_with_input(BenchmarkId::new("vector", i), payload, |b, payload| {
                b.iter(|| black_box(wire::decode(payload, DEFAULT_MAX_PAYLOAD_BYTES).ok()));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
