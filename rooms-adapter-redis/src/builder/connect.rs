//! What a builder connects to (a topology, a publish driver), and building the
//! adapter for each topology.

use std::fmt;
use std::sync::Arc;
#[cfg(feature = "cluster")]
use std::time::Duration;

use rooms_adapter::Error;

use crate::adapter::{DriverPlan, RedisAdapter};
#[cfg(any(feature = "sentinel", feature = "cluster"))]
use crate::config::url::parse_url;
use crate::config::url::redact_url;
use crate::config::{MAX_POOL_SIZE, RedisConfig};
use crate::publish::PublishDriver;
use crate::subscribe::redis_link::Target;

/// Which Redis deployment the adapter talks to.
#[derive(Clone)]
pub(super) enum Topology {
    Url(String),
    Client(redis::Client),
    #[cfg(feature = "sentinel")]
    Sentinel {
        urls: Vec<String>,
        master: String,
    },
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(any(feature = "sentinel", feature = "cluster"))]
        let masked = |urls: &[String]| urls.iter().map(|url| redact_url(url)).collect::<Vec<_>>();
        match self {
            Topology::Url(url) => f.debug_tuple("Single").field(&redact_url(url)).finish(),
            Topology::Client(client) => f
                .debug_tuple("Client")
                .field(&client.get_connection_info().addr().to_string())
                .finish(),
            #[cfg(feature = "sentinel")]
            Topology::Sentinel { urls, master } => f
                .debug_struct("Sentinel")
                .field("sentinels", &masked(urls))
                .field("master", master)
                .finish(),
            #[cfg(feature = "cluster")]
            Topology::Cluster(urls) => f.debug_tuple("Cluster").field(&masked(urls)).finish(),
        }
    }
}

/// The publish driver asked for.
#[derive(Clone)]
pub(super) enum DriverChoice {
    Default,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "deadpool")]
    Deadpool {
        pool_size: usize,
    },
    #[cfg(feature = "bb8")]
    Bb8 {
        pool_size: usize,
    },
    Custom(Arc<dyn PublishDriver>),
}

impl fmt::Debug for DriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverChoice::Default => f.write_str("Default"),
            #[cfg(feature = "redis")]
            DriverChoice::Redis => f.write_str("Redis"),
            #[cfg(feature = "deadpool")]
            DriverChoice::Deadpool { pool_size } => write!(f, "Deadpool({pool_size})"),
            #[cfg(feature = "bb8")]
            DriverChoice::Bb8 { pool_size } => write!(f, "Bb8({pool_size})"),
            DriverChoice::Custom(driver) => write!(f, "Custom({})", driver.name()),
        }
    }
}

impl DriverChoice {
    #[allow(unreachable_code)]
    pub(super) fn validate(&self) -> Result<(), Error> {
        let (name, size): (&str, usize) = match self {
            #[cfg(feature = "deadpool")]
            DriverChoice::Deadpool { pool_size } => ("deadpool_driver", *pool_size),
            #[cfg(feature = "bb8")]
            DriverChoice::Bb8 { pool_size } => ("bb8_driver", *pool_size),
            _ => return Ok(()),
        };
        if size == 0 || size > MAX_POOL_SIZE {
            return Err(Error::Config(format!(
                "{name} pool_size must be between 1 and {MAX_POOL_SIZE}, got {size}"
            )));
        }
        Ok(())
    }

    /// The driver for a topology that only the built-in driver can follow.
    #[cfg(any(feature = "sentinel", feature = "cluster"))]
    pub(super) fn built_in_only(
        self,
        topology: &str,
        built_in: DriverPlan,
    ) -> Result<DriverPlan, Error> {
        match self {
            DriverChoice::Custom(driver) => Ok(DriverPlan::Custom(driver)),
            DriverChoice::Default => Ok(built_in),
            #[cfg(feature = "redis")]
            DriverChoice::Redis => Ok(built_in),
            #[allow(unreachable_patterns)]
            other => Err(Error::Config(format!(
                "the {other:?} publish driver cannot follow a redis {topology}: \
                 use the built-in driver (the default) or your own with `.driver(..)`"
            ))),
        }
    }
}

