//! `cargo xtask soak [--quick] [--duration SECS] [--clients N] [--rooms N]
//! [--rate MSGS_PER_SEC] [--outage SECS] [--no-write]`: two `sse-chat` nodes
//! (release, feature `redis`) over a throwaway `redis-server`, thousands of
//! real SSE clients spread over rooms and both nodes, chat messages posted
//! into both nodes at a steady rate, and Redis killed (SIGKILL) and restarted
//! on the same port in the middle.
//!
//! It checks, and prints as a table:
//! - RSS per connection of each node stays flat: the first sample after both
//!   the warm-up and the outage, and the last one, differ by at most
//!   [`RSS_GROWTH_TOLERANCE`] per connection;
//! - deliveries are exact outside the outage window: every message accepted
//!   (202) and sent outside the window reaches every member of its room once,
//!   no duplicates anywhere, nothing from another room, no post refused;
//! - every client sees the outage's gap signal (a `notice` event with
//!   `"kind":"reconnected"`);
//! - no stream ends early and both nodes survive;
//!
//! and reports CPU per delivered message (both nodes' utime + stime over the
//! deliveries) and p50/p99 end-to-end latency (POST sent to SSE frame read).
//! Without `--quick` (or with `--no-write`) it rewrites the `## Soak` section of
//! BENCHMARKS.md, keeping the rest. Exits non-zero if a check fails.

use crate::bench::thousands;
use crate::host::{command_output, load_average, workspace_root};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rooms_testkit::redis_server::RedisServer;
use tokio::sync::{Semaphore, watch};

use crate::load::{self, ClientReport, ClientSpec, Node, PostPlan, PostRecord, ProcSample, Tally};

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>()
        .map_err(|e| format!("{name} {text:?}: {e}"))
}

const USAGE: &str = "usage: cargo xtask soak [--quick] [--duration SECS] [--clients N] [--rooms N]
                        [--rate MSGS_PER_SEC] [--outage SECS] [--no-write]

  --quick       CI-sized: 400 clients, 10 rooms, 50 msg/s for 30 s, a 2 s outage
  --duration    seconds of posting (default 180)
  --clients     SSE clients, half on each node (default 4000)
  --rooms       rooms the clients are spread over (default 40)
  --rate        chat messages per second, alternately into both nodes (default 100)
  --outage      seconds Redis stays down (default 3)
  --no-write    do not rewrite the ## Soak section of BENCHMARKS.md
A full run (no --quick) rewrites the ## Soak section of BENCHMARKS.md.";

