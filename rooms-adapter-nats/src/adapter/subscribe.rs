//! Room subscriptions: one NATS subscription per room with local members,
//! the unsubscribe delay, and the tasks that deliver into the engine's sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use async_nats::Subscriber;
use async_nats::connection::State;
use futures_util::StreamExt;
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, SinkOutcome};
use rooms_adapter::wire;
use rooms_adapter::{Error, RoomName};
use tokio::task::AbortHandle;

use super::{NatsAdapter, Shared, truncated};
use crate::error;

pub(super) struct RoomEntry {
    /// Cleared while the room waits out its unsubscribe delay: nothing is
    /// delivered meanwhile.
    pub(super) wanted: Arc<AtomicBool>,
    /// Bumped on every subscribe and unsubscribe, so a delayed unsubscribe
    /// only removes the subscription it was scheduled for.
    pub(super) generation: u64,
    pub(super) forwarder: AbortHandle,
}

impl NatsAdapter {
    /// Subscribes `room`'s subject and returns once the server has confirmed
    /// it (a round trip through the server on the client's own inbox). While the client is disconnected it fails
    /// at once with a retryable error; the room stays wanted: the client
    /// subscribes it on reconnect and `Reconnected` lists it.
    pub(super) async fn subscribe_room(&self, room: &RoomName) -> Result<(), Error> {
        let session = self.session()?;
        let Some(sink) = session.sink.clone() else {
            return Err(Error::Unsupported {
                adapter: "nats".into(),
                capability: "subscriptions on a publish-only adapter",
            });
        };
        let subject = self.subject_of(room)?;
        {
            let mut rooms = self.shared.rooms.lock().await;
            match rooms.get_mut(room) {
                Some(entry) => {
                    entry.generation += 1;
                    if !entry.wanted.swap(true, Ordering::AcqRel) {
                        self.shared.wanted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    let limit = self.config.subscribe_timeout;
                    let subscriber = match tokio::time::timeout(
                        limit,
                        session.client.subscribe(subject),
                    )
                    .await
                    {
                        Ok(Ok(subscriber)) => subscriber,
                        Ok(Err(failure)) => {
                            return Err(error::unavailable(
                                &self.medium,
                                &format!("subscribe to room {:?}", truncated(room.as_str())),
                                failure,
                            ));
                        }
                        Err(_) => {
                            return Err(error::timeout(
                                format!("subscribe to room {:?}", truncated(room.as_str())),
                                limit,
                            ));
                        }
                    };
                    let wanted = Arc::new(AtomicBool::new(true));
                    let delivery = RoomDelivery {
                        room: room.clone(),
                        wanted: Arc::clone(&wanted),
                        sink,
                        counters: Arc::clone(&self.shared.counters),
                        adapter: Arc::downgrade(&self.shared),
                        max_payload: self.config.max_payload_bytes,
                    };
                    let forwarder = tokio::spawn(forward_room(subscriber, delivery)).abort_handle();
                    rooms.insert(
                        room.clone(),
                        RoomEntry {
                            wanted,
                            generation: 0,
                            forwarder,
                        },
                    );
                    self.shared.wanted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let operation = format!("subscribe to room {:?}", truncated(room.as_str()));
        if session.client.connection_state() != State::Connected {
            return Err(error::disconnected(&self.medium, &operation));
        }
        self.confirm(&session, &operation).await
    }

    /// Stops delivery for `room` at once and drops its NATS subscription
    /// after the unsubscribe delay, unless the room is subscribed again
    /// meanwhile. Idempotent.
    pub(super) async fn unsubscribe_room(&self, room: &RoomName) -> Result<(), Error> {
        let mut rooms = self.shared.rooms.lock().await;
        let Some(entry) = rooms.get_mut(room) else {
            return Ok(());
        };
        if !entry.wanted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.wanted.fetch_sub(1, Ordering::Relaxed);
        entry.generation += 1;
        let delay = self.config.unsubscribe_delay;
        if delay.is_zero() {
            if let Some(entry) = rooms.remove(room) {
                entry.forwarder.abort();
            }
            return Ok(());
        }
        let generation = entry.generation;
        let shared = Arc::downgrade(&self.shared);
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut rooms = shared.rooms.lock().await;
            let expired = rooms.get(&room).is_some_and(|entry| {
                entry.generation == generation && !entry.wanted.load(Ordering::Acquire)
            });
            if expired && let Some(entry) = rooms.remove(&room) {
                // Dropping the subscriber sends UNSUB.
                entry.forwarder.abort();
            }
        });
        Ok(())
    }
}

/// What one room's task needs to deliver its messages.
struct RoomDelivery {
    room: RoomName,
    /// Cleared while the room waits out its unsubscribe delay.
    wanted: Arc<AtomicBool>,
    sink: EventSink,
    counters: Arc<AdapterCounters>,
    /// Gone once the adapter is: the task then stops.
    adapter: Weak<Shared>,
    max_payload: usize,
}

impl RoomDelivery {
    /// Decodes one payload and hands it to the sink; `false` once the task
    /// should stop. Per message: two atomic loads (adapter alive, room
    /// wanted), no reference count taken.
    fn deliver(&self, payload: &[u8]) -> bool {
        if self.adapter.strong_count() == 0 {
            return false;
        }
        if !self.wanted.load(Ordering::Acquire) {
            return true;
        }
        match wire::decode(payload, self.max_payload) {
            Ok(envelope) => {
                self.counters.record_received();
                let event = AdapterEvent::Message {
                    room: self.room.clone(),
                    envelope,
                };
                self.sink.send(event) != SinkOutcome::Closed
            }
            Err(failure) => {
                self.counters
                    .record_decode_error(self.room.as_str(), &failure);
                true
            }
        }
    }
}

/// Delivers one room's messages into the sink while the room is wanted,
/// decoding each on this task as it comes off the subscription's queue:
/// the only hop after the client's is the engine's own.
async fn forward_room(mut subscriber: Subscriber, delivery: RoomDelivery) {
    while let Some(message) = subscriber.next().await {
        if !delivery.deliver(&message.payload) {
            return;
        }
    }
}

/// Delivers control frames into the sink.
pub(super) async fn forward_control(mut subscriber: Subscriber, sink: EventSink) {
    while let Some(message) = subscriber.next().await {
        let event = AdapterEvent::Control {
            payload: message.payload,
        };
        if sink.send(event) == SinkOutcome::Closed {
            return;
        }
    }
}
