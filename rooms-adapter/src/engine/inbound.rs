//! The inbound path: the dispatcher task takes the adapter's events in
//! order and hands each message from another node to the room's local
//! members.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::gap::GapBoard;
use tracing::Instrument as _;

use super::delivery::Outcome;
use super::{DISPATCH_BATCH, Inner, RoomsEvent, bump};
use crate::adapter::{AdapterEvent, EventStream};
use crate::ids::RoomName;
use crate::wire::Envelope;

impl Inner {
    fn handle_remote(
        self: &Arc<Self>,
        room: RoomName,
        envelope: Envelope,
        received_at: Option<Instant>,
    ) {
        if let Some((envelope, received_at)) = self.offer_to_catch_up(&room, envelope, received_at)
        {
            self.deliver_remote(room, envelope, received_at);
        }
    }

    /// Delivers a message from another node (or replayed from history) to
    /// the room's local members, unless it is an echo or a duplicate.
    pub(super) fn deliver_remote(
        self: &Arc<Self>,
        room: RoomName,
        envelope: Envelope,
        received_at: Option<Instant>,
    ) {
        bump(&self.counters.remote_received);
        if envelope.node() == &self.node {
            bump(&self.counters.echoes_dropped);
            return;
        }
        let span = tracing::trace_span!(
            "rooms.deliver",
            room = %room,
            from = %envelope.node(),
            node = %self.node,
            delivered = tracing::field::Empty,
        );
        let _entered = span.enter();
        let mut gone = Vec::new();
        {
            let registry = self.read();
            let Some(recipients) = registry.recipients_of(&room, envelope.except()) else {
                return;
            };
            if !self.first_in_room(&room, envelope.message()) {
                return;
            }
            let delivery = match self.frame(Arc::clone(envelope.shared_message())) {
                Ok(delivery) => delivery,
                Err(error) => {
                    bump(&self.counters.remote_rejected);
                    tracing::debug!(%room, %error, "dropping remote message that cannot be framed");
                    return;
                }
            };
            let (mut delivered, mut queued) = (0u64, 0u64);
            recipients.for_each(|entry| {
                match self.deliver(entry, &delivery, envelope.meta(), &room, &mut gone) {
                    Outcome::Queued => {
                        queued += 1;
                        delivered += 1;
                    }
                    Outcome::Held => delivered += 1,
                    _ => {}
                }
            });
            self.counters
                .deliveries
                .fetch_add(queued, Ordering::Relaxed);
            if delivered > 0
                && let Some(received_at) = received_at
            {
                self.latency.delivery.record_since(received_at);
            }
            span.record("delivered", delivered);
        }
        self.remove_gone(gone);
    }

    /// Reports every recorded drop as one [`RoomsEvent::Gap`] per room.
    pub(super) fn signal_gaps(&self) {
        let gaps = self.gaps.take(|| self.read().all_rooms());
        for gap in gaps {
            bump(&self.counters.gaps_signalled);
            tracing::debug!(room = %gap.room, dropped = gap.dropped, "messages dropped; signalling a gap");
            // No receiver is fine: nobody listens for lifecycle events.
            let _ = self.lifecycle.send(RoomsEvent::Gap {
                room: gap.room,
                scope: gap.scope,
                dropped: gap.dropped,
            });
        }
    }
}

pub(super) async fn dispatch(
    engine: std::sync::Weak<Inner>,
    mut events: EventStream,
    gaps: Arc<GapBoard>,
) {
    loop {
        let event = tokio::select! {
            biased;
            event = events.recv_stamped() => event,
            () = gaps.recorded() => {
                // A drop was recorded (here or on another task); report
                // it once the inbound queue is idle.
                match engine.upgrade() {
                    Some(inner) if events.is_empty() => inner.signal_gaps(),
                    Some(_) => {}
                    None => return,
                }
                continue;
            }
        };
        let Some((event, received_at)) = event else {
            return;
        };
        let Some(inner) = engine.upgrade() else {
            return;
        };
        inner.handle_event(event, received_at);
        // Whatever else is queued already, without a trip through `select!`
        // per event.
        for _ in 1..DISPATCH_BATCH {
            match events.try_recv_stamped() {
                Ok((event, received_at)) => inner.handle_event(event, received_at),
                Err(_) => break,
            }
        }
        // Gaps are reported once the inbound queue has drained.
        if events.is_empty() {
            inner.signal_gaps();
        }
    }
}

impl Inner {
    /// Handles one inbound event, handed over by the adapter at
    /// `received_at`.
    fn handle_event(self: &Arc<Self>, event: AdapterEvent, received_at: Option<Instant>) {
        match event {
            AdapterEvent::Message { room, envelope } => {
                self.handle_remote(room, envelope, received_at);
            }
            AdapterEvent::MediumLost { reason } => {
                tracing::warn!(%reason, "medium lost");
                self.set_medium_down(&reason);
                if self.history.is_some() {
                    self.catch_up.lock().medium_lost();
                }
                let _ = self.lifecycle.send(RoomsEvent::MediumLost { reason });
            }
            AdapterEvent::Reconnected { rooms, outage } => {
                bump(&self.counters.reconnects);
                self.set_medium_up();
                let span = tracing::info_span!(
                    "rooms.reconnect",
                    node = %self.node,
                    medium = self.adapter.name(),
                    rooms = rooms.len(),
                    outage_ms = u64::try_from(outage.as_millis()).unwrap_or(u64::MAX),
                );
                span.in_scope(|| {
                    tracing::info!(rooms = rooms.len(), ?outage, "medium reconnected")
                });
                if self.history.is_some() {
                    // What the rooms missed is replayed from history first;
                    // their live messages wait from now on.
                    let losses = self.hold_for_catch_up(&rooms);
                    let engine = Arc::clone(self);
                    tokio::spawn(
                        async move { engine.recover_after_outage(rooms, outage, losses).await }
                            .instrument(span),
                    );
                } else {
                    // No receiver is fine: nobody listens for lifecycle events.
                    let _ = self.lifecycle.send(RoomsEvent::Reconnected {
                        rooms,
                        outage,
                        recovered: Vec::new(),
                    });
                }
            }
            AdapterEvent::Control { payload } => {
                if let Some(control) = &self.control {
                    control.receive(&payload, &**self);
                }
            }
            AdapterEvent::SubscriptionLost { room, reason } => {
                bump(&self.counters.subscription_errors);
                self.subscribed().remove(&room);
                tracing::warn!(%room, %reason, "medium dropped a room's subscription");
                let _ = self
                    .lifecycle
                    .send(RoomsEvent::SubscriptionLost { room, reason });
            }
        }
    }
}
