//! Two `sse-chat` processes sharing one throwaway `redis-server`: a message
//! posted to either node reaches the room's members on both, and nothing
//! leaks into other rooms. Needs `--features redis`.
#![cfg(feature = "redis")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rooms_testkit::redis_server::RedisServer;
use serde_json::{Value, json};
use support::{ChatServer, DEADLINE, SseClient, eventually, http, redis_publish, unused_port};

/// A readiness probe's interval (Kubernetes' default `periodSeconds`):
/// `/readyz` must turn within it.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

async fn redis() -> RedisServer {
    RedisServer::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start a throwaway redis-server: {error}"))
}

async fn node(name: &str, redis: &RedisServer) -> ChatServer {
    let url = redis.url();
    ChatServer::start(name, &["--redis-url", &url]).await
}

#[tokio::test]
async fn a_message_posted_to_either_node_reaches_both_and_only_its_room() {
    let redis = redis().await;
    let node_a = node("node-a", &redis).await;
    let node_b = node("node-b", &redis).await;
    let (mut on_a, mut on_b) = support::two_nodes_share_a_room(&node_a, &node_b, "redis").await;
    let http = http();

    // Another application publishes to the room with its own event name and
    // id, in the v1 wire format the TS package writes: relayed as they are.
    let receivers = redis_publish(
        &redis.url(),
        "sse:room:lobby",
        r#"{"v":1,"m":{"event":"order.updated","data":{"orderId":7,"status":"shipped"},"id":"ext-42"},"n":"node-js-app"}"#,
    )
    .await;
    assert_eq!(receivers, 2, "both nodes subscribe to the lobby channel");
    redis_publish(
        &redis.url(),
        "sse:room:lobby",
        r#"{"v":1,"m":{"data":"[DONE]"},"n":"node-js-app"}"#,
    )
    .await;
    for client in [&mut on_a, &mut on_b] {
        let external = client.next().await;
        assert_eq!(external.event, "order.updated");
        assert_eq!(external.id.as_deref(), Some("ext-42"));
        assert_eq!(external.data, r#"{"orderId":7,"status":"shipped"}"#);
        let done = client.next().await;
        assert_eq!(
            (done.event.as_str(), done.data.as_str(), done.id.as_deref()),
            ("message", "[DONE]", None)
        );
    }

    // A client that goes away leaves the room on its node only.
    assert_eq!(node_b.members(&http, "lobby").await, 1);
    on_b.close();
    node_b.wait_members(&http, "lobby", 0).await;
    assert_eq!(node_a.members(&http, "lobby").await, 1);
    let (status, answer) = node_b
        .post(
            &http,
            "lobby",
            &json!({"name": "bob", "text": "from B to A only"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(answer["delivered"], 0, "no local member left on B");
    assert_eq!(on_a.next().await.json()["text"], "from B to A only");

    // The counters show the cross-node traffic.
    let metrics = node_a.scrape(&http).await;
    assert!(
        metrics.value("rooms_remote_received_total") >= 3.0,
        "{}",
        metrics.text
    );
    assert!(
        metrics.value("rooms_adapter_published_total") >= 2.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("rooms_adapter_subscriptions"),
        1.0,
        "{}",
        metrics.text
    );
    // Messages from node B were delivered here: the delivery histogram has
    // them, and the publish histogram has node A's own posts.
    assert!(metrics.histogram_count("rooms_delivery_duration_seconds") >= 1.0);
    assert!(metrics.histogram_count("rooms_publish_duration_seconds") >= 1.0);
    let info = metrics
        .labelled("sse_chat_info", "backend", "redis")
        .expect("sse_chat_info");
    assert_eq!(info.labels.get("node"), Some("node-a"), "{}", metrics.text);
    assert!(
        metrics
            .labelled("rooms_node_info", "medium", "redis")
            .is_some(),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn subscriptions_follow_membership_across_nodes() {
    let redis = redis().await;
    let node_a = node("sub-a", &redis).await;
    let node_b = node("sub-b", &redis).await;
    let http = http();

    // Only node B has a member: a publish to the channel reaches one node.
    let mut member = SseClient::open(&http, &node_b.url("/rooms/quiet/events")).await;
    member.next_of("ready").await;
    let receivers = redis_publish(
        &redis.url(),
        "sse:room:quiet",
        r#"{"v":1,"m":{"data":1},"n":"probe"}"#,
    )
    .await;
    assert_eq!(receivers, 1);
    assert_eq!(member.next().await.data, "1");

    // When the last member leaves, node B unsubscribes.
    member.close();
    node_b.wait_members(&http, "quiet", 0).await;
    eventually("node B to unsubscribe from quiet", DEADLINE, || async {
        let receivers = redis_publish(
            &redis.url(),
            "sse:room:quiet",
            r#"{"v":1,"m":{"data":2},"n":"probe"}"#,
        )
        .await;
        (receivers == 0).then_some(())
    })
    .await;
    drop(node_a);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_start_up_error() {
    let port = unused_port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&["--port", "0", "--redis-url", &url]).output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "stderr names the address: {stderr}"
    );
}

#[tokio::test]
async fn answers_while_redis_is_down_do_not_name_it() {
    let mut redis = redis().await;
    let port = redis.port().to_string();
    let node_a = node("down-a", &redis).await;
    let http = http();
    let mut member = SseClient::open(&http, &node_a.url("/rooms/lobby/events")).await;
    member.next_of("ready").await;

    redis.kill().unwrap();
    // The publish fails (within the publish timeout): 503, the local member
    // still gets the message, and the answer names neither host nor port.
    let (status, answer) = node_a
        .post(
            &http,
            "lobby",
            &json!({"name": "ada", "text": "while down"}),
        )
        .await;
    assert_eq!(status, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert_eq!(
        error,
        "delivered on this node only; other nodes were not reached"
    );
    let body = answer.to_string();
    for leak in ["127.0.0.1", port.as_str(), "redis"] {
        assert!(!body.contains(leak), "the answer leaks {leak:?}: {body}");
    }
    assert_eq!(member.next().await.json()["text"], "while down");
    // The detail is in the server's log instead.
    eventually("the publish failure in the log", DEADLINE, || async {
        node_a
            .log()
            .contains("publish to other nodes failed")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn readyz_turns_unavailable_while_redis_is_down_and_ready_when_it_is_back() {
    let mut redis = redis().await;
    let chat = node("node-a", &redis).await;
    let http = http();
    let status = || {
        let http = http.clone();
        let url = chat.url("/readyz");
        async move {
            http.get(&url)
                .send()
                .await
                .map(|response| response.status().as_u16())
                .ok()
        }
    };
    assert_eq!(status().await, Some(200));
    redis.kill().unwrap();
    let killed = std::time::Instant::now();
    eventually("/readyz answers 503", DEADLINE, || async {
        (status().await == Some(503)).then_some(())
    })
    .await;
    let to_down = killed.elapsed();
    println!("/readyz turned 503 {to_down:?} after the kill");
    assert!(
        to_down <= PROBE_INTERVAL,
        "/readyz took {to_down:?} to turn 503, over a probe interval ({PROBE_INTERVAL:?})"
    );
    let healthz = http.get(chat.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "liveness is not readiness");
    redis.restart().await.unwrap();
    let restarted = std::time::Instant::now();
    eventually("/readyz answers 200 again", DEADLINE, || async {
        (status().await == Some(200)).then_some(())
    })
    .await;
    let to_up = restarted.elapsed();
    println!("/readyz turned 200 {to_up:?} after the restart");
    assert!(
        to_up <= PROBE_INTERVAL,
        "/readyz took {to_up:?} to turn 200 again, over a probe interval ({PROBE_INTERVAL:?})"
    );
}

/// The cluster timing of the cluster test: heartbeats every 200 ms, a node
/// silent for 1 s is gone, queries wait 500 ms for answers.
const FAST_CLUSTER: [&str; 6] = [
    "--heartbeat-interval-ms",
    "200",
    "--node-expiry-ms",
    "1000",
    "--query-timeout-ms",
    "500",
];

async fn fast_node(name: &str, redis: &RedisServer) -> ChatServer {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str()];
    args.extend_from_slice(&FAST_CLUSTER);
    ChatServer::start(name, &args).await
}

/// GET a cluster endpoint; a 501 means the Redis adapter has no control
/// channel (it comes with the `redis-control` work): said plainly.
async fn cluster_get(node: &ChatServer, http: &reqwest::Client, path: &str) -> Value {
    let (status, body) = node.get_json(http, path).await;
    assert_ne!(
        status, 501,
        "{path} answered 501: this build's Redis adapter does not declare the control \
         capability (node liveness, cross-node queries): {body}"
    );
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// `(members of room, answered, known, complete)` of `GET /rooms?scope=cluster`.
async fn cluster_count(
    node: &ChatServer,
    http: &reqwest::Client,
    room: &str,
) -> (u64, u64, u64, bool) {
    let body = cluster_get(node, http, "/rooms?scope=cluster").await;
    let members = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["room"] == room)
        .map_or(0, |entry| entry["members"].as_u64().unwrap());
    (
        members,
        body["nodes"].as_u64().unwrap(),
        body["known"].as_u64().unwrap(),
        body["complete"].as_bool().unwrap(),
    )
}

async fn node_ids(node: &ChatServer, http: &reqwest::Client) -> Vec<String> {
    let body = cluster_get(node, http, "/nodes").await;
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_str().unwrap().to_owned())
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn cluster_counts_span_both_nodes_and_a_killed_node_drops_out_within_a_few_heartbeats() {
    let redis = redis().await;
    let node_a = fast_node("cluster-a", &redis).await;
    let mut node_b = fast_node("cluster-b", &redis).await;
    let http = http();

    for node in [&node_a, &node_b] {
        eventually("each node to know both nodes", DEADLINE, || async {
            (node_ids(node, &http).await.len() == 2).then_some(())
        })
        .await;
    }
    let ids = node_ids(&node_a, &http).await;
    assert_eq!(ids, ["cluster-a", "cluster-b"], "this node first");

    let mut clients = Vec::new();
    for (node, count) in [(&node_a, 2), (&node_b, 3)] {
        for _ in 0..count {
            let mut client = SseClient::open(&http, &node.url("/rooms/r/events")).await;
            client.next_of("ready").await;
            clients.push(client);
        }
        node.wait_members(&http, "r", count).await;
    }

    // Either node: 5 members in r, from 2 nodes, complete.
    for node in [&node_a, &node_b] {
        let answer = eventually("5 members in r from 2 nodes", DEADLINE, || async {
            let answer = cluster_count(node, &http, "r").await;
            (answer == (5, 2, 2, true)).then_some(answer)
        })
        .await;
        println!("GET /rooms?scope=cluster on {}: {answer:?}", node.base);
        let members = cluster_get(node, &http, "/rooms/r/members?scope=cluster").await;
        assert_eq!(members["members"], 5, "{members}");
        assert_eq!(members["complete"], true, "{members}");
        assert_eq!(members["nodes"], 2, "{members}");
    }

    // Node B dies without a word: node A counts it until its heartbeats are
    // overdue (its answers incomplete meanwhile), then drops it.
    node_b.kill_hard().await;
    let killed = std::time::Instant::now();
    let first_incomplete = std::cell::Cell::new(None);
    // Two clocks: the count (each poll while node B is overdue waits the
    // query timeout for it) and `GET /nodes` (instant, so it times the
    // expiry itself).
    let count_dropped = async {
        eventually(
            "node A to report 2 members from 1 node, complete",
            DEADLINE,
            || async {
                let answer = cluster_count(&node_a, &http, "r").await;
                if !answer.3 && first_incomplete.get().is_none() {
                    first_incomplete.set(Some((killed.elapsed(), answer)));
                }
                (answer == (2, 1, 1, true)).then_some(())
            },
        )
        .await;
        killed.elapsed()
    };
    let node_dropped = async {
        eventually("node A to list one node", DEADLINE, || async {
            (node_ids(&node_a, &http).await.len() == 1).then_some(())
        })
        .await;
        killed.elapsed()
    };
    let (to_two, to_expiry) = tokio::join!(count_dropped, node_dropped);
    if let Some((after, answer)) = first_incomplete.get() {
        println!("first incomplete answer {after:?} after the kill: {answer:?}");
    }
    println!("GET /nodes on node A dropped node B {to_expiry:?} after it was killed");
    println!(
        "node A reported 2 members from 1 node, complete, {to_two:?} after node B was killed \
         (heartbeat 200 ms, expiry 1 s, query timeout 500 ms, polled back to back)"
    );
    assert!(
        to_two <= Duration::from_secs(5),
        "the dead node was counted for {to_two:?}"
    );
    assert_eq!(node_ids(&node_a, &http).await, ["cluster-a"]);
    let members = cluster_get(&node_a, &http, "/rooms/r/members?scope=cluster").await;
    assert_eq!(
        (&members["members"], &members["nodes"], &members["complete"]),
        (&json!(2), &json!(1), &json!(true)),
        "{members}"
    );
    eventually("node A to log that node B left", DEADLINE, || async {
        let log = node_a.log();
        (log.contains("cluster: node left") && log.contains("cluster-b")).then_some(())
    })
    .await;
}

/// Issue 14's "done means": messages posted on node A; a client connecting
/// to node B with the first one's id gets the second and third, in order,
/// before anything live; from a trimmed or unknown position, `event: gap`
/// first.
#[tokio::test]
async fn a_client_resuming_on_another_node_gets_what_it_missed_from_redis_history() {
    let redis = redis().await;
    let url = redis.url();
    let node_a = ChatServer::start("history-a", &["--redis-url", &url, "--history-len", "4"]).await;
    let node_b = ChatServer::start("history-b", &["--redis-url", &url, "--history-len", "4"]).await;
    let http = http();

    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, answer) = node_a
            .post(
                &http,
                "saga",
                &json!({"name": "ada", "text": format!("part {n}")}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    let mut returning = SseClient::open_with(
        http.get(node_b.url("/rooms/saga/events"))
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    let ready = returning.next_of("ready").await;
    assert_eq!(ready.json()["backend"], "redis");
    assert_eq!(
        ready.json()["resume"],
        json!({"kind": "replayed", "messages": 2})
    );
    for n in 2..=3 {
        let message = returning.next().await;
        assert_eq!(message.event, "message");
        assert_eq!(message.id.as_deref(), Some(ids[n - 1].as_str()));
        assert_eq!(message.json()["text"], format!("part {n}"));
    }
    let (_, live) = node_a
        .post(&http, "saga", &json!({"name": "ada", "text": "live"}))
        .await;
    let message = returning.next().await;
    assert_eq!(message.json()["text"], "live");
    assert_eq!(message.id.as_deref(), live["id"].as_str());

    // Four kept (3 to 6 after two more): what followed the first is trimmed.
    for text in ["part 5", "part 6"] {
        node_a
            .post(&http, "saga", &json!({"name": "ada", "text": text}))
            .await;
    }
    for last in [ids[0].as_str(), "not-a-known-id"] {
        let mut late = SseClient::open_with(
            http.get(node_b.url("/rooms/saga/events"))
                .header("Last-Event-ID", last),
        )
        .await;
        assert_eq!(late.next_of("ready").await.json()["resume"]["kind"], "gap");
        let gap = late.next().await;
        assert_eq!(gap.event, "gap", "{gap:?}");
        println!("resume from {last:?}: gap {}", gap.data);
    }
}
