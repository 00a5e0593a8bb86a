//! Order and volume: order per publisher, concurrent publishers, many rooms,
//! and queues that fill (inbound hand-off, slow connections).

use std::collections::BTreeSet;
use std::sync::Arc;

use rooms_adapter::adapter::{AdapterEvent, EventSink};
use rooms_adapter::{BroadcastOptions, ConnectOptions, Error, NodeId, RoomName, SseMessage};
use serde_json::json;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

use super::opts;

/// 1000 messages from one publisher to one room arrive in order.
pub async fn per_publisher_order_is_kept<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "ordered").await?;
    for i in 0..1000u32 {
        a.broadcast("ordered", SseMessage::new(i), opts()).await?;
    }
    for i in 0..1000u32 {
        let delivery = next(&mut rx, &format!("message {i}")).await?;
        ensure!(
            delivery.message().data == json!(i),
            "expected message {i}, got {}",
            delivery.message().data
        );
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Concurrent publishers on three nodes: every message arrives exactly once.
pub async fn concurrent_publishers_lose_nothing<H: Harness>(h: Arc<H>) -> CaseResult {
    const PER_TASK: u32 = 250;
    let receiver = node(&*h).await?;
    let mut rx = member(&receiver, "busy").await?;
    let mut publishers = Vec::new();
    for _ in 0..3 {
        publishers.push(node(&*h).await?);
    }
    let mut tasks = Vec::new();
    for (p, publisher) in publishers.iter().enumerate() {
        for t in 0..4u32 {
            let publisher = publisher.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let tag = format!("{p}-{t}-{i}");
                    publisher
                        .broadcast("busy", SseMessage::new(tag), BroadcastOptions::new())
                        .await?;
                }
                Ok::<(), Error>(())
            }));
        }
    }
    for task in tasks {
        task.await
            .map_err(|e| CaseError(format!("publisher task failed: {e}")))??;
    }
    let expected = 3 * 4 * PER_TASK as usize;
    let mut seen = BTreeSet::new();
    for n in 0..expected {
        let delivery = next(&mut rx, &format!("message {n} of {expected}")).await?;
        let tag = delivery
            .message()
            .data
            .as_str()
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_default();
        ensure!(seen.insert(tag.clone()), "message {tag} arrived twice");
    }
    expect_quiet(&mut rx).await?;
    let mut all = vec![&receiver];
    all.extend(publishers.iter());
    shutdown_all(&all).await;
    Ok(Outcome::Passed)
}

/// One node in 10,000 rooms gets a message in each.
pub async fn ten_thousand_rooms<H: Harness>(h: Arc<H>) -> CaseResult {
    const ROOMS: usize = 10_000;
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = b
        .connect(ConnectOptions::new().queue_capacity(ROOMS + 16))
        .await?;
    let names: Vec<String> = (0..ROOMS).map(|i| format!("many-{i}")).collect();
    for chunk in names.chunks(500) {
        let joins = chunk.iter().map(|room| b.join(rx.id(), room.as_str()));
        for result in futures_util::future::join_all(joins).await {
            result?;
        }
    }
    ensure!(
        b.adapter_stats().subscriptions == ROOMS as u64,
        "adapter reports {} subscriptions",
        b.adapter_stats().subscriptions
    );
    a.broadcast_to(names.iter().map(String::as_str), text("everywhere"), opts())
        .await?;
    for n in 0..ROOMS {
        next(&mut rx, &format!("message {n} of {ROOMS}")).await?;
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A full hand-off queue drops and counts inbound events instead of stalling
/// the adapter's receive loop, which keeps working once there is room.
pub async fn full_inbound_queue_drops_and_counts<H: Harness>(h: Arc<H>) -> CaseResult {
    const CAPACITY: usize = 8;
    const SENT: u64 = 100;
    let publisher = node(&*h).await?;
    let adapter = h.new_adapter().await?;
    let (sink, mut events) = EventSink::bounded(CAPACITY);
    adapter.connect(NodeId::from("stalled"), sink).await?;
    adapter.subscribe(&RoomName::from("flood")).await?;
    for i in 0..SENT {
        publisher
            .broadcast("flood", SseMessage::new(i), opts())
            .await?;
    }
    // Other nodes' control frames (heartbeats) share the queue: every
    // message is either queued or counted as dropped, none lost silently.
    wait_until(
        "every message received and the overflow counted",
        DELIVERY_TIMEOUT,
        || {
            let stats = adapter.stats();
            stats.received >= SENT && stats.dropped_inbound >= SENT - CAPACITY as u64
        },
    )
    .await?;
    let mut queued = 0u64;
    while let Ok(event) = events.try_recv() {
        if matches!(event, AdapterEvent::Message { .. }) {
            queued += 1;
        }
    }
    let stats = adapter.stats();
    let dropped = stats.dropped_inbound;
    ensure!(
        queued <= CAPACITY as u64 && queued + dropped + stats.medium_dropped >= SENT,
        "{SENT} sent into a queue of {CAPACITY}: {queued} queued, {dropped} counted as dropped \
         by the sink, {} by the medium (send every event through EventSink::send, which \
         drops and counts on overflow, and report AdapterCounters::snapshot with that sink)",
        stats.medium_dropped
    );
    publisher.broadcast("flood", text("after"), opts()).await?;
    let event = next_event(&mut events, DELIVERY_TIMEOUT).await;
    let Some(AdapterEvent::Message { envelope, .. }) = event else {
        return fail(format!("receive loop did not recover: {event:?}"));
    };
    ensure!(
        envelope.message().data == "after",
        "got {:?}",
        envelope.message()
    );
    adapter.disconnect().await?;
    publisher.shutdown().await;
    Ok(Outcome::Passed)
}

/// A connection that stops reading is disconnected when its queue fills, and
/// never holds up the others.
pub async fn slow_connection_is_disconnected<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let slow = member_with(&b, "r", ConnectOptions::new().queue_capacity(4)).await?;
    let mut fast = member(&b, "r").await?;
    for i in 0..20u32 {
        a.broadcast("r", SseMessage::new(i), opts()).await?;
    }
    for i in 0..20u32 {
        expect_data(&mut fast, i).await?;
    }
    wait_until(
        "the slow connection is disconnected",
        DELIVERY_TIMEOUT,
        || b.stats().lagging_disconnects == 1 && !b.is_connected(slow.id()),
    )
    .await?;
    let members = b.member_count("r");
    ensure!(
        members == 1,
        "room r has {members} members, expected only the fast one"
    );
    drop(slow);
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}
