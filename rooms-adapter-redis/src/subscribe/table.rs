//! The subscription table: which rooms (and control channels: every rule
//! below holds for any [`Topic`]) this node wants, where each one is
//! subscribed, and what the subscriber must do next. Pure: no I/O, no clock
//! (every call that cares about time takes `now`), so every rule is unit-tested
//! without a Redis.
//!
//! Rules, the same for a single server, Sentinel and Cluster (a single server
//! is a topology of one shard that owns every slot):
//! - A wanted room is routed to the shard that owns its channel's slot and
//!   subscribed there in batches (one pipeline per shard per batch); its
//!   waiters are answered when the shard acknowledges it.
//! - A room that is no longer wanted is silent at once and unsubscribed after
//!   the unsubscribe delay; a rejoin within the delay keeps the subscription.
//!   It is forgotten only once the shard confirmed the unsubscribe (or the
//!   connection that held it is gone); a failed unsubscribe is retried.
//! - A shard connection lost, or a room dropped by Redis (its slot moved),
//!   makes the room *lost*: re-subscribed on its owner, and listed in
//!   `Reconnected` once every lost room is back (or after a settle time).
//!   A subscribe that answered only after its caller gave up (the subscribe
//!   timeout) is reported the same way.
//! - A room that Redis refuses (an ACL forbids the channel) stops being
//!   wanted; when nobody was waiting to hear it, it is reported as *refused*
//!   so the engine forgets it rather than believing it subscribed.
//! - Only rooms count: [`live`](Table::live) and `Reconnected` leave control
//!   channels out (a lost control channel still delays `Reconnected` until it
//!   is back, like a room).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::{Error, RoomName};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::slot::{ShardId, Topology, key_slot};
pub(crate) use super::topic::Topic;
use crate::config::Backoff;

/// Whoever waits for a room's subscription.
pub(crate) type Waiter = oneshot::Sender<Result<(), Error>>;

/// The longest wait between two topology discoveries while one is needed.
const MAX_DISCOVER_DELAY: Duration = Duration::from_secs(1);

/// Subscribe or unsubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// SUBSCRIBE / SSUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE / SUNSUBSCRIBE.
    Unsubscribe,
}

/// How a shard answered one channel of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Done as asked.
    Done,
    /// The slot is served elsewhere or nowhere right now (`MOVED`,
    /// `CLUSTERDOWN`, ...): route again after a topology refresh.
    Moved,
    /// Refused for good (an ACL forbids the channel): the message.
    Refused(String),
    /// Not an answer to this command: the connection is out of step.
    Unexpected(String),
}

/// Something the subscriber loop must start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Open the shard's connection.
    Connect { shard: ShardId, generation: u64 },
    /// Send one batch on the shard's connection.
    Op {
        shard: ShardId,
        generation: u64,
        kind: OpKind,
        topics: Vec<Topic>,
    },
    /// Probe the shard's connection.
    Ping { shard: ShardId, generation: u64 },
    /// Ask the medium which shards own which slots.
    Discover,
}

/// A topic Redis refused to subscribe.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) topic: Topic,
    pub(crate) reason: String,
    /// Nobody heard the error from a `subscribe` call: report it as an event.
    pub(crate) unheard: bool,
}

/// The settings the table needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) prefix: String,
    pub(crate) unsubscribe_delay: Duration,
    pub(crate) subscribe_timeout: Duration,
    pub(crate) batch: usize,
    pub(crate) backoff: Backoff,
    pub(crate) ping_interval: Duration,
}

impl Settings {
    /// How long recovered rooms wait for the other lost rooms before they are
    /// reported on their own.
    fn settle(&self) -> Duration {
        (self.backoff.max() * 4).max(Duration::from_secs(2))
    }
}

#[derive(Default)]
struct Room {
    wanted: bool,
    slot: u16,
    /// Subscribed on this shard connection (shard, generation).
    on: Option<(ShardId, u64)>,
    /// A batch with this room is in flight.
    op: Option<OpKind>,
    /// The unsubscribe delay is running (its generation).
    leaving: Option<u64>,
    /// Lost (connection loss, slot moved) at this time; wanted back.
    lost_at: Option<Instant>,
    /// When `subscribe` was asked while not subscribed.
    requested_at: Option<Instant>,
    waiters: Vec<Waiter>,
}

impl Room {
    fn idle(&self) -> bool {
        !self.wanted
            && self.on.is_none()
            && self.op.is_none()
            && self.leaving.is_none()
            && self.waiters.is_empty()
    }
}

