//! Publishing: room envelopes and control frames, with the fail-fast checks
//! (disconnected, over `max_payload`, subject too long).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use async_nats::connection::State;
use async_nats::{Client, Subject};
use rooms_adapter::adapter::ControlTarget;
use rooms_adapter::{Envelope, Error, RoomName};

use super::{NatsAdapter, Session, truncated};
use crate::error;
use crate::subject::{MAX_SUBJECT_BYTES, control_all_subject, control_node_subject, room_subject};

/// How many room subjects [`SubjectCache`] keeps before it starts over.
const SUBJECT_CACHE_ROOMS: usize = 4_096;

/// Room subjects built once: a publish to a room seen before neither
/// encodes the room name nor allocates its subject (a clone of a
/// [`Subject`] is a reference count). Bounded by [`SUBJECT_CACHE_ROOMS`]:
/// emptied when full, so a stream of one-off rooms costs what it did
/// without a cache.
#[derive(Default)]
pub(super) struct SubjectCache {
    subjects: Mutex<HashMap<RoomName, Subject>>,
}

impl SubjectCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Subject>> {
        self.subjects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NatsAdapter {
    /// Publishes `envelope` on `room`'s subject.
    ///
    /// The checks and the encoding run before the first await, so the
    /// future (boxed by the trait, one per in-flight publish) holds little
    /// more than the client's own publish (864 bytes before, 824
    /// after; the client's publish is 568 of them).
    pub(super) async fn publish_room(
        &self,
        room: &RoomName,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let ready = self.prepare_room(room, envelope)?;
        self.send(ready, Target::Room(room)).await
    }

    /// The client, subject and payload of a room publish, checked.
    fn prepare_room(&self, room: &RoomName, envelope: &Envelope) -> Result<Ready, Error> {
        let session = self.session()?;
        let subject = self.subject_of(room)?;
        let payload = envelope.encode(self.config.codec)?;
        self.check(&session.client, payload.len(), Target::Room(room))?;
        Ok(Ready {
            session,
            subject,
            payload,
        })
    }

    /// Publishes a control frame on `{control_prefix}all` or the target
    /// node's inbox.
    pub(super) async fn publish_control_frame(
        &self,
        target: &ControlTarget,
        payload: &[u8],
    ) -> Result<(), Error> {
        let session = self.session()?;
        let prefix = self.config.control_prefix();
        let subject = match target {
            ControlTarget::Node(node) => control_node_subject(&prefix, node.as_str()),
            _ => control_all_subject(&prefix),
        };
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(error::subject_too_long("a control inbox", subject.len()));
        }
        self.check(&session.client, payload.len(), Target::Control)?;
        let ready = Ready {
            session,
            subject: subject.into(),
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        self.send(ready, Target::Control).await
    }

    /// `room`'s subject, from the cache when the room was seen before.
    pub(super) fn subject_of(&self, room: &RoomName) -> Result<Subject, Error> {
        let mut subjects = self.subjects.lock();
        if let Some(subject) = subjects.get(room.as_str()) {
            return Ok(subject.clone());
        }
        let subject = room_subject(&self.config.subject_prefix, room.as_str());
        if subject.len() > MAX_SUBJECT_BYTES {
            return Err(error::subject_too_long(
                &format!("room {:?}", truncated(room.as_str())),
                subject.len(),
            ));
        }
        // Shared bytes from here on: a clone is a reference count.
        let subject = Subject::from(subject.as_str());
        if subjects.len() >= SUBJECT_CACHE_ROOMS {
            subjects.clear();
        }
        subjects.insert(room.clone(), subject.clone());
        Ok(subject)
    }

    /// The fail-fast checks: our payload limit, the connection state (the
    /// client would buffer the publish until it reconnects), the server's
    /// `max_payload`.
    fn check(&self, client: &Client, size: usize, target: Target<'_>) -> Result<(), Error> {
        let counters = &self.shared.counters;
        if size > self.config.max_payload_bytes {
            counters.record_publish_error();
            return Err(Error::PayloadTooLarge {
                room: target.name(),
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        if client.connection_state() != State::Connected {
            counters.record_publish_error();
            return Err(error::disconnected(
                &self.medium,
                &format!("publish to {}", target.describe()),
            ));
        }
        let server_max = client.max_payload();
        if size > server_max {
            counters.record_publish_error();
            return Err(error::over_server_max_payload(
                &target.describe(),
                size,
                server_max,
            ));
        }
        Ok(())
    }

    /// Hands a checked publish to the client, within the publish timeout.
    async fn send(&self, ready: Ready, target: Target<'_>) -> Result<(), Error> {
        let Ready {
            session,
            subject,
            payload,
        } = ready;
        let limit = self.config.publish_timeout;
        // The client's queue has room almost always: a first poll without a
        // timer spares a timer entry per message; only a publish that has
        // to wait for room gets the timeout, boxed: the timer is not part
        // of every publish's future. The first poll is `unconstrained`: a
        // caller with many publishes in flight on one task (a
        // `FuturesUnordered`) soon spends tokio's cooperative budget, after
        // which every poll of the queue answers `Pending` with room to
        // spare, and each of those publishes paid for a timer. The queue
        // still bounds such a caller: once it is full, the publish waits.
        // The price is fairness: a publish that finds room spends no
        // budget, so a task that only publishes yields at the latest when
        // the client's queue is full, as with an unbounded channel's
        // `send`. Yielding whenever the budget runs out instead (and
        // polling again) kept the fairness but cost about 1 µs per message in
        // the publisher: `cargo xtask bench nats` throughput 0.73x raw
        // async-nats against 1.11x-1.35x with this first poll.
        let mut publish = std::pin::pin!(session.client.publish(subject, payload));
        let first = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            Poll::Ready(publish.as_mut().poll(cx))
        }))
        .await;
        let outcome = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => Box::pin(tokio::time::timeout(limit, publish)).await,
        };
        let counters = &self.shared.counters;
        match outcome {
            Ok(Ok(())) => {
                // `published` counts room envelopes only: a heartbeat must
                // not look like a broadcast.
                if matches!(target, Target::Room(_)) {
                    counters.record_published();
                }
                Ok(())
            }
            Ok(Err(failure)) => {
                counters.record_publish_error();
                Err(error::unavailable(
                    &self.medium,
                    &format!("publish to {}", target.describe()),
                    failure,
                ))
            }
            Err(_) => {
                counters.record_publish_error();
                Err(error::timeout(
                    format!("publish to {}", target.describe()),
                    limit,
                ))
            }
        }
    }
}

/// A publish that passed the checks.
struct Ready {
    session: Arc<Session>,
    subject: Subject,
    payload: bytes::Bytes,
}

/// What a publish goes to, described only when it fails.
#[derive(Clone, Copy)]
enum Target<'a> {
    Room(&'a RoomName),
    Control,
}

impl Target<'_> {
    /// The room's name (for [`Error::PayloadTooLarge`]).
    fn name(self) -> String {
        match self {
            Target::Room(room) => room.as_str().to_owned(),
            Target::Control => "(control channel)".to_owned(),
        }
    }

    /// In words, for error messages.
    fn describe(self) -> String {
        match self {
            Target::Room(room) => format!("room {:?}", truncated(room.as_str())),
            Target::Control => "the control subject".to_owned(),
        }
    }
}
