//! The link to real Redis, for every topology: one RESP3 multiplexed
//! connection per shard, its pushes handed to [`Inbound`] in redis-rs's read
//! loop (no channel in between).
//!
//! | topology | shards | where a shard is | commands |
//! |---|---|---|---|
//! | single server | one | the URL or the user's `redis::Client` | `SUBSCRIBE` / `UNSUBSCRIBE` |
//! | Sentinel | one | asked of the sentinels at every connect | `SUBSCRIBE` / `UNSUBSCRIBE` |
//! | Cluster | one per master | `CLUSTER SLOTS` of a seed or a known master | `SSUBSCRIBE` / `SUNSUBSCRIBE` |

use std::sync::Arc;

use async_trait::async_trait;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use rooms_adapter::Error;

use super::link::{Inbound, Link, Push, ShardConnection};
use super::slot::{ShardId, Topology};
use super::table::{Ack, OpKind};
use crate::error::from_redis;

/// Where the shards are.
pub(crate) enum Target {
    /// One server.
    Single(Box<ConnectionInfo>),
    /// The master a Sentinel deployment names now.
    #[cfg(feature = "sentinel")]
    Sentinel(std::sync::Arc<super::sentinel::SentinelTarget>),
    /// A cluster's masters, found from these seeds.
    #[cfg(feature = "cluster")]
    Cluster(super::cluster::ClusterTarget),
}

/// The [`Link`] to real Redis.
pub(crate) struct RedisLink {
    target: Target,
    medium: String,
}

impl RedisLink {
    pub(crate) fn new(target: Target, medium: String) -> Self {
        Self { target, medium }
    }

    /// Whether rooms use sharded pub/sub (`SPUBLISH`): a cluster.
    pub(crate) fn sharded(&self) -> bool {
        #[cfg(feature = "cluster")]
        if matches!(self.target, Target::Cluster(_)) {
            return true;
        }
        false
    }
}

#[async_trait]
impl Link for RedisLink {
    fn medium(&self) -> &str {
        &self.medium
    }

    async fn discover(&self) -> Result<Topology, Error> {
        match &self.target {
            Target::Single(_) => Ok(Topology::single("server")),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(target) => Ok(Topology::single(target.master_name())),
            #[cfg(feature = "cluster")]
            Target::Cluster(target) => target.discover(&self.medium).await,
        }
    }

    async fn connect(
        &self,
        topology: &Topology,
        shard: &ShardId,
        generation: u64,
        inbound: Arc<Inbound>,
    ) -> Result<Arc<dyn ShardConnection>, Error> {
        let _ = topology;
        let info = match &self.target {
            Target::Single(info) => (**info).clone(),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(target) => target.master_info(&self.medium).await?,
            #[cfg(feature = "cluster")]
            Target::Cluster(target) => target.node_info(topology, shard)?,
        };
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let sharded = self.sharded();
        let push_shard = Arc::clone(shard);
        let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
            on_push(&inbound, &push_shard, generation, info);
            Ok(())
        };
        // No redis-rs timeouts (its defaults are 1 s to connect and 500 ms
        // per answer): the loop bounds every call with the adapter's own
        // (connect, subscribe, ping), and a batch of 1,000 channels or a PING
        // behind a backlog of messages may take longer than 500 ms.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None)
            .set_push_sender(push);
        let medium = format!("{} ({shard})", self.medium);
        let client = redis::Client::open(info)
            .map_err(|error| from_redis("open subscriber", &medium, error))?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| from_redis("connect subscriber", &medium, error))?;
        Ok(Arc::new(RedisShard {
            connection,
            sharded,
        }))
    }
}

