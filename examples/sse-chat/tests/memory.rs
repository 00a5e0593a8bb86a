//! End-to-end tests of the real `sse-chat` binary on the memory backend, with
//! a real HTTP client.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

// The test binary's root is this file: its modules are in `memory/`.
#[path = "memory/cluster.rs"]
mod cluster;
#[path = "memory/history.rs"]
mod history;
#[path = "memory/metrics.rs"]
mod metrics;
#[path = "memory/validation.rs"]
mod validation;

use serde_json::{Value, json};
use support::{ChatServer, DEADLINE, SseClient, eventually, http};

#[tokio::test]
async fn chat_round_trip_over_real_http() {
    let server = ChatServer::start("mem-a", &[]).await;
    let http = http();

    let mut alice = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    assert_eq!(alice.status, 200);

    // The headers as a real client sees them.
    println!("SSE response headers as seen by reqwest (GET /rooms/lobby/events):");
    println!("  HTTP status: {}", alice.status);
    for (name, value) in &alice.headers {
        println!("  {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    assert_eq!(alice.headers["content-type"], "text/event-stream");
    assert_eq!(alice.headers["cache-control"], "no-cache");

    let ready = alice.next_of("ready").await;
    assert_eq!(ready.json()["room"], "lobby");
    assert_eq!(ready.json()["backend"], "memory");
    assert_eq!(ready.json()["node"], "mem-a");
    assert_eq!(ready.json()["lastEventId"], Value::Null);

    // A second client, resuming with Last-Event-ID: the header reaches the app.
    let mut bob = SseClient::open_with(
        http.get(server.url("/rooms/lobby/events"))
            .header("Last-Event-ID", "earlier-42"),
    )
    .await;
    let ready = bob.next_of("ready").await;
    assert_eq!(ready.json()["lastEventId"], "earlier-42");
    // History is on by default and cannot place that id: one gap event first.
    assert_eq!(ready.json()["resume"]["kind"], "gap");
    let gap = bob.next().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.json()["reason"], "unknown_id");
    server.wait_members(&http, "lobby", 2).await;

    let (status, answer) = server
        .post(
            &http,
            "lobby",
            &json!({"name": " Alice ", "text": "hello\nworld"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["delivered"], 2);
    let id = answer["id"].as_str().unwrap().to_owned();

    for client in [&mut alice, &mut bob] {
        let message = client.next().await;
        assert_eq!(
            message.event, "message",
            "chat messages use the default event"
        );
        assert_eq!(message.id.as_deref(), Some(id.as_str()));
        let data = message.json();
        assert_eq!(data["name"], "Alice");
        assert_eq!(data["text"], "hello\nworld");
        assert_eq!(data["room"], "lobby");
        assert_eq!(data["node"], "mem-a");
        assert!(data["sentAt"].as_u64().unwrap() > 0);
    }

    // Keep-alive comments flow on a silent stream (the server runs with 1 s).
    eventually("a keep-alive comment", DEADLINE, || async {
        (alice.comments() > 0).then_some(())
    })
    .await;

    // GET /rooms, /healthz, /metrics.
    let (_, rooms) = server.get_json(&http, "/rooms").await;
    assert_eq!(rooms["node"], "mem-a");
    assert_eq!(rooms["backend"], "memory");
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 2}]));
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    server.scrape(&http).await.assert_lines(&[
        "rooms_connections 2",
        "rooms_rooms 1",
        "rooms_broadcasts_total 1",
        "rooms_deliveries_total 2",
        // The chat message, and bob's gap event.
        "rooms_frames_encoded_total 2",
        "rooms_adapter_published_total 1",
        "sse_chat_messages_posted_total 1",
    ]);

    // The page is served.
    let page = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("new EventSource("));
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = ChatServer::start("mem-iso", &[]).await;
    let http = http();
    let mut red = SseClient::open(&http, &server.url("/rooms/red/events")).await;
    let mut blue = SseClient::open(&http, &server.url("/rooms/blue/events")).await;
    red.next_of("ready").await;
    blue.next_of("ready").await;

    let (status, _) = server
        .post(&http, "red", &json!({"name": "r", "text": "for red only"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(red.next().await.json()["text"], "for red only");
    // The sentinel bounds the wait: blue sees it and nothing before it.
    let (status, _) = server
        .post(
            &http,
            "blue",
            &json!({"name": "b", "text": "sentinel-blue"}),
        )
        .await;
    assert_eq!(status, 202);
    let seen = blue.until_data_contains("sentinel-blue").await;
    assert_eq!(seen.len(), 1, "blue got only its own message: {seen:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_the_room() {
    let server = ChatServer::start("mem-leave", &[]).await;
    let http = http();
    let mut stays = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    let mut leaves = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    stays.next_of("ready").await;
    leaves.next_of("ready").await;
    server.wait_members(&http, "lobby", 2).await;

    leaves.close();
    server.wait_members(&http, "lobby", 1).await;

    stays.close();
    server.wait_members(&http, "lobby", 0).await;
    let rooms: Value = http
        .get(server.url("/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rooms["rooms"], json!([]), "an empty room is not listed");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_streams_and_exits_cleanly() {
    let server = ChatServer::start("mem-term", &[]).await;
    let http = http();
    let mut client = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    client.next_of("ready").await;
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    client.wait_closed().await;
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_start_up_error() {
    let server = ChatServer::start("mem-port", &[]).await;
    let port = server.port.to_string();
    let output = tokio::time::timeout(DEADLINE, ChatServer::command(&["--port", &port]).output())
        .await
        .expect("exits quickly")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "stderr names the address: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("address already in use"),
        "{stderr}"
    );
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_url_without_the_redis_feature_says_how_to_rebuild() {
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&["--port", "0", "--redis-url", "redis://127.0.0.1:1"]).output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features redis"), "{stderr}");
}

#[tokio::test]
async fn a_full_node_refuses_new_streams_with_503() {
    let server = ChatServer::start("mem-full", &["--max-connections", "1"]).await;
    let http = http();
    let mut first = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    first.next_of("ready").await;
    let refused = http
        .get(server.url("/rooms/lobby/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    first.close();
    server.wait_members(&http, "lobby", 0).await;
    let mut again = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    assert_eq!(again.status, 200);
    again.next_of("ready").await;
}
