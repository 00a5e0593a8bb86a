//! History in the engine: broadcasting into the medium's history, and
//! joining a room from a `Last-Event-ID` ([`Rooms::join_from`]).
//!
//! The switch from replay to live cannot lose or repeat a message:
//! 1. the connection's live deliveries for the room are *held* from before it
//!    joins the room (so none is queued ahead of the replay);
//! 2. it joins: the room is subscribed, and every message the medium delivers
//!    from then on is held;
//! 3. the history is read. The medium stores and publishes each message as
//!    one step, in one order, so any message is in the read, or published
//!    after it (then held), or both (held and read);
//! 4. the replay (after the client's position) is queued, then the held
//!    messages the read did not cover (positions up to the read's latest
//!    offset, or ids it contained), in arrival order. A delivery arriving
//!    meanwhile waits on the connection's recovery lock and queues after
//!    them; one the read already covered (in flight during the read) is
//!    dropped, until the first later message puts the room back on the
//!    direct path.

use std::sync::Arc;

use serde_json::json;
use tracing::Instrument as _;

use super::{Inner, Rooms, RoomsEvent, bump};
use crate::broadcast::{BroadcastOptions, BroadcastReport};
use crate::connection::{Covered, Delivery};
use crate::error::Error;
use crate::history::{GapReason, HistoryPolicy, Position, ResumePlan, plan_resume};
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
        let after = Position::parse(last).map(|position| position.offset());
        let plan = match self.inner.adapter.read_history(&room, after).await {
            Ok(page) => {
                let plan = plan_resume(&page, last);
                (page, plan)
            }
            Err(error) => {
                tracing::debug!(%room, %error, "history unavailable for a resume");
                let empty = crate::history::HistoryPage {
                    epoch: String::new(),
                    latest: 0,
                    entries: Vec::new(),
                    first: 1,
                };
                (
                    empty,
                    ResumePlan::Gap {
                        reason: GapReason::Unavailable,
                    },
                )
            }
        };
        let (page, plan) = plan;
        let mut replay: Vec<Arc<Delivery>> = Vec::new();
        let mut covered = Covered::default();
        let (gap, resume) = match plan {
            ResumePlan::Replay { from } => {
                // Everything the read saw is replayed or was seen already.
                covered.floor = Some((page.epoch.clone(), page.latest));
                covered.ids = page
                    .entries
                    .iter()
                    .filter_map(|stored| stored.envelope.message().id.clone())
                    .collect();
                for stored in page.entries.get(from..).unwrap_or_default() {
                    if let Some(delivery) = self.inner.replayable(&entry.info(), &stored.envelope) {
                        replay.push(delivery);
                    }
                }
                (
                    None,
                    Resume::Replayed {
                        messages: replay.len(),
                    },
                )
            }
            ResumePlan::Gap { reason } => (
                Some(
                    self.inner
                        .frame(Arc::new(gap_message(&room, reason.name())))?,
                ),
                Resume::Gap { reason },
            ),
        };
        let overflow_gap = || {
            self.inner
                .frame(Arc::new(gap_message(&room, "overflow")))
                .ok()
        };
        let outcome = entry.finish_recovery(&room, gap.as_ref(), &replay, covered, overflow_gap);
        bump(&self.inner.counters.replayed);
        if outcome.full > 0 || outcome.closed {
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
        let envelope = Envelope::new(self.inner.node.clone(), Arc::clone(&message))
            .with_except(options.except.clone())
            .with_meta(options.metadata.clone());
        for (index, room) in rooms.iter().enumerate() {
            let result = self
                .inner
                .adapter
                .publish_with_history(room, &envelope, policy)
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
                None => {
                    let id = position.to_id();
                    let mut with_id = SseMessage::clone(&message);
                    with_id.id = Some(id);
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

impl Inner {
    /// After an outage: replays to each reconnected room's local members what
    /// the room's history holds that this node never delivered (by the
    /// room's recent-id window), ahead of live messages that arrived
    /// meanwhile (held, as for [`Rooms::join_from`]); then announces
    /// `Reconnected`, listing the rooms fully recovered.
    pub(super) async fn recover_after_outage(
        self: Arc<Self>,
        rooms: Vec<RoomName>,
        outage: std::time::Duration,
    ) {
        let mut recovered = Vec::new();
        for room in &rooms {
            let members = self.read().member_entries(room);
            if members.is_empty() {
                continue;
            }
            for member in &members {
                member.begin_recovery(room);
            }
            let page = match self.adapter.read_history(room, None).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::debug!(%room, %error, "history unavailable after an outage");
                    for member in &members {
                        member.finish_recovery(room, None, &[], Covered::default(), || None);
                    }
                    continue;
                }
            };
            // Entries this node has not delivered (marks them delivered).
            let mut missed: Vec<(&Envelope, Arc<Delivery>)> = Vec::new();
            let mut saw_oldest = false;
            for (index, stored) in page.entries.iter().enumerate() {
                if !self.first_in_room(room, stored.envelope.message()) {
                    saw_oldest |= index == 0;
                    continue;
                }
                if let Ok(delivery) = self.frame(Arc::clone(stored.envelope.shared_message())) {
                    missed.push((&stored.envelope, delivery));
                }
            }
            let ids: std::collections::HashSet<String> = missed
                .iter()
                .filter_map(|(envelope, _)| envelope.message().id.clone())
                .collect();
            for member in &members {
                let info = member.info();
                let replay: Vec<Arc<Delivery>> = missed
                    .iter()
                    .filter(|(envelope, _)| {
                        envelope.except() != Some(info.id)
                            && self.filter.as_ref().is_none_or(|filter| {
                                filter(&info, envelope.message(), envelope.meta())
                            })
                    })
                    .map(|(_, delivery)| Arc::clone(delivery))
                    .collect();
                let covered = Covered {
                    floor: None,
                    ids: ids.clone(),
                };
                let outcome = member.finish_recovery(room, None, &replay, covered, || None);
                if outcome.full > 0 || outcome.closed {
                    self.lagging_after_replay(member, room);
                }
            }
            // Complete unless older entries may have been trimmed unseen.
            if saw_oldest || page.first <= 1 || page.entries.is_empty() {
                recovered.push(room.clone());
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
