//! Publishing: room envelopes and control frames, with the fail-fast checks
//! (disconnected, over `max_payload`, subject too long).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

use async_nats::connection::State;
use async_nats::{Client, Subject};
use rooms_adapter::adapter::ControlTarget;
use rooms_adapter::{Envelope, Error, RoomName};

use super::{NatsAdapter, truncated};
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
    pub(super) async fn publish_room(
        &self,
        room: &RoomName,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        let session = self.session()?;
        let subject = self.subject_of(room)?;
        let payload = envelope.encode(self.config.codec)?;
        self.publish_bytes(&session.client, subject, payload, Target::Room(room))
            .await
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
        let payload = bytes::Bytes::copy_from_slice(payload);
        self.publish_bytes(&session.client, subject.into(), payload, Target::Control)
            .await
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

    /// Publishes raw bytes on `subject` with the fail-fast checks.
    async fn publish_bytes(
        &self,
        client: &Client,
        subject: Subject,
        payload: bytes::Bytes,
        target: Target<'_>,
    ) -> Result<(), Error> {
        let counters = &self.shared.counters;
        if payload.len() > self.config.max_payload_bytes {
            counters.record_publish_error();
            return Err(Error::PayloadTooLarge {
                room: target.name(),
                size: payload.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        // The client would buffer the publish until it reconnects: fail
        // fast instead, as the contract asks.
        if client.connection_state() != State::Connected {
            counters.record_publish_error();
            return Err(error::disconnected(
                &self.medium,
                &format!("publish to {}", target.describe()),
            ));
        }
        let server_max = client.max_payload();
        if payload.len() > server_max {
            counters.record_publish_error();
            return Err(error::over_server_max_payload(
                &target.describe(),
                payload.len(),
                server_max,
            ));
        }
        let limit = self.config.publish_timeout;
        // The client's queue has room almost always: a first poll without a
        // timer spares a timer entry per message; only a publish that has
        // to wait for room gets the timeout, boxed: the timer is not part
        // of every publish's future (944 -> 832 bytes; each in-flight
        // publish is one such box, and its first poll is a cache miss).
        let mut publish = std::pin::pin!(client.publish(subject, payload));
        let first = std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => Box::pin(tokio::time::timeout(limit, publish)).await,
        };
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
