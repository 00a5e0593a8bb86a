//! What a soak run found: its checks, RSS samples and the printed report.

use std::fmt::Write as _;
use std::time::Duration;

use super::Options;
use crate::host::{command_output, load_average};
use crate::load::ProcSample;

/// One line of the table.
pub(super) struct Check {
    pub(super) name: String,
    pub(super) figure: String,
    /// `None`: reported, not checked.
    pub(super) ok: Option<bool>,
    pub(super) rule: String,
}

/// One sample of both nodes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    /// Seconds since posting began.
    pub(super) at: f64,
    pub(super) nodes: [ProcSample; 2],
}

pub(super) struct Outcome {
    pub(super) checks: Vec<Check>,
    pub(super) samples: Vec<Sample>,
    pub(super) idle: [ProcSample; 2],
    pub(super) per_node: [usize; 2],
    pub(super) logs: Vec<String>,
}

impl Outcome {
    pub(super) fn report(&self, options: &Options, command: &str, elapsed: Duration) -> String {
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
pub(super) fn thin(samples: &[Sample], keep: usize) -> Vec<Sample> {
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

pub(super) fn per_connection(rss: u64, idle: u64, connections: usize) -> f64 {
    (rss as f64 - idle as f64) / connections.max(1) as f64
}

pub(super) fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}
