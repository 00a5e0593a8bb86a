//! Cases for the history capability ([`rooms_adapter::history`]): replay
//! after a `Last-Event-ID`, exact order, no gap or duplicate at the switch to
//! live messages, and the explicit gap event when history cannot cover the
//! id. Each is skipped when the adapter does not declare
//! [`AdapterCapabilities::history`](rooms_adapter::AdapterCapabilities::history).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rooms_adapter::history::{GapReason, HistoryPolicy, Position};
use rooms_adapter::{BroadcastOptions, ConnectOptions, Resume, Rooms, SseMessage};
use serde_json::Value;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

const SKIP: Outcome = Outcome::Skipped("the adapter declares no history capability");

/// A node keeping `max_len` messages per room, or `None` (skip).
async fn history_node<H: Harness>(h: &H, max_len: usize) -> Result<Option<Rooms>, CaseError> {
    let adapter = h.new_adapter().await?;
    if !adapter.capabilities().history {
        return Ok(None);
    }
    let policy = HistoryPolicy::new(max_len, Duration::from_secs(300))?;
    Ok(Some(Rooms::builder(adapter).history(policy).build().await?))
}

/// Broadcasts `data` into `room`, returning the id it got.
async fn publish(rooms: &Rooms, room: &str, message: SseMessage) -> Result<String, CaseError> {
    let report = rooms
        .broadcast(room, message, BroadcastOptions::new())
        .await?;
    match report.id {
        Some(id) => Ok(id),
        None => fail("a broadcast with history got no id"),
    }
}

fn number(data: &rooms_adapter::Data) -> Option<u64> {
    serde_json::from_str::<Value>(data.as_json()).ok()?.as_u64()
}

