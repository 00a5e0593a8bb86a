//! Load tooling shared by `cargo xtask soak` and the end-to-end bench row:
//! `sse-chat` nodes as child processes ([`Node`]), real SSE clients
//! ([`spawn_client`]: hyper over one TCP connection each, parsing the SSE
//! frames themselves), a poster of chat messages ([`post`]), and `/proc`
//! sampling of the nodes ([`ProcSample`]).
//!
//! A chat message's text is `s=<seq> t=<µs>`: a sequence number and the send
//! time in microseconds since the run's base [`Instant`], so every client can
//! tell exactly which messages it got (once each) and how late. Message `seq`
//! goes to room `seq % rooms` (its number in that room is `seq / rooms`) through
//! node `(seq / rooms) % nodes`.

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long a node may take to print its listening line.
const NODE_START: Duration = Duration::from_secs(30);
/// How long one client may take to connect and get its `ready` event.
const CLIENT_JOIN: Duration = Duration::from_secs(30);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latency histogram shards (clients record into `index % SHARDS`).
const SHARDS: usize = 16;
/// Latencies a client buffers before it takes a shard's lock.
const LATENCY_BATCH: usize = 256;
/// Highest latency the histograms track, in µs (larger values are clamped).
const LATENCY_MAX_US: u64 = 600_000_000;

/// Makes sure this process (and the nodes it starts, which inherit it) may
/// open `needed` files: raises the soft limit, and the hard one if allowed.
pub fn raise_nofile(needed: u64) -> Result<u64, String> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft >= needed {
        return Ok(soft);
    }
    let new_hard = hard.max(needed);
    Resource::NOFILE.set(needed, new_hard).map_err(|e| {
        format!(
            "this run needs {needed} open files but the limit is {soft} (hard limit {hard}) \
             and raising it failed: {e}; raise it (ulimit -n {needed}) or use fewer clients"
        )
    })?;
    eprintln!("raised the open-file limit from {soft} to {needed}");
    Ok(needed)
}

/// Resident memory and CPU time of one process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// `utime + stime`, seconds.
    pub cpu_secs: f64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            rss_bytes: rss_kib * 1024,
            cpu_secs: cpu_secs_from_stat(&stat)?,
        })
    }
}

/// `utime + stime` in seconds from the text of `/proc/<pid>/stat`.
fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may contain spaces: fields are
    // counted after the last `)`. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux if that fails).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// One `sse-chat` process on a free loopback port; killed (by its pid) on drop.