/// Turns a redis-rs push into a [`Push`] for [`Inbound`].
fn on_push(inbound: &Inbound, shard: &ShardId, generation: u64, info: PushInfo) {
    let push = match info.kind {
        PushKind::Message | PushKind::SMessage => {
            match (bytes(info.data.first()), bytes(info.data.get(1))) {
                (Some(channel), Some(payload)) => Push::Message { channel, payload },
                _ => return,
            }
        }
        PushKind::Unsubscribe | PushKind::SUnsubscribe => match bytes(info.data.first()) {
            Some(channel) => Push::Unsubscribed { channel },
            None => return,
        },
        PushKind::Disconnection => Push::Disconnected,
        _ => return,
    };
    inbound.push(shard, generation, push);
}

fn bytes(value: Option<&Value>) -> Option<&[u8]> {
    match value? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

struct RedisShard {
    connection: MultiplexedConnection,
    sharded: bool,
}

impl RedisShard {
    fn command(&self, kind: OpKind) -> (&'static str, PushKind) {
        match (kind, self.sharded) {
            (OpKind::Subscribe, false) => ("SUBSCRIBE", PushKind::Subscribe),
            (OpKind::Unsubscribe, false) => ("UNSUBSCRIBE", PushKind::Unsubscribe),
            (OpKind::Subscribe, true) => ("SSUBSCRIBE", PushKind::SSubscribe),
            (OpKind::Unsubscribe, true) => ("SUNSUBSCRIBE", PushKind::SUnsubscribe),
        }
    }
}

#[async_trait]
impl ShardConnection for RedisShard {
    async fn batch(&self, kind: OpKind, channels: &[String]) -> Result<Vec<Ack>, String> {
        if !self.sharded {
            // One SUBSCRIBE for the whole batch. Redis checks every channel
            // before subscribing any: on an error, ask channel by channel to
            // learn which ones it refuses.
            let mut connection = self.connection.clone();
            let result = match kind {
                OpKind::Subscribe => connection.subscribe(channels).await,
                OpKind::Unsubscribe => connection.unsubscribe(channels).await,
            };
            match result {
                Ok(()) => return Ok(vec![Ack::Done; channels.len()]),
                Err(error)
                    if error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_unrecoverable_error() =>
                {
                    return Err(format!(
                        "{kind:?} of {} channels failed: {error}",
                        channels.len()
                    ));
                }
                Err(_) => {}
            }
        }
        let (name, confirm) = self.command(kind);
        // One single-channel command per channel: a multi-channel SSUBSCRIBE
        // must stay within one slot (CROSSSLOT), and one answer per channel
        // says exactly which one Redis refused.
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.cmd(name).arg(channel.as_bytes());
        }
        let mut connection = self.connection.clone();
        let values = connection
            .req_packed_commands(&pipe, 0, channels.len())
            .await
            .map_err(|error| format!("{name} of {} channels failed: {error}", channels.len()))?;
        Ok(channels
            .iter()
            .zip(values)
            .map(|(channel, value)| ack(name, &confirm, channel, value))
            .collect())
    }

    async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        match redis::cmd("PING")
            .query_async::<Value>(&mut connection)
            .await
        {
            Ok(Value::SimpleString(pong)) if pong == "PONG" => Ok(()),
            Ok(Value::BulkString(pong)) if pong == b"PONG" => Ok(()),
            Ok(other) => Err(format!("liveness probe answered {other:?}")),
            Err(error) => Err(format!("liveness probe failed: {error}")),
        }
    }
}

fn ack(name: &str, confirm: &PushKind, channel: &str, value: Value) -> Ack {
    match value {
        Value::Push { kind, data }
            if kind == *confirm && bytes(data.first()) == Some(channel.as_bytes()) =>
        {
            Ack::Done
        }
        Value::ServerError(error) => {
            let error = redis::RedisError::from(error);
            match error.code() {
                Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN" | "LOADING" | "MASTERDOWN") => {
                    Ack::Moved
                }
                _ => Ack::Refused(format!("{name} {channel:?} refused: {error}")),
            }
        }
        other => Ack::Unexpected(format!("{name} {channel:?} answered {other:?}")),
    }
}
