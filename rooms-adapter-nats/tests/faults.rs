//! Behaviour beyond the conformance suite, on throwaway `nats-server`s:
//! subscribing while the server is down, the unsubscribe delay as the server
//! sees it, the server's `max_payload`, publish-only adapters (credentials
//! and TLS: `auth.rs`).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, EventStream, RoomAdapter};
use rooms_adapter::{Envelope, Error, NodeId, RoomName, SseMessage};
use rooms_adapter_nats::NatsAdapter;
use rooms_testkit::nats::fast_builder;
use rooms_testkit::nats_server::NatsServer;
use rooms_testkit::poll::eventually;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(15);

fn envelope(data: &str) -> Envelope {
    Envelope::new(NodeId::from("publisher"), SseMessage::new(data))
}

/// The next event that is not a control frame, within [`DEADLINE`].
async fn next_event(events: &mut EventStream) -> AdapterEvent {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Control { .. })) => {}
            Ok(Some(event)) => return event,
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("no event within {DEADLINE:?}"),
        }
    }
}

async fn connected(url: &str, node: &str) -> (NatsAdapter, EventStream) {
    let adapter = fast_builder([url]).build().expect("builder");
    let (sink, events) = EventSink::bounded(4096);
    adapter
        .connect(NodeId::from(node), sink)
        .await
        .expect("connect");
    (adapter, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_down_fails_fast_and_the_room_comes_back() {
    let mut server = NatsServer::start().await.expect("nats-server");
    let url = server.url();
    let (node, mut events) = connected(&url, "node").await;
    let (publisher, _publisher_events) = connected(&url, "publisher").await;

    server.kill().expect("kill");
    eventually("the node to see the server gone", DEADLINE, || async {
        !node.is_connected()
    })
    .await;
    assert!(matches!(
        next_event(&mut events).await,
        AdapterEvent::MediumLost { .. }
    ));
    let late = RoomName::from("late");
    let started = Instant::now();
    let error = node
        .subscribe(&late)
        .await
        .expect_err("subscribe while down");
    assert!(error.is_retryable(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(node.stats().subscriptions, 1, "the room stays wanted");
    let error = node
        .publish(&late, &envelope("while down"))
        .await
        .expect_err("publish while down");
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");

    server.restart().await.expect("restart");
    match next_event(&mut events).await {
        AdapterEvent::Reconnected { rooms, .. } => assert_eq!(rooms, vec![late.clone()]),
        other => panic!("expected Reconnected, got {other:?}"),
    }
    eventually("the publisher to be back", DEADLINE, || async {
        publisher.is_connected()
    })
    .await;
    publisher
        .publish(&late, &envelope("after"))
        .await
        .expect("publish after restart");
    match next_event(&mut events).await {
        AdapterEvent::Message { room, envelope } => {
            assert_eq!(room, late);
            assert_eq!(envelope.message().data, "after");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(node.stats().reconnects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsubscribe_delay_keeps_a_rejoined_room_and_drops_an_abandoned_one() {
    const DELAY: Duration = Duration::from_millis(200);
    let server = NatsServer::start_monitored("").await.expect("nats-server");
    let adapter = fast_builder([server.url()])
        .unsubscribe_delay(DELAY)
        .build()
        .expect("builder");
    let (sink, _events) = EventSink::bounded(64);
    adapter
        .connect(NodeId::from("node"), sink)
        .await
        .expect("connect");
    // The control subjects and the round-trip inbox.
    let base = server.subscription_count().await.expect("subsz");
    let room = RoomName::from("flapping");
    adapter.subscribe(&room).await.expect("subscribe");
    assert_eq!(server.subscription_count().await.unwrap(), base + 1);

    // Leave and rejoin within the delay: the NATS subscription stays.
    adapter.unsubscribe(&room).await.expect("unsubscribe");
    assert_eq!(adapter.stats().subscriptions, 0);
    adapter.subscribe(&room).await.expect("resubscribe");
    tokio::time::sleep(DELAY * 3).await; // Proving an absence: longer than the delay.
    assert_eq!(server.subscription_count().await.unwrap(), base + 1);
    assert_eq!(adapter.stats().subscriptions, 1);

    // Leave for good: gone from the server after the delay.
    let left = Instant::now();
    adapter.unsubscribe(&room).await.expect("unsubscribe");
    eventually("the server to drop the subscription", DEADLINE, || async {
        server.subscription_count().await.unwrap() == base
    })
    .await;
    assert!(left.elapsed() >= DELAY, "dropped before the delay");
    adapter.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn an_envelope_over_the_servers_max_payload_fails_naming_both_sizes() {
    let server = NatsServer::start_with_config("max_payload: 65536")
        .await
        .expect("nats-server");
    let (adapter, _events) = connected(&server.url(), "node").await;
    assert_eq!(adapter.server_max_payload(), Some(65_536));
    let big = envelope(&"x".repeat(100_000));
    let size = big.encode(rooms_adapter::Codec::Json).unwrap().len();
    let error = adapter
        .publish(&RoomName::from("big"), &big)
        .await
        .expect_err("over the server's max_payload");
    assert!(!error.is_retryable(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("65536") && text.contains(&size.to_string()),
        "{text}"
    );
    assert!(text.contains("max_payload"), "{text}");
    // Over the adapter's own limit: its limit is named.
    let small = fast_builder([server.url()])
        .max_payload_bytes(1_000)
        .build()
        .unwrap();
    small
        .connect(NodeId::from("small"), EventSink::bounded(8).0)
        .await
        .unwrap();
    let error = small
        .publish(&RoomName::from("big"), &envelope(&"y".repeat(2_000)))
        .await
        .expect_err("over the adapter's limit");
    assert!(
        matches!(error, Error::PayloadTooLarge { limit: 1_000, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_publish_only_adapter_publishes_and_cannot_subscribe() {
    let server = NatsServer::start().await.expect("nats-server");
    let (node, mut events) = connected(&server.url(), "node").await;
    let room = RoomName::from("emitted");
    node.subscribe(&room).await.unwrap();
    let emitter = fast_builder([server.url()]).build().unwrap();
    emitter
        .connect_publisher(NodeId::from("emitter"))
        .await
        .unwrap();
    assert!(matches!(
        emitter.subscribe(&room).await,
        Err(Error::Unsupported { .. })
    ));
    emitter.publish(&room, &envelope("hi")).await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        AdapterEvent::Message { .. }
    ));
    emitter.disconnect().await.unwrap();
    assert!(matches!(
        emitter.publish(&room, &envelope("late")).await,
        Err(Error::Closed { .. })
    ));
}

/// Publishes handed to the client before `disconnect` are written out, not
/// lost with the client's buffer (a process exits right after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_writes_out_what_was_published() {
    const COUNT: usize = 2_000;
    let server = NatsServer::start().await.expect("nats-server");
    let (node, mut events) = connected(&server.url(), "node").await;
    let room = RoomName::from("tail");
    node.subscribe(&room).await.unwrap();
    let publisher = fast_builder([server.url()]).build().unwrap();
    publisher
        .connect_publisher(NodeId::from("publisher"))
        .await
        .unwrap();
    for n in 0..COUNT {
        publisher
            .publish(&room, &envelope(&n.to_string()))
            .await
            .unwrap();
    }
    publisher.disconnect().await.unwrap();
    drop(publisher);
    for n in 0..COUNT {
        match next_event(&mut events).await {
            AdapterEvent::Message { envelope, .. } => {
                assert_eq!(envelope.message().data, n.to_string().as_str());
            }
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
}

/// The contract: a second `connect` without `disconnect` is a configuration
/// error, and the first sink keeps its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_is_a_config_error() {
    let server = NatsServer::start().await.expect("nats-server");
    let (adapter, _events) = connected(&server.url(), "twice").await;
    let again = adapter
        .connect(NodeId::from("twice"), EventSink::bounded(8).0)
        .await;
    assert!(matches!(again, Err(Error::Config(_))), "{again:?}");
    let publisher = adapter.connect_publisher(NodeId::from("twice")).await;
    assert!(matches!(publisher, Err(Error::Config(_))), "{publisher:?}");
    assert!(adapter.is_connected());
    adapter.disconnect().await.expect("disconnect");
}
