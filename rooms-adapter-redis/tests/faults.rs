//! Connection loss, frozen servers, publishing and subscribing while Redis is
//! down, disconnect (real redis-server, killed with SIGKILL or SIGSTOP).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter::{Envelope, Error, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder};
use rooms_testkit::poll::eventually;
use serde_json::Value;
use tokio::time::Instant;

use common::*;

fn envelope(n: u64) -> Envelope {
    Envelope::new(NodeId::from("publisher"), SseMessage::new(n))
}

/// Redis is SIGKILLed while messages flow and restarted on the same port: the
/// subscriber reconnects, re-subscribes every room, emits `Reconnected`, and
/// delivery resumes. Publishes during the outage fail fast and retryably.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_resubscribes_and_resumes() {
    let mut server = server().await;
    let url = server.url();
    let (publisher, _) = connected(&url, "a", |b| b).await;
    let (subscriber, mut events) = connected(&url, "b", |b| b).await;
    let rooms: Vec<RoomName> = ["stream", "second", "third"]
        .into_iter()
        .map(RoomName::from)
        .collect();
    for room in &rooms {
        subscriber.subscribe(room).await.expect("subscribe");
    }

    let publisher = Arc::new(publisher);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let slowest_failure = Arc::new(AtomicU64::new(0));
    let stream = {
        let (publisher, stop, failures, slowest) = (
            Arc::clone(&publisher),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&slowest_failure),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                if let Err(error) = publisher
                    .publish(&RoomName::from("stream"), &envelope(n))
                    .await
                {
                    assert!(error.is_retryable(), "not retryable: {error}");
                    failures.fetch_add(1, Ordering::Relaxed);
                    slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Messages flow...
    let (_, first) = next_message(&mut events).await;
    assert!(first.message().data.value().unwrap().is_u64());
    // ... then Redis dies.
    server.kill().expect("kill");
    eventually("publishes fail while down", DEADLINE, || async {
        failures.load(Ordering::Relaxed) >= 3
    })
    .await;
    server.restart().await.expect("restart");

    let (back, outage) = next_reconnected(&mut events, DEADLINE).await;
    let mut back: Vec<&str> = back.iter().map(RoomName::as_str).collect();
    back.sort_unstable();
    assert_eq!(back, ["second", "stream", "third"]);
    assert!(outage > Duration::ZERO);

    // Delivery resumes with messages published after the restart.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (room, envelope) = next_message(&mut events).await;
        assert_eq!(room.as_str(), "stream");
        if envelope.message().data.value().unwrap().as_u64().is_some() && Instant::now() < deadline
        {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    stream.await.expect("publisher task");

    let stats = subscriber.stats();
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert_eq!(stats.subscriptions, 3, "{stats:?}");
    assert!(
        slowest_failure.load(Ordering::Relaxed) <= 1_500,
        "a publish took {} ms to fail",
        slowest_failure.load(Ordering::Relaxed)
    );
    assert!(publisher.stats().publish_errors >= 3);
    for room in &rooms {
        assert_eq!(
            subscribers(&url, &format!("sse:room:{room}")).await,
            1,
            "{room} re-subscribed"
        );
    }
    subscriber.disconnect().await.expect("disconnect");
    publisher.disconnect().await.expect("disconnect");
}

async fn fails_fast_with(configure: fn(RedisAdapterBuilder) -> RedisAdapterBuilder, name: &str) {
    let mut server = server().await;
    let url = server.url();
    let (adapter, _) = connected(&url, "a", configure).await;
    let room = RoomName::from("down");
    adapter
        .publish(&room, &envelope(0))
        .await
        .expect("publish while up");
    server.kill().expect("kill");
    for n in 1..=3 {
        let started = Instant::now();
        let error = adapter
            .publish(&room, &envelope(n))
            .await
            .expect_err("publish while down fails");
        let took = started.elapsed();
        assert!(error.is_retryable(), "{name}: not retryable: {error}");
        // The harness publish timeout is 1 s.
        assert!(
            took <= Duration::from_millis(1_500),
            "{name}: took {took:?}: {error}"
        );
        println!("{name}: publish while down failed after {took:?}: {error}");
    }
    server.restart().await.expect("restart");
    eventually(
        &format!("{name}: publishing to recover"),
        DEADLINE,
        || async { adapter.publish(&room, &envelope(9)).await },
    )
    .await;
    adapter.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_down_redis_driver() {
    fails_fast_with(|b| b.redis_driver(), "redis").await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_down_deadpool_driver() {
    fails_fast_with(|b| b.deadpool_driver(4), "deadpool").await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_down_bb8_driver() {
    fails_fast_with(|b| b.bb8_driver(4), "bb8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_down_without_coalescing() {
    fails_fast_with(|b| b.coalesce_publishes(false), "redis, direct").await;
}

/// A node that published nothing while Redis was down publishes successfully
/// as soon as Redis is back: the first publish after `Reconnected` must not
/// fail on the connection that died with the old server.
async fn first_publish_after_restart_succeeds_with(
    configure: fn(RedisAdapterBuilder) -> RedisAdapterBuilder,
    name: &str,
) {
    let mut server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "quiet", configure).await;
    let room = RoomName::from("quiet");
    adapter.subscribe(&room).await.expect("subscribe");
    adapter
        .publish(&room, &envelope(0))
        .await
        .expect("publish while up");
    server.kill().expect("kill");
    server.restart().await.expect("restart");
    next_reconnected(&mut events, DEADLINE).await;
    adapter
        .publish(&room, &envelope(1))
        .await
        .unwrap_or_else(|error| panic!("{name}: first publish after the restart: {error}"));
    adapter.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_publish_after_restart_succeeds_redis_driver() {
    first_publish_after_restart_succeeds_with(|b| b.redis_driver(), "redis").await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_publish_after_restart_succeeds_deadpool_driver() {
    first_publish_after_restart_succeeds_with(|b| b.deadpool_driver(2), "deadpool").await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_publish_after_restart_succeeds_bb8_driver() {
    first_publish_after_restart_succeeds_with(|b| b.bb8_driver(2), "bb8").await;
}

/// A subscribe while Redis is down returns a retryable error after the
/// subscribe timeout instead of hanging; the room stays wanted and is
/// subscribed (and reported) once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_down_fails_retryably_and_the_room_comes_back() {
    let mut server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "b", |b| {
        b.subscribe_timeout(Duration::from_millis(300))
    })
    .await;
    server.kill().expect("kill");
    let started = Instant::now();
    let error = adapter
        .subscribe(&RoomName::from("later"))
        .await
        .expect_err("subscribe while down fails");
    let took = started.elapsed();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(error.to_string().contains("stays wanted"), "{error}");

    server.restart().await.expect("restart");
    let (rooms, _) = next_reconnected(&mut events, DEADLINE).await;
    assert_eq!(rooms, vec![RoomName::from("later")]);
    assert_eq!(
        publish_raw(
            &url,
            "sse:room:later",
            br#"{"v":1,"m":{"data":"hi"},"n":"x"}"#
        )
        .await,
        1
    );
    let (room, envelope) = next_message(&mut events).await;
    assert_eq!(room.as_str(), "later");
    assert_eq!(envelope.message().data, Value::from("hi"));
    adapter.disconnect().await.expect("disconnect");
}

/// A frozen server (SIGSTOP: connections open, nothing answered) is caught by
/// the liveness probe and treated as connection loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_detected_by_the_liveness_probe() {
    let mut server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "b", |b| {
        b.ping(Duration::from_millis(100), Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(300))
    })
    .await;
    adapter
        .subscribe(&RoomName::from("quiet"))
        .await
        .expect("subscribe");
    server.pause().expect("SIGSTOP");
    let frozen_at = Instant::now();
    // Loss is noticed within interval + timeout; wait for the gauge to drop.
    eventually("the probe to notice", DEADLINE, || async {
        adapter.stats().subscriptions == 0
    })
    .await;
    let noticed = frozen_at.elapsed();
    server.resume().expect("SIGCONT");
    let (rooms, outage) = next_reconnected(&mut events, DEADLINE).await;
    assert_eq!(rooms, vec![RoomName::from("quiet")]);
    println!("frozen server noticed after {noticed:?}; outage {outage:?}");
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    assert_eq!(
        publish_raw(&url, "sse:room:quiet", br#"{"v":1,"m":{"data":1},"n":"x"}"#).await,
        1
    );
    next_message(&mut events).await;
    adapter.disconnect().await.expect("disconnect");
}

/// disconnect is idempotent, closes both connections, stops the tasks, and
/// every later call fails with `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_is_idempotent_and_closes_everything() {
    let server = server().await;
    let url = server.url();
    let adapter = rooms_testkit::redis::fast_builder(&url)
        .build()
        .expect("config");
    let room = RoomName::from("r");
    // Before connect: closed.
    assert!(matches!(
        adapter.subscribe(&room).await,
        Err(Error::Closed { .. })
    ));
    let (sink, mut events) = rooms_adapter::adapter::EventSink::bounded(8);
    adapter
        .connect(NodeId::from("n"), sink.clone())
        .await
        .expect("connect");
    assert_eq!(adapter.node_id(), Some(NodeId::from("n")));
    assert_eq!(adapter.driver_name().as_deref(), Some("redis"));
    assert!(matches!(
        adapter.connect(NodeId::from("n"), sink.clone()).await,
        Err(Error::Config(_))
    ));
    adapter.subscribe(&room).await.expect("subscribe");
    assert_eq!(pubsub_clients(&url).await, 1);

    adapter.disconnect().await.expect("disconnect");
    adapter.disconnect().await.expect("second disconnect");
    wait_until_async_zero(&url).await;
    assert!(matches!(
        adapter.subscribe(&room).await,
        Err(Error::Closed { .. })
    ));
    assert!(matches!(
        adapter.unsubscribe(&room).await,
        Err(Error::Closed { .. })
    ));
    assert!(matches!(
        adapter.publish(&room, &envelope(1)).await,
        Err(Error::Closed { .. })
    ));
    assert!(matches!(
        adapter.connect(NodeId::from("n"), sink).await,
        Err(Error::Closed { .. })
    ));
    assert_eq!(
        publish_raw(&url, "sse:room:r", br#"{"v":1,"m":{"data":1},"n":"x"}"#).await,
        0
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.recv())
            .await
            .is_err()
    );
    assert_eq!(adapter.stats().subscriptions, 0);
}

async fn wait_until_async_zero(url: &str) {
    eventually("the subscriber connection to close", DEADLINE, || async {
        pubsub_clients(url).await == 0
    })
    .await;
}

/// A room that empties and refills within the unsubscribe delay is not
/// unsubscribed; one that stays empty is, after the delay. Its messages stop
/// at once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_delay_prevents_flapping() {
    let server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "b", |b| {
        b.unsubscribe_delay(Duration::from_millis(300))
    })
    .await;
    let room = RoomName::from("flappy");
    let channel = "sse:room:flappy";
    // The node's control channels were subscribed by `connect`.
    let before = command_calls(&url, "subscribe").await;
    adapter.subscribe(&room).await.expect("subscribe");
    for _ in 0..20 {
        adapter.unsubscribe(&room).await.expect("unsubscribe");
        adapter.subscribe(&room).await.expect("subscribe");
    }
    assert_eq!(command_calls(&url, "unsubscribe").await, 0, "flapped");
    assert_eq!(command_calls(&url, "subscribe").await, before + 1);

    adapter.unsubscribe(&room).await.expect("unsubscribe");
    assert_eq!(adapter.stats().subscriptions, 0);
    // Still subscribed on Redis during the delay, but nothing is delivered.
    assert_eq!(
        publish_raw(&url, channel, br#"{"v":1,"m":{"data":1},"n":"x"}"#).await,
        1
    );
    eventually("Redis to drop the subscription", DEADLINE, || async {
        subscribers(&url, channel).await == 0
    })
    .await;
    assert_eq!(command_calls(&url, "unsubscribe").await, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), events.recv())
            .await
            .is_err()
    );
    adapter.disconnect().await.expect("disconnect");
}

#[allow(dead_code)]
fn _uses(_: RedisAdapter) {}
