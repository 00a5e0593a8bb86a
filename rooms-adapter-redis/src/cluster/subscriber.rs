//! The cluster subscriber: one RESP3 connection per master (shard), all owned
//! by one background task.
//!
//! - Every wanted room's channel `{prefix}{room}` has a hash slot; the slot map
//!   (`CLUSTER SLOTS`) says which master serves it, and the room is
//!   `SSUBSCRIBE`d on that master's connection.
//! - While a subscribe batch is in flight on a shard, further rooms for it are
//!   collected and sent together (up to the batch size) as one pipeline of
//!   one-channel `SSUBSCRIBE`s: one round trip per shard per batch, and never
//!   `CROSSSLOT` (a multi-channel `SSUBSCRIBE` must stay within one slot, and
//!   rooms rarely share one of the 16,384 slots). `subscribe` returns once
//!   Redis has acknowledged the room's channel.
//! - Messages (`smessage` pushes) are decoded and handed to the engine right
//!   in the connection's read loop, through [`EventSink::send`] (never waits;
//!   a full queue is a counted drop). Only rooms wanted now are delivered.
//! - When Redis drops channels itself (a `sunsubscribe` the task did not ask
//!   for: their slot moved, by resharding or failover) or a shard connection
//!   dies, the slot map is fetched again and the affected rooms are
//!   subscribed on their new owner; once every lost room is back,
//!   [`AdapterEvent::Reconnected`] lists them with the length of the outage.
//! - A PING per shard every `ping_interval` must be answered within
//!   `ping_timeout`; otherwise the shard connection counts as lost.
//! - Reconnects and slot-map refreshes back off exponentially, with jitter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    Value,
};
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, SinkOutcome};
use rooms_adapter::{Error, RoomName, wire};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::slot::{ShardId, SlotMap, Topology, key_slot, shard_id};
use crate::config::RedisConfig;
use crate::error::{closed, from_redis, timeout};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many queued commands or control notices are handled per wake-up.
const DRAIN: usize = 512;

/// The longest wait between two slot-map refreshes while one is needed.
const MAX_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// A request from the adapter to the subscriber task: the single-server one's.
pub(crate) use crate::subscriber::Command;

/// What the task shares with the adapter.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    /// Seed nodes: where the slot map is asked for when no known master answers,
    /// and the template (credentials, TLS) for connections to masters.
    pub(crate) seeds: Vec<ConnectionInfo>,
    pub(crate) medium: String,
    pub(crate) counters: Arc<AdapterCounters>,
    /// Rooms wanted and acknowledged by Redis now.
    pub(crate) subscriptions: Arc<AtomicU64>,
    /// The slot map, shared with the publish driver.
    pub(crate) slots: Arc<SlotMap>,
}

/// A notice from a shard connection's read loop to the task. Only the
/// server's subscription bookkeeping travels here (bounded by the number of
/// subscriptions), never messages.
enum Control {
    /// Redis confirmed or announced that a channel is no longer subscribed.
    SUnsubscribed {
        shard: ShardId,
        generation: u64,
        channel: Vec<u8>,
    },
    /// The connection closed.
    Disconnected { shard: ShardId, generation: u64 },
}

/// State the shard connections' read loops use to deliver messages.
struct Inbound {
    prefix: String,
    max_payload: usize,
    counters: Arc<AdapterCounters>,
    sink: EventSink,
    /// Rooms whose messages are delivered. Written by the task (never across
    /// an await), read per message.
    wanted: RwLock<HashSet<RoomName>>,
    closed: AtomicBool,
    control: mpsc::UnboundedSender<Control>,
}

