//! How the table takes the outcomes of the loop's I/O: connects, batches,
//! pings, notices from Redis, lost connections and discoveries.

use std::collections::HashSet;
use std::sync::Arc;

use rooms_adapter::Error;
use tokio::time::Instant;

use super::{Ack, MAX_DISCOVER_DELAY, OpKind, Refusal, Table, Topic};
use crate::subscribe::slot::{ShardId, Topology};

impl Table {
    /// Starts connecting `id` outside [`actions`](Self::actions) (the first
    /// connection, opened before the loop runs): its generation.
    pub(crate) fn begin_connect(&mut self, id: &ShardId) -> Option<u64> {
        let shard = self.shards.get_mut(id)?;
        (!shard.up && !shard.connecting).then(|| shard.begin_connect())
    }

    /// A connect started by [`Action::Connect`] finished.
    pub(crate) fn connected(&mut self, id: &ShardId, generation: u64, ok: bool, now: Instant) {
        let backoff = self.settings.backoff;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.generation != generation || !shard.connecting {
            return;
        }
        shard.connecting = false;
        if ok {
            self.lost_shards.remove(id);
            shard.up = true;
            shard.attempt = 0;
            shard.retry_at = None;
            shard.busy = false;
            shard.pinging = false;
        } else {
            shard.attempt = shard.attempt.saturating_add(1);
            shard.retry_at = Some(now + backoff.delay(shard.attempt));
            // The shard may be gone: its slots may have moved.
            self.stale = true;
        }
    }

    /// Whether `generation` is the shard's live connection.
    pub(crate) fn is_current(&self, id: &ShardId, generation: u64) -> bool {
        self.shards
            .get(id)
            .is_some_and(|shard| shard.up && shard.generation == generation)
    }

    /// A batch finished: `acks` answers `rooms` one by one, or `Err` when the
    /// connection failed (no answer at all).
    pub(crate) fn op_done(
        &mut self,
        id: &ShardId,
        generation: u64,
        kind: OpKind,
        rooms: Vec<Topic>,
        acks: Result<Vec<Ack>, String>,
        now: Instant,
    ) {
        let current = self.is_current(id, generation);
        if current && let Some(shard) = self.shards.get_mut(id) {
            shard.busy = false;
        }
        let acks = match acks {
            Ok(acks) if current && acks.len() == rooms.len() => acks,
            Ok(acks) if current => {
                let reason = format!("{} answers to {} commands", acks.len(), rooms.len());
                return self.abandon(id, kind, rooms, Some(&reason), now);
            }
            Ok(_) => return self.abandon(id, kind, rooms, None, now),
            Err(reason) => {
                let reason = current.then_some(reason);
                return self.abandon(id, kind, rooms, reason.as_deref(), now);
            }
        };
        let mut desync = None;
        for (name, ack) in rooms.into_iter().zip(acks) {
            match ack {
                Ack::Done if kind == OpKind::Subscribe => {
                    self.sub_confirmed(id, generation, &name, now)
                }
                Ack::Done => self.unsub_confirmed(id, &name),
                Ack::Moved => {
                    self.unexpect(id, kind, &name);
                    self.moved(&name, kind);
                }
                Ack::Refused(reason) => {
                    self.unexpect(id, kind, &name);
                    if kind == OpKind::Subscribe {
                        self.refused(&name, reason);
                    } else {
                        // Not subscribed there after all.
                        self.moved(&name, kind);
                    }
                }
                Ack::Unexpected(reason) => {
                    desync.get_or_insert(reason);
                    self.abandoned(&name, kind);
                }
            }
        }
        if let Some(reason) = desync {
            self.lost(id, generation, &reason, now);
        }
    }

    fn abandon(
        &mut self,
        id: &ShardId,
        kind: OpKind,
        rooms: Vec<Topic>,
        lost: Option<&str>,
        now: Instant,
    ) {
        if let Some(reason) = lost
            && let Some(generation) = self.shards.get(id).map(|shard| shard.generation)
        {
            self.lost(id, generation, reason, now);
        }
        for name in rooms {
            self.abandoned(&name, kind);
        }
    }

    fn unexpect(&mut self, id: &ShardId, kind: OpKind, name: &Topic) {
        if kind != OpKind::Unsubscribe {
            return;
        }
        if let Some(shard) = self.shards.get_mut(id)
            && let Some(expected) = shard.expected.get_mut(name)
        {
            *expected = expected.saturating_sub(1);
            if *expected == 0 {
                shard.expected.remove(name);
            }
        }
    }

