//! The supervisor: follows the client's connection state and turns it into
//! `MediumLost` and `Reconnected` events.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, Event};
use rooms_adapter::RoomName;
use rooms_adapter::adapter::{AdapterEvent, EventSink};

use super::Shared;
use super::barrier::Barrier;

/// How often the supervisor re-checks the connection state even without an
/// event from the client (events can be dropped when the client's own
/// event queue is full).
const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Follows the client's connection: `MediumLost` once per outage, and
/// `Reconnected` once the client is back and the server has every
/// re-subscription (a round trip after the client's automatic re-SUBs).
pub(super) struct Supervisor {
    pub(super) client: Client,
    pub(super) sink: Option<EventSink>,
    pub(super) barrier: Option<Arc<Barrier>>,
    pub(super) medium: String,
    pub(super) shared: Weak<Shared>,
    pub(super) flush_timeout: Duration,
    pub(super) outage: Option<Instant>,
}

impl Supervisor {
    pub(super) async fn run(mut self, mut events: tokio::sync::mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(STATE_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(Event::Disconnected) => self.lost("disconnected from the NATS server"),
                    Some(Event::Closed) => return,
                    Some(Event::LameDuckMode) => {
                        tracing::warn!("the NATS server entered lame duck mode; the client will move");
                    }
                    Some(Event::ServerError(failure)) => {
                        tracing::warn!(%failure, "NATS server error");
                    }
                    Some(Event::ClientError(failure)) => {
                        tracing::warn!(%failure, "NATS client error");
                    }
                    Some(_) => {}
                },
                _ = tick.tick() => {}
            }
            if self.shared.strong_count() == 0 {
                return;
            }
            match self.client.connection_state() {
                State::Connected => {
                    if self.outage.is_some() {
                        self.try_reconnected().await;
                    }
                }
                State::Disconnected | State::Pending => {
                    self.lost("the NATS client is disconnected");
                }
            }
        }
    }

    fn lost(&mut self, reason: &str) {
        if self.outage.is_some() {
            return;
        }
        self.outage = Some(Instant::now());
        tracing::warn!(reason, "NATS medium lost");
        if let Some(sink) = &self.sink {
            sink.push_lifecycle(AdapterEvent::MediumLost {
                reason: reason.to_owned(),
            });
        }
    }

    async fn try_reconnected(&mut self) {
        // The client re-sends every SUB before it handles any later
        // command: once this round trip is back, the server has them all.
        let confirmed = match &self.barrier {
            Some(barrier) => barrier
                .round_trip(
                    &self.client,
                    self.flush_timeout,
                    &self.medium,
                    "re-subscribe",
                )
                .await
                .is_ok(),
            None => matches!(
                tokio::time::timeout(self.flush_timeout, self.client.flush()).await,
                Ok(Ok(()))
            ),
        };
        if !confirmed {
            return;
        }
        let Some(since) = self.outage.take() else {
            return;
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.counters.record_reconnect();
        let mut rooms: Vec<RoomName> = shared
            .rooms
            .lock()
            .await
            .iter()
            .filter(|(_, entry)| entry.wanted.load(Ordering::Acquire))
            .map(|(room, _)| room.clone())
            .collect();
        rooms.sort();
        let outage = since.elapsed();
        tracing::info!(rooms = rooms.len(), ?outage, "NATS medium back");
        if let Some(sink) = &self.sink {
            sink.send_lifecycle(AdapterEvent::Reconnected { rooms, outage })
                .await;
        }
    }
}
