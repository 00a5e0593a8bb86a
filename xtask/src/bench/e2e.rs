//! `cargo xtask bench e2e`: two `sse-chat` nodes (release, feature `redis`)
//! over a throwaway Redis, real HTTP POSTs into node A, real SSE clients on
//! node B (the tooling of `cargo xtask soak`, in `load`).
//!
//! - burst: [`BURST_MESSAGES`] posted as fast as [`BURST_IN_FLIGHT`] requests
//!   allow, [`BURST_CLIENTS`] clients in one room: deliveries/s (first POST to
//!   last frame read), lost, p50/p99 latency, CPU per delivery on node B;
//! - paced: [`PACED_RATE`] msg/s for [`PACED_SECS`] s to one client: p50/p99.
//!
//! Each is repeated (3 times in a full run, once with `--quick`); the table
//! shows medians, the details every run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rooms_testkit::redis_server::RedisServer;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::{Bench, Row, Verdict, median, thousands};
use crate::load::{self, ClientSpec, Node, PostPlan, ProcSample, Tally};

/// Messages in the burst.
pub const BURST_MESSAGES: u64 = 5_000;
/// SSE clients on node B during the burst.
pub const BURST_CLIENTS: usize = 200;
/// POSTs in flight during the burst.
pub const BURST_IN_FLIGHT: usize = 64;
/// Messages per second of the paced run.
pub const PACED_RATE: f64 = 2_000.0;
/// Seconds of the paced run.
pub const PACED_SECS: u64 = 5;

