//! Cases for the control capability: node liveness and cross-node queries
//! ([`rooms_adapter::cluster`]). Each is skipped when the adapter does not
//! declare [`AdapterCapabilities::control`](rooms_adapter::AdapterCapabilities::control).

use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::adapter::{ControlTarget, EventSink};
use rooms_adapter::cluster::NodeDeparture;
use rooms_adapter::cluster::frame::{ControlFrame, Heartbeat};
use rooms_adapter::{NodeId, RoomName, Rooms, RoomsBuilder, RoomsEvent};
use tokio::sync::broadcast;

use crate::ensure;
use crate::harness::Harness;
use crate::support::*;

/// Heartbeats fast enough for a case to see joins and expiries quickly.
const HEARTBEAT: Duration = Duration::from_millis(100);
const EXPIRY: Duration = Duration::from_millis(600);
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

fn fast(builder: RoomsBuilder) -> RoomsBuilder {
    builder
        .heartbeat_interval(HEARTBEAT)
        .node_expiry(EXPIRY)
        .query_timeout(QUERY_TIMEOUT)
}

/// A node with fast heartbeats, or `None` (skip) without the capability.
async fn cluster_node<H: Harness>(h: &H) -> Result<Option<Rooms>, CaseError> {
    let adapter = h.new_adapter().await?;
    if !adapter.capabilities().control {
        return Ok(None);
    }
    Ok(Some(fast(Rooms::builder(adapter)).build().await?))
}

const SKIP: Outcome = Outcome::Skipped("the adapter declares no control capability");

/// Waits until each node lists exactly `expected` live nodes.
async fn wait_for_nodes(nodes: &[&Rooms], expected: usize) -> Result<(), CaseError> {
    for rooms in nodes {
        wait_until(
            &format!("{} lists {expected} live nodes", rooms.node_id()),
            DELIVERY_TIMEOUT,
            || rooms.nodes().is_ok_and(|list| list.len() == expected),
        )
        .await?;
    }
    Ok(())
}

/// The next `NodeJoined`/`NodeLeft` for `node` (other events skipped).
async fn next_node_event(
    lifecycle: &mut broadcast::Receiver<RoomsEvent>,
    node: &NodeId,
) -> Result<RoomsEvent, CaseError> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, lifecycle.recv()).await {
            Ok(Ok(event)) => {
                let about = match &event {
                    RoomsEvent::NodeJoined { node: n } | RoomsEvent::NodeLeft { node: n, .. } => {
                        n == node
                    }
                    _ => false,
                };
                if about {
                    return Ok(event);
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                return fail(format!("no join or leave event for node {node}"));
            }
        }
    }
}