    fn sub_confirmed(&mut self, id: &ShardId, generation: u64, name: &Topic, now: Instant) {
        let timeout = self.settings.subscribe_timeout;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.op = None;
        room.on = Some((Arc::clone(id), generation));
        if let Some(shard) = self.shards.get_mut(id) {
            shard.rooms.insert(name.clone());
        }
        if room.wanted {
            self.answers
                .extend(room.waiters.drain(..).map(|waiter| (waiter, Ok(()))));
            // A subscribe that answered after its caller gave up is reported
            // as reconnected, as the contract says.
            let late = room
                .requested_at
                .take()
                .filter(|at| now.duration_since(*at) >= timeout);
            if let Some(since) = room.lost_at.take().or(late) {
                self.recovered.push(name.clone());
                self.recovered_since = Some(self.recovered_since.map_or(since, |s| s.min(since)));
                self.first_recovery.get_or_insert(now);
            }
        } else if room.leaving.is_none() {
            self.unsub_ready.insert(name.clone());
        }
    }

    fn unsub_confirmed(&mut self, id: &ShardId, name: &Topic) {
        if let Some(shard) = self.shards.get_mut(id) {
            shard.rooms.remove(name);
        }
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.op = None;
        room.on = None;
        if room.wanted {
            self.pending.insert(name.clone());
        }
        self.forget_if_idle(name);
    }

