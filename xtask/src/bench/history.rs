//! `cargo xtask bench history`: what history costs. Two nodes in one process
//! (`rooms-bench history`), on a memory bus and on Redis (each node its own
//! `RedisAdapter`, one throwaway redis-server): broadcast throughput from one
//! node to a member on the other with history off and on, in the same run;
//! and how fast a returning client gets a replay of 10,000 messages.
//!
//! Both nodes run on one thread (`--runtime current`): the figure is what a
//! message costs, not how two tasks on two cores happen to wake each other
//! (which moved the multi-threaded figures by ±40% between passes). History
//! keeps 10,000 messages; the memory bus sends 100,000 per pass, so most of
//! a pass runs on a full history (each message also drops the oldest), as
//! on a server that has run for a while.

use std::time::Duration;

use rooms_testkit::redis_server::RedisServer;
use serde_json::Value;

use super::{Bench, Row, Verdict, f, strings, thousands, u};

/// Messages each room's history keeps, and the replay's length.
const HISTORY_LEN: usize = 10_000;
/// Messages per pass on each medium.
fn messages(medium: &str) -> usize {
    if medium == "Redis" { 10_000 } else { 100_000 }
}
/// History on may cost at most this share of the throughput.
const MAX_COST: f64 = 0.30;

impl Bench {
    pub(super) fn history(&mut self) -> Result<(), String> {
        let reps = if self.plan.local_reps > 1 { 5 } else { 1 };
        let server = self
            .runtime
            .block_on(RedisServer::start())
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        for medium in ["memory bus", "Redis"] {
            let label = format!("history, {medium}");
            eprintln!("   {label}");
            let mut args = strings(&[
                "history",
                "--messages",
                &messages(medium).to_string(),
                "--history-len",
                &HISTORY_LEN.to_string(),
                "--reps",
                &reps.to_string(),
                "--runtime",
                "current",
            ]);
            if medium == "Redis" {
                args.extend(strings(&["--url", &server.url()]));
            }
            let run = self.single(&label, &args, Duration::from_secs(600))?;
            self.history_rows(medium, &run);
        }
        Ok(())
    }

    fn history_rows(&mut self, medium: &str, run: &Value) {
        let (on, off) = (f(&run["on_per_s"]), f(&run["off_per_s"]));
        let ratio = on / off;
        self.rows.push(Row {
            bench: format!(
                "Broadcast with history on, {medium}: {} messages one after the other from \
                 node A to a member on node B, history of {} kept, both nodes on one thread \
                 (best of {} runs)",
                thousands(messages(medium) as f64),
                thousands(HISTORY_LEN as f64),
                run["on_runs"].as_array().map_or(0, Vec::len)
            ),
            figure: format!("{} msg/s", thousands(on)),
            baseline: format!("{} msg/s with history off", thousands(off)),
            ratio: format!("{ratio:.2}x"),
            target: format!("≥ {:.2}x (history costs at most 30%)", 1.0 - MAX_COST),
            verdict: if ratio >= 1.0 - MAX_COST {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        });
        self.rows.push(Row {
            bench: format!(
                "Replay, {medium}: a returning client resumes from the first of {} messages \
                 (`join_from` returns once the replay is queued)",
                thousands(HISTORY_LEN as f64)
            ),
            figure: format!(
                "{} messages in {:.1} ms: {} msg/s",
                thousands(f(&run["replayed"])),
                f(&run["replay_ms"]),
                thousands(f(&run["replay_per_s"]))
            ),
            baseline: format!("{} msg/s live with history on", thousands(on)),
            ratio: format!("{:.1}x", f(&run["replay_per_s"]) / on),
            target: "report".to_owned(),
            verdict: if u(&run["replayed"]) + 1 == HISTORY_LEN as u64 {
                Verdict::Info
            } else {
                Verdict::Missed
            },
        });
    }
}