/// Nodes find each other by heartbeats (`nodes()`, `NodeJoined`), carry their
/// counts, and a node that shuts down is gone at once (`NodeLeft { Left }`).
pub async fn nodes_see_each_other_and_leave<H: Harness>(h: Arc<H>) -> CaseResult {
    let Some(a) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    let mut lifecycle = a.lifecycle();
    let Some(b) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    let Some(c) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    wait_for_nodes(&[&a, &b, &c], 3).await?;
    let joined = next_node_event(&mut lifecycle, b.node_id()).await?;
    ensure!(
        matches!(joined, RoomsEvent::NodeJoined { .. }),
        "first event for b was {joined:?}"
    );
    let listed = a.nodes()?;
    ensure!(
        listed[0].is_self && listed[0].id == *a.node_id(),
        "a does not list itself first: {listed:?}"
    );
    let _members = (member(&b, "x").await?, member(&b, "y").await?);
    wait_until("a hears b's connections", DELIVERY_TIMEOUT, || {
        a.nodes().is_ok_and(|list| {
            list.iter()
                .any(|n| n.id == *b.node_id() && n.connections == 2 && n.rooms == 2)
        })
    })
    .await?;

    let gone = c.node_id().clone();
    c.shutdown().await;
    let left = next_node_event(&mut lifecycle, &gone).await?;
    ensure!(
        matches!(
            left,
            RoomsEvent::NodeJoined { .. }
                | RoomsEvent::NodeLeft {
                    departure: NodeDeparture::Left,
                    ..
                }
        ),
        "c's shutdown gave {left:?}"
    );
    wait_for_nodes(&[&a, &b], 2).await?;
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// `cluster_member_count` and `cluster_rooms` sum every node's local members
/// and say every node answered.
pub async fn cluster_queries_sum_every_node<H: Harness>(h: Arc<H>) -> CaseResult {
    let Some(a) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    let Some(b) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    wait_for_nodes(&[&a, &b], 2).await?;
    let odd = "odd \u{2605} room.*>";
    let mut members = Vec::new();
    for _ in 0..2 {
        members.push(member(&a, "r").await?);
    }
    for _ in 0..3 {
        members.push(member(&b, "r").await?);
    }
    members.push(member(&b, odd).await?);
    members.push(member(&a, "").await?);

    for (asker, name) in [(&a, "a"), (&b, "b")] {
        let count = asker.cluster_member_count("r").await?;
        ensure!(
            count.value == 5 && count.answered == 2 && count.known == 2 && count.is_complete(),
            "{name}: members of r across the cluster: {count:?}"
        );
        let odd_count = asker.cluster_member_count(odd).await?;
        ensure!(
            odd_count.value == 1,
            "{name}: members of {odd:?}: {odd_count:?}"
        );
        let none = asker.cluster_member_count("nobody-here").await?;
        ensure!(
            none.value == 0 && none.is_complete(),
            "{name}: an empty room: {none:?}"
        );
        let rooms = asker.cluster_rooms().await?;
        let expected = [("", 1), ("r", 5), (odd, 1)]
            .into_iter()
            .map(|(room, count)| (RoomName::from(room), count))
            .collect();
        ensure!(
            rooms.value == expected && rooms.is_complete(),
            "{name}: rooms across the cluster: {rooms:?}"
        );
    }
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}

/// A node that heartbeats but never answers (cut off, hung) makes answers
/// incomplete within the query timeout, naming it, and expires after its
/// heartbeats stop; malformed control frames are skipped and counted.
pub async fn silent_node_makes_answers_incomplete_then_expires<H: Harness>(
    h: Arc<H>,
) -> CaseResult {
    let Some(a) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    let mut lifecycle = a.lifecycle();
    let _member = member(&a, "r").await?;
    let silent = h.new_adapter().await?;
    let silent_id = NodeId::from("silent-node");
    let (sink, _events) = EventSink::bounded(1_024);
    silent.connect(silent_id.clone(), sink).await?;
    let beat = ControlFrame::Heartbeat(Heartbeat {
        node: silent_id.as_str().to_owned(),
        interval_ms: 100,
        expiry_ms: 1_000,
        connections: 7,
        rooms: 1,
    })
    .encode();
    silent.publish_control(&ControlTarget::All, &beat).await?;
    let joined = next_node_event(&mut lifecycle, &silent_id).await?;
    ensure!(
        matches!(joined, RoomsEvent::NodeJoined { .. }),
        "the silent node's heartbeat gave {joined:?}"
    );

    let answer = a.cluster_member_count("r").await?;
    ensure!(
        answer.value == 1
            && answer.answered == 1
            && answer.known == 2
            && answer.missing == vec![silent_id.clone()]
            && !answer.is_complete(),
        "with a silent node: {answer:?}"
    );
    ensure!(
        answer.elapsed >= QUERY_TIMEOUT && answer.elapsed < QUERY_TIMEOUT + Duration::from_secs(5),
        "the incomplete answer took {:?} (timeout {QUERY_TIMEOUT:?})",
        answer.elapsed
    );

    let rejected = a.stats().control_rejected;
    for junk in [
        &b"not json"[..],
        br#"{"v":1,"type":"heartbeat"}"#,
        br#"{"v":99}"#,
    ] {
        silent.publish_control(&ControlTarget::All, junk).await?;
    }
    wait_until("junk control frames are counted", DELIVERY_TIMEOUT, || {
        a.stats().control_rejected >= rejected + 3
    })
    .await?;

    let left = next_node_event(&mut lifecycle, &silent_id).await?;
    ensure!(
        matches!(
            left,
            RoomsEvent::NodeLeft {
                departure: NodeDeparture::Expired,
                ..
            }
        ),
        "the silent node ended with {left:?}"
    );
    let after = a.cluster_member_count("r").await?;
    ensure!(
        after.is_complete() && after.known == 1,
        "after the silent node expired: {after:?}"
    );
    silent.disconnect().await?;
    a.shutdown().await;
    Ok(Outcome::Passed)
}

/// While the medium is cut, a query returns incomplete within the timeout
/// (never hangs), peers expire, and they find each other again once it is
/// back.
pub async fn cut_off_nodes_expire_and_return<H: Harness>(h: Arc<H>) -> CaseResult {
    if !h.capabilities().fault_injection {
        return Ok(Outcome::Skipped("needs fault_injection"));
    }
    let Some(a) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    let Some(b) = cluster_node(&*h).await? else {
        return Ok(SKIP);
    };
    wait_for_nodes(&[&a, &b], 2).await?;
    let _members = (member(&a, "r").await?, member(&b, "r").await?);
    h.cut().await?;
    let during = a.cluster_member_count("r").await;
    let expired = wait_for_nodes(&[&a], 1).await;
    h.restore().await?;
    let during = during?;
    ensure!(
        during.value == 1 && !during.is_complete() && during.missing == vec![b.node_id().clone()],
        "a query while cut off: {during:?}"
    );
    ensure!(
        during.elapsed < QUERY_TIMEOUT + Duration::from_secs(5),
        "a query while cut off took {:?}",
        during.elapsed
    );
    expired?;
    wait_for_nodes(&[&a, &b], 2).await?;
    let count = retry_until(
        "a complete answer after the restore",
        DELIVERY_TIMEOUT,
        || {
            let a = a.clone();
            async move {
                let count = a.cluster_member_count("r").await?;
                if count.is_complete() && count.value == 2 {
                    Ok(count)
                } else {
                    Err(rooms_adapter::Error::Config(format!("{count:?}")))
                }
            }
        },
    )
    .await?;
    ensure!(count.answered == 2, "after the restore: {count:?}");
    shutdown_all(&[&a, &b]).await;
    Ok(Outcome::Passed)
}
