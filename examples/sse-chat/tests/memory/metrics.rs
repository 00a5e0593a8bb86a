//! `GET /metrics` parses, and its histograms fill after traffic.

use serde_json::json;

use crate::support::{ChatServer, DEADLINE, SseClient, eventually, http};

/// `/metrics` comes from the library's collector, parses as Prometheus
/// text, and its latency histograms fill with traffic.
#[tokio::test]
async fn metrics_parse_and_histograms_fill_after_traffic() {
    let server = ChatServer::start("mem-metrics", &[]).await;
    let http = http();
    let before = server.scrape(&http).await;
    assert_eq!(
        before.histogram_count("rooms_publish_duration_seconds"),
        0.0
    );
    assert_eq!(before.histogram_count("rooms_queue_wait_seconds"), 0.0);

    let mut alice = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    alice.next_of("ready").await;
    server.wait_members(&http, "lobby", 1).await;
    for i in 0..3 {
        let (status, answer) = server
            .post(
                &http,
                "lobby",
                &json!({"name": "alice", "text": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            alice.next_of("message").await.json()["text"],
            format!("m{i}")
        );
    }

    let metrics = eventually("the queue wait is recorded", DEADLINE, || async {
        let metrics = server.scrape(&http).await;
        (metrics.histogram_count("rooms_queue_wait_seconds") >= 1.0).then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.histogram_count("rooms_publish_duration_seconds"),
        3.0
    );
    // One node: nothing arrives from another node.
    assert_eq!(
        metrics.histogram_count("rooms_delivery_duration_seconds"),
        0.0
    );
    assert_eq!(metrics.value("rooms_broadcasts_total"), 3.0);
    assert_eq!(metrics.value("sse_chat_messages_posted_total"), 3.0);
    assert_eq!(metrics.value("rooms_connections"), 1.0);
    assert_eq!(metrics.value("rooms_medium_up"), 1.0);
    let info = metrics
        .labelled("rooms_node_info", "node", "mem-metrics")
        .expect("rooms_node_info");
    assert_eq!(info.labels.get("medium"), Some("memory"));
    let info = metrics
        .labelled("sse_chat_info", "node", "mem-metrics")
        .expect("sse_chat_info");
    assert_eq!(info.labels.get("backend"), Some("memory"));
    assert!(
        metrics
            .scrape
            .docs
            .get("rooms_queue_wait_seconds")
            .is_some_and(|help| !help.is_empty()),
        "HELP text"
    );
}
