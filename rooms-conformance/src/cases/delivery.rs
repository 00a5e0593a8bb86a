//! Who gets a broadcast: subscribed nodes only, one copy each, never the
//! sender's echo, `except` and local-only honoured, metadata and ids kept, and
//! publish-only emitters.

use std::sync::{Arc, Mutex};

use rooms_adapter::{ConnectOptions, RoomName, SseMessage};
use serde_json::json;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

use super::opts;

/// A message reaches members on nodes subscribed to its room, and no other node.
pub async fn delivers_to_subscribed_nodes_only<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b, c) = (node(&*h).await?, node(&*h).await?, node(&*h).await?);
    let mut in_room = member(&b, "r1").await?;
    let mut elsewhere = member(&c, "other").await?;
    a.broadcast("r1", text("hello"), opts()).await?;
    expect_data(&mut in_room, "hello").await?;
    a.broadcast("other", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut elsewhere, "sentinel").await?;
    shutdown_all(&[&a, &b, &c]).await;
    Ok(Outcome::Passed)
}

/// After the last local member leaves, the node is unsubscribed and gets
/// nothing more for that room.
pub async fn unsubscribe_stops_delivery<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "r").await?;
    a.broadcast("r", text("before"), opts()).await?;
    expect_data(&mut rx, "before").await?;

    b.leave(rx.id(), "r").await?;
    b.join(rx.id(), "s").await?;
    ensure!(
        !b.subscribed_rooms().contains(&RoomName::from("r")),
        "engine still subscribed to r after its last member left"
    );
    wait_until(
        "the adapter reports exactly one subscription",
        DELIVERY_TIMEOUT,
        || b.adapter_stats().subscriptions == 1,
    )
    .await?;
    a.broadcast("r", text("after"), opts()).await?;
    a.broadcast("s", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut rx, "sentinel").await?;
    let received_before = b.stats().remote_received;
    a.broadcast("r", text("after again"), opts()).await?;
    a.broadcast("s", text("sentinel 2"), opts()).await?;
    expect_only_sentinel(&mut rx, "sentinel 2").await?;
    ensure!(
        b.stats().remote_received == received_before + 1,
        "node b received envelopes for a room it left ({} new, expected 1)",
        b.stats().remote_received - received_before
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Rooms do not leak into each other, even on one node.
pub async fn rooms_are_independent<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut one = member(&b, "r1").await?;
    let mut two = member(&b, "r2").await?;
    a.broadcast("r1", text("for r1"), opts()).await?;
    a.broadcast("r2", text("for r2"), opts()).await?;
    expect_data(&mut one, "for r1").await?;
    expect_data(&mut two, "for r2").await?;
    expect_quiet(&mut one).await?;
    expect_quiet(&mut two).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Both nodes publish and both receive; each local member gets its own node's
/// message once.
pub async fn bidirectional<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut on_a = member(&a, "r").await?;
    let mut on_b = member(&b, "r").await?;
    a.broadcast("r", text("from a"), opts()).await?;
    expect_data(&mut on_a, "from a").await?;
    expect_data(&mut on_b, "from a").await?;
    b.broadcast("r", text("from b"), opts()).await?;
    expect_data(&mut on_a, "from b").await?;
    expect_data(&mut on_b, "from b").await?;
    expect_quiet(&mut on_a).await?;
    expect_quiet(&mut on_b).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// With four nodes, every member everywhere gets one copy.
pub async fn many_nodes_each_get_one_copy<H: Harness>(h: Arc<H>) -> CaseResult {
    let mut nodes = Vec::new();
    let mut members = Vec::new();
    for _ in 0..4 {
        let n = node(&*h).await?;
        members.push(member(&n, "r").await?);
        nodes.push(n);
    }
    nodes[2].broadcast("r", text("to all"), opts()).await?;
    for rx in &mut members {
        expect_data(rx, "to all").await?;
    }
    for rx in &mut members {
        expect_quiet(rx).await?;
    }
    shutdown_all(&nodes.iter().collect::<Vec<_>>()).await;
    Ok(Outcome::Passed)
}

/// A node's own envelope, echoed back by the medium, is not delivered twice.
pub async fn echo_is_suppressed<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut local = member(&a, "r").await?;
    let mut remote = member(&b, "r").await?;
    a.broadcast("r", text("once"), opts()).await?;
    expect_data(&mut local, "once").await?;
    expect_data(&mut remote, "once").await?;
    expect_quiet(&mut local).await?;
    let stats = a.stats();
    ensure!(
        stats.deliveries == 1,
        "node a delivered its own message {} times",
        stats.deliveries
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// `except` skips the named connection on the publishing node and on others.
pub async fn except_is_honoured_locally_and_remotely<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut sender = member_with(&a, "r", ConnectOptions::new().id("sender")).await?;
    let mut a_other = member(&a, "r").await?;
    let mut b_skipped = member_with(&b, "r", ConnectOptions::new().id("remote-skip")).await?;
    let mut b_other = member(&b, "r").await?;

    let report = a
        .broadcast("r", text("not to sender"), opts().except("sender"))
        .await?;
    ensure!(
        report.delivered == 1,
        "expected 1 local delivery, got {report:?}"
    );
    a.broadcast(
        "r",
        text("not to remote-skip"),
        opts().except("remote-skip"),
    )
    .await?;

    expect_data(&mut a_other, "not to sender").await?;
    expect_data(&mut b_other, "not to sender").await?;
    expect_data(&mut b_skipped, "not to sender").await?;
    expect_data(&mut sender, "not to remote-skip").await?;
    expect_data(&mut a_other, "not to remote-skip").await?;
    expect_data(&mut b_other, "not to remote-skip").await?;
    a.broadcast("r", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut sender, "sentinel").await?;
    expect_only_sentinel(&mut b_skipped, "sentinel").await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A local-only broadcast never reaches the medium.
pub async fn local_only_never_crosses<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut local = member(&a, "r").await?;
    let mut remote = member(&b, "r").await?;
    let published_before = a.adapter_stats().published;
    let report = a.broadcast("r", text("local"), opts().local_only()).await?;
    ensure!(
        report.delivered == 1 && report.published == 0,
        "local-only broadcast reported {report:?}"
    );
    expect_data(&mut local, "local").await?;
    ensure!(
        a.adapter_stats().published == published_before,
        "a local-only broadcast was published"
    );
    a.broadcast("r", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut remote, "sentinel").await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Metadata crosses the medium and reaches the remote delivery filter.
pub async fn metadata_reaches_remote_filter<H: Harness>(h: Arc<H>) -> CaseResult {
    let by_project = |b: rooms_adapter::RoomsBuilder| {
        b.filter(Arc::new(|conn, _msg, meta| match (conn.context, meta) {
            (Some(ctx), Some(meta)) => ctx["projectId"] == meta["projectId"],
            _ => true,
        }))
    };
    let a = node_with(&*h, by_project).await?;
    let b = node_with(&*h, by_project).await?;
    let project = |id: u32| {
        ConnectOptions::new()
            .queue_capacity(64)
            .context(json!({ "projectId": id }))
    };
    let mut p1 = member_with(&b, "r", project(1)).await?;
    let mut p2 = member_with(&b, "r", project(2)).await?;
    a.broadcast(
        "r",
        text("for project 1"),
        opts().metadata(json!({"projectId": 1, "tags": ["x"]})),
    )
    .await?;
    expect_data(&mut p1, "for project 1").await?;
    wait_until("node b filtered one delivery", DELIVERY_TIMEOUT, || {
        b.stats().filtered == 1
    })
    .await?;
    a.broadcast("r", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut p2, "sentinel").await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A connection in two rooms gets a message with an id once, even when it
/// arrives through both rooms.
pub async fn message_ids_are_delivered_once<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "r1").await?;
    b.join(rx.id(), "r2").await?;
    a.broadcast_to(
        ["r1", "r2"],
        SseMessage::new("twice").with_id("id-1"),
        opts(),
    )
    .await?;
    expect_data(&mut rx, "twice").await?;
    a.broadcast("r1", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut rx, "sentinel").await?;
    ensure!(
        b.stats().duplicates == 1,
        "expected 1 duplicate dropped, got {}",
        b.stats().duplicates
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A publish-only [`Emitter`](rooms_adapter::emitter::Emitter) reaches the
/// room's members on every node, honouring `except` and metadata, and never
/// receives anything itself. Needs the adapter's `emitter` capability.
pub async fn emitter_reaches_every_node<H: Harness>(h: Arc<H>) -> CaseResult {
    let adapter = h.new_adapter().await?;
    if !adapter.capabilities().emitter {
        return Ok(Outcome::Skipped(
            "the adapter declares no emitter capability",
        ));
    }
    let seen_meta = Arc::new(Mutex::new(Vec::new()));
    let filter_meta = Arc::clone(&seen_meta);
    let filter: rooms_adapter::DeliveryFilter = Arc::new(move |_, _, meta| {
        if let Some(meta) = meta
            && let Ok(mut seen) = filter_meta.lock()
        {
            seen.push(meta.clone());
        }
        true
    });
    let (a, b) = (
        node(&*h).await?,
        node_with(&*h, |builder| builder.filter(filter)).await?,
    );
    let mut on_a = member(&a, "emitted").await?;
    let mut on_b = member(&b, "emitted").await?;
    let mut skipped = member_with(&b, "emitted", ConnectOptions::new().id("skip-me")).await?;
    let emitter = rooms_adapter::emitter::Emitter::connect(adapter, "emitter-node").await?;
    emitter
        .emit(
            "emitted",
            text("from the emitter"),
            opts()
                .except("skip-me")
                .metadata(json!({"source": "worker"})),
        )
        .await?;
    expect_data(&mut on_a, "from the emitter").await?;
    expect_data(&mut on_b, "from the emitter").await?;
    emitter.emit("emitted", text("sentinel"), opts()).await?;
    expect_only_sentinel(&mut skipped, "sentinel").await?;
    let metas = seen_meta
        .lock()
        .map(|seen| seen.clone())
        .unwrap_or_default();
    ensure!(
        metas.contains(&json!({"source": "worker"})),
        "the metadata did not reach the remote filter: {metas:?}"
    );
    emitter.close().await;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}
