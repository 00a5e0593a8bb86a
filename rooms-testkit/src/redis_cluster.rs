//! Throwaway 3-master Redis Cluster on free loopback ports: [`RedisCluster`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rooms_testkit::redis_cluster::RedisCluster;
//!
//! let mut cluster = RedisCluster::start().await?;
//! println!("seed: {}", cluster.url(0));
//! cluster.kill(1)?; // SIGKILL one master
//! cluster.reassign_slots(1, 0).await?; // its slots now belong to master 0
//! # Ok(()) }
//! ```
//!
//! How it is built, and why:
//! - each master is a `redis-server --cluster-enabled yes` with its own temp
//!   directory (nodes.conf lives there), bound to 127.0.0.1, no persistence,
//!   `--cluster-node-timeout 2000`;
//! - the cluster is joined directly (`CLUSTER ADDSLOTSRANGE` for a third of the
//!   slots on each master, `CLUSTER SET-CONFIG-EPOCH`, `CLUSTER MEET`), which
//!   is faster than `redis-cli --cluster create` (no fixed sleeps); start-up
//!   waits (with a deadline) until `CLUSTER INFO` says `cluster_state:ok` on
//!   every master *and* every master sees all three masters owning slots;
//! - there are no replicas, so a killed master does not fail over by itself.
//!   [`reassign_slots`](RedisCluster::reassign_slots) moves a dead master's
//!   slots to a survivor: every survivor `CLUSTER FORGET`s the dead node (which
//!   leaves its slots unassigned), the new owner `CLUSTER ADDSLOTSRANGE`s them
//!   and `CLUSTER BUMPEPOCH`s so its claim wins, then it waits for
//!   `cluster_state:ok` on the survivors. (`CLUSTER SETSLOT .. NODE` cannot
//!   move slots away from a node that is not there to agree, and
//!   `redis-cli --cluster reshard` refuses to run while a master is down.)
//! - [`restart`](RedisCluster::restart) starts a killed master again on its
//!   port with its nodes.conf, so it rejoins with its old identity and slots:
//!   killing all three and restarting all three brings the cluster back.
//!
//! Everything is stopped (SIGKILL) and the temp directories removed on drop.
//!
//! `cluster_harness::RedisClusterHarness` (feature `cluster`) runs the
//! conformance suite on such a cluster.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::poll::wait_for;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// How long [`RedisCluster::start`] and the other waits may take.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// The masters of a test cluster.
pub const MASTERS: usize = 3;

/// One master of a [`RedisCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    id: String,
    /// The slot ranges assigned at start (inclusive).
    ranges: Vec<(u16, u16)>,
    child: Option<Child>,
}

/// A 3-master Redis Cluster of throwaway `redis-server` processes; see the
/// [module docs](self).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    root: PathBuf,
}

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// Whether `redis-server` and `redis-cli` can be run; the error says how to
/// install them.
pub fn check_tools() -> io::Result<()> {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Err(other(format!(
                "`{tool}` not found: install Redis 7 or newer (e.g. `apt-get install redis-server`)"
            )));
        }
    }
    Ok(())
}

/// A port `p` such that `p` and the cluster bus port `p + 10000` are both free
/// on 127.0.0.1 right now.
fn free_cluster_port() -> io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Ports 10000..22000 (bus ports 20000..32000): below Linux's ephemeral
    // range (32768..), so outgoing connections never take them meanwhile.
    // Test binaries running at once are spread over the range by pid.
    let base = (std::process::id().wrapping_mul(7919)) % 12_000;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (base + offset * 13) % 12_000;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let Ok(first) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let Ok(bus) = TcpListener::bind(("127.0.0.1", port + 10_000)) else {
            continue;
        };
        drop((first, bus));
        return Ok(port);
    }
    Err(other("no free port pair (p, p+10000) on 127.0.0.1"))
}

fn spawn_server(port: u16, dir: &Path) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("redis.log"))?;
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", "2000"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--protected-mode", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
}

/// Runs `redis-cli -p port args...` and returns its output (trimmed).
/// Redis error replies come back as `Err`.
pub async fn cli(port: u16, args: &[&str]) -> io::Result<String> {
    let output = tokio::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let first_word = stdout.split_whitespace().next().unwrap_or_default();
    let error_reply = [
        "ERR",
        "WRONGTYPE",
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOPERM",
        "NOAUTH",
        "LOADING",
        "BUSY",
        "(error)",
    ]
    .contains(&first_word);
    if !output.status.success() || error_reply {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(other(format!(
            "redis-cli -p {port} {}: {stdout} {stderr}",
            args.join(" ")
        )));
    }
    Ok(stdout)
}

/// `(start, end)` inclusive slot ranges splitting [`SLOTS`] into `parts`.
fn split_slots(parts: usize) -> Vec<(u16, u16)> {
    let parts = parts.max(1) as u32;
    (0..parts)
        .map(|i| {
            let start = u32::from(SLOTS) * i / parts;
            let end = u32::from(SLOTS) * (i + 1) / parts - 1;
            (start as u16, end as u16)
        })
        .collect()
}

