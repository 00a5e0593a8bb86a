//! Two `sse-chat` processes sharing a room over a throwaway Redis Sentinel
//! deployment (`--redis-sentinel`, `--redis-sentinel-master`: a master, a
//! replica and three sentinels), through a failover: the master is killed,
//! the sentinels promote the replica, and messages get through again. Prints
//! how long the room was dark (from the kill until the first message got
//! through). Needs `--features redis`, and `redis-server` on `PATH`.
#![cfg(feature = "redis")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rooms_testkit::redis_sentinel::{RedisSentinel, SENTINEL_DEADLINE};
use serde_json::json;
use support::{ChatServer, DEADLINE, SseClient, SseEvent, assert_not_printed, http, unused_port};
use tokio::time::Instant;

/// How long messages may take to get through again after a failover (the
/// sentinels' failover, up to 30 s when their votes split, plus the nodes'
/// reconnect backoff, at most 5 s between two attempts).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// How often a message is posted while waiting for one to get through: the
/// resolution of the measured dark time.
const POST_EVERY: Duration = Duration::from_millis(100);

async fn deployment() -> RedisSentinel {
    RedisSentinel::start().await.unwrap_or_else(|error| {
        panic!("cannot start a throwaway Redis Sentinel deployment: {error}")
    })
}

async fn node(name: &str, deployment: &RedisSentinel) -> ChatServer {
    let sentinels = deployment.sentinel_urls().join(",");
    ChatServer::start(
        name,
        &[
            "--redis-sentinel",
            &sentinels,
            "--redis-sentinel-master",
            deployment.master_name(),
        ],
    )
    .await
}

/// Posts `{tag} #n` to `room` on `from` every [`POST_EVERY`] (each POST in its
/// own task, so one held up by the outage does not delay the next) until
/// `to` receives one of them; returns it. Bounded: at most
/// `RECOVERY_DEADLINE / POST_EVERY` posts, and a panic after
/// [`RECOVERY_DEADLINE`].
async fn post_until_through(
    http: &reqwest::Client,
    from: &ChatServer,
    room: &str,
    to: &mut SseClient,
    tag: &str,
) -> SseEvent {
    let url = from.url(&format!("/rooms/{room}/messages"));
    let poster = {
        let (http, tag) = (http.clone(), tag.to_owned());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(POST_EVERY);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let most = RECOVERY_DEADLINE.as_millis() / POST_EVERY.as_millis();
            for attempt in 0..most {
                pace.tick().await;
                let request = http
                    .post(&url)
                    .json(&json!({"name": "ada", "text": format!("{tag} #{attempt}")}))
                    .timeout(Duration::from_secs(5));
                tokio::spawn(async move {
                    let _ = request.send().await;
                });
            }
        })
    };
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    let arrived = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = to.next_within(left).await else {
            panic!("the SSE stream ended while waiting for {tag:?}");
        };
        let text = event.json()["text"].as_str().map(str::to_owned);
        if event.event == "message" && text.is_some_and(|text| text.starts_with(tag)) {
            break event;
        }
        // Anything else is skipped: a `notice` that the link was down (shown),
        // or a message `to`'s own node posted (delivered locally meanwhile).
        if event.event != "message" {
            println!(
                "sentinel: while waiting for {tag:?}: {} {}",
                event.event, event.data
            );
        }
    };
    poster.abort();
    arrived
}

#[tokio::test]
async fn a_room_survives_a_sentinel_failover() {
    let started = Instant::now();
    let mut deployment = deployment().await;
    let node_a = node("sentinel-a", &deployment).await;
    let node_b = node("sentinel-b", &deployment).await;
    let http = http();

    let mut on_a = SseClient::open(&http, &node_a.url("/rooms/lobby/events")).await;
    let mut on_b = SseClient::open(&http, &node_b.url("/rooms/lobby/events")).await;
    assert_eq!(
        on_a.next_of("ready").await.json()["backend"],
        "redis-sentinel"
    );
    assert_eq!(on_b.next_of("ready").await.json()["node"], "sentinel-b");
    assert!(
        node_a.log().contains("topology=\"sentinel\""),
        "{}",
        node_a.log()
    );

    // Before the failover: A to B.
    let (status, answer) = node_a
        .post(
            &http,
            "lobby",
            &json!({"name": "ada", "text": "before the failover"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let message = on_b.next().await;
    assert_eq!(message.event, "message");
    assert_eq!(message.id.as_deref(), answer["id"].as_str());
    assert_eq!(message.json()["text"], "before the failover");
    assert_eq!(on_a.next().await.json()["text"], "before the failover");

    // Crash the master; the sentinels promote the replica.
    let old_master = deployment.kill_master().await.unwrap();
    let killed = Instant::now();
    let (new_master, failover) = deployment
        .wait_for_failover(old_master, SENTINEL_DEADLINE)
        .await
        .unwrap();
    assert_ne!(new_master, old_master);

    // After it: A to B again, then B to A.
    let through =
        post_until_through(&http, &node_a, "lobby", &mut on_b, "A after the failover").await;
    let dark = killed.elapsed();
    assert_eq!(through.event, "message");
    let back = post_until_through(&http, &node_b, "lobby", &mut on_a, "B after the failover").await;
    let dark_back = killed.elapsed();
    assert_eq!(back.event, "message");

    println!(
        "sentinel failover: master 127.0.0.1:{old_master} killed, 127.0.0.1:{new_master} \
         promoted after {failover:?}; room dark for {dark:?} (A to B, from the kill to the \
         first message through), {dark_back:?} until B to A too; test took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_sentinels_are_a_clear_start_up_error() {
    let port = unused_port();
    let sentinels = format!("redis://:hunter2@127.0.0.1:{port}");
    let output = tokio::time::timeout(
        DEADLINE,
        ChatServer::command(&[
            "--port",
            "0",
            "--redis-sentinel",
            &sentinels,
            "--redis-sentinel-master",
            "mymaster",
        ])
        .output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the Redis sentinel deployment")
            && stderr.contains(&format!("127.0.0.1:{port}"))
            && stderr.contains("mymaster"),
        "stderr names the deployment, its address and the master: {stderr}"
    );
    assert_not_printed(&output, "hunter2", "a start-up failure");
}
