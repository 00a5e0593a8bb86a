//! `cargo xtask conformance`: every backend through the suite, one matrix.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use rooms_conformance::{CASE_NAMES, CaseReport, Outcome, run_suite};
use rooms_testkit::cluster_harness::RedisClusterHarness;
use rooms_testkit::memory::{MemoryHarness, MemoryJsonHarness, MemoryMsgpackHarness};
use rooms_testkit::nats::{NatsHarness, NatsMsgpackHarness};
use rooms_testkit::postgres::{PostgresHarness, PostgresMsgpackHarness};
use rooms_testkit::redis::{
    RedisBb8Harness, RedisDeadpoolHarness, RedisHarness, RedisMsgpackHarness,
};
use rooms_testkit::sentinel_harness::RedisSentinelHarness;

type Suite = Pin<Box<dyn Future<Output = Vec<CaseReport>> + Send>>;

/// Every backend compiled in: its row name and its suite.
fn backends() -> Vec<(&'static str, Suite)> {
    vec![
        ("memory", Box::pin(run_suite::<MemoryHarness>())),
        ("memory-json", Box::pin(run_suite::<MemoryJsonHarness>())),
        (
            "memory-msgpack",
            Box::pin(run_suite::<MemoryMsgpackHarness>()),
        ),
        ("redis", Box::pin(run_suite::<RedisHarness>())),
        (
            "redis-deadpool",
            Box::pin(run_suite::<RedisDeadpoolHarness>()),
        ),
        ("redis-bb8", Box::pin(run_suite::<RedisBb8Harness>())),
        (
            "redis-msgpack",
            Box::pin(run_suite::<RedisMsgpackHarness>()),
        ),
        (
            "redis-sentinel",
            Box::pin(run_suite::<RedisSentinelHarness>()),
        ),
        (
            "redis-cluster",
            Box::pin(run_suite::<RedisClusterHarness>()),
        ),
        ("nats", Box::pin(run_suite::<NatsHarness>())),
        ("nats-msgpack", Box::pin(run_suite::<NatsMsgpackHarness>())),
        ("postgres", Box::pin(run_suite::<PostgresHarness>())),
        (
            "postgres-msgpack",
            Box::pin(run_suite::<PostgresMsgpackHarness>()),
        ),
    ]
}

pub fn run(args: &[String]) -> Result<(), String> {
    let only: Vec<&str> = args.iter().map(String::as_str).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, suite) in backends() {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        eprintln!("running the suite on {name} ...");
        let backend_started = Instant::now();
        let reports = runtime.block_on(suite);
        eprintln!("  {name}: {:.1?}", backend_started.elapsed());
        rows.push((name, reports));
    }
    if rows.is_empty() {
        return Err(format!("no backend matches {only:?}"));
    }
    let failures = print_matrix(&rows);
    println!("the matrix took {:.1?}", started.elapsed());
    if failures == 0 {
        Ok(())
    } else {
        Err(format!("{failures} case(s) failed"))
    }
}

/// Prints cases down, backends across; returns the number of failures.
fn print_matrix(rows: &[(&str, Vec<CaseReport>)]) -> usize {
    let width = CASE_NAMES.iter().map(|n| n.len()).max().unwrap_or(4);
    let mut header = format!("{:width$}", "case");
    for (backend, _) in rows {
        header.push_str(&format!(" | {backend:^14}"));
    }
    println!("\n{header}");
    println!("{}", "-".repeat(header.len()));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut details = Vec::new();
    // Why each skip happened: reason -> (backends, cases).
    let mut skips: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for (i, case) in CASE_NAMES.iter().enumerate() {
        let mut line = format!("{case:width$}");
        for (backend, reports) in rows {
            let cell = match reports.get(i).map(|r| &r.result) {
                Some(Ok(Outcome::Passed)) => {
                    passed += 1;
                    "pass".to_owned()
                }
                Some(Ok(Outcome::Skipped(why))) => {
                    skipped += 1;
                    let (backends, cases) = skips.entry(why).or_default();
                    backends.insert(backend);
                    cases.insert(case);
                    "skip".to_owned()
                }
                Some(Err(error)) => {
                    failed += 1;
                    details.push(format!("{backend} / {case}: {error}"));
                    "FAIL".to_owned()
                }
                None => "?".to_owned(),
            };
            line.push_str(&format!(" | {cell:^14}"));
        }
        println!("{line}");
    }
    for detail in &details {
        println!("\nFAILED {detail}");
    }
    for (why, (backends, cases)) in &skips {
        let backends: Vec<&str> = backends.iter().copied().collect();
        let cases: Vec<&str> = cases.iter().copied().collect();
        println!(
            "\nskip on {}: {why}\n  cases: {}",
            backends.join(", "),
            cases.join(", ")
        );
    }
    println!("\nconformance: {passed} passed, {failed} failed, {skipped} skipped");
    failed
}
