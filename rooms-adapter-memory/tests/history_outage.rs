//! Recovery after a medium outage: a node cut off the bus while others
//! publish gets what its rooms missed from history, in order, before it
//! announces `Reconnected`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::history::HistoryPolicy;
use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, RoomsEvent, SseMessage};
use rooms_adapter_memory::MemoryBus;

const DEADLINE: Duration = Duration::from_secs(10);

async fn node(bus: &MemoryBus) -> (Rooms, Arc<rooms_adapter_memory::MemoryBusAdapter>) {
    let adapter = Arc::new(bus.adapter());
    let rooms = Rooms::builder(adapter.clone())
        .history(HistoryPolicy::new(100, Duration::from_secs(60)).unwrap())
        .build()
        .await
        .unwrap();
    (rooms, adapter)
}

async fn next_reconnected(events: &mut tokio::sync::broadcast::Receiver<RoomsEvent>) -> RoomsEvent {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.recv().await.unwrap();
            if matches!(event, RoomsEvent::Reconnected { .. }) {
                return event;
            }
        }
    })
    .await
    .expect("Reconnected in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_messages_are_replayed_in_order_before_reconnected() {
    let bus = MemoryBus::new();
    let (a, _) = node(&bus).await;
    let (b, b_adapter) = node(&bus).await;
    let mut member = b.connect(ConnectOptions::new()).await.unwrap();
    b.join(member.id(), "r").await.unwrap();
    let mut other = b.connect(ConnectOptions::new()).await.unwrap();
    b.join(other.id(), "quiet").await.unwrap();

    a.broadcast("r", SseMessage::new(0), BroadcastOptions::new())
        .await
        .unwrap();
    let seen = tokio::time::timeout(DEADLINE, member.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.message().data, serde_json::json!(0));

    let mut events = b.lifecycle();
    b_adapter.cut_off();
    for n in 1..=3 {
        a.broadcast("r", SseMessage::new(n), BroadcastOptions::new())
            .await
            .unwrap();
    }
    // B's own broadcast cannot be stored: local members still get it.
    let own = b
        .broadcast("r", SseMessage::new(99), BroadcastOptions::new())
        .await;
    assert!(own.is_err(), "{own:?}");
    let local = member.try_recv().expect("delivered locally while cut off");
    assert_eq!(local.message().data, serde_json::json!(99));
    assert_eq!(local.message().id, None, "no position without the medium");
    b_adapter.restore().await;
    let RoomsEvent::Reconnected {
        rooms, recovered, ..
    } = next_reconnected(&mut events).await
    else {
        unreachable!()
    };
    assert!(rooms.iter().any(|room| room == "r"), "{rooms:?}");
    assert!(recovered.iter().any(|room| room == "r"), "{recovered:?}");
    // Queued before the event: no waiting needed.
    for n in 1..=3 {
        let delivery = member.try_recv().expect("replayed before Reconnected");
        assert_eq!(delivery.message().data, serde_json::json!(n));
    }
    assert!(member.try_recv().is_none(), "nothing twice");
    assert!(other.try_recv().is_none(), "other rooms get nothing");

    a.broadcast("r", SseMessage::new(4), BroadcastOptions::new())
        .await
        .unwrap();
    let live = tokio::time::timeout(DEADLINE, member.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.message().data, serde_json::json!(4));
    a.shutdown().await;
    b.shutdown().await;
}
