//! `cargo xtask <command>`: the project's automation.
//!
//! - `ci`: fmt check, clippy (warnings are errors), the docs (warnings are
//!   errors), a check of every feature of the library crates alone and in
//!   pairs (`cargo hack`), every test (conformance on every backend included)
//!   and doc tests, then `soak --quick`. The one test command.
//! - `conformance`: the conformance suite against every backend, as a matrix.
//! - `bench`: the benchmarks, as one table.
//! - `soak`: two `sse-chat` nodes, thousands of SSE clients, sustained
//!   traffic and a Redis kill and restart; checks memory, deliveries and the
//!   gap signal.
//! - `redis`: a throwaway redis-server for manual testing.

mod bench;
mod conformance;
mod host;
mod load;
mod redis;
mod soak;

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask <ci | conformance | bench | soak | redis> [args]

  ci            fmt --check, clippy -D warnings, docs -D warnings, every feature alone and in
                pairs (cargo hack), all tests (incl. conformance) and doc tests, then soak --quick
  conformance   run the conformance suite on every backend and print the matrix
  bench         run the benchmarks and print one table
  soak          two sse-chat nodes, thousands of SSE clients, a Redis kill and restart
                mid-run (--quick for CI size; see cargo xtask soak --help)
  redis         start a throwaway redis-server (--cluster for a 3-master cluster)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "ci" => ci(),
        "conformance" => conformance::run(rest),
        // They drive thousands of clients from this process and time them.
        "bench" | "soak" if cfg!(debug_assertions) => released(&args),
        "bench" => bench::run(rest),
        "soak" => soak::run(rest),
        "redis" => redis::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo` with `args`, echoing the command; fails on a non-zero exit.
fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_with(&[], args)
}

/// Runs `cargo` with `args` and the environment variables `env`, echoing the
/// command; fails on a non-zero exit.
fn cargo_with(env: &[(&str, &str)], args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let shown_env: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
    eprintln!("\n==> {shown_env}cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new(&cargo)
        .envs(env.iter().copied())
        .args(args)
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    eprintln!("<== cargo {} ({:.1?})", args.join(" "), started.elapsed());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Fails with how to install `cargo hack` unless it runs.
fn require_cargo_hack() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let installed = Command::new(&cargo)
        .args(["hack", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        Ok(())
    } else {
        Err(
            "`cargo hack` is not installed (the feature powerset check needs it): \
             install it with `cargo install cargo-hack --locked`"
                .to_owned(),
        )
    }
}

/// Runs this command again from a release build of xtask: `soak` and the
/// `e2e` bench drive thousands of SSE clients from this process, and a debug
/// build would measure its own slowness instead of the nodes'.
fn released(args: &[String]) -> Result<(), String> {
    let mut command = vec!["run", "--release", "-p", "xtask", "--"];
    command.extend(args.iter().map(String::as_str));
    cargo(&command)
}

fn ci() -> Result<(), String> {
    let started = Instant::now();
    require_cargo_hack()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo_with(
        &[("RUSTDOCFLAGS", "-D warnings")],
        &["doc", "--workspace", "--all-features", "--no-deps"],
    )?;
    // Every feature alone and in pairs, without dev-dependencies: a cfg gate
    // that only an odd combination breaks (no publish driver, `tls` alone..).
    for package in [
        "rooms-adapter-redis",
        "rooms-adapter-nats",
        "rooms-adapter-postgres",
        "rooms-adapter",
    ] {
        cargo(&[
            "hack",
            "check",
            "-p",
            package,
            "--feature-powerset",
            "--depth",
            "2",
            "--no-dev-deps",
        ])?;
    }
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    let soak = ["soak".to_owned(), "--quick".to_owned()];
    if cfg!(debug_assertions) {
        released(&soak)?;
    } else {
        soak::run(&soak[1..])?;
    }
    eprintln!("\nci passed in {:.0?}", started.elapsed());
    Ok(())
}