/// Most RSS growth per connection allowed between the first sample after
/// warm-up and the outage, and the last one. (With 200 connections per node
/// and few messages, the noise seen was under 0.5 KiB outside the outage.)
pub const RSS_GROWTH_TOLERANCE: f64 = 2048.0;
/// The outage window starts this long before the kill (messages then in
/// flight through Redis may be lost with it)...
const WINDOW_BEFORE: Duration = Duration::from_secs(1);
/// ...and ends this long after the last `reconnected` notice a client saw
/// (or after the restart, whichever is later).
const WINDOW_AFTER: Duration = Duration::from_secs(1);
/// RSS is compared from this long after the outage window.
const SETTLE: Duration = Duration::from_secs(2);
/// If no client ever sees a notice, the window ends this long after the restart.
const NO_NOTICE_WINDOW: Duration = Duration::from_secs(10);
/// Clients connecting at once.
const JOIN_CONCURRENCY: usize = 64;
/// POSTs in flight at once.
const POST_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone)]
struct Options {
    write: bool,
    duration: u64,
    clients: usize,
    rooms: usize,
    rate: f64,
    outage: u64,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let quick = args.iter().any(|arg| arg == "--quick");
        let mut options = if quick {
            Self {
                write: false,
                duration: 30,
                clients: 400,
                rooms: 10,
                rate: 50.0,
                outage: 2,
            }
        } else {
            Self {
                write: true,
                duration: 180,
                clients: 4000,
                rooms: 40,
                rate: 100.0,
                outage: 3,
            }
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--quick" => {}
                "--no-write" => options.write = false,
                "--duration" => options.duration = number("--duration", &value("--duration")?)?,
                "--clients" => options.clients = number("--clients", &value("--clients")?)?,
                "--rooms" => options.rooms = number("--rooms", &value("--rooms")?)?,
                "--rate" => options.rate = number("--rate", &value("--rate")?)?,
                "--outage" => options.outage = number("--outage", &value("--outage")?)?,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if !(4..=86_400).contains(&options.duration) {
            return Err("--duration must be 4 to 86400 seconds".to_owned());
        }
        if !(2..=20_000).contains(&options.clients) {
            return Err("--clients must be 2 to 20000".to_owned());
        }
        if options.rooms == 0 || options.rooms * 2 > options.clients {
            return Err("--rooms must be at least 1 and at most half the clients \
                 (every room has members on both nodes)"
                .to_owned());
        }
        if !(options.rate >= 1.0 && options.rate <= 10_000.0) {
            return Err("--rate must be 1 to 10000 messages per second".to_owned());
        }
        if !(1..=60).contains(&options.outage) {
            return Err("--outage must be 1 to 60 seconds".to_owned());
        }
        if options.outage * 4 > options.duration {
            return Err("--outage must be at most a quarter of --duration".to_owned());
        }
        Ok(Some(options))
    }

    fn describe(&self) -> String {
        format!(
            "{} SSE clients ({} per node) in {} rooms, {} msg/s for {} s posted alternately into \
             both nodes; Redis SIGKILLed at {:.0} s and restarted on the same port after {} s",
            thousands(self.clients as f64),
            thousands((self.clients / 2) as f64),
            self.rooms,
            self.rate,
            self.duration,
            self.kill_at().as_secs_f64(),
            self.outage
        )
    }

    fn kill_at(&self) -> Duration {
        Duration::from_secs_f64(self.duration as f64 * 0.4)
    }

    fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.duration as f64 / 5.0).max(3.0))
    }

    fn sample_every(&self) -> Duration {
        Duration::from_secs_f64((self.duration as f64 / 40.0).max(1.0))
    }
}

/// Runs `cargo xtask soak` with the arguments after `soak`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(options) = Options::parse(args)? else {
        return Ok(());
    };
    let started = Instant::now();
    let bin = crate::host::build_release("sse-chat", "sse-chat", &["redis"])?;
    // The clients' sockets here, the nodes' (which inherit the limit) there.
    load::raise_nofile(options.clients as u64 + 1024)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    eprintln!("\nsoak: {}", options.describe());
    // Ctrl-C ends the run through the error path, so the drop guards stop
    // the nodes and redis-server.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = soak(&options, &bin) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    })?;
    drop(runtime);

    let command = if args.is_empty() {
        "cargo xtask soak".to_owned()
    } else {
        format!("cargo xtask soak {}", args.join(" "))
    };
    let report = outcome.report(&options, &command, started.elapsed());
    println!("\n{report}");
    if options.write {
        let path = workspace_root().join("BENCHMARKS.md");
        write_section(&path, &report)?;
        eprintln!("wrote the ## Soak section of {}", path.display());
    }
    let failed: Vec<&str> = outcome
        .checks
        .iter()
        .filter(|check| check.ok == Some(false))
        .map(|check| check.name.as_str())
        .collect();
    if failed.is_empty() {
        eprintln!("soak passed in {:.0?}", started.elapsed());
        Ok(())
    } else {
        for log in &outcome.logs {
            eprintln!("{log}");
        }
        Err(format!("failed: {}", failed.join("; ")))
    }
}

/// One line of the table.
struct Check {
    name: String,
    figure: String,
    /// `None`: reported, not checked.
    ok: Option<bool>,
    rule: String,
}

