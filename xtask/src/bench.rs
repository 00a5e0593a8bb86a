//! `cargo xtask bench [GROUP ...] [--quick] [--write | --no-write]`: the
//! benchmarks of the design doc's section 7, each next to a baseline measured
//! in the same run, as one table.
//!
//! It builds `rooms-bench` in release, starts a throwaway `redis-server`, runs
//! every benchmark as separate processes of the `rooms-bench` binary (a
//! cross-node run is a receiver process and a publisher process), prints the
//! table, and (for a full run, or with `--write`) writes it into
//! `BENCHMARKS.md` between the generated-section markers, keeping whatever is
//! written outside them.
//!
//! Groups: `throughput`, `drivers`, `latency`, `receive`, `fanout`, `codec`,
//! `memory`, `fanout-ids`, `memory-traffic`, `join` (starts its own
//! redis-server and freezes it), `e2e` (two `sse-chat` nodes, see [`e2e`]),
//! `nats` (throughput and latency over a throwaway nats-server, against raw
//! async-nats), `postgres` (throughput and latency over the PostgreSQL server
//! of the tests, `ROOMS_POSTGRES_URL`, against raw tokio-postgres
//! LISTEN/NOTIFY, and the attachment path for a 64 KiB message).
//! `--quick` runs fewer and smaller repetitions (a smoke test; its numbers are
//! not worth writing down).

use crate::host::{build_release, command_output, load_average, workspace_root};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rooms_testkit::nats_server::NatsServer;
use rooms_testkit::redis_server::RedisServer;
use serde_json::Value;

mod cluster;
mod e2e;
mod failover;
mod history;

const GROUPS: [&str; 16] = [
    "throughput",
    "drivers",
    "latency",
    "receive",
    "fanout",
    "codec",
    "memory",
    "fanout-ids",
    "memory-traffic",
    "join",
    "e2e",
    "failover",
    "cluster",
    "nats",
    "postgres",
    "history",
];

const BEGIN: &str = "<!-- cargo xtask bench: generated section, begin -->";
const END: &str = "<!-- cargo xtask bench: generated section, end -->";

/// Queue of the receiving connection in cross-node runs (see the notes).
const RECEIVER_QUEUE: &str = "65536";

/// How much of everything to run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Repetitions of each cross-node throughput run, per side.
    reps: usize,
    /// Repetitions of each one-process benchmark, per side.
    local_reps: usize,
    throughput_count: u64,
    latency_secs: u64,
    latency_reps: usize,
    receive_count: u64,
    memory_connections: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            reps: 5,
            local_reps: 3,
            throughput_count: 200_000,
            latency_secs: 10,
            latency_reps: 3,
            receive_count: 500_000,
            memory_connections: 100_000,
        }
    }

    fn quick() -> Self {
        Self {
            reps: 1,
            local_reps: 1,
            throughput_count: 50_000,
            latency_secs: 2,
            latency_reps: 1,
            receive_count: 100_000,
            memory_connections: 10_000,
        }
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut groups: Vec<&str> = Vec::new();
    let mut quick = false;
    let mut write: Option<bool> = None;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--write" => write = Some(true),
            "--no-write" => write = Some(false),
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask bench [GROUP ...] [--quick] [--write | --no-write]\n\n\
                     groups: {}\n\
                     A full run (no group, no --quick) writes BENCHMARKS.md; --write forces it.",
                    GROUPS.join(", ")
                );
                return Ok(());
            }
            group if GROUPS.contains(&group) => groups.push(group),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; groups are {}",
                    GROUPS.join(", ")
                ));
            }
        }
    }
    let full = groups.is_empty() && !quick;
    if groups.is_empty() {
        groups = GROUPS.to_vec();
    }
    let write = write.unwrap_or(full);
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let started = Instant::now();

    let bin = build_release("rooms-bench", "rooms-bench", &[])?;
    let machine = Machine::read();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let needs_redis = groups
        .iter()
        .any(|g| matches!(*g, "throughput" | "drivers" | "latency"));
    let server = if needs_redis {
        // A slow subscriber must not be cut off by Redis's default output
        // buffer limit for pub/sub clients (32 MB hard) in a burst of 200,000.
        let server = runtime
            .block_on(RedisServer::start_with_args(&[
                "--client-output-buffer-limit",
                "pubsub 512mb 256mb 60",
            ]))
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        eprintln!("redis-server on {}", server.url());
        Some(server)
    } else {
        None
    };
    let url = server.as_ref().map(RedisServer::url).unwrap_or_default();

    let mut bench = Bench {
        bin,
        url,
        server,
        runtime,
        plan,
        rows: Vec::new(),
        runs: Vec::new(),
    };
    for group in &groups {
        eprintln!("\n== {group}");
        let group_started = Instant::now();
        match *group {
            "throughput" => bench.throughput()?,
            "drivers" => bench.drivers()?,
            "latency" => bench.latency()?,
            "receive" => bench.receive()?,
            "fanout" => bench.fanout()?,
            "codec" => bench.codec()?,
            "memory" => bench.memory()?,
            "fanout-ids" => bench.fanout_ids()?,
            "memory-traffic" => bench.memory_traffic()?,
            "join" => bench.join()?,
            "e2e" => bench.e2e()?,
            "failover" => bench.failover()?,
            "cluster" => bench.cluster()?,
            "history" => bench.history()?,
            "nats" => bench.nats()?,
            "postgres" => bench.postgres()?,
            _ => {}
        }
        eprintln!("   {group}: {:.0?}", group_started.elapsed());
    }
    // Stop redis-server now rather than at the end of the process.
    drop(bench.server.take());

    let command = if args.is_empty() {
        "cargo xtask bench".to_owned()
    } else {
        format!("cargo xtask bench {}", args.join(" "))
    };
    let report = bench.report(&machine, &command, started.elapsed());
    println!("\n{report}");
    if write {
        let path = workspace_root().join("BENCHMARKS.md");
        write_report(&path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    let missed = bench
        .rows
        .iter()
        .filter(|row| row.verdict == Verdict::Missed)
        .count();
    eprintln!(
        "\nbench finished in {:.0?}: {missed} target(s) missed",
        started.elapsed()
    );
    Ok(())
}

/// What the report says about the machine.
struct Machine {
    cores: usize,
    cpu: String,
    memory: String,
    load_before: String,
    rustc: String,
    redis: String,
    commit: String,
    date: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |name| name.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|line| line.starts_with("MemTotal"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0),
            );
        let status = command_output("git", &["status", "--porcelain", "--untracked-files=no"]);
        let dirty: Vec<&str> = status
            .lines()
            .filter_map(|line| line.split_whitespace().last())
            .filter(|path| *path != "BENCHMARKS.md" && *path != "unknown")
            .collect();
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory,
            load_before: load_average(),
            rustc: command_output("rustc", &["--version"]),
            redis: command_output("redis-server", &["--version"]),
            commit: if dirty.is_empty() {
                commit
            } else {
                let listed = dirty.iter().take(4).copied().collect::<Vec<_>>().join(", ");
                let more = match dirty.len().saturating_sub(4) {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                };
                format!("{commit}, with uncommitted changes in {listed}{more}")
            },
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Stretch,
    Met,
    Missed,
    Info,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Stretch => "**met, stretch too**",
            Verdict::Met => "**met**",
            Verdict::Missed => "**MISSED**",
            Verdict::Info => "report",
        }
    }
}