#[derive(Default)]
struct Shard {
    up: bool,
    connecting: bool,
    generation: u64,
    attempt: u32,
    retry_at: Option<Instant>,
    /// Rooms subscribed on the current connection.
    rooms: HashSet<Topic>,
    /// A batch is in flight.
    busy: bool,
    pinging: bool,
    /// Unsubscribe confirmations this table asked for: any other is Redis
    /// dropping the channel itself.
    expected: HashMap<Topic, u32>,
}

impl Shard {
    /// A new connection attempt: its generation.
    fn begin_connect(&mut self) -> u64 {
        self.connecting = true;
        self.generation += 1;
        self.generation
    }
}

/// Starts connecting a down `shard` unless it is connecting already or its
/// backoff runs; then notes when it is due in `next_connect`.
fn connect_when_due(
    shard: &mut Shard,
    id: &ShardId,
    now: Instant,
    next_connect: &mut Option<Instant>,
    actions: &mut Vec<Action>,
) {
    if shard.connecting {
        return;
    }
    match shard.retry_at {
        Some(at) if at > now => *next_connect = Some(next_connect.map_or(at, |n| n.min(at))),
        _ => {
            let generation = shard.begin_connect();
            actions.push(Action::Connect {
                shard: Arc::clone(id),
                generation,
            });
        }
    }
}

/// The subscription table. See the module docs.
pub(crate) struct Table {
    settings: Settings,
    rooms: HashMap<Topic, Room>,
    /// Wanted, not subscribed, nothing in flight: to route to a shard.
    pending: HashSet<Topic>,
    /// Answered `Moved`: routed again after the next discovery.
    parked: HashSet<Topic>,
    /// Not wanted, subscribed, nothing in flight, delay over.
    unsub_ready: HashSet<Topic>,
    leave_queue: VecDeque<(Instant, Topic, u64)>,
    leave_generation: u64,
    shards: HashMap<ShardId, Shard>,
    topology: Option<Topology>,
    stale: bool,
    discovering: bool,
    discover_attempt: u32,
    discover_at: Option<Instant>,
    next_ping: Instant,
    next_connect: Option<Instant>,
    recovered: Vec<Topic>,
    recovered_since: Option<Instant>,
    first_recovery: Option<Instant>,
    refusals: Vec<Refusal>,
    /// Shards whose connection was lost and is not back yet.
    lost_shards: HashSet<ShardId>,
    /// Since when the medium is lost (a shard connection went down), until
    /// every lost shard is back and its rooms are subscribed again.
    medium_lost: Option<Instant>,
    /// A `MediumLost` to report (its reason).
    lost_report: Option<String>,
    /// Rooms whose delivery starts or stops: (room, wanted).
    delivery: Vec<(Topic, bool)>,
    /// Answers held back until the loop has published its counters, so a
    /// caller that sees its subscribe return also sees it counted.
    answers: Vec<(Waiter, Result<(), Error>)>,
}

impl Table {
    /// An empty table that needs a topology first.
    pub(crate) fn new(settings: Settings, now: Instant) -> Self {
        Self {
            next_ping: now + settings.ping_interval,
            settings,
            rooms: HashMap::new(),
            pending: HashSet::new(),
            parked: HashSet::new(),
            unsub_ready: HashSet::new(),
            leave_queue: VecDeque::new(),
            leave_generation: 0,
            shards: HashMap::new(),
            topology: None,
            stale: true,
            discovering: false,
            discover_attempt: 0,
            discover_at: None,
            next_connect: None,
            recovered: Vec::new(),
            recovered_since: None,
            first_recovery: None,
            refusals: Vec::new(),
            lost_shards: HashSet::new(),
            medium_lost: None,
            lost_report: None,
            delivery: Vec::new(),
            answers: Vec::new(),
        }
    }

    // ---- requests -------------------------------------------------------

    /// Wants `name`; `waiter` hears when it is subscribed.
    pub(crate) fn subscribe(&mut self, name: Topic, waiter: Waiter, now: Instant) {
        let slot = key_slot(name.channel(&self.settings.prefix).as_bytes());
        let room = self.rooms.entry(name.clone()).or_insert_with(|| Room {
            slot,
            ..Room::default()
        });
        if !room.wanted {
            room.wanted = true;
            room.leaving = None;
            self.unsub_ready.remove(&name);
            self.delivery.push((name.clone(), true));
        }
        if room.on.is_some() && room.op != Some(OpKind::Unsubscribe) {
            let _ = waiter.send(Ok(()));
            return;
        }
        room.requested_at.get_or_insert(now);
        room.waiters.retain(|waiter| !waiter.is_closed());
        room.waiters.push(waiter);
        if room.op.is_none() && room.on.is_none() && !self.parked.contains(&name) {
            self.pending.insert(name);
        }
    }

