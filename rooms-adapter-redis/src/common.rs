//! What [`RedisAdapter`](crate::RedisAdapter) and the cluster adapter share in
//! their [`RoomAdapter`](rooms_adapter::adapter::RoomAdapter) impls: asking the
//! subscriber task within the subscribe timeout, publishing, and stats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rooms_adapter::adapter::{AdapterCounters, AdapterStats, EventSink};
use rooms_adapter::{Envelope, Error, RoomName, wire};
use tokio::sync::{mpsc, oneshot};

use crate::config::RedisConfig;
use crate::driver::PublishItem;
use crate::error::{closed, timeout};
use crate::publisher::Publisher;
use crate::subscriber::Command;

/// Sends the command built around a reply channel to the subscriber task and
/// waits for the reply, all within `limit`. On timeout, the error carries
/// `describe()` ("subscribe to room ...").
pub(crate) async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
    limit: Duration,
    describe: impl FnOnce() -> String,
) -> Result<T, Error> {
    let (reply, answer) = oneshot::channel();
    let work = async {
        commands.send(command(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(timeout(describe(), limit)),
    }
}

/// Encodes `envelope` with the configured codec, checks the size limit,
/// publishes it on `{prefix}{room}` and counts the outcome. `adapter`
/// (`redis`, `redis cluster`) names the adapter in the failure's debug log.
pub(crate) async fn publish(
    config: &RedisConfig,
    publisher: &Publisher,
    counters: &AdapterCounters,
    room: &RoomName,
    envelope: &Envelope,
    adapter: &str,
) -> Result<(), Error> {
    let result = async {
        let payload = envelope.encode(config.codec)?;
        if payload.len() > config.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                room: room.as_str().to_owned(),
                size: payload.len(),
                limit: config.max_payload_bytes,
            });
        }
        let item = PublishItem {
            channel: wire::channel_name(&config.channel_prefix, room.as_str()),
            payload,
        };
        publisher.publish(item, room.as_str()).await
    }
    .await;
    match &result {
        Ok(()) => counters.record_published(),
        Err(error) => {
            counters.record_publish_error();
            tracing::debug!(room = room.as_str(), %error, "{adapter} publish failed");
        }
    }
    result
}

/// The adapter's counters with the current subscription count and the
/// dropped-inbound count of the last connection's sink.
pub(crate) fn stats(
    counters: &AdapterCounters,
    subscriptions: &AtomicU64,
    sink: &Mutex<Option<EventSink>>,
) -> AdapterStats {
    let subscriptions = subscriptions.load(Ordering::Relaxed);
    let sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
    counters.snapshot(
        usize::try_from(subscriptions).unwrap_or(usize::MAX),
        sink.as_ref(),
    )
}
