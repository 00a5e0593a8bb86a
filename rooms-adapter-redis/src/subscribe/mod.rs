//! Subscribing: one [`Table`](table::Table) of rooms and control channels
//! ([`Topic`]s), a [`Link`](link::Link) to the medium's shards, and one loop
//! ([`task`]) between them.
//!
//! The same rules serve a single server, Sentinel and Cluster; only the link
//! differs (see [`redis_link`]).

#[cfg(feature = "cluster")]
mod cluster;
pub(crate) mod link;
pub(crate) mod redis_link;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
mod slot;
#[cfg(test)]
mod stub;
mod table;
mod task;
mod topic;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rooms_adapter::Error;
use rooms_adapter::adapter::{AdapterCounters, EventSink};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[cfg(feature = "cluster")]
pub(crate) use self::cluster::ClusterTarget;
use self::link::{Inbound, Link};
pub(crate) use self::slot::SlotMap;
pub use self::slot::{SLOT_COUNT, key_slot};
use self::table::{Settings, Table};
use self::task::Task;
pub(crate) use self::topic::Topic;
use crate::config::RedisConfig;
use crate::error::timeout;

/// Capacity of the queue of subscribe/unsubscribe requests to the loop.
const COMMAND_QUEUE: usize = 16_384;

/// A request from the adapter to the subscriber loop.
pub(crate) enum Command {
    /// Want `topic`; reply once Redis acknowledged it.
    Subscribe {
        topic: Topic,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Stop wanting `topic`; reply once its messages are no longer delivered.
    Unsubscribe {
        topic: Topic,
        reply: oneshot::Sender<()>,
    },
}

/// What the adapter shares with its subscriber.
pub(crate) struct Shared {
    pub(crate) counters: Arc<AdapterCounters>,
    /// Rooms (not control channels) wanted and acknowledged by Redis now.
    pub(crate) subscriptions: Arc<AtomicU64>,
    /// The topology, for a publish driver that routes by slot.
    pub(crate) slots: Arc<SlotMap>,
}

/// Discovers the topology and opens the first connection (a single server's
/// or Sentinel master's; a cluster's shards connect on demand), each within
/// the connect timeout, then starts the loop.
pub(crate) async fn start(
    config: &RedisConfig,
    link: Arc<dyn Link>,
    shared: &Shared,
    sink: EventSink,
    shutdown: watch::Receiver<bool>,
) -> Result<(mpsc::Sender<Command>, JoinHandle<()>), Error> {
    let (notices_tx, notices) = mpsc::unbounded_channel();
    let inbound = Arc::new(Inbound::new(
        config.channel_prefix.clone(),
        config.max_payload_bytes,
        Arc::clone(&shared.counters),
        sink,
        notices_tx,
    ));
    let settings = Settings {
        prefix: config.channel_prefix.clone(),
        unsubscribe_delay: config.unsubscribe_delay,
        subscribe_timeout: config.subscribe_timeout,
        batch: config.subscribe_batch,
        backoff: config.backoff,
        ping_interval: config.ping_interval,
    };
    let limit = config.connect_timeout;
    let now = Instant::now();
    let mut table = Table::new(settings, now);
    let topology = match tokio::time::timeout(limit, link.discover()).await {
        Ok(result) => result?,
        Err(_) => return Err(timeout(format!("discover {}", link.medium()), limit)),
    };
    shared.slots.set(Arc::new(topology.clone()));
    table.discovered(Some(topology.clone()), now);
    let mut first = None;
    let mut masters = topology.masters();
    if let (Some((id, _, _)), None) = (masters.next(), masters.next())
        && let Some(generation) = table.begin_connect(id)
    {
        let connect = link.connect(&topology, id, generation, Arc::clone(&inbound));
        let connection = match tokio::time::timeout(limit, connect).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(timeout(
                    format!("connect subscriber to {}", link.medium()),
                    limit,
                ));
            }
        };
        table.connected(id, generation, true, now);
        first = Some((Arc::clone(id), (generation, connection)));
    }
    let mut task = Task::new(
        config.clone(),
        link,
        inbound,
        table,
        Arc::clone(&shared.counters),
        Arc::clone(&shared.subscriptions),
        Arc::clone(&shared.slots),
    );
    task.connections.extend(first);
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = tokio::spawn(task.run(commands_rx, notices, shutdown));
    Ok((commands, handle))
}

/// Subscribes every one of `topics` through the loop's queue (so the loop
/// keeps them, re-subscribing them after reconnects and slot moves) and
/// returns once Redis acknowledged them all, or fails after `limit`.
pub(crate) async fn subscribe_all(
    commands: &mpsc::Sender<Command>,
    topics: impl IntoIterator<Item = Topic>,
    limit: std::time::Duration,
) -> Result<(), Error> {
    let mut answers = Vec::new();
    for topic in topics {
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Subscribe { topic, reply })
            .await
            .map_err(|_| crate::error::closed())?;
        answers.push(answer);
    }
    let count = answers.len();
    let all = async {
        for answer in answers {
            answer.await.map_err(|_| crate::error::closed())??;
        }
        Ok(())
    };
    match tokio::time::timeout(limit, all).await {
        Ok(result) => result,
        Err(_) => Err(timeout(format!("subscribe to {count} channels"), limit)),
    }
}
