//! Helpers shared by the Redis integration tests: a throwaway server, adapters
//! with short timeouts, and waits by condition with deadlines.
#![allow(dead_code)]

pub mod history;

use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, EventStream, RoomAdapter};
use rooms_adapter::{Envelope, NodeId, RoomName};
use rooms_adapter_redis::redis;
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder};
use rooms_testkit::redis::fast_builder;
use rooms_testkit::redis_server::RedisServer;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub async fn server() -> RedisServer {
    RedisServer::start().await.expect("redis-server starts")
}

/// A connected adapter built from the harness settings, adjusted by `configure`.
pub async fn connected(
    url: &str,
    node: &str,
    configure: impl FnOnce(RedisAdapterBuilder) -> RedisAdapterBuilder,
) -> (RedisAdapter, EventStream) {
    connect_with(configure(fast_builder(url)), node, 65_536).await
}

/// An adapter built from `builder` (any topology), connected as `node` and
/// delivering into a sink that holds at most `capacity` events.
pub async fn connect_with(
    builder: RedisAdapterBuilder,
    node: &str,
    capacity: usize,
) -> (RedisAdapter, EventStream) {
    connect_adapter(builder.build().expect("valid config"), node, capacity).await
}

/// `adapter` (built by a harness of any topology, or a builder) connected as
/// `node`, delivering into a sink that holds at most `capacity` events.
pub async fn connect_adapter(
    adapter: RedisAdapter,
    node: &str,
    capacity: usize,
) -> (RedisAdapter, EventStream) {
    let (sink, events) = EventSink::bounded(capacity);
    adapter
        .connect(NodeId::from(node), sink)
        .await
        .expect("adapter connects");
    (adapter, events)
}

/// The next `Message` event (skipping lifecycle events), within the deadline.
pub async fn next_message(events: &mut EventStream) -> (RoomName, Envelope) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Message { room, envelope })) => return (room, envelope),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no message within {DEADLINE:?}"),
        }
    }
}

/// The next `Reconnected` event (skipping messages), within `limit`.
pub async fn next_reconnected(
    events: &mut EventStream,
    limit: Duration,
) -> (Vec<RoomName>, Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Reconnected { rooms, outage })) => return (rooms, outage),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no Reconnected within {limit:?}"),
        }
    }
}

/// A plain connection to the server, as a foreign publisher or an operator.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// `PUBLISH channel payload`, returning the number of receivers.
pub async fn publish_raw(url: &str, channel: &str, payload: &[u8]) -> u64 {
    let mut connection = raw(url).await;
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut connection)
        .await
        .expect("raw publish")
}

/// How many times Redis ran `command` (from `INFO commandstats`).
pub async fn command_calls(url: &str, command: &str) -> u64 {
    let mut connection = raw(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// `PUBSUB NUMSUB channel`: how many connections subscribe to it.
pub async fn subscribers(url: &str, channel: &str) -> u64 {
    let mut connection = raw(url).await;
    let (_, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut connection)
        .await
        .expect("numsub");
    count
}

/// Connections of type pubsub (`CLIENT LIST TYPE pubsub`).
pub async fn pubsub_clients(url: &str) -> usize {
    let mut connection = raw(url).await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut connection)
        .await
        .expect("client list");
    list.lines().filter(|line| !line.trim().is_empty()).count()
}
