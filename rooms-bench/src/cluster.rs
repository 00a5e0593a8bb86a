//! Cost of cluster awareness: cross-node queries with `nodes` engines in one
//! process (on a memory bus, or each on its own `RedisAdapter` against one
//! redis-server), and how long a node that stops takes to expire.
//!
//! Every node holds `rooms` rooms with `members` connections each (the same
//! room names on every node, so answers merge). Node 0 then asks
//! `cluster_member_count` and `cluster_rooms` `queries` times each, one after
//! the other, timing each answer and checking it is complete and right. The
//! baseline is the same answers computed without the medium: node 0 summing
//! every engine's local `member_count` / `rooms` directly (what a process
//! that held every node could do), timed the same way.
//!
//! Then one node is dropped without shutting down (no `leave` frame: its
//! heartbeats just stop, as when its process dies) and the time until node 0
//! reports it expired is measured, against the configured expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rooms_adapter::cluster::NodeDeparture;
use rooms_adapter::{ConnectOptions, ConnectionReceiver, RoomName, Rooms, RoomsEvent};
use rooms_adapter_memory::MemoryBus;
use rooms_adapter_redis::RedisAdapter;
use serde_json::{Value, json};

use crate::common::{cpu_seconds, latency_histogram, latency_summary};

/// What one run does.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// `None`: a memory bus; `Some(url)`: Redis.
    pub redis_url: Option<String>,
    /// Engines.
    pub nodes: usize,
    /// Rooms per node.
    pub rooms: usize,
    /// Members per room per node.
    pub members: usize,
    /// Queries of each kind.
    pub queries: usize,
    /// Heartbeat interval of every node.
    pub heartbeat: Duration,
    /// Node expiry of every node.
    pub expiry: Duration,
}

async fn node(spec: &ClusterSpec, bus: &MemoryBus, index: usize) -> Result<Rooms> {
    let adapter: Arc<dyn rooms_adapter::RoomAdapter> = match &spec.redis_url {
        None => Arc::new(bus.adapter()),
        Some(url) => Arc::new(
            RedisAdapter::builder(url)
                .build()
                .context("building a RedisAdapter")?,
        ),
    };
    anyhow::ensure!(
        adapter.capabilities().control,
        "the {} adapter declares no control capability",
        adapter.name()
    );
    Rooms::builder(adapter)
        .node_id(format!("bench-node-{index}"))
        .heartbeat_interval(spec.heartbeat)
        .node_expiry(spec.expiry)
        .query_timeout(Duration::from_secs(5))
        .build()
        .await
        .context("starting a node")
}

fn room(index: usize) -> RoomName {
    RoomName::from(format!("room-{index}"))
}

