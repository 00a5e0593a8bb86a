//! The engine under pressure: dedup without per-connection copies, gap
//! events, joins while the medium is slow or down, and capacity bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter};
use rooms_adapter::engine::{MAX_CONNECTION_QUEUE, MAX_DEDUP_CAPACITY};
use rooms_adapter::history::HistoryPolicy;
use rooms_adapter::{
    BroadcastOptions, ConnectOptions, ConnectionReceiver, Envelope, Error, GapScope, NodeId,
    RoomName, Rooms, RoomsEvent, SlowConsumerPolicy, SseMessage,
};
use rooms_adapter_memory::{MemoryAdapter, MemoryBus};
use tokio::sync::broadcast::Receiver;

const DEADLINE: Duration = Duration::from_secs(10);

async fn next_gap(events: &mut Receiver<RoomsEvent>) -> (RoomName, GapScope, u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(RoomsEvent::Gap {
                room,
                scope,
                dropped,
            })) => return (room, scope, dropped),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("lifecycle channel: {error}"),
            Err(_) => panic!("no gap event within {DEADLINE:?}"),
        }
    }
}

#[tokio::test]
async fn one_copy_across_rooms_and_a_repeated_id_is_dropped_per_room() {
    let bus = MemoryBus::new();
    let a = Rooms::builder(Arc::new(bus.adapter()))
        .build()
        .await
        .unwrap();
    let b = Rooms::builder(Arc::new(bus.adapter()))
        .build()
        .await
        .unwrap();
    let mut both = b.connect(ConnectOptions::new()).await.unwrap();
    let mut single = b.connect(ConnectOptions::new()).await.unwrap();
    for room in ["r1", "r2"] {
        b.join(both.id(), room).await.unwrap();
    }
    b.join(single.id(), "r1").await.unwrap();

    let message = SseMessage::new("x").with_id("m-1");
    let report = a
        .broadcast_to(["r1", "r2"], message.clone(), BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(report.published, 2);
    // The same id again into r1, later: dropped for the whole room.
    a.broadcast("r1", message, BroadcastOptions::new())
        .await
        .unwrap();
    a.broadcast("r1", SseMessage::new("end"), BroadcastOptions::new())
        .await
        .unwrap();

    for rx in [&mut both, &mut single] {
        let first = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
        assert_eq!(first.unwrap().message().id.as_deref(), Some("m-1"));
        let second = tokio::time::timeout(DEADLINE, rx.recv()).await.unwrap();
        assert_eq!(second.unwrap().message().data, "end", "one copy only");
    }
    // One copy skipped by `both`'s ring, one room repeat skipped node-wide.
    assert_eq!(b.stats().duplicates, 2);
    for rooms in [a, b] {
        rooms.shutdown().await;
    }
}

#[tokio::test]
async fn dedup_memory_is_bounded_by_its_slots() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .dedup_capacity(4)
        .room_dedup_capacity(0)
        .build()
        .await
        .unwrap();
    let rx = rooms
        .connect(ConnectOptions::new().queue_capacity(100_000))
        .await
        .unwrap();
    rooms.join(rx.id(), "a").await.unwrap();
    rooms.join(rx.id(), "b").await.unwrap();
    // Far more ids than slots: every one is delivered, and the ring forgets
    // the oldest instead of growing.
    for i in 0..10_000 {
        let message = SseMessage::new(i).with_id(format!("id-{i}"));
        let report = rooms
            .broadcast("a", message, BroadcastOptions::new())
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
    }
    // Within the window: a copy through the other room is skipped...
    let recent = SseMessage::new(0).with_id("id-9999");
    let report = rooms
        .broadcast("b", recent, BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
    // ...but an id older than the window is not remembered any more.
    let old = SseMessage::new(0).with_id("id-0");
    let report = rooms
        .broadcast("b", old, BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(rx.queued(), 10_001);
    rooms.shutdown().await;
}

#[tokio::test]
async fn a_full_connection_queue_is_signalled_as_a_gap_for_that_connection() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .slow_consumer_policy(SlowConsumerPolicy::DropNewest)
        .connection_queue_capacity(1)
        .build()
        .await
        .unwrap();
    let mut events = rooms.lifecycle();
    let mut slow = rooms.connect(ConnectOptions::new()).await.unwrap();
    let mut fast = rooms
        .connect(ConnectOptions::new().queue_capacity(10))
        .await
        .unwrap();
    rooms.join(slow.id(), "chat").await.unwrap();
    rooms.join(fast.id(), "chat").await.unwrap();
    for i in 0..3 {
        rooms
            .broadcast("chat", SseMessage::new(i), BroadcastOptions::new())
            .await
            .unwrap();
    }
    let (room, scope, dropped) = next_gap(&mut events).await;
    assert_eq!(room.as_str(), "chat");
    assert_eq!(scope, GapScope::Connections(vec![slow.id().clone()]));
    assert_eq!(dropped, 2);
    assert_eq!(rooms.stats().gaps_signalled, 1);
    assert!(slow.recv().await.is_some());
    assert_eq!(fast.queued(), 3);
    fast.try_recv();
    rooms.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_inbound_queue_is_signalled_as_a_gap_for_the_whole_room() {
    let bus = MemoryBus::new();
    let a = Rooms::builder(Arc::new(bus.adapter()))
        .build()
        .await
        .unwrap();
    let b = Rooms::builder(Arc::new(bus.adapter()))
        .inbound_queue_capacity(1)
        .build()
        .await
        .unwrap();
    let mut events = b.lifecycle();
    let rx = b.connect(ConnectOptions::new()).await.unwrap();
    b.join(rx.id(), "busy").await.unwrap();
    // On one thread the engine's dispatcher cannot run between these
    // publishes: all but the first find the queue full.
    for i in 0..50 {
        a.broadcast("busy", SseMessage::new(i), BroadcastOptions::new())
            .await
            .unwrap();
    }
    let (room, scope, dropped) = next_gap(&mut events).await;
    assert_eq!(room.as_str(), "busy");
    assert_eq!(scope, GapScope::AllMembers);
    assert!(dropped >= 1, "dropped {dropped}");
    assert_eq!(b.stats().inbound_dropped, dropped);
    for rooms in [a, b] {
        rooms.shutdown().await;
    }
}

/// A medium whose subscribe takes `delay`, then fails with a timeout while
/// frozen, and succeeds otherwise. Counts subscribe calls per room.
struct SlowMedium {
    delay: Duration,
    frozen: AtomicBool,
    calls: Mutex<Vec<RoomName>>,
    in_flight: AtomicUsize,
    sink: Mutex<Option<EventSink>>,
}

impl SlowMedium {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            frozen: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            sink: Mutex::new(None),
        })
    }
}

