//! Subscriptions and shutdown: idempotent subscribe and unsubscribe, join and
//! leave races, disconnects, and receivers that go away.

use std::sync::Arc;

use rooms_adapter::adapter::{AdapterEvent, EventSink};
use rooms_adapter::{ConnectOptions, Error, NodeId, RoomName};

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

use super::opts;

/// `subscribe` and `unsubscribe` on the adapter itself are idempotent.
pub async fn subscribe_and_unsubscribe_are_idempotent<H: Harness>(h: Arc<H>) -> CaseResult {
    let publisher = node(&*h).await?;
    let adapter = h.new_adapter().await?;
    let (sink, mut events) = EventSink::bounded(64);
    adapter.connect(NodeId::from("raw-node"), sink).await?;
    let room = RoomName::from("idem");
    adapter.subscribe(&room).await?;
    adapter.subscribe(&room).await?;
    ensure!(
        adapter.stats().subscriptions == 1,
        "two subscribes made {} subscriptions",
        adapter.stats().subscriptions
    );
    publisher.broadcast("idem", text("one"), opts()).await?;
    let first = next_event(&mut events, DELIVERY_TIMEOUT).await;
    ensure!(
        matches!(first, Some(AdapterEvent::Message { .. })),
        "no message after subscribe: {first:?}"
    );
    let second = next_event(&mut events, QUIET_PERIOD).await;
    ensure!(
        second.is_none(),
        "double subscribe delivered twice: {second:?}"
    );

    adapter.unsubscribe(&room).await?;
    adapter.unsubscribe(&room).await?;
    adapter
        .unsubscribe(&RoomName::from("never-subscribed"))
        .await?;
    wait_until(
        "the adapter reports no subscription",
        DELIVERY_TIMEOUT,
        || adapter.stats().subscriptions == 0,
    )
    .await?;
    publisher.broadcast("idem", text("two"), opts()).await?;
    let after = next_event(&mut events, QUIET_PERIOD).await;
    ensure!(
        !matches!(after, Some(AdapterEvent::Message { .. })),
        "delivered after unsubscribe: {after:?}"
    );
    adapter.disconnect().await?;
    adapter.disconnect().await?;
    publisher.shutdown().await;
    Ok(Outcome::Passed)
}

/// Concurrent joins and leaves of one room settle to the right subscription.
pub async fn join_leave_races_settle<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut receivers = Vec::new();
    for _ in 0..40 {
        receivers.push(b.connect(ConnectOptions::new().queue_capacity(64)).await?);
    }
    let ids: Vec<_> = receivers.iter().map(|rx| rx.id().clone()).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (b, id) = (b.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                b.join(&id, "race").await?;
                tokio::task::yield_now().await;
                b.leave(&id, "race").await?;
            }
            if i % 2 == 0 {
                b.join(&id, "race").await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| CaseError(format!("task failed: {e}")))??;
    }
    let race = RoomName::from("race");
    ensure!(
        b.member_count(&race) == 20,
        "expected 20 members, got {}",
        b.member_count(&race)
    );
    ensure!(
        b.subscribed_rooms() == vec![race.clone()],
        "engine subscriptions: {:?}",
        b.subscribed_rooms()
    );
    a.broadcast("race", text("settled"), opts()).await?;
    for (i, rx) in receivers.iter_mut().enumerate() {
        if i % 2 == 0 {
            expect_data(rx, "settled").await?;
        }
    }

    let mut tasks = Vec::new();
    for id in ids.iter().step_by(2) {
        let (b, id) = (b.clone(), id.clone());
        tasks.push(tokio::spawn(async move { b.leave(&id, "race").await }));
    }
    for task in tasks {
        task.await
            .map_err(|e| CaseError(format!("task failed: {e}")))??;
    }
    ensure!(
        b.subscribed_rooms().is_empty(),
        "still subscribed: {:?}",
        b.subscribed_rooms()
    );
    wait_until(
        "the adapter reports no subscription",
        DELIVERY_TIMEOUT,
        || b.adapter_stats().subscriptions == 0,
    )
    .await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Disconnecting a connection ends its receiver and is idempotent; shutting a
/// node down stops its delivery and is idempotent too.
pub async fn disconnect_stops_delivery_and_is_idempotent<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "r").await?;
    let id = rx.id().clone();
    ensure!(
        b.disconnect(&id).await?,
        "first disconnect reported not connected"
    );
    ensure!(
        !b.disconnect(&id).await?,
        "second disconnect reported connected"
    );
    let ended = tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv()).await;
    ensure!(matches!(ended, Ok(None)), "receiver did not end: {ended:?}");
    ensure!(
        b.member_count("r") == 0,
        "disconnected connection still a member"
    );

    let mut late = member(&b, "r").await?;
    b.shutdown().await;
    b.shutdown().await;
    ensure!(
        matches!(b.join(late.id(), "r").await, Err(Error::Closed { .. })),
        "join after shutdown did not fail with Closed"
    );
    a.broadcast("r", text("after shutdown"), opts()).await?;
    let got = tokio::time::timeout(QUIET_PERIOD, late.recv()).await;
    ensure!(
        matches!(got, Ok(None) | Err(_)),
        "a shut-down node still delivered: {got:?}"
    );

    // The adapter itself: after disconnect, nothing reaches its sink.
    let adapter = h.new_adapter().await?;
    let (sink, mut events) = EventSink::bounded(16);
    adapter.connect(NodeId::from("raw-node"), sink).await?;
    adapter.subscribe(&RoomName::from("r")).await?;
    adapter.disconnect().await?;
    adapter.disconnect().await?;
    // Handed over before `disconnect` returned (a heartbeat of node `a` on
    // the control channel, say): not a delivery after it.
    while events.try_recv().is_ok() {}
    a.broadcast("r", text("after adapter disconnect"), opts())
        .await?;
    let got = tokio::time::timeout(QUIET_PERIOD, events.recv()).await;
    ensure!(
        matches!(got, Ok(None) | Err(_)),
        "a disconnected adapter still delivered: {got:?}"
    );
    a.shutdown().await;
    Ok(Outcome::Passed)
}

/// A dropped receiver (the client went away) leaves every room, and the node
/// unsubscribes.
pub async fn dropped_receiver_leaves_rooms<H: Harness>(h: Arc<H>) -> CaseResult {
    let b = node(&*h).await?;
    let rx = member(&b, "gone").await?;
    b.join(rx.id(), "gone-too").await?;
    drop(rx);
    wait_until(
        "the rooms are empty and unsubscribed",
        DELIVERY_TIMEOUT,
        || b.rooms().is_empty() && b.subscribed_rooms().is_empty(),
    )
    .await?;
    wait_until(
        "the adapter reports no subscription",
        DELIVERY_TIMEOUT,
        || b.adapter_stats().subscriptions == 0,
    )
    .await?;
    b.shutdown().await;
    Ok(Outcome::Passed)
}