    /// The batch did not happen for this room: back to where it was.
    fn abandoned(&mut self, name: &Topic, kind: OpKind) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.op != Some(kind) {
            return;
        }
        room.op = None;
        if kind == OpKind::Unsubscribe
            && let Some((shard, generation)) = &room.on
        {
            let alive = self
                .shards
                .get(shard)
                .is_some_and(|s| s.up && s.generation == *generation);
            if !alive {
                room.on = None;
            } else if !room.wanted {
                // Still subscribed on a live connection: try again.
                self.unsub_ready.insert(name.clone());
            }
        }
        if room.wanted && room.on.is_none() && !self.parked.contains(name) {
            self.pending.insert(name.clone());
        }
        self.forget_if_idle(name);
    }

    /// The slot is served elsewhere (or nowhere right now): retried after
    /// the next discovery, which backs off (no storm while a cluster is down).
    fn moved(&mut self, name: &Topic, kind: OpKind) {
        self.stale = true;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.op != Some(kind) {
            return;
        }
        room.op = None;
        if kind == OpKind::Unsubscribe
            && let Some((shard, _)) = room.on.take()
            && let Some(shard) = self.shards.get_mut(&shard)
        {
            shard.rooms.remove(name);
        }
        if room.wanted && room.on.is_none() {
            self.parked.insert(name.clone());
        }
        self.forget_if_idle(name);
    }

    fn refused(&mut self, name: &Topic, reason: String) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.op != Some(OpKind::Subscribe) {
            return;
        }
        room.op = None;
        if !room.wanted {
            self.forget_if_idle(name);
            return;
        }
        room.wanted = false;
        room.lost_at = None;
        room.requested_at = None;
        self.delivery.push((name.clone(), false));
        let mut heard = false;
        for waiter in room.waiters.drain(..) {
            let error = Error::Backend {
                context: format!("subscribe to {name}"),
                retryable: false,
                source: Box::new(crate::error::Message(reason.clone())),
            };
            heard |= !waiter.is_closed();
            self.answers.push((waiter, Err(error)));
        }
        self.refusals.push(Refusal {
            topic: name.clone(),
            reason,
            unheard: !heard,
        });
        self.forget_if_idle(name);
    }

    /// A ping started by [`Action::Ping`] finished.
    pub(crate) fn pinged(
        &mut self,
        id: &ShardId,
        generation: u64,
        result: Result<(), String>,
        now: Instant,
    ) {
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.generation != generation {
            return;
        }
        shard.pinging = false;
        if let Err(reason) = result {
            self.lost(id, generation, &reason, now);
        }
    }

    /// Redis confirmed or announced that `name` is no longer subscribed on
    /// the shard's connection `generation`.
    pub(crate) fn unsubscribed(
        &mut self,
        id: &ShardId,
        generation: u64,
        name: &Topic,
        now: Instant,
    ) {
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.generation != generation {
            return;
        }
        if let Some(expected) = shard.expected.get_mut(name) {
            *expected -= 1;
            if *expected == 0 {
                shard.expected.remove(name);
            }
            return;
        }
        // Redis dropped the channel itself: its slot moved.
        tracing::info!(shard = %id, topic = %name, "redis dropped a channel (slot moved); re-subscribing");
        shard.rooms.remove(name);
        self.stale = true;
        self.discover_at = None;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room
            .on
            .as_ref()
            .is_some_and(|(s, g)| s == id && *g == generation)
        {
            room.on = None;
            if room.wanted {
                room.lost_at.get_or_insert(now);
                if room.op.is_none() {
                    self.pending.insert(name.clone());
                }
            } else {
                self.unsub_ready.remove(name);
            }
        }
        self.forget_if_idle(name);
    }

    /// The shard's connection `generation` is gone: its rooms are lost until
    /// subscribed again.
    pub(crate) fn lost(&mut self, id: &ShardId, generation: u64, reason: &str, now: Instant) {
        let backoff = self.settings.backoff;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.generation != generation {
            return;
        }
        if shard.up {
            tracing::warn!(shard = %id, %reason, rooms = shard.rooms.len(), "redis subscriber connection lost; reconnecting");
            self.lost_shards.insert(Arc::clone(id));
            if self.medium_lost.is_none() {
                self.medium_lost = Some(now);
                self.lost_report = Some(format!("connection to {id} lost: {reason}"));
            }
        }
        shard.up = false;
        shard.generation += 1;
        shard.connecting = false;
        shard.busy = false;
        shard.pinging = false;
        shard.expected.clear();
        shard.retry_at = Some(now + backoff.delay(0));
        let rooms: Vec<Topic> = shard.rooms.drain().collect();
        for name in rooms {
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            room.on = None;
            self.unsub_ready.remove(&name);
            if room.wanted {
                room.lost_at.get_or_insert(now);
                if room.op.is_none() {
                    self.pending.insert(name.clone());
                }
            }
            self.forget_if_idle(&name);
        }
        // The master may be gone and its slots moved.
        self.stale = true;
        self.discover_at = None;
    }

    /// A discovery started by [`Action::Discover`] finished.
    pub(crate) fn discovered(&mut self, topology: Option<Topology>, now: Instant) {
        self.discovering = false;
        for name in std::mem::take(&mut self.parked) {
            if self
                .rooms
                .get(&name)
                .is_some_and(|room| room.wanted && room.on.is_none() && room.op.is_none())
            {
                self.pending.insert(name);
            }
        }
        match topology {
            Some(topology) => {
                let complete = topology.is_complete();
                self.apply_topology(topology, now);
                self.stale = !complete;
                self.discover_attempt = if complete {
                    0
                } else {
                    self.discover_attempt.saturating_add(1)
                };
            }
            None => self.discover_attempt = self.discover_attempt.saturating_add(1),
        }
        let delay = self
            .settings
            .backoff
            .delay(self.discover_attempt)
            .min(MAX_DISCOVER_DELAY);
        self.discover_at = Some(now + delay);
    }

    fn apply_topology(&mut self, topology: Topology, now: Instant) {
        let changed = self.topology.as_ref() != Some(&topology);
        for (id, _, _) in topology.masters() {
            self.shards.entry(Arc::clone(id)).or_default();
        }
        if changed {
            tracing::debug!(?topology, "redis topology");
            // Rooms subscribed on a shard that no longer serves their slot
            // will not hear from it again: subscribe them on the new one.
            let moved: Vec<Topic> = self
                .rooms
                .iter()
                .filter(|(_, room)| {
                    room.on
                        .as_ref()
                        .is_some_and(|(shard, _)| topology.owner(room.slot) != Some(shard))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in moved {
                let Some(room) = self.rooms.get_mut(&name) else {
                    continue;
                };
                if let Some((shard, _)) = room.on.take()
                    && let Some(shard) = self.shards.get_mut(&shard)
                {
                    shard.rooms.remove(&name);
                }
                self.unsub_ready.remove(&name);
                if room.wanted {
                    room.lost_at.get_or_insert(now);
                    if room.op.is_none() {
                        self.pending.insert(name.clone());
                    }
                }
                self.forget_if_idle(&name);
            }
            let masters: HashSet<&ShardId> = topology.masters().map(|(id, _, _)| id).collect();
            // A lost shard that left the slot map will not come back.
            self.lost_shards.retain(|id| masters.contains(id));
            self.shards
                .retain(|id, shard| masters.contains(id) || !shard.rooms.is_empty() || shard.busy);
        }
        self.topology = Some(topology);
    }

    /// The topology in use, if discovered.
    pub(crate) fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// Flags the topology as possibly out of date (a publish hit `MOVED`).
    pub(crate) fn mark_stale(&mut self) {
        if !self.stale {
            self.stale = true;
            self.discover_at = None;
        }
    }
}
