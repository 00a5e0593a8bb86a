//! 10,000 rooms: subscribed in batches (not one round trip each), and
//! re-subscribed in batches after Redis restarts. Prints the timings.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use rooms_adapter::RoomName;
use rooms_adapter::adapter::RoomAdapter;
use rooms_testkit::poll::eventually;
use serde_json::Value;
use tokio::time::Instant;

use common::*;

const ROOMS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rooms_subscribe_and_resubscribe_in_batches() {
    let mut server = server().await;
    let url = server.url();
    let (adapter, mut events) = connected(&url, "many", |b| b).await;
    let rooms: Vec<RoomName> = (0..ROOMS)
        .map(|i| RoomName::from(format!("room-{i}")))
        .collect();

    let started = Instant::now();
    for result in join_all(rooms.iter().map(|room| adapter.subscribe(room))).await {
        result.expect("subscribe");
    }
    let subscribe_took = started.elapsed();
    assert_eq!(adapter.stats().subscriptions, ROOMS as u64);
    let subscribe_calls = command_calls(&url, "subscribe").await;
    println!(
        "10,000 rooms: subscribe took {subscribe_took:?} in {subscribe_calls} SUBSCRIBE commands"
    );
    // Batching depends on timing (requests that arrive while a SUBSCRIBE is in
    // flight go into the next one), so allow slack: far from 10,000.
    assert!(
        subscribe_calls <= 200,
        "{subscribe_calls} SUBSCRIBE commands: not batched"
    );

    // Every room is live: a message on the last one arrives.
    assert_eq!(
        publish_raw(
            &url,
            "sse:room:room-9999",
            br#"{"v":1,"m":{"data":"last"},"n":"x"}"#
        )
        .await,
        1
    );
    let (room, envelope) = next_message(&mut events).await;
    assert_eq!(room.as_str(), "room-9999");
    assert_eq!(envelope.message().data, Value::from("last"));

    // Restart: all 10,000 come back, in batches.
    server.kill().expect("kill");
    server.restart().await.expect("restart");
    let restarted = Instant::now();
    let (back, outage) = next_reconnected(&mut events, Duration::from_secs(30)).await;
    let resubscribe_took = restarted.elapsed();
    assert_eq!(back.len(), ROOMS);
    let resubscribe_calls = command_calls(&url, "subscribe").await;
    println!(
        "10,000 rooms: re-subscribe after restart took {resubscribe_took:?} \
         (outage {outage:?}) in {resubscribe_calls} SUBSCRIBE commands"
    );
    assert!(
        resubscribe_calls <= 50,
        "{resubscribe_calls} SUBSCRIBE commands: not batched"
    );
    assert_eq!(adapter.stats().subscriptions, ROOMS as u64);
    assert_eq!(
        publish_raw(
            &url,
            "sse:room:room-0",
            br#"{"v":1,"m":{"data":"first"},"n":"x"}"#
        )
        .await,
        1
    );
    let (room, _) = next_message(&mut events).await;
    assert_eq!(room.as_str(), "room-0");

    // And they all go away again, in batches too.
    let started = Instant::now();
    for result in join_all(rooms.iter().map(|room| adapter.unsubscribe(room))).await {
        result.expect("unsubscribe");
    }
    assert_eq!(adapter.stats().subscriptions, 0);
    eventually("Redis to drop the subscriptions", DEADLINE, || async {
        subscribers(&url, "sse:room:room-5000").await == 0
    })
    .await;
    let unsubscribe_calls = command_calls(&url, "unsubscribe").await;
    println!(
        "10,000 rooms: unsubscribe (50 ms delay included) took {:?} in {unsubscribe_calls} UNSUBSCRIBE commands",
        started.elapsed()
    );
    assert!(unsubscribe_calls <= 50);
    adapter.disconnect().await.expect("disconnect");
}
