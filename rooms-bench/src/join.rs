//! Join latency of many new rooms, with Redis healthy and with Redis frozen.
//!
//! One process, one [`Rooms`] engine over `RedisAdapter` with every Redis
//! timeout (connect, subscribe, publish) set to `timeout`, one connection that
//! first joins [`ROOM`] (so the medium is known to work). Then, with `freeze`,
//! redis-server is stopped with SIGSTOP (its sockets stay open and nothing is
//! answered, as with a hung host) and `rooms` new rooms are joined one after
//! the other, each join timed; then SIGCONT. Without `freeze` the same joins
//! run against the healthy server: the baseline.
//!
//! Afterwards every room must be subscribed for real within
//! `recovery_deadline`: listed by [`Rooms::subscribed_rooms`] (which also
//! lists rooms still *wanted* after a failed subscribe), with a subscriber on
//! its channel according to Redis (`PUBSUB NUMSUB`), and delivering: one
//! envelope published per room by a plain redis-rs client must reach the
//! connection.
//!
//! The SIGSTOP is undone on every path (a guard sends SIGCONT when dropped).

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rooms_adapter::wire::{Codec, DEFAULT_CHANNEL_PREFIX, channel_name};
use rooms_adapter::{
    ConnectOptions, ConnectionReceiver, Envelope, NodeId, RoomName, Rooms, RoomsEvent,
};
use rooms_adapter_redis::RedisAdapter;
use serde_json::{Value, json};

use crate::common::{RAW_NODE, ROOM, bench_message, scan_u64};

/// What one run does.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// The throwaway server's URL.
    pub url: String,
    /// Its process id (needed with `freeze`).
    pub redis_pid: Option<u32>,
    /// Freeze redis-server during the joins.
    pub freeze: bool,
    /// New rooms to join.
    pub rooms: usize,
    /// Connect, subscribe and publish timeout of the adapter.
    pub timeout: Duration,
    /// How long the rooms may take to be subscribed after the thaw.
    pub recovery_deadline: Duration,
}

/// Sends a signal to a process with `kill`.
fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// A frozen redis-server; thawed when dropped, whatever happened.
struct Frozen {
    pid: Option<u32>,
}

impl Frozen {
    fn freeze(pid: u32) -> Result<Self> {
        signal(pid, "STOP")?;
        Ok(Self { pid: Some(pid) })
    }