    /// No longer wants `name`: silent at once, unsubscribed after the delay.
    pub(crate) fn unsubscribe(&mut self, name: &Topic, now: Instant) {
        let delay = self.settings.unsubscribe_delay;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if !room.wanted {
            return;
        }
        room.wanted = false;
        room.lost_at = None;
        room.requested_at = None;
        self.delivery.push((name.clone(), false));
        self.pending.remove(name);
        self.parked.remove(name);
        // A subscribe still waiting is superseded: it did what was asked.
        for waiter in room.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        if room.on.is_some() && room.op.is_none() {
            if delay.is_zero() {
                self.unsub_ready.insert(name.clone());
            } else {
                self.leave_generation += 1;
                room.leaving = Some(self.leave_generation);
                self.leave_queue
                    .push_back((now + delay, name.clone(), self.leave_generation));
            }
        }
        // A subscribe in flight is undone when it completes.
        self.forget_if_idle(name);
    }

    // ---- what to do -----------------------------------------------------

    /// What to start now.
    pub(crate) fn actions(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.expire_leaves(now);
        self.route(now, &mut actions);
        self.reconnect_lost(now, &mut actions);
        self.unsubscribes(&mut actions);
        if self.stale && !self.discovering && self.discover_at.is_none_or(|at| at <= now) {
            self.discovering = true;
            actions.push(Action::Discover);
        }
        if now >= self.next_ping {
            self.next_ping = now + self.settings.ping_interval;
            for (id, shard) in &mut self.shards {
                if shard.up && !shard.pinging {
                    shard.pinging = true;
                    actions.push(Action::Ping {
                        shard: Arc::clone(id),
                        generation: shard.generation,
                    });
                }
            }
        }
        actions
    }

    /// When [`actions`](Self::actions) may have something new without any
    /// other input.
    pub(crate) fn next_wake(&self) -> Instant {
        let mut wake = self.next_ping;
        if let Some((at, _, _)) = self.leave_queue.front() {
            wake = wake.min(*at);
        }
        if let Some(at) = self.discover_at
            && self.stale
            && !self.discovering
        {
            wake = wake.min(at);
        }
        if let Some(at) = self.next_connect {
            wake = wake.min(at);
        }
        if let Some(first) = self.first_recovery {
            wake = wake.min(first + self.settings.settle());
        }
        wake
    }

    fn expire_leaves(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.leave_queue.front() {
            if *at > now {
                break;
            }
            let Some((_, name, generation)) = self.leave_queue.pop_front() else {
                break;
            };
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            if room.leaving != Some(generation) {
                continue;
            }
            room.leaving = None;
            if !room.wanted && room.on.is_some() && room.op.is_none() {
                self.unsub_ready.insert(name.clone());
            }
            self.forget_if_idle(&name);
        }
    }

    /// Sends pending rooms to their shard, connecting shards as needed.
    fn route(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.next_connect = None;
        if self.pending.is_empty() {
            return;
        }
        let batch_size = self.settings.batch;
        let mut batches: HashMap<ShardId, Vec<Topic>> = HashMap::new();
        let mut unroutable = false;
        for name in &self.pending {
            let Some(room) = self.rooms.get(name) else {
                continue;
            };
            let owner = self.topology.as_ref().and_then(|t| t.owner(room.slot));
            let Some((owner, shard)) = owner.and_then(|id| Some((id, self.shards.get_mut(id)?)))
            else {
                unroutable = true;
                continue;
            };
            if shard.up {
                if !shard.busy {
                    let batch = batches.entry(Arc::clone(owner)).or_default();
                    if batch.len() < batch_size {
                        batch.push(name.clone());
                    }
                }
            } else {
                connect_when_due(shard, owner, now, &mut self.next_connect, actions);
            }
        }
        if unroutable {
            self.stale = true;
        }
        for (id, rooms) in batches {
            self.start_op(&id, OpKind::Subscribe, rooms, actions);
        }
    }

    /// Reconnects lost shards even when no room waits for them: the medium
    /// is reported back (and a readiness probe turns green) only then.
    fn reconnect_lost(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for id in &self.lost_shards {
            let Some(shard) = self.shards.get_mut(id) else {
                continue;
            };
            if !shard.up {
                connect_when_due(shard, id, now, &mut self.next_connect, actions);
            }
        }
    }

