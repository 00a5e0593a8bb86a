//! The subscriber: one dedicated pub/sub connection, owned by one background
//! task.
//!
//! The task keeps the set of rooms this node *wants* and brings Redis in line
//! with it:
//!
//! - `subscribe` / `unsubscribe` calls arrive as commands. While one SUBSCRIBE
//!   or UNSUBSCRIBE is in flight, further requests are collected and sent
//!   together (up to the batch size), so 10,000 concurrent joins cost a handful
//!   of round trips. A `subscribe` call returns once Redis has acknowledged its
//!   channel.
//! - A room that loses its last member is unsubscribed only after the
//!   unsubscribe delay, so a room that empties and refills at once does not
//!   flap. Its messages are no longer delivered from the moment `unsubscribe`
//!   returns.
//! - Messages are decoded ([`rooms_adapter::wire::decode`], codec
//!   auto-detected), counted, and handed to the engine through
//!   [`EventSink::send`], which never waits: a full queue is a counted drop.
//! - A PING every `ping_interval` must be answered within `ping_timeout`;
//!   otherwise the connection counts as lost (silent dead subscriptions).
//! - On connection loss the task reconnects with capped exponential backoff and
//!   jitter, re-subscribes every wanted room in batches and then emits
//!   [`AdapterEvent::Reconnected`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::Msg;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, SinkOutcome};
use rooms_adapter::{Error, RoomName, wire};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::RedisConfig;
use crate::error::{closed, from_redis, timeout};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many queued messages or commands are handled per wake-up before the
/// loop looks at its other duties.
const DRAIN: usize = 512;

/// A request from the adapter to the subscriber task.
pub(crate) enum Command {
    /// Want `room`; reply once Redis acknowledged it.
    Subscribe {
        room: RoomName,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Stop wanting `room`; reply once its messages are no longer delivered.
    Unsubscribe {
        room: RoomName,
        reply: oneshot::Sender<()>,
    },
}

/// What the task shares with the adapter.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) client: redis::Client,
    pub(crate) medium: String,
    pub(crate) counters: Arc<AdapterCounters>,
    /// Rooms wanted and acknowledged by Redis now.
    pub(crate) subscriptions: Arc<AtomicU64>,
}

