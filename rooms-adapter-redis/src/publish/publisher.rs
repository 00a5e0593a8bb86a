//! The publish path: every publish goes through a [`Publisher`].
//!
//! With coalescing on (the default), a publish made while no other publish is
//! in progress goes straight to the driver (no extra hop, so an idle adapter
//! adds no latency). A publish made while others are in progress is queued
//! (bounded) to a publisher task, which takes the first waiting publish at
//! once plus whatever else is already queued (up to the batch size) and sends
//! it as one pipeline, with up to `pipelines_in_flight` pipelines outstanding:
//! a busy adapter turns many concurrent publishes into few round trips. Each
//! caller awaits its own reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rooms_adapter::Error;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::{PublishDriver, PublishItem, ScriptCall};
use crate::error::{closed, duplicate, timeout};

type Reply = oneshot::Sender<Result<(), Error>>;

struct Request {
    item: PublishItem,
    reply: Reply,
    /// When the caller's publish timeout runs out: the task answers a
    /// request it did not send by then with a timeout, and bounds each
    /// pipeline by its items' earliest deadline. So a queued publish needs no
    /// timer of its own.
    deadline: Instant,
}

/// Publishes through a driver, directly or through the coalescing task.
pub(crate) struct Publisher {
    driver: Arc<dyn PublishDriver>,
    queue: Option<mpsc::Sender<Request>>,
    timeout: Duration,
    /// Publishes in progress (direct or queued).
    busy: AtomicUsize,
}

/// Counts one publish in progress until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a publish is for, to name it in errors (formatted only on failure).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination<'a> {
    /// A room, by name.
    Room(&'a str),
    /// A control channel, by its full name.
    Control(&'a str),
}

impl std::fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Room(room) => write!(f, "room {room:?}"),
            Destination::Control(channel) => write!(f, "control channel {channel:?}"),
        }
    }
}

/// Settings of the coalescing task.
pub(crate) struct Coalescing {
    pub(crate) batch: usize,
    pub(crate) queue: usize,
    pub(crate) in_flight: usize,
}

impl Publisher {
    /// A publisher; with `coalescing`, also the task that must be joined.
    pub(crate) fn start(
        driver: Arc<dyn PublishDriver>,
        timeout: Duration,
        coalescing: Option<Coalescing>,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, Option<JoinHandle<()>>) {
        match coalescing {
            None => (
                Self {
                    driver,
                    queue: None,
                    timeout,
                    busy: AtomicUsize::new(0),
                },
                None,
            ),
            Some(settings) => {
                let (sender, receiver) = mpsc::channel(settings.queue);
                let task = tokio::spawn(run(
                    Arc::clone(&driver),
                    receiver,
                    settings.batch,
                    settings.in_flight,
                    timeout,
                    shutdown,
                ));
                (
                    Self {
                        driver,
                        queue: Some(sender),
                        timeout,
                        busy: AtomicUsize::new(0),
                    },
                    Some(task),
                )
            }
        }
    }

    /// The driver's name.
    pub(crate) fn driver_name(&self) -> &str {
        self.driver.name()
    }

    /// Publishes one item, within the publish timeout.
    pub(crate) async fn publish(
        &self,
        item: PublishItem,
        destination: Destination<'_>,
    ) -> Result<(), Error> {
        let limit = self.timeout;
        let timed_out = || timeout(format!("publish to {destination}"), limit);
        let Some(queue) = &self.queue else {
            return self.direct(&item, limit, timed_out).await;
        };
        let idle = self
            .busy
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if !idle {
            self.busy.fetch_add(1, Ordering::AcqRel);
        }
        let _busy = Busy(&self.busy);
        if idle {
            return self.direct(&item, limit, timed_out).await;
        }
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + limit;
        let request = Request {
            item,
            reply,
            deadline,
        };
        match queue.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Err(closed()),
            Err(TrySendError::Full(request)) => {
                match tokio::time::timeout_at(deadline, queue.send(request)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(closed()),
                    Err(_) => return Err(timed_out()),
                }
            }
        }
        // The task answers by the deadline (see `Request::deadline`).
        answer.await.map_err(|_| closed())?
    }

    /// Runs a script through the driver (never queued: a script is one
    /// command on the driver's multiplexed connection or pool), within the
    /// publish timeout.
    pub(crate) async fn run_script(
        &self,
        call: &ScriptCall,
        what: impl FnOnce() -> String,
    ) -> Result<redis::Value, Error> {
        match tokio::time::timeout(self.timeout, self.driver.run_script(call)).await {
            Ok(result) => result,
            Err(_) => Err(timeout(what(), self.timeout)),
        }
    }

    /// One publish straight through the driver, bounded by `limit`.
    async fn direct(
        &self,
        item: &PublishItem,
        limit: Duration,
        timed_out: impl FnOnce() -> Error,
    ) -> Result<(), Error> {
        match tokio::time::timeout(limit, self.driver.publish(&item.channel, &item.payload)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out()),
        }
    }
}

async fn run(
    driver: Arc<dyn PublishDriver>,
    mut queue: mpsc::Receiver<Request>,
    batch_size: usize,
    max_in_flight: usize,
    limit: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = queue.recv(), if in_flight.len() < max_in_flight => {
                let Some(first) = first else { break };
                let now = Instant::now();
                let mut batch = Batch::default();
                batch.add(first, now, limit);
                while batch.items.len() < batch_size {
                    match queue.try_recv() {
                        Ok(request) => batch.add(request, now, limit),
                        Err(_) => break,
                    }
                }
                if let Some(deadline) = batch.deadline {
                    in_flight.push(send(Arc::clone(&driver), batch.items, batch.replies, deadline, limit));
                }
            }
        }
    }
    // Shutting down: nothing more is sent. Queued publishes fail as closed;
    // dropping the in-flight pipelines tells their callers the same.
    queue.close();
    while let Ok(request) = queue.try_recv() {
        let _ = request.reply.send(Err(closed()));
    }
    drop(in_flight);
}

/// The requests of one pipeline.
#[derive(Default)]
struct Batch {
    items: Vec<PublishItem>,
    replies: Vec<Reply>,
    /// The earliest deadline of its requests.
    deadline: Option<Instant>,
}

impl Batch {
    /// Adds `request`, or answers it with a timeout when its deadline passed
    /// while it was queued.
    fn add(&mut self, request: Request, now: Instant, limit: Duration) {
        if request.deadline <= now {
            let _ = request.reply.send(Err(timeout("publish (queued)", limit)));
            return;
        }
        self.deadline = Some(
            self.deadline
                .map_or(request.deadline, |d| d.min(request.deadline)),
        );
        self.items.push(request.item);
        self.replies.push(request.reply);
    }
}

async fn send(
    driver: Arc<dyn PublishDriver>,
    items: Vec<PublishItem>,
    replies: Vec<Reply>,
    deadline: Instant,
    limit: Duration,
) {
    let result = if let [item] = items.as_slice() {
        tokio::time::timeout_at(deadline, driver.publish(&item.channel, &item.payload)).await
    } else {
        tokio::time::timeout_at(deadline, driver.publish_batch(&items)).await
    };
    match result {
        Ok(Ok(())) => {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
        Ok(Err(error)) => {
            for reply in replies {
                let _ = reply.send(Err(duplicate(&error)));
            }
        }
        Err(_) => {
            let operation = format!("publish pipeline of {} messages", items.len());
            for reply in replies {
                let _ = reply.send(Err(timeout(operation.clone(), limit)));
            }
        }
    }
}