    fn unsubscribes(&mut self, actions: &mut Vec<Action>) {
        if self.unsub_ready.is_empty() {
            return;
        }
        let batch_size = self.settings.batch;
        let mut batches: HashMap<ShardId, Vec<Topic>> = HashMap::new();
        for name in &self.unsub_ready {
            let Some((id, generation)) = self.rooms.get(name).and_then(|room| room.on.clone())
            else {
                continue;
            };
            let Some(shard) = self.shards.get(&id) else {
                continue;
            };
            if shard.generation != generation || !shard.up || shard.busy {
                continue;
            }
            let batch = batches.entry(id).or_default();
            if batch.len() < batch_size {
                batch.push(name.clone());
            }
        }
        for (id, rooms) in batches {
            self.start_op(&id, OpKind::Unsubscribe, rooms, actions);
        }
    }

    fn start_op(
        &mut self,
        id: &ShardId,
        kind: OpKind,
        rooms: Vec<Topic>,
        actions: &mut Vec<Action>,
    ) {
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        shard.busy = true;
        for name in &rooms {
            if kind == OpKind::Unsubscribe {
                *shard.expected.entry(name.clone()).or_default() += 1;
            }
            if let Some(room) = self.rooms.get_mut(name) {
                room.op = Some(kind);
            }
            self.pending.remove(name);
            self.unsub_ready.remove(name);
        }
        actions.push(Action::Op {
            shard: Arc::clone(id),
            generation: shard.generation,
            kind,
            topics: rooms,
        });
    }

    // ---- reports --------------------------------------------------------

    /// Rooms lost and subscribed again, once every lost room is back (or
    /// the recovered ones waited the settle time for the rest), with the
    /// length of the outage.
    pub(crate) fn take_reconnected(&mut self, now: Instant) -> Option<(Vec<RoomName>, Duration)> {
        let medium_back = self.medium_lost.is_some() && self.lost_shards.is_empty();
        // Rooms lost, and while the medium recovers every room not yet
        // subscribed, are waited for (or for the settle time).
        let recovering = self.medium_lost.is_some();
        let still_lost = self.rooms.values().any(|room| {
            room.wanted && (room.lost_at.is_some() || (recovering && room.on.is_none()))
        });
        let first = match self.first_recovery {
            Some(first) => first,
            // The medium is back and had no room to lose.
            None if medium_back && !still_lost => now,
            None => return None,
        };
        if still_lost && now.duration_since(first) < self.settings.settle() {
            return None;
        }
        self.first_recovery = None;
        let since = [self.recovered_since.take(), self.medium_lost]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(first);
        if medium_back {
            self.medium_lost = None;
        }
        let mut rooms: Vec<RoomName> = std::mem::take(&mut self.recovered)
            .into_iter()
            .filter(|name| self.rooms.get(name).is_some_and(|room| room.wanted))
            .filter_map(|name| name.room().cloned())
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        if rooms.is_empty() && !medium_back {
            return None;
        }
        Some((rooms, now.duration_since(since)))
    }

    /// The reason of a `MediumLost` to report, once per outage.
    pub(crate) fn take_medium_lost(&mut self) -> Option<String> {
        self.lost_report.take()
    }

    /// Rooms Redis refused since the last call.
    pub(crate) fn take_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.refusals)
    }

    /// Rooms whose delivery starts (`true`) or stops since the last call.
    pub(crate) fn take_delivery(&mut self) -> Vec<(Topic, bool)> {
        std::mem::take(&mut self.delivery)
    }

    /// Answers the waiters whose subscription was settled since the last
    /// call.
    pub(crate) fn answer_waiters(&mut self) {
        for (waiter, answer) in self.answers.drain(..) {
            let _ = waiter.send(answer);
        }
    }

    /// Rooms (not control channels) wanted and subscribed now.
    pub(crate) fn live(&self) -> usize {
        self.rooms
            .iter()
            .filter(|(name, room)| name.is_room() && room.wanted && room.on.is_some())
            .count()
    }

    /// Whether `name` is subscribed on Redis now (wanted or not).
    #[cfg(test)]
    pub(crate) fn on_redis(&self, name: &Topic) -> bool {
        self.rooms.get(name).is_some_and(|room| room.on.is_some())
    }

    /// Whether the table still tracks `name`.
    #[cfg(test)]
    pub(crate) fn tracks(&self, name: &Topic) -> bool {
        self.rooms.contains_key(name)
    }

    /// Fails every waiter: the subscriber stops.
    pub(crate) fn close(&mut self) {
        for room in self.rooms.values_mut() {
            for waiter in room.waiters.drain(..) {
                let _ = waiter.send(Err(crate::error::closed()));
            }
        }
    }

    fn forget_if_idle(&mut self, name: &Topic) {
        if self.rooms.get(name).is_some_and(Room::idle) {
            self.rooms.remove(name);
        }
    }
}

#[path = "table_outcomes.rs"]
mod outcomes;
#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
