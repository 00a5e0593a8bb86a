//! Backpressure on the subscriber's read path (real redis-server and a real
//! 3-master cluster).
//!
//! The subscriber decodes every push on redis-rs's read path and hands it to
//! the engine's sink, which never waits: a full sink drops the event and
//! counts it. So a consumer that never reads costs a bounded amount of memory
//! however much is published, and whatever it cannot take shows up as counted
//! drops; what the adapter has not read yet waits in the socket and in Redis,
//! not in this process. And when Redis itself gives up on a slow subscriber
//! (its `client-output-buffer-limit` for pubsub clients), the adapter
//! reconnects, re-subscribes and says so.
//!
//! Memory is this test process's resident set (`VmRSS`, sampled, and
//! `VmHWM`, reset through `/proc/self/clear_refs`; Linux only). The tests of
//! one binary run on threads of one process, so every test here holds
//! [`SERIAL`] for its whole run: one test's allocations never count in
//! another's measurement.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventStream, RoomAdapter};
use rooms_adapter::{RoomName, wire};
use rooms_adapter_redis::RedisAdapter;
use rooms_adapter_redis::redis;
use rooms_adapter_redis::redis::aio::MultiplexedConnection;
use rooms_testkit::poll::eventually;
use rooms_testkit::redis::fast_builder;
use rooms_testkit::redis_server::RedisServer;
use tokio::time::Instant;

use common::*;

/// Held by every test for its whole run (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Size of one flooded payload (a valid envelope).
const PAYLOAD_BYTES: usize = 1024;
/// Messages per flood pipeline.
const BATCH: u64 = 1_000;
/// The stalled consumer's sink.
const CAPACITY: usize = 1_024;
/// How much the resident set may grow while 200 MB go by.
const MAX_GROWTH: u64 = 64 << 20;
/// How long the adapter may take to read a whole flood after its last
/// publish was answered.
const FLOOD_DEADLINE: Duration = Duration::from_secs(120);
/// Redis buffers whatever the subscriber has not read yet, without limit:
/// Redis must not cut the subscriber off in the flood tests, so the count of
/// delivered and dropped messages is exact.
const UNLIMITED_PUBSUB: &str = "pubsub 0 0 0";

fn channel(room: &str) -> String {
    wire::channel_name(wire::DEFAULT_CHANNEL_PREFIX, room)
}

