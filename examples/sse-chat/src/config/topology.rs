//! The Redis deployment the arguments name, shown with its URLs masked.

use std::fmt;

/// The Redis deployment the arguments name. Its URLs may hold passwords: they
/// are only ever shown masked (`rooms_adapter_redis::redact_url`).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`--redis-url`).
    Single(String),
    /// A Redis Cluster reached through these seeds (`--redis-cluster`).
    Cluster(Vec<String>),
    /// The master `master` watched by these sentinels (`--redis-sentinel`,
    /// `--redis-sentinel-master`).
    Sentinel {
        /// The sentinels' URLs.
        urls: Vec<String>,
        /// The name the sentinels monitor the master under.
        master: String,
    },
}

impl RedisTopology {
    /// `single server`, `cluster` or `sentinel`: for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTopology::Single(_) => "single server",
            RedisTopology::Cluster(_) => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }

    /// The flag that named it, for messages.
    pub fn flag(&self) -> &'static str {
        match self {
            RedisTopology::Single(_) => "--redis-url (or REDIS_URL)",
            RedisTopology::Cluster(_) => "--redis-cluster (or REDIS_CLUSTER)",
            RedisTopology::Sentinel { .. } => "--redis-sentinel (or REDIS_SENTINEL)",
        }
    }
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URLs may hold passwords.
        match self {
            RedisTopology::Single(_) => f.write_str("Single(<hidden>)"),
            RedisTopology::Cluster(urls) => write!(f, "Cluster(<{} hidden URLs>)", urls.len()),
            RedisTopology::Sentinel { urls, master } => write!(
                f,
                "Sentinel {{ urls: <{} hidden URLs>, master: {master:?} }}",
                urls.len()
            ),
        }
    }
}
