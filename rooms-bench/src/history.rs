//! Cost of history: cross-node broadcast throughput with history off and on
//! (the same run, the same medium), and how fast a returning client gets a
//! long replay.
//!
//! Two engines (on a memory bus, or each on its own `RedisAdapter`): node A
//! broadcasts `messages` messages into a room, one after the other; node B
//! has one member there. The figure is messages per second from the first
//! publish until B's member has them all. History keeps `history_len`
//! messages: with more messages than that, most of the pass runs on a full
//! history (each message also drops the oldest), as on a server that has run
//! for a while, not on one whose history is still growing. B's inbound queue
//! holds a whole pass, so nothing is dropped when A runs ahead.
//!
//! Then, with history on, a client on B resumes from the first of
//! `history_len` messages: the replay rate is the messages queued by
//! `join_from` per second (it returns once they are queued).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rooms_adapter::engine::{DEFAULT_INBOUND_QUEUE, MAX_INBOUND_QUEUE};
use rooms_adapter::history::HistoryPolicy;
use rooms_adapter::{BroadcastOptions, ConnectOptions, Resume, RoomAdapter, Rooms, SseMessage};
use rooms_adapter_memory::MemoryBus;
use rooms_adapter_redis::RedisAdapter;
use serde_json::{Value, json};

/// What one run does.
#[derive(Debug, Clone)]
pub struct HistorySpec {
    /// `None`: a memory bus; `Some(url)`: Redis.
    pub redis_url: Option<String>,
    /// Messages per pass.
    pub messages: usize,
    /// Messages each room's history keeps, and the replay's length.
    pub history_len: usize,
    /// Passes per side (history off, on), alternating; the best is kept.
    pub reps: usize,
}

fn adapter(spec: &HistorySpec, bus: &MemoryBus) -> Result<Arc<dyn RoomAdapter>> {
    Ok(match &spec.redis_url {
        None => Arc::new(bus.adapter()),
        Some(url) => Arc::new(
            RedisAdapter::builder(url)
                .build()
                .context("building a RedisAdapter")?,
        ),
    })
}

async fn pair(spec: &HistorySpec, history: Option<HistoryPolicy>) -> Result<(Rooms, Rooms)> {
    let bus = MemoryBus::new();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut builder = Rooms::builder(adapter(spec, &bus)?)
            .connection_queue_capacity(1 << 20)
            .inbound_queue_capacity(
                spec.messages
                    .saturating_add(1_024)
                    .clamp(DEFAULT_INBOUND_QUEUE, MAX_INBOUND_QUEUE),
            );
        if let Some(policy) = history {
            builder = builder.history(policy);
        }
        nodes.push(builder.build().await.context("starting a node")?);
    }
    let b = nodes.pop().context("node b")?;
    let a = nodes.pop().context("node a")?;
    Ok((a, b))
}

/// One pass: messages per second from A's first publish to B's last delivery.
async fn pass(spec: &HistorySpec, history: Option<HistoryPolicy>, room: &str) -> Result<f64> {
    let (a, b) = pair(spec, history).await?;
    let mut member = b
        .connect(
            ConnectOptions::new()
                .queue_capacity(1 << 20)
                .queue_bytes(1 << 30),
        )
        .await?;
    b.join(member.id(), room).await?;
    let started = Instant::now();
    for n in 0..spec.messages {
        a.broadcast(room, SseMessage::new(n), BroadcastOptions::new())
            .await?;
    }
    for received in 0..spec.messages {
        tokio::time::timeout(Duration::from_secs(60), member.recv())
            .await
            .with_context(|| {
                format!(
                    "message {received} of {} within 60 s; node B: {:?}, its adapter: {:?}",
                    spec.messages,
                    b.stats(),
                    b.adapter_stats()
                )
            })?
            .context("the member's stream ended")?;
    }
    let rate = spec.messages as f64 / started.elapsed().as_secs_f64();
    a.shutdown().await;
    b.shutdown().await;
    Ok(rate)
}

/// The whole measurement.
pub async fn run(spec: HistorySpec) -> Result<Value> {
    let policy = HistoryPolicy::new(spec.history_len.max(1), Duration::from_secs(600))?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for rep in 0..spec.reps {
        off.push(pass(&spec, None, &format!("bench-off-{rep}")).await?);
        on.push(pass(&spec, Some(policy), &format!("bench-on-{rep}")).await?);
    }
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);

    // Replay: the whole history to one returning client.
    let (a, b) = pair(&spec, Some(policy)).await?;
    let room = "bench-replay";
    let mut first = None;
    for n in 0..spec.history_len {
        let report = a
            .broadcast(room, SseMessage::new(n), BroadcastOptions::new())
            .await?;
        first = first.or(report.id);
    }
    let first = first.context("no id from the first broadcast")?;
    let client = b
        .connect(
            ConnectOptions::new()
                .queue_capacity(1 << 20)
                .queue_bytes(1 << 30),
        )
        .await?;
    let started = Instant::now();
    let resume = b.join_from(client.id(), room, Some(&first)).await?;
    let replay_elapsed = started.elapsed();
    let Resume::Replayed { messages: replayed } = resume else {
        anyhow::bail!("the replay gave {resume:?}");
    };
    a.shutdown().await;
    b.shutdown().await;
    Ok(json!({
        "medium": if spec.redis_url.is_some() { "redis" } else { "memory-bus" },
        "messages": spec.messages,
        "history_len": spec.history_len,
        "off_per_s": best(&off),
        "on_per_s": best(&on),
        "off_runs": off,
        "on_runs": on,
        "replayed": replayed,
        "replay_ms": replay_elapsed.as_secs_f64() * 1e3,
        "replay_per_s": replayed as f64 / replay_elapsed.as_secs_f64(),
    }))
}
