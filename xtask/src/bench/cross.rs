//! The cross-node groups: throughput per codec and driver (`throughput`,
//! `drivers`), latency (`latency`), and both over NATS (`nats`) and
//! PostgreSQL (`postgres`); each side a receiver process and a publisher
//! process, against raw clients of the medium in the same run.

use super::*;

/// A throughput side's median rate, its lost (or duplicated) messages, and
/// the median CPU time per message (µs) of each process.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    rate: f64,
    lost: u64,
    publisher_us: f64,
    receiver_us: f64,
    redis_us: f64,
    total_us: f64,
}

impl Outcome {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Tally {
    rates: Vec<f64>,
    lost: u64,
    publisher_us: Vec<f64>,
    receiver_us: Vec<f64>,
    redis_us: Vec<f64>,
    total_us: Vec<f64>,
}

impl Tally {
    pub(super) fn add(&mut self, received: &Value, published: &Value, count: u64) {
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

    pub(super) fn outcome(self) -> Outcome {
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
pub(super) struct Side {
    side: &'static str,
    codec: &'static str,
    driver: &'static str,
    /// Raw side only: count messages without decoding them (the reference
    /// row; the baseline decodes, as DESIGN section 7 defines it).
    count_only: bool,
}

impl Bench {
    /// CPU seconds redis-server has used so far (`INFO cpu`), if it answers.
    pub(super) fn redis_cpu(&self) -> Option<f64> {
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
    pub(super) fn pair(
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
    pub(super) fn throughput_pair(
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
    pub(super) fn throughput_runs(
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
    pub(super) fn count_only_row(&mut self, bench: String, reference: Outcome, adapter: Outcome) {
        self.rows.push(Row {
            bench,
            figure: adapter.describe(),
            baseline: reference.describe(),
            ratio: format!("{:.2}x", adapter.rate / reference.rate),
            target: "none (a stricter reference than DESIGN's baseline)".to_owned(),
            verdict: Verdict::Info,
        });
    }

    pub(super) fn throughput_row(&mut self, bench: String, raw: Outcome, adapter: Outcome) {
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

    pub(super) fn throughput(&mut self) -> Result<(), String> {
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

    pub(super) fn drivers(&mut self) -> Result<(), String> {
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

    pub(super) fn latency(&mut self) -> Result<(), String> {
        self.latency_over("")
    }

    /// Throughput (JSON and MessagePack) and latency over a throwaway
    /// `nats-server`: the raw side is plain async-nats, the adapter side a
    /// `Rooms` engine over `NatsAdapter`, through the same server.
    pub(super) fn nats(&mut self) -> Result<(), String> {
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
    pub(super) fn postgres(&mut self) -> Result<(), String> {
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
    pub(super) fn latency_over(&mut self, over: &str) -> Result<(), String> {
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
}
