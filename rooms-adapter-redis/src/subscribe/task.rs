//! The subscriber loop: the [`Table`] decides, the [`Link`] does the I/O.
//! One task per adapter; every network call runs as a future the loop polls
//! (bounded by a timeout), so a slow shard never holds up another shard or a
//! request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rooms_adapter::Error;
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, SinkOutcome};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Command;
use super::link::{Inbound, Link, Notice, ShardConnection};
use super::slot::{ShardId, SlotMap, Topology};
use super::table::{Ack, Action, OpKind, Table};
use super::topic::Topic;
use crate::config::RedisConfig;
use crate::error::timeout;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many queued commands or notices are handled per wake-up.
const DRAIN: usize = 512;

/// What a finished background future reports.
enum Done {
    Connected {
        shard: ShardId,
        generation: u64,
        result: Result<Arc<dyn ShardConnection>, Error>,
    },
    Op {
        shard: ShardId,
        generation: u64,
        kind: OpKind,
        topics: Vec<Topic>,
        result: Result<Vec<Ack>, String>,
    },
    Ping {
        shard: ShardId,
        generation: u64,
        result: Result<(), String>,
    },
    Discovered(Result<Topology, Error>),
}

/// The loop's state besides the table.
pub(crate) struct Task {
    pub(crate) config: RedisConfig,
    pub(crate) link: Arc<dyn Link>,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) table: Table,
    pub(crate) counters: Arc<AdapterCounters>,
    pub(crate) subscriptions: Arc<AtomicU64>,
    pub(crate) slots: Arc<SlotMap>,
    pub(crate) connections: HashMap<ShardId, (u64, Arc<dyn ShardConnection>)>,
    /// Unsubscribes done, answered once the counters are published (so a
    /// caller that sees its unsubscribe return also sees it uncounted).
    unsubscribed: Vec<oneshot::Sender<()>>,
    futures: FuturesUnordered<BoxFuture<Done>>,
}

impl Task {
    pub(crate) fn new(
        config: RedisConfig,
        link: Arc<dyn Link>,
        inbound: Arc<Inbound>,
        table: Table,
        counters: Arc<AdapterCounters>,
        subscriptions: Arc<AtomicU64>,
        slots: Arc<SlotMap>,
    ) -> Self {
        Self {
            config,
            link,
            inbound,
            table,
            counters,
            subscriptions,
            slots,
            connections: HashMap::new(),
            unsubscribed: Vec::new(),
            futures: FuturesUnordered::new(),
        }
    }

