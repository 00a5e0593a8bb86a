//! Cases for the history capability ([`rooms_adapter::history`]): replay
//! after a `Last-Event-ID`, exact order, no gap or duplicate at the switch to
//! live messages, the explicit gap event when history cannot cover the id,
//! and a node catching up after it lost the medium while others published.
//! Each is skipped when the adapter does not declare
//! [`AdapterCapabilities::history`](rooms_adapter::AdapterCapabilities::history).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rooms_adapter::history::{GapReason, HistoryPolicy, Position, READ_PAGE};
use rooms_adapter::{
    BroadcastOptions, ConnectOptions, Resume, RoomAdapter, RoomName, Rooms, RoomsEvent, SseMessage,
};
use serde_json::Value;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

const SKIP: Outcome = Outcome::Skipped("the adapter declares no history capability");

/// A node keeping `max_len` messages per room, or `None` (skip).
async fn history_node<H: Harness>(h: &H, max_len: usize) -> Result<Option<Rooms>, CaseError> {
    Ok(history_node_and_adapter(h, max_len)
        .await?
        .map(|(rooms, _)| rooms))
}

/// Like [`history_node`], with the node's adapter (to cut it off).
async fn history_node_and_adapter<H: Harness>(
    h: &H,
    max_len: usize,
) -> Result<Option<(Rooms, Arc<dyn RoomAdapter>)>, CaseError> {
    let adapter = h.new_adapter().await?;
    if !adapter.capabilities().history {
        return Ok(None);
    }
    let policy = HistoryPolicy::new(max_len, Duration::from_secs(300))?;
    let rooms = Rooms::builder(Arc::clone(&adapter))
        .history(policy)
        .build()
        .await?;
    Ok(Some((rooms, adapter)))
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

/// The next deliveries carry the numbers `expected`, in order.
async fn expect_numbers(
    receiver: &mut rooms_adapter::ConnectionReceiver,
    expected: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<(), CaseError> {
    for n in expected {
        let delivery = next(receiver, what).await?;
        let got = number(&delivery.message().data);
        ensure!(got == Some(n), "{what}: expected {n}, got {got:?}");
    }
    Ok(())
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

/// The next lifecycle event that matches `wanted`, within [`DELIVERY_TIMEOUT`].
async fn lifecycle_event(
    events: &mut tokio::sync::broadcast::Receiver<RoomsEvent>,
    what: &str,
    wanted: impl Fn(&RoomsEvent) -> bool,
) -> Result<RoomsEvent, CaseError> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return Ok(event),
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(error)) => {
                return fail(format!(
                    "lifecycle events ended waiting for {what}: {error}"
                ));
            }
            Err(_) => return fail(format!("no {what} within {DELIVERY_TIMEOUT:?}")),
        }
    }
}

/// One node is cut off the medium (the others keep it) while another node
/// publishes: the messages reach the history only. When the node gets the
/// medium back it fetches them from history before it announces
/// `Reconnected` (which lists the room as recovered): its member already
/// holds every missed message, in order, once. Messages published while it
/// reconnects follow, in order and once; a member of a quiet room gets
/// nothing.
pub async fn history_recovers_after_a_node_outage<H: Harness>(h: Arc<H>) -> CaseResult {
    /// Published while the node is cut off: more than one page of a history
    /// read ([`READ_PAGE`]), so recovery must read page by page.
    const MISSED: u64 = READ_PAGE as u64 + 30;
    /// Published while it reconnects and recovers.
    const DURING: u64 = 200;
    if !h.capabilities().node_fault_injection {
        return Ok(Outcome::Skipped("needs node_fault_injection"));
    }
    let Some(a) = history_node(&*h, 10_000).await? else {
        return Ok(SKIP);
    };
    let Some((b, b_adapter)) = history_node_and_adapter(&*h, 10_000).await? else {
        return Ok(SKIP);
    };
    let mut events = b.lifecycle();
    let mut client = member(&b, "outage").await?;
    let mut quiet = member(&b, "quiet").await?;
    publish(&a, "outage", SseMessage::new(0)).await?;
    let first = next(&mut client, "the message before the outage").await?;
    ensure!(
        number(&first.message().data) == Some(0),
        "before the outage: {:?}",
        first.message()
    );

    h.cut_node(&b_adapter).await?;
    lifecycle_event(&mut events, "MediumLost after cut_node", |event| {
        matches!(event, RoomsEvent::MediumLost { .. })
    })
    .await?;
    for n in 1..=MISSED {
        publish(&a, "outage", SseMessage::new(n)).await?;
    }
    if let Some(delivery) = client.try_recv() {
        return fail(format!(
            "the cut-off node delivered {:?}: cut_node did not cut it off",
            delivery.message()
        ));
    }

    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            for n in MISSED + 1..=MISSED + DURING {
                publish(&a, "outage", SseMessage::new(n)).await?;
                if n % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Ok::<(), CaseError>(())
        }
    });
    h.restore_node(&b_adapter).await?;
    let reconnected = lifecycle_event(&mut events, "Reconnected listing the room", |event| {
        matches!(event, RoomsEvent::Reconnected { rooms, .. } if rooms.iter().any(|r| r == "outage"))
    })
    .await?;
    if let RoomsEvent::Reconnected { recovered, .. } = &reconnected {
        ensure!(
            recovered.iter().any(|room| room == "outage"),
            "the room is not listed as recovered: {reconnected:?}"
        );
    }
    // Fetched before `Reconnected` was announced: queued already.
    for expected in 1..=MISSED {
        let Some(delivery) = client.try_recv() else {
            return fail(format!(
                "message {expected} (missed during the outage) was not queued when \
                 Reconnected was announced"
            ));
        };
        let got = number(&delivery.message().data);
        ensure!(
            got == Some(expected),
            "after the outage expected {expected}, got {got:?}"
        );
    }
    match publisher.await {
        Ok(result) => result?,
        Err(error) => return fail(format!("the publisher failed: {error}")),
    }
    expect_numbers(
        &mut client,
        MISSED + 1..=MISSED + DURING,
        "a message published while reconnecting",
    )
    .await?;
    expect_quiet(&mut client).await?;
    expect_quiet(&mut quiet).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A history longer than one page: the adapter reads it in bounded pages,
