//! Tells clients when the medium between nodes was lost and restored: they
//! may have missed messages from other nodes.

use rooms_adapter::{BroadcastOptions, Rooms, RoomsEvent, SseMessage};
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
            }) => {
                let outage_ms = u64::try_from(outage.as_millis()).unwrap_or(u64::MAX);
                let notice = SseMessage::new(json!({
                    "kind": "reconnected",
                    "text": format!(
                        "The link to the other servers was down for {:.1} s; messages sent meanwhile on other servers may be missing.",
                        outage.as_secs_f64()
                    ),
                    "outageMs": outage_ms,
                }))
                .with_event("notice");
                if let Err(error) = rooms
                    .broadcast_to(affected, notice, BroadcastOptions::new().local_only())
                    .await
                {
                    tracing::debug!(%error, "cannot relay a reconnect notice");
                }
            }
            Ok(other) => tracing::debug!(?other, "lifecycle event"),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed lifecycle events");
            }
            Err(RecvError::Closed) => return,
        }
    }
}
