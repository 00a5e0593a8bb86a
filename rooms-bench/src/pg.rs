//! PostgreSQL: the raw tokio-postgres sides of the cross-node runs (a
//! `postgres://` URL), and the attachment path's cost.
//!
//! - raw receiver: one connection, `LISTEN` on the room's channel (the
//!   channel the adapter uses), counts notifications;
//! - raw publisher: one connection, `SELECT pg_notify($1, $2)` pipelined
//!   (up to `in_flight` outstanding), `synchronous_commit = off` as the
//!   adapter's pool sets it, the same frame as the adapter (JSON as it is,
//!   MessagePack as `~` + base64).
//! - attachment path: two engines in one process over `PostgresAdapter`; one
//!   message at a time (publish, wait for delivery) and a burst, for a
//!   message of a given size.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use rooms_adapter::wire::Codec;
use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
use rooms_adapter_postgres::channel::room_channel;
use rooms_adapter_postgres::frame::{MAX_NOTIFY_PAYLOAD, inline_text};
use rooms_adapter_postgres::tokio_postgres::{self, AsyncMessage, NoTls};
use rooms_adapter_postgres::{DEFAULT_CHANNEL_PREFIX, PostgresAdapter};
use serde_json::{Value, json};

use crate::common::{ROOM, raw_payload};
use crate::cross::{Load, ReceiveSpec, count_raw, drive};

/// Whether `url` names a PostgreSQL server.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn channel() -> String {
    room_channel(DEFAULT_CHANNEL_PREFIX, ROOM)
}

/// Raw receiver: `LISTEN` on one connection, count every notification.
pub async fn receive_raw(url: &str, spec: ReceiveSpec) -> Result<Value> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting the raw listener to {url}"))?;
    let (notifications, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message
                && notifications.send(notification).is_err()
            {
                return;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel()))
        .await
        .context("LISTEN")?;
    let messages = futures_util::stream::poll_fn(|cx| incoming.poll_recv(cx));
    // A hand-rolled listener unwraps the base64 frame of a binary payload
    // before decoding it, as the adapter does.
    let result = count_raw(
        messages,
        spec,
        |notification| match rooms_adapter_postgres::frame::parse(notification.payload()) {
            Ok(rooms_adapter_postgres::frame::Frame::Inline(bytes)) => bytes,
            _ => Cow::Borrowed(&[]),
        },
    )
    .await;
    drop(client);
    result
}

/// Raw publisher: `pg_notify` pipelined on one connection.
pub async fn publish_raw(url: &str, codec: Codec, load: Load) -> Result<Value> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting the raw publisher to {url}"))?;
    tokio::spawn(connection);
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .context("SET synchronous_commit")?;
    let statement = client
        .prepare("SELECT pg_notify($1, $2)")
        .await
        .context("PREPARE")?;
    let channel = channel();
    let (client, statement, channel) = (&client, &statement, channel.as_str());
    drive(load, "raw", |seq, ts| {
        let payload = raw_payload(seq, ts, codec);
        async move {
            let payload = payload.map_err(|e| e.to_string())?;
            let text = inline_text(&payload, MAX_NOTIFY_PAYLOAD)
                .ok_or_else(|| "the benchmark message does not fit a NOTIFY".to_owned())?;
            client
                .execute(statement, &[&channel, &&*text])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// A `Rooms` engine over `PostgresAdapter`.
pub async fn adapter_node(url: &str, codec: Codec, queue: usize) -> Result<Rooms> {
    let adapter = PostgresAdapter::builder(url)
        .codec(codec)
        .build()
        .context("building the PostgresAdapter")?;
    Rooms::builder(Arc::new(adapter))
        .connection_queue_capacity(queue)
        .build()
        .await
        .context("starting the rooms engine over PostgreSQL")
}

/// The cost of a message of `size` bytes of data: `count` one at a time
/// (publish, then wait for the delivery on the other node) for the latency,
/// then `count` in a burst (64 outstanding) for the rate.
pub async fn attachment_cost(url: &str, size: usize, count: usize) -> Result<Value> {
    let a = adapter_node(url, Codec::Json, 4096).await?;
    let b = adapter_node(url, Codec::Json, 4096).await?;
    // The burst keeps 64 broadcasts of `size` bytes in flight, and the
    // receiving loop shares one task with the publishing one: a queue limit
    // of the default 4 MiB would cut the connection off as lagging when the
    // receiver falls behind, which is not what this row measures.
    let mut rx = b
        .connect(ConnectOptions::new().queue_bytes(256 * 1024 * 1024))
        .await?;
    b.join(rx.id(), ROOM).await?;
    let data = "x".repeat(size);
    let message = SseMessage::new(data).with_event("big");
    let wait = Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        a.broadcast(ROOM, message.clone(), BroadcastOptions::new())
            .await?;
        tokio::time::timeout(wait, rx.recv())
            .await
            .context("no delivery within 10 s")?
            .context("the connection ended")?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let started = Instant::now();
    let publishing = async {
        let mut pending = futures_util::stream::FuturesUnordered::new();
        for _ in 0..count {
            if pending.len() >= 64
                && let Some(result) = pending.next().await
            {
                result?;
            }
            pending.push(a.broadcast(ROOM, message.clone(), BroadcastOptions::new()));
        }
        while let Some(result) = pending.next().await {
            result?;
        }
        Ok::<(), rooms_adapter::Error>(())
    };
    let receiving = async {
        for _ in 0..count {
            tokio::time::timeout(wait, rx.recv())
                .await
                .context("no delivery within 10 s")?
                .context("the connection ended")?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let (published, received) = tokio::join!(publishing, receiving);
    published?;
    received?;
    let elapsed = started.elapsed();
    let stats = b.adapter_stats();
    a.shutdown().await;
    b.shutdown().await;
    Ok(json!({
        "size": size,
        "count": count,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "msgs_per_s": count as f64 / elapsed.as_secs_f64(),
        "decode_errors": stats.decode_errors_total(),
    }))
}
