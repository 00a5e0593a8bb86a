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
mod cross;
mod e2e;
mod failover;
mod history;
mod join;
mod local;

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

impl Bench {
    fn single(&mut self, label: &str, args: &[String], timeout: Duration) -> Result<Value, String> {
        let process = Proc::spawn(&self.bin, args, label)?;
        let result = process.result(timeout)?;
        self.runs.push((label.to_owned(), result.clone()));
        Ok(result)
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
