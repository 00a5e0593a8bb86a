//! The control channel on a real redis-server: `{control_prefix}all` reaches
//! every node, `{control_prefix}node:{id}` one node; rooms named like control
//! channels stay rooms; control frames flow again after a restart without the
//! engine asking; every publish driver and a publish-only adapter can send;
//! Sentinel and Cluster (sharded pub/sub) too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventStream, RoomAdapter};
use rooms_adapter::wire::DecodeErrorKind;
use rooms_adapter::{ControlTarget, Envelope, Error, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder};
use rooms_testkit::poll::eventually;
use rooms_testkit::redis::fast_builder;
use tokio::time::Instant;

use common::*;

const ALL: &str = "rooms-control:sse:room:all";

fn inbox(node: &str) -> String {
    format!("rooms-control:sse:room:node:{node}")
}

fn node(id: &str) -> ControlTarget {
    ControlTarget::Node(NodeId::from(id))
}

/// What a test sees of an event: lifecycle events are skipped.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Frame {
    Control(Vec<u8>),
    Message(String),
}

/// The next message or control frame (lifecycle events skipped), within the
/// deadline.
async fn next_frame(events: &mut EventStream) -> Frame {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Control { payload })) => return Frame::Control(payload.to_vec()),
            Ok(Some(AdapterEvent::Message { room, .. })) => {
                return Frame::Message(room.as_str().to_owned());
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no frame within {DEADLINE:?}"),
        }
    }
}

fn control(payload: &str) -> Frame {
    Frame::Control(payload.as_bytes().to_vec())
}

/// Publishes a control frame, retrying while the publisher reconnects.
async fn publish_control_eventually(adapter: &RedisAdapter, target: &ControlTarget, payload: &str) {
    eventually("publishing to recover", DEADLINE, || async {
        let result = adapter.publish_control(target, payload.as_bytes()).await;
        if let Err(error) = &result {
            assert!(error.is_retryable(), "{error}");
        }
        result
    })
    .await;
}

/// `All` reaches every node (the sender too), `Node(b)` only `b`; the
/// control channels are not room subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_reach_every_node_or_one() {
    let server = server().await;
    let url = server.url();
    let (a, mut a_events) = connected(&url, "a", |b| b).await;
    let (b, mut b_events) = connected(&url, "b", |b| b).await;
    assert!(a.capabilities().control && a.capabilities().emitter);
    assert_eq!(a.config().control_prefix(), Some("rooms-control:sse:room:"));
    assert_eq!(subscribers(&url, ALL).await, 2);
    assert_eq!(subscribers(&url, &inbox("a")).await, 1);
    assert_eq!(subscribers(&url, &inbox("b")).await, 1);

    a.publish_control(&ControlTarget::All, b"hello all")
        .await
        .expect("publish to all");
    assert_eq!(next_frame(&mut a_events).await, control("hello all"));
    assert_eq!(next_frame(&mut b_events).await, control("hello all"));

    a.publish_control(&node("b"), b"for b").await.expect("to b");
    a.publish_control(&ControlTarget::All, b"second")
        .await
        .expect("to all");
    assert_eq!(next_frame(&mut b_events).await, control("for b"));
    assert_eq!(next_frame(&mut b_events).await, control("second"));
    // Redis delivers in order on one connection: had `a` heard the frame
    // for `b`, it would come before `second`.
    assert_eq!(next_frame(&mut a_events).await, control("second"));

    // A node nobody runs: nobody hears it (and it is no error).
    a.publish_control(&node("nobody"), b"lost")
        .await
        .expect("to nobody");

    for adapter in [&a, &b] {
        let stats = adapter.stats();
        assert_eq!(stats.subscriptions, 0, "control channels are not rooms");
        assert_eq!(stats.published, 0, "control frames are not envelopes");
        assert_eq!(stats.received, 0, "control frames are not envelopes");
    }
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
    assert_eq!(subscribers(&url, ALL).await, 0);
}

/// Rooms whose channels look like control channels (`sse:room:all`,
/// `sse:room:node:b`, `sse:room:rooms-control:sse:room:all`) are rooms:
/// their envelopes arrive as messages, control frames never reach them, and
/// control frames never arrive as messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_named_like_control_channels_stay_rooms() {
    let server = server().await;
    let url = server.url();
    let (a, _a_events) = connected(&url, "a", |b| b).await;
    let (b, mut events) = connected(&url, "b", |b| b).await;
    let rooms = ["all", "node:b", ALL];
    for room in rooms {
        b.subscribe(&RoomName::from(room)).await.expect("subscribe");
    }
    assert_eq!(b.stats().subscriptions, 3, "only rooms count");
    let envelope = Envelope::new(NodeId::from("a"), SseMessage::new("hi"));
    let mut expected = Vec::new();
    for room in rooms {
        a.publish(&RoomName::from(room), &envelope)
            .await
            .expect("publish");
        expected.push(Frame::Message(room.to_owned()));
        a.publish_control(&ControlTarget::All, room.as_bytes())
            .await
            .expect("control");
        expected.push(control(room));
        a.publish_control(&node("b"), b"inbox")
            .await
            .expect("control");
        expected.push(control("inbox"));
    }
    // A raw envelope on the control channel is a control frame, undecoded.
    let raw_envelope = br#"{"v":1,"m":{"data":"x"},"n":"x"}"#;
    assert_eq!(publish_raw(&url, ALL, raw_envelope).await, 2);
    expected.push(Frame::Control(raw_envelope.to_vec()));
    for want in expected {
        assert_eq!(next_frame(&mut events).await, want);
    }
    let stats = b.stats();
    assert_eq!(stats.received, 3, "only the room envelopes");
    assert_eq!(stats.decode_errors_total(), 0);
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
}

