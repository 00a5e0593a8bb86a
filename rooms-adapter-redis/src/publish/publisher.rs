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
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::driver::{PublishDriver, PublishItem};
use crate::error::{closed, duplicate, timeout};

type Reply = oneshot::Sender<Result<(), Error>>;

struct Request {
    item: PublishItem,
    reply: Reply,
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
    pub(crate) async fn publish(&self, item: PublishItem, room: &str) -> Result<(), Error> {
        let limit = self.timeout;
        let work = async {
            match &self.queue {
                None => self.driver.publish(&item.channel, &item.payload).await,
                Some(queue) => {
                    let idle = self
                        .busy
                        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok();
                    if !idle {
                        self.busy.fetch_add(1, Ordering::AcqRel);
                    }
                    let _busy = Busy(&self.busy);
                    if idle {
                        return self.driver.publish(&item.channel, &item.payload).await;
                    }
                    let (reply, answer) = oneshot::channel();
                    queue
                        .send(Request { item, reply })
                        .await
                        .map_err(|_| closed())?;
                    answer.await.map_err(|_| closed())?
                }
            }
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(timeout(format!("publish to room {room:?}"), limit)),
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
                let mut items = Vec::with_capacity(8);
                let mut replies = Vec::with_capacity(8);
                items.push(first.item);
                replies.push(first.reply);
                while items.len() < batch_size {
                    match queue.try_recv() {
                        Ok(request) => {
                            items.push(request.item);
                            replies.push(request.reply);
                        }
                        Err(_) => break,
                    }
                }
                in_flight.push(send(Arc::clone(&driver), items, replies, limit));
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

async fn send(
    driver: Arc<dyn PublishDriver>,
    items: Vec<PublishItem>,
    replies: Vec<Reply>,
    limit: Duration,
) {
    let result = if let [item] = items.as_slice() {
        tokio::time::timeout(limit, driver.publish(&item.channel, &item.payload)).await
    } else {
        tokio::time::timeout(limit, driver.publish_batch(&items)).await
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
