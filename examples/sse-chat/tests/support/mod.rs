//! Shared tooling of the end-to-end tests: start the real `sse-chat` binary,
//! read SSE with a real HTTP client, and wait for conditions with deadlines.
#![allow(dead_code, missing_docs)]

pub mod browser;
mod metrics;
mod server;
mod sse;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::time::timeout;

/// Polls a check until it holds, or panics naming what it waited for.
pub use rooms_testkit::poll::eventually;

// Not every test binary uses each of them.
#[allow(unused_imports)]
pub use {
    metrics::Metrics,
    server::ChatServer,
    sse::{SseClient, SseEvent},
};

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

/// A loopback port nothing listens on (bound, noted, freed).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A plain HTTP client for the tests (no proxy, short connect timeout).
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

/// Asserts that a finished `sse-chat` printed `secret` neither on stdout nor
/// on stderr; `what` names the run in the failure.
pub fn assert_not_printed(output: &std::process::Output, secret: &str, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{what} leaks the password:\n{stdout}\n{stderr}"
    );
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