impl RedisCluster {
    /// Starts 3 masters on free ports, joins them and waits until the
    /// cluster is ok everywhere. Retries with other ports if a port was taken
    /// in the meantime.
    pub async fn start() -> io::Result<Self> {
        check_tools()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(cluster) => return Ok(cluster),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| other("cluster did not start")))
    }

    async fn try_start() -> io::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "rooms-redis-cluster-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(MASTERS),
            root,
        };
        let ranges = split_slots(MASTERS);
        for range in ranges {
            let port = free_cluster_port()?;
            let dir = cluster.root.join(format!("node-{port}"));
            std::fs::create_dir_all(&dir)?;
            let child = spawn_server(port, &dir)?;
            cluster.nodes.push(Node {
                port,
                dir,
                id: String::new(),
                ranges: vec![range],
                child: Some(child),
            });
        }
        for index in 0..MASTERS {
            cluster.wait_ping(index).await?;
            let port = cluster.nodes[index].port;
            cluster.nodes[index].id = cli(port, &["CLUSTER", "MYID"]).await?;
            let (start, end) = cluster.nodes[index].ranges[0];
            cli(
                port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &start.to_string(),
                    &end.to_string(),
                ],
            )
            .await?;
            let epoch = (index + 1).to_string();
            cli(port, &["CLUSTER", "SET-CONFIG-EPOCH", &epoch]).await?;
        }
        let first = cluster.nodes[0].port;
        for node in &cluster.nodes[1..] {
            cli(
                first,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()],
            )
            .await?;
        }
        cluster.wait_ok(&[0, 1, 2]).await?;
        Ok(cluster)
    }

    /// Waits until master `index` answers PING; fails at once if it exited
    /// (e.g. its port was taken meanwhile).
    async fn wait_ping(&mut self, index: usize) -> io::Result<()> {
        let port = self.nodes[index].port;
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            if let Some(child) = self.nodes[index].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.nodes[index].child = None;
                let log = std::fs::read_to_string(self.log_path(index)).unwrap_or_default();
                return Err(other(format!(
                    "redis-server on port {port} exited ({status}): {}",
                    log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                )));
            }
            if cli(port, &["PING"])
                .await
                .is_ok_and(|reply| reply == "PONG")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(other(format!(
                    "timed out after {CLUSTER_DEADLINE:?} waiting until redis on port {port} answers PING"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every listed master says `cluster_state:ok` and sees every
    /// slot served by a master that is in the listed set.
    pub async fn wait_ok(&self, masters: &[usize]) -> io::Result<()> {
        let ports: Vec<u16> = masters.iter().map(|i| self.nodes[*i].port).collect();
        let expected = ports.len();
        for port in ports.iter().copied() {
            wait_for(
                &format!("the cluster is ok as seen from port {port}"),
                CLUSTER_DEADLINE,
                || {
                    let ports = ports.clone();
                    async move {
                        let info = cli(port, &["CLUSTER", "INFO"]).await?;
                        if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                            return Ok(false);
                        }
                        // Every slot owner is one of the live masters, and
                        // each live master owns slots.
                        let nodes = cli(port, &["CLUSTER", "NODES"]).await?;
                        let mut owners = 0;
                        for line in nodes.lines() {
                            let fields: Vec<&str> = line.split_whitespace().collect();
                            if fields.len() > 8 && fields[2].contains("master") {
                                let port_of = fields[1]
                                    .split('@')
                                    .next()
                                    .and_then(|addr| addr.rsplit(':').next())
                                    .and_then(|p| p.parse::<u16>().ok());
                                if fields[2].contains("fail") {
                                    return Ok(false);
                                }
                                match port_of {
                                    Some(p) if ports.contains(&p) => owners += 1,
                                    _ => return Ok(false),
                                }
                            }
                        }
                        Ok(owners == expected)
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The number of masters (3).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The port of master `index`.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port
    }

    /// Every master's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// `redis://127.0.0.1:{port}` of master `index`.
    pub fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[index].port)
    }

    /// Every master's URL (seed nodes for a cluster client).
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// The cluster node id of master `index`.
    pub fn node_id(&self, index: usize) -> &str {
        &self.nodes[index].id
    }

    /// Whether master `index` is running.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// The index of the master serving `slot`, as master `via` sees it.
    pub async fn owner_of_slot(&self, via: usize, slot: u16) -> io::Result<Option<usize>> {
        let nodes = cli(self.port(via), &["CLUSTER", "NODES"]).await?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let mut bounds = range.splitn(2, '-');
                let start = bounds.next().and_then(|s| s.parse::<u16>().ok());
                let end = bounds.next().and_then(|s| s.parse::<u16>().ok()).or(start);
                matches!((start, end), (Some(s), Some(e)) if s <= slot && slot <= e)
            });
            if owns {
                return Ok(self.nodes.iter().position(|node| node.id == fields[0]));
            }
        }
        Ok(None)
    }

    /// The hash slot of `key`, as Redis computes it (`CLUSTER KEYSLOT`).
    pub async fn keyslot(&self, key: &str) -> io::Result<u16> {
        let port = self
            .nodes
            .iter()
            .find(|node| node.child.is_some())
            .map(|node| node.port)
            .ok_or_else(|| other("no master is running"))?;
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .await?
            .parse()
            .map_err(|error| other(format!("CLUSTER KEYSLOT {key:?}: {error}")))
    }

    /// Kills master `index` with SIGKILL (no clean shutdown) and waits for it
    /// to exit.
    pub fn kill(&mut self, index: usize) -> io::Result<()> {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Kills every master.
    pub fn kill_all(&mut self) -> io::Result<()> {
        for index in 0..self.nodes.len() {
            self.kill(index)?;
        }
        Ok(())
    }

    /// Starts killed master `index` again on its port with its nodes.conf (it
    /// keeps its id and slots) and waits until it answers PING.
    pub async fn restart(&mut self, index: usize) -> io::Result<()> {
        if self.nodes[index].child.is_none() {
            let node = &self.nodes[index];
            let child = spawn_server(node.port, &node.dir)?;
            self.nodes[index].child = Some(child);
        }
        self.wait_ping(index).await
    }

    /// Restarts every killed master and waits until the cluster is ok on all
    /// of them.
    pub async fn restart_all(&mut self) -> io::Result<()> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                let node = &self.nodes[index];
                let child = spawn_server(node.port, &node.dir)?;
                self.nodes[index].child = Some(child);
            }
        }
        for index in 0..self.nodes.len() {
            self.wait_ping(index).await?;
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.wait_ok(&all).await
    }

    /// Moves every slot of *killed* master `dead` to running master `to`:
    /// the survivors forget `dead` (its slots become unassigned), `to` adds
    /// them and bumps its epoch, then this waits until the survivors agree and
    /// say `cluster_state:ok`. See the [module docs](self) for why this way.
    ///
    /// Afterwards `dead` is no longer part of the cluster (restarting it would
    /// bring back a node with a stale view; don't).
    pub async fn reassign_slots(&mut self, dead: usize, to: usize) -> io::Result<()> {
        if self.nodes[dead].child.is_some() {
            return Err(other(format!(
                "master {dead} is running; kill it before reassigning its slots"
            )));
        }
        if self.nodes[to].child.is_none() {
            return Err(other(format!("master {to} is not running")));
        }
        let dead_id = self.nodes[dead].id.clone();
        let survivors: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        for index in &survivors {
            cli(self.port(*index), &["CLUSTER", "FORGET", &dead_id]).await?;
        }
        let ranges = std::mem::take(&mut self.nodes[dead].ranges);
        let port = self.port(to);
        for (start, end) in &ranges {
            cli(
                port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &start.to_string(),
                    &end.to_string(),
                ],
            )
            .await?;
        }
        cli(port, &["CLUSTER", "BUMPEPOCH"]).await?;
        self.nodes[to].ranges.extend(ranges);
        self.wait_ok(&survivors).await
    }

    /// Moves one (key-less) `slot` from running master `from` to running
    /// master `to`, as resharding does: `to` IMPORTING, `from` MIGRATING (there
    /// are no keys to `MIGRATE`), then `CLUSTER SETSLOT slot NODE to` on `to`,
    /// `from` and every other master. `from` drops the shard channels of the
    /// slot and tells their subscribers (`sunsubscribe`). Waits until every
    /// running master says `to` serves it.
    pub async fn move_slot(&mut self, slot: u16, from: usize, to: usize) -> io::Result<()> {
        let slot_arg = slot.to_string();
        let (from_id, to_id) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
        cli(
            self.port(to),
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        )
        .await?;
        cli(
            self.port(from),
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        )
        .await?;
        cli(
            self.port(to),
            &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id],
        )
        .await?;
        cli(
            self.port(from),
            &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id],
        )
        .await?;
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        for index in &running {
            if *index != from && *index != to {
                cli(
                    self.port(*index),
                    &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id],
                )
                .await?;
            }
        }
        let this = &*self;
        for index in running {
            wait_for(
                &format!("master {index} sees slot {slot} on master {to}"),
                CLUSTER_DEADLINE,
                || async move { Ok(this.owner_of_slot(index, slot).await? == Some(to)) },
            )
            .await?;
        }
        Ok(())
    }

    /// The log file of master `index` (for diagnosing a failed test).
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.nodes[index].dir.join("redis.log")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_split_without_gaps() {
        let ranges = split_slots(3);
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(SLOTS - 1));
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0);
        }
    }
}
