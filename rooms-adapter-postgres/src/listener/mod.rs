//! The listener task: one dedicated connection, driven by this task alone.
//! It reads notifications off the connection, runs the `LISTEN`/`UNLISTEN`
//! batches of the [`ListenTable`], probes liveness, and reconnects with
//! backoff when the connection is lost.
//!
//! - [`link`]: opening the connection and reading it;
//! - [`delivery`]: notifications, in arrival order, to the sink;
//! - [`pauses`]: the time the task holds back on purpose.

mod delivery;
mod link;
mod pauses;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::stream::{FuturesOrdered, StreamExt};
use rooms_adapter::adapter::{AdapterEvent, EventSink};
use rooms_adapter::{Error, RoomName};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::adapter::Shared;
use crate::channel::quote_identifier;
use crate::config::PostgresConfig;
use crate::error::PostgresError;
use crate::publisher::Publisher;
use crate::table::{ListenTable, Subscribed};
use delivery::Delivery;
use link::next_message;
pub(crate) use link::{Link, open};
pub(crate) use pauses::Pauses;

/// The most `LISTEN`/`UNLISTEN` statements in one round trip.
const MAX_BATCH: usize = 1000;
/// The most notifications waiting behind an attachment being read; beyond
/// it the task stops reading the connection (backpressure to the server,
/// which queues notifications) until the attachment is in. While it holds
/// back, the answers to the liveness probe and to `LISTEN`s wait behind
/// unread notifications too: that time is not held against the server
/// (see [`Pauses`]). It is bounded: every read has the publish timeout.
const MAX_PENDING: usize = 256;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the adapter asks of the task.
pub(crate) enum Command {
    /// Listen to `room` on `channel`; answered once confirmed (or at once
    /// while the connection is down, with a retryable error).
    Subscribe {
        room: RoomName,
        channel: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Stop delivering `room`; answered at once.
    Unsubscribe {
        room: RoomName,
        reply: oneshot::Sender<()>,
    },
}

/// What the task works with, from the adapter.
pub(crate) struct Parts {
    pub(crate) config: Arc<PostgresConfig>,
    pub(crate) medium: String,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sink: EventSink,
    pub(crate) publisher: Arc<Publisher>,
    /// The control channels: every node's, and this node's inbox.
    pub(crate) control: [String; 2],
}

/// The task's state.
pub(crate) struct Listener {
    config: Arc<PostgresConfig>,
    medium: String,
    shared: Arc<Shared>,
    sink: EventSink,
    publisher: Arc<Publisher>,
    control: [String; 2],
    table: ListenTable<oneshot::Sender<Result<(), Error>>>,
    link: Option<Link>,
    /// The control channels are to be listened in the next batch.
    control_pending: bool,
    /// The batch in flight, and whether it carries the control `LISTEN`s.
    in_flight: Option<BoxFuture<Result<(), tokio_postgres::Error>>>,
    in_flight_has_control: bool,
    ping: Option<BoxFuture<Result<(), tokio_postgres::Error>>>,
    ping_deadline: Instant,
    next_ping: Instant,
    connecting: Option<BoxFuture<Result<Link, PostgresError>>>,
    retry_at: Option<Instant>,
    attempt: u32,
    /// Since when the medium is lost.
    outage: Option<Instant>,
    ready: Option<oneshot::Sender<Result<(), Error>>>,
    deliveries: FuturesOrdered<BoxFuture<Delivery>>,
}

impl Listener {
    pub(crate) fn new(parts: Parts, link: Link, ready: oneshot::Sender<Result<(), Error>>) -> Self {
        let Parts {
            config,
            medium,
            shared,
            sink,
            publisher,
            control,
        } = parts;
        let mut table = ListenTable::new(config.unsubscribe_delay);
        table.connected();
        shared.connected.store(true, Ordering::Release);
        let now = Instant::now();
        Self {
            next_ping: now + config.ping_interval,
            ping_deadline: now,
            config,
            medium,
            shared,
            sink,
            publisher,
            control,
            table,
            link: Some(link),
            control_pending: true,
            in_flight: None,
            in_flight_has_control: false,
            ping: None,
            connecting: None,
            retry_at: None,
            attempt: 0,
            outage: None,
            ready: Some(ready),
            deliveries: FuturesOrdered::new(),
        }
    }

