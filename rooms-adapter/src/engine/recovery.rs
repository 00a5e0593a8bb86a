//! History in the engine: broadcasting into the medium's history, and
//! joining a room from a `Last-Event-ID` ([`Rooms::join_from`]).
//!
//! The switch from replay to live cannot lose or repeat a message:
//! 1. the connection's live deliveries for the room are *held* from before it
//!    joins the room (so none is queued ahead of the replay);
//! 2. it joins: the room is subscribed, and every message the medium delivers
//!    from then on is held;
//! 3. the history is read, page by page
//!    ([`READ_PAGE`](crate::history::READ_PAGE) entries a read, up to the
//!    connection's queue capacity: a longer replay lags the connection like
//!    any full queue). The medium stores and publishes each message as one
//!    step, in one order, so any message is in the pages read, or published
//!    after the last read (then held), or both (held and read);
//! 4. the replay (after the client's position) is queued, then the held
//!    messages the read did not cover (positions up to the offset the
//!    replay reached, or ids it contained), in arrival order. A delivery
//!    arriving meanwhile waits on the connection's recovery lock and queues
//!    after them; one the read already covered (in flight during the read)
//!    is dropped, until the first later message puts the room back on the
//!    direct path.
//!
//! After an outage the engine catches each room up the same way, for all of
//! its local members at once: the room's messages from other nodes are held
//! ([`catch_up`](super::catch_up)), the history is read page by page and
//! what the node never delivered is delivered, then the held messages
//! follow, and only then is `Reconnected` announced.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::Instrument as _;

use super::catch_up::{Arrival, Held, Offer};
use super::{Inner, Rooms, RoomsEvent, bump};
use crate::broadcast::{BroadcastOptions, BroadcastReport};
use crate::connection::{ConnectionEntry, Covered, Delivery};
use crate::error::Error;
use crate::history::{GapReason, HistoryPolicy, Position, READ_PAGE, ResumePlan, plan_resume};
use crate::ids::{ConnectionId, RoomName};
use crate::message::SseMessage;
use crate::wire::Envelope;

/// How a connection joined by [`Rooms::join_from`] continues.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No history to resume from (none kept, no `Last-Event-ID`, or already
    /// a member): live messages only.
    Live,
    /// These many missed messages were queued first, then live ones.
    Replayed {
        /// Messages replayed.
        messages: usize,
    },
    /// History could not cover the id: an `event: gap` was queued first (its
    /// data `{"room","reason"}`), then live messages. Tell the client to
    /// resync.
    Gap {
        /// Why.
        reason: GapReason,
    },
}

/// The SSE event that tells a client it missed messages history cannot
/// replay.
pub(crate) fn gap_message(room: &RoomName, reason: &str) -> SseMessage {
    SseMessage::new(json!({ "room": room.as_str(), "reason": reason })).with_event("gap")
}

impl Rooms {
    /// Joins `room` like [`join`](Self::join), and first queues what the
    /// connection missed since `last_event_id` (the `Last-Event-ID` its
    /// client sent) from the room's history, in order, with no gap and no
    /// duplicate at the switch to live messages. When history cannot cover
    /// it (trimmed, expired, unknown id, medium unavailable) one `event: gap`
    /// is queued first instead. Without history
    /// ([`RoomsBuilder::history`](crate::RoomsBuilder::history)) or without an
    /// id, or for a connection already in the room, this is a plain join.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use rooms_adapter::history::HistoryPolicy;
    /// use rooms_adapter::{BroadcastOptions, ConnectOptions, Resume, Rooms, SseMessage};
    /// use rooms_adapter_memory::MemoryAdapter;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rooms_adapter::Error> {
    /// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
    ///     .history(HistoryPolicy::new(100, Duration::from_secs(300))?)
    ///     .build()
    ///     .await?;
    /// let mut ids = Vec::new();
    /// for text in ["one", "two", "three"] {
    ///     let report = rooms.broadcast("news", SseMessage::new(text), BroadcastOptions::new()).await?;
    ///     ids.push(report.id.expect("a history position"));
    /// }
    /// // A client that saw "one" reconnects.
    /// let mut client = rooms.connect(ConnectOptions::new()).await?;
    /// let resume = rooms.join_from(client.id(), "news", Some(&ids[0])).await?;
    /// assert_eq!(resume, Resume::Replayed { messages: 2 });
    /// assert_eq!(client.recv().await.expect("two").message().data, "two");
    /// assert_eq!(client.recv().await.expect("three").message().data, "three");
    /// # Ok(()) }
    /// ```
    pub async fn join_from(
        &self,
        connection: &ConnectionId,
        room: impl Into<RoomName>,
        last_event_id: Option<&str>,
    ) -> Result<Resume, Error> {
        self.inner.ensure_open()?;
        let room = room.into();
        let span = tracing::debug_span!(
            "rooms.join_from",
            node = %self.inner.node,
            medium = self.inner.adapter.name(),
            room = %room,
            connection = %connection,
            last_event_id,
        );
        self.join_from_inner(connection, room, last_event_id)
            .instrument(span)
            .await
    }

