//! The receive path alone, in one process on one core: pre-recorded payloads
//! go through [`wire::decode`] into a [`Rooms`] engine's remote-dispatch path
//! (through the [`EventSink`] a medium would use) and on to one local member,
//! whose queue a task drains. Measured from the first decode to the last
//! receipt by the member.
//!
//! The baseline is what a hand-rolled receiver would do at the least: decode
//! each payload into a generic `serde_json::Value` and hand it over one bounded
//! channel to a draining task.
//!
//! Both run on a current-thread runtime with a window of messages in flight, so
//! the producer never overruns the queues (nothing is dropped).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter, SinkOutcome};
use rooms_adapter::wire::{self, Codec, DEFAULT_MAX_PAYLOAD_BYTES};
use rooms_adapter::{ConnectOptions, Envelope, Error, NodeId, RoomName, Rooms};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::common::{ROOM, bench_message, now_ns, rate};

/// Distinct payloads recorded, cycled through for longer runs.
const RECORDED: u64 = 65_536;

/// A medium that only keeps the [`EventSink`] the engine hands it, so a
/// benchmark can push inbound events as a real medium's receive loop would.
#[derive(Debug, Default)]
pub struct CaptureAdapter {
    sink: Mutex<Option<EventSink>>,
}

impl CaptureAdapter {
    /// The sink the engine connected with, once it did.
    pub fn sink(&self) -> Option<EventSink> {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl RoomAdapter for CaptureAdapter {
    fn name(&self) -> &str {
        "capture"
    }

    async fn connect(&self, _node: NodeId, sink: EventSink) -> Result<(), Error> {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), Error> {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(())
    }

    async fn subscribe(&self, _room: &RoomName) -> Result<(), Error> {
        Ok(())
    }

    async fn unsubscribe(&self, _room: &RoomName) -> Result<(), Error> {
        Ok(())
    }

    async fn publish(&self, _room: &RoomName, _envelope: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}

/// Payloads as another node would have published them.
pub fn recorded_payloads(codec: Codec, count: u64) -> Result<Vec<Bytes>> {
    let node = NodeId::from("7f0e4c2a-1b3d-4e5f-8a9b-0c1d2e3f4a5b");
    let base = now_ns();
    (0..count.min(RECORDED))
        .map(|seq| {
            Envelope::new(node.clone(), bench_message(seq, base + seq))
                .encode(codec)
                .context("recording a payload")
        })
        .collect()
}

/// Counts receipts and wakes the producer when the last one arrives.
#[derive(Debug, Default)]
struct Progress {
    received: AtomicU64,
    finished: Notify,
}

/// The engine path: decode, hand to the engine, dispatch, deliver, drain.
pub async fn engine(codec: Codec, count: u64, window: u64) -> Result<Value> {
    let payloads = recorded_payloads(codec, count)?;
    let adapter = Arc::new(CaptureAdapter::default());
    let rooms = Rooms::builder(adapter.clone())
        .node_id("receive-path-node")
        .connection_queue_capacity(usize::try_from(window * 2).context("window")?)
        .build()
        .await?;
    let sink = adapter
        .sink()
        .context("the engine did not connect the adapter")?;
    let mut connection = rooms.connect(ConnectOptions::new()).await?;
    rooms.join(connection.id(), ROOM).await?;
    let room = RoomName::from(ROOM);

    let progress = Arc::new(Progress::default());
    let drained = Arc::clone(&progress);
    let drain = tokio::spawn(async move {
        let mut bytes = 0usize;
        while let Some(delivery) = connection.recv().await {
            bytes += delivery.sse_frame().len();
            let received = drained.received.fetch_add(1, Ordering::Relaxed) + 1;
            if received == count {
                drained.finished.notify_one();
                break;
            }
        }
        bytes
    });

    let mut dropped = 0u64;
    let started = Instant::now();
    for (seq, payload) in (0..count).zip(payloads.iter().cycle()) {
        while seq - progress.received.load(Ordering::Relaxed) >= window {
            tokio::task::yield_now().await;
        }
        let envelope = wire::decode(payload, DEFAULT_MAX_PAYLOAD_BYTES)
            .map_err(|e| anyhow::anyhow!("recorded payload does not decode: {e}"))?;
        let event = AdapterEvent::Message {
            room: room.clone(),
            envelope,
        };
        match sink.send(event) {
            SinkOutcome::Queued => {}
            SinkOutcome::DroppedFull => dropped += 1,
            SinkOutcome::Closed => bail!("the engine stopped"),
        }
    }
    if dropped == 0 {
        progress.finished.notified().await;
    }
    let elapsed = started.elapsed();
    let frame_bytes = if dropped == 0 {
        drain.await.context("drain task")?
    } else {
        drain.abort();
        0
    };
    let stats = rooms.stats();
    rooms.shutdown().await;
    Ok(json!({
        "side": "engine",
        "codec": codec.name(),
        "messages": count,
        "delivered": progress.received.load(Ordering::Relaxed),
        "dropped": dropped + stats.inbound_dropped + stats.lagging_drops + stats.lagging_disconnects,
        "frames_encoded": stats.frames_encoded,
        "frame_bytes": frame_bytes,
        "elapsed_s": elapsed.as_secs_f64(),
        "msgs_per_s": rate(count, elapsed),
    }))
}

/// The baseline: decode to a generic value, one channel hop, drain.
pub async fn naive(codec: Codec, count: u64, window: u64) -> Result<Value> {
    let payloads = recorded_payloads(codec, count)?;
    let (sender, mut receiver) = mpsc::channel::<Value>(usize::try_from(window * 2)?);
    let progress = Arc::new(Progress::default());
    let drained = Arc::clone(&progress);
    let drain = tokio::spawn(async move {
        while let Some(value) = receiver.recv().await {
            black_box(&value);
            let received = drained.received.fetch_add(1, Ordering::Relaxed) + 1;
            if received == count {
                drained.finished.notify_one();
                break;
            }
        }
    });
    let started = Instant::now();
    for (seq, payload) in (0..count).zip(payloads.iter().cycle()) {
        while seq - progress.received.load(Ordering::Relaxed) >= window {
            tokio::task::yield_now().await;
        }
        let value: Value = match codec {
            Codec::MessagePack => {
                rmp_serde::from_slice(payload).context("recorded payload does not decode")?
            }
            _ => serde_json::from_slice(payload).context("recorded payload does not decode")?,
        };
        sender
            .try_send(value)
            .map_err(|_| anyhow::anyhow!("naive queue overflowed"))?;
    }
    progress.finished.notified().await;
    let elapsed = started.elapsed();
    drain.await.context("drain task")?;
    Ok(json!({
        "side": "naive",
        "codec": codec.name(),
        "messages": count,
        "delivered": progress.received.load(Ordering::Relaxed),
        "dropped": 0,
        "elapsed_s": elapsed.as_secs_f64(),
        "msgs_per_s": rate(count, elapsed),
    }))
}

/// `wire::decode` alone, for reference.
pub fn decode_only(codec: Codec, count: u64) -> Result<Value> {
    let payloads = recorded_payloads(codec, count)?;
    let started = Instant::now();
    for payload in payloads.iter().cycle().take(usize::try_from(count)?) {
        let envelope = wire::decode(payload, DEFAULT_MAX_PAYLOAD_BYTES)
            .map_err(|e| anyhow::anyhow!("recorded payload does not decode: {e}"))?;
        black_box(envelope);
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "side": "decode_only",
        "codec": codec.name(),
        "messages": count,
        "elapsed_s": elapsed.as_secs_f64(),
        "msgs_per_s": rate(count, elapsed),
    }))
}
