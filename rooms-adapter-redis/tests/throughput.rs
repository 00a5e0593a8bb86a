//! A rough publish-path measurement against raw redis-rs, in the same run
//! (ignored by default; the real benchmark is `cargo xtask bench`):
//!
//! ```text
//! cargo test --release -p rooms-adapter-redis --features deadpool,bb8 --test throughput -- --ignored --nocapture
//! ```
//!
//! One subscriber connection counts what arrives; 64 concurrent publishers send
//! ~150-byte JSON envelopes. Raw = plain PUBLISH on one multiplexed connection
//! and a plain SUBSCRIBE; adapter = `RedisAdapter::publish` into a
//! `RedisAdapter` subscriber.
#![cfg(all(feature = "deadpool", feature = "bb8"))]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter};
use rooms_adapter::{Codec, Envelope, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder, redis};
use tokio::time::Instant;

use common::*;

const MESSAGES: usize = 200_000;
const PUBLISHERS: usize = 64;

fn payload() -> Envelope {
    Envelope::new(
        NodeId::from("node-publisher-0001"),
        SseMessage::new(serde_json::json!({"text": "x".repeat(70), "user": "alice"}))
            .with_event("chat"),
    )
}

async fn raw_run(url: &str) -> f64 {
    let client = redis::Client::open(url).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe("sse:room:bench").await.expect("subscribe");
    let mut stream = pubsub.into_on_message();
    let bytes = payload().encode(Codec::Json).expect("encode");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let mut connection = connection.clone();
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..MESSAGES / PUBLISHERS {
                redis::cmd("PUBLISH")
                    .arg("sse:room:bench")
                    .arg(&bytes[..])
                    .exec_async(&mut connection)
                    .await
                    .expect("publish");
            }
        }));
    }
    let mut received = 0;
    while received < MESSAGES / PUBLISHERS * PUBLISHERS {
        tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("raw receive")
            .expect("open");
        received += 1;
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("publisher");
    }
    rate
}

async fn adapter_run(url: &str, configure: fn(RedisAdapterBuilder) -> RedisAdapterBuilder) -> f64 {
    let subscriber = RedisAdapter::builder(url).build().expect("config");
    let (sink, mut events) = EventSink::bounded(1 << 20);
    subscriber
        .connect(NodeId::from("sub"), sink)
        .await
        .expect("connect");
    subscriber
        .subscribe(&RoomName::from("bench"))
        .await
        .expect("subscribe");
    let publisher = Arc::new(
        configure(RedisAdapter::builder(url))
            .build()
            .expect("config"),
    );
    let (sink, _keep) = EventSink::bounded(16);
    publisher
        .connect(NodeId::from("pub"), sink)
        .await
        .expect("connect");
    let envelope = payload();
    envelope.encode(Codec::Json).expect("encode");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let publisher = Arc::clone(&publisher);
        let envelope = envelope.clone();
        tasks.push(tokio::spawn(async move {
            let room = RoomName::from("bench");
            for _ in 0..MESSAGES / PUBLISHERS {
                publisher.publish(&room, &envelope).await.expect("publish");
            }
        }));
    }
    let mut received = 0;
    while received < MESSAGES / PUBLISHERS * PUBLISHERS {
        match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Some(AdapterEvent::Message { .. })) => received += 1,
            Ok(_) => {}
            Err(_) => panic!("adapter receive stalled at {received}"),
        }
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("publisher");
    }
    publisher.disconnect().await.expect("disconnect");
    subscriber.disconnect().await.expect("disconnect");
    rate
}

async fn latency_raw(url: &str) -> (f64, f64) {
    let client = redis::Client::open(url).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe("sse:room:lat").await.expect("subscribe");
    let mut stream = pubsub.into_on_message();
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let bytes = payload().encode(Codec::Json).expect("encode");
    let mut samples = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_micros(200));
    for _ in 0..5_000 {
        interval.tick().await;
        let sent = Instant::now();
        redis::cmd("PUBLISH")
            .arg("sse:room:lat")
            .arg(&bytes[..])
            .exec_async(&mut connection)
            .await
            .expect("publish");
        stream.next().await.expect("message");
        samples.push(sent.elapsed());
    }
    percentiles(samples)
}

async fn latency_adapter(url: &str) -> (f64, f64) {
    let subscriber = RedisAdapter::builder(url).build().expect("config");
    let (sink, mut events) = EventSink::bounded(1 << 16);
    subscriber
        .connect(NodeId::from("sub"), sink)
        .await
        .expect("connect");
    let room = RoomName::from("lat");
    subscriber.subscribe(&room).await.expect("subscribe");
    let publisher = RedisAdapter::builder(url).build().expect("config");
    let (sink, _keep) = EventSink::bounded(16);
    publisher
        .connect(NodeId::from("pub"), sink)
        .await
        .expect("connect");
    let envelope = payload();
    envelope.encode(Codec::Json).expect("encode");
    let mut samples = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_micros(200));
    for _ in 0..5_000 {
        interval.tick().await;
        let sent = Instant::now();
        publisher.publish(&room, &envelope).await.expect("publish");
        events.recv().await.expect("message");
        samples.push(sent.elapsed());
    }
    publisher.disconnect().await.expect("disconnect");
    subscriber.disconnect().await.expect("disconnect");
    percentiles(samples)
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --release --ignored --nocapture"]
async fn publish_path_against_raw_redis_rs() {
    let server = server().await;
    let url = server.url();
    let raw = raw_run(&url).await;
    let coalesced = adapter_run(&url, |b| b).await;
    let direct = adapter_run(&url, |b| b.coalesce_publishes(false)).await;
    let deadpool = adapter_run(&url, |b| b.deadpool_driver(8)).await;
    let bb8 = adapter_run(&url, |b| b.bb8_driver(8)).await;
    let raw_again = raw_run(&url).await;
    println!("throughput, {PUBLISHERS} publishers, {MESSAGES} messages (msg/s):");
    println!("  raw redis-rs         {raw:>10.0}  (again: {raw_again:.0})");
    println!(
        "  adapter, coalesced   {coalesced:>10.0}  ({:.2}x raw)",
        coalesced / raw
    );
    println!(
        "  adapter, direct      {direct:>10.0}  ({:.2}x raw)",
        direct / raw
    );
    println!(
        "  adapter, deadpool(8) {deadpool:>10.0}  ({:.2}x raw)",
        deadpool / raw
    );
    println!(
        "  adapter, bb8(8)      {bb8:>10.0}  ({:.2}x raw)",
        bb8 / raw
    );
    let (raw50, raw99) = latency_raw(&url).await;
    let (ad50, ad99) = latency_adapter(&url).await;
    println!(
        "latency at 5,000 msg/s, publish -> receive (ms): raw p50 {raw50:.3} p99 {raw99:.3}; adapter p50 {ad50:.3} p99 {ad99:.3}"
    );
}
