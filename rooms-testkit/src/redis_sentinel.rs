//! Throwaway Redis Sentinel deployment on free loopback ports:
//! [`RedisSentinel`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use rooms_testkit::redis_sentinel::RedisSentinel;
//!
//! let mut deployment = RedisSentinel::start().await?;
//! println!("{:?} watch {}", deployment.sentinel_urls(), deployment.master_name());
//! let old = deployment.kill_master().await?; // SIGKILL, as a crash
//! let (new, took) = deployment.wait_for_failover(old, Duration::from_secs(30)).await?;
//! println!("127.0.0.1:{new} is master after {took:?}");
//! deployment.restart_killed().await?; // back, as a replica of the new master
//! # Ok(()) }
//! ```
//!
//! How it is built:
//! - two data nodes and three sentinels, each a [`RedisServer`] (free
//!   loopback port, own temp directory, killed and removed on drop; the binary
//!   is `redis-server` on `PATH` or `ROOMS_REDIS_SERVER`);
//! - the master starts first, then the replica (`--replicaof`), and start-up
//!   waits until the replica is in sync *before* the sentinels start, so
//!   their first `INFO` of the master already lists the replica (otherwise
//!   they would only find it at the next refresh, up to 10 s later);
//! - each sentinel is `redis-server redis.conf --sentinel`, its config file
//!   monitoring [`MASTER_NAME`] with quorum 2, `down-after-milliseconds`
//!   [`DOWN_AFTER`], `failover-timeout` [`FAILOVER_TIMEOUT`],
//!   `parallel-syncs 1`;
//! - [`start`](RedisSentinel::start) returns once every sentinel knows the
//!   master, sees the replica connected and in sync, and knows the two other
//!   sentinels (hello messages, every 2 s), so a failover can start at once.
//!
//! Timing, and what is fragile:
//! - a failover takes `DOWN_AFTER` (subjective down) plus a quorum vote, a
//!   leader election (each sentinel waits a random 0..1 s before it asks for
//!   votes) and the promotion: about 2.3 s from the kill on loopback. If the
//!   votes split, the sentinels try again only 2 x `FAILOVER_TIMEOUT` (10 s)
//!   after the first attempt, so allow 30 s;
//! - for the same 2 x `FAILOVER_TIMEOUT` after a failover the sentinels start
//!   no new one: a second [`kill_master`](RedisSentinel::kill_master) right
//!   after a failover is only acted on after that;
//! - data nodes listen on ports from the ephemeral range; while one is dead,
//!   an outgoing connection could take its port, and
//!   [`restart_killed`](RedisSentinel::restart_killed) retries until
//!   [`START_DEADLINE`](crate::redis_server::START_DEADLINE).

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use rooms_adapter_redis::redis;

use crate::poll::{wait_for, wait_until};
use crate::redis_server::RedisServer;

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "rooms-master";

/// How many sentinels a [`RedisSentinel`] runs.
pub const SENTINELS: usize = 3;

/// How many sentinels must agree the master is down.
pub const QUORUM: usize = 2;

/// `sentinel down-after-milliseconds`: how long the master may be silent
/// before a sentinel thinks it is down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// `sentinel failover-timeout`.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(5000);

/// How long [`RedisSentinel::start`] and
/// [`restart_killed`](RedisSentinel::restart_killed) wait for the deployment
/// to settle.
pub const SENTINEL_DEADLINE: Duration = Duration::from_secs(30);

/// How long one query to a node or sentinel may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A master, a replica and three sentinels; see the [module docs](self).
#[derive(Debug)]
pub struct RedisSentinel {
    // Sentinels first: dropped (killed) before the data nodes, so they do not
    // fail over while the deployment is torn down.
    sentinels: Vec<RedisServer>,
    /// The data nodes; which one is master changes with failovers.
    nodes: Vec<RedisServer>,
    /// The port [`kill_master`](Self::kill_master) killed last, and when.
    killed: Option<(u16, Instant)>,
}

