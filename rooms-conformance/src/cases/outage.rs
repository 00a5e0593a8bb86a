//! Medium outages (the `fault_injection` capability): loss reported and
//! recovered, rooms subscribed again, publishing failing fast meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rooms_adapter::{RoomName, RoomsEvent};

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

use super::opts;

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
