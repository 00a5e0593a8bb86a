//! Sending: [`Rooms::broadcast`] and its variants (local delivery first,
//! then one publish per room), and [`Rooms::send_to`] one connection.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;

use super::{Rooms, bump};
use crate::broadcast::{BroadcastOptions, BroadcastReport};
use crate::connection::Push;
use crate::error::Error;
use crate::ids::{ConnectionId, RoomName};
use crate::message::SseMessage;
use crate::sse;
use crate::wire::Envelope;

impl Rooms {
    /// Broadcasts to one room on every node.
    pub fn broadcast(
        &self,
        room: impl Into<RoomName>,
        message: impl Into<Arc<SseMessage>>,
        options: BroadcastOptions,
    ) -> impl Future<Output = Result<BroadcastReport, Error>> + Send + '_ {
        self.broadcast_to([room.into()], message, options)
    }

    /// Broadcasts to several rooms on every node. A local connection in more
    /// than one of them gets one copy. The SSE frame is built once, the envelope
    /// encoded once, and one envelope is published per room.
    ///
    /// Local delivery happens first; if publishing then fails (the medium is
    /// down), the error is returned and local members have the message.
    pub fn broadcast_to<I, R>(
        &self,
        rooms: I,
        message: impl Into<Arc<SseMessage>>,
        options: BroadcastOptions,
    ) -> impl Future<Output = Result<BroadcastReport, Error>> + Send + '_
    where
        I: IntoIterator<Item = R>,
        R: Into<RoomName>,
    {
        // The arguments are converted here, before the future exists (pure
        // conversions, no effect): an async fn would keep them in its state
        // beside what they became. One broadcast future is allocated per
        // call by any caller that keeps many in flight, so its size is paid
        // per message (1,544 bytes before, see `broadcast_future_stays_small`).
        let mut rooms: Vec<RoomName> = rooms.into_iter().map(Into::into).collect();
        if rooms.len() > 1 {
            rooms.sort();
            rooms.dedup();
        }
        self.broadcast_rooms(rooms, message.into(), options)
    }

    /// [`broadcast_to`](Self::broadcast_to) once the rooms are known.
    async fn broadcast_rooms(
        &self,
        rooms: Vec<RoomName>,
        message: Arc<SseMessage>,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport, Error> {
        let started = Instant::now();
        self.inner.ensure_open()?;
        sse::validate(&message)?;
        bump(&self.inner.counters.broadcasts);
        let span = tracing::debug_span!(
            "rooms.broadcast",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            room = tracing::field::Empty,
            rooms = rooms.len(),
            local_only = options.local_only,
            delivered = tracing::field::Empty,
            published = tracing::field::Empty,
        );
        if !span.is_disabled() {
            match rooms.as_slice() {
                [room] => span.record("room", tracing::field::display(room)),
                _ => span.record("room", tracing::field::debug(&rooms)),
            };
        }
        let local_only = options.local_only;
        let result = match (self.inner.history, rooms.as_slice()) {
            // Not boxed: a history broadcast would pay an allocation; its
            // state is the largest of the three (864 bytes in all).
            (Some(policy), _) if !local_only => {
                self.broadcast_with_history(&rooms, message, options, &policy)
                    .instrument(span.clone())
                    .await
            }
            (_, [room]) => self.broadcast_one(room, message, options, &span).await,
            _ => {
                // Boxed: several rooms are rare, and `join_all`'s state
                // would be carried by every broadcast's future.
                Box::pin(
                    self.broadcast_many(&rooms, message, options)
                        .instrument(span.clone()),
                )
                .await
            }
        };
        if let Ok(report) = &result {
            span.record("delivered", report.delivered);
            span.record("published", report.published);
            if !local_only {
                self.inner.latency.publish.record_since(started);
            }
        }
        result
    }

    /// Local delivery, then the envelope to publish (`None` when local only).
    fn deliver_and_wrap(
        &self,
        rooms: &[RoomName],
        message: Arc<SseMessage>,
        options: BroadcastOptions,
        report: &mut BroadcastReport,
    ) -> Result<Option<Envelope>, Error> {
        self.inner
            .deliver_locally(rooms, &message, &options, report)?;
        if options.local_only {
            return Ok(None);
        }
        Ok(Some(
            Envelope::new(self.inner.node.clone(), message)
                .with_except(options.except)
                .with_meta(options.metadata),
        ))
    }

    /// The common case: one room, no history.
    async fn broadcast_one(
        &self,
        room: &RoomName,
        message: Arc<SseMessage>,
        options: BroadcastOptions,
        span: &tracing::Span,
    ) -> Result<BroadcastReport, Error> {
        let mut report = BroadcastReport::default();
        let Some(envelope) = span.in_scope(|| {
            self.deliver_and_wrap(std::slice::from_ref(room), message, options, &mut report)
        })?
        else {
            return Ok(report);
        };
        let publish_span = span.in_scope(|| self.inner.publish_span(room));
        let result = self
            .inner
            .adapter
            .publish(room, &envelope)
            .instrument(publish_span)
            .await;
        self.inner.medium_result(&result);
        result?;
        report.published = 1;
        Ok(report)
    }

    /// Several rooms without history: one envelope, published to each.
    async fn broadcast_many(
        &self,
        rooms: &[RoomName],
        message: Arc<SseMessage>,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport, Error> {
        let mut report = BroadcastReport::default();
        let Some(envelope) = self.deliver_and_wrap(rooms, message, options, &mut report)? else {
            return Ok(report);
        };
        let adapter = &self.inner.adapter;
        let results = futures_util::future::join_all(rooms.iter().map(|room| {
            adapter
                .publish(room, &envelope)
                .instrument(self.inner.publish_span(room))
        }))
        .await;
        for result in results {
            self.inner.medium_result(&result);
            result?;
            report.published += 1;
        }
        Ok(report)
    }

    /// Sends a message to one local connection only, e.g. a resync notice
    /// after a [`RoomsEvent::Gap`](crate::RoomsEvent::Gap). Returns whether
    /// it was queued (`false` when its queue is full, under the slow-consumer
    /// policy). No filter and no room dedup apply; nothing crosses the
    /// medium.
    pub fn send_to(
        &self,
        connection: &ConnectionId,
        message: impl Into<Arc<SseMessage>>,
    ) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let message = message.into();
        let delivery = self.inner.frame(message)?;
        let mut gone = Vec::new();
        let outcome = {
            let registry = self.inner.read();
            let entry = registry
                .connection(connection)
                .ok_or_else(|| Error::UnknownConnection(connection.clone()))?;
            match entry.push(&delivery) {
                Push::Queued => {
                    bump(&self.inner.counters.deliveries);
                    true
                }
                Push::Duplicate => false,
                Push::Closed => {
                    gone.push(entry.id.clone());
                    false
                }
                Push::Full => {
                    // The slow-consumer policy applies, as for a broadcast
                    // (no room: no gap is recorded).
                    self.inner.queue_full(entry, None, &mut gone);
                    false
                }
            }
        };
        self.inner.remove_gone(gone);
        Ok(outcome)
    }
}