/// each saying where the next starts, that together hold every message once
/// and in order; a resume from the first message replays all of them, in
/// order, page after page; a resume into a small queue replays what fits.
pub async fn history_reads_page_by_page<H: Harness>(h: Arc<H>) -> CaseResult {
    const TOTAL: u64 = 2 * READ_PAGE as u64 + 10;
    const LIMIT: usize = 100;
    let Some(a) = history_node(&*h, 10_000).await? else {
        return Ok(SKIP);
    };
    let Some((b, reader)) = history_node_and_adapter(&*h, 10_000).await? else {
        return Ok(SKIP);
    };
    let mut ids = Vec::new();
    for n in 1..=TOTAL {
        ids.push(publish(&a, "long", SseMessage::new(n)).await?);
    }

    let room = RoomName::from("long");
    let probe = reader.read_history(&room, None, 0).await?;
    ensure!(
        probe.entries.is_empty()
            && (probe.first, probe.latest) == (1, TOTAL)
            && probe.next_after.is_some(),
        "a read of 0 entries: first {}, latest {}, {} entries, next after {:?}",
        probe.first,
        probe.latest,
        probe.entries.len(),
        probe.next_after
    );
    let mut after = None;
    let mut offsets = Vec::new();
    let mut pages = 0u64;
    loop {
        let page = reader.read_history(&room, after, LIMIT).await?;
        pages += 1;
        ensure!(
            page.entries.len() <= LIMIT,
            "a read of at most {LIMIT} entries returned {}",
            page.entries.len()
        );
        for stored in &page.entries {
            ensure!(
                number(&stored.envelope.message().data) == Some(stored.offset),
                "entry {} holds {:?}",
                stored.offset,
                stored.envelope.message()
            );
            offsets.push(stored.offset);
        }
        match page.next_after {
            Some(next) if pages <= TOTAL => {
                ensure!(
                    page.entries.last().map(|entry| entry.offset) == Some(next),
                    "the next page starts after {next}, the page ended at {:?}",
                    page.entries.last().map(|entry| entry.offset)
                );
                after = Some(next);
            }
            Some(_) => return fail("read_history never reached the last page"),
            None => break,
        }
    }
    ensure!(
        offsets == (1..=TOTAL).collect::<Vec<_>>() && pages == TOTAL.div_ceil(LIMIT as u64),
        "{pages} pages of at most {LIMIT} held offsets {:?}..{:?} ({} entries), expected 1..={TOTAL}",
        offsets.first(),
        offsets.last(),
        offsets.len()
    );

    let mut client = b
        .connect(ConnectOptions::new().queue_capacity(4_096))
        .await?;
    let resume = b.join_from(client.id(), "long", Some(&ids[0])).await?;
    ensure!(
        resume
            == Resume::Replayed {
                messages: TOTAL as usize - 1
            },
        "resume after the first of {TOTAL} messages: {resume:?}"
    );
    expect_numbers(&mut client, 2..=TOTAL, "a replayed message").await?;

    let mut small = b
        .connect(ConnectOptions::new().queue_capacity(LIMIT))
        .await?;
    let resume = b.join_from(small.id(), "long", Some(&ids[0])).await?;
    ensure!(
        resume == Resume::Replayed { messages: LIMIT },
        "resume into a queue of {LIMIT}: {resume:?}"
    );
    expect_numbers(
        &mut small,
        2..=LIMIT as u64 + 1,
        "a message replayed into a small queue",
    )
    .await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}
