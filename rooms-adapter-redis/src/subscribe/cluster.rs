//! Where a Redis Cluster's shards are: the slot map from `CLUSTER SLOTS`,
//! asked of a known master first and of the seeds after.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, Value};
use rooms_adapter::Error;

use super::slot::{ShardId, Topology, shard_id};
use crate::error::{from_redis, timeout};

/// A cluster's seeds and the last slot map seen.
pub(crate) struct ClusterTarget {
    /// Where the slot map is asked for when no known master answers, and the
    /// template (credentials, TLS) for connections to masters.
    seeds: Vec<ConnectionInfo>,
    limit: Duration,
    /// Masters of the last slot map: asked first next time.
    known: Mutex<Vec<(String, u16)>>,
}

impl ClusterTarget {
    pub(crate) fn new(seeds: Vec<ConnectionInfo>, limit: Duration) -> Self {
        Self {
            seeds,
            limit,
            known: Mutex::new(Vec::new()),
        }
    }

    /// The slot map from the first node that answers.
    pub(crate) async fn discover(&self, medium: &str) -> Result<Topology, Error> {
        let mut candidates = Vec::new();
        let mut seen = HashSet::new();
        if let Some(template) = self.seeds.first() {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            for (host, port) in known.iter() {
                if seen.insert(shard_id(host, *port)) {
                    candidates.push(node_info(template, host, *port));
                }
            }
        }
        for seed in &self.seeds {
            let id = match seed.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    shard_id(host, *port)
                }
                other => other.to_string(),
            };
            if seen.insert(id) {
                candidates.push(seed.clone());
            }
        }
        let topology = fetch_topology(candidates, self.limit, medium).await?;
        *self.known.lock().unwrap_or_else(PoisonError::into_inner) = topology
            .masters()
            .map(|(_, host, port)| (host.to_owned(), port))
            .collect();
        Ok(topology)
    }

    /// How to reach `shard` of `topology`.
    pub(crate) fn node_info(
        &self,
        topology: &Topology,
        shard: &ShardId,
    ) -> Result<ConnectionInfo, Error> {
        let address = topology
            .masters()
            .find(|(id, _, _)| *id == shard)
            .map(|(_, host, port)| (host, port));
        match (self.seeds.first(), address) {
            (Some(template), Some((host, port))) => Ok(node_info(template, host, port)),
            _ => Err(Error::Unavailable {
                medium: format!("redis cluster node {shard}"),
                reason: "not in the slot map".into(),
                source: None,
            }),
        }
    }
}

/// Fetches the slot map from the first candidate that answers.
async fn fetch_topology(
    candidates: Vec<ConnectionInfo>,
    limit: Duration,
    medium: &str,
) -> Result<Topology, Error> {
    let mut last = None;
    for info in candidates {
        let host = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => String::new(),
        };
        let attempt = async {
            let client = redis::Client::open(info)
                .map_err(|error| from_redis("open cluster node", medium, error))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|error| from_redis("connect for CLUSTER SLOTS", medium, error))?;
            let reply: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut connection)
                .await
                .map_err(|error| from_redis("CLUSTER SLOTS", medium, error))?;
            Topology::from_cluster_slots(&reply, &host).map_err(|reason| Error::Backend {
                context: format!("CLUSTER SLOTS on {medium}"),
                retryable: true,
                source: Box::new(crate::error::Message(reason)),
            })
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(topology)) => return Ok(topology),
            Ok(Err(error)) => last = Some(error),
            Err(_) => last = Some(timeout(format!("CLUSTER SLOTS on {medium}"), limit)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Unavailable {
        medium: medium.to_owned(),
        reason: "no cluster node to ask for the slot map".into(),
        source: None,
    }))
}

/// The connection settings of a seed with another address.
fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}
