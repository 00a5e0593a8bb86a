//! Local fan-out: one broadcast to a room of many local connections, whose
//! queues are drained by one task each. A round is timed from the broadcast
//! call until every connection has received the message.
//!
//! The engine builds the SSE frame once per message and shares it by reference
//! count; [`EngineStats::frames_encoded`](rooms_adapter::EngineStats) proves it.
//! The baseline frames per connection (`sse::frame` once for each member) and
//! sends each its own bytes, through the same kind of bounded queue.
//!
//! [`Shape`] varies the load: with `ids` every broadcast carries its own
//! message id (the engine's node-wide room window records each one; the
//! baseline's frame gets an `id:` line), and with `rooms_per_connection` of 2
//! or more every connection also joins other rooms (`side-0`, `side-1`, ...,
//! one per connection and extra slot, spread over 100 rooms) while broadcasts
//! still go to [`ROOM`], so each delivery passes the per-connection
//! fingerprint ring of a multi-room connection. The baseline keeps only the
//! members of [`ROOM`]: other rooms do not change its work.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use rooms_adapter::engine::DEFAULT_DEDUP_CAPACITY;
use rooms_adapter::{BroadcastOptions, ConnectOptions, ConnectionId, Rooms, SseMessage, sse};
use rooms_adapter_memory::MemoryAdapter;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::common::{ROOM, bench_message, cpu_seconds, rate};

/// Receipts across all connections, and a wake-up when a round completes.
#[derive(Debug, Default)]
struct Receipts {
    count: AtomicU64,
    target: AtomicU64,
    complete: Notify,
}

impl Receipts {
    fn received(&self) {
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if count == self.target.load(Ordering::Acquire) {
            self.complete.notify_one();
        }
    }

    /// Waits until `target` receipts in total (stale wake-ups are re-checked).
    async fn wait_for(&self, target: u64) {
        loop {
            let notified = self.complete.notified();
            if self.count.load(Ordering::Acquire) >= target {
                return;
            }
            notified.await;
        }
    }
}

/// Per-round times and what they add up to.
fn summary(connections: usize, rounds: &[Duration]) -> Value {
    let mut sorted = rounds.to_vec();
    sorted.sort();
    let total: Duration = rounds.iter().sum();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let deliveries = connections as u64 * rounds.len() as u64;
    json!({
        "connections": connections,
        "messages": rounds.len(),
        "deliveries": deliveries,
        "median_round_ms": median.as_secs_f64() * 1e3,
        "min_round_ms": sorted.first().copied().unwrap_or_default().as_secs_f64() * 1e3,
        "max_round_ms": sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        // From the median round: robust against a round disturbed by other
        // work on the machine.
        "deliveries_per_s": rate(connections as u64, median),
        "mean_deliveries_per_s": rate(deliveries, total),
    })
}

/// What each broadcast carries and how many rooms each connection is in.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Give every broadcast its own message id.
    pub ids: bool,
    /// Rooms each connection joins: [`ROOM`] and `rooms_per_connection - 1`
    /// others (0 counts as 1).
    pub rooms_per_connection: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            ids: false,
            rooms_per_connection: 1,
        }
    }
}

/// Rooms other than [`ROOM`] that connections join.
const SIDE_ROOMS: usize = 100;

/// Unmeasured rounds before the measured ones: one to wake every task once,
/// and, with ids and several rooms per connection, enough more to fill every
/// connection's fingerprint ring, so that the measured rounds see it full (its
/// steady state).
fn warmup(shape: Shape) -> usize {
    if shape.ids && shape.rooms_per_connection > 1 {
        1 + DEFAULT_DEDUP_CAPACITY
    } else {
        1
    }
}

/// The messages of the warm-up and the `rounds` measured rounds, built
/// before any is timed.
fn messages(rounds: usize, shape: Shape) -> Vec<Arc<SseMessage>> {
    (0..rounds + warmup(shape))
        .map(|round| {
            let message = bench_message(1, 0);
            let message = if shape.ids {
                message.with_id(format!("fanout-{round:08}"))
            } else {
                message
            };
            Arc::new(message)
        })
        .collect()
}

/// Adds the shape's figures, and the CPU time of the measured rounds per
/// delivery (every thread of the process: broadcast and receiving tasks), to a
/// result.
fn describe(result: &mut Value, shape: Shape, connections: usize, rounds: usize, cpu_s: f64) {
    result["ids"] = json!(shape.ids);
    result["rooms_per_connection"] = json!(shape.rooms_per_connection.max(1));
    result["warmup_rounds"] = json!(warmup(shape));
    result["rounds_cpu_s"] = json!(cpu_s);
    let deliveries = (connections * rounds).max(1) as f64;
    result["cpu_us_per_delivery"] = json!(cpu_s / deliveries * 1e6);
}

/// The engine: `broadcast` to a room of `connections` local members.
pub async fn engine(connections: usize, rounds: usize) -> Result<Value> {
    engine_shaped(connections, rounds, Shape::default()).await
}