struct Row {
    bench: String,
    figure: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: Verdict,
}

struct Bench {
    bin: PathBuf,
    url: String,
    server: Option<RedisServer>,
    runtime: tokio::runtime::Runtime,
    plan: Plan,
    rows: Vec<Row>,
    /// Every process result, for the details section.
    runs: Vec<(String, Value)>,
}

/// A `rooms-bench` process whose stdout lines are read by a thread.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(bin: &Path, args: &[String], name: &str) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("{name}: no stdout"))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no {prefix:?} line within {timeout:?}",
                        self.name
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Err(format!(
                        "{}: exited ({status}) without a {prefix:?} line",
                        self.name
                    ));
                }
            }
        }
    }

    /// Waits for the `RESULT` line and the exit.
    fn result(mut self, timeout: Duration) -> Result<Value, String> {
        let text = self.wait_for("RESULT ", timeout)?;
        let status = self
            .child
            .wait()
            .map_err(|e| format!("{}: {e}", self.name))?;
        if !status.success() {
            return Err(format!("{}: exited with {status}", self.name));
        }
        serde_json::from_str(&text).map_err(|e| format!("{}: bad result line: {e}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn best(values: Vec<f64>) -> f64 {
    values.into_iter().fold(0.0, f64::max)
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn u(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// A throughput side's median rate, its lost (or duplicated) messages, and
/// the median CPU time per message (µs) of each process.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    rate: f64,
    lost: u64,
    publisher_us: f64,
    receiver_us: f64,
    redis_us: f64,
    total_us: f64,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "{} msg/s, lost {}; CPU/msg {:.2} µs = pub {:.2} + recv {:.2} + redis {:.2}",
            thousands(self.rate),
            self.lost,
            self.total_us,
            self.publisher_us,
            self.receiver_us,
            self.redis_us
        )
    }
}

/// The runs of one throughput side.
#[derive(Debug, Default)]
struct Tally {
    rates: Vec<f64>,
    lost: u64,
    publisher_us: Vec<f64>,
    receiver_us: Vec<f64>,
    redis_us: Vec<f64>,
    total_us: Vec<f64>,
}

impl Tally {
    fn add(&mut self, received: &Value, published: &Value, count: u64) {
        let per_message = |seconds: f64| seconds / count.max(1) as f64 * 1e6;
        let publisher = per_message(f(&published["cpu_s"]));
        let receiver = per_message(f(&received["cpu_s"]));
        let redis = per_message(published["redis_cpu_s"].as_f64().unwrap_or(0.0));
        self.rates.push(f(&received["msgs_per_s"]));
        self.lost += u(&received["lost"]) + u(&received["duplicates"]);
        self.publisher_us.push(publisher);
        self.receiver_us.push(receiver);
        self.redis_us.push(redis);
        self.total_us.push(publisher + receiver + redis);
    }

    fn outcome(self) -> Outcome {
        Outcome {
            rate: median(self.rates),
            lost: self.lost,
            publisher_us: median(self.publisher_us),
            receiver_us: median(self.receiver_us),
            redis_us: median(self.redis_us),
            total_us: median(self.total_us),
        }
    }
}

/// One cross-node side: `raw` or `adapter`.
#[derive(Clone, Copy)]
struct Side {
    side: &'static str,
    codec: &'static str,
    driver: &'static str,
    /// Raw side only: count messages without decoding them (the reference
    /// row; the baseline decodes, as DESIGN section 7 defines it).
    count_only: bool,
}

impl Bench {
    fn single(&mut self, label: &str, args: &[String], timeout: Duration) -> Result<Value, String> {
        let process = Proc::spawn(&self.bin, args, label)?;
        let result = process.result(timeout)?;
        self.runs.push((label.to_owned(), result.clone()));
        Ok(result)
    }

    /// CPU seconds redis-server has used so far (`INFO cpu`), if it answers.
    fn redis_cpu(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        let info = self.runtime.block_on(server.command("INFO cpu")).ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse::<f64>().ok())
        };
        Some(field("used_cpu_sys")? + field("used_cpu_user")?)
    }

    /// One cross-node run: receiver first (until READY), then the publisher.
    fn pair(
        &mut self,
        label: &str,
        side: Side,
        count: u64,
        rate: Option<u64>,
    ) -> Result<(Value, Value), String> {
        let count_text = count.to_string();
        let common = [
            "--side",
            side.side,
            "--url",
            &self.url,
            "--codec",
            side.codec,
            "--driver",
            side.driver,
            "--count",
            &count_text,
        ];
        let mut recv_args = strings(&["recv"]);
        recv_args.extend(strings(&common));
        recv_args.extend(strings(&["--queue", RECEIVER_QUEUE]));
        if side.count_only {
            recv_args.push("--count-only".to_owned());
        }
        let mut pub_args = strings(&["pub"]);
        pub_args.extend(strings(&common));
        if let Some(rate) = rate {
            recv_args.push("--latency".to_owned());
            pub_args.extend(["--rate".to_owned(), rate.to_string()]);
        } else {
            pub_args.extend(strings(&["--in-flight", "1000"]));
        }
        let redis_before = self.redis_cpu();
        let mut receiver = Proc::spawn(&self.bin, &recv_args, &format!("{label} receiver"))?;
        receiver.wait_for("READY", Duration::from_secs(30))?;
        let publisher = Proc::spawn(&self.bin, &pub_args, &format!("{label} publisher"))?;
        let mut published = publisher.result(Duration::from_secs(180))?;
        let received = receiver.result(Duration::from_secs(60))?;
        if let (Some(before), Some(after)) = (redis_before, self.redis_cpu()) {
            published["redis_cpu_s"] = Value::from(after - before);
        }
        self.runs
            .push((format!("{label} publisher"), published.clone()));
        self.runs
            .push((format!("{label} receiver"), received.clone()));
        Ok((received, published))
    }

    /// Raw and adapter interleaved `reps` times; returns each side's outcome.
    fn throughput_pair(
        &mut self,
        label: &str,
        codec: &'static str,
        driver: &'static str,
    ) -> Result<(Outcome, Outcome), String> {
        let (raw, adapter, _) = self.throughput_runs(label, codec, driver, false)?;
        Ok((raw, adapter))
    }

    /// [`throughput_pair`](Self::throughput_pair), and with `reference` a
    /// third side interleaved with them: the raw receiver counting without
    /// decoding.
    fn throughput_runs(
        &mut self,
        label: &str,
        codec: &'static str,
        driver: &'static str,
        reference: bool,
    ) -> Result<(Outcome, Outcome, Option<Outcome>), String> {
        let count = self.plan.throughput_count;
        let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
        let sides: &[(&'static str, bool)] = if reference {
            &[("raw", false), ("adapter", false), ("raw", true)]
        } else {
            &[("raw", false), ("adapter", false)]
        };
        for rep in 0..self.plan.reps {
            for (index, &(side, count_only)) in sides.iter().enumerate() {
                let shown = if count_only { "raw-count-only" } else { side };
                let name = format!("throughput {label} {shown} #{}", rep + 1);
                eprintln!("   {name}");
                let (received, published) = self.pair(
                    &name,
                    Side {
                        side,
                        codec,
                        driver,
                        count_only,
                    },
                    count,
                    None,
                )?;
                tallies[index].add(&received, &published, count);
            }
        }
        let [raw, adapter, count_only] = tallies;
        Ok((
            raw.outcome(),
            adapter.outcome(),
            reference.then(|| count_only.outcome()),
        ))
    }

    /// The reference row: the adapter against a raw receiver that only
    /// counts (no envelope decode), reported, not judged.
    fn count_only_row(&mut self, bench: String, reference: Outcome, adapter: Outcome) {
        self.rows.push(Row {
            bench,
            figure: adapter.describe(),
            baseline: reference.describe(),
            ratio: format!("{:.2}x", adapter.rate / reference.rate),
            target: "none (a stricter reference than DESIGN's baseline)".to_owned(),
            verdict: Verdict::Info,
        });
    }

    fn throughput_row(&mut self, bench: String, raw: Outcome, adapter: Outcome) {
        let ratio = adapter.rate / raw.rate;
        let verdict = if adapter.lost > 0 || ratio < 1.0 {
            Verdict::Missed
        } else if ratio >= 1.5 {
            Verdict::Stretch
        } else {
            Verdict::Met
        };
        self.rows.push(Row {
            bench,
            figure: adapter.describe(),
            baseline: raw.describe(),
            ratio: format!("{ratio:.2}x"),
            target: "≥ 1.0x (stretch 1.5x), lost 0".to_owned(),
            verdict,
        });
    }

    fn throughput(&mut self) -> Result<(), String> {
        for (codec, name) in [("json", "JSON"), ("msgpack", "MessagePack")] {
            let reference = codec == "json";
            let (raw, adapter, count_only) =
                self.throughput_runs(name, codec, "redis", reference)?;
            let count = thousands(self.plan.throughput_count as f64);
            self.throughput_row(
                format!("Cross-node throughput, {name}, driver `redis` ({count} msgs)"),
                raw,
                adapter,
            );
            if let Some(count_only) = count_only {
                self.count_only_row(
                    format!("Cross-node throughput, {name}, driver `redis`, against a raw receiver that only counts ({count} msgs)"),
                    count_only,
                    adapter,
                );
            }
        }
        Ok(())
    }

    fn drivers(&mut self) -> Result<(), String> {
        for driver in ["deadpool", "bb8"] {
            let (raw, adapter) = self.throughput_pair(&format!("JSON {driver}"), "json", driver)?;
            let count = thousands(self.plan.throughput_count as f64);
            self.throughput_row(
                format!("Cross-node throughput, JSON, driver `{driver}` ({count} msgs)"),
                raw,
                adapter,
            );
        }
        Ok(())
    }

    fn latency(&mut self) -> Result<(), String> {
        self.latency_over("")
    }

    /// Throughput (JSON and MessagePack) and latency over a throwaway
    /// `nats-server`: the raw side is plain async-nats, the adapter side a
    /// `Rooms` engine over `NatsAdapter`, through the same server.
    fn nats(&mut self) -> Result<(), String> {
        let server = self
            .runtime
            .block_on(NatsServer::start())
            .map_err(|e| format!("cannot start nats-server: {e}"))?;
        eprintln!("nats-server on {}", server.url());
        let saved_url = std::mem::replace(&mut self.url, server.url());
        // No Redis CPU to account for while NATS carries the messages.
        let saved_redis = self.server.take();
        let result = (|| {
            for (codec, name) in [("json", "JSON"), ("msgpack", "MessagePack")] {
                let reference = codec == "json";
                let (raw, adapter, count_only) =
                    self.throughput_runs(&format!("NATS {name}"), codec, "nats", reference)?;
                let count = thousands(self.plan.throughput_count as f64);
                self.throughput_row(
                    format!("Cross-node throughput over NATS, {name} ({count} msgs; baseline raw async-nats)"),
                    raw,
                    adapter,
                );
                if let Some(count_only) = count_only {
                    self.count_only_row(
                        format!("Cross-node throughput over NATS, {name}, against a raw async-nats receiver that only counts ({count} msgs)"),
                        count_only,
                        adapter,
                    );
                }
            }
            self.latency_over(" over NATS")
        })();
        self.url = saved_url;
        self.server = saved_redis;
        result
    }

    /// Throughput (JSON and MessagePack) and latency over the PostgreSQL
    /// server of the tests (`ROOMS_POSTGRES_URL`): the raw side is plain
    /// tokio-postgres LISTEN/NOTIFY, the adapter side a `Rooms` engine over
    /// `PostgresAdapter`; then the attachment path's cost for a 64 KiB
    /// message against a 4 KiB one that fits a NOTIFY. At most 50,000
    /// messages per throughput run: PostgreSQL commits each notification.
    fn postgres(&mut self) -> Result<(), String> {
        let url = rooms_testkit::postgres_server::server_url();
        eprintln!("postgres at {url}");
        let saved_url = std::mem::replace(&mut self.url, url.clone());
        let saved_redis = self.server.take();
        let saved_plan = self.plan;
        self.plan.throughput_count = self.plan.throughput_count.min(50_000);
        let result = (|| {
            for (codec, name) in [("json", "JSON"), ("msgpack", "MessagePack")] {
                let (raw, adapter) =
                    self.throughput_pair(&format!("PostgreSQL {name}"), codec, "postgres")?;
                let count = thousands(self.plan.throughput_count as f64);
                self.throughput_row(
                    format!(
                        "Cross-node throughput over PostgreSQL, {name} ({count} msgs; baseline \
                         raw tokio-postgres NOTIFY/LISTEN)"
                    ),
                    raw,
                    adapter,
                );
            }
            self.latency_over(" over PostgreSQL")?;
            let count = if self.plan.local_reps == 1 {
                "50"
            } else {
                "200"
            };
            let mut results = Vec::new();
            for size in ["4000", "65536"] {
                let label = format!("pg-attach {size}");
                eprintln!("   {label}");
                let args = strings(&["pg-attach", "--url", &url, "--size", size, "--count", count]);
                results.push(self.single(&label, &args, Duration::from_secs(300))?);
            }
            let [inline, attached] = [&results[0], &results[1]];
            self.rows.push(Row {
                bench: format!(
                    "Attachment path over PostgreSQL: a 64 KiB message (table row + NOTIFY + \
                     read), {count} one at a time, then a burst"
                ),
                figure: format!(
                    "p50 {:.2} ms, p99 {:.2} ms; {} msg/s",
                    f(&attached["p50_ms"]),
                    f(&attached["p99_ms"]),
                    thousands(f(&attached["msgs_per_s"]))
                ),
                baseline: format!(
                    "4 KiB inline: p50 {:.2} ms, p99 {:.2} ms; {} msg/s",
                    f(&inline["p50_ms"]),
                    f(&inline["p99_ms"]),
                    thousands(f(&inline["msgs_per_s"]))
                ),
                ratio: format!("{:.2}x", f(&attached["p50_ms"]) / f(&inline["p50_ms"])),
                target: "report (p50 ratio: lower is better)".to_owned(),
                verdict: Verdict::Info,
            });
            Ok(())
        })();
        self.url = saved_url;
        self.server = saved_redis;
        self.plan = saved_plan;
        result
    }

    /// The latency rows over the medium at `self.url`; `over` names it in
    /// the rows (empty for Redis).
    fn latency_over(&mut self, over: &str) -> Result<(), String> {
        const RATE: u64 = 5_000;
        let count = RATE * self.plan.latency_secs;
        let mut best: [Option<Value>; 2] = [None, None];
        for rep in 0..self.plan.latency_reps {
            for (i, side) in ["raw", "adapter"].into_iter().enumerate() {
                let name = format!("latency{over} {side} #{}", rep + 1);
                eprintln!("   {name}");
                let (received, _) = self.pair(
                    &name,
                    Side {
                        side,
                        codec: "json",
                        driver: "redis",
                        count_only: false,
                    },
                    count,
                    Some(RATE),
                )?;
                let p99 = f(&received["latency"]["p99_ms"]);
                let better = best[i]
                    .as_ref()
                    .is_none_or(|kept| p99 < f(&kept["latency"]["p99_ms"]));
                if better {
                    best[i] = Some(received);
                }
            }
        }
        let [Some(raw), Some(adapter)] = best else {
            return Err("no latency runs".to_owned());
        };
        let lost = u(&adapter["lost"]);
        let raw_lost = u(&raw["lost"]);
        for (key, name, targeted) in [
            ("p50_ms", "p50", true),
            ("p99_ms", "p99", true),
            ("max_ms", "max", false),
        ] {
            let a = f(&adapter["latency"][key]);
            let r = f(&raw["latency"][key]);
            let ratio = a / r;
            let verdict = if !targeted {
                Verdict::Info
            } else if ratio <= 1.2 && lost == 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            };
            self.rows.push(Row {
                bench: format!(
                    "Cross-node latency{over} {name}, JSON, {RATE} msg/s for {} s",
                    self.plan.latency_secs
                ),
                figure: format!("{a:.3} ms (lost {lost})"),
                baseline: format!("{r:.3} ms (lost {raw_lost})"),
                ratio: format!("{ratio:.2}x"),
                target: if targeted {
                    "≤ 1.2x".to_owned()
                } else {
                    "report".to_owned()
                },
                verdict,
            });
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<(), String> {
        let count = self.plan.receive_count.to_string();
        for (codec, name) in [("json", "JSON"), ("msgpack", "MessagePack")] {
            let mut rates: [Vec<f64>; 3] = Default::default();
            let mut dropped = 0;
            for rep in 0..self.plan.local_reps {
                for (i, side) in ["engine", "naive", "decode"].into_iter().enumerate() {
                    let label = format!("receive-path {codec} {side} #{}", rep + 1);
                    eprintln!("   {label}");
                    let args = strings(&[
                        "receive-path",
                        "--side",
                        side,
                        "--codec",
                        codec,
                        "--count",
                        &count,
                    ]);
                    let result = self.single(&label, &args, Duration::from_secs(120))?;
                    dropped += u(&result["dropped"]);
                    rates[i].push(f(&result["msgs_per_s"]));
                }
            }
            // Best of the repetitions: one process on one core, where other
            // work on the machine can only slow a run down.
            let [engine, naive, decode] = rates.map(best);
            self.rows.push(Row {
                bench: format!(
                    "Receive path, {name}: decode + dispatch to a member, one core \
                     (decode alone: {} msg/s)",
                    thousands(decode)
                ),
                figure: format!("{} msg/s, dropped {dropped}", thousands(engine)),
                baseline: format!("{} msg/s (naive)", thousands(naive)),
                ratio: format!("{:.2}x", engine / naive),
                // DESIGN section 7: at least 1.2M msg/s, and never slower
                // than the naive baseline of the same run.
                target: "≥ 1,200,000 msg/s and ≥ 1.0x naive".to_owned(),
                verdict: if engine >= 1.2e6 && engine >= naive && dropped == 0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            });
        }
        Ok(())
    }

    fn fanout(&mut self) -> Result<(), String> {
        for (connections, rounds) in [(1_000usize, 200usize), (10_000, 50)] {
            let rounds = if self.plan.local_reps == 1 {
                rounds / 5
            } else {
                rounds
            };
            let mut rates: [Vec<f64>; 2] = Default::default();
            let mut medians: [Vec<f64>; 2] = Default::default();
            let mut frames: [(u64, u64); 2] = [(0, 0); 2];
            for rep in 0..self.plan.local_reps {
                for (i, side) in ["engine", "naive"].into_iter().enumerate() {
                    let label = format!("fanout {connections} {side} #{}", rep + 1);
                    eprintln!("   {label}");
                    let args = strings(&[
                        "fanout",
                        "--side",
                        side,
                        "--connections",
                        &connections.to_string(),
                        "--rounds",
                        &rounds.to_string(),
                    ]);
                    let result = self.single(&label, &args, Duration::from_secs(120))?;
                    rates[i].push(f(&result["deliveries_per_s"]));
                    medians[i].push(f(&result["median_round_ms"]));
                    frames[i].0 += u(&result["frames_encoded"]);
                    frames[i].1 += u(&result["broadcasts"]);
                }
            }
            let [engine, naive] = rates.map(median);
            let [engine_ms, naive_ms] = medians.map(median);
            let once = frames[0].0 == frames[0].1;
            self.rows.push(Row {
                bench: format!(
                    "Local fan-out: one broadcast to {} connections, until all received",
                    thousands(connections as f64)
                ),
                figure: format!(
                    "{} deliveries/s ({engine_ms:.2} ms per broadcast); {} frames for {} messages",
                    thousands(engine),
                    frames[0].0,
                    frames[0].1
                ),
                baseline: format!(
                    "{} deliveries/s ({naive_ms:.2} ms); {} frames for {} messages",
                    thousands(naive),
                    thousands(frames[1].0 as f64),
                    frames[1].1
                ),
                ratio: format!("{:.2}x", engine / naive),
                target: "1 frame per message".to_owned(),
                verdict: if once { Verdict::Met } else { Verdict::Missed },
            });
        }
        Ok(())
    }

    fn codec(&mut self) -> Result<(), String> {
        let millis = if self.plan.local_reps == 1 {
            "100"
        } else {
            "400"
        };
        let result = self.single(
            "codec",
            &strings(&["codec", "--millis", millis]),
            Duration::from_secs(120),
        )?;
        let vectors = u(&result["vectors"]);
        for (codec, name) in [("json", "JSON"), ("msgpack", "MessagePack")] {
            let data = &result[codec];
            for (op, key) in [("encode", "encode_ns"), ("decode", "decode_ns")] {
                let ns = f(&data[key]);
                let generic = f(&data[&format!("generic_{key}")]);
                self.rows.push(Row {
                    bench: format!(
                        "Codec {name} {op}, {vectors} golden vectors (mean {:.0} bytes)",
                        f(&data["mean_bytes"])
                    ),
                    figure: format!("{ns:.0} ns/msg"),
                    baseline: format!("{generic:.0} ns/msg (generic serde Value)"),
                    ratio: format!("{:.2}x", ns / generic),
                    target: "report (time: lower is better)".to_owned(),
                    verdict: Verdict::Info,
                });
            }
        }
        Ok(())
    }

    fn memory(&mut self) -> Result<(), String> {
        let connections = self.plan.memory_connections.to_string();
        let mut per = [0.0f64; 2];
        for (i, side) in ["engine", "naive"].into_iter().enumerate() {
            let label = format!("memory {side}");
            eprintln!("   {label}");
            let args = strings(&["memory", "--side", side, "--connections", &connections]);
            let result = self.single(&label, &args, Duration::from_secs(300))?;
            per[i] = f(&result["bytes_per_connection"]);
        }
        self.rows.push(Row {
            bench: format!(
                "Memory per idle connection in one room ({} connections, 1,000 rooms)",
                thousands(self.plan.memory_connections as f64)
            ),
            figure: format!("{} bytes", thousands(per[0])),
            baseline: format!("{} bytes (naive registry)", thousands(per[1])),
            ratio: format!("{:.2}x", per[0] / per[1]),
            target: "report (bytes: lower is better)".to_owned(),
            verdict: Verdict::Info,
        });
        Ok(())
    }

    /// Fan-out to 10,000 connections where every broadcast has its own id,
    /// with each connection in one room and in two.
    fn fanout_ids(&mut self) -> Result<(), String> {
        const CONNECTIONS: usize = 10_000;
        const TARGET: f64 = 5e6;
        let rounds = if self.plan.local_reps == 1 { 10 } else { 50 };
        for rooms_per_connection in [1usize, 2] {
            let mut rates: [Vec<f64>; 2] = Default::default();
            let mut medians: [Vec<f64>; 2] = Default::default();
            let mut cpu: [Vec<f64>; 2] = Default::default();
            let mut frames: [(u64, u64); 2] = [(0, 0); 2];
            let mut duplicates = 0;
            for rep in 0..self.plan.local_reps {
                for (i, side) in ["engine", "naive"].into_iter().enumerate() {
                    let label = format!(
                        "fanout ids {CONNECTIONS} x{rooms_per_connection} rooms {side} #{}",
                        rep + 1
                    );
                    eprintln!("   {label}");
                    let args = strings(&[
                        "fanout",
                        "--side",
                        side,
                        "--connections",
                        &CONNECTIONS.to_string(),
                        "--rounds",
                        &rounds.to_string(),
                        "--ids",
                        "--rooms-per-connection",
                        &rooms_per_connection.to_string(),
                    ]);
                    let result = self.single(&label, &args, Duration::from_secs(180))?;
                    rates[i].push(f(&result["deliveries_per_s"]));
                    medians[i].push(f(&result["median_round_ms"]));
                    cpu[i].push(f(&result["cpu_us_per_delivery"]));
                    frames[i].0 += u(&result["frames_encoded"]);
                    frames[i].1 += u(&result["broadcasts"]);
                    duplicates += u(&result["duplicates"]);
                }
            }
            let [engine, naive] = rates.map(median);
            let [engine_ms, naive_ms] = medians.map(median);
            let [engine_cpu, naive_cpu] = cpu.map(median);
            let once = frames[0].0 == frames[0].1;
            let rooms = if rooms_per_connection == 1 {
                "in one room".to_owned()
            } else {
                format!("each in {rooms_per_connection} rooms")
            };
            self.rows.push(Row {
                bench: format!(
                    "Local fan-out with message ids (a new id per broadcast): one broadcast \
                     to {} connections {rooms}, until all received",
                    thousands(CONNECTIONS as f64)
                ),
                figure: format!(
                    "{} deliveries/s ({engine_ms:.2} ms per broadcast, CPU {engine_cpu:.3} µs \
                     per delivery); {} frames for {} messages; {duplicates} duplicates",
                    thousands(engine),
                    frames[0].0,
                    frames[0].1
                ),
                baseline: format!(
                    "{} deliveries/s ({naive_ms:.2} ms, CPU {naive_cpu:.3} µs per delivery; \
                     naive, one room, framing per connection); {} frames for {} messages",
                    thousands(naive),
                    thousands(frames[1].0 as f64),
                    frames[1].1
                ),
                ratio: format!("{:.2}x", engine / naive),
                target: "≥ 5,000,000 deliveries/s, 1 frame per message".to_owned(),
                verdict: if engine >= TARGET && once && duplicates == 0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            });
        }
        Ok(())
    }

    /// Memory per connection after 1,000 messages with ids, in one room and
    /// with each connection in 4 rooms.
    fn memory_traffic(&mut self) -> Result<(), String> {
        const MESSAGES: usize = 1_000;
        let connections: usize = if self.plan.local_reps == 1 {
            2_000
        } else {
            10_000
        };
        for (rooms_per_connection, target) in [(1usize, 4096.0f64), (4, 16384.0)] {
            let mut results: [Value; 2] = Default::default();
            for (i, side) in ["engine", "naive"].into_iter().enumerate() {
                let label = format!("memory after traffic x{rooms_per_connection} rooms {side}");
                eprintln!("   {label}");
                let args = strings(&[
                    "memory-traffic",
                    "--side",
                    side,
                    "--connections",
                    &connections.to_string(),
                    "--rooms-per-connection",
                    &rooms_per_connection.to_string(),
                    "--messages",
                    &MESSAGES.to_string(),
                ]);
                results[i] = self.single(&label, &args, Duration::from_secs(300))?;
            }
            let [engine, naive] = &results;
            let per = f(&engine["bytes_per_connection"]);
            let naive_per = f(&naive["bytes_per_connection"]);
            let rooms = if rooms_per_connection == 1 {
                "one room".to_owned()
            } else {
                format!(
                    "each connection in {rooms_per_connection} rooms, messages round robin over them"
                )
            };
            self.rows.push(Row {
                bench: format!(
                    "Memory per connection after {} messages with ids, drained by each \
                     connection's task ({} connections, {rooms})",
                    thousands(MESSAGES as f64),
                    thousands(connections as f64)
                ),
                figure: format!(
                    "{} bytes ({} idle + {} after traffic)",
                    thousands(per),
                    thousands(f(&engine["idle_bytes_per_connection"])),
                    thousands(f(&engine["traffic_bytes_per_connection"]))
                ),
                baseline: format!(
                    "{} bytes ({} idle + {} after traffic; naive registry keeping each \
                     connection's own copy of its last 1,000 ids)",
                    thousands(naive_per),
                    thousands(f(&naive["idle_bytes_per_connection"])),
                    thousands(f(&naive["traffic_bytes_per_connection"]))
                ),
                ratio: format!("{:.2}x", per / naive_per),
                target: format!("≤ {} bytes", thousands(target)),
                verdict: if per <= target {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            });
        }
        Ok(())
    }

    /// 100 joins of new rooms while redis-server is frozen (SIGSTOP), against
    /// the same joins with it healthy; then the thaw.
    fn join(&mut self) -> Result<(), String> {
        const ROOMS: usize = 100;
        const TIMEOUT_MS: u64 = 2_000;
        let limit_ms = TIMEOUT_MS as f64 * 1.5;
        let server = self
            .runtime
            .block_on(RedisServer::start())
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let pid = server
            .pid()
            .ok_or_else(|| "redis-server has no pid".to_owned())?;
        let url = server.url();
        eprintln!("   redis-server (to freeze) on {url}, pid {pid}");
        let mut runs: [Vec<Value>; 2] = Default::default();
        for rep in 0..self.plan.local_reps {
            for (i, side) in ["healthy", "frozen"].into_iter().enumerate() {
                let label = format!("join {ROOMS} rooms {side} #{}", rep + 1);
                eprintln!("   {label}");
                let mut args = strings(&[
                    "join",
                    "--url",
                    &url,
                    "--redis-pid",
                    &pid.to_string(),
                    "--rooms",
                    &ROOMS.to_string(),
                    "--timeout-ms",
                    &TIMEOUT_MS.to_string(),
                ]);
                if side == "frozen" {
                    args.push("--freeze".to_owned());
                }
                runs[i].push(self.single(&label, &args, Duration::from_secs(120))?);
            }
        }
        drop(server);
        // The run with the median total, per side.
        let pick = |runs: &mut Vec<Value>| -> Value {
            runs.sort_by(|a, b| f(&a["total_ms"]).total_cmp(&f(&b["total_ms"])));
            runs.get(runs.len() / 2).cloned().unwrap_or(Value::Null)
        };
        let [mut healthy_runs, mut frozen_runs] = runs;
        let worst = frozen_runs
            .iter()
            .map(|run| f(&run["total_ms"]))
            .fold(0.0, f64::max);
        let all_recovered = frozen_runs
            .iter()
            .chain(&healthy_runs)
            .all(|run| run["recovered"].as_bool() == Some(true));
        let slowest_recovery = frozen_runs
            .iter()
            .map(|run| f(&run["redis_subscribed_ms"]))
            .fold(0.0, f64::max);
        let reps = frozen_runs.len();
        let frozen = pick(&mut frozen_runs);
        let healthy = pick(&mut healthy_runs);
        let describe = |run: &Value| {
            format!(
                "{:.1} ms in total (per join p50 {:.3} ms, max {:.1} ms; {} returned an error)",
                f(&run["total_ms"]),
                f(&run["p50_ms"]),
                f(&run["max_ms"]),
                u(&run["errors"])
            )
        };
        self.rows.push(Row {
            bench: format!(
                "Join {ROOMS} new rooms one after another while redis-server is frozen \
                 (SIGSTOP), subscribe timeout {} s",
                TIMEOUT_MS / 1000
            ),
            figure: format!(
                "{}; {} deferred; worst of {reps} runs {} ms",
                describe(&frozen),
                u(&frozen["deferred_subscriptions"]),
                thousands(worst)
            ),
            baseline: format!("{} (redis-server healthy)", describe(&healthy)),
            ratio: format!("{:.2}x timeout", f(&frozen["total_ms"]) / TIMEOUT_MS as f64),
            target: format!("≤ 1.5x subscribe timeout ({} ms)", thousands(limit_ms)),
            verdict: if worst <= limit_ms {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        });
        self.rows.push(Row {
            bench: format!(
                "After SIGCONT: the {ROOMS} rooms joined during the freeze subscribed on Redis \
                 (`PUBSUB NUMSUB`) and delivering"
            ),
            figure: format!(
                "{} ms after SIGCONT (slowest of {reps} runs {} ms); {} of {ROOMS} delivered a \
                 probe; `Reconnected` events {} listing {} rooms",
                thousands(f(&frozen["redis_subscribed_ms"])),
                thousands(slowest_recovery),
                u(&frozen["delivered_after"]),
                u(&frozen["reconnected_events"]),
                u(&frozen["reconnected_rooms"])
            ),
            baseline: format!(
                "{:.1} ms after the last join; {} of {ROOMS} delivered a probe (healthy)",
                f(&healthy["redis_subscribed_ms"]),
                u(&healthy["delivered_after"])
            ),
            ratio: "n/a".to_owned(),
            target: "every room subscribed and delivering within 30 s".to_owned(),
            verdict: if all_recovered {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        });
        Ok(())
    }

    fn report(&self, machine: &Machine, command: &str, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Command: `{command}` ({:.0} s)  ",
            elapsed.as_secs_f64()
        );
        let _ = writeln!(out, "Date: {}  ", machine.date);
        let _ = writeln!(
            out,
            "Machine: {} cores ({}), {} RAM; load average before the run {}, after {}  ",
            machine.cores,
            machine.cpu,
            machine.memory,
            machine.load_before,
            load_average()
        );
        let _ = writeln!(
            out,
            "Software: {}; {}; commit {}",
            machine.rustc, machine.redis, machine.commit
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| Benchmark | rooms (this crate) | Baseline, same run | Ratio | Target | Result |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.bench,
                row.figure,
                row.baseline,
                row.ratio,
                row.target,
                row.verdict.label()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Throughput: medians of {} interleaved repetitions per side; latency: the run with \
             the lower p99 of {} per side; receive path: best of {} per side; fan-out: median \
             round of each run, median of {} runs. Cross-node runs: {} messages of about 150 \
             bytes, up to 1,000 publishes in flight; msg/s from the first to the last receipt; \
             CPU/msg is publisher + receiver + redis-server CPU time over the message count.",
            self.plan.reps,
            self.plan.latency_reps,
            self.plan.local_reps,
            self.plan.local_reps,
            thousands(self.plan.throughput_count as f64)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "<details><summary>Every process's result line</summary>"
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "```");
        for (label, value) in &self.runs {
            let _ = writeln!(out, "{label}: {value}");
        }
        let _ = writeln!(out, "```");
        let _ = writeln!(out);
        let _ = writeln!(out, "</details>");
        out
    }
}

/// Writes `report` between the markers of `path`, keeping the rest (a new
/// file gets a title and the markers).
fn write_report(path: &Path, report: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let generated = format!("{BEGIN}\n{report}{END}");
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{generated}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        _ => format!(
            "# Benchmarks\n\nWritten by `cargo xtask bench` between the markers below; \
             text outside them is kept.\n\n{generated}\n"
        ),
    };
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands_and_medians() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