/// One burst's figures.
#[derive(Debug, Clone, Copy)]
struct Burst {
    rate: f64,
    lost: u64,
    duplicates: u64,
    ended: usize,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

/// One paced run's figures.
#[derive(Debug, Clone, Copy)]
struct Paced {
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Bench {
    pub(super) fn e2e(&mut self) -> Result<(), String> {
        let bin = crate::host::build_release("sse-chat", "sse-chat", &["redis"])?;
        load::raise_nofile(4096)?;
        let reps = if self.plan.local_reps == 1 { 1 } else { 3 };
        // Clients on two workers, as the nodes have.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?;
        // Ctrl-C ends the run through the error path, so the drop guards stop
        // the nodes and redis-server.
        let (bursts, paced, runs) = runtime.block_on(async {
            tokio::select! {
                result = runs(&bin, reps) => result,
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
            }
        })?;
        drop(runtime);
        self.runs.extend(runs);

        let burst = Burst {
            rate: median(bursts.iter().map(|b| b.rate).collect()),
            lost: bursts.iter().map(|b| b.lost).max().unwrap_or(0),
            duplicates: bursts.iter().map(|b| b.duplicates).sum(),
            ended: bursts.iter().map(|b| b.ended).max().unwrap_or(0),
            p50_ms: median(bursts.iter().map(|b| b.p50_ms).collect()),
            p99_ms: median(bursts.iter().map(|b| b.p99_ms).collect()),
            cpu_us: median(bursts.iter().map(|b| b.cpu_us).collect()),
        };
        let met = burst.lost == 0
            && burst.duplicates == 0
            && burst.cpu_us <= 0.75
            && burst.p99_ms <= 100.0;
        self.rows.push(Row {
            bench: format!(
                "End to end, burst: {} messages POSTed into node A ({BURST_IN_FLIGHT} in flight), \
                 {BURST_CLIENTS} SSE clients on node B; two `sse-chat` nodes over Redis",
                thousands(BURST_MESSAGES as f64)
            ),
            figure: format!(
                "{} deliveries/s, lost {} (worst run; {} duplicates, {} streams cut); \
                 p50/p99 {:.1} / {:.1} ms; CPU/delivery on node B {:.2} µs",
                thousands(burst.rate),
                burst.lost,
                burst.duplicates,
                burst.ended,
                burst.p50_ms,
                burst.p99_ms,
                burst.cpu_us
            ),
            baseline: "none in this run".to_owned(),
            ratio: "n/a".to_owned(),
            target: "lost 0; CPU/delivery ≤ 0.75 µs; p99 ≤ 100 ms".to_owned(),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
        });

        let lost = paced.iter().map(|p| p.lost).max().unwrap_or(0);
        let p50 = median(paced.iter().map(|p| p.p50_ms).collect());
        let p99 = median(paced.iter().map(|p| p.p99_ms).collect());
        let max = median(paced.iter().map(|p| p.max_ms).collect());
        self.rows.push(Row {
            bench: format!(
                "End to end, paced: {} msg/s for {PACED_SECS} s POSTed into node A, 1 SSE client \
                 on node B",
                thousands(PACED_RATE)
            ),
            figure: format!("p50/p99 {p50:.2} / {p99:.2} ms (max {max:.1} ms), lost {lost}"),
            baseline: "none in this run".to_owned(),
            ratio: "n/a".to_owned(),
            target: "p99 ≤ 2 ms, lost 0".to_owned(),
            verdict: if p99 <= 2.0 && lost == 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        });
        Ok(())
    }
}

type Runs = (Vec<Burst>, Vec<Paced>, Vec<(String, Value)>);

async fn runs(bin: &std::path::Path, reps: usize) -> Result<Runs, String> {
    let redis = RedisServer::start()
        .await
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let a = Node::start(bin, "e2e-a", &redis.url(), 1_000)?;
    let b = Node::start(bin, "e2e-b", &redis.url(), 1_000)?;
    let mut bursts = Vec::new();
    let mut paced = Vec::new();
    let mut details = Vec::new();
    for rep in 1..=reps {
        let label = format!("e2e burst #{rep}");
        eprintln!("   {label}");
        let (burst, detail) = burst(&a, &b, &format!("e2e-burst-{rep}")).await?;
        bursts.push(burst);
        details.push((label, detail));
        let label = format!("e2e paced #{rep}");
        eprintln!("   {label}");
        let (run, detail) = pace(&a, &b, &format!("e2e-paced-{rep}")).await?;
        paced.push(run);
        details.push((label, detail));
    }
    drop((a, b, redis));
    Ok((bursts, paced, details))
}

/// Connects `clients` SSE clients to `node` in `room`.
async fn connect(
    node: &Node,
    room: &str,
    clients: usize,
    tally: &Arc<Tally>,
    base: Instant,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<load::ClientReport>>, String> {
    let joins = Arc::new(Semaphore::new(64));
    let handles = (0..clients)
        .map(|index| {
            load::spawn_client(
                ClientSpec {
                    index,
                    addr: node.addr,
                    room: 0,
                    room_name: room.to_owned(),
                    rooms: 1,
                },
                tally.clone(),
                base,
                joins.clone(),
                stop.clone(),
            )
        })
        .collect();
    load::wait_ready(tally, clients, Duration::from_secs(60)).await?;
    Ok(handles)
}

async fn stop_all(
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<load::ClientReport>>,
) -> Result<Vec<load::ClientReport>, String> {
    let _ = stop.send(true);
    let mut reports = Vec::with_capacity(handles.len());
    for handle in handles {
        reports.push(handle.await.map_err(|e| format!("a client failed: {e}"))?);
    }
    Ok(reports)
}

async fn burst(a: &Node, b: &Node, room: &str) -> Result<(Burst, Value), String> {
    let base = Instant::now();
    let tally = Tally::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles = connect(b, room, BURST_CLIENTS, &tally, base, &stop_rx).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = b.sample().ok_or("cannot read node B's /proc")?.cpu_secs;
    let a_before = a.sample().ok_or("cannot read node A's /proc")?.cpu_secs;
    let own_before = ProcSample::read(std::process::id()).unwrap_or_default();
    let start_us = load::micros_since(base);
    let records = load::post(
        PostPlan {
            nodes: vec![a.addr],
            rooms: vec![room.to_owned()],
            count: BURST_MESSAGES,
            rate: None,
            in_flight: BURST_IN_FLIGHT,
        },
        base,
    )
    .await?;
    let refused = records.iter().filter(|r| !r.accepted()).count();
    let expected = BURST_MESSAGES * BURST_CLIENTS as u64;
    let delivered = load::drain(
        &tally,
        expected,
        Duration::from_secs(3),
        Duration::from_secs(120),
    )
    .await;
    let cpu_after = b.sample().ok_or("cannot read node B's /proc")?.cpu_secs;
    let a_after = a.sample().ok_or("cannot read node A's /proc")?.cpu_secs;
    let own_after = ProcSample::read(std::process::id()).unwrap_or_default();
    let reports = stop_all(stop_tx, handles).await?;
    let last_us = tally.last_delivery_us.load(Ordering::Relaxed);
    let latency = tally.latency()?;
    let duplicates: u64 = reports.iter().map(|r| r.duplicates).sum();
    let ended = reports.iter().filter(|r| r.ended.is_some()).count();
    let gap_notices: u64 = reports.iter().map(|r| r.gap_notices).sum();
    let seconds = last_us.saturating_sub(start_us) as f64 / 1e6;
    let burst = Burst {
        rate: delivered as f64 / seconds.max(1e-6),
        lost: expected.saturating_sub(delivered),
        duplicates,
        ended,
        p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us: (cpu_after - cpu_before) / delivered.max(1) as f64 * 1e6,
    };
    let detail = json!({
        "messages": BURST_MESSAGES,
        "clients": BURST_CLIENTS,
        "refused_posts": refused,
        "delivered": delivered,
        "lost": burst.lost,
        "duplicates": duplicates,
        "streams_cut": ended,
        "gap_notices": gap_notices,
        "seconds": seconds,
        "deliveries_per_s": burst.rate,
        "p50_ms": burst.p50_ms,
        "p99_ms": burst.p99_ms,
        "max_ms": latency.max() as f64 / 1000.0,
        "node_b_cpu_s": cpu_after - cpu_before,
        "node_a_cpu_s": a_after - a_before,
        "clients_and_poster_cpu_s": own_after.cpu_secs - own_before.cpu_secs,
        "cpu_us_per_delivery": burst.cpu_us,
    });
    Ok((burst, detail))
}

async fn pace(a: &Node, b: &Node, room: &str) -> Result<(Paced, Value), String> {
    let base = Instant::now();
    let tally = Tally::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles = connect(b, room, 1, &tally, base, &stop_rx).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count = (PACED_RATE * PACED_SECS as f64) as u64;
    let records = load::post(
        PostPlan {
            nodes: vec![a.addr],
            rooms: vec![room.to_owned()],
            count,
            rate: Some(PACED_RATE),
            in_flight: 64,
        },
        base,
    )
    .await?;
    let refused = records.iter().filter(|r| !r.accepted()).count();
    let delivered = load::drain(
        &tally,
        count,
        Duration::from_secs(3),
        Duration::from_secs(30),
    )
    .await;
    let reports = stop_all(stop_tx, handles).await?;
    let latency = tally.latency()?;
    let run = Paced {
        lost: count.saturating_sub(delivered) + reports.iter().map(|r| r.duplicates).sum::<u64>(),
        p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: latency.max() as f64 / 1000.0,
    };
    let detail = json!({
        "messages": count,
        "rate": PACED_RATE,
        "refused_posts": refused,
        "delivered": delivered,
        "lost": run.lost,
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "p999_ms": latency.value_at_quantile(0.999) as f64 / 1000.0,
        "max_ms": run.max_ms,
    });
    Ok((run, detail))
}
