//! End-to-end tests of the real `sse-chat` binary on the memory backend, with
//! a real HTTP client.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

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
    let rooms: Value = http
        .get(server.url("/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rooms["node"], "mem-a");
    assert_eq!(rooms["backend"], "memory");
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "members": 2}]));
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let metrics = http.get(server.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let metrics = metrics.text().await.unwrap();
    for line in [
        "rooms_connections 2",
        "rooms_rooms 1",
        "rooms_broadcasts_total 1",
        "rooms_deliveries_total 2",
        // The chat message, and bob's gap event.
        "rooms_frames_encoded_total 2",
        "rooms_adapter_published_total 1",
        "sse_chat_messages_posted_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing in:\n{metrics}"
        );
    }

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
async fn invalid_input_gets_a_4xx_json_error_naming_the_field() {
    let server = ChatServer::start("mem-val", &[]).await;
    let http = http();
    let url = server.url("/rooms/lobby/messages");
    let long_room = "r".repeat(65);

    let cases: Vec<(reqwest::RequestBuilder, u16, Option<&str>, &str)> = vec![
        (
            http.post(&url).json(&json!({"name": "ada", "text": "   "})),
            422,
            Some("text"),
            "text must not be empty",
        ),
        (
            http.post(&url).json(&json!({"name": "ada"})),
            422,
            Some("text"),
            "text is required",
        ),
        (
            http.post(&url).json(&json!({"name": "ada", "text": 3})),
            422,
            Some("text"),
            "text must be a string",
        ),
        (
            http.post(&url)
                .json(&json!({"name": "ada", "text": "x".repeat(2001)})),
            422,
            Some("text"),
            "at most 2000",
        ),
        (
            http.post(&url).json(&json!({"name": "", "text": "hi"})),
            422,
            Some("name"),
            "name must not be empty",
        ),
        (
            http.post(&url)
                .json(&json!({"name": "n".repeat(33), "text": "hi"})),
            422,
            Some("name"),
            "at most 32",
        ),
        (
            http.post(&url).json(&json!(["not", "an", "object"])),
            400,
            Some("body"),
            "JSON object",
        ),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
            Some("body"),
            "not valid JSON",
        ),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 20_000]),
            413,
            Some("body"),
            "at most 16384 bytes",
        ),
        (
            http.post(&url).body("name=ada&text=hi"),
            415,
            Some("Content-Type"),
            "application/json",
        ),
        (
            http.post(server.url(&format!("/rooms/{long_room}/messages")))
                .json(&json!({"name": "a", "text": "b"})),
            422,
            Some("room"),
            "at most 64 characters",
        ),
        (
            http.post(server.url("/rooms/a%0Ab/messages"))
                .json(&json!({"name": "a", "text": "b"})),
            422,
            Some("room"),
            "control characters",
        ),
        (
            http.get(server.url("/rooms/%20lobby/events")),
            422,
            Some("room"),
            "whitespace",
        ),
        (
            http.get(server.url("/no/such/thing")),
            404,
            None,
            "no such endpoint",
        ),
    ];
    for (request, status, field, needle) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{needle}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{needle}: JSON error body"
        );
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{error:?} should contain {needle:?}"
        );
        assert_eq!(body["field"].as_str(), field, "{body}");
    }

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nsse_chat_messages_posted_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nsse_chat_messages_rejected_total 12\n"),
        "{metrics}"
    );
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

