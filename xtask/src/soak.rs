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

mod deliveries;
mod outcome;
mod scenario;
mod section;

use std::time::{Duration, Instant};

use crate::bench::thousands;
use crate::host::workspace_root;
use crate::load;
use scenario::soak;
use section::write_section;

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

#[cfg(test)]
mod tests {
    use super::deliveries::Window;
    use super::deliveries::tally_deliveries;
    use super::section::replace_section;
    use super::*;
    use crate::load::{ClientReport, PostRecord};

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