impl Inbound {
    fn on_push(&self, shard: &ShardId, generation: u64, info: PushInfo) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        match info.kind {
            PushKind::SMessage | PushKind::Message => {
                if let (Some(channel), Some(payload)) =
                    (bytes(info.data.first()), bytes(info.data.get(1)))
                {
                    self.deliver(channel, payload);
                }
            }
            PushKind::SUnsubscribe => {
                if let Some(channel) = bytes(info.data.first()) {
                    let _ = self.control.send(Control::SUnsubscribed {
                        shard: Arc::clone(shard),
                        generation,
                        channel: channel.to_vec(),
                    });
                }
            }
            PushKind::Disconnection => {
                let _ = self.control.send(Control::Disconnected {
                    shard: Arc::clone(shard),
                    generation,
                });
            }
            _ => {}
        }
    }

    fn deliver(&self, channel: &[u8], payload: &[u8]) {
        let Some(room) = channel
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|room| std::str::from_utf8(room).ok())
        else {
            return;
        };
        let room = {
            let wanted = self.wanted.read().unwrap_or_else(PoisonError::into_inner);
            match wanted.get(room) {
                Some(room) => room.clone(),
                None => return,
            }
        };
        match wire::decode(payload, self.max_payload) {
            Err(error) => self.counters.record_decode_error(room.as_str(), &error),
            Ok(envelope) => {
                self.counters.record_received();
                if self.sink.send(AdapterEvent::Message { room, envelope }) == SinkOutcome::Closed {
                    self.closed.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    fn set_wanted(&self, room: &RoomName, wanted: bool) {
        let mut set = self.wanted.write().unwrap_or_else(PoisonError::into_inner);
        if wanted {
            set.insert(room.clone());
        } else {
            set.remove(room);
        }
    }
}

fn bytes(value: Option<&Value>) -> Option<&[u8]> {
    match value? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Subscribe,
    Unsubscribe,
}

/// What a finished background future reports.
enum Done {
    Connected {
        shard: ShardId,
        generation: u64,
        result: Result<MultiplexedConnection, Error>,
    },
    Op {
        shard: ShardId,
        generation: u64,
        kind: OpKind,
        rooms: Vec<RoomName>,
        result: Result<Vec<Value>, String>,
    },
    Ping {
        shard: ShardId,
        generation: u64,
        result: Result<(), String>,
    },
    Topology(Result<Topology, Error>),
}

#[derive(Default)]
struct Room {
    wanted: bool,
    slot: u16,
    /// Subscribed on this shard connection (shard, generation).
    on: Option<(ShardId, u64)>,
    /// A SSUBSCRIBE / SUNSUBSCRIBE for it is in flight.
    op: Option<OpKind>,
    /// The unsubscribe delay is running (its generation).
    leaving: Option<u64>,
    /// It was subscribed and lost (connection loss, slot moved) at this time.
    lost_at: Option<Instant>,
    /// When `subscribe` was last asked for it while not subscribed.
    requested_at: Option<Instant>,
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
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

struct Shard {
    host: String,
    port: u16,
    connection: Option<MultiplexedConnection>,
    generation: u64,
    connecting: bool,
    attempt: u32,
    retry_at: Option<Instant>,
    /// Rooms subscribed on the current connection.
    rooms: HashSet<RoomName>,
    /// A SSUBSCRIBE or SUNSUBSCRIBE pipeline is in flight.
    busy: bool,
    pinging: bool,
    /// SUNSUBSCRIBE confirmations this task asked for, by channel: any other
    /// `sunsubscribe` is Redis dropping the channel itself.
    expected_sunsubscribes: HashMap<Vec<u8>, u32>,
}

impl Shard {
    fn new(host: String, port: u16) -> Self {
        Self {
            host,
            port,
            connection: None,
            generation: 0,
            connecting: false,
            attempt: 0,
            retry_at: None,
            rooms: HashSet::new(),
            busy: false,
            pinging: false,
            expected_sunsubscribes: HashMap::new(),
        }
    }
}

struct State {
    shared: Arc<Shared>,
    inbound: Arc<Inbound>,
    rooms: HashMap<RoomName, Room>,
    /// Wanted, not subscribed, nothing in flight: to be routed to a shard.
    pending: HashSet<RoomName>,
    /// Wanted rooms that Redis answered with a cluster error (`MOVED`,
    /// `CLUSTERDOWN`, ...): routed again after the next slot-map refresh.
    parked: HashSet<RoomName>,
    /// Not wanted, subscribed, nothing in flight, delay over: to SUNSUBSCRIBE.
    unsub_ready: HashSet<RoomName>,
    leave_queue: VecDeque<(Instant, RoomName, u64)>,
    leave_generation: u64,
    shards: HashMap<ShardId, Shard>,
    topology: Option<Topology>,
    /// The slot map may be out of date.
    stale: bool,
    refreshing: bool,
    refresh_attempt: u32,
    refresh_at: Option<Instant>,
    next_ping: Instant,
    /// When the next shard reconnect that a pending room waits for is due.
    next_connect: Option<Instant>,
    /// Lost rooms that are subscribed again, not yet reported.
    recovered: Vec<RoomName>,
    recovered_since: Option<Instant>,
    first_recovery: Option<Instant>,
    futures: FuturesUnordered<BoxFuture<Done>>,
}

/// Fetches the slot map from the first candidate that answers.
pub(crate) async fn fetch_topology(
    candidates: Vec<ConnectionInfo>,
    limit: Duration,
    medium: String,
) -> Result<Topology, Error> {
    let mut last = None;
    for info in candidates {
        let host = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            ConnectionAddr::Unix(_) => String::new(),
            #[allow(unreachable_patterns)]
            _ => String::new(),
        };
        let attempt = async {
            let client = redis::Client::open(info)
                .map_err(|error| from_redis("open cluster node", &medium, error))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|error| from_redis("connect for CLUSTER SLOTS", &medium, error))?;
            let reply: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut connection)
                .await
                .map_err(|error| from_redis("CLUSTER SLOTS", &medium, error))?;
            Topology::from_cluster_slots(&reply, &host).map_err(|reason| Error::Backend {
                context: format!("CLUSTER SLOTS on {medium}"),
                retryable: true,
                source: Box::new(crate::error::Message(reason)),
            })
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(topology)) => return Ok(topology),
            Ok(Err(error)) => last = Some(error),
            Err(_) => last = Some(timeout(format!("CLUSTER SLOTS on {medium}"), limit)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Unavailable {
        medium,
        reason: "no cluster node to ask for the slot map".into(),
        source: None,
    }))
}