    async fn join_from_inner(
        &self,
        connection: &ConnectionId,
        room: RoomName,
        last_event_id: Option<&str>,
    ) -> Result<Resume, Error> {
        let last = match (self.inner.history, last_event_id) {
            (Some(_), Some(last)) if !self.is_in_room(connection, &room) => last,
            _ => {
                self.join(connection, room).await?;
                return Ok(Resume::Live);
            }
        };
        let entry = self
            .inner
            .read()
            .connection(connection)
            .cloned()
            .ok_or_else(|| Error::UnknownConnection(connection.clone()))?;
        entry.begin_recovery(&room);
        if let Err(error) = self.join(connection, room.clone()).await {
            entry.finish_recovery(&room, None, &[], Covered::default(), || None);
            return Err(error);
        }
        let (gap, resume, replay, covered, truncated) =
            match self.inner.read_resume(&entry, &room, last).await {
                Ok(read) => {
                    let messages = read.replay.len();
                    (
                        None,
                        Resume::Replayed { messages },
                        read.replay,
                        read.covered,
                        read.truncated,
                    )
                }
                Err(reason) => (
                    Some(
                        self.inner
                            .frame(Arc::new(gap_message(&room, reason.name())))?,
                    ),
                    Resume::Gap { reason },
                    Vec::new(),
                    Covered::default(),
                    false,
                ),
            };
        let overflow_gap = || {
            self.inner
                .frame(Arc::new(gap_message(&room, "overflow")))
                .ok()
        };
        let full = entry.finish_recovery(&room, gap.as_ref(), &replay, covered, overflow_gap);
        bump(&self.inner.counters.replayed);
        if truncated || full > 0 {
            // More than the queue holds: the connection lags, as any other.
            self.inner.lagging_after_replay(&entry, &room);
        }
        Ok(resume)
    }

    /// Broadcasts into each room's history: stored and published by the
    /// medium first (which gives a message without an id its position as
    /// id), then delivered to local members. When the medium cannot store it,
    /// local members still get it (without a position) and the error is
    /// returned, as without history.
    pub(super) async fn broadcast_with_history(
        &self,
        rooms: &[RoomName],
        message: Arc<SseMessage>,
        options: BroadcastOptions,
        policy: &HistoryPolicy,
    ) -> Result<BroadcastReport, Error> {
        let mut report = BroadcastReport::default();
        let mut message = message;
        let mut envelope = Some(
            Envelope::new(self.inner.node.clone(), Arc::clone(&message))
                .with_except(options.except.clone())
                .with_meta(options.metadata.clone()),
        );
        for (index, room) in rooms.iter().enumerate() {
            let Some(sent) = envelope.as_ref() else {
                break;
            };
            let result = self
                .inner
                .adapter
                .publish_with_history(room, sent, policy)
                .instrument(self.inner.publish_span(room))
                .await;
            self.inner.medium_result(&result);
            let position = match result {
                Ok(position) => position,
                Err(error) => {
                    // Not stored (the medium is down): local members still
                    // get it, without a position, as without history.
                    let rest = rooms.get(index..).unwrap_or_default();
                    self.inner
                        .deliver_locally(rest, &message, &options, &mut report)?;
                    return Err(error);
                }
            };
            report.published += 1;
            let stored = match message.id {
                Some(_) => Arc::clone(&message),
                None if index + 1 == rooms.len() => {
                    // The last room: without the envelope the message is
                    // usually this broadcast's alone, so the id is set in
                    // place (no copy of the message).
                    envelope = None;
                    Arc::make_mut(&mut message).id = Some(position.to_id());
                    Arc::clone(&message)
                }
                None => {
                    let mut with_id = SseMessage::clone(&message);
                    with_id.id = Some(position.to_id());
                    Arc::new(with_id)
                }
            };
            report.id = stored.id.clone();
            self.inner.deliver_locally(
                std::slice::from_ref(room),
                &stored,
                &options,
                &mut report,
            )?;
        }
        Ok(report)
    }
}

/// Attempts at each history read of a catch-up after an outage.
const CATCH_UP_ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt (doubled after each).
const CATCH_UP_RETRY: Duration = Duration::from_millis(50);

