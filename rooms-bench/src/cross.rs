//! Cross-node throughput and latency: one publisher process and one receiver
//! process through one Redis, or one NATS server (a `nats://` URL: the raw
//! side is then plain async-nats, the engine side runs over `NatsAdapter`),
//! or PostgreSQL (a `postgres://` URL: raw tokio-postgres LISTEN/NOTIFY, see
//! [`pg`](crate::pg), against `PostgresAdapter`).
//!
//! Two implementations of each side carry the same bytes:
//! - *raw*: plain redis-rs, no adapter: `PUBLISH` on one multiplexed
//!   connection, and a plain `SUBSCRIBE` through redis-rs pub/sub whose loop
//!   counts messages (and, for latency, scans the timestamp out of the JSON).
//! - *engine*: a [`Rooms`] engine on each node; the publisher broadcasts, and
//!   the receiver has one connection in the room whose queue this loop drains.
//!
//! Throughput keeps up to `in_flight` publishes outstanding; latency offers a
//! fixed rate, paced by a thread that sleeps to an absolute schedule, and
//! measures one-way latency with the wall clock the two processes share.

use std::borrow::Cow;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use rooms_adapter::wire::Codec;
use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{
    CHANNEL, ROOM, Tally, Watchdog, bench_message, emit, now_ns, rate, raw_payload, ready, scan_u64,
};

/// What a receiver waits for.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveSpec {
    /// Messages expected.
    pub count: u64,
    /// Whether to record one-way latency.
    pub latency: bool,
    /// Messages left out of the latency histogram at the start.
    pub warmup: u64,
    /// How long to wait for the first message.
    pub start_timeout: Duration,
    /// How long to wait for the next message before reporting the rest lost.
    pub idle_timeout: Duration,
    /// Whether a raw receiver decodes each envelope (a real receiver must;
    /// DESIGN section 7) or only counts it (a stricter reference).
    pub raw_decode: bool,
}

/// How a publisher offers its load.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// `count` messages as fast as possible, at most `in_flight` outstanding.
    Burst {
        /// Messages to send.
        count: u64,
        /// Publishes outstanding at once.
        in_flight: usize,
    },
    /// `count` messages at `rate` per second, each stamped with its send time.
    Paced {
        /// Messages to send.
        count: u64,
        /// Messages per second.
        rate: u64,
    },
}

impl Load {
    fn count(self) -> u64 {
        match self {
            Load::Burst { count, .. } | Load::Paced { count, .. } => count,
        }
    }
}

/// Whether `url` names a NATS server (else Redis).
pub fn is_nats(url: &str) -> bool {
    url.starts_with("nats://")
}

/// The subject the NATS adapter uses for the benchmark room.
fn nats_subject() -> String {
    rooms_adapter_nats::subject::room_subject(rooms_adapter_nats::DEFAULT_SUBJECT_PREFIX, ROOM)
}

/// Raw async-nats receiver: plain subscription on the room's subject, count
/// every message. The client buffers as many messages per subscription as
/// the adapter's default (65,536).
async fn receive_raw_nats(url: &str, spec: ReceiveSpec) -> Result<Value> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting the raw NATS subscriber to {url}"))?;
    let messages = client.subscribe(nats_subject()).await.context("SUB")?;
    // A round trip, so the subscription is in place before READY.
    let probe = client.new_inbox();
    let mut probe_sub = client.subscribe(probe.clone()).await.context("SUB probe")?;
    client
        .publish(probe, bytes::Bytes::from_static(b"probe"))
        .await
        .context("PUB probe")?;
    tokio::time::timeout(Duration::from_secs(10), probe_sub.next())
        .await
        .context("the probe did not come back")?;

    count_raw(messages, spec, |message| {
        Cow::Borrowed(&message.payload[..])
    })
    .await
}