/// [`engine`] with a [`Shape`].
pub async fn engine_shaped(connections: usize, rounds: usize, shape: Shape) -> Result<Value> {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await?;
    let receipts = Arc::new(Receipts::default());
    let mut drains = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut connection = rooms.connect(ConnectOptions::new()).await?;
        rooms.join(connection.id(), ROOM).await?;
        for extra in 1..shape.rooms_per_connection.max(1) {
            let side = (i * (shape.rooms_per_connection - 1) + extra) % SIDE_ROOMS;
            rooms.join(connection.id(), format!("side-{side}")).await?;
        }
        let receipts = Arc::clone(&receipts);
        drains.push(tokio::spawn(async move {
            while let Some(delivery) = connection.recv().await {
                black_box(delivery.sse_frame().len());
                receipts.received();
            }
        }));
    }
    let messages = messages(rounds, shape);
    let warmup = warmup(shape);
    let before = rooms.stats();
    let mut times = Vec::with_capacity(rounds);
    let mut cpu_started = 0.0;
    // Unmeasured rounds first (see `warmup`).
    for (round, message) in messages.iter().enumerate() {
        let target = (round as u64 + 1) * connections as u64;
        receipts.target.store(target, Ordering::Release);
        if round == warmup {
            cpu_started = cpu_seconds()?;
        }
        let started = Instant::now();
        let report = rooms
            .broadcast(ROOM, Arc::clone(message), BroadcastOptions::new())
            .await?;
        receipts.wait_for(target).await;
        if round >= warmup {
            times.push(started.elapsed());
        }
        anyhow::ensure!(
            report.delivered == connections,
            "delivered to {} of {connections}",
            report.delivered
        );
    }
    let cpu_s = cpu_seconds()? - cpu_started;
    let after = rooms.stats();
    let mut result = summary(connections, &times);
    result["side"] = json!("engine");
    // Frames built for the measured rounds and the warm-up rounds.
    result["frames_encoded"] = json!(after.frames_encoded - before.frames_encoded);
    result["broadcasts"] = json!(after.broadcasts - before.broadcasts);
    result["duplicates"] = json!(after.duplicates - before.duplicates);
    describe(&mut result, shape, connections, rounds, cpu_s);
    rooms.shutdown().await;
    for drain in drains {
        drain.await.context("drain task")?;
    }
    Ok(result)
}

/// The baseline: the same room and queues, framing once per connection.
pub async fn naive(connections: usize, rounds: usize) -> Result<Value> {
    naive_shaped(connections, rounds, Shape::default()).await
}

/// [`naive`] with a [`Shape`] (only `ids` changes what it sends).
pub async fn naive_shaped(connections: usize, rounds: usize, shape: Shape) -> Result<Value> {
    let members: RwLock<Vec<(ConnectionId, mpsc::Sender<Bytes>)>> = RwLock::default();
    let receipts = Arc::new(Receipts::default());
    let mut drains = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (sender, mut receiver) = mpsc::channel::<Bytes>(256);
        members
            .write()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((ConnectionId::random(), sender));
        let receipts = Arc::clone(&receipts);
        drains.push(tokio::spawn(async move {
            while let Some(frame) = receiver.recv().await {
                black_box(frame.len());
                receipts.received();
            }
        }));
    }
    let messages = messages(rounds, shape);
    let warmup = warmup(shape);
    let mut frames = 0u64;
    let mut times = Vec::with_capacity(rounds);
    let mut cpu_started = 0.0;
    for (round, message) in messages.iter().enumerate() {
        let target = (round as u64 + 1) * connections as u64;
        receipts.target.store(target, Ordering::Release);
        if round == warmup {
            cpu_started = cpu_seconds()?;
        }
        let started = Instant::now();
        {
            let members = members.read().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for (_, sender) in members.iter() {
                let frame = sse::frame(message)?;
                frames += 1;
                sender
                    .try_send(frame)
                    .map_err(|_| anyhow::anyhow!("naive queue full"))?;
            }
        }
        receipts.wait_for(target).await;
        if round >= warmup {
            times.push(started.elapsed());
        }
    }
    let cpu_s = cpu_seconds()? - cpu_started;
    let mut result = summary(connections, &times);
    result["side"] = json!("naive");
    result["frames_encoded"] = json!(frames);
    result["broadcasts"] = json!(messages.len());
    describe(&mut result, shape, connections, rounds, cpu_s);
    members
        .write()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clear();
    for drain in drains {
        drain.await.context("drain task")?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_multi_room_warmup_fills_the_ring() {
        let shape = Shape {
            ids: true,
            rooms_per_connection: 2,
        };
        let shaped = messages(3, shape);
        assert_eq!(shaped.len(), 3 + 1 + DEFAULT_DEDUP_CAPACITY);
        let ids: std::collections::HashSet<&str> =
            shaped.iter().filter_map(|m| m.id.as_deref()).collect();
        assert_eq!(ids.len(), shaped.len());
        assert_eq!(messages(3, Shape::default()).len(), 4);
        assert!(messages(3, Shape::default())[0].id.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shaped_engine_delivers_once_per_connection() -> Result<()> {
        let shape = Shape {
            ids: true,
            rooms_per_connection: 2,
        };
        let result = engine_shaped(50, 3, shape).await?;
        assert_eq!(result["duplicates"], 0, "{result}");
        assert_eq!(result["frames_encoded"], result["broadcasts"], "{result}");
        let naive = naive_shaped(50, 3, shape).await?;
        assert_eq!(naive["deliveries"], 150, "{naive}");
        Ok(())
    }
}