/// What a resume read from history: the replay for one connection, and
/// what it covered.
#[derive(Default)]
struct ResumeRead {
    replay: Vec<Arc<Delivery>>,
    covered: Covered,
    /// The replay stopped at the connection's queue capacity.
    truncated: bool,
}

impl Inner {
    /// Reads the history of `room` after `last` (a position or a message
    /// id) page by page ([`READ_PAGE`] entries a read) into a replay for
    /// `entry`, up to its queue capacity; or why history cannot cover it.
    async fn read_resume(
        &self,
        entry: &ConnectionEntry,
        room: &RoomName,
        last: &str,
    ) -> Result<ResumeRead, GapReason> {
        let read = |after: Option<u64>| async move {
            self.adapter
                .read_history(room, after, READ_PAGE)
                .await
                .map_err(|error| {
                    tracing::debug!(%room, %error, "history unavailable for a resume");
                    GapReason::Unavailable
                })
        };
        let position = Position::parse(last);
        // What the current page was read after: the next must be later (a
        // medium that says otherwise would have the read go round forever).
        let mut requested = position.as_ref().map(Position::offset);
        let mut page = read(requested).await?;
        let epoch = page.epoch.clone();
        // Where the replay starts (an application id may be pages later).
        let mut from = loop {
            match plan_resume(&page, last) {
                ResumePlan::Replay { from } => break from,
                ResumePlan::Gap {
                    reason: GapReason::UnknownId,
                } if page.next_after > requested => {
                    requested = page.next_after;
                    page = read(requested).await?;
                    if page.epoch != epoch {
                        return Err(GapReason::EpochChanged);
                    }
                }
                ResumePlan::Gap { reason } => return Err(reason),
            }
        };
        let capacity = entry.queue_capacity();
        let mut resume = ResumeRead::default();
        // Everything up to this offset was replayed or seen already.
        let mut through = page
            .entries
            .get(from)
            .map_or(page.latest, |e| e.offset.saturating_sub(1));
        loop {
            for stored in page.entries.get(from..).unwrap_or_default() {
                if resume.replay.len() >= capacity {
                    resume.truncated = true;
                    break;
                }
                if let Some(delivery) = self.replayable(&entry.info(), &stored.envelope) {
                    resume.replay.push(delivery);
                }
                through = stored.offset;
                // Positions are covered by the floor; other ids by name.
                if let Some(id) = &stored.envelope.message().id
                    && Position::parse(id).is_none()
                {
                    resume.covered.ids.insert(id.clone());
                }
            }
            match page.next_after {
                Some(after) if !resume.truncated && Some(after) > requested => {
                    requested = Some(after);
                    page = read(requested).await?;
                    if page.epoch != epoch {
                        // The history was lost meanwhile: what followed is
                        // not replayable.
                        return Err(GapReason::EpochChanged);
                    }
                    from = 0;
                }
                Some(_) => break,
                None => {
                    through = through.max(page.latest);
                    break;
                }
            }
        }
        resume.covered.floor = Some((epoch, through));
        Ok(resume)
    }

    /// Holds the messages of `rooms` (listed by `Reconnected`) until their
    /// catch-up; returns the losses counted so far, for
    /// [`recover_after_outage`](Self::recover_after_outage).
    pub(super) fn hold_for_catch_up(&self, rooms: &[RoomName]) -> u64 {
        let mut catch_up = self.catch_up.lock();
        for room in rooms {
            catch_up.hold(room);
        }
        catch_up.losses()
    }

    /// A message from another node to deliver now, or `None` while its room
    /// waits for its catch-up ([`catch_up`](super::catch_up)).
    pub(super) fn offer_to_catch_up(
        &self,
        room: &RoomName,
        envelope: Envelope,
        received_at: Option<Instant>,
    ) -> Option<Arrival> {
        if !self.catch_up.is_active() {
            return Some((envelope, received_at));
        }
        let offer = self
            .catch_up
            .lock()
            .offer(room, (envelope, received_at), |before| {
                self.was_delivered(room, &before.to_id())
            });
        match offer {
            Offer::Deliver(arrival) => Some(arrival),
            Offer::Held => None,
        }
    }

    /// Whether this node delivered (or dropped as a duplicate) message `id`
    /// of `room` lately, without recording it.
    fn was_delivered(&self, room: &RoomName, id: &str) -> bool {
        let fingerprint = self.fingerprints.room_id(room.as_str(), id);
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(fingerprint)
    }

    /// Stops holding `room`: delivers what waited, in arrival order (what
    /// the catch-up delivered already is dropped as a duplicate). Messages
    /// arriving meanwhile wait for the lock, then go after these.
    fn release(self: &Arc<Self>, room: &RoomName) {
        let mut catch_up = self.catch_up.lock();
        if let Some(held) = catch_up.release(room) {
            self.deliver_held(room, held);
        }
    }

