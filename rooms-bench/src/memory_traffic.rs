//! Resident memory per connection *after traffic*: every connection has
//! received (and its own task has drained) messages that carry ids.
//!
//! Run in a fresh process per side, on a current-thread runtime: `VmRSS` is
//! read once the engine (or registry) is built and the messages are prepared,
//! then after `connections` connections joined their rooms (idle), then after
//! `messages` broadcasts with distinct ids, each to one room (round robin over
//! the room pool), each waited for until every member's task has taken it. The
//! difference over the count is the cost of one connection after traffic; the
//! idle part is reported next to it.
//!
//! Connection `i` joins rooms `(i + k) % rooms` for `k` in
//! `0..rooms_per_connection`; with the default pool (as many rooms as each
//! connection joins) every connection is in every room and receives every
//! message, so each one sees all the ids.
//!
//! The baseline is the naive registry of [`memory`](crate::memory) (a map of id
//! to a bounded `mpsc` sender, a map of room to member ids) with what the
//! engine did before dedup moved to fingerprints: each connection keeps a
//! `Mutex<{VecDeque, HashSet}>` of its own `Arc<str>` copy of the last 1,000
//! ids it received. Its frame is built once per message and shared.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use rooms_adapter::engine::DEFAULT_CONNECTION_QUEUE;
use rooms_adapter::{BroadcastOptions, ConnectOptions, ConnectionId, RoomName, Rooms, SseMessage};
use rooms_adapter_memory::MemoryAdapter;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::common::{bench_message, rss_bytes};

/// Ids the baseline remembers per connection: the old engine's default.
pub const NAIVE_DEDUP_CAPACITY: usize = 1_000;

/// The load of one run.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Connections.
    pub connections: usize,
    /// Rooms each connection joins.
    pub rooms_per_connection: usize,
    /// Rooms in the pool (at least `rooms_per_connection`).
    pub rooms: usize,
    /// Broadcasts, each with its own id.
    pub messages: usize,
}

impl Traffic {
    fn per_connection(&self) -> usize {
        self.rooms_per_connection.max(1)
    }

    fn pool(&self) -> usize {
        self.rooms.max(self.per_connection())
    }

    fn names(&self) -> Vec<RoomName> {
        (0..self.pool())
            .map(|i| RoomName::from(format!("traffic-{i}")))
            .collect()
    }

    /// Indexes into [`names`](Self::names) of connection `i`'s rooms.
    fn rooms_of(&self, i: usize) -> impl Iterator<Item = usize> {
        let pool = self.pool();
        (0..self.per_connection()).map(move |k| (i + k) % pool)
    }

    /// The messages, with UUID-sized ids (36 bytes) as `sse-chat` gives them.
    fn messages(&self) -> Vec<Arc<SseMessage>> {
        (0..self.messages)
            .map(|i| {
                let id = format!("{:08x}-7c1e-4a5b-9d3f-{:012x}", 0x5eed_u32, i);
                Arc::new(bench_message(i as u64, 0).with_id(id))
            })
            .collect()
    }
}