    /// Runs until the adapter drops its command sender (or aborts the task).
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let reading = self.hold_or_read();
            self.start_work();
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                message = next_message(&mut self.link), if reading => self.message(message),
                result = poll_slot(&mut self.in_flight) => {
                    self.in_flight = None;
                    self.batch_done(result);
                }
                result = poll_slot(&mut self.ping) => {
                    self.ping = None;
                    match result {
                        Ok(()) => self.next_ping = Instant::now() + self.config.ping_interval,
                        Err(error) => self.lost(format!("the liveness probe failed: {error}")),
                    }
                }
                result = poll_slot(&mut self.connecting) => {
                    self.connecting = None;
                    self.connected(result);
                }
                delivery = self.deliveries.next(), if !self.deliveries.is_empty() => {
                    if let Some(delivery) = delivery {
                        self.delivered(delivery);
                    }
                }
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Whether to read the connection now: not while [`MAX_PENDING`]
    /// notifications wait behind attachment reads. Starts and ends pauses;
    /// the probe's deadline moves by the time paused.
    fn hold_or_read(&mut self) -> bool {
        let reading = self.link.is_some() && self.deliveries.len() < MAX_PENDING;
        let hold = self.link.is_some() && !reading;
        if hold != self.holding() {
            let now = Instant::now();
            if hold {
                self.shared.pauses.pause(now);
            } else {
                let paused = self.shared.pauses.resume(now);
                self.ping_deadline += paused;
            }
        }
        reading
    }

    /// Not reading the connection: [`MAX_PENDING`] notifications wait.
    fn holding(&self) -> bool {
        self.shared.pauses.is_paused()
    }

    /// Starts whatever can start now: a batch, a probe, a reconnect. No
    /// probe starts, and none is judged, while the task holds back.
    fn start_work(&mut self) {
        let now = Instant::now();
        if self.ping.is_some() && now >= self.ping_deadline && !self.holding() {
            let after = self.config.ping_interval;
            self.lost(format!(
                "the liveness probe was not answered within {after:?}"
            ));
        }
        if let Some(link) = &self.link {
            if self.in_flight.is_none() {
                let batch = self.table.take_batch(now.into_std(), MAX_BATCH);
                if batch.is_some() || self.control_pending {
                    let mut sql = String::new();
                    let with_control = self.control_pending;
                    if with_control {
                        for channel in &self.control {
                            sql.push_str("LISTEN ");
                            sql.push_str(&quote_identifier(channel));
                            sql.push(';');
                        }
                    }
                    if let Some(batch) = batch {
                        for channel in &batch.unlisten {
                            sql.push_str("UNLISTEN ");
                            sql.push_str(&quote_identifier(channel));
                            sql.push(';');
                        }
                        for channel in &batch.listen {
                            sql.push_str("LISTEN ");
                            sql.push_str(&quote_identifier(channel));
                            sql.push(';');
                        }
                    }
                    let client = Arc::clone(&link.client);
                    self.in_flight_has_control = with_control;
                    self.in_flight =
                        Some(Box::pin(async move { client.batch_execute(&sql).await }));
                }
            }
            if self.ping.is_none() && now >= self.next_ping && !self.holding() {
                let client = Arc::clone(&link.client);
                self.ping_deadline = now + self.config.ping_interval;
                self.ping = Some(Box::pin(async move {
                    client.simple_query("SELECT 1").await.map(|_| ())
                }));
            }
        } else if self.connecting.is_none() && self.retry_at.is_none_or(|at| at <= now) {
            self.retry_at = None;
            let config = Arc::clone(&self.config);
            let medium = self.medium.clone();
            self.connecting = Some(Box::pin(async move { open(&config, &medium).await }));
        }
    }