/// The connection settings of a seed with another address.
fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

/// Runs the subscriber until `shutdown` flips (or the engine goes away).
pub(crate) async fn run(
    shared: Arc<Shared>,
    sink: EventSink,
    topology: Topology,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    let (control_tx, mut control) = mpsc::unbounded_channel();
    let inbound = Arc::new(Inbound {
        prefix: config.channel_prefix.clone(),
        max_payload: config.max_payload_bytes,
        counters: Arc::clone(&shared.counters),
        sink,
        wanted: RwLock::new(HashSet::new()),
        closed: AtomicBool::new(false),
        control: control_tx,
    });
    let mut state = State {
        shared,
        inbound,
        rooms: HashMap::new(),
        pending: HashSet::new(),
        parked: HashSet::new(),
        unsub_ready: HashSet::new(),
        leave_queue: VecDeque::new(),
        leave_generation: 0,
        shards: HashMap::new(),
        topology: None,
        stale: false,
        refreshing: false,
        refresh_attempt: 0,
        refresh_at: None,
        next_ping: Instant::now() + config.ping_interval,
        next_connect: None,
        recovered: Vec::new(),
        recovered_since: None,
        first_recovery: None,
        futures: FuturesUnordered::new(),
    };
    state.apply_topology(topology);

    loop {
        let now = Instant::now();
        state.drive(now);
        state.publish_live();
        if let Some(event) = state.take_reconnected(now) {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                outcome = state.inbound.sink.send_lifecycle(event) => {
                    if outcome == SinkOutcome::Closed {
                        break;
                    }
                }
            }
        }
        if state.inbound.closed.load(Ordering::Relaxed) {
            tracing::debug!("engine gone; redis cluster subscriber stops");
            break;
        }
        let wake = state.next_wake();
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(done) = state.futures.next(), if !state.futures.is_empty() => {
                state.done(done);
            }
            notice = control.recv() => {
                if let Some(notice) = notice {
                    state.control(notice);
                    for _ in 1..DRAIN {
                        match control.try_recv() {
                            Ok(notice) => state.control(notice),
                            Err(_) => break,
                        }
                    }
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                state.handle(command);
                for _ in 1..DRAIN {
                    match commands.try_recv() {
                        Ok(command) => state.handle(command),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    state.close();
}

impl State {
    fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    fn channel(&self, room: &RoomName) -> String {
        wire::channel_name(&self.config().channel_prefix, room.as_str())
    }

    fn publish_live(&self) {
        let live = self
            .rooms
            .values()
            .filter(|room| room.wanted && room.on.is_some())
            .count();
        self.shared
            .subscriptions
            .store(live as u64, Ordering::Relaxed);
    }

    // ---- commands -------------------------------------------------------

    fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe { room, reply } => self.subscribe(room, reply),
            Command::Unsubscribe { room, reply } => {
                self.unsubscribe(room);
                let _ = reply.send(());
            }
        }
    }

    fn subscribe(&mut self, name: RoomName, reply: oneshot::Sender<Result<(), Error>>) {
        let prefix = self.config().channel_prefix.clone();
        let entry = self.rooms.entry(name.clone()).or_insert_with(|| Room {
            slot: key_slot(wire::channel_name(&prefix, name.as_str()).as_bytes()),
            ..Room::default()
        });
        if !entry.wanted {
            entry.wanted = true;
            entry.leaving = None;
            self.unsub_ready.remove(&name);
            self.inbound.set_wanted(&name, true);
        }
        let ready = entry.on.is_some() && entry.op != Some(OpKind::Unsubscribe);
        if ready {
            let _ = reply.send(Ok(()));
            return;
        }
        entry.requested_at.get_or_insert_with(Instant::now);
        entry.waiters.retain(|waiter| !waiter.is_closed());
        entry.waiters.push(reply);
        if entry.op.is_none() && entry.on.is_none() && !self.parked.contains(&name) {
            self.pending.insert(name);
        }
    }

    fn unsubscribe(&mut self, name: RoomName) {
        let delay = self.config().unsubscribe_delay;
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        if !room.wanted {
            return;
        }
        room.wanted = false;
        room.lost_at = None;
        room.requested_at = None;
        self.inbound.set_wanted(&name, false);
        self.pending.remove(&name);
        self.parked.remove(&name);
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
                self.leave_queue.push_back((
                    Instant::now() + delay,
                    name.clone(),
                    self.leave_generation,
                ));
            }
        }
        // A subscribe in flight is undone when it completes.
        self.forget_if_idle(&name);
    }

    fn forget_if_idle(&mut self, name: &RoomName) {
        if self.rooms.get(name).is_some_and(Room::idle) {
            self.rooms.remove(name);
        }
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

    // ---- driving I/O ----------------------------------------------------

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_ping;
        if let Some((at, _, _)) = self.leave_queue.front() {
            wake = wake.min(*at);
        }
        if let Some(at) = self.refresh_at
            && (self.stale && !self.refreshing)
        {
            wake = wake.min(at);
        }
        if let Some(at) = self.next_connect {
            wake = wake.min(at);
        }
        if let Some(first) = self.first_recovery {
            wake = wake.min(first + self.settle());
        }
        wake
    }

    /// How long recovered rooms wait for the other lost rooms before they are
    /// reported on their own.
    fn settle(&self) -> Duration {
        (self.config().backoff.max() * 4).max(Duration::from_secs(2))
    }

    fn drive(&mut self, now: Instant) {
        if self.shared.slots.take_stale() && !self.stale {
            self.stale = true;
            self.refresh_at = None;
        }
        self.expire_leaves(now);
        self.route(now);
        self.start_unsubscribes();
        if self.stale && !self.refreshing && self.refresh_at.is_none_or(|at| at <= now) {
            self.start_refresh();
        }
        if now >= self.next_ping {
            self.next_ping = now + self.config().ping_interval;
            let ids: Vec<ShardId> = self.shards.keys().cloned().collect();
            for id in ids {
                self.start_ping(&id);
            }
        }
    }

    /// Sends pending rooms to their shard (connecting it when needed).
    fn route(&mut self, now: Instant) {
        self.next_connect = None;
        if self.pending.is_empty() {
            return;
        }
        let batch_size = self.config().subscribe_batch;
        let mut batches: HashMap<ShardId, Vec<RoomName>> = HashMap::new();
        let mut to_connect: HashSet<ShardId> = HashSet::new();
        let mut unroutable = false;
        for name in &self.pending {
            let Some(room) = self.rooms.get(name) else {
                continue;
            };
            let owner = self
                .topology
                .as_ref()
                .and_then(|topology| topology.owner(room.slot));
            let Some(owner) = owner else {
                unroutable = true;
                continue;
            };
            let Some(shard) = self.shards.get(owner) else {
                unroutable = true;
                continue;
            };
            if shard.connection.is_some() {
                if !shard.busy {
                    let batch = batches.entry(Arc::clone(owner)).or_default();
                    if batch.len() < batch_size {
                        batch.push(name.clone());
                    }
                }
            } else if !shard.connecting {
                match shard.retry_at {
                    Some(at) if at > now => {
                        self.next_connect = Some(self.next_connect.map_or(at, |n| n.min(at)));
                    }
                    _ => {
                        to_connect.insert(Arc::clone(owner));
                    }
                }
            }
        }
        if unroutable {
            self.stale = true;
        }
        for id in to_connect {
            self.start_connect(&id);
        }
        for (id, rooms) in batches {
            self.start_op(&id, OpKind::Subscribe, rooms);
        }
    }

    fn start_unsubscribes(&mut self) {
        if self.unsub_ready.is_empty() {
            return;
        }
        let batch_size = self.config().subscribe_batch;
        let mut batches: HashMap<ShardId, Vec<RoomName>> = HashMap::new();
        for name in &self.unsub_ready {
            let Some((id, generation)) = self.rooms.get(name).and_then(|room| room.on.clone())
            else {
                continue;
            };
            let Some(shard) = self.shards.get(&id) else {
                continue;
            };
            if shard.generation != generation || shard.connection.is_none() || shard.busy {
                continue;
            }
            let batch = batches.entry(id).or_default();
            if batch.len() < batch_size {
                batch.push(name.clone());
            }
        }
        for (id, rooms) in batches {
            self.start_op(&id, OpKind::Unsubscribe, rooms);
        }
    }

    fn start_op(&mut self, id: &ShardId, kind: OpKind, rooms: Vec<RoomName>) {
        let channels: Vec<String> = rooms.iter().map(|room| self.channel(room)).collect();
        let limit = self.config().subscribe_timeout;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        let Some(connection) = shard.connection.clone() else {
            return;
        };
        shard.busy = true;
        let generation = shard.generation;
        for (name, channel) in rooms.iter().zip(&channels) {
            if kind == OpKind::Unsubscribe {
                *shard
                    .expected_sunsubscribes
                    .entry(channel.as_bytes().to_vec())
                    .or_default() += 1;
            }
            if let Some(room) = self.rooms.get_mut(name) {
                room.op = Some(kind);
            }
            self.pending.remove(name);
            self.unsub_ready.remove(name);
        }
        let name = match kind {
            OpKind::Subscribe => "SSUBSCRIBE",
            OpKind::Unsubscribe => "SUNSUBSCRIBE",
        };
        let shard_id = Arc::clone(id);
        self.futures.push(Box::pin(async move {
            let mut connection = connection;
            let mut pipe = redis::pipe();
            for channel in &channels {
                pipe.cmd(name).arg(channel.as_bytes());
            }
            let result = match tokio::time::timeout(
                limit,
                connection.req_packed_commands(&pipe, 0, channels.len()),
            )
            .await
            {
                Ok(Ok(values)) => Ok(values),
                Ok(Err(error)) => Err(format!(
                    "{name} of {} channels failed: {error}",
                    channels.len()
                )),
                Err(_) => Err(format!(
                    "{name} of {} channels unacknowledged after {limit:?}",
                    channels.len()
                )),
            };
            Done::Op {
                shard: shard_id,
                generation,
                kind,
                rooms,
                result,
            }
        }));
    }

    fn start_connect(&mut self, id: &ShardId) {
        let Some(template) = self.shared.seeds.first() else {
            return;
        };
        let limit = self.config().connect_timeout;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        shard.connecting = true;
        shard.generation += 1;
        let generation = shard.generation;
        let info = node_info(template, &shard.host, shard.port);
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let inbound = Arc::clone(&self.inbound);
        let shard_id = Arc::clone(id);
        let push_shard = Arc::clone(id);
        let medium = format!("redis cluster node {id}");
        self.futures.push(Box::pin(async move {
            let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
                inbound.on_push(&push_shard, generation, info);
                Ok(())
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit))
                .set_push_sender(push);
            let attempt = async {
                let client = redis::Client::open(info)
                    .map_err(|error| from_redis("open shard subscriber", &medium, error))?;
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|error| from_redis("connect shard subscriber", &medium, error))
            };
            let result = match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_) => Err(timeout(
                    format!("connect shard subscriber to {medium}"),
                    limit,
                )),
            };
            Done::Connected {
                shard: shard_id,
                generation,
                result,
            }
        }));
    }

    fn start_ping(&mut self, id: &ShardId) {
        let limit = self.config().ping_timeout;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.pinging {
            return;
        }
        let Some(mut connection) = shard.connection.clone() else {
            return;
        };
        shard.pinging = true;
        let generation = shard.generation;
        let shard_id = Arc::clone(id);
        self.futures.push(Box::pin(async move {
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut connection);
            let result = match tokio::time::timeout(limit, ping).await {
                Ok(Ok(Value::SimpleString(pong))) if pong == "PONG" => Ok(()),
                Ok(Ok(Value::BulkString(pong))) if pong == b"PONG" => Ok(()),
                Ok(Ok(other)) => Err(format!("liveness probe answered {other:?}")),
                Ok(Err(error)) => Err(format!("liveness probe failed: {error}")),
                Err(_) => Err(format!("liveness probe unanswered after {limit:?}")),
            };
            Done::Ping {
                shard: shard_id,
                generation,
                result,
            }
        }));
    }

    fn start_refresh(&mut self) {
        self.refreshing = true;
        let mut candidates = Vec::new();
        let mut seen = HashSet::new();
        if let Some(template) = self.shared.seeds.first() {
            // Masters this task is connected to first, then the others it knows.
            let mut known: Vec<(&ShardId, &Shard)> = self.shards.iter().collect();
            known.sort_by_key(|(_, shard)| shard.connection.is_none());
            for (id, shard) in known {
                if seen.insert(Arc::clone(id)) {
                    candidates.push(node_info(template, &shard.host, shard.port));
                }
            }
        }
        for seed in &self.shared.seeds {
            let id: ShardId = match seed.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    Arc::from(shard_id(host, *port))
                }
                other => Arc::from(other.to_string()),
            };
            if seen.insert(id) {
                candidates.push(seed.clone());
            }
        }
        let limit = self.config().connect_timeout;
        let medium = self.shared.medium.clone();
        self.futures.push(Box::pin(async move {
            Done::Topology(fetch_topology(candidates, limit, medium).await)
        }));
    }

    // ---- results ----------------------------------------------------------

    fn done(&mut self, done: Done) {
        match done {
            Done::Connected {
                shard,
                generation,
                result,
            } => self.connected(&shard, generation, result),
            Done::Op {
                shard,
                generation,
                kind,
                rooms,
                result,
            } => self.op_done(&shard, generation, kind, rooms, result),
            Done::Ping {
                shard,
                generation,
                result,
            } => {
                let Some(state) = self.shards.get_mut(&shard) else {
                    return;
                };
                if state.generation != generation {
                    return;
                }
                state.pinging = false;
                if let Err(reason) = result {
                    self.lost(&shard, &reason);
                }
            }
            Done::Topology(result) => {
                self.refreshing = false;
                for name in std::mem::take(&mut self.parked) {
                    if self
                        .rooms
                        .get(&name)
                        .is_some_and(|room| room.wanted && room.on.is_none() && room.op.is_none())
                    {
                        self.pending.insert(name);
                    }
                }
                match result {
                    Ok(topology) => {
                        let complete = topology.is_complete();
                        self.apply_topology(topology);
                        self.stale = false;
                        if complete {
                            self.refresh_attempt = 0;
                        } else {
                            // Some slots have no master (yet): ask again later.
                            self.stale = true;
                            self.refresh_attempt = self.refresh_attempt.saturating_add(1);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, attempt = self.refresh_attempt, "redis cluster slot map refresh failed");
                        self.refresh_attempt = self.refresh_attempt.saturating_add(1);
                    }
                }
                // Asking for the slot map is cheap: back off, but never
                // beyond MAX_REFRESH_DELAY, so a room whose master changed is
                // back soon after the cluster settles.
                let delay = self
                    .config()
                    .backoff
                    .delay(self.refresh_attempt)
                    .min(MAX_REFRESH_DELAY);
                self.refresh_at = Some(Instant::now() + delay);
            }
        }
    }

    fn connected(
        &mut self,
        id: &ShardId,
        generation: u64,
        result: Result<MultiplexedConnection, Error>,
    ) {
        let backoff = self.config().backoff;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.generation != generation {
            return;
        }
        shard.connecting = false;
        match result {
            Ok(connection) => {
                tracing::debug!(shard = %id, "redis cluster shard subscriber connected");
                shard.connection = Some(connection);
                shard.attempt = 0;
                shard.retry_at = None;
                shard.busy = false;
                shard.pinging = false;
            }
            Err(error) => {
                shard.attempt = shard.attempt.saturating_add(1);
                let delay = backoff.delay(shard.attempt);
                tracing::debug!(shard = %id, %error, ?delay, "redis cluster shard subscriber connect failed");
                shard.retry_at = Some(Instant::now() + delay);
                // The master may be gone: its slots may have moved.
                self.stale = true;
            }
        }
    }

    fn op_done(
        &mut self,
        id: &ShardId,
        generation: u64,
        kind: OpKind,
        rooms: Vec<RoomName>,
        result: Result<Vec<Value>, String>,
    ) {
        let current = self
            .shards
            .get(id)
            .is_some_and(|shard| shard.generation == generation);
        if current && let Some(shard) = self.shards.get_mut(id) {
            shard.busy = false;
        }
        let values = match result {
            Ok(values) if values.len() == rooms.len() => Some(values),
            Ok(values) => {
                if current {
                    self.lost(
                        id,
                        &format!(
                            "{kind:?}: {} replies for {} channels",
                            values.len(),
                            rooms.len()
                        ),
                    );
                }
                None
            }
            Err(reason) => {
                if current {
                    self.lost(id, &reason);
                }
                None
            }
        };
        let Some(values) = values.filter(|_| current) else {
            // Nothing was confirmed: put the rooms back as they were.
            for name in rooms {
                self.op_abandoned(&name, kind);
            }
            return;
        };
        let mut desync = None;
        let now = Instant::now();
        for (name, value) in rooms.into_iter().zip(values) {
            let channel = self.channel(&name);
            match (kind, &value) {
                (
                    OpKind::Subscribe,
                    Value::Push {
                        kind: PushKind::SSubscribe,
                        data,
                    },
                ) if bytes(data.first()) == Some(channel.as_bytes()) => {
                    self.sub_confirmed(id, generation, &name, now);
                }
                (
                    OpKind::Unsubscribe,
                    Value::Push {
                        kind: PushKind::SUnsubscribe,
                        data,
                    },
                ) if bytes(data.first()) == Some(channel.as_bytes()) => {
                    self.unsub_confirmed(id, &name);
                }
                (_, Value::ServerError(error)) => {
                    if kind == OpKind::Unsubscribe {
                        // No confirmation will come for this one.
                        self.unexpect_sunsubscribe(id, channel.as_bytes());
                    }
                    let error = redis::RedisError::from(error.clone());
                    self.op_refused(&name, kind, error);
                }
                (_, other) => {
                    desync.get_or_insert_with(|| {
                        format!("{kind:?} of {channel:?} answered {other:?}")
                    });
                    self.op_abandoned(&name, kind);
                }
            }
        }
        if let Some(reason) = desync {
            self.lost(id, &reason);
        }
    }

    fn unexpect_sunsubscribe(&mut self, id: &ShardId, channel: &[u8]) {
        if let Some(shard) = self.shards.get_mut(id)
            && let Some(expected) = shard.expected_sunsubscribes.get_mut(channel)
        {
            *expected = expected.saturating_sub(1);
            if *expected == 0 {
                shard.expected_sunsubscribes.remove(channel);
            }
        }
    }

    fn sub_confirmed(&mut self, id: &ShardId, generation: u64, name: &RoomName, now: Instant) {
        let timeout = self.config().subscribe_timeout;
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.op = None;
        room.on = Some((Arc::clone(id), generation));
        if let Some(shard) = self.shards.get_mut(id) {
            shard.rooms.insert(name.clone());
        }
        if room.wanted {
            // Counted before the waiters wake (the loop recounts exactly).
            self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
            for waiter in room.waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
            // A room whose `subscribe` gave up (timed out) is reported as
            // reconnected, as the contract says.
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

    fn unsub_confirmed(&mut self, id: &ShardId, name: &RoomName) {
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

    /// The op did not happen (connection lost, desync): back to square one.
    fn op_abandoned(&mut self, name: &RoomName, kind: OpKind) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if room.op != Some(kind) {
            return;
        }
        room.op = None;
        match kind {
            OpKind::Subscribe => {
                if room.wanted {
                    self.pending.insert(name.clone());
                }
            }
            OpKind::Unsubscribe => {
                // Still subscribed on a live connection: try again; on a lost
                // one, `lost` already cleared `on`.
                if let Some((shard, generation)) = &room.on {
                    let alive = self
                        .shards
                        .get(shard)
                        .is_some_and(|s| s.generation == *generation && s.connection.is_some());
                    if !alive {
                        room.on = None;
                    } else if room.wanted {
                        // Wanted again meanwhile: it stays subscribed.
                    } else {
                        self.unsub_ready.insert(name.clone());
                    }
                }
                if room.wanted && room.on.is_none() {
                    self.pending.insert(name.clone());
                }
            }
        }
        self.forget_if_idle(name);
    }

    /// Redis answered one channel with an error.
    fn op_refused(&mut self, name: &RoomName, kind: OpKind, error: redis::RedisError) {
        let topology_error = matches!(
            error.code(),
            Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN" | "LOADING" | "MASTERDOWN")
        );
        if topology_error || kind == OpKind::Unsubscribe {
            // The slot is served elsewhere (or nowhere right now): ask for the
            // slot map again and retry. An unsubscribe that fails this way
            // means the channel is not subscribed here anymore.
            self.stale = true;
            if kind == OpKind::Unsubscribe
                && let Some(room) = self.rooms.get_mut(name)
                && room.op == Some(kind)
            {
                if let Some((shard, _)) = room.on.take()
                    && let Some(shard) = self.shards.get_mut(&shard)
                {
                    shard.rooms.remove(name);
                }
                room.op = None;
                if room.wanted {
                    self.pending.insert(name.clone());
                }
                self.forget_if_idle(name);
            } else {
                self.op_abandoned(name, kind);
                // Retried after the next slot-map refresh, which backs off:
                // no SSUBSCRIBE storm while the cluster is down.
                if self.pending.remove(name) {
                    self.parked.insert(name.clone());
                }
            }
            return;
        }
        tracing::warn!(medium = %self.shared.medium, %error, room = name.as_str(), "redis refused SSUBSCRIBE");
        let medium = self.shared.medium.clone();
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.op = None;
        room.wanted = false;
        room.lost_at = None;
        room.requested_at = None;
        self.inbound.set_wanted(name, false);
        for waiter in room.waiters.drain(..) {
            let _ = waiter.send(Err(from_redis(
                &format!("subscribe to room {:?}", name.as_str()),
                &medium,
                error.clone(),
            )));
        }
        self.forget_if_idle(name);
    }

    fn control(&mut self, notice: Control) {
        match notice {
            Control::Disconnected { shard, generation } => {
                if self
                    .shards
                    .get(&shard)
                    .is_some_and(|s| s.generation == generation && s.connection.is_some())
                {
                    self.lost(&shard, "connection closed");
                }
            }
            Control::SUnsubscribed {
                shard: id,
                generation,
                channel,
            } => {
                let Some(shard) = self.shards.get_mut(&id) else {
                    return;
                };
                if shard.generation != generation {
                    return;
                }
                if let Some(expected) = shard.expected_sunsubscribes.get_mut(&channel) {
                    *expected -= 1;
                    if *expected == 0 {
                        shard.expected_sunsubscribes.remove(&channel);
                    }
                    return;
                }
                // Redis dropped the channel itself: its slot moved.
                let Some(name) = channel
                    .strip_prefix(self.shared.config.channel_prefix.as_bytes())
                    .and_then(|room| std::str::from_utf8(room).ok())
                    .map(RoomName::from)
                else {
                    return;
                };
                tracing::info!(shard = %id, room = name.as_str(), "redis cluster moved a room's slot; re-subscribing on its new master");
                self.stale = true;
                self.refresh_at = None;
                shard.rooms.remove(&name);
                let Some(room) = self.rooms.get_mut(&name) else {
                    return;
                };
                if room
                    .on
                    .as_ref()
                    .is_some_and(|(s, g)| *s == id && *g == generation)
                {
                    room.on = None;
                    if room.wanted {
                        room.lost_at.get_or_insert_with(Instant::now);
                        if room.op.is_none() {
                            self.pending.insert(name.clone());
                        }
                    } else {
                        self.unsub_ready.remove(&name);
                    }
                }
                self.forget_if_idle(&name);
            }
        }
    }

    /// A shard connection is gone: its rooms are lost until re-subscribed.
    fn lost(&mut self, id: &ShardId, reason: &str) {
        let now = Instant::now();
        let backoff = self.config().backoff;
        let Some(shard) = self.shards.get_mut(id) else {
            return;
        };
        if shard.connection.take().is_some() {
            tracing::warn!(medium = %self.shared.medium, shard = %id, %reason, rooms = shard.rooms.len(), "redis cluster shard connection lost; reconnecting");
        }
        shard.generation += 1;
        shard.connecting = false;
        shard.busy = false;
        shard.pinging = false;
        shard.expected_sunsubscribes.clear();
        shard.retry_at = Some(now + backoff.delay(0));
        let rooms: Vec<RoomName> = shard.rooms.drain().collect();
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
        self.refresh_at = None;
    }

    fn apply_topology(&mut self, topology: Topology) {
        let changed = self.topology.as_ref() != Some(&topology);
        for (id, host, port) in topology.masters() {
            self.shards
                .entry(Arc::clone(id))
                .or_insert_with(|| Shard::new(host.to_owned(), port));
        }
        if changed {
            tracing::debug!(?topology, "redis cluster slot map");
            // Rooms subscribed on a master that no longer serves their slot
            // will not hear from it again: re-subscribe them on the new one.
            let now = Instant::now();
            let mut moved = Vec::new();
            for (name, room) in &self.rooms {
                if let Some((shard, _)) = &room.on
                    && topology.owner(room.slot) != Some(shard)
                {
                    moved.push(name.clone());
                }
            }
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
            // Masters that left the slot map and hold nothing: close.
            let masters: HashSet<&ShardId> = topology.masters().map(|(id, _, _)| id).collect();
            self.shards
                .retain(|id, shard| masters.contains(id) || !shard.rooms.is_empty() || shard.busy);
        }
        self.shared.slots.set(Arc::new(topology.clone()));
        self.topology = Some(topology);
    }

    /// The `Reconnected` event, once every lost room is subscribed again (or
    /// the recovered ones have waited long enough for the rest).
    fn take_reconnected(&mut self, now: Instant) -> Option<AdapterEvent> {
        let first = self.first_recovery?;
        let still_lost = self
            .rooms
            .values()
            .any(|room| room.wanted && room.lost_at.is_some());
        if still_lost && now.duration_since(first) < self.settle() {
            return None;
        }
        self.first_recovery = None;
        let since = self.recovered_since.take().unwrap_or(first);
        let mut rooms = std::mem::take(&mut self.recovered);
        rooms.retain(|name| self.rooms.get(name).is_some_and(|room| room.wanted));
        rooms.sort_unstable();
        rooms.dedup();
        if rooms.is_empty() {
            return None;
        }
        let outage = now.duration_since(since);
        self.shared.counters.record_reconnect();
        tracing::info!(medium = %self.shared.medium, rooms = rooms.len(), ?outage, "redis cluster subscriptions restored");
        Some(AdapterEvent::Reconnected { rooms, outage })
    }

    fn close(&mut self) {
        self.inbound.closed.store(true, Ordering::Relaxed);
        for room in self.rooms.values_mut() {
            for waiter in room.waiters.drain(..) {
                let _ = waiter.send(Err(closed()));
            }
        }
        for shard in self.shards.values_mut() {
            shard.connection = None;
        }
        self.shards.clear();
        self.shared.subscriptions.store(0, Ordering::Relaxed);
    }
}