/// Opens a pub/sub connection within the connect timeout.
pub(crate) async fn open(
    client: redis::Client,
    limit: Duration,
    medium: String,
) -> Result<PubSub, Error> {
    match tokio::time::timeout(limit, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(from_redis("connect subscriber", &medium, error)),
        Err(_) => Err(timeout(format!("connect subscriber to {medium}"), limit)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Subscribe,
    Unsubscribe,
}

enum OpError {
    /// The connection is unusable.
    Lost(String),
    /// Redis refused the command (e.g. an ACL forbids the channel).
    Refused(redis::RedisError),
}

struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// The subscription state machine, without the I/O futures.
struct State {
    shared: Arc<Shared>,
    sink: EventSink,
    wanted: HashSet<RoomName>,
    confirmed: HashSet<RoomName>,
    pending_sub: HashSet<RoomName>,
    pending_unsub: HashSet<RoomName>,
    waiters: HashMap<RoomName, Vec<oneshot::Sender<Result<(), Error>>>>,
    leaving: HashMap<RoomName, u64>,
    leave_queue: VecDeque<(Instant, RoomName, u64)>,
    leave_generation: u64,
    op_kind: Option<OpKind>,
    op_rooms: HashSet<RoomName>,
    /// Rooms wanted and in `confirmed`.
    live: u64,
    down_since: Option<Instant>,
    /// After a reconnect: the rooms to re-subscribe, and those not yet
    /// acknowledged. `Reconnected` is emitted when the second is empty.
    resync: Option<(Vec<RoomName>, HashSet<RoomName>)>,
    attempt: u32,
}

/// Runs the subscriber until `shutdown` flips (or the engine goes away).
pub(crate) async fn run(
    shared: Arc<Shared>,
    sink: EventSink,
    pubsub: PubSub,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = shared.config.clone();
    let mut state = State {
        shared,
        sink,
        wanted: HashSet::new(),
        confirmed: HashSet::new(),
        pending_sub: HashSet::new(),
        pending_unsub: HashSet::new(),
        waiters: HashMap::new(),
        leaving: HashMap::new(),
        leave_queue: VecDeque::new(),
        leave_generation: 0,
        op_kind: None,
        op_rooms: HashSet::new(),
        live: 0,
        down_since: None,
        resync: None,
        attempt: 0,
    };
    let (sink, stream) = pubsub.split();
    let mut connection = Some(Connection { sink, stream });
    let mut op: Option<BoxFuture<Result<(), OpError>>> = None;
    let mut ping: Option<BoxFuture<Result<(), String>>> = None;
    let mut next_ping = Instant::now() + config.ping_interval;
    let mut connecting: Option<BoxFuture<Result<PubSub, Error>>> = None;
    let mut retry_at: Option<Instant> = None;

    loop {
        // Take every request already queued before choosing the next batch, so
        // a burst of joins becomes few large SUBSCRIBEs rather than many small.
        for _ in 0..DRAIN * 16 {
            match commands.try_recv() {
                Ok(command) => state.handle(command),
                Err(_) => break,
            }
        }
        if let Some(conn) = &connection {
            if op.is_none() {
                op = state.next_op(&conn.sink);
            }
            if let Some(event) = state.take_reconnected() {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    outcome = state.sink.send_lifecycle(event) => {
                        if outcome == SinkOutcome::Closed {
                            break;
                        }
                    }
                }
            }
        }
        let leave_at = state.leave_queue.front().map(|(at, _, _)| *at);
        let connected = connection.is_some();

        let mut lost: Option<String> = None;
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            result = maybe(&mut op) => {
                op = None;
                if let Err(reason) = state.op_done(result) {
                    lost = Some(reason);
                }
            }
            result = maybe(&mut ping) => {
                ping = None;
                next_ping = Instant::now() + config.ping_interval;
                if let Err(reason) = result {
                    lost = Some(reason);
                }
            }
            () = tokio::time::sleep_until(next_ping), if connected && ping.is_none() => {
                if let Some(conn) = &connection {
                    ping = Some(probe(conn.sink.clone(), config.ping_timeout));
                }
            }
            () = sleep_until(leave_at) => state.expire_leaves(Instant::now()),
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
            result = maybe(&mut connecting) => {
                connecting = None;
                match result {
                    Ok(pubsub) => {
                        let (sink, stream) = pubsub.split();
                        connection = Some(Connection { sink, stream });
                        next_ping = Instant::now() + config.ping_interval;
                        state.connected();
                    }
                    Err(error) => {
                        state.attempt = state.attempt.saturating_add(1);
                        let delay = config.backoff.delay(state.attempt);
                        tracing::debug!(%error, ?delay, attempt = state.attempt, "redis subscriber reconnect failed");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            () = sleep_until(retry_at), if !connected && connecting.is_none() => {
                retry_at = None;
                let shared = &state.shared;
                connecting = Some(Box::pin(open(
                    shared.client.clone(),
                    config.connect_timeout,
                    shared.medium.clone(),
                )));
            }
            message = next_message(&mut connection) => match message {
                None => lost = Some("connection closed".to_owned()),
                Some(message) => {
                    let mut open = state.on_message(&message);
                    if let Some(conn) = &mut connection {
                        for _ in 1..DRAIN {
                            if !open {
                                break;
                            }
                            match conn.stream.next().now_or_never() {
                                Some(Some(message)) => open = state.on_message(&message),
                                Some(None) => {
                                    lost = Some("connection closed".to_owned());
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    if !open {
                        tracing::debug!("engine gone; redis subscriber stops");
                        break;
                    }
                }
            },
        }

        if let Some(reason) = lost {
            if connection.take().is_some() {
                tracing::warn!(medium = %state.shared.medium, %reason, "redis subscriber connection lost; reconnecting");
            }
            op = None;
            ping = None;
            state.lost();
            retry_at = Some(Instant::now() + config.backoff.delay(0));
        }
    }

    state.close();
}

/// Awaits the future in `slot`, or forever when there is none.
async fn maybe<T>(slot: &mut Option<BoxFuture<T>>) -> T {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_message(connection: &mut Option<Connection>) -> Option<Msg> {
    match connection {
        Some(conn) => conn.stream.next().await,
        None => std::future::pending().await,
    }
}

fn probe(mut sink: PubSubSink, limit: Duration) -> BoxFuture<Result<(), String>> {
    Box::pin(async move {
        match tokio::time::timeout(limit, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("liveness probe failed: {error}")),
            Err(_) => Err(format!("liveness probe unanswered after {limit:?}")),
        }
    })
}

fn command_future(
    mut sink: PubSubSink,
    kind: OpKind,
    channels: Vec<String>,
    limit: Duration,
) -> BoxFuture<Result<(), OpError>> {
    Box::pin(async move {
        let request = async {
            match kind {
                OpKind::Subscribe => sink.subscribe(&channels).await,
                OpKind::Unsubscribe => sink.unsubscribe(&channels).await,
            }
        };
        match tokio::time::timeout(limit, request).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error))
                if error.is_io_error()
                    || error.is_unrecoverable_error()
                    || error.is_connection_dropped() =>
            {
                Err(OpError::Lost(format!("{kind:?} failed: {error}")))
            }
            Ok(Err(error)) => Err(OpError::Refused(error)),
            Err(_) => Err(OpError::Lost(format!(
                "{kind:?} of {} channels unacknowledged after {limit:?}",
                channels.len()
            ))),
        }
    })
}

impl State {
    fn channel(&self, room: &RoomName) -> String {
        wire::channel_name(&self.shared.config.channel_prefix, room.as_str())
    }

    fn publish_live(&self) {
        self.shared
            .subscriptions
            .store(self.live, Ordering::Relaxed);
    }

    fn op_has(&self, kind: OpKind, room: &RoomName) -> bool {
        self.op_kind == Some(kind) && self.op_rooms.contains(room)
    }

    fn add_waiter(&mut self, room: RoomName, reply: oneshot::Sender<Result<(), Error>>) {
        let waiters = self.waiters.entry(room).or_default();
        waiters.retain(|waiter| !waiter.is_closed());
        waiters.push(reply);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe { room, reply } => self.subscribe(room, reply),
            Command::Unsubscribe { room, reply } => {
                self.unsubscribe(room);
                let _ = reply.send(());
            }
        }
    }

    fn subscribe(&mut self, room: RoomName, reply: oneshot::Sender<Result<(), Error>>) {
        let unsub_in_flight = self.op_has(OpKind::Unsubscribe, &room);
        if self.wanted.contains(&room) {
            if self.confirmed.contains(&room) && !unsub_in_flight {
                let _ = reply.send(Ok(()));
            } else {
                self.add_waiter(room, reply);
            }
            return;
        }
        self.wanted.insert(room.clone());
        self.leaving.remove(&room);
        self.pending_unsub.remove(&room);
        if self.confirmed.contains(&room) {
            self.live += 1;
            self.publish_live();
        }
        if unsub_in_flight {
            self.pending_sub.insert(room.clone());
            self.add_waiter(room, reply);
        } else if self.confirmed.contains(&room) {
            let _ = reply.send(Ok(()));
        } else if self.op_has(OpKind::Subscribe, &room) {
            self.add_waiter(room, reply);
        } else {
            self.pending_sub.insert(room.clone());
            self.add_waiter(room, reply);
        }
    }

    fn unsubscribe(&mut self, room: RoomName) {
        if !self.wanted.remove(&room) {
            return;
        }
        self.resynced(&room);
        self.pending_sub.remove(&room);
        if self.confirmed.contains(&room) {
            self.live = self.live.saturating_sub(1);
            self.publish_live();
        }
        // A subscribe still waiting is superseded: it did what was asked.
        if let Some(waiters) = self.waiters.remove(&room) {
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
        }
        let on_redis = self.confirmed.contains(&room) || self.op_has(OpKind::Subscribe, &room);
        if !on_redis {
            return;
        }
        let delay = self.shared.config.unsubscribe_delay;
        if delay.is_zero() {
            if self.confirmed.contains(&room) {
                self.pending_unsub.insert(room);
            }
            // A subscribe in flight is undone when it completes (op_done).
        } else {
            self.leave_generation += 1;
            let generation = self.leave_generation;
            self.leaving.insert(room.clone(), generation);
            self.leave_queue
                .push_back((Instant::now() + delay, room, generation));
        }
    }

    fn expire_leaves(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.leave_queue.front() {
            if *at > now {
                break;
            }
            let Some((_, room, generation)) = self.leave_queue.pop_front() else {
                break;
            };
            if self.leaving.get(&room) != Some(&generation) {
                continue;
            }
            self.leaving.remove(&room);
            if !self.wanted.contains(&room) && self.confirmed.contains(&room) {
                self.pending_unsub.insert(room);
            }
        }
    }

    /// The next SUBSCRIBE (preferred: someone is waiting) or UNSUBSCRIBE batch.
    fn next_op(&mut self, sink: &PubSubSink) -> Option<BoxFuture<Result<(), OpError>>> {
        let (kind, set) = if !self.pending_sub.is_empty() {
            (OpKind::Subscribe, &mut self.pending_sub)
        } else if !self.pending_unsub.is_empty() {
            (OpKind::Unsubscribe, &mut self.pending_unsub)
        } else {
            return None;
        };
        let batch = self.shared.config.subscribe_batch;
        let rooms: Vec<RoomName> = set.iter().take(batch).cloned().collect();
        for room in &rooms {
            set.remove(room);
        }
        let channels = rooms.iter().map(|room| self.channel(room)).collect();
        self.op_kind = Some(kind);
        self.op_rooms = rooms.into_iter().collect();
        Some(command_future(
            sink.clone(),
            kind,
            channels,
            self.shared.config.subscribe_timeout,
        ))
    }

    /// Applies a finished SUBSCRIBE / UNSUBSCRIBE; `Err` means the connection is lost.
    fn op_done(&mut self, result: Result<(), OpError>) -> Result<(), String> {
        let kind = self.op_kind.take();
        let rooms = std::mem::take(&mut self.op_rooms);
        match (kind, result) {
            (Some(OpKind::Subscribe), Ok(())) => {
                let mut ready = Vec::new();
                for room in rooms {
                    self.resynced(&room);
                    let wanted = self.wanted.contains(&room);
                    if self.confirmed.insert(room.clone()) && wanted {
                        self.live += 1;
                    }
                    if wanted {
                        if let Some(waiters) = self.waiters.remove(&room) {
                            ready.extend(waiters);
                        }
                    } else if !self.leaving.contains_key(&room) {
                        self.pending_unsub.insert(room);
                    }
                }
                // Counters first: a caller that sees its subscribe return
                // also sees it counted.
                self.publish_live();
                for waiter in ready {
                    let _ = waiter.send(Ok(()));
                }
                Ok(())
            }
            (Some(OpKind::Unsubscribe), Ok(())) => {
                for room in rooms {
                    if self.confirmed.remove(&room) && self.wanted.contains(&room) {
                        self.live = self.live.saturating_sub(1);
                    }
                }
                self.publish_live();
                Ok(())
            }
            (Some(OpKind::Subscribe), Err(OpError::Refused(error))) => {
                tracing::warn!(medium = %self.shared.medium, %error, rooms = rooms.len(), "redis refused SUBSCRIBE");
                for room in rooms {
                    self.resynced(&room);
                    self.wanted.remove(&room);
                    if let Some(waiters) = self.waiters.remove(&room) {
                        for waiter in waiters {
                            let _ = waiter.send(Err(from_redis(
                                &format!("subscribe to room {:?}", room.as_str()),
                                &self.shared.medium,
                                error.clone(),
                            )));
                        }
                    }
                }
                Ok(())
            }
            (_, Err(OpError::Refused(error))) => Err(format!("unsubscribe refused: {error}")),
            (_, Err(OpError::Lost(reason))) => Err(reason),
            (None, Ok(())) => Ok(()),
        }
    }

    fn on_message(&mut self, message: &Msg) -> bool {
        let channel = message.get_channel_name();
        let Some(room) = channel.strip_prefix(self.shared.config.channel_prefix.as_str()) else {
            return true;
        };
        // Only rooms wanted now: an unsubscribed room is silent at once, even
        // while its UNSUBSCRIBE waits for the delay.
        let Some(room) = self.wanted.get(room) else {
            return true;
        };
        let counters = &self.shared.counters;
        match wire::decode(
            message.get_payload_bytes(),
            self.shared.config.max_payload_bytes,
        ) {
            Err(error) => {
                counters.record_decode_error(room.as_str(), &error);
                true
            }
            Ok(envelope) => {
                counters.record_received();
                let event = AdapterEvent::Message {
                    room: room.clone(),
                    envelope,
                };
                self.sink.send(event) != SinkOutcome::Closed
            }
        }
    }

    fn lost(&mut self) {
        self.down_since.get_or_insert_with(Instant::now);
        self.resync = None;
        self.confirmed.clear();
        self.live = 0;
        self.publish_live();
        self.op_kind = None;
        self.op_rooms.clear();
        self.pending_sub.clear();
        self.pending_unsub.clear();
        self.leaving.clear();
        self.leave_queue.clear();
    }

    fn connected(&mut self) {
        self.attempt = 0;
        self.pending_sub = self.wanted.clone();
        self.resync = Some((self.wanted.iter().cloned().collect(), self.wanted.clone()));
        tracing::info!(
            medium = %self.shared.medium,
            rooms = self.wanted.len(),
            "redis subscriber reconnected; re-subscribing"
        );
    }

    /// The `Reconnected` event, once every room wanted at the reconnect is
    /// subscribed again (rooms joined since do not hold it back).
    fn take_reconnected(&mut self) -> Option<AdapterEvent> {
        match &self.resync {
            Some((_, remaining)) if remaining.is_empty() => {}
            _ => return None,
        }
        let (rooms, _) = self.resync.take()?;
        let since = self.down_since.take()?;
        let outage = since.elapsed();
        let mut rooms: Vec<RoomName> = rooms
            .into_iter()
            .filter(|room| self.wanted.contains(room))
            .collect();
        rooms.sort_unstable();
        self.shared.counters.record_reconnect();
        tracing::info!(medium = %self.shared.medium, rooms = rooms.len(), ?outage, "redis subscriptions restored");
        Some(AdapterEvent::Reconnected { rooms, outage })
    }

    /// A room no longer needs re-subscribing (acknowledged, dropped, refused).
    fn resynced(&mut self, room: &RoomName) {
        if let Some((_, remaining)) = &mut self.resync {
            remaining.remove(room);
        }
    }

    fn close(&mut self) {
        for (_, waiters) in self.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(closed()));
            }
        }
        self.live = 0;
        self.publish_live();
    }
}
