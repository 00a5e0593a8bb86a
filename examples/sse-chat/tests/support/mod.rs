//! Shared tooling of the end-to-end tests: start the real `sse-chat` binary,
//! read SSE with a real HTTP client, and wait for conditions with deadlines.
#![allow(dead_code, missing_docs)]

pub mod browser;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long anything in these tests may take before it counts as a failure.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The target directory the binary under test was built into.
pub fn target_dir() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_sse-chat"));
    // {target}/{profile}/sse-chat
    binary
        .parent()
        .and_then(|profile| profile.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Polls a check until it holds, or panics naming what it waited for.
pub use rooms_testkit::poll::eventually;

/// A running `sse-chat` process, killed when dropped.
pub struct ChatServer {
    pub base: String,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<String>>,
    name: String,
}

impl ChatServer {
    /// Starts the binary on a free port (`--port 0`) with a 1 s keep-alive and
    /// waits for its "listening" line.
    pub async fn start(name: &str, extra_args: &[&str]) -> ChatServer {
        Self::start_on(name, 0, extra_args).await
    }

    /// Like [`start`](Self::start), on this port (0: a free one), e.g. to
    /// restart a killed node where its clients reconnect.
    pub async fn start_on(name: &str, port: u16, extra_args: &[&str]) -> ChatServer {
        let port = port.to_string();
        let mut args = vec!["--port", &port, "--keep-alive-secs", "1", "--node-id", name];
        args.extend_from_slice(extra_args);
        let mut child = Self::command(&args)
            .spawn()
            .expect("spawn the sse-chat binary");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(DEADLINE, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.starts_with("sse-chat listening on http://") => {
                        return line;
                    }
                    Ok(Some(_)) => continue,
                    _ => panic!(
                        "sse-chat {name} exited before listening; its log:\n{}",
                        log.lock().unwrap()
                    ),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("sse-chat {name} did not start within {DEADLINE:?}"));
        // Keep draining stdout so the child can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = line.trim_start_matches("sse-chat listening on ").to_owned();
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        ChatServer {
            base,
            port,
            child,
            log,
            name: name.to_owned(),
        }
    }

    /// The binary with the given arguments, with stdout and stderr piped and
    /// no Redis deployment inherited from the environment.
    pub fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sse-chat"));
        command
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER")
            .env_remove("REDIS_SENTINEL")
            .env_remove("REDIS_SENTINEL_MASTER")
            .env_remove("SSE_CHAT_PORT")
            .env_remove("SSE_CHAT_HOST")
            .env("RUST_LOG", "sse_chat=debug,rooms_adapter=debug,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Local member count of `room`, per `GET /rooms`.
    pub async fn members(&self, http: &reqwest::Client, room: &str) -> usize {
        let body: Value = http
            .get(self.url("/rooms"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["room"] == room)
            .map_or(0, |entry| entry["members"].as_u64().unwrap() as usize)
    }

    /// Waits until `room` has `count` local members.
    pub async fn wait_members(&self, http: &reqwest::Client, room: &str, count: usize) {
        eventually(
            &format!("{count} members in room {room:?} on {}", self.name),
            DEADLINE,
            || async { (self.members(http, room).await == count).then_some(()) },
        )
        .await;
    }

    /// POSTs a chat message; returns the status and the JSON answer.
    pub async fn post(&self, http: &reqwest::Client, room: &str, body: &Value) -> (u16, Value) {
        let response = http
            .post(self.url(&format!("/rooms/{room}/messages")))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// GET `/metrics`, parsed as the Prometheus text format; every line
    /// must be a comment or a sample the parser understands.
    pub async fn scrape(&self, http: &reqwest::Client) -> Metrics {
        let response = http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Metrics::parse(&response.text().await.unwrap())
    }

    /// GET `path`: the status and the JSON answer.
    pub async fn get_json(&self, http: &reqwest::Client, path: &str) -> (u16, Value) {
        let response = http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Kills the process with SIGKILL, by its pid (it cannot say goodbye to
    /// anyone), and waits until it is gone.
    #[cfg(unix)]
    pub async fn kill_hard(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL failed");
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("sse-chat dies after SIGKILL")
            .unwrap();
    }

    /// Sends SIGTERM and waits for the exit code.
    #[cfg(unix)]
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        timeout(DEADLINE, self.child.wait())
            .await
            .expect("sse-chat exits after SIGTERM")
            .unwrap()
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of sse-chat {} ----\n{}",
                self.name,
                self.log.lock().map(|log| log.clone()).unwrap_or_default()
            );
        }
    }
}

/// One server-sent event as a client parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the frame had no `event:` line).
    pub event: String,
    /// The `id:` of this frame, if it had one.
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// A streaming SSE client over reqwest. Dropping it closes the connection.
pub struct SseClient {
    pub status: u16,
    pub headers: HeaderMap,
    events: mpsc::Receiver<SseEvent>,
    comments: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

impl SseClient {
    /// Opens `url`, checks for a 200, and starts parsing the body.
    pub async fn open(http: &reqwest::Client, url: &str) -> SseClient {
        Self::open_with(http.get(url)).await
    }

    pub async fn open_with(request: reqwest::RequestBuilder) -> SseClient {
        let response = timeout(DEADLINE, request.send())
            .await
            .expect("SSE response headers in time")
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let (sender, events) = mpsc::channel(1024);
        let comments = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&comments);
        let mut body = response.bytes_stream();
        let reader = tokio::spawn(async move {
            let mut parser = Parser::default();
            while let Some(Ok(chunk)) = body.next().await {
                for item in parser.feed(&chunk) {
                    match item {
                        Item::Event(event) => {
                            if sender.send(event).await.is_err() {
                                return;
                            }
                        }
                        Item::Comment => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        SseClient {
            status,
            headers,
            events,
            comments,
            reader,
        }
    }

    /// The next event, or `None` if the stream ended; panics after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        timeout(within, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {within:?}"))
    }

    /// The next event; panics if none comes within the deadline or the stream ends.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(DEADLINE)
            .await
            .expect("the SSE stream ended")
    }

    /// Skips events until one of type `event` arrives.
    pub async fn next_of(&mut self, event: &str) -> SseEvent {
        loop {
            let next = self.next().await;
            if next.event == event {
                return next;
            }
        }
    }

    /// Events up to and including the first whose data contains `sentinel`.
    pub async fn until_data_contains(&mut self, sentinel: &str) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let next = self.next().await;
            let done = next.data.contains(sentinel);
            seen.push(next);
            if done {
                return seen;
            }
        }
    }

    /// Waits for the stream to end (server closed it).
    pub async fn wait_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.events.recv(),
            )
            .await
            {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => panic!("the SSE stream did not end within {DEADLINE:?}"),
            }
        }
    }

    /// Keep-alive (and other) comments seen so far.
    pub fn comments(&self) -> usize {
        self.comments.load(Ordering::Relaxed)
    }

    /// Closes the connection, as a browser tab being closed would.
    pub fn close(self) {
        self.reader.abort();
    }
}

enum Item {
    Event(SseEvent),
    Comment,
}

/// An incremental `text/event-stream` parser (WHATWG rules for the fields
/// these tests need).
#[derive(Default)]
struct Parser {
    buffer: Vec<u8>,
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

impl Parser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        self.buffer.extend_from_slice(chunk);
        let mut items = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    items.push(Item::Event(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        id: self.id.take(),
                        data: self.data.join("\n"),
                    }));
                }
                self.event = None;
                self.id = None;
                self.data.clear();
                continue;
            }
            if line.starts_with(':') {
                items.push(Item::Comment);
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        items
    }
}

