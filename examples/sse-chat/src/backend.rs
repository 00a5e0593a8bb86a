//! Choosing and building the medium: memory (one node) or Redis (many).

use std::sync::Arc;

use rooms_adapter::{RoomAdapter, Rooms};
use rooms_adapter_memory::MemoryAdapter;

use crate::config::Args;

/// Builds the rooms engine on the backend the arguments ask for.
pub async fn build(args: &Args) -> Result<Rooms, String> {
    let adapter: Arc<dyn RoomAdapter> = match &args.redis_url {
        None => Arc::new(MemoryAdapter::new()),
        Some(url) => redis_adapter(url).await?,
    };
    let mut builder = Rooms::builder(adapter);
    if let Some(node) = &args.node_id {
        builder = builder.node_id(node.as_str());
    }
    builder
        .build()
        .await
        .map_err(|error| match &args.redis_url {
            Some(url) => format!("cannot connect to Redis at {}: {error}", redacted(url)),
            None => format!("cannot start the rooms engine: {error}"),
        })
}

/// The URL with its passwords masked, for messages.
#[cfg(feature = "redis")]
fn redacted(url: &str) -> String {
    rooms_adapter_redis::redact_url(url)
}

/// Without the Redis backend a URL is never used, so it is never shown.
#[cfg(not(feature = "redis"))]
fn redacted(_url: &str) -> String {
    "<the Redis URL>".to_owned()
}

#[cfg(not(feature = "redis"))]
async fn redis_adapter(_url: &str) -> Result<Arc<dyn RoomAdapter>, String> {
    Err(
        "--redis-url (or REDIS_URL) needs the Redis backend, which this build does not have; \
         rebuild with: cargo run -p sse-chat --features redis -- --redis-url <url>"
            .to_owned(),
    )
}

#[cfg(feature = "redis")]
async fn redis_adapter(url: &str) -> Result<Arc<dyn RoomAdapter>, String> {
    use rooms_adapter_redis::redis;

    let shown = redacted(url);
    let client =
        redis::Client::open(url).map_err(|error| format!("invalid Redis URL {shown}: {error}"))?;
    let address = client.get_connection_info().addr().to_string();
    // Probe first, so an unreachable Redis is a start-up error that names the
    // address, whatever the adapter's own reconnect policy does later.
    let probe = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    match tokio::time::timeout(REDIS_PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            return Err(format!(
                "cannot connect to Redis at {address} ({shown}): {error}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to Redis at {address} ({shown}): no answer within {REDIS_PROBE_TIMEOUT:?}"
            ));
        }
    }
    let adapter = rooms_adapter_redis::RedisAdapter::builder(url)
        .build()
        .map_err(|error| format!("cannot configure the Redis adapter for {shown}: {error}"))?;
    Ok(Arc::new(adapter))
}

/// How long the start-up check of Redis may take.
#[cfg(feature = "redis")]
const REDIS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