    /// When the loop must wake up without any event.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = self.table.next_deadline().map(Instant::from_std);
        let mut consider = |at: Instant| {
            wake = Some(wake.map_or(at, |current| current.min(at)));
        };
        if self.holding() {
            // Delivered attachments wake the task.
        } else if self.link.is_some() {
            if self.ping.is_some() {
                consider(self.ping_deadline);
            } else {
                consider(self.next_ping);
            }
        } else if let Some(at) = self.retry_at {
            consider(at);
        }
        wake
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                room,
                channel,
                reply,
            } => match self.table.subscribe(&room, channel, reply) {
                Subscribed::Ready(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Subscribed::Down(reply) => {
                    let _ = reply.send(Err(self.down_error(&room)));
                }
                Subscribed::Queued => {}
            },
            Command::Unsubscribe { room, reply } => {
                for waiter in self.table.unsubscribe(&room, std::time::Instant::now()) {
                    let _ = waiter.send(Ok(()));
                }
                let _ = reply.send(());
            }
        }
        self.shared
            .wanted
            .store(self.table.wanted_count(), Ordering::Relaxed);
    }

    fn down_error(&self, room: &RoomName) -> Error {
        Error::Unavailable {
            medium: self.medium.clone(),
            reason: format!(
                "subscribe to room {:?} failed: the listening connection is down (reconnecting; \
                 the room is listened when it is back)",
                truncated(room.as_str())
            ),
            source: None,
        }
    }

    fn batch_done(&mut self, result: Result<(), tokio_postgres::Error>) {
        match result {
            Ok(()) => {
                if self.in_flight_has_control {
                    self.control_pending = false;
                }
                for waiter in self.table.batch_done() {
                    let _ = waiter.send(Ok(()));
                }
                if !self.control_pending {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    if self.table.settled() {
                        self.back();
                    }
                }
            }
            Err(error) => self.lost(format!("LISTEN failed: {error}")),
        }
    }

    /// Every wanted room is listened again after an outage: `Reconnected`.
    fn back(&mut self) {
        let Some(since) = self.outage.take() else {
            return;
        };
        let rooms = self.table.wanted_rooms();
        let outage = since.elapsed();
        self.shared.counters.record_reconnect();
        tracing::info!(rooms = rooms.len(), ?outage, medium = %self.medium, "postgres medium back");
        self.sink
            .push_lifecycle(AdapterEvent::Reconnected { rooms, outage });
    }

    /// The connection is gone: forget it, answer waiters, report the outage
    /// once, and schedule a reconnect.
    fn lost(&mut self, reason: String) {
        self.link = None;
        self.in_flight = None;
        self.ping = None;
        self.shared.connected.store(false, Ordering::Release);
        let medium = self.medium.clone();
        for waiter in self.table.lost() {
            let _ = waiter.send(Err(Error::Unavailable {
                medium: medium.clone(),
                reason: format!(
                    "subscribe failed: {reason} (the room is listened when it is back)"
                ),
                source: None,
            }));
        }
        self.control_pending = true;
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(Error::Unavailable {
                medium,
                reason: reason.clone(),
                source: None,
            }));
        }
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            tracing::warn!(%reason, medium = %self.medium, "postgres medium lost");
            self.sink
                .push_lifecycle(AdapterEvent::MediumLost { reason });
        }
        self.attempt = 1;
        self.retry_at = Some(Instant::now() + self.config.reconnect_delay(self.attempt));
    }

    fn connected(&mut self, result: Result<Link, PostgresError>) {
        match result {
            Ok(link) => {
                self.link = Some(link);
                self.table.connected();
                self.control_pending = true;
                self.attempt = 0;
                self.retry_at = None;
                self.next_ping = Instant::now() + self.config.ping_interval;
                self.shared.connected.store(true, Ordering::Release);
            }
            Err(error) => {
                self.attempt = self.attempt.saturating_add(1);
                let delay = self.config.reconnect_delay(self.attempt);
                tracing::debug!(%error, ?delay, "postgres reconnect failed");
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

/// The output of the future in `slot`, or never without one.
async fn poll_slot<T>(slot: &mut Option<BoxFuture<T>>) -> T {
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

pub(crate) fn truncated(name: &str) -> String {
    name.chars().take(40).collect()
}
