//! What only PostgreSQL needs: attachments (a 1 MiB envelope crosses through
//! the attachments table, and its row is deleted after the TTL), room names
//! longer than a channel identifier, and frames that are not envelopes.
//! On the shared server (`ROOMS_POSTGRES_URL`), each test in its own
//! channels and table.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{DEADLINE, Pair};
use rooms_adapter::adapter::EventSink;
use rooms_adapter::{Envelope, NodeId, RoomAdapter, RoomName, SseMessage};
use rooms_adapter_postgres::PostgresAdapterBuilder;
use rooms_conformance::Harness;
use rooms_testkit::poll::eventually;
use rooms_testkit::postgres::{
    Flavor, PostgresHarness, PostgresHarnessWith, PostgresMsgpackHarness, connect_direct,
};

/// A receiver subscribed to `rooms` and a publisher, on `harness`, both
/// built with `configure`.
async fn pair<F: Flavor>(
    harness: &PostgresHarnessWith<F>,
    configure: impl Fn(PostgresAdapterBuilder) -> PostgresAdapterBuilder,
    capacity: usize,
    rooms: &[&RoomName],
) -> Pair {
    let receiver = harness.adapter_with(&configure).unwrap();
    let publisher = harness.adapter_with(&configure).unwrap();
    Pair::connect(receiver, publisher, capacity, rooms).await
}

#[tokio::test]
async fn a_one_mib_message_crosses_and_its_attachment_row_is_deleted_after_the_ttl() {
    let harness = PostgresHarness::setup().await.unwrap();
    let ttl = |builder: PostgresAdapterBuilder| {
        builder
            .attachment_ttl(Duration::from_millis(300))
            .attachment_cleanup_interval(Duration::from_millis(100))
    };
    let room = RoomName::from("big");
    let mut nodes = pair(&harness, ttl, 64, &[&room]).await;

    let big = "0123456789abcdef".repeat(64 * 1024);
    let envelope = nodes.publish(&room, &big).await;
    let (got_room, got) = nodes.next_message().await;
    assert_eq!(got_room, room);
    assert_eq!(got.message().data, big.as_str());
    assert_eq!(got, envelope);

    // The row was there for the receiver, and goes once older than the TTL.
    eventually("the attachment row to be deleted", DEADLINE, || async {
        harness.attachment_rows().await.unwrap() == 0
    })
    .await;
    // A small message does not use the table at all.
    nodes.publish(&room, "small").await;
    let (_, small) = nodes.next_message().await;
    assert_eq!(small.message().data, "small");
    assert_eq!(harness.attachment_rows().await.unwrap(), 0);
    nodes.disconnect().await;
    harness.teardown().await;
}

#[tokio::test]
async fn messagepack_uses_the_table_past_the_threshold_and_keeps_order() {
    let harness = PostgresMsgpackHarness::setup().await.unwrap();
    let small_threshold = |builder: PostgresAdapterBuilder| builder.attachment_threshold(200);
    let room = RoomName::from("mixed");
    let mut nodes = pair(&harness, small_threshold, 256, &[&room]).await;
    // Every third message goes through the table; later small ones wait
    // for it, so the order holds.
    let sent: Vec<String> = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                format!("{i}:{}", "x".repeat(300))
            } else {
                format!("{i}")
            }
        })
        .collect();
    for data in &sent {
        nodes.publish(&room, data).await;
    }
    for data in &sent {
        let (_, got) = nodes.next_message().await;
        assert_eq!(got.message().data, data.as_str());
    }
    assert_eq!(harness.attachment_rows().await.unwrap(), 10);
    nodes.disconnect().await;
    harness.teardown().await;
}

#[tokio::test]
async fn long_names_and_names_sharing_63_bytes_stay_apart() {
    let harness = PostgresHarness::setup().await.unwrap();
    let common = "p".repeat(63);
    let (a, b) = (
        RoomName::from(format!("{common}-a")),
        RoomName::from(format!("{common}-b")),
    );
    let long = RoomName::from("l".repeat(5000));
    let mut nodes = pair(&harness, |builder| builder, 64, &[&a, &long]).await;
    for (room, data) in [(&b, "to b"), (&a, "to a"), (&long, "to long")] {
        nodes.publish(room, data).await;
    }
    let (room, got) = nodes.next_message().await;
    assert_eq!(room, a);
    assert_eq!(got.message().data, "to a");
    let (room, got) = nodes.next_message().await;
    assert_eq!(room, long);
    assert_eq!(got.message().data, "to long");
    nodes.disconnect().await;
    harness.teardown().await;
}

#[tokio::test]
async fn frames_that_are_not_envelopes_are_skipped_and_counted() {
    let harness = PostgresHarness::setup().await.unwrap();
    let receiver = harness.adapter_with(|builder| builder).unwrap();
    let (sink, mut events) = EventSink::bounded(64);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    let room = RoomName::from("frames");
    receiver.subscribe(&room).await.unwrap();
    let channel = rooms_adapter_postgres::channel::room_channel(harness.channel_prefix(), "frames");
    let client = connect_direct(harness.direct_config()).await.unwrap();
    for payload in ["~not base64!", "@", "@x", "@999999999", "plain text"] {
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    let good = r#"{"v":1,"m":{"data":"after"},"n":"sql"}"#;
    client
        .execute("SELECT pg_notify($1, $2)", &[&channel, &good])
        .await
        .unwrap();
    let (_, got) = common::next_message(&mut events).await;
    assert_eq!(got.message().data, "after");
    assert_eq!(receiver.stats().decode_errors_total(), 5);
    receiver.disconnect().await.unwrap();
    harness.teardown().await;
}

/// Publishes queued together share one `pg_notify` statement (one
/// transaction), and PostgreSQL delivers identical notifications of one
/// transaction once: a batch is cut before a repeat, so equal broadcasts
/// published at the same time all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_messages_published_together_all_arrive() {
    let harness = PostgresHarness::setup().await.unwrap();
    let room = RoomName::from("same");
    let mut nodes = pair(&harness, |builder| builder, 1024, &[&room]).await;

    const COUNT: usize = 300;
    let same = Envelope::new(NodeId::from("tx"), SseMessage::new("again"));
    let envelopes: Vec<Envelope> = (0..COUNT)
        .map(|n| {
            if n % 3 == 0 {
                Envelope::new(NodeId::from("tx"), SseMessage::new(format!("n{n}")))
            } else {
                same.clone()
            }
        })
        .collect();
    let results = futures_util::future::join_all(
        envelopes
            .iter()
            .map(|envelope| nodes.publisher.publish(&room, envelope)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut repeats = 0;
    for _ in 0..COUNT {
        let (_, envelope) = nodes.next_message().await;
        if envelope.message().data == "again" {
            repeats += 1;
        }
    }
    assert_eq!(repeats, COUNT - COUNT.div_ceil(3));
    nodes.disconnect().await;
    harness.teardown().await;
}
