//! Backpressure from slow attachment reads: while notifications wait behind
//! an attachment being read, the listener stops reading its connection (the
//! server keeps the rest), so the liveness probe's answer and `LISTEN`
//! confirmations wait too. That wait is the adapter's own doing: it must
//! not make the node declare the connection lost, nor time a subscribe out.
//! On the shared server (`ROOMS_POSTGRES_URL`), in its own channels and
//! table.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink};
use rooms_adapter::{NodeId, RoomAdapter, RoomName};
use rooms_adapter_postgres::channel::room_channel;
use rooms_conformance::Harness;
use rooms_testkit::postgres::{PostgresHarness, connect_direct};

/// More than the listener keeps waiting behind an attachment (256).
const COUNT: i64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_attachment_reads_neither_lose_the_connection_nor_time_subscribes_out() {
    let harness = PostgresHarness::setup().await.unwrap();
    // A probe every 100 ms, a subscribe timeout of 1 s, and attachment
    // reads allowed to take 10 s.
    let receiver = harness
        .adapter_with(|builder| {
            builder
                .ping_interval(Duration::from_millis(100))
                .subscribe_timeout(Duration::from_secs(1))
                .publish_timeout(Duration::from_secs(10))
        })
        .unwrap();
    let (sink, mut events) = EventSink::bounded(1024);
    receiver.connect(NodeId::from("rx"), sink).await.unwrap();
    let room = RoomName::from("slow");
    receiver.subscribe(&room).await.unwrap();

    // The attachment rows, then a lock that blocks every read of them
    // until it is released; then one reference to each row.
    let table = harness.table().to_owned();
    let writer = connect_direct(harness.direct_config()).await.unwrap();
    let ids: Vec<i64> = writer
        .query(
            &format!(
                "INSERT INTO {table} (payload) SELECT convert_to(format(\
                 '{{\"v\":1,\"m\":{{\"data\":\"%s\"}},\"n\":\"sql\"}}', i), 'UTF8') \
                 FROM generate_series(1, {COUNT}) AS i RETURNING id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut locker = connect_direct(harness.direct_config()).await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let channel = room_channel(harness.channel_prefix(), room.as_str());
    writer
        .execute(
            "SELECT pg_notify($1, '@' || id::text) FROM unnest($2::int8[]) AS id",
            &[&channel, &ids],
        )
        .await
        .unwrap();

    // Meanwhile a subscribe, and the time under test: the reads stay
    // blocked for 2 s, twice the subscribe timeout and twenty probes.
    let subscriber = {
        let receiver = std::sync::Arc::clone(&receiver);
        tokio::spawn(async move { receiver.subscribe(&RoomName::from("other")).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    lock.rollback().await.unwrap();

    let subscribed = tokio::time::timeout(Duration::from_secs(10), subscriber)
        .await
        .expect("the subscribe answers once the reads are in")
        .unwrap();
    assert!(
        subscribed.is_ok(),
        "a subscribe timed out behind the adapter's own backpressure: {subscribed:?}"
    );
    let mut next = 1;
    while next <= COUNT {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(AdapterEvent::Message { envelope, .. })) => {
                assert_eq!(envelope.message().data, next.to_string().as_str());
                next += 1;
            }
            Ok(Some(AdapterEvent::MediumLost { reason })) => {
                panic!("a healthy connection was declared lost: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("message {next} of {COUNT} did not arrive"),
        }
    }
    assert!(receiver.is_connected());
    receiver.disconnect().await.unwrap();
    harness.teardown().await;
}
