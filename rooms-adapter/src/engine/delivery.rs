//! Local delivery: one framed message offered to each local member of its
//! rooms, under the registry's read lock, with the slow-consumer policy
//! applied to full queues.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use serde_json::Value;

use super::{Inner, bump};
use crate::broadcast::{BroadcastOptions, BroadcastReport};
use crate::connection::{ConnectionEntry, Delivery, Push, SlowConsumerPolicy};
use crate::error::Error;
use crate::ids::{ConnectionId, RoomName};
use crate::message::SseMessage;
use crate::sse;

pub(super) enum Outcome {
    /// Queued for the connection.
    Queued,
    /// Held until the room's replay is queued (`Rooms::join_from`).
    Held,
    Filtered,
    Duplicate,
    Dropped,
}

impl Inner {
    /// Offers one delivery to one connection. Connections to remove (closed,
    /// or lagging under [`SlowConsumerPolicy::Disconnect`]) are collected in
    /// `gone`, to be removed once the registry lock is released.
    /// The caller counts [`Outcome::Queued`] into `counters.deliveries`,
    /// once per message.
    pub(super) fn deliver(
        &self,
        entry: &ConnectionEntry,
        delivery: &Arc<Delivery>,
        metadata: Option<&Value>,
        room: &RoomName,
        gone: &mut Vec<ConnectionId>,
    ) -> Outcome {
        if let Some(filter) = &self.filter
            && !filter(&entry.info(), delivery.message(), metadata)
        {
            bump(&self.counters.filtered);
            return Outcome::Filtered;
        }
        if entry.hold(room, delivery) {
            // Queued after the room's replay (`Rooms::join_from`).
            return Outcome::Held;
        }
        match entry.push(delivery) {
            Push::Queued => Outcome::Queued,
            Push::Duplicate => {
                bump(&self.counters.duplicates);
                Outcome::Duplicate
            }
            Push::Full => {
                self.queue_full(entry, Some(room), gone);
                Outcome::Dropped
            }
            Push::Closed => {
                gone.push(entry.id.clone());
                Outcome::Dropped
            }
        }
    }

    /// Delivers a broadcast to the local members of `rooms` (once per
    /// connection), adding to `report`.
    pub(super) fn deliver_locally(
        self: &Arc<Self>,
        rooms: &[RoomName],
        message: &Arc<SseMessage>,
        options: &BroadcastOptions,
        report: &mut BroadcastReport,
    ) -> Result<(), Error> {
        let mut gone = Vec::new();
        {
            let registry = self.read();
            let except = options.except.as_ref();
            // Rooms with local members where this message id is new.
            let mut local: Vec<RoomName> = Vec::new();
            for room in rooms {
                if registry.recipients_of(room, except).is_some()
                    && self.first_in_room(room, message)
                {
                    local.push(room.clone());
                }
            }
            if !local.is_empty() {
                let delivery = self.frame(Arc::clone(message))?;
                let mut queued = 0u64;
                let metadata = options.metadata.as_ref();
                registry.for_each_recipient(&local, except, |entry, room| {
                    match self.deliver(entry, &delivery, metadata, room, &mut gone) {
                        Outcome::Queued => {
                            queued += 1;
                            report.delivered += 1;
                        }
                        Outcome::Held => report.delivered += 1,
                        Outcome::Filtered => report.filtered += 1,
                        Outcome::Dropped => report.dropped += 1,
                        Outcome::Duplicate => {}
                    }
                });
                self.counters
                    .deliveries
                    .fetch_add(queued, Ordering::Relaxed);
            }
        }
        self.remove_gone(gone);
        Ok(())
    }

    /// A replay that did not fit the connection's queue: the slow-consumer
    /// policy applies, as for any full queue.
    pub(crate) fn lagging_after_replay(self: &Arc<Self>, entry: &ConnectionEntry, room: &RoomName) {
        let mut gone = Vec::new();
        self.queue_full(entry, Some(room), &mut gone);
        self.remove_gone(gone);
    }

    /// A full queue: the slow-consumer policy applies. Under
    /// [`SlowConsumerPolicy::DropNewest`] the delivery is dropped; under
    /// [`SlowConsumerPolicy::Disconnect`] the connection is closed and
    /// collected in `gone` (once: a connection already closed is already
    /// on its way out). A delivery for `room` is recorded as that
    /// connection's gap in the room.
    pub(super) fn queue_full(
        &self,
        entry: &ConnectionEntry,
        room: Option<&RoomName>,
        gone: &mut Vec<ConnectionId>,
    ) {
        let record_gap = || {
            if let Some(room) = room {
                self.gaps
                    .record(|gaps| gaps.connection_dropped(room, &entry.id));
            }
        };
        match self.policy {
            SlowConsumerPolicy::DropNewest => {
                bump(&self.counters.lagging_drops);
                record_gap();
            }
            SlowConsumerPolicy::Disconnect => {
                if entry.close() {
                    bump(&self.counters.lagging_disconnects);
                    tracing::debug!(connection = %entry.id, "disconnecting lagging connection");
                    record_gap();
                    gone.push(entry.id.clone());
                }
            }
        }
    }

    pub(super) fn remove_gone(self: &Arc<Self>, gone: Vec<ConnectionId>) {
        for id in gone {
            self.connection_gone(&id);
        }
    }

    pub(super) fn frame(&self, message: Arc<SseMessage>) -> Result<Arc<Delivery>, Error> {
        let frame = sse::frame(&message)?;
        bump(&self.counters.frames_encoded);
        let fingerprint = message.id.as_deref().map(|id| self.fingerprints.id(id));
        Ok(Arc::new(Delivery::new(message, frame, fingerprint)))
    }

    /// Whether this message id is new in this room (always, without an id).
    pub(super) fn first_in_room(&self, room: &RoomName, message: &SseMessage) -> bool {
        let Some(id) = message.id.as_deref() else {
            return true;
        };
        let fingerprint = self.fingerprints.room_id(room.as_str(), id);
        let first = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first_time(fingerprint);
        if !first {
            bump(&self.counters.duplicates);
        }
        first
    }
}