impl RedisSentinel {
    /// Starts the master, the replica and the sentinels, and waits (up to
    /// [`SENTINEL_DEADLINE`]) until the replica is in sync and every sentinel
    /// knows the master, the replica and the other sentinels.
    ///
    /// If `redis-server` is missing the error says how to install it.
    pub async fn start() -> io::Result<Self> {
        let master = RedisServer::start_with_args(&NODE_ARGS).await?;
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with_args(&node_args(&master_port)).await?;
        let mut deployment = Self {
            sentinels: Vec::with_capacity(SENTINELS),
            nodes: vec![master, replica],
            killed: None,
        };
        let (master_port, replica_port) = (deployment.nodes[0].port(), deployment.nodes[1].port());
        deployment.explain(wait_for_replica(replica_port, master_port).await)?;
        let config = sentinel_config(master_port);
        for _ in 0..SENTINELS {
            let sentinel = RedisServer::start_with_config(&config, &["--sentinel"]).await?;
            deployment.sentinels.push(sentinel);
        }
        let ready = deployment
            .wait_sentinels_see(master_port, replica_port)
            .await;
        deployment.explain(ready)?;
        Ok(deployment)
    }

    /// The name the sentinels monitor the master under ([`MASTER_NAME`]).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `redis://127.0.0.1:<port>` of every sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The port of every sentinel.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(RedisServer::port).collect()
    }

    /// The ports of the two data nodes (master and replica, in start order;
    /// which is master changes with failovers).
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The data node on `port`, e.g. for [`RedisServer::command`] or
    /// [`RedisServer::log`].
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|node| node.port() == port)
    }

    /// The sentinels (e.g. for their [`log`](RedisServer::log)s).
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The port of the current master as the sentinels report it
    /// (`SENTINEL get-master-addr-by-name`): the answer of the first sentinel
    /// that answers.
    pub async fn master_port(&self) -> io::Result<u16> {
        let mut last = None;
        for sentinel in &self.sentinels {
            match master_addr(sentinel.port()).await {
                Ok(port) => return Ok(port),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no sentinel is running")))
    }

    /// `redis://127.0.0.1:<port>` of the current master as the sentinels
    /// report it (see [`master_port`](Self::master_port)).
    pub async fn master_url(&self) -> io::Result<String> {
        Ok(format!("redis://127.0.0.1:{}", self.master_port().await?))
    }

    /// Kills the current master (as the sentinels report it) with SIGKILL, as
    /// a crash, and returns its port.
    pub async fn kill_master(&mut self) -> io::Result<u16> {
        let port = self.master_port().await?;
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .ok_or_else(|| {
                io::Error::other(format!("the sentinels report an unknown master on {port}"))
            })?;
        if !node.is_running() {
            return Err(io::Error::other(format!(
                "the master on {port} is already dead (no failover yet?)"
            )));
        }
        node.kill()?;
        self.killed = Some((port, Instant::now()));
        Ok(port)
    }

    /// Waits (up to `deadline`) until every running sentinel reports the same
    /// master other than `old_master_port` and that node answers `ROLE` as
    /// master. Returns its port and how long the failover took: since
    /// [`kill_master`](Self::kill_master) killed `old_master_port`, or since
    /// this call if it was not killed that way.
    pub async fn wait_for_failover(
        &self,
        old_master_port: u16,
        deadline: Duration,
    ) -> io::Result<(u16, Duration)> {
        let since = match self.killed {
            Some((port, at)) if port == old_master_port => at,
            _ => Instant::now(),
        };
        let sentinels = self.sentinel_ports();
        let nodes = self.node_ports();
        let new_master = wait_until(
            &format!("the sentinels report a master other than {old_master_port}"),
            deadline,
            || {
                let (sentinels, nodes) = (&sentinels, &nodes);
                async move {
                    let mut agreed = None;
                    for sentinel in sentinels {
                        let port = master_addr(*sentinel).await?;
                        if port == old_master_port {
                            return Err(io::Error::other(format!(
                                "(sentinel {sentinel} still reports {port})"
                            )));
                        }
                        if agreed.is_some_and(|agreed| agreed != port) {
                            return Err(io::Error::other(format!(
                                "(the sentinels disagree: {agreed:?} and {port})"
                            )));
                        }
                        agreed = Some(port);
                    }
                    let Some(port) = agreed else {
                        return Err(io::Error::other("(no sentinel)"));
                    };
                    if !nodes.contains(&port) {
                        return Err(io::Error::other(format!("(unknown master {port})")));
                    }
                    let role = role(port).await?;
                    if role != "master" {
                        return Err(io::Error::other(format!(
                            "(the sentinels report {port}, whose ROLE is {role})"
                        )));
                    }
                    Ok(Some(port))
                }
            },
        )
        .await;
        let new_master = self.explain(new_master)?;
        Ok((new_master, since.elapsed()))
    }

    /// Kills every data node (master and replica) with SIGKILL: the
    /// sentinels have nothing to promote, so the deployment is down until
    /// [`restart_all`](Self::restart_all).
    pub fn kill_all(&mut self) -> io::Result<()> {
        for node in &mut self.nodes {
            if node.is_running() {
                node.kill()?;
            }
        }
        Ok(())
    }

    /// Restarts the data nodes killed by [`kill_all`](Self::kill_all) on
    /// their ports: the master the sentinels still name as master, the other
    /// as its replica; waits until the replica is in sync again.
    pub async fn restart_all(&mut self) -> io::Result<()> {
        let master = self.master_port().await?;
        let master_arg = master.to_string();
        for node in &mut self.nodes {
            if node.is_running() {
                continue;
            }
            if node.port() == master {
                node.restart_with_args(&NODE_ARGS).await?;
            }
        }
        let mut replicas = Vec::new();
        for node in &mut self.nodes {
            if !node.is_running() {
                node.restart_with_args(&node_args(&master_arg)).await?;
                replicas.push(node.port());
            }
        }
        self.killed = None;
        for port in replicas {
            let synced = wait_for_replica(port, master).await;
            self.explain(synced)?;
        }
        Ok(())
    }

    /// Starts every killed data node again on its port, with no data, as a
    /// replica of the current master, and waits (up to [`SENTINEL_DEADLINE`])
    /// until it is in sync and every sentinel sees it so (so it can be
    /// promoted by the next failover).
    pub async fn restart_killed(&mut self) -> io::Result<()> {
        let master = self.master_port().await?;
        let master_arg = master.to_string();
        let mut restarted = Vec::new();
        for node in &mut self.nodes {
            if node.is_running() {
                continue;
            }
            if node.port() == master {
                return Err(io::Error::other(format!(
                    "the sentinels still report the killed {master} as master: \
                     wait_for_failover first"
                )));
            }
            node.restart_with_args(&node_args(&master_arg)).await?;
            restarted.push(node.port());
        }
        self.killed = None;
        for port in restarted {
            let synced = wait_for_replica(port, master).await;
            self.explain(synced)?;
            let seen = self.wait_sentinels_see(master, port).await;
            self.explain(seen)?;
        }
        Ok(())
    }

    /// Waits until every sentinel reports `master`, lists `replica` as a
    /// healthy replica of it, and knows the other sentinels.
    async fn wait_sentinels_see(&self, master: u16, replica: u16) -> io::Result<()> {
        for sentinel in self.sentinel_ports() {
            wait_for(
                &format!("sentinel {sentinel} knows master {master}, replica {replica} and the other sentinels"),
                SENTINEL_DEADLINE,
                || sentinel_sees(sentinel, master, replica),
            )
            .await?;
        }
        Ok(())
    }

    /// Adds the tails of every log to a failed wait's error.
    fn explain<T>(&self, result: io::Result<T>) -> io::Result<T> {
        result.map_err(|error| {
            let mut message = error.to_string();
            for (what, server) in self
                .nodes
                .iter()
                .map(|node| ("node", node))
                .chain(self.sentinels.iter().map(|sentinel| ("sentinel", sentinel)))
            {
                let log = server.log();
                let tail: Vec<&str> = log.lines().rev().take(6).collect();
                message.push_str(&format!(
                    "\n--- {what} {} log tail:\n{}",
                    server.port(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            io::Error::new(error.kind(), message)
        })
    }
}

/// Arguments of every data node: a master starts a full sync at once
/// (Redis 7 syncs diskless and waits 5 s for more replicas by default).
const NODE_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

/// [`NODE_ARGS`] of a replica of the master on `master_port`.
fn node_args(master_port: &str) -> Vec<&str> {
    let mut args = NODE_ARGS.to_vec();
    args.extend(["--replicaof", "127.0.0.1", master_port]);
    args
}

/// A sentinel's config file for a master on `master_port` (port, bind, dir
/// and log file come on the command line).
fn sentinel_config(master_port: u16) -> String {
    let down_after = DOWN_AFTER.as_millis();
    let failover_timeout = FAILOVER_TIMEOUT.as_millis();
    format!(
        "sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
         sentinel down-after-milliseconds {MASTER_NAME} {down_after}\n\
         sentinel failover-timeout {MASTER_NAME} {failover_timeout}\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
}

/// Runs `command` on `127.0.0.1:port` over a fresh connection (no state is
/// left over from a node that died meanwhile), within [`QUERY_TIMEOUT`].
async fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> io::Result<T> {
    let attempt = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        command.query_async::<T>(&mut connection).await
    };
    match tokio::time::timeout(QUERY_TIMEOUT, attempt).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(io::Error::other(format!("(port {port}: {error})"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("(port {port} did not answer within {QUERY_TIMEOUT:?})"),
        )),
    }
}

/// The master port sentinel `sentinel` reports.
async fn master_addr(sentinel: u16) -> io::Result<u16> {
    let mut command = redis::cmd("SENTINEL");
    command.arg("get-master-addr-by-name").arg(MASTER_NAME);
    let addr: Option<(String, u16)> = query(sentinel, &command).await?;
    addr.map(|(_, port)| port).ok_or_else(|| {
        io::Error::other(format!("(sentinel {sentinel} does not know {MASTER_NAME})"))
    })
}

/// The first element of `ROLE` on `port`: `master`, `slave` or `sentinel`.
async fn role(port: u16) -> io::Result<String> {
    let reply: Vec<redis::Value> = query(port, &redis::cmd("ROLE")).await?;
    match reply.first() {
        Some(redis::Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(redis::Value::SimpleString(text)) => Ok(text.clone()),
        other => Err(io::Error::other(format!(
            "(odd ROLE reply from {port}: {other:?})"
        ))),
    }
}

/// `INFO <section>` on `port` as `field -> value`.
async fn info(port: u16, section: &str) -> io::Result<HashMap<String, String>> {
    let text: String = query(port, redis::cmd("INFO").arg(section)).await?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(field, value)| (field.to_owned(), value.to_owned()))
        .collect())
}

/// A `SENTINEL replicas|sentinels <name>` reply: one `field -> value` map per
/// entry.
async fn sentinel_entries(sentinel: u16, what: &str) -> io::Result<Vec<HashMap<String, String>>> {
    let mut command = redis::cmd("SENTINEL");
    command.arg(what).arg(MASTER_NAME);
    let entries: Vec<Vec<String>> = query(sentinel, &command).await?;
    Ok(entries
        .into_iter()
        .map(|flat| {
            flat.chunks_exact(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect()
        })
        .collect())
}

/// Waits until `replica` says its link to `master` is up and `master` lists
/// it as an online replica.
async fn wait_for_replica(replica: u16, master: u16) -> io::Result<()> {
    wait_for(
        &format!("{replica} is an in-sync replica of {master}"),
        SENTINEL_DEADLINE,
        || async move {
            let replica_info = info(replica, "replication").await?;
            let link_up = replica_info.get("master_port").map(String::as_str)
                == Some(master.to_string().as_str())
                && replica_info.get("master_link_status").map(String::as_str) == Some("up");
            if !link_up {
                return Err(io::Error::other(format!(
                    "({replica}: master_port {:?}, master_link_status {:?})",
                    replica_info.get("master_port"),
                    replica_info.get("master_link_status")
                )));
            }
            let master_info = info(master, "replication").await?;
            let needle = format!("port={replica},state=online");
            Ok(master_info
                .iter()
                .any(|(field, value)| field.starts_with("slave") && value.contains(&needle)))
        },
    )
    .await
}

/// Whether `sentinel` reports `master`, lists `replica` as a healthy replica
/// with its link to `master` up, and knows the other sentinels.
async fn sentinel_sees(sentinel: u16, master: u16, replica: u16) -> io::Result<bool> {
    let reported = master_addr(sentinel).await?;
    if reported != master {
        return Err(io::Error::other(format!(
            "(sentinel {sentinel} reports master {reported})"
        )));
    }
    let replicas = sentinel_entries(sentinel, "replicas").await?;
    let port = replica.to_string();
    let healthy = replicas.iter().any(|entry| {
        let field = |name: &str| entry.get(name).map(String::as_str);
        field("port") == Some(port.as_str())
            && healthy_as(entry, "slave")
            && field("master-link-status") == Some("ok")
            && field("master-port") == Some(master.to_string().as_str())
    });
    if !healthy {
        return Err(io::Error::other(format!(
            "(sentinel {sentinel} sees replicas {:?})",
            replicas
                .iter()
                .map(|entry| (
                    entry.get("port"),
                    entry.get("flags"),
                    entry.get("master-link-status")
                ))
                .collect::<Vec<_>>()
        )));
    }
    let others = sentinel_entries(sentinel, "sentinels").await?;
    let known = others
        .iter()
        .filter(|entry| healthy_as(entry, "sentinel"))
        .count();
    if known != SENTINELS - 1 {
        return Err(io::Error::other(format!(
            "(sentinel {sentinel} knows {known} other sentinels)"
        )));
    }
    Ok(true)
}

/// Whether a `SENTINEL replicas|sentinels` entry has the flag `role` and
/// none saying it is down or unreachable. (Other flags may linger: e.g. a
/// sentinel that voted the old master down keeps `master_down` for a few
/// seconds after the failover, which does not matter.)
fn healthy_as(entry: &HashMap<String, String>, role: &str) -> bool {
    let flags: Vec<&str> = entry
        .get("flags")
        .map(|flags| flags.split(',').collect())
        .unwrap_or_default();
    flags.contains(&role)
        && !flags
            .iter()
            .any(|flag| ["s_down", "o_down", "disconnected"].contains(flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_config_monitors_the_master() {
        let config = sentinel_config(6379);
        assert!(config.contains("sentinel monitor rooms-master 127.0.0.1 6379 2\n"));
        assert!(config.contains("sentinel down-after-milliseconds rooms-master 1000\n"));
        assert!(config.contains("sentinel failover-timeout rooms-master 5000\n"));
    }

    #[test]
    fn stale_flags_do_not_make_an_entry_unhealthy() {
        let entry = |flags: &str| HashMap::from([("flags".to_owned(), flags.to_owned())]);
        assert!(healthy_as(&entry("sentinel,master_down"), "sentinel"));
        assert!(healthy_as(&entry("slave"), "slave"));
        assert!(!healthy_as(&entry("slave,s_down,disconnected"), "slave"));
        assert!(!healthy_as(&entry("sentinel,disconnected"), "sentinel"));
        assert!(!healthy_as(&entry("sentinel"), "slave"));
    }
}
