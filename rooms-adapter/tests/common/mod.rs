//! Setup shared by the test binaries of `rooms-adapter`.
#![allow(dead_code, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::{BroadcastOptions, ConnectOptions, ConnectionReceiver, Rooms, SseMessage};
use rooms_adapter_memory::MemoryBus;

/// How long a message may take to arrive before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Two nodes on one bus: `b` has a member in `lobby`, `a` broadcasts
/// `messages` times, and the member takes every one. Keep the receiver:
/// dropping it disconnects the member.
pub async fn traffic(messages: usize) -> (Rooms, Rooms, ConnectionReceiver) {
    let bus = MemoryBus::new();
    let a = Rooms::builder(Arc::new(bus.adapter()))
        .node_id("node-a")
        .build()
        .await
        .expect("node a");
    let b = Rooms::builder(Arc::new(bus.adapter()))
        .node_id("node-b")
        .build()
        .await
        .expect("node b");
    let mut member = b
        .connect(ConnectOptions::new().id("member"))
        .await
        .expect("connect");
    b.join(member.id(), "lobby").await.expect("join");
    for i in 0..messages {
        a.broadcast(
            "lobby",
            SseMessage::new(format!("m{i}")),
            BroadcastOptions::new(),
        )
        .await
        .expect("broadcast");
    }
    for _ in 0..messages {
        tokio::time::timeout(DEADLINE, member.recv())
            .await
            .expect("delivered in time")
            .expect("connection open");
    }
    (a, b, member)
}