#[async_trait]
impl RoomAdapter for SlowMedium {
    fn name(&self) -> &str {
        "slow"
    }
    async fn connect(&self, _: NodeId, sink: EventSink) -> Result<(), Error> {
        *self.sink.lock().unwrap() = Some(sink);
        Ok(())
    }
    async fn disconnect(&self) -> Result<(), Error> {
        Ok(())
    }
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.calls.lock().unwrap().push(room.clone());
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.frozen.load(Ordering::SeqCst) {
            Err(Error::Timeout {
                operation: format!("subscribe {room}"),
                after: self.delay,
            })
        } else {
            Ok(())
        }
    }
    async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> {
        Ok(())
    }
    async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn joins_to_different_rooms_do_not_wait_for_each_other() {
    let delay = Duration::from_millis(400);
    let medium = SlowMedium::new(delay);
    let rooms = Rooms::builder(medium.clone()).build().await.unwrap();
    let rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    let started = Instant::now();
    let joins = (0..50).map(|i| {
        let rooms = rooms.clone();
        let id = rx.id().clone();
        // Two joins per room: only one subscribe each.
        async move { rooms.join(&id, format!("room-{}", i % 25)).await }
    });
    for result in futures_util::future::join_all(joins).await {
        result.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < delay * 4,
        "25 rooms joined in {took:?}, with one subscribe taking {delay:?}"
    );
    let calls = medium.calls.lock().unwrap().clone();
    let distinct: HashSet<_> = calls.iter().collect();
    assert_eq!(calls.len(), 25, "one subscribe per room: {calls:?}");
    assert_eq!(distinct.len(), 25);
    rooms.shutdown().await;
}