pub(super) fn single(
    client: redis::Client,
    driver: DriverChoice,
    config: RedisConfig,
) -> Result<RedisAdapter, Error> {
    let medium = crate::publish::medium_of(&client);
    let plan = match driver {
        DriverChoice::Custom(driver) => DriverPlan::Custom(driver),
        #[cfg(feature = "redis")]
        DriverChoice::Redis | DriverChoice::Default => DriverPlan::Manager(client.clone()),
        #[cfg(feature = "deadpool")]
        DriverChoice::Deadpool { pool_size } => DriverPlan::Deadpool(client.clone(), pool_size),
        #[cfg(all(feature = "deadpool", not(feature = "redis")))]
        DriverChoice::Default => {
            DriverPlan::Deadpool(client.clone(), crate::config::DEFAULT_POOL_SIZE)
        }
        #[cfg(feature = "bb8")]
        DriverChoice::Bb8 { pool_size } => DriverPlan::Bb8(client.clone(), pool_size),
        #[cfg(all(feature = "bb8", not(feature = "redis"), not(feature = "deadpool")))]
        DriverChoice::Default => DriverPlan::Bb8(client.clone(), crate::config::DEFAULT_POOL_SIZE),
        #[cfg(not(any(feature = "redis", feature = "deadpool", feature = "bb8")))]
        DriverChoice::Default => {
            return Err(Error::Config(
                "no publish driver: enable a feature of rooms-adapter-redis \
                 (`redis`, `deadpool` or `bb8`) or pass one with `.driver(..)`"
                    .into(),
            ));
        }
    };
    let target = Target::Single(Box::new(client.get_connection_info().clone()));
    Ok(RedisAdapter::new("redis", medium, config, target, plan))
}

/// Every URL parsed, or an error naming the bad one.
#[cfg(any(feature = "sentinel", feature = "cluster"))]
pub(super) fn connection_infos(
    urls: &[String],
    what: &str,
) -> Result<Vec<redis::ConnectionInfo>, Error> {
    if urls.is_empty() {
        return Err(Error::Config(format!(
            "a redis {what} needs at least one URL"
        )));
    }
    urls.iter()
        .map(|url| Ok(parse_url(url)?.get_connection_info().clone()))
        .collect()
}

#[cfg(any(feature = "sentinel", feature = "cluster"))]
pub(super) fn addresses(infos: &[redis::ConnectionInfo]) -> String {
    infos
        .iter()
        .map(|info| info.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(feature = "sentinel")]
pub(super) fn sentinel(
    urls: &[String],
    master: String,
    driver: DriverChoice,
    config: RedisConfig,
) -> Result<RedisAdapter, Error> {
    use redis::sentinel::SentinelNodeConnectionInfo;

    use crate::subscribe::sentinel::{SentinelTarget, sentinels};

    let infos = connection_infos(urls, "sentinel deployment")?;
    if master.is_empty() {
        return Err(Error::Config(
            "a redis sentinel deployment needs the master's name, got \"\"".into(),
        ));
    }
    // The master's credentials and database: those of the first sentinel URL.
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(infos[0].redis_settings().clone());
    let medium = format!("redis sentinel master {master:?} via {}", addresses(&infos));
    let target = Arc::new(SentinelTarget::new(sentinels(&infos)?, master, node));
    let plan = driver.built_in_only(
        "sentinel deployment",
        DriverPlan::Sentinel(Arc::clone(&target)),
    )?;
    Ok(RedisAdapter::new(
        "redis-sentinel",
        medium,
        config,
        Target::Sentinel(target),
        plan,
    ))
}

#[cfg(feature = "cluster")]
pub(super) fn cluster(
    urls: &[String],
    driver: DriverChoice,
    config: RedisConfig,
) -> Result<RedisAdapter, Error> {
    use redis::cluster::ClusterClientBuilder;

    let seeds = connection_infos(urls, "cluster")?;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut client = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.publish_timeout)
        .retries(config.cluster_publish_retries)
        .min_retry_wait(millis(config.backoff.min()))
        .max_retry_wait(millis(config.backoff.max()));
    let redis = seeds[0].redis_settings();
    if let Some(username) = redis.username() {
        client = client.username(username);
    }
    if let Some(password) = redis.password() {
        client = client.password(password);
    }
    let client = client
        .build()
        .map_err(|error| Error::Config(format!("invalid redis cluster settings: {error}")))?;
    let medium = format!("redis cluster at {}", addresses(&seeds));
    let plan = driver.built_in_only("cluster", DriverPlan::Cluster(Box::new(client)))?;
    let target = Target::Cluster(crate::subscribe::ClusterTarget::new(
        seeds,
        config.connect_timeout,
    ));
    Ok(RedisAdapter::new(
        "redis-cluster",
        medium,
        config,
        target,
        plan,
    ))
}
