//! `cargo xtask redis [--cluster | --sentinel] [--port N]`: a throwaway Redis
//! for manual testing and benchmarks.
//!
//! Starts `redis-server` on a free loopback port (or `--port N`), bound to
//! 127.0.0.1, without persistence, in a temporary directory; prints its URL
//! (with `--cluster`: a 3-master Redis Cluster, one URL per master; with
//! `--sentinel`: a master, a replica and three sentinels, the sentinels' URLs
//! and the master's name) and keeps it
//! running until Ctrl-C or end of standard input (so `cargo xtask redis <
//! /dev/null` starts and stops at once, and a script can hold it open through a
//! pipe). Then it stops the server(s) and removes the temporary directories.
//! If `redis-server` is missing it says how to install it.

use std::io::{BufRead, Write};

use rooms_testkit::redis_cluster::RedisCluster;
use rooms_testkit::redis_sentinel::RedisSentinel;
use rooms_testkit::redis_server::RedisServer;

const USAGE: &str = "usage: cargo xtask redis [--cluster | --sentinel] [--port N]
  (no flag)     one redis-server on a free loopback port
  --cluster     a 3-master Redis Cluster on free loopback ports
  --sentinel    a master, a replica and three sentinels on free loopback ports
  --port N      the single server listens on port N instead (not with --cluster or --sentinel)
Runs until Ctrl-C or end of standard input, then stops everything.";

/// Runs `cargo xtask redis` with the arguments after `redis`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut cluster = false;
    let mut sentinel = false;
    let mut port = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cluster" => cluster = true,
            "--sentinel" => sentinel = true,
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|error| format!("--port {value:?}: {error}"))?,
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if (cluster || sentinel) && port.is_some() {
        return Err(format!(
            "--port cannot be combined with --cluster or --sentinel\n{USAGE}"
        ));
    }
    if cluster && sentinel {
        return Err(format!("choose --cluster or --sentinel, not both\n{USAGE}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    runtime.block_on(serve(cluster, sentinel, port))
}

async fn serve(cluster: bool, sentinel: bool, port: Option<u16>) -> Result<(), String> {
    // Keep whatever was started alive until the end of this function; dropping
    // it kills the processes and removes their directories.
    let _running: Box<dyn std::any::Any> = if cluster {
        let cluster = RedisCluster::start()
            .await
            .map_err(|error| format!("cannot start a Redis Cluster: {error}"))?;
        println!("redis cluster (3 masters, sharded pub/sub) is up:");
        for url in cluster.urls() {
            println!("  {url}");
        }
        Box::new(cluster)
    } else if sentinel {
        let deployment = RedisSentinel::start()
            .await
            .map_err(|error| format!("cannot start a Sentinel deployment: {error}"))?;
        println!(
            "redis sentinel deployment is up (master {:?}, one replica):",
            deployment.master_name()
        );
        println!("  sentinels: {}", deployment.sentinel_urls().join(","));
        Box::new(deployment)
    } else {
        let server = match port {
            None => RedisServer::start().await,
            Some(port) => RedisServer::start_on_port(port).await,
        }
        .map_err(|error| format!("cannot start redis-server: {error}"))?;
        println!("{}", server.url());
        Box::new(server)
    };
    println!("running; press Ctrl-C (or close standard input) to stop");
    let _ = std::io::stdout().flush();

    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: reading stdin blocks. It ends with the process.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
        let _ = eof_tx.send(());
    });
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.map_err(|error| format!("cannot listen for Ctrl-C: {error}"))?;
            println!("\nCtrl-C: stopping");
        }
        _ = eof_rx => println!("standard input closed: stopping"),
    }
    Ok(())
}
