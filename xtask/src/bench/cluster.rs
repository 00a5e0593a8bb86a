//! `cargo xtask bench cluster`: the cost of cluster awareness. Ten nodes in
//! one process (`rooms-bench cluster`), on a memory bus and each on its own
//! `RedisAdapter` against one throwaway redis-server: latency and CPU per
//! cross-node query (member count of one room; every room with counts), next
//! to the same answers computed from every engine's registry directly; and
//! how long a node that stops without a word takes to expire.

use std::time::Duration;

use rooms_testkit::redis_server::RedisServer;
use serde_json::Value;

use super::{Bench, Row, Verdict, f, strings, thousands, u};

const NODES: usize = 10;
const ROOMS: usize = 50;
const MEMBERS: usize = 4;
/// A query must be cheap enough to poll: its p99 at most this.
const P99_TARGET_MS: f64 = 10.0;

impl Bench {
    pub(super) fn cluster(&mut self) -> Result<(), String> {
        let queries = if self.plan.local_reps > 1 { 2_000 } else { 300 };
        let server = self
            .runtime
            .block_on(RedisServer::start())
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        for medium in ["memory bus", "Redis"] {
            let label = format!("cluster queries, {NODES} nodes, {medium}");
            eprintln!("   {label}");
            let mut args = strings(&[
                "cluster",
                "--nodes",
                &NODES.to_string(),
                "--rooms",
                &ROOMS.to_string(),
                "--members",
                &MEMBERS.to_string(),
                "--queries",
                &queries.to_string(),
            ]);
            if medium == "Redis" {
                args.extend(strings(&["--url", &server.url()]));
            }
            let run = self.single(&label, &args, Duration::from_secs(300))?;
            self.cluster_rows(medium, &run);
        }
        Ok(())
    }

    fn cluster_rows(&mut self, medium: &str, run: &Value) {
        let wrong = u(&run["wrong_answers"]);
        let shape = format!(
            "{NODES} nodes × {ROOMS} rooms × {MEMBERS} members, {medium}, {} queries",
            thousands(f(&run["queries"]))
        );
        for (what, key, rate, cpu, baseline) in [
            (
                "member count of one room",
                "count",
                "count_per_s",
                "count_cpu_us",
                "baseline_count",
            ),
            (
                "every room with its members",
                "rooms_query",
                "rooms_per_s",
                "rooms_cpu_us",
                "baseline_rooms",
            ),
        ] {
            let p99 = f(&run[key]["p99_ms"]);
            self.rows.push(Row {
                bench: format!("Cross-node query, {what} ({shape})"),
                figure: format!(
                    "p50 {:.3} ms, p99 {p99:.3} ms; {} queries/s from one node; {} µs CPU \
                     per query (all nodes); {wrong} incomplete or wrong",
                    f(&run[key]["p50_ms"]),
                    thousands(f(&run[rate])),
                    thousands(f(&run[cpu])),
                ),
                baseline: format!(
                    "p50 {:.4} ms, p99 {:.4} ms (the same sum over every engine's registry, \
                     no medium)",
                    f(&run[baseline]["p50_ms"]),
                    f(&run[baseline]["p99_ms"]),
                ),
                ratio: format!(
                    "+{:.3} ms p50",
                    f(&run[key]["p50_ms"]) - f(&run[baseline]["p50_ms"])
                ),
                target: format!("p99 ≤ {P99_TARGET_MS} ms, every answer complete"),
                verdict: if p99 <= P99_TARGET_MS && wrong == 0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            });
        }
        let (expiry, configured, heartbeat) = (
            f(&run["expiry_ms"]),
            f(&run["expiry_config_ms"]),
            f(&run["heartbeat_ms"]),
        );
        let complete = run["after_expiry_complete"].as_bool() == Some(true);
        self.rows.push(Row {
            bench: format!(
                "Node expiry, {medium}: one of {NODES} nodes stops without a word (heartbeat \
                 {heartbeat:.0} ms, expiry {configured:.0} ms)"
            ),
            figure: format!(
                "expired {expiry:.0} ms after it stopped; the next query complete from {} nodes",
                u(&run["after_expiry_nodes"])
            ),
            baseline: format!("{configured:.0} ms configured expiry"),
            ratio: format!("{:.2}x expiry", expiry / configured),
            target: "≤ expiry + one heartbeat interval".to_owned(),
            verdict: if expiry <= configured + heartbeat && complete {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        });
    }
}