/// A plain HTTP client for the tests (no proxy, short connect timeout).
/// A loopback port nothing listens on (bound, noted, freed).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
}

/// Reads all of a child's stream (for processes expected to exit).
pub async fn read_all(mut stream: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

/// Publishes a raw payload to a Redis channel over plain RESP, as another
/// application (e.g. a Node.js node using `@opinionated-machine/sse-rooms-redis`)
/// would. Returns how many subscribers received it.
pub async fn redis_publish(redis_url: &str, channel: &str, payload: &str) -> i64 {
    use tokio::io::AsyncWriteExt;
    let address = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut command = Vec::new();
    command.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    for part in [channel, payload] {
        command.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        command.extend_from_slice(part.as_bytes());
        command.extend_from_slice(b"\r\n");
    }
    stream.write_all(&command).await.unwrap();
    let mut reply = BufReader::new(stream);
    let mut line = String::new();
    timeout(DEADLINE, reply.read_line(&mut line))
        .await
        .expect("redis replies")
        .unwrap();
    line.trim()
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("unexpected PUBLISH reply {line:?}"))
        .parse()
        .unwrap()
}

/// Two nodes share a room over `backend`: a message posted to either reaches
/// the room's members on both, with the same id, and nothing leaks into
/// another room. Returns the two lobby clients for more checks.
pub async fn two_nodes_share_a_room(
    node_a: &ChatServer,
    node_b: &ChatServer,
    backend: &str,
) -> (SseClient, SseClient) {
    let http = http();
    let mut on_a = SseClient::open(&http, &node_a.url("/rooms/lobby/events")).await;
    let mut on_b = SseClient::open(&http, &node_b.url("/rooms/lobby/events")).await;
    let mut elsewhere = SseClient::open(&http, &node_b.url("/rooms/elsewhere/events")).await;
    assert_eq!(on_a.next_of("ready").await.json()["backend"], backend);
    assert_eq!(on_b.next_of("ready").await.json()["node"], "node-b");
    elsewhere.next_of("ready").await;

    for (from, text) in [(node_a, "posted to node A"), (node_b, "posted to node B")] {
        let (status, answer) = from
            .post(&http, "lobby", &json!({"name": "ada", "text": text}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let id = answer["id"].as_str().unwrap();
        for client in [&mut on_a, &mut on_b] {
            let message = client.next().await;
            assert_eq!(message.event, "message");
            assert_eq!(message.id.as_deref(), Some(id), "same id on both nodes");
            assert_eq!(message.json()["text"], text);
        }
    }

    // The client in another room saw nothing of the lobby: its first event
    // after `ready` is the sentinel.
    let (status, _) = node_a
        .post(
            &http,
            "elsewhere",
            &json!({"name": "ada", "text": "sentinel-elsewhere"}),
        )
        .await;
    assert_eq!(status, 202);
    let seen = elsewhere.until_data_contains("sentinel-elsewhere").await;
    assert_eq!(seen.len(), 1, "only the sentinel: {seen:?}");
    (on_a, on_b)
}

/// A `/metrics` scrape, parsed with `prometheus-parse`.
pub struct Metrics {
    pub text: String,
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        use prometheus_parse::LineInfo;
        for line in text.lines() {
            let known = matches!(
                LineInfo::parse(line),
                LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. }
            );
            assert!(known, "not Prometheus text: {line:?} in\n{text}");
        }
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
        Metrics {
            text: text.to_owned(),
            scrape,
        }
    }

    fn sample(&self, name: &str) -> &prometheus_parse::Sample {
        self.scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    /// The value of a counter, gauge or untyped sample.
    pub fn value(&self, name: &str) -> f64 {
        use prometheus_parse::Value;
        match &self.sample(name).value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is {other:?}"),
        }
    }

    /// The value of a sample with this label.
    pub fn labelled(
        &self,
        name: &str,
        label: &str,
        value: &str,
    ) -> Option<&prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name && sample.labels.get(label) == Some(value))
    }

    /// Observations of a histogram (its `+Inf` bucket), after checking its
    /// buckets are cumulative and end with `+Inf` equal to `_count`.
    pub fn histogram_count(&self, name: &str) -> f64 {
        let prometheus_parse::Value::Histogram(buckets) = &self.sample(name).value else {
            panic!("{name} is not a histogram in\n{}", self.text);
        };
        for pair in buckets.windows(2) {
            assert!(pair[0].less_than < pair[1].less_than, "{name}: {buckets:?}");
            assert!(pair[0].count <= pair[1].count, "{name}: {buckets:?}");
        }
        let last = buckets.last().unwrap();
        assert!(last.less_than.is_infinite(), "{name}: {buckets:?}");
        assert_eq!(self.value(&format!("{name}_count")), last.count);
        last.count
    }
}