/// A valid envelope of `size` bytes whose data is the string
/// `"<tag>-<seq, 9 digits> xxx...`.
fn payload(tag: &str, seq: u64, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"v":1,"m":{{"data":"{tag}-{seq:09} "#);
    let tail = r#""},"n":"flooder"}"#;
    let mut payload = Vec::with_capacity(size);
    payload.extend_from_slice(head.as_bytes());
    payload.resize(size - tail.len(), b'x');
    payload.extend_from_slice(tail.as_bytes());
    payload
}

/// The sequence number of a message built by [`payload`] with `tag`.
fn seq_of(event: &AdapterEvent, tag: &str) -> Option<u64> {
    let AdapterEvent::Message { envelope, .. } = event else {
        return None;
    };
    let data = envelope.message().data.as_str()?;
    let rest = data.strip_prefix(tag)?.strip_prefix('-')?;
    rest.get(..9)?.parse().ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The peak resident set of this process from [`Meter::start`] on: sampled
/// every 2 ms by a thread of its own (not starved by a busy runtime), and
/// `VmHWM` when the kernel let us reset it.
struct Meter {
    baseline: u64,
    hwm_reset: bool,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

struct Memory {
    baseline: u64,
    peak: u64,
    /// Whether `peak` includes the kernel's own high-water mark.
    hwm_reset: bool,
}

impl Memory {
    fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }
}

impl Meter {
    fn start() -> Self {
        let baseline = status_bytes("VmRSS");
        // "5" resets VmHWM to the current resident set (Linux 4.0+).
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(status_bytes("VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Self {
            baseline,
            hwm_reset,
            peak,
            stop,
            sampler,
        }
    }

    fn finish(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("sampler thread");
        let mut peak = self.peak.load(Ordering::Relaxed).max(status_bytes("VmRSS"));
        if self.hwm_reset {
            peak = peak.max(status_bytes("VmHWM"));
        }
        Memory {
            baseline: self.baseline,
            peak,
            hwm_reset: self.hwm_reset,
        }
    }
}

/// `CONFIG SET client-output-buffer-limit <limit>` on one server.
async fn set_output_limit(connection: &mut MultiplexedConnection, limit: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg(limit)
        .query_async(connection)
        .await
        .expect("CONFIG SET client-output-buffer-limit");
}

/// What Redis holds for pubsub clients that they have not read yet
/// (`omem` of `CLIENT LIST TYPE pubsub`, summed).
async fn pubsub_backlog(connection: &mut MultiplexedConnection) -> u64 {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(connection)
        .await
        .expect("client list");
    list.split_whitespace()
        .filter_map(|field| field.strip_prefix("omem="))
        .filter_map(|omem| omem.parse::<u64>().ok())
        .sum()
}

/// How many pubsub clients (`flags=P`) the server closed for passing their
/// output-buffer limit (its log; `INFO stats` counts such cuts only from
/// Redis 7.2 on).
fn output_limit_cuts(server: &RedisServer) -> usize {
    server
        .log()
        .lines()
        .filter(|line| {
            line.contains(" flags=P ") && line.contains("overcoming of output buffer limits")
        })
        .count()
}

/// Where a flood goes: `command` (`PUBLISH` or `SPUBLISH`) of `messages`
/// payloads on `channel`, through `publisher` (a plain connection to the
/// server that serves the channel).
struct Flood {
    topology: &'static str,
    publisher: MultiplexedConnection,
    command: &'static str,
    channel: String,
    messages: u64,
}

/// Floods a subscribed room whose consumer never reads, and checks that the
/// adapter read everything, kept `CAPACITY` events, dropped and counted the
/// rest, and that this process grew by far less than what went by.
async fn flood_stalled_consumer(adapter: &RedisAdapter, events: &mut EventStream, flood: Flood) {
    let Flood {
        topology,
        mut publisher,
        command,
        channel,
        messages,
    } = flood;
    let flooded_bytes = messages * PAYLOAD_BYTES as u64;
    assert_eq!(adapter.stats().received, 0);
    let meter = Meter::start();

    let started = Instant::now();
    let mut receivers = 0u64;
    let mut seq = 0u64;
    while seq < messages {
        let batch = BATCH.min(messages - seq);
        let mut pipe = redis::pipe();
        for n in seq..seq + batch {
            pipe.cmd(command)
                .arg(channel.as_str())
                .arg(payload("flood", n, PAYLOAD_BYTES));
        }
        let counts: Vec<u64> = pipe
            .query_async(&mut publisher)
            .await
            .expect("flood publish");
        receivers += counts.iter().sum::<u64>();
        seq += batch;
    }
    let published_in = started.elapsed();
    // What the subscriber had not read yet when the last publish returned:
    // held by Redis, not by this process.
    let backlog = pubsub_backlog(&mut publisher).await;

    eventually(
        &format!(
            "{topology}: the adapter to read the whole flood after the last publish \
             ({receivers} of {messages} publishes had a receiver)"
        ),
        FLOOD_DEADLINE,
        || async {
            let stats = adapter.stats();
            if stats.received + stats.decode_errors_total() >= messages {
                Ok(())
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
    .await;
    let read_in = started.elapsed();

    let memory = meter.finish();
    let stats = adapter.stats();
    let queued = events.len();

    println!(
        "{topology}: flooded {messages} x {PAYLOAD_BYTES} B = {:.1} MiB with {command} in \
         {published_in:.2?} ({:.0} msg/s); all read by the adapter after {read_in:.2?}; \
         Redis held {:.1} MiB for the subscriber when the last publish returned",
        mib(flooded_bytes),
        messages as f64 / published_in.as_secs_f64(),
        mib(backlog),
    );
    println!(
        "{topology}: received {} (decoded), queued {queued} (sink capacity {CAPACITY}), \
         dropped {} (received - queued = {}), reconnects {}",
        stats.received,
        stats.dropped_inbound,
        stats.received - queued as u64,
        stats.reconnects,
    );
    println!(
        "{topology}: resident set {:.1} MiB before, peak {:.1} MiB: grew {:.1} MiB \
         while {:.1} MiB went by (VmHWM included: {})",
        mib(memory.baseline),
        mib(memory.peak),
        mib(memory.growth()),
        mib(flooded_bytes),
        memory.hwm_reset,
    );

    // However much went by, this process held on to little of it ...
    assert!(
        memory.growth() < MAX_GROWTH,
        "{topology}: the resident set grew by {:.1} MiB (limit {:.0} MiB) while {:.1} MiB \
         were flooded: something buffers the read path",
        mib(memory.growth()),
        mib(MAX_GROWTH),
        mib(flooded_bytes),
    );
    // ... though Redis delivered every message to the one subscriber (never
    // cut off) ...
    assert_eq!(
        receivers, messages,
        "{topology}: publishes without receiver"
    );
    assert_eq!(stats.reconnects, 0, "{topology}: {stats:?}");
    assert_eq!(stats.decode_errors_total(), 0, "{topology}: {stats:?}");
    // ... and the adapter read and decoded every one: the sink kept its
    // capacity's worth and dropped (and counted) every other one.
    assert_eq!(stats.received, messages, "{topology}: {stats:?}");
    assert_eq!(queued, CAPACITY, "{topology}: queued events");
    assert_eq!(
        stats.dropped_inbound + queued as u64,
        messages,
        "{topology}: queued + dropped != published: {stats:?}"
    );

    // The queued events are the first ones, in order (a full sink drops the
    // newest), and nothing else is queued.
    for expected in 0..CAPACITY as u64 {
        let event = events.try_recv().expect("a queued event");
        assert_eq!(
            seq_of(&event, "flood"),
            Some(expected),
            "{topology}: queued event {expected}: {event:?}"
        );
    }
    assert!(
        events.try_recv().is_err(),
        "{topology}: more than CAPACITY queued"
    );
}

/// A single server: 200,000 messages of 1 KB on a room whose consumer never
/// reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_with_a_stalled_consumer_single_server() {
    let _serial = SERIAL.lock().await;
    let server = server().await;
    let url = server.url();
    let mut publisher = raw(&url).await;
    set_output_limit(&mut publisher, UNLIMITED_PUBSUB).await;
    let (adapter, mut events) = connect_with(
        // The harness's short probe (PING every 1 s, 1 s to answer): its PONG
        // waits behind the backlog, and the connection must not be declared
        // dead while messages keep arriving.
        fast_builder(&url),
        "stalled",
        CAPACITY,
    )
    .await;
    let room = RoomName::from("flood");
    adapter.subscribe(&room).await.expect("subscribe");

    let flood = Flood {
        topology: "single server",
        publisher,
        command: "PUBLISH",
        channel: channel(room.as_str()),
        messages: 200_000,
    };
    flood_stalled_consumer(&adapter, &mut events, flood).await;
    adapter.disconnect().await.expect("disconnect");
}

/// A 3-master cluster: the same flood with `SPUBLISH` on the room's shard
/// channel, straight to the master that serves it.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_with_a_stalled_consumer_cluster() {
    use rooms_adapter_redis::key_slot;
    use rooms_testkit::cluster_harness::fast_cluster_builder;
    use rooms_testkit::redis_cluster::RedisCluster;

    let _serial = SERIAL.lock().await;
    let cluster = RedisCluster::start().await.expect("a redis cluster starts");
    let room = RoomName::from("flood");
    let channel = channel(room.as_str());
    let master = cluster
        .owner_of_slot(0, key_slot(channel.as_bytes()))
        .await
        .expect("CLUSTER SLOTS")
        .expect("every slot is served");
    let mut publisher = raw(&cluster.url(master)).await;
    set_output_limit(&mut publisher, UNLIMITED_PUBSUB).await;
    let (adapter, mut events) =
        connect_with(fast_cluster_builder(&cluster.urls()), "stalled", CAPACITY).await;
    adapter.subscribe(&room).await.expect("subscribe");

    let flood = Flood {
        topology: "cluster",
        publisher,
        command: "SPUBLISH",
        channel,
        messages: 200_000,
    };
    flood_stalled_consumer(&adapter, &mut events, flood).await;
    adapter.disconnect().await.expect("disconnect");
}

/// Redis cuts a subscriber whose output buffer passes its pubsub hard limit.
/// The adapter reconnects, re-subscribes, reports the room in `Reconnected`,
/// and a message published afterwards is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_buffer_limit_cut_reconnects_and_resubscribes() {
    const BURST: u64 = 50;
    const BIG: usize = 256 * 1024;
    let _serial = SERIAL.lock().await;
    let server = server().await;
    let url = server.url();
    let mut operator = raw(&url).await;
    set_output_limit(&mut operator, "pubsub 64kb 32kb 1").await;
    let (adapter, mut events) = connected(&url, "slow", |b| b).await;
    let room = RoomName::from("burst");
    let channel = channel(room.as_str());
    adapter.subscribe(&room).await.expect("subscribe");
    assert_eq!(output_limit_cuts(&server), 0);

    // One pipeline: Redis queues the messages for the subscriber faster than
    // it can write them, past the 64 KB hard limit.
    let started = Instant::now();
    let mut pipe = redis::pipe();
    for n in 0..BURST {
        pipe.cmd("PUBLISH")
            .arg(channel.as_str())
            .arg(payload("burst", n, BIG));
    }
    let _: Vec<u64> = pipe
        .query_async(&mut operator)
        .await
        .expect("burst publish");
    let burst_in = started.elapsed();

    let (rooms, outage) = next_reconnected(&mut events, DEADLINE).await;
    let reconnected_after = started.elapsed();
    assert_eq!(rooms, vec![room.clone()], "Reconnected lists the room");
    let cuts = output_limit_cuts(&server);
    assert!(
        cuts >= 1,
        "Redis never cut the subscriber off:\n{}",
        server.log()
    );
    assert!(adapter.stats().reconnects >= 1, "{:?}", adapter.stats());

    // A message published afterwards is delivered. Publish until Redis has a
    // subscriber for it (a later burst message may have cut the new
    // connection too); that one must arrive.
    let deadline = Instant::now() + DEADLINE;
    let mut attempts = 0u64;
    let after = eventually("the room to have a subscriber again", DEADLINE, || {
        let attempt = attempts;
        attempts += 1;
        let (url, channel) = (&url, &channel);
        async move {
            let sent = payload("after", attempt, 128);
            (publish_raw(url, channel, &sent).await == 1).then_some(attempt)
        }
    })
    .await;
    let mut more_reconnects = 0;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the message published after the cut arrives")
            .expect("event stream open");
        if let AdapterEvent::Reconnected { .. } = event {
            more_reconnects += 1;
            continue;
        }
        // A later burst message may cut the new connection too: its loss
        // comes before the Reconnected counted above.
        if matches!(event, AdapterEvent::MediumLost { .. }) || seq_of(&event, "burst").is_some() {
            continue;
        }
        assert_eq!(seq_of(&event, "after"), Some(after), "{event:?}");
        break;
    }
    let stats = adapter.stats();
    println!(
        "output-buffer limit: {BURST} x {} KiB published in {burst_in:.2?}; Redis cut the \
         subscriber {cuts} time(s); Reconnected (listing {:?}) {reconnected_after:.2?} after the \
         burst began, outage {outage:.2?}; {more_reconnects} later Reconnected; {} burst messages \
         read before the cut; {} publish attempt(s) after; stats {stats:?}",
        BIG / 1024,
        rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(),
        stats.received.saturating_sub(1),
        after + 1,
    );
    assert_eq!(subscribers(&url, &channel).await, 1);
    adapter.disconnect().await.expect("disconnect");
}
