//! `join`: 100 joins of new rooms while redis-server is frozen, and the
//! thaw.

use super::*;

impl Bench {
    /// 100 joins of new rooms while redis-server is frozen (SIGSTOP), against
    /// the same joins with it healthy; then the thaw.
    pub(super) fn join(&mut self) -> Result<(), String> {
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
}