/// A client that saw message 2 of 5 gets 3, 4 and 5, in order, with position
/// ids, then live messages; one that saw the latest gets only live ones.
pub async fn history_replays_after_a_position<H: Harness>(h: Arc<H>) -> CaseResult {
    let Some(a) = history_node(&*h, 100).await? else {
        return Ok(SKIP);
    };
    let Some(b) = history_node(&*h, 100).await? else {
        return Ok(SKIP);
    };
    let mut ids = Vec::new();
    for n in 1..=5u64 {
        ids.push(publish(&a, "story", SseMessage::new(n)).await?);
    }
    let positions: Vec<Option<Position>> = ids.iter().map(|id| Position::parse(id)).collect();
    ensure!(
        positions
            .windows(2)
            .all(|pair| matches!(pair, [Some(x), Some(y)] if x.epoch() == y.epoch() && x.offset() < y.offset())),
        "ids are not increasing positions of one epoch: {ids:?}"
    );

    let mut client = b
        .connect(ConnectOptions::new().queue_capacity(1_024))
        .await?;
    let resume = b.join_from(client.id(), "story", Some(&ids[1])).await?;
    ensure!(
        resume == Resume::Replayed { messages: 3 },
        "resume after message 2: {resume:?}"
    );
    for expected in 3..=5u64 {
        let delivery = next(&mut client, "a replayed message").await?;
        ensure!(
            number(&delivery.message().data) == Some(expected)
                && delivery.message().id.as_deref() == Some(ids[expected as usize - 1].as_str()),
            "expected message {expected}, got {:?}",
            delivery.message()
        );
    }
    publish(&a, "story", SseMessage::new(6)).await?;
    let live = next(&mut client, "the live message").await?;
    ensure!(
        number(&live.message().data) == Some(6),
        "the live message after the replay: {:?}",
        live.message()
    );

    let mut current = b.connect(ConnectOptions::new()).await?;
    let latest = publish(&a, "story", SseMessage::new(7)).await?;
    let resume = b.join_from(current.id(), "story", Some(&latest)).await?;
    ensure!(
        resume == Resume::Replayed { messages: 0 },
        "resume from the latest id: {resume:?}"
    );
    publish(&a, "story", SseMessage::new(8)).await?;
    let live = next(&mut current, "the live message").await?;
    ensure!(
        number(&live.message().data) == Some(8),
        "after resuming from the latest id: {:?}",
        live.message()
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// While another node publishes without pause, a client resuming from an
/// early message gets every later message exactly once, in order: nothing is
/// lost or repeated where the replay meets the live stream.
pub async fn history_switch_has_no_gap_or_duplicate<H: Harness>(h: Arc<H>) -> CaseResult {
    const TOTAL: u64 = 400;
    let Some(a) = history_node(&*h, 1_000).await? else {
        return Ok(SKIP);
    };
    let Some(b) = history_node(&*h, 1_000).await? else {
        return Ok(SKIP);
    };
    // Keep the room subscribed on b, as a busy node would.
    let _watcher = member(&b, "busy").await?;
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = tokio::spawn({
        let (a, ids) = (a.clone(), Arc::clone(&ids));
        async move {
            for n in 0..TOTAL {
                let id = publish(&a, "busy", SseMessage::new(n)).await?;
                ids.lock().unwrap_or_else(PoisonError::into_inner).push(id);
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), CaseError>(())
        }
    });
    wait_until("50 messages published", DELIVERY_TIMEOUT, || {
        ids.lock().unwrap_or_else(PoisonError::into_inner).len() >= 50
    })
    .await?;
    let since = ids.lock().unwrap_or_else(PoisonError::into_inner)[9].clone();
    let mut client = b
        .connect(ConnectOptions::new().queue_capacity(4_096))
        .await?;
    let resume = b.join_from(client.id(), "busy", Some(&since)).await?;
    ensure!(
        matches!(resume, Resume::Replayed { .. }),
        "resume under load: {resume:?}"
    );
    match publisher.await {
        Ok(result) => result?,
        Err(error) => return fail(format!("the publisher failed: {error}")),
    }
    for expected in 10..TOTAL {
        let delivery = next(&mut client, "the next message").await?;
        let got = number(&delivery.message().data);
        ensure!(
            got == Some(expected),
            "expected {expected} after resuming from 9, got {got:?} ({resume:?})"
        );
    }
    expect_quiet(&mut client).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// When history cannot cover the id (trimmed, unknown), the client gets one
/// `event: gap` naming why, then live messages; a message with an
/// application id is found by it.
pub async fn history_gap_when_it_cannot_cover<H: Harness>(h: Arc<H>) -> CaseResult {
    let Some(a) = history_node(&*h, 3).await? else {
        return Ok(SKIP);
    };
    let Some(b) = history_node(&*h, 3).await? else {
        return Ok(SKIP);
    };
    let mut ids = Vec::new();
    for n in 1..=6u64 {
        ids.push(publish(&a, "short", SseMessage::new(n)).await?);
    }
    for (last, reason) in [
        (ids[0].as_str(), GapReason::Trimmed),
        ("no-such-id", GapReason::UnknownId),
    ] {
        let mut client = b.connect(ConnectOptions::new()).await?;
        let resume = b.join_from(client.id(), "short", Some(last)).await?;
        ensure!(
            resume == Resume::Gap { reason },
            "resume from {last:?}: {resume:?}"
        );
        let gap = next(&mut client, "the gap event").await?;
        ensure!(
            gap.message().event.as_deref() == Some("gap")
                && gap.message().data.as_json().contains(reason.name()),
            "first delivery after resuming from {last:?}: {:?}",
            gap.message()
        );
        let live = publish(&a, "short", SseMessage::new(100)).await?;
        let delivery = next(&mut client, "the live message").await?;
        ensure!(
            delivery.message().id.as_deref() == Some(live.as_str()),
            "the live message after the gap: {:?}",
            delivery.message()
        );
    }

    let app = publish(&a, "short", SseMessage::new(200).with_id("app-200")).await?;
    ensure!(app == "app-200", "an application id was replaced: {app}");
    publish(&a, "short", SseMessage::new(201)).await?;
    let mut client = b.connect(ConnectOptions::new()).await?;
    let resume = b.join_from(client.id(), "short", Some("app-200")).await?;
    ensure!(
        resume == Resume::Replayed { messages: 1 },
        "resume from an application id: {resume:?}"
    );
    let delivery = next(&mut client, "the message after the application id").await?;
    ensure!(
        number(&delivery.message().data) == Some(201),
        "after the application id: {:?}",
        delivery.message()
    );
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}