    fn thaw(mut self) -> Result<()> {
        match self.pid.take() {
            Some(pid) => signal(pid, "CONT"),
            None => Ok(()),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = signal(pid, "CONT");
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// How many of `channels` have a subscriber according to Redis.
async fn subscribed_on_redis(
    connection: &mut redis::aio::MultiplexedConnection,
    channels: &[String],
) -> Result<usize> {
    let counts: HashMap<String, u64> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channels)
        .query_async(connection)
        .await
        .context("PUBSUB NUMSUB")?;
    Ok(counts.values().filter(|count| **count > 0).count())
}

/// Publishes one envelope per room and counts the rooms whose message reached
/// `receiver` within `deadline` (the message's `seq` is the room's index).
async fn deliveries(
    connection: &mut redis::aio::MultiplexedConnection,
    receiver: &mut ConnectionReceiver,
    channels: &[String],
    deadline: Duration,
) -> Result<usize> {
    for (i, channel) in channels.iter().enumerate() {
        let payload = Envelope::new(NodeId::from(RAW_NODE), bench_message(i as u64, 0))
            .encode(Codec::Json)
            .context("encoding the probe envelope")?;
        let _: u64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_ref())
            .query_async(connection)
            .await
            .context("PUBLISH")?;
    }
    let mut seen = HashSet::new();
    let until = tokio::time::Instant::now() + deadline;
    while seen.len() < channels.len() {
        match tokio::time::timeout_at(until, receiver.recv()).await {
            Ok(Some(delivery)) => {
                let frame = delivery.sse_frame();
                if let Some(seq) = scan_u64(frame, b"\"seq\":") {
                    seen.insert(seq);
                }
            }
            Ok(None) => anyhow::bail!("the connection ended"),
            Err(_) => break,
        }
    }
    Ok(seen.len())
}

/// One run; see the module documentation.
pub async fn run(spec: JoinSpec) -> Result<Value> {
    let adapter = RedisAdapter::builder(&spec.url)
        .redis_driver()
        .connect_timeout(spec.timeout)
        .subscribe_timeout(spec.timeout)
        .publish_timeout(spec.timeout)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .context("building the RedisAdapter")?;
    let rooms = Rooms::builder(Arc::new(adapter))
        .build()
        .await
        .context("starting the rooms engine over Redis")?;
    let mut lifecycle = rooms.lifecycle();
    let mut receiver = rooms.connect(ConnectOptions::new()).await?;
    let id = receiver.id().clone();
    rooms
        .join(&id, ROOM)
        .await
        .context("joining the first room with Redis healthy")?;
    let names: Vec<RoomName> = (0..spec.rooms)
        .map(|i| RoomName::from(format!("join-{i}")))
        .collect();
    let channels: Vec<String> = names
        .iter()
        .map(|room| channel_name(DEFAULT_CHANNEL_PREFIX, room.as_str()))
        .collect();

    let frozen = if spec.freeze {
        let pid = spec
            .redis_pid
            .context("--redis-pid is needed to freeze redis-server")?;
        Some(Frozen::freeze(pid)?)
    } else {
        None
    };
    let mut latencies = Vec::with_capacity(spec.rooms);
    let mut errors = 0usize;
    let mut first_error = None;
    let started = Instant::now();
    for room in &names {
        let at = Instant::now();
        let result = rooms.join(&id, room.clone()).await;
        latencies.push(at.elapsed());
        if let Err(error) = result {
            errors += 1;
            first_error.get_or_insert_with(|| error.to_string());
        }
    }
    let total = started.elapsed();
    let thawed = Instant::now();
    if let Some(frozen) = frozen {
        frozen.thaw()?;
    }
    let joins_stats = rooms.stats();

    // Recovery: subscribed in the engine's view, then on Redis.
    let client = redis::Client::open(spec.url.as_str()).context("redis url")?;
    let deadline = thawed + spec.recovery_deadline;
    let mut engine_ready: Option<Duration> = None;
    let mut redis_ready: Option<Duration> = None;
    let mut on_redis = 0;
    let mut probe: Option<redis::aio::MultiplexedConnection> = None;
    while Instant::now() < deadline {
        let wanted: HashSet<RoomName> = rooms.subscribed_rooms().into_iter().collect();
        if engine_ready.is_none() && names.iter().all(|room| wanted.contains(room)) {
            engine_ready = Some(thawed.elapsed());
        }
        if probe.is_none() {
            probe = tokio::time::timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        if let Some(connection) = probe.as_mut() {
            match tokio::time::timeout(
                Duration::from_secs(1),
                subscribed_on_redis(connection, &channels),
            )
            .await
            {
                Ok(Ok(count)) => on_redis = count,
                _ => probe = None,
            }
        }
        if on_redis == names.len() && redis_ready.is_none() {
            redis_ready = Some(thawed.elapsed());
        }
        if engine_ready.is_some() && redis_ready.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = match probe.as_mut() {
        Some(connection) if redis_ready.is_some() => {
            deliveries(connection, &mut receiver, &channels, Duration::from_secs(5)).await?
        }
        _ => 0,
    };
    let mut reconnected_rooms = 0;
    let mut reconnects = 0;
    while let Ok(event) = lifecycle.try_recv() {
        if let RoomsEvent::Reconnected { rooms, .. } = event {
            reconnects += 1;
            reconnected_rooms += rooms.len();
        }
    }
    let stats = rooms.stats();

    let mut sorted = latencies.clone();
    sorted.sort();
    let quantile = |q: f64| {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().map_or(0.0, ms)
    };
    let result = json!({
        "side": if spec.freeze { "frozen" } else { "healthy" },
        "rooms": spec.rooms,
        "timeout_ms": ms(spec.timeout),
        "total_ms": ms(total),
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": quantile(1.0),
        "first_join_ms": latencies.first().copied().map_or(0.0, ms),
        "errors": errors,
        "first_error": first_error,
        "deferred_subscriptions": joins_stats.deferred_subscriptions,
        "subscription_errors": stats.subscription_errors,
        "engine_subscribed_ms": engine_ready.map(ms),
        "redis_subscribed_ms": redis_ready.map(ms),
        "subscribed_on_redis": on_redis,
        "delivered_after": delivered,
        "reconnected_events": reconnects,
        "reconnected_rooms": reconnected_rooms,
        "recovered": redis_ready.is_some() && engine_ready.is_some() && delivered == names.len(),
    });
    drop(receiver);
    rooms.shutdown().await;
    Ok(result)
}