pub struct Node {
    /// `node-a`, `node-b`: for messages.
    pub name: String,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `bin --port 0 --node-id <name> --redis-url <url>` and waits for
    /// its listening line. Its log (warnings) goes to a temporary file.
    pub fn start(
        bin: &Path,
        name: &str,
        redis_url: &str,
        max_connections: usize,
    ) -> Result<Self, String> {
        let log = std::env::temp_dir().join(format!("xtask-{}-{name}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--node-id", name])
            .args(["--redis-url", redis_url])
            .args(["--max-connections", &max_connections.max(1).to_string()])
            .args(["--keep-alive-secs", "15"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            // Reads stdout to its end (so the node never blocks on it); the
            // first listening line goes to `rx`.
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(rest.trim().to_owned());
                    }
                }
            });
        }
        let mut node = Self {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        match rx.recv_timeout(NODE_START) {
            Ok(addr) => {
                node.addr = addr
                    .parse()
                    .map_err(|e| format!("{name}: bad listening address {addr:?}: {e}"))?;
                if !node.addr.ip().is_loopback() {
                    return Err(format!("{name} listens on {addr}, not on loopback"));
                }
                Ok(node)
            }
            Err(_) => Err(format!(
                "{name} did not print its listening line within {NODE_START:?}; log:\n{}",
                node.log_tail(20)
            )),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RSS and CPU time now.
    pub fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid())
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Microseconds since `base`.
pub fn micros_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` if absent).
    pub event: String,
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// An incremental SSE parser (the event-stream format of the HTML spec):
/// `event`, `id`, `data` and `retry` fields, comments, events ended by a blank
/// line. Lines end with `\n` or `\r\n` (a lone `\r` is not a line end here:
/// `sse-chat` never sends one).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    pending: Pending,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct Pending {
    event: String,
    id: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; calls `emit` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(SseEvent)) {
        // Complete lines straight from `chunk` when nothing is buffered.
        let (lines, tail): (&[u8], &[u8]) = if self.buffer.is_empty() {
            match chunk.iter().rposition(|&b| b == b'\n') {
                Some(last) => (&chunk[..=last], &chunk[last + 1..]),
                None => (&[], chunk),
            }
        } else {
            self.buffer.extend_from_slice(chunk);
            let buffer = std::mem::take(&mut self.buffer);
            let end = buffer
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |last| last + 1);
            self.lines(&buffer[..end], &mut emit);
            self.buffer = buffer;
            self.buffer.drain(..end);
            return;
        };
        self.lines(lines, &mut emit);
        self.buffer.extend_from_slice(tail);
    }

    fn lines(&mut self, mut text: &[u8], emit: &mut impl FnMut(SseEvent)) {
        while let Some(end) = text.iter().position(|&b| b == b'\n') {
            let mut line = &text[..end];
            text = &text[end + 1..];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line);
            if let Some(event) = self.pending.line(&line) {
                emit(event);
            }
        }
    }
}

impl Pending {
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                // The spec keeps the last event id across events; every
                // chat message here carries its own, so report per event.
                id: self.id.take(),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// A growable bit set of the message numbers one client has seen.
#[derive(Debug, Default, Clone)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `index`; returns whether it was already set.
    pub fn insert(&mut self, index: u64) -> bool {
        let word = usize::try_from(index / 64).unwrap_or(usize::MAX);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (index % 64);
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        was
    }

    /// Whether bit `index` is set.
    pub fn contains(&self, index: u64) -> bool {
        usize::try_from(index / 64)
            .ok()
            .and_then(|word| self.words.get(word))
            .is_some_and(|word| word & (1u64 << (index % 64)) != 0)
    }
}

/// Counters and latencies shared by every client of a run.
pub struct Tally {
    /// Clients that got their `ready` event.
    pub ready: AtomicUsize,
    /// Clients that could not connect or join.
    pub failed: AtomicUsize,
    /// Chat messages received for the first time (all clients).
    pub delivered: AtomicU64,
    /// When the last chat message was received (µs since base).
    pub last_delivery_us: AtomicU64,
    /// When a client first saw a `reconnected` notice (µs since base; 0 = never).
    pub first_notice_us: AtomicU64,
    /// When a client last saw a `reconnected` notice (µs since base).
    pub last_notice_us: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Tally {
    /// Empty counters.
    pub fn new() -> Result<Arc<Self>, String> {
        let latency = (0..SHARDS)
            .map(|_| new_histogram().map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Self {
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            first_notice_us: AtomicU64::new(0),
            last_notice_us: AtomicU64::new(0),
            latency,
        }))
    }

    fn record(&self, shard: usize, latencies: &mut Vec<u64>) {
        if latencies.is_empty() {
            return;
        }
        if let Some(Ok(mut histogram)) = self.latency.get(shard % SHARDS).map(|m| m.lock()) {
            for &us in latencies.iter() {
                histogram.saturating_record(us.max(1));
            }
        }
        latencies.clear();
    }

    /// Every latency recorded so far (µs), merged.
    pub fn latency(&self) -> Result<Histogram<u64>, String> {
        let mut all = new_histogram()?;
        for shard in &self.latency {
            let shard = shard.lock().map_err(|_| "a latency shard is poisoned")?;
            all.add(&*shard)
                .map_err(|e| format!("cannot merge latencies: {e}"))?;
        }
        Ok(all)
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .map_err(|e| format!("cannot create a histogram: {e}"))
}

/// Who a client is.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Its number in the run (also picks the latency shard).
    pub index: usize,
    /// The node's address.
    pub addr: SocketAddr,
    /// The room's number (`seq % rooms` of its messages).
    pub room: u64,
    /// The room's name.
    pub room_name: String,
    /// How many rooms the run posts into (`seq % rooms` is the room).
    pub rooms: u64,
}

/// What one client saw, when it is stopped.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Its room's number.
    pub room: u64,
    /// Message numbers within the room (`seq / rooms`) received.
    pub received: BitSet,
    /// Chat messages received more than once.
    pub duplicates: u64,
    /// Chat messages of another room.
    pub foreign: u64,
    /// Chat messages without an `id:`.
    pub without_id: u64,
    /// Message numbers within the room received without an `id:` (a post
    /// the medium could not store is delivered on its node without one).
    pub without_id_numbers: BitSet,
    /// Events whose data could not be read.
    pub malformed: u64,
    /// `notice` events with `"kind":"reconnected"`.
    pub reconnected_notices: u64,
    /// `notice` events with `"kind":"gap"` (this node dropped messages).
    pub gap_notices: u64,
    /// Why the stream failed or ended before the client was stopped.
    pub ended: Option<String>,
}

/// The chat message fields a client reads.
#[derive(Deserialize)]
struct Chat<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Notice<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
}

/// `s=<seq> t=<µs>` as `(seq, µs)`.
pub fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split(' ');
    let seq = parts.next()?.strip_prefix("s=")?.parse().ok()?;
    let sent = parts.next()?.strip_prefix("t=")?.parse().ok()?;
    Some((seq, sent))
}

/// The chat message text of `seq` sent at `sent_us`.
pub fn message_text(seq: u64, sent_us: u64) -> String {
    format!("s={seq} t={sent_us}")
}

/// Starts one SSE client: it connects, waits for `ready` (then counts itself
/// in [`Tally::ready`]), and reads until `stop` turns true or the stream ends.
/// `joins` bounds how many clients connect at once.
pub fn spawn_client(
    spec: ClientSpec,
    tally: Arc<Tally>,
    base: Instant,
    joins: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ClientReport> {
    tokio::spawn(client(spec, tally, base, joins, stop))
}

async fn client(
    spec: ClientSpec,
    tally: Arc<Tally>,
    base: Instant,
    joins: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport {
        room: spec.room,
        ..ClientReport::default()
    };
    let permit = joins.acquire_owned().await.ok();
    let opened = tokio::time::timeout(CLIENT_JOIN, open(&spec)).await;
    let (mut body, connection) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(error)) => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            report.ended = Some(error);
            return report;
        }
        Err(_) => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            report.ended = Some(format!("no response within {CLIENT_JOIN:?}"));
            return report;
        }
    };
    let mut parser = SseParser::default();
    let mut latencies = Vec::with_capacity(LATENCY_BATCH);
    let mut ready = false;
    let join_deadline = tokio::time::Instant::now() + CLIENT_JOIN;
    let mut permit = permit;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until(join_deadline), if !ready => {
                report.ended = Some(format!("no ready event within {CLIENT_JOIN:?}"));
                tally.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            frame = body.frame() => frame,
        };
        let chunk = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue, // trailers
            },
            Some(Err(error)) => {
                report.ended = Some(format!("stream failed: {error}"));
                break;
            }
            None => {
                report.ended = Some("the server ended the stream".to_owned());
                break;
            }
        };
        parser.feed(&chunk, |event| match event.event.as_str() {
            "ready" if !ready => {
                ready = true;
                permit = None;
                tally.ready.fetch_add(1, Ordering::Relaxed);
            }
            "message" => {
                let now = micros_since(base);
                let parsed = serde_json::from_str::<Chat>(&event.data)
                    .ok()
                    .and_then(|chat| parse_text(&chat.text));
                let Some((seq, sent_us)) = parsed else {
                    report.malformed += 1;
                    return;
                };
                if seq % spec.rooms.max(1) != spec.room {
                    report.foreign += 1;
                    return;
                }
                if event.id.is_none() {
                    report.without_id += 1;
                    report.without_id_numbers.insert(seq / spec.rooms.max(1));
                }
                if report.received.insert(seq / spec.rooms.max(1)) {
                    report.duplicates += 1;
                    return;
                }
                tally.delivered.fetch_add(1, Ordering::Relaxed);
                tally.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                latencies.push(now.saturating_sub(sent_us));
                if latencies.len() >= LATENCY_BATCH {
                    tally.record(spec.index, &mut latencies);
                }
            }
            "notice" => match serde_json::from_str::<Notice>(&event.data) {
                Ok(notice) if notice.kind.as_deref() == Some("reconnected") => {
                    report.reconnected_notices += 1;
                    let now = micros_since(base);
                    let _ = tally.first_notice_us.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tally.last_notice_us.fetch_max(now, Ordering::Relaxed);
                }
                Ok(notice) if notice.kind.as_deref() == Some("gap") => {
                    report.gap_notices += 1;
                }
                Ok(_) => {}
                Err(_) => report.malformed += 1,
            },
            _ => {}
        });
    }
    drop(permit);
    tally.record(spec.index, &mut latencies);
    if !ready && report.ended.is_none() {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        report.ended = Some("stopped before its ready event".to_owned());
    }
    connection.abort();
    report
}

/// Connects, sends `GET /rooms/{room}/events`, checks the status.
async fn open(
    spec: &ClientSpec,
) -> Result<(hyper::body::Incoming, tokio::task::JoinHandle<()>), String> {
    let stream = tokio::net::TcpStream::connect(spec.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", spec.addr))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(format!("/rooms/{}/events", spec.room_name))
        .header(HOST, spec.addr.to_string())
        .header(ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            connection.abort();
            return Err(format!("GET events: {error}"));
        }
    };
    if response.status() != hyper::StatusCode::OK {
        connection.abort();
        return Err(format!("GET events: status {}", response.status()));
    }
    Ok((response.into_body(), connection))
}

/// One POST's outcome.
#[derive(Debug, Clone, Copy)]
pub struct PostRecord {
    /// The message's sequence number.
    pub seq: u64,
    /// When it was sent (µs since base).
    pub sent_us: u64,
    /// When the answer came (µs since base).
    pub done_us: u64,
    /// The HTTP status; `None` if the request failed or timed out.
    pub status: Option<u16>,
}

impl PostRecord {
    /// Whether the node accepted it (202).
    pub fn accepted(&self) -> bool {
        self.status == Some(202)
    }
}

/// What to post.
#[derive(Debug, Clone)]
pub struct PostPlan {
    /// Nodes to post into; message `seq` goes to `nodes[(seq / rooms) % len]`.
    pub nodes: Vec<SocketAddr>,
    /// Room names; message `seq` goes to `rooms[seq % len]`.
    pub rooms: Vec<String>,
    /// How many messages.
    pub count: u64,
    /// Messages per second; `None` posts as fast as `in_flight` allows.
    pub rate: Option<f64>,
    /// Most requests in flight at once.
    pub in_flight: usize,
}

/// Posts `plan.count` chat messages; returns one record per message, in
/// sequence order.
pub async fn post(plan: PostPlan, base: Instant) -> Result<Vec<PostRecord>, String> {
    if plan.nodes.is_empty() || plan.rooms.is_empty() {
        return Err("nothing to post into".to_owned());
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(plan.in_flight)
        .build(connector);
    let slots = Arc::new(Semaphore::new(plan.in_flight.max(1)));
    let rooms = plan.rooms.len() as u64;
    let mut tasks = JoinSet::new();
    let mut records = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let start = tokio::time::Instant::now();
    for seq in 0..plan.count {
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate.max(1e-3));
            tokio::time::sleep_until(due).await;
        }
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the poster's semaphore closed")?;
        let room_index = usize::try_from(seq % rooms).unwrap_or(0);
        let node_index = usize::try_from((seq / rooms) % plan.nodes.len() as u64).unwrap_or(0);
        let addr = plan.nodes[node_index];
        let uri = format!("http://{addr}/rooms/{}/messages", plan.rooms[room_index]);
        let client = client.clone();
        tasks.spawn(async move {
            let sent_us = micros_since(base);
            let body = serde_json::json!({"name": "soak", "text": message_text(seq, sent_us)});
            let request = Request::post(uri)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())));
            let status = match request {
                Ok(request) => {
                    match tokio::time::timeout(POST_TIMEOUT, client.request(request)).await {
                        Ok(Ok(response)) => {
                            let status = response.status().as_u16();
                            // Read the answer so the connection can be reused.
                            let _ = response.into_body().collect().await;
                            Some(status)
                        }
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            drop(permit);
            PostRecord {
                seq,
                sent_us,
                done_us: micros_since(base),
                status,
            }
        });
        // Collect finished ones as we go so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            records.push(done.map_err(|e| format!("a post task failed: {e}"))?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        records.push(done.map_err(|e| format!("a post task failed: {e}"))?);
    }
    records.sort_by_key(|record| record.seq);
    Ok(records)
}

/// Waits until `tally.delivered` reaches `expected`, or has not moved for
/// `quiet`, or `limit` has passed. Returns the count then.
pub async fn drain(tally: &Tally, expected: u64, quiet: Duration, limit: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = tally.delivered.load(Ordering::Relaxed);
    let mut last_change = tokio::time::Instant::now();
    loop {
        let now = tally.delivered.load(Ordering::Relaxed);
        if now >= expected {
            return now;
        }
        if now != last {
            last = now;
            last_change = tokio::time::Instant::now();
        }
        if last_change.elapsed() >= quiet || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `clients` is ready or failed, up to `limit`.
pub async fn wait_ready(tally: &Tally, clients: usize, limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ready = tally.ready.load(Ordering::Relaxed);
        let failed = tally.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!(
                "{failed} of {clients} SSE clients could not join ({ready} ready)"
            ));
        }
        if ready >= clients {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "only {ready} of {clients} SSE clients joined within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `value` in ms with 2 decimals, from µs.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk.as_bytes(), |event| events.push(event));
        }
        events
    }

    #[test]
    fn parses_events_split_anywhere() {
        let stream = "retry: 2000\n\nevent: ready\ndata: {\"a\":1}\n\n: keep-alive\n\n\
                      id: x1\r\ndata:line1\ndata: line2\n\n";
        let whole = parse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "ready".into(),
                    id: None,
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    id: Some("x1".into()),
                    data: "line1\nline2".into()
                },
            ]
        );
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(parse_all(&[a, b]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn reads_message_text_and_proc_stat() {
        assert_eq!(parse_text(&message_text(42, 1234)), Some((42, 1234)));
        assert_eq!(parse_text("s=1"), None);
        assert_eq!(parse_text("hello"), None);
        let stat = "1 (a b) S 0 0 0 0 0 0 0 0 0 0 250 50 0 0 20 0";
        let ticks = clock_ticks();
        assert_eq!(cpu_secs_from_stat(stat), Some(300.0 / ticks));
        assert!(ProcSample::read(std::process::id()).is_some_and(|s| s.rss_bytes > 0));
    }

    #[test]
    fn bit_set_counts_repeats() {
        let mut set = BitSet::default();
        assert!(!set.insert(3));
        assert!(set.insert(3));
        assert!(!set.insert(1000));
        assert!(set.contains(1000) && set.contains(3) && !set.contains(4));
        assert!(!set.contains(1_000_000));
    }
}
