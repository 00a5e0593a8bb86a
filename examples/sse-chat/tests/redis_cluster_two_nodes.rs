//! Two `sse-chat` processes sharing rooms over a throwaway 3-master Redis
//! Cluster (`--redis-cluster`, sharded pub/sub): a message posted to either
//! node reaches the room's members on both, whichever master serves the
//! room's channel. Needs `--features redis`, and `redis-server` and
//! `redis-cli` 7+ on `PATH`.
#![cfg(feature = "redis")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rooms_adapter_redis::key_slot;
use rooms_testkit::redis_cluster::{self, MASTERS, RedisCluster};
use serde_json::json;
use support::{ChatServer, DEADLINE, SseClient, assert_not_printed, http, unused_port};
use tokio::time::Instant;

async fn cluster() -> RedisCluster {
    RedisCluster::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start a throwaway Redis Cluster: {error}"))
}

async fn node(name: &str, cluster: &RedisCluster) -> ChatServer {
    let seeds = cluster.urls().join(",");
    ChatServer::start(name, &["--redis-cluster", &seeds]).await
}

/// One room whose channel (`sse:room:{room}`) each master serves: index `i`
/// is served by master `i`.
async fn one_room_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut rooms: Vec<Option<String>> = vec![None; MASTERS];
    for i in 0.. {
        let room = format!("room-{i}");
        let slot = key_slot(format!("sse:room:{room}").as_bytes());
        let owner = cluster
            .owner_of_slot(0, slot)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        if rooms[owner].is_none() {
            rooms[owner] = Some(room);
        }
        if rooms.iter().all(Option::is_some) {
            break;
        }
        assert!(i < 10_000, "no room for every master: {rooms:?}");
    }
    rooms.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn two_nodes_share_rooms_on_every_master_of_a_cluster() {
    let started = Instant::now();
    let cluster = cluster().await;
    let node_a = node("cluster-a", &cluster).await;
    let node_b = node("cluster-b", &cluster).await;
    let http = http();
    let rooms = one_room_per_master(&cluster).await;

    let mut clients = Vec::new();
    for room in &rooms {
        let path = format!("/rooms/{room}/events");
        let mut on_a = SseClient::open(&http, &node_a.url(&path)).await;
        let mut on_b = SseClient::open(&http, &node_b.url(&path)).await;
        assert_eq!(
            on_a.next_of("ready").await.json()["backend"],
            "redis-cluster"
        );
        assert_eq!(on_b.next_of("ready").await.json()["node"], "cluster-b");
        clients.push((on_a, on_b));
    }

    for (master, (room, (on_a, on_b))) in rooms.iter().zip(&mut clients).enumerate() {
        // Both nodes hold a sharded subscription on the master that serves
        // the room's channel.
        let channel = format!("sse:room:{room}");
        let reply = redis_cluster::cli(cluster.port(master), &["PUBSUB", "SHARDNUMSUB", &channel])
            .await
            .unwrap();
        assert_eq!(
            reply.lines().nth(1).map(str::trim),
            Some("2"),
            "SHARDNUMSUB {channel} on master {master}: {reply:?}"
        );

        for (from, text) in [
            (&node_a, format!("to {room} via node A")),
            (&node_b, format!("to {room} via node B")),
        ] {
            let (status, answer) = from
                .post(&http, room, &json!({"name": "ada", "text": text}))
                .await;
            assert_eq!(status, 202, "{answer}");
            let id = answer["id"].as_str().unwrap();
            for client in [&mut *on_a, &mut *on_b] {
                let message = client.next().await;
                assert_eq!(message.event, "message");
                assert_eq!(message.id.as_deref(), Some(id), "same id on both nodes");
                assert_eq!(message.json()["text"], text.as_str());
            }
        }
    }

    // The counters show the cross-node traffic and the backend.
    let metrics = node_b.metrics_text(&http).await;
    assert!(metrics.contains("backend=\"redis-cluster\""), "{metrics}");
    let subscriptions = metrics.lines().find_map(|line| {
        line.strip_prefix("rooms_adapter_subscriptions ")?
            .parse::<u64>()
            .ok()
    });
    assert_eq!(subscriptions, Some(MASTERS as u64), "{metrics}");
    // The log says which topology is used, without secrets.
    assert!(
        node_a.log().contains("topology=\"cluster\""),
        "{}",
        node_a.log()
    );
    println!(
        "cluster: two nodes, {MASTERS} rooms on {MASTERS} masters, test took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_start_up_error() {
    let port = unused_port();
    let seeds = format!("redis://:hunter2@127.0.0.1:{port}");
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&["--port", "0", "--redis-cluster", &seeds]).output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the Redis cluster")
            && stderr.contains(&format!("127.0.0.1:{port}")),
        "stderr names the cluster and its address: {stderr}"
    );
    assert_not_printed(&output, "hunter2", "a start-up failure");
}