/// Runs the whole measurement; the result's `query`, `rooms_query`,
/// `baseline_*` and `expiry_ms` fields feed the report.
pub async fn run(spec: ClusterSpec) -> Result<Value> {
    let bus = MemoryBus::new();
    let mut nodes = Vec::with_capacity(spec.nodes);
    let mut receivers: Vec<ConnectionReceiver> = Vec::new();
    for index in 0..spec.nodes {
        let rooms = node(&spec, &bus, index).await?;
        for r in 0..spec.rooms {
            for _ in 0..spec.members {
                let receiver = rooms.connect(ConnectOptions::new()).await?;
                rooms.join(receiver.id(), room(r)).await?;
                receivers.push(receiver);
            }
        }
        nodes.push(rooms);
    }
    let asker = nodes[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while asker.nodes()?.len() < spec.nodes {
        anyhow::ensure!(
            Instant::now() < deadline,
            "node 0 knows {} of {} nodes after 30 s",
            asker.nodes()?.len(),
            spec.nodes
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected_count = spec.nodes * spec.members;
    let probe = room(spec.rooms / 2);

    // Warm up both paths.
    for _ in 0..20 {
        asker.cluster_member_count(probe.clone()).await?;
        asker.cluster_rooms().await?;
    }

    let mut wrong = 0u64;
    let mut histogram = latency_histogram()?;
    let cpu = cpu_seconds()?;
    let started = Instant::now();
    for _ in 0..spec.queries {
        let begun = Instant::now();
        let answer = asker.cluster_member_count(probe.clone()).await?;
        histogram.record(nanos(begun.elapsed()))?;
        if !answer.is_complete() || answer.value != expected_count {
            wrong += 1;
        }
    }
    let count_elapsed = started.elapsed();
    let count_cpu = cpu_seconds()? - cpu;
    let count_latency = latency_summary(&histogram);

    let mut histogram = latency_histogram()?;
    let cpu = cpu_seconds()?;
    let started = Instant::now();
    for _ in 0..spec.queries {
        let begun = Instant::now();
        let answer = asker.cluster_rooms().await?;
        histogram.record(nanos(begun.elapsed()))?;
        if !answer.is_complete()
            || answer.value.len() != spec.rooms
            || answer.value.get(&probe) != Some(&expected_count)
        {
            wrong += 1;
        }
    }
    let rooms_elapsed = started.elapsed();
    let rooms_cpu = cpu_seconds()? - cpu;
    let rooms_latency = latency_summary(&histogram);

    // Baseline: the same answers from every engine's local registry.
    let mut histogram = latency_histogram()?;
    for _ in 0..spec.queries {
        let begun = Instant::now();
        let sum: usize = nodes.iter().map(|n| n.member_count(&probe)).sum();
        histogram.record(nanos(begun.elapsed()))?;
        if sum != expected_count {
            wrong += 1;
        }
    }
    let baseline_count = latency_summary(&histogram);
    let mut histogram = latency_histogram()?;
    for _ in 0..spec.queries {
        let begun = Instant::now();
        let mut merged: BTreeMap<RoomName, usize> = BTreeMap::new();
        for n in &nodes {
            for name in n.rooms() {
                let members = n.member_count(&name);
                *merged.entry(name).or_default() += members;
            }
        }
        histogram.record(nanos(begun.elapsed()))?;
        if merged.len() != spec.rooms {
            wrong += 1;
        }
    }
    let baseline_rooms = latency_summary(&histogram);

    // Expiry: the last node stops without a word.
    let mut lifecycle = asker.lifecycle();
    let Some(silent) = nodes.pop() else {
        anyhow::bail!("no node to stop");
    };
    let gone = silent.node_id().clone();
    let stopped = Instant::now();
    drop(silent);
    let expiry = loop {
        let left = tokio::time::timeout(spec.expiry * 10, lifecycle.recv())
            .await
            .context("no NodeLeft within ten expiries")?;
        if let Ok(RoomsEvent::NodeLeft {
            node,
            departure: NodeDeparture::Expired,
        }) = left
            && node == gone
        {
            break stopped.elapsed();
        }
    };
    let after = asker.cluster_member_count(probe.clone()).await?;
    for n in &nodes {
        n.shutdown().await;
    }
    drop(receivers);
    Ok(json!({
        "medium": if spec.redis_url.is_some() { "redis" } else { "memory-bus" },
        "nodes": spec.nodes,
        "rooms": spec.rooms,
        "members": spec.members,
        "queries": spec.queries,
        "wrong_answers": wrong,
        "count": count_latency,
        "count_per_s": spec.queries as f64 / count_elapsed.as_secs_f64(),
        "count_cpu_us": count_cpu * 1e6 / spec.queries as f64,
        "rooms_query": rooms_latency,
        "rooms_per_s": spec.queries as f64 / rooms_elapsed.as_secs_f64(),
        "rooms_cpu_us": rooms_cpu * 1e6 / spec.queries as f64,
        "baseline_count": baseline_count,
        "baseline_rooms": baseline_rooms,
        "heartbeat_ms": spec.heartbeat.as_secs_f64() * 1e3,
        "expiry_config_ms": spec.expiry.as_secs_f64() * 1e3,
        "expiry_ms": expiry.as_secs_f64() * 1e3,
        "after_expiry_complete": after.is_complete(),
        "after_expiry_nodes": after.answered,
    }))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