    /// Runs until `shutdown` flips or the engine goes away.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let now = Instant::now();
            if self.slots.take_stale() {
                self.table.mark_stale();
            }
            for action in self.table.actions(now) {
                self.start(action);
            }
            self.sync();
            if !self.report(&mut shutdown).await || self.inbound.is_closed() {
                break;
            }
            let wake = self.table.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(done) = self.futures.next(), if !self.futures.is_empty() => self.done(done),
                notice = notices.recv() => {
                    let Some(notice) = notice else { break };
                    self.notice(notice);
                    for _ in 1..DRAIN {
                        match notices.try_recv() {
                            Ok(notice) => self.notice(notice),
                            Err(_) => break,
                        }
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    self.command(command);
                    for _ in 1..DRAIN {
                        match commands.try_recv() {
                            Ok(command) => self.command(command),
                            Err(_) => break,
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        self.inbound.close();
        self.table.close();
        self.connections.clear();
        self.subscriptions.store(0, Ordering::Relaxed);
        for reply in self.unsubscribed.drain(..) {
            let _ = reply.send(());
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Subscribe { topic, reply } => {
                // Delivering before the table may answer: a message published
                // after `subscribe` returns is never skipped.
                self.inbound.set_wanted(topic.clone(), true);
                self.table.subscribe(topic, reply, now);
                self.apply_delivery();
            }
            Command::Unsubscribe { topic, reply } => {
                self.table.unsubscribe(&topic, now);
                self.apply_delivery();
                self.unsubscribed.push(reply);
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        let now = Instant::now();
        match notice {
            Notice::Unsubscribed {
                shard,
                generation,
                topic,
            } => self.table.unsubscribed(&shard, generation, &topic, now),
            Notice::Disconnected { shard, generation } => {
                self.table
                    .lost(&shard, generation, "connection closed", now);
            }
        }
    }

    /// Starts or stops delivering the rooms the table changed. Cheap: done
    /// per command (the full [`sync`](Self::sync), which counts every room,
    /// runs once per wake-up, not once per command of a burst of joins).
    fn apply_delivery(&mut self) {
        for (room, wanted) in self.table.take_delivery() {
            self.inbound.set_wanted(room, wanted);
        }
    }

    /// Brings delivery, connections and counters in line with the table,
    /// then answers the waiters whose subscription settled and the unsubscribes.
    fn sync(&mut self) {
        self.apply_delivery();
        let table = &self.table;
        self.connections
            .retain(|id, (generation, _)| table.is_current(id, *generation));
        self.subscriptions
            .store(table.live() as u64, Ordering::Relaxed);
        self.table.answer_waiters();
        for reply in self.unsubscribed.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Sends what the table has to report; `false` when the engine is gone.
    async fn report(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut events = Vec::new();
        if let Some(reason) = self.table.take_medium_lost() {
            events.push(AdapterEvent::MediumLost { reason });
        }
        for refusal in self.table.take_refusals() {
            tracing::warn!(medium = self.link.medium(), topic = %refusal.topic, reason = %refusal.reason, "redis refused a subscription");
            match refusal.topic {
                Topic::Room(room) if refusal.unheard => {
                    events.push(AdapterEvent::SubscriptionLost {
                        room,
                        reason: refusal.reason,
                    });
                }
                // A control channel refused after a reconnect (an ACL
                // changed): the engine hears no control frame until the
                // adapter is connected again; the warning above says why.
                _ => {}
            }
        }
        if let Some((rooms, outage)) = self.table.take_reconnected(Instant::now()) {
            self.counters.record_reconnect();
            tracing::info!(
                medium = self.link.medium(),
                rooms = rooms.len(),
                ?outage,
                "redis subscriptions restored"
            );
            events.push(AdapterEvent::Reconnected { rooms, outage });
        }
        for event in events {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return false,
                outcome = self.inbound.sink().send_lifecycle(event) => {
                    if outcome == SinkOutcome::Closed {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn start(&mut self, action: Action) {
        match action {
            Action::Discover => {
                let link = Arc::clone(&self.link);
                let limit = self.config.connect_timeout;
                self.futures.push(Box::pin(async move {
                    let result = match tokio::time::timeout(limit, link.discover()).await {
                        Ok(result) => result,
                        Err(_) => Err(timeout(format!("discover {}", link.medium()), limit)),
                    };
                    Done::Discovered(result)
                }));
            }
            Action::Connect { shard, generation } => {
                let Some(topology) = self.table.topology().cloned() else {
                    return;
                };
                let link = Arc::clone(&self.link);
                let inbound = Arc::clone(&self.inbound);
                let limit = self.config.connect_timeout;
                self.futures.push(Box::pin(async move {
                    let connect = link.connect(&topology, &shard, generation, inbound);
                    let result = match tokio::time::timeout(limit, connect).await {
                        Ok(result) => result,
                        Err(_) => Err(timeout(
                            format!("connect subscriber to {} ({shard})", link.medium()),
                            limit,
                        )),
                    };
                    Done::Connected {
                        shard,
                        generation,
                        result,
                    }
                }));
            }
            Action::Op {
                shard,
                generation,
                kind,
                topics,
            } => {
                let Some(connection) = self.connection(&shard, generation) else {
                    let result = Err("no connection".to_owned());
                    self.table
                        .op_done(&shard, generation, kind, topics, result, Instant::now());
                    return;
                };
                let prefix = &self.config.channel_prefix;
                let channels: Vec<String> =
                    topics.iter().map(|topic| topic.channel(prefix)).collect();
                let limit = self.config.subscribe_timeout;
                self.futures.push(Box::pin(async move {
                    let result = match tokio::time::timeout(
                        limit,
                        connection.batch(kind, &channels),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(format!(
                            "{kind:?} of {} channels unacknowledged after {limit:?}",
                            channels.len()
                        )),
                    };
                    Done::Op {
                        shard,
                        generation,
                        kind,
                        topics,
                        result,
                    }
                }));
            }
            Action::Ping { shard, generation } => {
                let Some(connection) = self.connection(&shard, generation) else {
                    return;
                };
                let limit = self.config.ping_timeout;
                let inbound = Arc::clone(&self.inbound);
                self.futures.push(Box::pin(async move {
                    let seen = inbound.pushes();
                    let result = match tokio::time::timeout(limit, connection.ping()).await {
                        Ok(Ok(())) => Ok(()),
                        // The answer waits behind a backlog of messages that
                        // are still arriving: the connection is alive (a
                        // closed one reports itself with a disconnect push).
                        _ if inbound.pushes() != seen => Ok(()),
                        Ok(Err(reason)) => Err(reason),
                        Err(_) => Err(format!("liveness probe unanswered after {limit:?}")),
                    };
                    Done::Ping {
                        shard,
                        generation,
                        result,
                    }
                }));
            }
        }
    }

    fn connection(&self, shard: &ShardId, generation: u64) -> Option<Arc<dyn ShardConnection>> {
        match self.connections.get(shard) {
            Some((current, connection)) if *current == generation => Some(Arc::clone(connection)),
            _ => None,
        }
    }

    fn done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Connected {
                shard,
                generation,
                result,
            } => {
                let ok = result.is_ok();
                self.table.connected(&shard, generation, ok, now);
                match result {
                    Ok(connection) if self.table.is_current(&shard, generation) => {
                        tracing::debug!(medium = self.link.medium(), %shard, "redis subscriber connected");
                        self.connections.insert(shard, (generation, connection));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(medium = self.link.medium(), %shard, %error, "redis subscriber connect failed");
                    }
                }
            }
            Done::Op {
                shard,
                generation,
                kind,
                topics,
                result,
            } => self
                .table
                .op_done(&shard, generation, kind, topics, result, now),
            Done::Ping {
                shard,
                generation,
                result,
            } => self.table.pinged(&shard, generation, result, now),
            Done::Discovered(result) => {
                let topology = match result {
                    Ok(topology) => {
                        self.slots.set(Arc::new(topology.clone()));
                        Some(topology)
                    }
                    Err(error) => {
                        tracing::debug!(medium = self.link.medium(), %error, "redis topology discovery failed");
                        None
                    }
                };
                self.table.discovered(topology, now);
            }
        }
        self.sync();
    }
}