/// Raw async-nats publisher: `publish` on one client.
async fn publish_raw_nats(url: &str, codec: Codec, load: Load) -> Result<Value> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting the raw NATS publisher to {url}"))?;
    let subject = nats_subject();
    let result = drive(load, "raw", |seq, ts| {
        let client = client.clone();
        let subject = subject.clone();
        let payload = raw_payload(seq, ts, codec);
        async move {
            let payload = payload.map_err(|e| e.to_string())?;
            client
                .publish(subject, payload)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    client
        .flush()
        .await
        .context("flushing the raw NATS publisher")?;
    result
}

/// Raw receiver: plain redis-rs `SUBSCRIBE` (or async-nats for a `nats://`
/// URL), count every message.
pub async fn receive_raw(url: &str, spec: ReceiveSpec) -> Result<Value> {
    if crate::pg::is_postgres(url) {
        return crate::pg::receive_raw(url, spec).await;
    }
    if is_nats(url) {
        return receive_raw_nats(url, spec).await;
    }
    let client = redis::Client::open(url).with_context(|| format!("bad redis url {url}"))?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("connecting the raw subscriber")?;
    pubsub.subscribe(CHANNEL).await.context("SUBSCRIBE")?;
    let messages = pubsub.into_on_message();

    count_raw(messages, spec, |message| {
        Cow::Borrowed(message.get_payload_bytes())
    })
    .await
}

/// The raw receivers' loop: prints READY, then takes every message of
/// `messages` as a hand-rolled receiver would (DESIGN section 7): a serde
/// decode of the v1 envelope into its own types, the benchmark tick read
/// typed out of `data` (as the engine side reads it), until `spec.count` have
/// come, the stream ends or the watchdog gives up. With `spec.raw_decode`
/// off it only counts (scanning the send time out of JSON text for latency):
/// a stricter reference than any real receiver.
pub(crate) async fn count_raw<S, F>(mut messages: S, spec: ReceiveSpec, payload: F) -> Result<Value>
where
    S: Stream + Unpin,
    F: for<'a> Fn(&'a S::Item) -> Cow<'a, [u8]>,
{
    let mut tally = Tally::new(spec.count, spec.latency, spec.warmup)?;
    let watchdog = Watchdog::spawn(tally.progress(), spec.start_timeout, spec.idle_timeout);
    let mut undecodable = 0_u64;
    ready();
    loop {
        tokio::select! {
            biased;
            message = messages.next() => {
                let Some(message) = message else { break };
                let bytes = payload(&message);
                let (seq, sent) = if spec.raw_decode {
                    match RawEnvelope::decode(&bytes) {
                        Some(envelope) => {
                            let tick = envelope.message.data;
                            (Some(tick.seq), Some(tick.ts))
                        }
                        None => {
                            undecodable += 1;
                            (None, None)
                        }
                    }
                } else {
                    (None, scan_u64(&bytes, b"\"ts\":"))
                };
                let sent = if tally.wants_latency() { sent } else { None };
                tally.record(seq, sent);
                if tally.done() {
                    break;
                }
            }
            () = watchdog.stopped() => break,
        }
    }
    let side = if spec.raw_decode {
        "raw"
    } else {
        "raw-count-only"
    };
    Ok(tally.finish(side, json!({ "undecodable": undecodable })))
}

/// The v1 envelope as a hand-rolled receiver declares it: its own serde
/// types, the message body typed as the benchmark's tick.
#[derive(serde::Deserialize)]
struct RawEnvelope {
    #[serde(rename = "v")]
    _version: u8,
    #[serde(rename = "m")]
    message: RawMessage,
    #[serde(rename = "n")]
    _node: String,
}

/// The `m` object of [`RawEnvelope`].
#[derive(serde::Deserialize)]
struct RawMessage {
    #[serde(default, rename = "event")]
    _event: Option<String>,
    data: Tick,
    #[serde(default, rename = "id")]
    _id: Option<String>,
}

impl RawEnvelope {
    /// JSON text starts with `{`; anything else is read as MessagePack.
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.first() == Some(&b'{') {
            serde_json::from_slice(bytes).ok()
        } else {
            rmp_serde::from_slice(bytes).ok()
        }
    }
}

/// Engine receiver: one connection in the room, its queue drained here.
pub async fn receive_engine(rooms: &Rooms, spec: ReceiveSpec) -> Result<Value> {
    let mut connection = rooms
        .connect(ConnectOptions::new())
        .await
        .context("connecting the receiving connection")?;
    rooms
        .join(connection.id(), ROOM)
        .await
        .context("joining the benchmark room")?;

    let mut tally = Tally::new(spec.count, spec.latency, spec.warmup)?;
    let watchdog = Watchdog::spawn(tally.progress(), spec.start_timeout, spec.idle_timeout);
    let mut ended = false;
    ready();
    loop {
        tokio::select! {
            biased;
            delivery = connection.recv() => {
                let Some(delivery) = delivery else {
                    ended = true;
                    break;
                };
                // Read typed, straight from the JSON text the message carries.
                let tick = delivery.message().data.parse::<Tick>().ok();
                let seq = tick.as_ref().map(|tick| tick.seq);
                let sent = if tally.wants_latency() {
                    tick.map(|tick| tick.ts)
                } else {
                    None
                };
                tally.record(seq, sent);
                if tally.done() {
                    break;
                }
            }
            () = watchdog.stopped() => break,
        }
    }
    let engine = rooms.stats();
    let adapter = rooms.adapter_stats();
    let extra = json!({
        "connection_ended_early": ended,
        "remote_received": engine.remote_received,
        "deliveries": engine.deliveries,
        "frames_encoded": engine.frames_encoded,
        "lagging_disconnects": engine.lagging_disconnects,
        "lagging_drops": engine.lagging_drops,
        "inbound_dropped": engine.inbound_dropped,
        "adapter_received": adapter.received,
        "adapter_decode_errors": adapter.decode_errors_total(),
        "adapter_dropped_inbound": adapter.dropped_inbound,
        "adapter_medium_dropped": adapter.medium_dropped,
    });
    Ok(tally.finish(rooms.adapter_name(), extra))
}