/// One sample of both nodes.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since posting began.
    at: f64,
    nodes: [ProcSample; 2],
}

struct Outcome {
    checks: Vec<Check>,
    samples: Vec<Sample>,
    idle: [ProcSample; 2],
    per_node: [usize; 2],
    logs: Vec<String>,
}

impl Outcome {
    fn report(&self, options: &Options, command: &str, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Command: `{command}` ({:.0} s)  ",
            elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "Date: {}; machine: {} cores; load average after the run {}; commit {}  ",
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            std::thread::available_parallelism().map_or(0, usize::from),
            load_average(),
            command_output("git", &["rev-parse", "--short", "HEAD"]),
        );
        let _ = writeln!(out, "Run: {}.", options.describe());
        let _ = writeln!(out);
        let _ = writeln!(out, "| Soak | Figure | Rule | Result |");
        let _ = writeln!(out, "|---|---|---|---|");
        for check in &self.checks {
            let result = match check.ok {
                Some(true) => "ok",
                Some(false) => "**FAILED**",
                None => "report",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {result} |",
                check.name, check.figure, check.rule
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "RSS over time (t = seconds since posting began; per connection = (RSS − RSS before \
             any client) / connections on that node; idle RSS: A {}, B {}):",
            mib(self.idle[0].rss_bytes),
            mib(self.idle[1].rss_bytes)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| t (s) | RSS A | RSS B | per connection A | per connection B |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for sample in thin(&self.samples, 16) {
            let per = |i: usize| {
                kib(per_connection(
                    sample.nodes[i].rss_bytes,
                    self.idle[i].rss_bytes,
                    self.per_node[i],
                ))
            };
            let _ = writeln!(
                out,
                "| {:.0} | {} | {} | {} | {} |",
                sample.at,
                mib(sample.nodes[0].rss_bytes),
                mib(sample.nodes[1].rss_bytes),
                per(0),
                per(1)
            );
        }
        out
    }
}

/// At most `keep` samples, evenly spread, always with the last.
fn thin(samples: &[Sample], keep: usize) -> Vec<Sample> {
    if samples.len() <= keep {
        return samples.to_vec();
    }
    let step = samples.len().div_ceil(keep.saturating_sub(1).max(1));
    let mut kept: Vec<Sample> = samples.iter().step_by(step).copied().collect();
    if let (Some(last), Some(kept_last)) = (samples.last(), kept.last())
        && kept_last.at != last.at
    {
        kept.push(*last);
    }
    kept
}

fn per_connection(rss: u64, idle: u64, connections: usize) -> f64 {
    (rss as f64 - idle as f64) / connections.max(1) as f64
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

async fn soak(options: &Options, bin: &Path) -> Result<Outcome, String> {
    let redis = RedisServer::start()
        .await
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let url = redis.url();
    eprintln!("redis-server on {url} (pid {:?})", redis.pid());
    let mut nodes = [
        Node::start(bin, "soak-a", &url, options.clients + 16)?,
        Node::start(bin, "soak-b", &url, options.clients + 16)?,
    ];
    eprintln!(
        "nodes: {} on {} (pid {}), {} on {} (pid {})",
        nodes[0].name,
        nodes[0].addr,
        nodes[0].pid(),
        nodes[1].name,
        nodes[1].addr,
        nodes[1].pid()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = sample(&nodes)?;

    // Clients: client i in room i % rooms, on node (i / rooms) % 2, so every
    // room has members on both nodes.
    let base = Instant::now();
    let tally = Tally::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let joins = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let room_names: Vec<String> = (0..options.rooms).map(|r| format!("soak-{r}")).collect();
    let mut per_node = [0usize; 2];
    let mut clients = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let room = index % options.rooms;
        let node = (index / options.rooms) % 2;
        per_node[node] += 1;
        clients.push(load::spawn_client(
            ClientSpec {
                index,
                addr: nodes[node].addr,
                room: room as u64,
                room_name: room_names[room].clone(),
                rooms: options.rooms as u64,
            },
            tally.clone(),
            base,
            joins.clone(),
            stop_rx.clone(),
        ));
    }
    let join_limit = Duration::from_secs(60 + options.clients as u64 / 50);
    load::wait_ready(&tally, options.clients, join_limit).await?;
    eprintln!(
        "{} clients joined in {:.1?}",
        options.clients,
        base.elapsed()
    );

    // Posting, the outage and sampling run side by side.
    let post_start = Instant::now();
    let post_start_us = load::micros_since(base);
    let count = (options.rate * options.duration as f64).round() as u64;
    let poster = tokio::spawn(load::post(
        PostPlan {
            nodes: nodes.iter().map(|node| node.addr).collect(),
            rooms: room_names.clone(),
            count,
            rate: Some(options.rate),
            in_flight: POST_IN_FLIGHT,
        },
        base,
    ));
    let kill_at = options.kill_at();
    let outage = Duration::from_secs(options.outage);
    let outage_task = tokio::spawn(async move {
        let mut redis = redis;
        tokio::time::sleep(kill_at).await;
        let pid = redis.pid();
        redis
            .kill()
            .map_err(|e| format!("cannot kill redis-server: {e}"))?;
        let killed_us = load::micros_since(base);
        eprintln!(
            "t={:.1}s: redis-server (pid {pid:?}) killed",
            post_start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(outage).await;
        redis
            .restart()
            .await
            .map_err(|e| format!("cannot restart redis-server: {e}"))?;
        let restarted_us = load::micros_since(base);
        eprintln!(
            "t={:.1}s: redis-server restarted (pid {:?})",
            post_start.elapsed().as_secs_f64(),
            redis.pid()
        );
        Ok::<_, String>((redis, killed_us, restarted_us))
    });
    let mut samples = Vec::new();
    let start_sample = sample(&nodes)?;
    let own_start = ProcSample::read(std::process::id()).unwrap_or_default();
    samples.push(Sample {
        at: 0.0,
        nodes: start_sample.nodes,
    });
    let every = options.sample_every();
    let mut next = tokio::time::Instant::now() + every;
    // A hard bound in case posting stalls.
    let hard_limit = tokio::time::Instant::now() + Duration::from_secs(options.duration * 3 + 60);
    let mut poster = poster;
    let records = loop {
        tokio::select! {
            posted = &mut poster => {
                break posted.map_err(|e| format!("the poster failed: {e}"))??;
            }
            () = tokio::time::sleep_until(next) => {
                next += every;
                let mut now = sample(&nodes)?;
                now.at = post_start.elapsed().as_secs_f64();
                samples.push(now);
            }
            () = tokio::time::sleep_until(hard_limit) => {
                return Err("posting did not finish in three times --duration".to_owned());
            }
        }
    };
    let (redis, killed_us, restarted_us) = outage_task
        .await
        .map_err(|e| format!("the outage task failed: {e}"))??;
    let posted_us = load::micros_since(base);
    eprintln!(
        "posted {} messages in {:.1} s",
        records.len(),
        (posted_us - post_start_us) as f64 / 1e6
    );

    // Every message to every member of its room bounds the drain (a refused
    // post may still have reached its node's own members); usually it ends
    // when nothing more arrives for a while.
    let members = members_per_room(options);
    let most: u64 = records
        .iter()
        .map(|r| members[(r.seq % options.rooms as u64) as usize])
        .sum();
    let delivered = load::drain(
        &tally,
        most,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let drained_us = load::micros_since(base);
    let mut last = sample(&nodes)?;
    last.at = post_start.elapsed().as_secs_f64();
    let own_cpu = ProcSample::read(std::process::id())
        .unwrap_or_default()
        .cpu_secs
        - own_start.cpu_secs;
    samples.push(last);
    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(clients.len());
    for client in clients {
        reports.push(
            client
                .await
                .map_err(|e| format!("a client task failed: {e}"))?,
        );
    }
    let alive = [nodes[0].is_running(), nodes[1].is_running()];
    let logs = nodes
        .iter()
        .map(|node| format!("--- {} log (last lines):\n{}", node.name, node.log_tail(5)))
        .collect();
    drop(redis);

    let latency = tally.latency()?;
    let first_notice_us = tally.first_notice_us.load(Ordering::Relaxed);
    let last_notice_us = tally.last_notice_us.load(Ordering::Relaxed);
    let window = Window {
        start: killed_us.saturating_sub(micros(WINDOW_BEFORE)),
        end: if last_notice_us > 0 {
            last_notice_us.max(restarted_us) + micros(WINDOW_AFTER)
        } else {
            restarted_us + micros(NO_NOTICE_WINDOW)
        },
    };
    let deliveries = tally_deliveries(options, &records, &reports, window);
    let secs = |us: u64| us.saturating_sub(post_start_us) as f64 / 1e6;

    let mut checks = Vec::new();
    // Flat means no growth in steady traffic: from the first sample after
    // warm-up that is also past the outage (a reconnect allocates once; that
    // step is shown, not held against the run) to the last one.
    let warm_up = options.warm_up().as_secs_f64();
    let settled_at = warm_up.max(secs(window.end) + SETTLE.as_secs_f64());
    let at_or_after = |t: f64| samples.iter().find(|s| s.at >= t).copied().unwrap_or(last);
    let warm = at_or_after(warm_up);
    let settled = at_or_after(settled_at);
    for (i, name) in ["A", "B"].into_iter().enumerate() {
        let per = |sample: &Sample| {
            per_connection(
                sample.nodes[i].rss_bytes,
                idle.nodes[i].rss_bytes,
                per_node[i],
            )
        };
        let growth = per(&last) - per(&settled);
        checks.push(Check {
            name: format!("RSS per connection, node {name}"),
            figure: format!(
                "{} at {:.0} s (warm), {} at {:.0} s (outage over) → {} at {:.0} s ({}{} since \
                 the outage; {} connections)",
                kib(per(&warm)),
                warm.at,
                kib(per(&settled)),
                settled.at,
                kib(per(&last)),
                last.at,
                if growth >= 0.0 { "+" } else { "" },
                kib(growth),
                thousands(per_node[i] as f64)
            ),
            ok: Some(growth <= RSS_GROWTH_TOLERANCE),
            rule: format!(
                "flat: growth after warm-up and the outage ≤ {}",
                kib(RSS_GROWTH_TOLERANCE)
            ),
        });
    }
    checks.push(Check {
        name: "Deliveries outside the outage window".to_owned(),
        figure: format!(
            "{} of {} expected ({} messages); missing {}, duplicates {}, wrong room {}, \
             without id {}, unreadable {}",
            thousands(deliveries.received_outside as f64),
            thousands(deliveries.expected_outside as f64),
            thousands(deliveries.messages_outside as f64),
            thousands(deliveries.missing as f64),
            deliveries.duplicates,
            deliveries.foreign,
            deliveries.without_id,
            deliveries.malformed
        ),
        ok: Some(
            deliveries.missing == 0
                && deliveries.duplicates == 0
                && deliveries.foreign == 0
                && deliveries.malformed == 0
                && deliveries.without_id == 0,
        ),
        rule: "exact: each once to every member".to_owned(),
    });
    if !deliveries.refused_examples.is_empty() {
        let rooms = options.rooms as u64;
        let examples: Vec<String> = deliveries
            .refused_examples
            .iter()
            .map(|&(seq, sent_us, done_us, status)| {
                format!(
                    "message {seq} via node {} sent at {:.2} s, answered at {:.2} s: {}",
                    ["A", "B"][((seq / rooms) % 2) as usize],
                    secs(sent_us),
                    secs(done_us),
                    status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
                )
            })
            .collect();
        eprintln!(
            "posts refused outside the outage window, first ones: {}",
            examples.join("; ")
        );
    }
    if !deliveries.missing_examples.is_empty() {
        let nodes_n = 2;
        let examples: Vec<String> = deliveries
            .missing_examples
            .iter()
            .map(|&(seq, sent_us, received, members)| {
                let rooms = options.rooms as u64;
                format!(
                    "message {seq} (room soak-{}, via node {}) sent at {:.2} s: {received} of {members}",
                    seq % rooms,
                    ["A", "B"][((seq / rooms) % nodes_n) as usize],
                    secs(sent_us)
                )
            })
            .collect();
        eprintln!("missing deliveries, first ones: {}", examples.join("; "));
    }
    checks.push(Check {
        name: "Posts outside the outage window".to_owned(),
        figure: format!(
            "{} accepted, {} refused or failed",
            thousands(deliveries.posts_outside_ok as f64),
            deliveries.posts_outside_failed
        ),
        ok: Some(deliveries.posts_outside_failed == 0),
        rule: "all accepted (202)".to_owned(),
    });
    checks.push(Check {
        name: "Outage".to_owned(),
        figure: format!(
            "Redis killed at {:.1} s, back at {:.1} s; window {:.1}–{:.1} s: {} posts accepted, \
             {} refused or failed; {} of {} deliveries of accepted posts arrived",
            secs(killed_us),
            secs(restarted_us),
            secs(window.start),
            secs(window.end),
            thousands(deliveries.posts_inside_ok as f64),
            thousands(deliveries.posts_inside_failed as f64),
            thousands(deliveries.received_inside as f64),
            thousands(deliveries.expected_inside as f64),
        ),
        ok: None,
        rule: "report".to_owned(),
    });
    let notified = reports.iter().filter(|r| r.reconnected_notices > 0).count();
    checks.push(Check {
        name: "Gap signal (`notice`, kind `reconnected`)".to_owned(),
        figure: if first_notice_us > 0 {
            format!(
                "{} of {} clients got it ({:.1}–{:.1} s after the kill)",
                thousands(notified as f64),
                thousands(reports.len() as f64),
                (first_notice_us.saturating_sub(killed_us)) as f64 / 1e6,
                (last_notice_us.saturating_sub(killed_us)) as f64 / 1e6
            )
        } else {
            format!("0 of {} clients got it", thousands(reports.len() as f64))
        },
        ok: Some(notified == reports.len()),
        rule: "every client".to_owned(),
    });
    let ended: Vec<&ClientReport> = reports.iter().filter(|r| r.ended.is_some()).collect();
    checks.push(Check {
        name: "Streams and nodes".to_owned(),
        figure: format!(
            "{} of {} streams ended early{}; {} `gap` notices; nodes running: A {}, B {}",
            ended.len(),
            thousands(reports.len() as f64),
            ended
                .first()
                .and_then(|r| r.ended.as_deref())
                .map(|why| format!(" (first: {why})"))
                .unwrap_or_default(),
            reports.iter().map(|r| r.gap_notices).sum::<u64>(),
            if alive[0] { "yes" } else { "NO" },
            if alive[1] { "yes" } else { "NO" },
        ),
        ok: Some(ended.is_empty() && alive[0] && alive[1]),
        rule: "none ended; both alive".to_owned(),
    });
    let cpu = [0, 1].map(|i| last.nodes[i].cpu_secs - start_sample.nodes[i].cpu_secs);
    let delivered_in_run = delivered.max(1);
    checks.push(Check {
        name: "CPU per delivered message".to_owned(),
        figure: format!(
            "{:.2} µs (A {:.1} s + B {:.1} s of CPU for {} deliveries of {} posts in {:.0} s; \
             {:.0} µs per post; the clients and the poster used {:.1} s)",
            (cpu[0] + cpu[1]) / delivered_in_run as f64 * 1e6,
            cpu[0],
            cpu[1],
            thousands(delivered as f64),
            thousands(records.len() as f64),
            secs(drained_us),
            (cpu[0] + cpu[1]) / records.len().max(1) as f64 * 1e6,
            own_cpu,
        ),
        ok: None,
        rule: "report (both nodes)".to_owned(),
    });
    checks.push(Check {
        name: "End-to-end latency (POST sent → SSE frame read)".to_owned(),
        figure: format!(
            "p50 {} ms, p99 {} ms, max {} ms ({} deliveries)",
            load::ms(latency.value_at_quantile(0.5)),
            load::ms(latency.value_at_quantile(0.99)),
            load::ms(latency.max()),
            thousands(latency.len() as f64)
        ),
        ok: None,
        rule: "report".to_owned(),
    });

    Ok(Outcome {
        checks,
        samples,
        idle: idle.nodes,
        per_node,
        logs,
    })
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn sample(nodes: &[Node; 2]) -> Result<Sample, String> {
    let read = |node: &Node| {
        node.sample()
            .ok_or_else(|| format!("cannot read /proc of {} (pid {})", node.name, node.pid()))
    };
    Ok(Sample {
        at: 0.0,
        nodes: [read(&nodes[0])?, read(&nodes[1])?],
    })
}

/// Members of each room, as the clients were laid out.
fn members_per_room(options: &Options) -> Vec<u64> {
    let mut members = vec![0u64; options.rooms];
    for index in 0..options.clients {
        members[index % options.rooms] += 1;
    }
    members
}

/// The send times (µs since base) in which deliveries may be missing.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Window {
    fn contains(&self, us: u64) -> bool {
        (self.start..=self.end).contains(&us)
    }
}

#[derive(Debug, Default)]
struct Deliveries {
    messages_outside: u64,
    expected_outside: u64,
    received_outside: u64,
    missing: u64,
    expected_inside: u64,
    received_inside: u64,
    posts_outside_ok: u64,
    posts_outside_failed: u64,
    posts_inside_ok: u64,
    posts_inside_failed: u64,
    duplicates: u64,
    foreign: u64,
    without_id: u64,
    malformed: u64,
    /// Up to a few posts refused outside the window: (seq, sent µs, done µs, status).
    refused_examples: Vec<(u64, u64, u64, Option<u16>)>,
    /// Up to a few messages with missing deliveries: (seq, sent µs, received, members).
    missing_examples: Vec<(u64, u64, u64, u64)>,
}

fn tally_deliveries(
    options: &Options,
    records: &[PostRecord],
    reports: &[ClientReport],
    window: Window,
) -> Deliveries {
    let rooms = options.rooms as u64;
    let mut by_room: Vec<Vec<&ClientReport>> = vec![Vec::new(); options.rooms];
    let mut out = Deliveries::default();
    for report in reports {
        if let Some(room) = by_room.get_mut(report.room as usize) {
            room.push(report);
        }
        out.duplicates += report.duplicates;
        out.foreign += report.foreign;
        out.malformed += report.malformed;
    }
    for record in records {
        // Outside only if both the send and the answer are outside.
        let inside = window.contains(record.sent_us)
            || window.contains(record.done_us)
            || (record.sent_us < window.start && record.done_us > window.end);
        match (inside, record.accepted()) {
            (false, true) => out.posts_outside_ok += 1,
            (false, false) => {
                out.posts_outside_failed += 1;
                if out.refused_examples.len() < 5 {
                    out.refused_examples.push((
                        record.seq,
                        record.sent_us,
                        record.done_us,
                        record.status,
                    ));
                }
            }
            (true, true) => out.posts_inside_ok += 1,
            (true, false) => out.posts_inside_failed += 1,
        }
        if !record.accepted() {
            continue;
        }
        let members = &by_room[(record.seq % rooms) as usize];
        let number = record.seq / rooms;
        // Accepted posts must arrive with an id; a refused one (503, the
        // medium down) is delivered on its node only, without a history
        // position, and is not counted.
        out.without_id += members
            .iter()
            .filter(|m| m.without_id_numbers.contains(number))
            .count() as u64;
        let received = members
            .iter()
            .filter(|m| m.received.contains(number))
            .count() as u64;
        if inside {
            out.expected_inside += members.len() as u64;
            out.received_inside += received;
        } else {
            out.messages_outside += 1;
            out.expected_outside += members.len() as u64;
            out.received_outside += received;
            out.missing += members.len() as u64 - received;
            if received < members.len() as u64 && out.missing_examples.len() < 5 {
                out.missing_examples.push((
                    record.seq,
                    record.sent_us,
                    received,
                    members.len() as u64,
                ));
            }
        }
    }
    out
}

const SECTION: &str = "## Soak";

/// Replaces the `## Soak` section of `path` (up to the next `## ` heading or
/// the end) with `report`, or appends one; keeps everything else.
fn write_section(path: &Path, report: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = replace_section(&existing, report);
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn replace_section(existing: &str, report: &str) -> String {
    let section = format!(
        "{SECTION}\n\nWritten by `cargo xtask soak` (a full run replaces this section only).\n\n\
         {}\n",
        report.trim_end()
    );
    let start = if existing.starts_with(&format!("{SECTION}\n")) {
        Some(0)
    } else {
        existing.find(&format!("\n{SECTION}\n")).map(|at| at + 1)
    };
    match start {
        Some(start) => {
            let after = start + SECTION.len();
            let end = existing[after..]
                .find("\n## ")
                .map_or(existing.len(), |at| after + at + 1);
            let rest = &existing[end..];
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &existing[..start])
        }
        None => {
            let mut text = existing.trim_end().to_owned();
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&section);
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_soak_section() {
        let before = "# Benchmarks\n\ntext\n\n## Soak\n\nold\n\n## Other\n\nkept\n";
        let after = replace_section(before, "new");
        assert!(after.starts_with("# Benchmarks\n\ntext\n\n## Soak\n"));
        assert!(after.contains("new\n\n## Other\n\nkept\n"));
        assert!(!after.contains("old"));
        let appended = replace_section("# B\n\nx\n", "new");
        assert!(appended.starts_with("# B\n\nx\n\n## Soak\n"));
        assert!(appended.ends_with("new\n"));
        assert_eq!(replace_section(&appended, "new"), appended);
    }

    #[test]
    fn options_have_bounds() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let quick = Options::parse(&args(&["--quick"])).unwrap().unwrap();
        assert_eq!(
            (quick.clients, quick.duration, quick.write),
            (400, 30, false)
        );
        let full = Options::parse(&args(&["--duration", "120"]))
            .unwrap()
            .unwrap();
        assert_eq!((full.clients, full.duration, full.write), (4000, 120, true));
        assert!(Options::parse(&args(&["--clients", "0"])).is_err());
        assert!(Options::parse(&args(&["--rate", "0"])).is_err());
        assert!(Options::parse(&args(&["--rooms", "300", "--clients", "400"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn window_splits_posts() {
        let options = Options::parse(&["--quick".to_owned()]).unwrap().unwrap();
        let record = |seq, sent_us, status| PostRecord {
            seq,
            sent_us,
            done_us: sent_us + 10,
            status: Some(status),
        };
        let records = [
            record(0, 100, 202),
            record(1, 5_000, 503),
            record(2, 9_000, 202),
        ];
        let mut member = ClientReport {
            room: 0,
            ..ClientReport::default()
        };
        member.received.insert(0);
        let deliveries = tally_deliveries(
            &options,
            &records,
            &[member],
            Window {
                start: 4_000,
                end: 6_000,
            },
        );
        assert_eq!(deliveries.posts_outside_ok, 2);
        assert_eq!(deliveries.posts_inside_failed, 1);
        // Message 2 is in room 2, which has no member in this report list.
        assert_eq!(deliveries.expected_outside, 1);
        assert_eq!(deliveries.missing, 0);
    }
}
