//! The rooms engine on one node (the memory adapter): what the conformance
//! suite does not pin down because it needs no second node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rooms_adapter::{
    BroadcastOptions, ConnectOptions, Error, RoomName, Rooms, SlowConsumerPolicy, SseMessage,
};
use rooms_adapter_memory::MemoryAdapter;
use serde_json::json;

async fn rooms() -> Rooms {
    Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_frame_per_message_however_many_connections() {
    let rooms = rooms().await;
    let mut receivers = Vec::new();
    for _ in 0..100 {
        let rx = rooms.connect(ConnectOptions::new()).await.unwrap();
        rooms.join(rx.id(), "big").await.unwrap();
        receivers.push(rx);
    }
    let report = rooms
        .broadcast("big", SseMessage::new("hi"), BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(report.delivered, 100);
    assert_eq!(rooms.stats().frames_encoded, 1);
    let first = receivers[0].recv().await.unwrap();
    let last = receivers[99].recv().await.unwrap();
    assert!(Arc::ptr_eq(&first, &last), "one shared delivery");
}

#[tokio::test]
async fn a_connection_in_several_target_rooms_gets_one_copy() {
    let rooms = rooms().await;
    let mut rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    for room in ["a", "b", "c"] {
        rooms.join(rx.id(), room).await.unwrap();
    }
    let report = rooms
        .broadcast_to(
            ["a", "b", "c", "a"],
            SseMessage::new(1),
            BroadcastOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(report.published, 3);
    assert!(rx.recv().await.is_some());
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn field_injection_is_rejected_before_anything_is_sent() {
    let rooms = rooms().await;
    let mut rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    rooms.join(rx.id(), "r").await.unwrap();
    for bad in [
        SseMessage::new(1).with_event("x\ndata: injected"),
        SseMessage::new(1).with_id("1\r\nevent: x"),
    ] {
        let result = rooms.broadcast("r", bad, BroadcastOptions::new()).await;
        assert!(
            matches!(result, Err(Error::InvalidSseField { .. })),
            "{result:?}"
        );
    }
    assert!(rx.try_recv().is_none());
    assert_eq!(rooms.adapter_stats().published, 0);
}

#[tokio::test]
async fn filter_counts_local_rejections() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .filter(Arc::new(|conn, _msg, meta| {
            conn.context.map(|c| &c["role"]) == meta.map(|m| &m["role"])
        }))
        .build()
        .await
        .unwrap();
    let admin = rooms
        .connect(ConnectOptions::new().context(json!({"role": "admin"})))
        .await
        .unwrap();
    let user = rooms
        .connect(ConnectOptions::new().context(json!({"role": "user"})))
        .await
        .unwrap();
    rooms.join(admin.id(), "r").await.unwrap();
    rooms.join(user.id(), "r").await.unwrap();
    let report = rooms
        .broadcast(
            "r",
            SseMessage::new("secret"),
            BroadcastOptions::new().metadata(json!({"role": "admin"})),
        )
        .await
        .unwrap();
    assert_eq!((report.delivered, report.filtered), (1, 1));
}

#[tokio::test]
async fn drop_newest_policy_keeps_the_connection() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .slow_consumer_policy(SlowConsumerPolicy::DropNewest)
        .connection_queue_capacity(2)
        .build()
        .await
        .unwrap();
    let mut rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    rooms.join(rx.id(), "r").await.unwrap();
    for i in 0..5 {
        rooms
            .broadcast("r", SseMessage::new(i), BroadcastOptions::new())
            .await
            .unwrap();
    }
    assert_eq!(rooms.stats().lagging_drops, 3);
    assert!(rooms.is_connected(rx.id()));
    assert_eq!(
        rx.recv().await.unwrap().message().data,
        serde_json::json!(0)
    );
    assert_eq!(
        rx.recv().await.unwrap().message().data,
        serde_json::json!(1)
    );
}

#[tokio::test]
async fn disconnect_policy_ends_the_receiver_after_what_was_queued() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .connection_queue_capacity(2)
        .build()
        .await
        .unwrap();
    let mut rx = rooms.connect(ConnectOptions::new()).await.unwrap();
    rooms.join(rx.id(), "r").await.unwrap();
    for i in 0..3 {
        rooms
            .broadcast("r", SseMessage::new(i), BroadcastOptions::new())
            .await
            .unwrap();
    }
    assert_eq!(rooms.stats().lagging_disconnects, 1);
    assert!(!rooms.is_connected(rx.id()));
    assert_eq!(
        rx.recv().await.unwrap().message().data,
        serde_json::json!(0)
    );
    assert_eq!(
        rx.recv().await.unwrap().message().data,
        serde_json::json!(1)
    );
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn builder_and_registry_errors_name_the_input() {
    let err = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .connection_queue_capacity(0)
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("connection_queue_capacity"),
        "{err}"
    );
    let err = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .node_id("")
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node_id"), "{err}");

    let rooms = rooms().await;
    let _rx = rooms
        .connect(ConnectOptions::new().id("dup"))
        .await
        .unwrap();
    let err = rooms
        .connect(ConnectOptions::new().id("dup"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ConnectionExists(ref id) if id == "dup"),
        "{err}"
    );
    let err = rooms.join(&"ghost".into(), "r").await.unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[tokio::test]
async fn queries_and_leave_all() {
    let rooms = rooms().await;
    let rx = rooms.connect(ConnectOptions::new().id("c1")).await.unwrap();
    rooms.join(rx.id(), "a").await.unwrap();
    rooms.join(rx.id(), "b").await.unwrap();
    let (a, b) = (RoomName::from("a"), RoomName::from("b"));
    assert!(rooms.is_in_room(rx.id(), &a));
    assert_eq!(rooms.member_count(&b), 1);
    assert_eq!(
        rooms.members_of(&a),
        vec![rooms_adapter::ConnectionId::from("c1")]
    );
    let mut all = rooms.rooms();
    all.sort();
    assert_eq!(all, vec![a.clone(), b.clone()]);
    assert_eq!(rooms.adapter_stats().subscriptions, 2);
    let mut left = rooms.leave_all(rx.id()).await.unwrap();
    left.sort();
    assert_eq!(left, vec![a, b]);
    assert!(rooms.rooms().is_empty());
    assert_eq!(rooms.adapter_stats().subscriptions, 0);
    assert!(rooms.is_connected(rx.id()));
    rooms.shutdown().await;
    assert!(matches!(
        rooms
            .broadcast("a", SseMessage::new(1), BroadcastOptions::new())
            .await,
        Err(Error::Closed { .. })
    ));
}

/// A caller that keeps many broadcasts in flight (a `FuturesUnordered`, a
/// `JoinSet`) allocates one future per broadcast: its size is paid per
/// message. It was 1,544 bytes when every argument lived in it twice and the
/// several-rooms path was inline (864 now); the bound is the size glibc
/// still serves from its per-thread cache (1,032 bytes).
#[tokio::test]
async fn broadcast_future_stays_small() {
    let rooms = rooms().await;
    let message = SseMessage::new(json!({ "n": 1 }));
    let future = rooms.broadcast("r", message, BroadcastOptions::new());
    let size = std::mem::size_of_val(&future);
    let bound = 1_032;
    assert!(
        size <= bound,
        "broadcast future is {size} bytes, over {bound}"
    );
    future.await.unwrap();
}