#[tokio::test]
async fn the_cluster_of_one_memory_node_is_that_node() {
    let server = ChatServer::start(
        "mem-cluster",
        &[
            "--heartbeat-interval-ms",
            "200",
            "--query-timeout-ms",
            "500",
        ],
    )
    .await;
    let http = http();
    let get = |path: &str| {
        let request = http.get(server.url(path));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let mut clients = Vec::new();
    for room in ["lobby", "lobby", "side"] {
        let mut client =
            SseClient::open(&http, &server.url(&format!("/rooms/{room}/events"))).await;
        client.next_of("ready").await;
        clients.push(client);
    }
    server.wait_members(&http, "lobby", 2).await;

    let (status, nodes) = get("/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes["node"], "mem-cluster");
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{nodes}");
    assert_eq!(list[0]["id"], "mem-cluster");
    assert_eq!(list[0]["self"], true);
    assert_eq!(list[0]["connections"], 3);
    assert_eq!(list[0]["rooms"], 2);
    assert_eq!(list[0]["lastHeardMs"], 0);

    let (status, cluster) = get("/rooms?scope=cluster").await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["scope"], "cluster");
    assert_eq!(
        cluster["rooms"],
        json!([{"room": "lobby", "members": 2}, {"room": "side", "members": 1}])
    );
    assert_eq!(
        (&cluster["nodes"], &cluster["known"], &cluster["complete"]),
        (&json!(1), &json!(1), &json!(true)),
        "{cluster}"
    );
    assert_eq!(cluster["missing"], json!([]));

    // The local answer is what it always was, with or without scope=local.
    let (_, plain) = get("/rooms").await;
    let (_, local) = get("/rooms?scope=local").await;
    assert_eq!(plain, local);
    assert_eq!(
        plain,
        json!({"node": "mem-cluster", "backend": "memory", "rooms": [
            {"room": "lobby", "members": 2}, {"room": "side", "members": 1}
        ]})
    );

    let (status, members) = get("/rooms/lobby/members?scope=cluster").await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["room"], "lobby");
    assert_eq!(members["members"], 2);
    assert_eq!(
        (&members["nodes"], &members["known"], &members["complete"]),
        (&json!(1), &json!(1), &json!(true)),
        "{members}"
    );
    let (status, members) = get("/rooms/nobody/members").await;
    assert_eq!(
        (status, &members["scope"], &members["members"]),
        (200, &json!("local"), &json!(0))
    );

    // A bad scope is a 400 naming the field and the accepted values.
    for path in ["/rooms?scope=global", "/rooms/lobby/members?scope=CLUSTER"] {
        let (status, error) = get(path).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["field"], "scope", "{error}");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains(r#"scope must be "local" or "cluster""#),
            "{error}"
        );
    }

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rooms_cluster_nodes 1",
        "rooms_queries_answered_total 0",
        "rooms_control_rejected_total 0",
        "rooms_control_unsent_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn cluster_timing_flags_are_checked_at_start_up() {
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&[
            "--port",
            "0",
            "--heartbeat-interval-ms",
            "500",
            "--node-expiry-ms",
            "400",
        ])
        .output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--node-expiry-ms (400) must be longer than --heartbeat-interval-ms (500)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_gets_what_it_missed_in_order() {
    let server = ChatServer::start("mem-history", &["--history-len", "5"]).await;
    let http = http();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, answer) = server
            .post(
                &http,
                "story",
                &json!({"name": "Ann", "text": format!("part {n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id.starts_with("h1.")), "{ids:?}");

    // The header, as an EventSource reconnect sends it.
    let mut returning = SseClient::open_with(
        http.get(server.url("/rooms/story/events"))
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    let ready = returning.next_of("ready").await;
    assert_eq!(
        ready.json()["resume"],
        json!({"kind": "replayed", "messages": 2})
    );
    for (n, id) in [(2, &ids[1]), (3, &ids[2])] {
        let message = returning.next().await;
        assert_eq!(message.event, "message");
        assert_eq!(message.id.as_deref(), Some(id.as_str()));
        assert_eq!(message.json()["text"], format!("part {n}"));
    }
    let (_, live) = server
        .post(&http, "story", &json!({"name": "Ann", "text": "live"}))
        .await;
    let message = returning.next().await;
    assert_eq!(message.json()["text"], "live");
    assert_eq!(message.id.as_deref(), live["id"].as_str());

    // The query parameter, as a reloaded page sends it; from the latest id
    // nothing is replayed.
    let latest = live["id"].as_str().unwrap();
    let mut reloaded = SseClient::open(
        &http,
        &server.url(&format!("/rooms/story/events?lastEventId={latest}")),
    )
    .await;
    let ready = reloaded.next_of("ready").await;
    assert_eq!(
        ready.json()["resume"],
        json!({"kind": "replayed", "messages": 0})
    );

    // Trimmed away (5 kept: 3 to 7): a gap event first.
    for n in 5..=7 {
        server
            .post(
                &http,
                "story",
                &json!({"name": "Ann", "text": format!("part {n}")}),
            )
            .await;
    }
    let mut late = SseClient::open_with(
        http.get(server.url("/rooms/story/events"))
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    assert_eq!(late.next_of("ready").await.json()["resume"]["kind"], "gap");
    let gap = late.next().await;
    assert_eq!(
        (gap.event.as_str(), gap.json()["reason"].as_str()),
        ("gap", Some("trimmed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_ids_are_random_and_nothing_is_replayed() {
    let server = ChatServer::start("mem-no-history", &["--history-len", "0"]).await;
    let http = http();
    let (_, answer) = server
        .post(&http, "quiet", &json!({"name": "Ann", "text": "one"}))
        .await;
    let id = answer["id"].as_str().unwrap().to_owned();
    assert!(!id.starts_with("h1."), "{id}");
    let mut client = SseClient::open_with(
        http.get(server.url("/rooms/quiet/events"))
            .header("Last-Event-ID", "anything"),
    )
    .await;
    let ready = client.next_of("ready").await;
    assert_eq!(ready.json()["history"], false);
    assert_eq!(ready.json()["resume"]["kind"], "live");
}

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