/// Receipts across all connections, and a wake-up when a target is reached.
#[derive(Debug, Default)]
struct Receipts {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Receipts {
    fn received(&self) {
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if count == self.target.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    async fn wait_for(&self, target: u64) {
        self.target.store(target, Ordering::Release);
        loop {
            let notified = self.reached.notified();
            if self.count.load(Ordering::Acquire) >= target {
                return;
            }
            notified.await;
        }
    }
}

/// RSS readings and what they mean per connection.
struct Readings {
    before: u64,
    idle: u64,
    after: u64,
}

fn result(side: &str, traffic: Traffic, rss: &Readings, deliveries: u64, secs: f64) -> Value {
    let per = |bytes: u64| bytes as f64 / traffic.connections.max(1) as f64;
    json!({
        "side": side,
        "connections": traffic.connections,
        "rooms_per_connection": traffic.per_connection(),
        "rooms": traffic.pool(),
        "messages": traffic.messages,
        "deliveries": deliveries,
        "traffic_s": secs,
        "rss_before": rss.before,
        "rss_idle": rss.idle,
        "rss_after": rss.after,
        "bytes_per_connection": per(rss.after.saturating_sub(rss.before)),
        "idle_bytes_per_connection": per(rss.idle.saturating_sub(rss.before)),
        "traffic_bytes_per_connection": per(rss.after.saturating_sub(rss.idle)),
    })
}

/// The engine after traffic.
pub async fn engine(traffic: Traffic) -> Result<Value> {
    let engine = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await?;
    let names = traffic.names();
    let messages = traffic.messages();
    let receipts = Arc::new(Receipts::default());
    let mut drains = Vec::with_capacity(traffic.connections);
    let before = rss_bytes()?;
    for i in 0..traffic.connections {
        let mut receiver = engine.connect(ConnectOptions::new()).await?;
        for room in traffic.rooms_of(i) {
            engine.join(receiver.id(), names[room].clone()).await?;
        }
        let receipts = Arc::clone(&receipts);
        drains.push(tokio::spawn(async move {
            while let Some(delivery) = receiver.recv().await {
                black_box(delivery.sse_frame().len());
                receipts.received();
            }
        }));
    }
    let idle = rss_bytes()?;
    let started = Instant::now();
    let mut expected = 0u64;
    for (i, message) in messages.iter().enumerate() {
        let room = names[i % names.len()].clone();
        let report = engine
            .broadcast(room, Arc::clone(message), BroadcastOptions::new())
            .await?;
        anyhow::ensure!(report.dropped == 0, "{} deliveries dropped", report.dropped);
        expected += report.delivered as u64;
        receipts.wait_for(expected).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    let stats = engine.stats();
    anyhow::ensure!(
        stats.connections == traffic.connections as u64,
        "connections missing"
    );
    let rss = Readings {
        before,
        idle,
        after,
    };
    let mut out = result("engine", traffic, &rss, expected, secs);
    out["duplicates"] = json!(stats.duplicates);
    out["frames_encoded"] = json!(stats.frames_encoded);
    engine.shutdown().await;
    for drain in drains {
        drain.await.context("drain task")?;
    }
    Ok(out)
}

/// The old engine's per-connection dedup: its own copy of each id.
#[derive(Debug)]
struct DedupCache {
    capacity: usize,
    order: VecDeque<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl DedupCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    fn first_time(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Arc<str> = id.into();
        self.order.push_back(Arc::clone(&id));
        self.seen.insert(id);
        true
    }
}

struct NaiveEntry {
    sender: mpsc::Sender<Bytes>,
    dedup: Mutex<DedupCache>,
}

/// The naive registry with per-connection id copies, after traffic.
pub async fn naive(traffic: Traffic) -> Result<Value> {
    let names = traffic.names();
    let messages = traffic.messages();
    let receipts = Arc::new(Receipts::default());
    let mut by_id: HashMap<ConnectionId, NaiveEntry> = HashMap::new();
    let mut by_room: HashMap<RoomName, HashSet<ConnectionId>> = HashMap::new();
    let mut drains = Vec::with_capacity(traffic.connections);
    let before = rss_bytes()?;
    for i in 0..traffic.connections {
        let id = ConnectionId::random();
        let (sender, mut receiver) = mpsc::channel::<Bytes>(DEFAULT_CONNECTION_QUEUE);
        for room in traffic.rooms_of(i) {
            by_room
                .entry(names[room].clone())
                .or_default()
                .insert(id.clone());
        }
        by_id.insert(
            id,
            NaiveEntry {
                sender,
                dedup: Mutex::new(DedupCache::new(NAIVE_DEDUP_CAPACITY)),
            },
        );
        let receipts = Arc::clone(&receipts);
        drains.push(tokio::spawn(async move {
            while let Some(frame) = receiver.recv().await {
                black_box(frame.len());
                receipts.received();
            }
        }));
    }
    let idle = rss_bytes()?;
    let started = Instant::now();
    let mut expected = 0u64;
    for (i, message) in messages.iter().enumerate() {
        let room = &names[i % names.len()];
        let frame = rooms_adapter::sse::frame(message)?;
        let id = message.id.as_deref().unwrap_or_default();
        for member in by_room.get(room).into_iter().flatten() {
            let Some(entry) = by_id.get(member) else {
                continue;
            };
            let first = entry
                .dedup
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first_time(id);
            if first {
                entry
                    .sender
                    .try_send(frame.clone())
                    .map_err(|_| anyhow::anyhow!("naive queue full"))?;
                expected += 1;
            }
        }
        receipts.wait_for(expected).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    anyhow::ensure!(by_id.len() == traffic.connections, "connections missing");
    let rss = Readings {
        before,
        idle,
        after,
    };
    let out = result("naive", traffic, &rss, expected, secs);
    by_id.clear();
    by_room.clear();
    for drain in drains {
        drain.await.context("drain task")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_over_the_pool() {
        let traffic = Traffic {
            connections: 10,
            rooms_per_connection: 2,
            rooms: 3,
            messages: 4,
        };
        assert_eq!(traffic.rooms_of(2).collect::<Vec<_>>(), vec![2, 0]);
        let every = Traffic {
            rooms: 0,
            ..traffic
        };
        assert_eq!(every.pool(), 2, "the pool is at least the rooms joined");
        let messages = traffic.messages();
        let ids: HashSet<&str> = messages.iter().filter_map(|m| m.id.as_deref()).collect();
        assert_eq!(ids.len(), 4);
        assert!(ids.iter().all(|id| id.len() == 36), "UUID-sized ids");
    }

    #[test]
    fn baseline_dedup_keeps_its_own_copies_and_evicts_the_oldest() {
        let mut cache = DedupCache::new(2);
        assert!(cache.first_time("a"));
        assert!(!cache.first_time("a"));
        assert!(cache.first_time("b"));
        assert!(cache.first_time("c"));
        assert!(cache.first_time("a"), "a was evicted");
        assert_eq!(cache.seen.len(), 2);
    }

    #[tokio::test]
    async fn both_sides_deliver_every_message() -> Result<()> {
        let traffic = Traffic {
            connections: 20,
            rooms_per_connection: 2,
            rooms: 0,
            messages: 10,
        };
        for result in [engine(traffic).await?, naive(traffic).await?] {
            assert_eq!(result["deliveries"], 200, "{result}");
        }
        Ok(())
    }
}
