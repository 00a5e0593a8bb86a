//! What the arguments mean: addresses, limits, cluster timing, history and the
//! backend's URLs, each checked.

use std::net::SocketAddr;
use std::time::Duration;

use rooms_adapter::history::HistoryPolicy;

use super::topology::RedisTopology;
use super::{Args, MAX_SOCKETS_LIMIT};
use crate::{server, validation};

/// The cluster timing the flags ask for, checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTiming {
    /// Between two heartbeats of this node.
    pub heartbeat_interval: Duration,
    /// After which a silent node is gone; `None`: the library's default
    /// (three heartbeat intervals).
    pub node_expiry: Option<Duration>,
    /// How long a cluster-wide query waits for answers.
    pub query_timeout: Duration,
}

impl Args {
    /// The address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The socket cap: `--max-sockets`, or `--max-connections` plus 1024 for
    /// POSTs and page loads.
    pub fn max_sockets(&self) -> usize {
        let sockets = self
            .max_sockets
            .unwrap_or_else(|| self.max_connections.saturating_add(1024))
            .min(MAX_SOCKETS_LIMIT);
        usize::try_from(sockets).unwrap_or(usize::MAX)
    }

    /// The SSE stream cap.
    pub fn max_streams(&self) -> usize {
        usize::try_from(self.max_connections.min(MAX_SOCKETS_LIMIT)).unwrap_or(usize::MAX)
    }

    /// The limits of the HTTP server.
    pub fn limits(&self) -> server::Limits {
        server::Limits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            write_stall_timeout: Duration::from_millis(self.write_stall_timeout_ms),
            max_sockets: self.max_sockets(),
            shutdown_grace: self.shutdown_grace(),
        }
    }

    /// The time a POST body may take.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// The cluster timing: `--node-expiry-ms` must be longer than
    /// `--heartbeat-interval-ms` (each flag's own range is checked by the
    /// parser).
    pub fn cluster_timing(&self) -> Result<ClusterTiming, String> {
        if let Some(expiry) = self.node_expiry_ms
            && expiry <= self.heartbeat_interval_ms
        {
            return Err(format!(
                "--node-expiry-ms ({expiry}) must be longer than --heartbeat-interval-ms ({}): \
                 a node would expire between two of its heartbeats; \
                 give about three heartbeat intervals",
                self.heartbeat_interval_ms
            ));
        }
        Ok(ClusterTiming {
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            node_expiry: self.node_expiry_ms.map(Duration::from_millis),
            query_timeout: Duration::from_millis(self.query_timeout_ms),
        })
    }

    /// The history each room keeps, or `None` with `--history-len 0`.
    pub fn history(&self) -> Result<Option<HistoryPolicy>, String> {
        if self.history_len == 0 {
            return Ok(None);
        }
        let len = usize::try_from(self.history_len)
            .map_err(|_| format!("--history-len {} is too large here", self.history_len))?;
        HistoryPolicy::new(len, Duration::from_secs(self.history_ttl_secs))
            .map(Some)
            .map_err(|error| format!("--history-len / --history-ttl-secs: {error}"))
    }

    /// The NATS servers asked for (`--nats-url`), if any, split and checked
    /// like the Redis lists.
    pub fn nats_urls(&self) -> Result<Option<Vec<String>>, String> {
        self.nats_url
            .as_deref()
            .map(|list| url_list("--nats-url (or NATS_URL)", list))
            .transpose()
    }

    /// The PostgreSQL connection string asked for (`--postgres-url`), if any.
    pub fn postgres_url(&self) -> Result<Option<String>, String> {
        match self.postgres_url.as_deref().map(str::trim) {
            None => Ok(None),
            Some("") => Err(
                "--postgres-url (or DATABASE_URL) is empty: give a connection \
                             string such as postgres://app@127.0.0.1:5432/app"
                    .to_owned(),
            ),
            Some(url) => Ok(Some(url.to_owned())),
        }
    }

    /// The Redis deployment asked for, if any, with its URL lists split and
    /// checked. Errors name the flag and the position of a bad entry, never
    /// a URL (it may hold a password); the URLs themselves are parsed when
    /// the adapter is built, whose errors show them masked.
    pub fn redis_topology(&self) -> Result<Option<RedisTopology>, String> {
        if let Some(url) = &self.redis_url {
            if url.trim().is_empty() {
                return Err("--redis-url (or REDIS_URL) is empty: give a URL such as \
                            redis://127.0.0.1:6379"
                    .to_owned());
            }
            return Ok(Some(RedisTopology::Single(url.trim().to_owned())));
        }
        if let Some(list) = &self.redis_cluster {
            let urls = url_list("--redis-cluster (or REDIS_CLUSTER)", list)?;
            return Ok(Some(RedisTopology::Cluster(urls)));
        }
        if let Some(list) = &self.redis_sentinel {
            let urls = url_list("--redis-sentinel (or REDIS_SENTINEL)", list)?;
            let master = self.redis_sentinel_master.as_deref().unwrap_or("").trim();
            if master.is_empty() {
                return Err("--redis-sentinel needs the master's name: \
                            --redis-sentinel-master <NAME> (or REDIS_SENTINEL_MASTER)"
                    .to_owned());
            }
            if master.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "--redis-sentinel-master (or REDIS_SENTINEL_MASTER) must not contain \
                     spaces or control characters, got {master:?}"
                ));
            }
            return Ok(Some(RedisTopology::Sentinel {
                urls,
                master: master.to_owned(),
            }));
        }
        Ok(None)
    }
}

/// Splits a comma-separated list of URLs (spaces around commas allowed).
/// Errors name the flag and the position, never the URLs.
pub(super) fn url_list(flag: &str, list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = list.split(',').map(|url| url.trim().to_owned()).collect();
    if urls.iter().all(String::is_empty) {
        return Err(format!(
            "{flag} is empty: give one or more URLs separated by commas, \
             e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000"
        ));
    }
    if let Some(position) = urls.iter().position(String::is_empty) {
        return Err(format!(
            "{flag}: URL {} of {} is empty (a stray comma?)",
            position + 1,
            urls.len()
        ));
    }
    Ok(urls)
}

pub(super) fn parse_node_id(raw: &str) -> Result<String, String> {
    validation::node_id(raw)
        .map(str::to_owned)
        .map_err(|error| error.message)
}
