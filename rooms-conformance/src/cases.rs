//! The cases. Each takes the harness (its medium is fresh) and returns an
//! [`Outcome`] or the reason it failed. Waits are by condition with a deadline;
//! a check that something does *not* arrive first waits for a sentinel sent
//! after it, then listens for a short quiet period.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rooms_adapter::adapter::{AdapterEvent, EventSink};
use rooms_adapter::{
    BroadcastOptions, ConnectOptions, Error, NodeId, RoomName, RoomsEvent, SseMessage, wire,
};
use serde_json::{Value, json};

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

mod cluster;
mod history;

pub use self::cluster::*;
pub use self::history::*;

const GOLDEN_VECTORS: &str = include_str!("../fixtures/ts-v1-vectors.json");

fn opts() -> BroadcastOptions {
    BroadcastOptions::new()
}

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

/// Every message shape of the TypeScript golden vectors (each data type,
/// unicode, escapes, id/retry, metadata, odd rooms) crosses unchanged.
pub async fn golden_vector_messages_round_trip<H: Harness>(h: Arc<H>) -> CaseResult {
    let vectors: Vec<Value> = serde_json::from_str(GOLDEN_VECTORS)
        .map_err(|e| CaseError(format!("golden vectors do not parse: {e}")))?;
    let seen: Arc<Mutex<Vec<Option<Value>>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let a = node(&*h).await?;
    let b = node_with(&*h, move |builder| {
        builder.filter(Arc::new(move |_conn, _msg, meta| {
            if let Ok(mut seen) = recorder.lock() {
                seen.push(meta.cloned());
            }
            true
        }))
    })
    .await?;
    for (index, vector) in vectors.iter().enumerate() {
        let payload = vector["payload"].as_str().unwrap_or_default();
        let room = vector["room"].as_str().unwrap_or_default();
        let envelope = wire::decode(payload.as_bytes(), wire::DEFAULT_MAX_PAYLOAD_BYTES)
            .map_err(|e| CaseError(format!("vector {index} does not decode: {e}")))?;
        let mut rx = member(&b, room).await?;
        let mut options = opts();
        if let Some(meta) = envelope.meta() {
            options = options.metadata(meta.clone());
        }
        a.broadcast(room, envelope.message().clone(), options)
            .await?;
        let delivery = next(
            &mut rx,
            &format!("vector {index} ({})", vector["description"]),
        )
        .await?;
        ensure!(
            delivery.message() == envelope.message(),
            "vector {index}: sent {:?}, received {:?}",
            envelope.message(),
            delivery.message()
        );
        let meta = seen.lock().ok().and_then(|mut seen| seen.pop());
        ensure!(
            meta == Some(envelope.meta().cloned()),
            "vector {index}: metadata {:?} arrived as {meta:?}",
            envelope.meta()
        );
        b.disconnect(rx.id()).await?;
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

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

/// A 1 MiB payload crosses intact.
pub async fn one_mib_payload<H: Harness>(h: Arc<H>) -> CaseResult {
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "big").await?;
    let big: String = "0123456789abcdef".repeat(64 * 1024);
    a.broadcast(
        "big",
        SseMessage::new(big.clone()).with_event("big"),
        opts(),
    )
    .await?;
    expect_data(&mut rx, big).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Unicode, empty, punctuation-heavy and long room names all work.
pub async fn odd_room_names<H: Harness>(h: Arc<H>) -> CaseResult {
    let long = "x".repeat(1000);
    let names = [
        "",
        "project:42:chat room/ü 日本 🚀",
        "with spaces",
        "*",
        "?[]{}",
        "sse:room:nested",
        "line\nbreak",
        "tab\there",
        long.as_str(),
    ];
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut receivers = Vec::new();
    for name in names {
        receivers.push(member(&b, name).await?);
    }
    for name in names {
        a.broadcast(name, SseMessage::new(format!("to {name}")), opts())
            .await?;
    }
    for (name, rx) in names.iter().zip(receivers.iter_mut()) {
        expect_data(rx, format!("to {name}")).await?;
    }
    for rx in &mut receivers {
        expect_quiet(rx).await?;
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Malformed payloads on a room's channel are skipped and counted; good
/// messages around them still arrive.
pub async fn malformed_payloads_are_skipped_and_counted<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().raw_publish {
        return Ok(Outcome::Skipped("needs raw_publish"));
    }
    let b = node(&*h).await?;
    let mut rx = member(&b, "raw").await?;
    let room = RoomName::from("raw");
    let good = |data: &str| format!(r#"{{"v":1,"m":{{"data":"{data}"}},"n":"foreign"}}"#);
    let bad: Vec<Vec<u8>> = vec![
        b"garbage \xff\xfe".to_vec(),
        br#"{"v":2,"m":{"data":1},"n":"x"}"#.to_vec(),
        vec![0x83, 0xa1, b'v', 0x01, 0xa1],
        br#"{"v":1,"n":"x"}"#.to_vec(),
        br#"{"v":1,"m":"not an object","n":"x"}"#.to_vec(),
        b"".to_vec(),
        vec![b' '; wire::DEFAULT_MAX_PAYLOAD_BYTES + 1],
    ];
    h.publish_raw(&room, good("first").as_bytes()).await?;
    for payload in &bad {
        h.publish_raw(&room, payload).await?;
    }
    h.publish_raw(&room, good("last").as_bytes()).await?;
    expect_data(&mut rx, "first").await?;
    expect_data(&mut rx, "last").await?;
    wait_until("every bad payload is counted", DELIVERY_TIMEOUT, || {
        b.adapter_stats().decode_errors_total() == bad.len() as u64
    })
    .await?;
    expect_quiet(&mut rx).await?;
    b.shutdown().await;
    Ok(Outcome::Passed)
}

/// After the medium is lost and restored, every room is subscribed again,
/// `Reconnected` is emitted, and delivery resumes.
pub async fn reconnect_resubscribes_and_emits_reconnected<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().fault_injection {
        return Ok(Outcome::Skipped("needs fault_injection"));
    }
    let (a, b) = (node(&*h).await?, node(&*h).await?);
    let mut rx = member(&b, "survivor").await?;
    let _second = member(&b, "second").await?;
    let mut lifecycle = b.lifecycle();
    h.cut().await?;
    h.restore().await?;
    let Some(rooms) = next_reconnected(&mut lifecycle).await? else {
        return fail(NO_RECONNECTED);
    };
    let rooms: BTreeSet<_> = rooms.iter().map(RoomName::as_str).collect();
    ensure!(
        rooms.contains("survivor") && rooms.contains("second"),
        "Reconnected listed {rooms:?}"
    );
    retry_until("publishing after restore", DELIVERY_TIMEOUT, || {
        a.broadcast("survivor", text("back"), opts())
    })
    .await?;
    expect_data(&mut rx, "back").await?;
    ensure!(
        b.adapter_stats().reconnects >= 1,
        "adapter counted no reconnect"
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// Why a case that cut and restored the medium saw no `Reconnected`.
const NO_RECONNECTED: &str = "no Reconnected event within 15 s of the restore. The adapter must \
    report every outage, even a cut and restore with nothing awaited in between: send MediumLost \
    when the medium goes and Reconnected (send_lifecycle) when it is back. A common cause is a \
    reader task that takes its baseline (a medium receiver, an outage generation) only when it \
    first runs, after the restore: take that state inside connect(), before it returns";

/// The next `Reconnected` on `lifecycle` (other events skipped), within
/// [`DELIVERY_TIMEOUT`]: its rooms.
async fn next_reconnected(
    lifecycle: &mut tokio::sync::broadcast::Receiver<RoomsEvent>,
) -> Result<Option<Vec<RoomName>>, CaseError> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, lifecycle.recv()).await {
            Ok(Ok(RoomsEvent::Reconnected { rooms, .. })) => return Ok(Some(rooms)),
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => return fail(format!("lifecycle events: {error}")),
            Err(_) => return Ok(None),
        }
    }
}

/// Losing the medium is reported once (`MediumLost`) and shown by
/// `medium_status`, and its return by `Reconnected` and the status again.
pub async fn medium_loss_is_reported_and_status_follows<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().fault_injection {
        return Ok(Outcome::Skipped("needs fault_injection"));
    }
    let a = node(&*h).await?;
    let _member = member(&a, "watched").await?;
    ensure!(a.medium_status().is_up(), "down before the cut");
    let mut lifecycle = a.lifecycle();
    h.cut().await?;
    let event = tokio::time::timeout(DELIVERY_TIMEOUT, lifecycle.recv()).await;
    let Ok(Ok(RoomsEvent::MediumLost { .. })) = event else {
        h.restore().await?;
        return fail(format!(
            "no MediumLost within 15 s of the cut (got {event:?}): the adapter must send \
             AdapterEvent::MediumLost (send_lifecycle) once per outage"
        ));
    };
    let down = !a.medium_status().is_up();
    h.restore().await?;
    ensure!(down, "medium_status says up while the medium is lost");
    let Some(rooms) = next_reconnected(&mut lifecycle).await? else {
        return fail(NO_RECONNECTED);
    };
    ensure!(
        rooms.iter().any(|room| room.as_str() == "watched"),
        "Reconnected listed {rooms:?}"
    );
    ensure!(
        a.medium_status().is_up(),
        "medium_status says down after Reconnected"
    );
    shutdown_all(&[&a]).await;
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

/// While the medium is down, publishing fails fast with a retryable error and
/// local delivery still works.
pub async fn publish_fails_fast_while_down<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().fault_injection {
        return Ok(Outcome::Skipped("needs fault_injection"));
    }
    let a = node(&*h).await?;
    let mut local = member(&a, "down").await?;
    h.cut().await?;
    let started = Instant::now();
    let result = a.broadcast("down", text("while down"), opts()).await;
    let took = started.elapsed();
    h.restore().await?;
    match result {
        Err(error) => ensure!(error.is_retryable(), "error is not retryable: {error}"),
        Ok(report) => return fail(format!("publish while down succeeded: {report:?}")),
    }
    ensure!(
        took < Duration::from_secs(5),
        "publish took {took:?} to fail"
    );
    expect_data(&mut local, "while down").await?;
    a.shutdown().await;
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