/// Raw publisher: redis-rs `PUBLISH` on one multiplexed connection (or
/// async-nats `publish` for a `nats://` URL).
pub async fn publish_raw(url: &str, codec: Codec, load: Load) -> Result<Value> {
    if crate::pg::is_postgres(url) {
        return crate::pg::publish_raw(url, codec, load).await;
    }
    if is_nats(url) {
        return publish_raw_nats(url, codec, load).await;
    }
    let client = redis::Client::open(url).with_context(|| format!("bad redis url {url}"))?;
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting the raw publisher")?;
    drive(load, "raw", |seq, ts| {
        let mut connection = connection.clone();
        let payload = raw_payload(seq, ts, codec);
        async move {
            let payload = payload.map_err(|e| e.to_string())?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&payload[..])
                .exec_async(&mut connection)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Engine publisher: `broadcast` to the room, which this node has no member of.
pub async fn publish_engine(rooms: &Rooms, load: Load) -> Result<Value> {
    let mut result = drive(load, rooms.adapter_name(), |seq, ts| async move {
        rooms
            .broadcast(ROOM, bench_message(seq, ts), BroadcastOptions::new())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await?;
    let adapter = rooms.adapter_stats();
    result["extra"] = json!({
        "adapter_published": adapter.published,
        "adapter_publish_errors": adapter.publish_errors,
    });
    Ok(result)
}

/// Offers `load` through `send(seq, sent_ns)` and reports what it did.
pub(crate) async fn drive<F, Fut>(load: Load, side: &str, mut send: F) -> Result<Value>
where
    F: FnMut(u64, u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut pending = FuturesUnordered::new();
    let mut errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut settle = |result: Option<Result<(), String>>| {
        if let Some(Err(error)) = result {
            errors += 1;
            first_error.get_or_insert(error);
        }
    };
    let started = Instant::now();
    match load {
        Load::Burst { count, in_flight } => {
            for seq in 0..count {
                while pending.len() >= in_flight.max(1) {
                    settle(pending.next().await);
                }
                pending.push(send(seq, 0));
            }
        }
        Load::Paced { count, rate } => {
            let mut ticks = pacer(count, rate)?;
            loop {
                tokio::select! {
                    biased;
                    result = pending.next(), if !pending.is_empty() => settle(result),
                    tick = ticks.recv() => match tick {
                        Some(seq) => pending.push(send(seq, now_ns())),
                        None => break,
                    },
                }
            }
        }
    }
    while let Some(result) = pending.next().await {
        settle(Some(result));
    }
    let elapsed = started.elapsed();
    Ok(json!({
        "side": side,
        "sent": load.count(),
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed.as_secs_f64(),
        "publish_rate": rate(load.count(), elapsed),
    }))
}

/// A thread that ticks `count` times at `rate` per second, to an absolute
/// schedule (no drift); the channel closes after the last tick.
fn pacer(count: u64, rate: u64) -> Result<mpsc::UnboundedReceiver<u64>> {
    let (ticks, receiver) = mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let started = Instant::now();
            for seq in 0..count {
                let due = started + interval.mul_f64(seq as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if ticks.send(seq).is_err() {
                    return;
                }
            }
        })
        .context("starting the pacer thread")?;
    Ok(receiver)
}

/// Prints a result line for a side's outcome.
pub fn report(result: Result<Value>) -> Result<()> {
    let value = result?;
    emit(&value);
    Ok(())
}

/// The fields of a benchmark message the receiver reads.
#[derive(serde::Deserialize)]
struct Tick {
    seq: u64,
    ts: u64,
}
