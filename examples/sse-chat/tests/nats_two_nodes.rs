//! Two `sse-chat` processes sharing one throwaway `nats-server`: a message
//! posted to either node reaches the room's members on both, and nothing
//! leaks into other rooms. Needs `--features nats`.
#![cfg(feature = "nats")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rooms_testkit::nats_server::NatsServer;
use serde_json::json;
use support::{ChatServer, SseClient, http};

async fn node(name: &str, nats: &NatsServer) -> ChatServer {
    let url = nats.url();
    ChatServer::start(name, &["--nats-url", &url]).await
}

#[tokio::test]
async fn a_message_posted_to_either_node_reaches_both_and_only_its_room() {
    let nats = NatsServer::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start a throwaway nats-server: {error}"));
    let node_a = node("node-a", &nats).await;
    let node_b = node("node-b", &nats).await;
    let http = http();

    let mut on_a = SseClient::open(&http, &node_a.url("/rooms/lobby/events")).await;
    let mut on_b = SseClient::open(&http, &node_b.url("/rooms/lobby/events")).await;
    let mut elsewhere = SseClient::open(&http, &node_b.url("/rooms/elsewhere/events")).await;
    assert_eq!(on_a.next_of("ready").await.json()["backend"], "nats");
    assert_eq!(on_b.next_of("ready").await.json()["node"], "node-b");
    elsewhere.next_of("ready").await;

    for (from, text) in [(&node_a, "posted to node A"), (&node_b, "posted to node B")] {
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
}
