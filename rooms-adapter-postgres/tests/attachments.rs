//! What only PostgreSQL needs: attachments (a 1 MiB envelope crosses through
//! the attachments table, and its row is deleted after the TTL), room names
//! longer than a channel identifier, and frames that are not envelopes.
//! On the shared server (`ROOMS_POSTGRES_URL`), each test in its own
//! channels and table.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, EventStream};
use rooms_adapter::{Envelope, NodeId, RoomAdapter, RoomName, SseMessage};
use rooms_conformance::Harness;
use rooms_testkit::postgres::{PostgresHarness, PostgresMsgpackHarness, connect_direct};

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_message(events: &mut EventStream) -> (RoomName, Envelope) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Message { room, envelope })) => return (room, envelope),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("no message within {DEADLINE:?}"),
        }
    }
}

/// Polls `check` until it holds, within [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_one_mib_message_crosses_and_its_attachment_row_is_deleted_after_the_ttl() {
    let harness = PostgresHarness::setup().await.unwrap();
    let ttl = |builder: rooms_adapter_postgres::PostgresAdapterBuilder| {
        builder
            .attachment_ttl(Duration::from_millis(300))
            .attachment_cleanup_interval(Duration::from_millis(100))
    };
    let receiver = harness.adapter_with(ttl).unwrap();
    let publisher = harness.adapter_with(ttl).unwrap();
    let (sink, mut events) = EventSink::bounded(64);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    publisher
        .connect_publisher(NodeId::from("tx"))
        .await
        .unwrap();
    let room = RoomName::from("big");
    receiver.subscribe(&room).await.unwrap();

    let big = "0123456789abcdef".repeat(64 * 1024);
    let envelope = Envelope::new(NodeId::from("tx"), SseMessage::new(big.clone()));
    publisher.publish(&room, &envelope).await.unwrap();
    let (got_room, got) = next_message(&mut events).await;
    assert_eq!(got_room, room);
    assert_eq!(got.message().data, big.as_str());
    assert_eq!(got, envelope);

    // The row was there for the receiver, and goes once older than the TTL.
    eventually("the attachment row is deleted", || async {
        harness.attachment_rows().await.unwrap() == 0
    })
    .await;
    // A small message does not use the table at all.
    publisher
        .publish(
            &room,
            &Envelope::new(NodeId::from("tx"), SseMessage::new("small")),
        )
        .await
        .unwrap();
    let (_, small) = next_message(&mut events).await;
    assert_eq!(small.message().data, "small");
    assert_eq!(harness.attachment_rows().await.unwrap(), 0);
    receiver.disconnect().await.unwrap();
    publisher.disconnect().await.unwrap();
    harness.teardown().await;
}

#[tokio::test]
async fn messagepack_uses_the_table_past_the_threshold_and_keeps_order() {
    let harness = PostgresMsgpackHarness::setup().await.unwrap();
    let small_threshold =
        |builder: rooms_adapter_postgres::PostgresAdapterBuilder| builder.attachment_threshold(200);
    let receiver = harness.adapter_with(small_threshold).unwrap();
    let publisher = harness.adapter_with(small_threshold).unwrap();
    let (sink, mut events) = EventSink::bounded(256);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    publisher
        .connect_publisher(NodeId::from("tx"))
        .await
        .unwrap();
    let room = RoomName::from("mixed");
    receiver.subscribe(&room).await.unwrap();
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
        let envelope = Envelope::new(NodeId::from("tx"), SseMessage::new(data.clone()));
        publisher.publish(&room, &envelope).await.unwrap();
    }
    for data in &sent {
        let (_, got) = next_message(&mut events).await;
        assert_eq!(got.message().data, data.as_str());
    }
    assert_eq!(harness.attachment_rows().await.unwrap(), 10);
    receiver.disconnect().await.unwrap();
    publisher.disconnect().await.unwrap();
    harness.teardown().await;
}

#[tokio::test]
async fn long_names_and_names_sharing_63_bytes_stay_apart() {
    let harness = PostgresHarness::setup().await.unwrap();
    let receiver = harness.adapter_with(|builder| builder).unwrap();
    let publisher = harness.adapter_with(|builder| builder).unwrap();
    let (sink, mut events) = EventSink::bounded(64);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    publisher
        .connect_publisher(NodeId::from("tx"))
        .await
        .unwrap();
    let common = "p".repeat(63);
    let (a, b) = (
        RoomName::from(format!("{common}-a")),
        RoomName::from(format!("{common}-b")),
    );
    let long = RoomName::from("l".repeat(5000));
    receiver.subscribe(&a).await.unwrap();
    receiver.subscribe(&long).await.unwrap();
    for (room, data) in [(&b, "to b"), (&a, "to a"), (&long, "to long")] {
        let envelope = Envelope::new(NodeId::from("tx"), SseMessage::new(data));
        publisher.publish(room, &envelope).await.unwrap();
    }
    let (room, got) = next_message(&mut events).await;
    assert_eq!(room, a);
    assert_eq!(got.message().data, "to a");
    let (room, got) = next_message(&mut events).await;
    assert_eq!(room, long);
    assert_eq!(got.message().data, "to long");
    receiver.disconnect().await.unwrap();
    publisher.disconnect().await.unwrap();
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
    let (_, got) = next_message(&mut events).await;
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
    let receiver = harness.new_adapter().await.unwrap();
    let publisher = harness.new_adapter().await.unwrap();
    let (sink, mut events) = EventSink::bounded(1024);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    publisher
        .connect_publisher(NodeId::from("tx"))
        .await
        .unwrap();
    let room = RoomName::from("same");
    receiver.subscribe(&room).await.unwrap();

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
            .map(|envelope| publisher.publish(&room, envelope)),
    )
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut repeats = 0;
    for _ in 0..COUNT {
        let (_, envelope) = next_message(&mut events).await;
        if envelope.message().data == "again" {
            repeats += 1;
        }
    }
    assert_eq!(repeats, COUNT - COUNT.div_ceil(3));
    receiver.disconnect().await.unwrap();
    publisher.disconnect().await.unwrap();
    harness.teardown().await;
}
