//! Choosing and building the medium: memory (one node), Redis (many; one
//! server, a Redis Cluster or a Sentinel deployment), NATS (many; one
//! server or a NATS cluster) or PostgreSQL (many; LISTEN/NOTIFY).

use std::sync::Arc;

use rooms_adapter::{RoomAdapter, Rooms};
use rooms_adapter_memory::MemoryAdapter;

use crate::config::{Args, RedisTopology};

/// Builds the rooms engine on the backend the arguments ask for.
pub async fn build(args: &Args) -> Result<Rooms, String> {
    let timing = args.cluster_timing()?;
    let (adapter, context): (Arc<dyn RoomAdapter>, Option<String>) =
        match (args.nats_urls()?, args.redis_topology()?) {
            _ if args.postgres_url()?.is_some() => {
                let url = args.postgres_url()?.unwrap_or_default();
                let (adapter, context) = postgres_adapter(&url)?;
                (adapter, Some(context))
            }
            (Some(urls), _) => {
                let (adapter, context) = nats_adapter(&urls)?;
                (adapter, Some(context))
            }
            (None, None) => (Arc::new(MemoryAdapter::new()), None),
            (None, Some(topology)) => {
                let (adapter, context) = redis_adapter(&topology).await?;
                (adapter, Some(context))
            }
        };
    let adapter_has_history = adapter.capabilities().history;
    let mut builder = Rooms::builder(adapter)
        .heartbeat_interval(timing.heartbeat_interval)
        .query_timeout(timing.query_timeout);
    if let Some(expiry) = timing.node_expiry {
        builder = builder.node_expiry(expiry);
    }
    if let Some(node) = &args.node_id {
        builder = builder.node_id(node.as_str());
    }
    if let Some(policy) = args.history()? {
        if adapter_has_history {
            builder = builder.history(policy);
        } else {
            tracing::warn!(
                "--history-len is ignored: this backend keeps no history, so clients that \
                 reconnect are told they may have missed messages"
            );
        }
    }
    builder.build().await.map_err(|error| match &context {
        Some(context) => format!("cannot connect to {context}: {error}"),
        None => format!("cannot start the rooms engine: {error}"),
    })
}

#[cfg(not(feature = "redis"))]
async fn redis_adapter(topology: &RedisTopology) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    Err(format!(
        "{} (a Redis {}) needs the Redis backend, which this build does not have; \
         rebuild with: cargo run -p sse-chat --features redis -- ...",
        topology.flag(),
        topology.kind()
    ))
}

/// The adapter for `topology`, and what to call it in a failed connect's
/// message (no secrets; the adapter's errors name the addresses).
///
/// A single server is probed first (a PING), so an unreachable Redis is a
/// start-up error that names the address, whatever the adapter's reconnect
/// policy does later. A cluster or a Sentinel deployment is not probed: the
/// adapter's first connect discovers it (`CLUSTER SLOTS` on the seeds, the
/// master from the sentinels) within its connect timeout, and its error
/// names the deployment's addresses and what failed.
#[cfg(feature = "redis")]
async fn redis_adapter(topology: &RedisTopology) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    use rooms_adapter_redis::{RedisAdapter, redact_url};

    let flag = topology.flag();
    let (adapter, context) = match topology {
        RedisTopology::Single(url) => {
            let shown = redact_url(url);
            probe_single(url, &shown).await?;
            let adapter = RedisAdapter::builder(url.as_str())
                .build()
                .map_err(|error| {
                    format!("cannot configure the Redis adapter for {shown}: {error}")
                })?;
            (adapter, format!("Redis at {shown}"))
        }
        RedisTopology::Cluster(urls) => {
            let adapter = RedisAdapter::cluster(urls.iter().cloned())
                .build()
                .map_err(|error| format!("invalid {flag}: {error}"))?;
            (adapter, "the Redis cluster".to_owned())
        }
        RedisTopology::Sentinel { urls, master } => {
            let adapter = RedisAdapter::sentinel(urls.iter().cloned(), master.as_str())
                .build()
                .map_err(|error| format!("invalid {flag}: {error}"))?;
            (adapter, "the Redis sentinel deployment".to_owned())
        }
    };
    // The medium names addresses only, never credentials.
    tracing::info!(
        topology = topology.kind(),
        medium = adapter.medium(),
        "Redis backend"
    );
    Ok((Arc::new(adapter), context))
}

/// PINGs the server at `url` within [`REDIS_PROBE_TIMEOUT`].
#[cfg(feature = "redis")]
async fn probe_single(url: &str, shown: &str) -> Result<(), String> {
    use rooms_adapter_redis::redis;

    let client =
        redis::Client::open(url).map_err(|error| format!("invalid Redis URL {shown}: {error}"))?;
    let address = client.get_connection_info().addr().to_string();
    let probe = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    match tokio::time::timeout(REDIS_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!(
            "cannot connect to Redis at {address} ({shown}): {error}"
        )),
        Err(_) => Err(format!(
            "cannot connect to Redis at {address} ({shown}): no answer within {REDIS_PROBE_TIMEOUT:?}"
        )),
    }
}

/// How long the start-up check of a single Redis server may take.
#[cfg(feature = "redis")]
const REDIS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(not(feature = "nats"))]
fn nats_adapter(_urls: &[String]) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    Err(
        "--nats-url (or NATS_URL) needs the NATS backend, which this build does not have; \
         rebuild with: cargo run -p sse-chat --features nats -- ..."
            .to_owned(),
    )
}

/// The NATS adapter for `urls` (one server or several of a cluster), and
/// what to call it in a failed connect's message (passwords masked). The
/// engine's first connect reaches the server within the adapter's connect
/// timeout, so an unreachable NATS is a start-up error naming the address.
#[cfg(feature = "nats")]
fn nats_adapter(urls: &[String]) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    use rooms_adapter_nats::NatsAdapter;

    let adapter = NatsAdapter::servers(urls.iter().cloned())
        .client_name("sse-chat")
        .build()
        .map_err(|error| format!("invalid --nats-url (or NATS_URL): {error}"))?;
    let context = adapter.medium().to_owned();
    tracing::info!(medium = adapter.medium(), "NATS backend");
    Ok((Arc::new(adapter), context))
}

#[cfg(not(feature = "postgres"))]
fn postgres_adapter(_url: &str) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    Err(
        "--postgres-url (or DATABASE_URL) needs the PostgreSQL backend, which this build does \
         not have; rebuild with: cargo run -p sse-chat --features postgres -- ..."
            .to_owned(),
    )
}

/// The PostgreSQL adapter for `url`, and what to call it in a failed
/// connect's message (host, port and database; never the password). The
/// engine's first connect opens the pool and the listening connection
/// within the adapter's connect timeout, so an unreachable server is a
/// start-up error naming the address.
#[cfg(feature = "postgres")]
fn postgres_adapter(url: &str) -> Result<(Arc<dyn RoomAdapter>, String), String> {
    use rooms_adapter_postgres::PostgresAdapter;

    let adapter = PostgresAdapter::builder(url)
        .application_name("sse-chat")
        .build()
        .map_err(|error| format!("invalid --postgres-url (or DATABASE_URL): {error}"))?;
    let context = adapter.medium().to_owned();
    tracing::info!(medium = adapter.medium(), "PostgreSQL backend");
    Ok((Arc::new(adapter), context))
}
