//! Failover across a 3-server NATS cluster (real `nats-server`s with routes,
//! on free ports): the server a node is connected to is SIGKILLed while
//! messages flow; the node moves to another server, `Reconnected` lists its
//! rooms, delivery resumes, and no publish hangs meanwhile.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, EventStream, RoomAdapter};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_adapter_nats::NatsAdapter;
use rooms_testkit::nats::fast_builder;
use rooms_testkit::nats_server::NatsCluster;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(20);

fn envelope(n: u64) -> Envelope {
    Envelope::new(NodeId::from("publisher"), SseMessage::new(n))
}

/// The next event that is not a control frame, within the deadline.
async fn next_event(events: &mut EventStream, until: Instant) -> AdapterEvent {
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(AdapterEvent::Control { .. })) => {}
            Ok(Some(event)) => return event,
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("no event within {DEADLINE:?}"),
        }
    }
}

/// Port of the server `adapter` is connected to.
fn connected_port(adapter: &NatsAdapter) -> u16 {
    let server = adapter.connected_server().expect("connected");
    server
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("host:port")
}

/// Spawns a loop publishing `n = 1, 2, ...` to `room` every 5 ms until
/// `stop`; records the slowest publish and the failures (which must be
/// retryable).
fn publish_loop(
    adapter: Arc<NatsAdapter>,
    room: RoomName,
    stop: Arc<AtomicBool>,
    slowest_micros: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    sequence: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let n = sequence.fetch_add(1, Ordering::Relaxed) + 1;
            let started = Instant::now();
            let result = adapter.publish(&room, &envelope(n)).await;
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            slowest_micros.fetch_max(took, Ordering::Relaxed);
            if let Err(error) = result {
                assert!(error.is_retryable(), "not retryable: {error}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connected_server_fails_over_to_another() {
    let mut cluster = NatsCluster::start(3).await.expect("3-server cluster");
    let urls = cluster.urls();

    // The node under test knows all three servers.
    let node = Arc::new(fast_builder(urls.clone()).build().expect("builder"));
    let (sink, mut events) = EventSink::bounded(1 << 20);
    node.connect(NodeId::from("node"), sink)
        .await
        .expect("connect");
    let rooms = [RoomName::from("failover"), RoomName::from("second")];
    for room in &rooms {
        node.subscribe(room).await.expect("subscribe");
    }
    let doomed_port = connected_port(&node);
    let doomed = cluster
        .index_of_port(doomed_port)
        .expect("a cluster server");

    // The publisher sits on a server that survives.
    let survivor_url = urls[(doomed + 1) % urls.len()].clone();
    let publisher = Arc::new(
        fast_builder([survivor_url])
            .build()
            .expect("publisher builder"),
    );
    publisher
        .connect_publisher(NodeId::from("publisher"))
        .await
        .expect("publisher connects");

    // Delivery works across the routes before the kill.
    let until = Instant::now() + DEADLINE;
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicU64::new(0));
    let (publisher_slowest, publisher_failures) = (Arc::default(), Arc::default());
    let publishing = publish_loop(
        Arc::clone(&publisher),
        rooms[0].clone(),
        Arc::clone(&stop),
        Arc::clone(&publisher_slowest),
        Arc::clone(&publisher_failures),
        Arc::clone(&sequence),
    );
    match next_event(&mut events, until).await {
        AdapterEvent::Message { room, .. } => assert_eq!(room, rooms[0]),
        other => panic!("expected a message before the kill, got {other:?}"),
    }

    // The node itself publishes through the switch: each publish fails fast
    // or succeeds, never hangs.
    let (node_slowest, node_failures) = (Arc::default(), Arc::default());
    let node_publishing = publish_loop(
        Arc::clone(&node),
        rooms[1].clone(),
        Arc::clone(&stop),
        Arc::clone(&node_slowest),
        Arc::clone(&node_failures),
        Arc::new(AtomicU64::new(1_000_000)),
    );

    let killed_at = Instant::now();
    let sequence_at_kill = sequence.load(Ordering::Relaxed);
    cluster
        .server_mut(doomed)
        .expect("doomed server")
        .kill()
        .expect("kill");

    let mut lost_after = None;
    let mut reconnected = None;
    let resumed_after = loop {
        match next_event(&mut events, until).await {
            AdapterEvent::MediumLost { reason } => {
                assert!(lost_after.is_none(), "MediumLost twice in one outage");
                lost_after = Some((killed_at.elapsed(), reason));
            }
            AdapterEvent::Reconnected {
                rooms: listed,
                outage,
            } => {
                let mut expected = rooms.to_vec();
                expected.sort();
                assert_eq!(listed, expected, "Reconnected lists every room");
                reconnected = Some((killed_at.elapsed(), outage));
            }
            AdapterEvent::Message { room, envelope } if room == rooms[0] => {
                let n: u64 = envelope.message().data.as_json().parse().expect("a number");
                if n > sequence_at_kill + 1 && reconnected.is_some() {
                    break killed_at.elapsed();
                }
            }
            _ => {}
        }
    };
    stop.store(true, Ordering::Relaxed);
    publishing.await.expect("publisher loop");
    node_publishing.await.expect("node publish loop");

    let (lost_after, reason) = lost_after.expect("MediumLost before Reconnected");
    let (reconnected_after, outage) = reconnected.expect("Reconnected");
    let new_port = connected_port(&node);
    assert_ne!(new_port, doomed_port, "the node moved to another server");
    let node_slowest = Duration::from_micros(node_slowest.load(Ordering::Relaxed));
    let publisher_slowest = Duration::from_micros(publisher_slowest.load(Ordering::Relaxed));
    println!(
        "failover: the room was dark for {resumed_after:.1?} (server :{doomed_port} killed; \
         MediumLost after {lost_after:.1?} ({reason}); Reconnected after {reconnected_after:.1?} \
         with outage {outage:.1?}, now on :{new_port}); node publishes during the switch: \
         {} failed fast, slowest {node_slowest:.1?}; publisher on a survivor: {} failed, \
         slowest {publisher_slowest:.1?}",
        node_failures.load(Ordering::Relaxed),
        publisher_failures.load(Ordering::Relaxed),
    );
    assert!(
        node_slowest < Duration::from_secs(2),
        "a publish during the switch took {node_slowest:?}"
    );
    assert!(node.stats().reconnects >= 1);
    node.disconnect().await.expect("disconnect");
    publisher.disconnect().await.expect("disconnect");
}
