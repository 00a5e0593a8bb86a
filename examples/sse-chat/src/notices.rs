//! Tells clients when they may have missed messages: the medium between nodes
//! was lost and restored (`reconnected`), this node dropped messages under
//! pressure (`gap`), or the medium dropped a room for good (`lost`). Logs
//! nodes joining and leaving the cluster.

use rooms_adapter::cluster::NodeDeparture;
use rooms_adapter::{BroadcastOptions, GapScope, Rooms, RoomsEvent, SseMessage};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

/// Relays lifecycle events to the rooms they concern, as `notice` events, on
/// this node only. Runs until the engine stops.
pub async fn relay(rooms: Rooms) {
    let mut events = rooms.lifecycle();
    loop {
        match events.recv().await {
            Ok(RoomsEvent::Reconnected {
                rooms: affected,
                outage,
                recovered,
            }) => {
                let outage_ms = u64::try_from(outage.as_millis()).unwrap_or(u64::MAX);
                let (recovered, unsure): (Vec<_>, Vec<_>) = affected
                    .into_iter()
                    .partition(|room| recovered.contains(room));
                for (targets, text) in [
                    (
                        unsure,
                        "messages sent meanwhile on other servers may be missing.",
                    ),
                    (
                        recovered,
                        "what was sent meanwhile on other servers was replayed from history.",
                    ),
                ] {
                    if targets.is_empty() {
                        continue;
                    }
                    let notice = SseMessage::new(json!({
                        "kind": "reconnected",
                        "text": format!(
                            "The link to the other servers was down for {:.1} s; {text}",
                            outage.as_secs_f64()
                        ),
                        "outageMs": outage_ms,
                    }))
                    .with_event("notice");
                    if let Err(error) = rooms
                        .broadcast_to(targets, notice, BroadcastOptions::new().local_only())
                        .await
                    {
                        tracing::debug!(%error, "cannot relay a reconnect notice");
                    }
                }
            }
            Ok(RoomsEvent::Gap {
                room,
                scope,
                dropped,
            }) => {
                let notice = SseMessage::new(json!({
                    "kind": "gap",
                    "text": "This server could not keep up and dropped messages for you; reload to catch up.",
                    "room": room.as_str(),
                    "dropped": dropped,
                }))
                .with_event("notice");
                let sent = match scope {
                    GapScope::Connections(connections) => connections
                        .iter()
                        .filter(|id| rooms.is_connected(id))
                        .try_for_each(|id| rooms.send_to(id, notice.clone()).map(drop)),
                    _ => rooms.to(room).local().send(notice).await.map(drop),
                };
                if let Err(error) = sent {
                    tracing::debug!(%error, "cannot relay a gap notice");
                }
            }
            Ok(RoomsEvent::SubscriptionLost { room, reason }) => {
                tracing::warn!(%room, %reason, "the medium dropped a room");
                let notice = SseMessage::new(json!({
                    "kind": "lost",
                    "text": "This server lost the room's link to the other servers; reconnect to restore it.",
                    "room": room.as_str(),
                }))
                .with_event("notice");
                if let Err(error) = rooms.to(room).local().send(notice).await {
                    tracing::debug!(%error, "cannot relay a lost-room notice");
                }
            }
            Ok(RoomsEvent::NodeJoined { node }) => {
                tracing::info!(%node, live = live_nodes(&rooms), "cluster: node joined");
            }
            Ok(RoomsEvent::NodeLeft { node, departure }) => {
                let how = match departure {
                    NodeDeparture::Left => "left",
                    NodeDeparture::Expired => "expired (no heartbeat in time)",
                    _ => "gone",
                };
                tracing::info!(%node, how, live = live_nodes(&rooms), "cluster: node left");
            }
            Ok(other) => tracing::debug!(?other, "lifecycle event"),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed lifecycle events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Live nodes as this node sees them (0 if it cannot tell), for logs.
fn live_nodes(rooms: &Rooms) -> usize {
    rooms.nodes().map_or(0, |nodes| nodes.len())
}
