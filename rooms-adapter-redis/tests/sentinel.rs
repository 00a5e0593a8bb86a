//! Redis Sentinel: the adapter follows the master through a failover.
//! Publishes fail fast while no master answers, every room is subscribed on
//! the new master, `Reconnected` lists them, and messages flow again. Prints
//! how long the room was dark.
#![cfg(feature = "sentinel")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use rooms_adapter::adapter::{EventSink, RoomAdapter};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_testkit::poll::eventually;
use rooms_testkit::redis_sentinel::RedisSentinel;
use rooms_testkit::sentinel_harness::fast_sentinel_builder;
use tokio::time::Instant;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_follows_a_failover() {
    let mut deployment = RedisSentinel::start().await.expect("sentinel deployment");
    let urls = deployment.sentinel_urls();
    let master = deployment.master_name();
    let connect = |node: &'static str| {
        let urls = urls.clone();
        async move {
            let adapter = fast_sentinel_builder(&urls, master).build().expect("valid");
            let (sink, events) = EventSink::bounded(65_536);
            adapter
                .connect(NodeId::from(node), sink)
                .await
                .expect("connects");
            (adapter, events)
        }
    };
    let (publisher, _publisher_events) = connect("a").await;
    let (receiver, mut events) = connect("b").await;
    assert_eq!(publisher.driver_name().as_deref(), Some("sentinel"));
    let room = RoomName::from("lobby");
    receiver.subscribe(&room).await.expect("subscribe");
    let message = |text: &str| Envelope::new(NodeId::from("a"), SseMessage::new(text));
    publisher
        .publish(&room, &message("before"))
        .await
        .expect("publish");
    let (_, got) = next_message(&mut events).await;
    assert_eq!(got.message().data, "before");

    let old = deployment.kill_master().await.expect("kill master");
    let killed = Instant::now();
    // While no master answers, a publish fails within its timeout (1 s),
    // never hangs.
    let started = Instant::now();
    let during = publisher.publish(&room, &message("during")).await;
    if let Err(error) = &during {
        assert!(error.is_retryable(), "{error}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "fails fast");

    let (new, failover) = deployment
        .wait_for_failover(old, Duration::from_secs(30))
        .await
        .expect("failover");
    assert_ne!(new, old);
    let (rooms, outage) = next_reconnected(&mut events, Duration::from_secs(30)).await;
    assert_eq!(rooms, vec![room.clone()]);

    // Publishing follows the new master (retrying while the driver finds it).
    eventually("publishing to recover", DEADLINE, || async {
        publisher.publish(&room, &message("after")).await
    })
    .await;
    let (_, got) = loop {
        let (room, envelope) = next_message(&mut events).await;
        if envelope.message().data == "after" {
            break (room, envelope);
        }
    };
    assert_eq!(got.message().data, "after");
    let dark = killed.elapsed();
    println!(
        "sentinel failover: promoted in {failover:?}; subscriber outage {outage:?}; room dark (kill to first message through) {dark:?}"
    );
    publisher.disconnect().await.expect("disconnect");
    receiver.disconnect().await.expect("disconnect");
}