/// After redis-server is killed and restarted the control channels are
/// subscribed again by the adapter itself, `Reconnected` lists only rooms,
/// and frames flow. While Redis is down, `publish_control` fails fast and
/// retryably.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_flow_again_after_a_restart() {
    let mut server = server().await;
    let url = server.url();
    let (a, _a_events) = connected(&url, "a", |b| b).await;
    let (b, mut events) = connected(&url, "b", |b| b).await;
    let room = RoomName::from("lobby");
    b.subscribe(&room).await.expect("subscribe");

    server.kill().expect("kill");
    let started = Instant::now();
    let error = a
        .publish_control(&ControlTarget::All, b"while down")
        .await
        .expect_err("redis is down");
    assert!(error.is_retryable(), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "failed after {:?}",
        started.elapsed()
    );
    server.restart().await.expect("restart");

    let (rooms, _) = next_reconnected(&mut events, DEADLINE).await;
    assert_eq!(rooms, vec![room], "control channels are not listed");
    assert_eq!(b.stats().subscriptions, 1);
    assert_eq!(subscribers(&url, &inbox("b")).await, 1);
    publish_control_eventually(&a, &node("b"), "back").await;
    assert_eq!(next_frame(&mut events).await, control("back"));
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
}

async fn sends_through(configure: fn(RedisAdapterBuilder) -> RedisAdapterBuilder, driver: &str) {
    let server = server().await;
    let url = server.url();
    let (b, mut events) = connected(&url, "b", |b| b).await;
    // Publish-only: it sends, it subscribes nothing.
    let emitter = configure(fast_builder(&url)).build().expect("valid");
    emitter
        .connect_publisher(NodeId::from("emitter"))
        .await
        .expect("connect publisher");
    assert_eq!(emitter.driver_name().as_deref(), Some(driver));
    assert_eq!(subscribers(&url, &inbox("emitter")).await, 0);
    for target in [ControlTarget::All, node("b")] {
        emitter
            .publish_control(&target, driver.as_bytes())
            .await
            .expect("publish");
        assert_eq!(next_frame(&mut events).await, control(driver));
    }
    // Concurrent frames go through the coalescing publisher too.
    let sends = (0..50).map(|i| {
        let emitter = &emitter;
        async move {
            let payload = format!("{i}");
            emitter
                .publish_control(&node("b"), payload.as_bytes())
                .await
        }
    });
    for result in futures_util::future::join_all(sends).await {
        result.expect("publish");
    }
    let mut heard = Vec::new();
    for _ in 0..50 {
        match next_frame(&mut events).await {
            Frame::Control(payload) => heard.push(String::from_utf8(payload).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    heard.sort_by_key(|n| n.parse::<u32>().unwrap());
    assert_eq!(heard, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    emitter.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_adapter_sends_control_frames_with_the_redis_driver() {
    sends_through(|b| b.redis_driver(), "redis").await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_adapter_sends_control_frames_with_deadpool() {
    sends_through(|b| b.deadpool_driver(4), "deadpool").await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_only_adapter_sends_control_frames_with_bb8() {
    sends_through(|b| b.bb8_driver(4), "bb8").await;
}

/// An inbound frame over the payload limit is skipped and counted; an
/// outbound one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_control_frames_are_refused_both_ways() {
    let server = server().await;
    let url = server.url();
    let (b, mut events) = connected(&url, "b", |b| b.max_payload_bytes(64)).await;
    let big = vec![b'x'; 65];
    let error = b
        .publish_control(&ControlTarget::All, &big)
        .await
        .expect_err("too large");
    assert!(matches!(error, Error::PayloadTooLarge { .. }), "{error}");
    assert_eq!(publish_raw(&url, &inbox("b"), &big).await, 1);
    assert_eq!(publish_raw(&url, &inbox("b"), b"small").await, 1);
    assert_eq!(next_frame(&mut events).await, control("small"));
    let stats = b.stats();
    assert_eq!(
        stats.decode_errors.get(&DecodeErrorKind::TooLarge),
        Some(&1),
        "{stats:?}"
    );
    b.disconnect().await.expect("disconnect");
}

/// `control(false)` subscribes nothing and declares nothing; an explicit
/// prefix names the channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_can_be_turned_off_or_renamed() {
    let server = server().await;
    let url = server.url();
    let (off, _off_events) = connected(&url, "off", |b| b.control(false)).await;
    assert!(!off.capabilities().control);
    assert_eq!(off.config().control_prefix(), None);
    assert!(matches!(
        off.publish_control(&ControlTarget::All, b"x").await,
        Err(Error::Unsupported { .. })
    ));
    assert_eq!(subscribers(&url, ALL).await, 0);

    let (renamed, mut events) = connected(&url, "n1", |b| b.control_prefix("app:ctl:")).await;
    assert_eq!(subscribers(&url, "app:ctl:all").await, 1);
    assert_eq!(subscribers(&url, "app:ctl:node:n1").await, 1);
    renamed
        .publish_control(&node("n1"), b"renamed")
        .await
        .expect("publish");
    assert_eq!(next_frame(&mut events).await, control("renamed"));

    // An empty channel prefix leaves no room for the default control prefix.
    let (bare, _bare_events) = connected(&url, "bare", |b| b.channel_prefix("")).await;
    assert!(!bare.capabilities().control);
    assert_eq!(subscribers(&url, "rooms-control:all").await, 0);
    let error = fast_builder(&url)
        .channel_prefix("")
        .control_prefix("ctl:")
        .build()
        .expect_err("collides");
    assert!(error.to_string().contains("\"ctl:\""), "{error}");
    for adapter in [off, renamed, bare] {
        adapter.disconnect().await.expect("disconnect");
    }
}

#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_on_a_sentinel_deployment() {
    use rooms_testkit::redis_sentinel::RedisSentinel;
    use rooms_testkit::sentinel_harness::fast_sentinel_builder;

    let deployment = RedisSentinel::start().await.expect("sentinel deployment");
    let urls = deployment.sentinel_urls();
    let builder = || fast_sentinel_builder(&urls, deployment.master_name());
    let (a, mut a_events) = connect_with(builder(), "a", 1_024).await;
    let (b, mut b_events) = connect_with(builder(), "b", 1_024).await;
    assert!(b.capabilities().control);
    a.publish_control(&ControlTarget::All, b"all")
        .await
        .expect("all");
    a.publish_control(&node("b"), b"b").await.expect("b");
    a.publish_control(&node("a"), b"a").await.expect("a");
    assert_eq!(next_frame(&mut b_events).await, control("all"));
    assert_eq!(next_frame(&mut b_events).await, control("b"));
    assert_eq!(next_frame(&mut a_events).await, control("all"));
    assert_eq!(next_frame(&mut a_events).await, control("a"));
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
}

/// On a cluster the control channels are shard channels (`SSUBSCRIBE` on
/// the master of their slot, `SPUBLISH` to it), apart from the rooms'.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_on_a_cluster() {
    use rooms_adapter_redis::key_slot;
    use rooms_conformance::Harness;
    use rooms_testkit::cluster_harness::RedisClusterHarness;
    use rooms_testkit::redis_cluster::cli;

    let h = RedisClusterHarness::setup().await.expect("cluster");
    let connect =
        |id: &'static str| connect_adapter(h.adapter_with(|b| b).expect("valid"), id, 1_024);
    let (a, mut a_events) = connect("a").await;
    let (b, mut b_events) = connect("b").await;
    assert!(b.capabilities().control);
    {
        let cluster = h.cluster().lock().await;
        for channel in [ALL.to_owned(), inbox("a"), inbox("b")] {
            let owner = cluster
                .owner_of_slot(0, key_slot(channel.as_bytes()))
                .await
                .unwrap()
                .expect("served");
            let held = cli(cluster.port(owner), &["PUBSUB", "SHARDCHANNELS"])
                .await
                .unwrap();
            assert!(
                held.lines().any(|line| line == channel),
                "{channel} is a shard channel of master {owner}: {held}"
            );
        }
    }
    a.subscribe(&RoomName::from("all")).await.expect("room");
    a.publish_control(&ControlTarget::All, b"all")
        .await
        .expect("all");
    a.publish_control(&node("b"), b"b").await.expect("b");
    a.publish_control(&node("a"), b"a").await.expect("a");
    // Shard channels on different masters may arrive in any order.
    let mut heard = vec![
        next_frame(&mut b_events).await,
        next_frame(&mut b_events).await,
    ];
    heard.sort();
    assert_eq!(heard, vec![control("all"), control("b")]);
    // `a` hears `all` and `a`, never `b`.
    let mut heard = vec![
        next_frame(&mut a_events).await,
        next_frame(&mut a_events).await,
    ];
    heard.sort();
    assert_eq!(heard, vec![control("a"), control("all")]);
    assert_eq!(a.stats().subscriptions, 1);
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
}