#[tokio::test]
async fn joins_while_the_medium_is_down_complete_at_once() {
    let delay = Duration::from_millis(500);
    let medium = SlowMedium::new(delay);
    medium.frozen.store(true, Ordering::SeqCst);
    let rooms = Rooms::builder(medium.clone()).build().await.unwrap();
    let rx = rooms.connect(ConnectOptions::new()).await.unwrap();

    // The first join finds out: it waits for the subscribe timeout.
    let started = Instant::now();
    let first = rooms.join(rx.id(), "first").await;
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    assert!(started.elapsed() >= delay);

    // Now the medium is known to be down: 100 joins of new rooms complete
    // locally without waiting for it.
    let started = Instant::now();
    for i in 0..100 {
        rooms.join(rx.id(), format!("room-{i}")).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < delay, "100 joins took {took:?}");
    assert_eq!(rooms.stats().deferred_subscriptions, 100);
    assert_eq!(rooms.rooms_of(rx.id()).unwrap().len(), 101);

    // The medium returns: the background subscriptions go through.
    medium.frozen.store(false, Ordering::SeqCst);
    let sink = medium.sink.lock().unwrap().clone().unwrap();
    sink.send_lifecycle(AdapterEvent::Reconnected {
        rooms: vec![RoomName::from("first")],
        outage: Duration::from_secs(1),
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    while rooms.subscribed_rooms().len() < 101 {
        assert!(Instant::now() < deadline, "rooms were not subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rooms.shutdown().await;
}

#[tokio::test]
async fn capacities_and_durations_have_upper_bounds() {
    let build = |builder: rooms_adapter::RoomsBuilder| async move {
        builder.build().await.map(|_| ()).unwrap_err().to_string()
    };
    let adapter = || Arc::new(MemoryAdapter::new());
    let error = build(Rooms::builder(adapter()).connection_queue_capacity(usize::MAX)).await;
    assert!(
        error.contains("connection_queue_capacity") && error.contains(&usize::MAX.to_string()),
        "{error}"
    );
    let error = build(Rooms::builder(adapter()).dedup_capacity(MAX_DEDUP_CAPACITY + 1)).await;
    assert!(error.contains("dedup_capacity"), "{error}");
    let error = build(Rooms::builder(adapter()).inbound_queue_capacity(usize::MAX)).await;
    assert!(error.contains("inbound_queue_capacity"), "{error}");
    let error = build(Rooms::builder(adapter()).connection_queue_bytes(0)).await;
    assert!(error.contains("connection_queue_bytes"), "{error}");
    let error = build(Rooms::builder(adapter()).room_dedup_capacity(usize::MAX)).await;
    assert!(error.contains("room_dedup_capacity"), "{error}");

    let rooms = Rooms::builder(adapter()).build().await.unwrap();
    let error = rooms
        .connect(ConnectOptions::new().queue_capacity(MAX_CONNECTION_QUEUE + 1))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("queue_capacity"), "{error}");
    // At the bound it works (tokio allocates lazily).
    assert!(
        rooms
            .connect(ConnectOptions::new().queue_capacity(MAX_CONNECTION_QUEUE))
            .await
            .is_ok()
    );
    rooms.shutdown().await;
}

#[tokio::test]
async fn a_byte_limit_cuts_off_a_connection_before_its_message_count_does() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .connection_queue_bytes(10_000)
        .build()
        .await
        .unwrap();
    let mut rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    rooms.join(rx.id(), "big").await.unwrap();
    let payload = "x".repeat(3_000);
    let mut delivered = 0;
    for _ in 0..10 {
        let report = rooms
            .broadcast(
                "big",
                SseMessage::new(payload.as_str()),
                BroadcastOptions::new(),
            )
            .await
            .unwrap();
        delivered += report.delivered;
    }
    assert_eq!(delivered, 3, "three 3 KB frames fit in 10 KB");
    assert_eq!(rooms.stats().lagging_disconnects, 1);
    while rx.recv().await.is_some() {}
    assert_eq!(rx.queued_bytes(), 0);
    rooms.shutdown().await;
}

#[tokio::test]
async fn send_to_reaches_one_connection_only() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await
        .unwrap();
    let mut alice = rooms.connect(ConnectOptions::new()).await.unwrap();
    let mut bob = rooms.connect(ConnectOptions::new()).await.unwrap();
    rooms.join(alice.id(), "r").await.unwrap();
    rooms.join(bob.id(), "r").await.unwrap();
    assert!(
        rooms
            .send_to(alice.id(), SseMessage::new("resync"))
            .unwrap()
    );
    assert_eq!(alice.recv().await.unwrap().message().data, "resync");
    assert!(bob.try_recv().is_none());
    let unknown = rooms.send_to(&"nobody".into(), SseMessage::new(1));
    assert!(matches!(unknown, Err(Error::UnknownConnection(_))));
    rooms.shutdown().await;
}

/// A replay larger than the connection's queue: the slow-consumer policy
/// applies and the room's gap event names the connection.
async fn replay_that_does_not_fit(policy: SlowConsumerPolicy) -> (Rooms, ConnectionReceiver) {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .slow_consumer_policy(policy)
        .history(HistoryPolicy::new(100, Duration::from_secs(300)).unwrap())
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let report = rooms
            .broadcast("news", SseMessage::new(i), BroadcastOptions::new())
            .await
            .unwrap();
        ids.push(report.id.expect("a history position"));
    }
    let mut events = rooms.lifecycle();
    let client = rooms
        .connect(ConnectOptions::new().queue_capacity(4))
        .await
        .unwrap();
    rooms
        .join_from(client.id(), "news", Some(&ids[0]))
        .await
        .unwrap();
    // Nothing else happens on the engine: the gap must be reported by itself.
    let (room, scope, _) = next_gap(&mut events).await;
    assert_eq!(room.as_str(), "news");
    assert_eq!(scope, GapScope::Connections(vec![client.id().clone()]));
    (rooms, client)
}

#[tokio::test]
async fn a_replay_that_does_not_fit_cuts_the_connection_and_signals_its_gap() {
    let (rooms, mut client) = replay_that_does_not_fit(SlowConsumerPolicy::Disconnect).await;
    assert_eq!(rooms.stats().lagging_disconnects, 1);
    assert!(!rooms.is_connected(client.id()));
    // What fitted is still read, then the stream ends.
    let deadline = Instant::now() + DEADLINE;
    while client.recv().await.is_some() {
        assert!(Instant::now() < deadline, "the cut connection never ended");
    }
}

#[tokio::test]
async fn a_replay_that_does_not_fit_under_drop_newest_signals_its_gap_at_once() {
    let (rooms, client) = replay_that_does_not_fit(SlowConsumerPolicy::DropNewest).await;
    assert_eq!(rooms.stats().lagging_drops, 1);
    assert!(rooms.is_connected(client.id()));
    assert_eq!(client.queued(), 4);
}