    fn deliver_held(self: &Arc<Self>, room: &RoomName, held: Held) {
        for (envelope, received_at) in held.arrivals {
            self.deliver_remote(room.clone(), envelope, received_at);
        }
        if held.dropped > 0 {
            self.gaps
                .record(|gaps| gaps.room_dropped(room, held.dropped));
        }
    }

    /// After an outage: delivers to each reconnected room's local members
    /// what the room's history holds that this node never delivered (by the
    /// room's recent-id window), reading page by page, ahead of the room's
    /// messages that arrived meanwhile (held since the room was
    /// resubscribed, or since `Reconnected` at the latest); then announces
    /// `Reconnected`, listing the rooms fully recovered.
    pub(super) async fn recover_after_outage(
        self: Arc<Self>,
        rooms: Vec<RoomName>,
        outage: std::time::Duration,
        losses: u64,
    ) {
        let mut recovered = Vec::new();
        for room in &rooms {
            if !self.read().member_entries(room).is_empty() && self.catch_up_room(room).await {
                recovered.push(room.clone());
            }
            self.release(room);
        }
        // Rooms held for a hole but not listed, and the outage, end here.
        {
            let mut catch_up = self.catch_up.lock();
            for (room, held) in catch_up.end_outage(losses) {
                self.deliver_held(&room, held);
            }
        }
        tracing::info!(
            rooms = rooms.len(),
            recovered = recovered.len(),
            "rooms recovered from history"
        );
        let _ = self.lifecycle.send(RoomsEvent::Reconnected {
            rooms,
            outage,
            recovered,
        });
    }

    /// Delivers what `room` missed from its history, page by page (at most
    /// the recent-id window's worth of the newest entries: older ones could
    /// not be told apart from delivered ones). True when nothing can be
    /// missing: the oldest entry read was delivered already, or the history
    /// was read from its very first message.
    async fn catch_up_room(self: &Arc<Self>, room: &RoomName) -> bool {
        // The medium just came back: a connection it has not noticed losing
        // yet may fail the first read, so a retryable failure is retried.
        let read = |after: Option<u64>, limit: usize| async move {
            let mut delay = CATCH_UP_RETRY;
            for attempt in 1..=CATCH_UP_ATTEMPTS {
                match self.adapter.read_history(room, after, limit).await {
                    Ok(page) => return Some(page),
                    Err(error) if error.is_retryable() && attempt < CATCH_UP_ATTEMPTS => {
                        tracing::debug!(%room, %error, attempt, "history read failed after an outage; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(error) => {
                        tracing::debug!(%room, %error, "history unavailable after an outage");
                        return None;
                    }
                }
            }
            None
        };
        let window = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .capacity() as u64;
        if window == 0 {
            // Nothing tells delivered entries apart.
            return false;
        }
        // One read when the history fits a page (the usual case); a longer
        // one is read from the window's worth of its newest entries.
        let Some(mut page) = read(None, READ_PAGE).await else {
            return false;
        };
        let epoch = page.epoch.clone();
        let kept = page.latest.saturating_add(1).saturating_sub(page.first);
        let from_start = kept <= window;
        if !from_start {
            page.entries.clear();
            page.next_after = Some(page.latest - window);
        }
        let mut complete = from_start && page.first <= 1;
        let mut oldest = true;
        // What the current page was read after: the next must be later (a
        // medium that says otherwise would have the catch-up go round
        // forever).
        let mut requested = None;
        loop {
            for stored in page.entries {
                if oldest {
                    oldest = false;
                    complete |= stored
                        .envelope
                        .message()
                        .id
                        .as_deref()
                        .is_some_and(|id| self.was_delivered(room, id));
                }
                self.deliver_remote(room.clone(), stored.envelope, None);
            }
            match page.next_after {
                Some(next) if Some(next) > requested => {
                    requested = Some(next);
                    page = match read(requested, READ_PAGE).await {
                        Some(page) if page.epoch == epoch => page,
                        // Unavailable, or the history was lost meanwhile.
                        _ => return false,
                    };
                }
                Some(_) => return false,
                None => return complete || oldest,
            }
        }
    }

    /// A stored message as a delivery for one connection, unless `except`
    /// or the filter skips it or it cannot be framed.
    fn replayable(
        &self,
        info: &crate::connection::ConnectionInfo<'_>,
        envelope: &Envelope,
    ) -> Option<Arc<Delivery>> {
        if envelope.except() == Some(info.id) {
            return None;
        }
        if let Some(filter) = &self.filter
            && !filter(info, envelope.message(), envelope.meta())
        {
            return None;
        }
        self.frame(Arc::clone(envelope.shared_message())).ok()
    }
}
