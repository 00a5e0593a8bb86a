//! `sse-chat` nodes as child processes, and `/proc` sampling of them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::NODE_START;

/// Makes sure this process (and the nodes it starts, which inherit it) may
/// open `needed` files: raises the soft limit, and the hard one if allowed.
pub fn raise_nofile(needed: u64) -> Result<u64, String> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft >= needed {
        return Ok(soft);
    }
    let new_hard = hard.max(needed);
    Resource::NOFILE.set(needed, new_hard).map_err(|e| {
        format!(
            "this run needs {needed} open files but the limit is {soft} (hard limit {hard}) \
             and raising it failed: {e}; raise it (ulimit -n {needed}) or use fewer clients"
        )
    })?;
    eprintln!("raised the open-file limit from {soft} to {needed}");
    Ok(needed)
}

/// Resident memory and CPU time of one process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// `utime + stime`, seconds.
    pub cpu_secs: f64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            rss_bytes: rss_kib * 1024,
            cpu_secs: cpu_secs_from_stat(&stat)?,
        })
    }
}

/// `utime + stime` in seconds from the text of `/proc/<pid>/stat`.
pub(super) fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may contain spaces: fields are
    // counted after the last `)`. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux if that fails).
pub(super) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// One `sse-chat` process on a free loopback port; killed (by its pid) on drop.
pub struct Node {
    /// `node-a`, `node-b`: for messages.
    pub name: String,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Node {
    /// Starts `bin --port 0 --node-id <name> --redis-url <url>` and waits for
    /// its listening line. Its log (warnings) goes to a temporary file.
    pub fn start(
        bin: &Path,
        name: &str,
        redis_url: &str,
        max_connections: usize,
    ) -> Result<Self, String> {
        let log = std::env::temp_dir().join(format!("xtask-{}-{name}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--node-id", name])
            .args(["--redis-url", redis_url])
            .args(["--max-connections", &max_connections.max(1).to_string()])
            .args(["--keep-alive-secs", "15"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            // Reads stdout to its end (so the node never blocks on it); the
            // first listening line goes to `rx`.
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(rest.trim().to_owned());
                    }
                }
            });
        }
        let mut node = Self {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        match rx.recv_timeout(NODE_START) {
            Ok(addr) => {
                node.addr = addr
                    .parse()
                    .map_err(|e| format!("{name}: bad listening address {addr:?}: {e}"))?;
                if !node.addr.ip().is_loopback() {
                    return Err(format!("{name} listens on {addr}, not on loopback"));
                }
                Ok(node)
            }
            Err(_) => Err(format!(
                "{name} did not print its listening line within {NODE_START:?}; log:\n{}",
                node.log_tail(20)
            )),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RSS and CPU time now.
    pub fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid())
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
