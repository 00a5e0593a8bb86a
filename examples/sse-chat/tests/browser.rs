//! The chat page in a real browser: headless Chromium, driven through
//! chromedriver by fantoccini. Two people in one room on one node (memory
//! backend); each sends, each sees the other's message live.
//!
//! Skips with a loud `SKIPPED:` line when Chromium or chromedriver is missing,
//! unless `ROOMS_REQUIRE_BROWSER` is set.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;

use fantoccini::{Client, Locator, key::Key};
use serde_json::json;
use support::browser::{self, Browser};
use support::{ChatServer, http};

/// Opens the page as `name` in `room` and waits until the stream is live.
pub async fn open_chat(client: &Client, base: &str, name: &str, room: &str) {
    client
        .goto(&format!("{base}/?name={name}&room={room}"))
        .await
        .unwrap();
    browser::wait_text(client, "#status", "Live").await;
    browser::wait_text(client, "#room-title", &format!("#{room}")).await;
}

/// Types a message into the composer and sends it, with the button or Enter.
pub async fn say(client: &Client, text: &str, with_enter: bool) {
    let input = client.find(Locator::Id("text")).await.unwrap();
    input.send_keys(text).await.unwrap();
    if with_enter {
        input.send_keys(&Key::Enter.to_string()).await.unwrap();
    } else {
        client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_people_chat_in_one_room_on_one_node() {
    let Some(mut chrome) = Browser::launch().await else {
        return;
    };
    let server = ChatServer::start("browser-node", &[]).await;
    let http = http();
    let alice = chrome.session().await;
    let bob = chrome.session().await;

    let scenario = AssertUnwindSafe(async {
        open_chat(&alice, &server.base, "Alice", "lobby").await;
        open_chat(&bob, &server.base, "Bob", "lobby").await;
        server.wait_members(&http, "lobby", 2).await;

        say(
            &bob,
            "Hi Alice! Bob here, typing in another browser.",
            false,
        )
        .await;
        browser::wait_for_text_among(
            &alice,
            ".msg .text",
            "Hi Alice! Bob here, typing in another browser.",
        )
        .await;

        say(&alice, "Hello Bob, I see you live over SSE.", true).await;
        browser::wait_for_text_among(&bob, ".msg .text", "Hello Bob, I see you live over SSE.")
            .await;
        // Own messages are drawn on the right.
        browser::wait_for_text_among(
            &alice,
            ".msg.mine .text",
            "Hello Bob, I see you live over SSE.",
        )
        .await;

        // A third person posts through the HTTP API, with two lines.
        let (status, _) = server
            .post(
                &http,
                "lobby",
                &json!({"name": "Carol", "text": "Joining from curl.\nWorks for me too."}),
            )
            .await;
        assert_eq!(status, 202);
        browser::wait_for_text_among(
            &alice,
            ".msg .text",
            "Joining from curl.\nWorks for me too.",
        )
        .await;
        browser::wait_for_text_among(&bob, ".msg .text", "Joining from curl.\nWorks for me too.")
            .await;

        // A message in another room does not show.
        let (status, _) = server
            .post(
                &http,
                "elsewhere",
                &json!({"name": "Dave", "text": "not for the lobby"}),
            )
            .await;
        assert_eq!(status, 202);
        say(&bob, "sentinel from Bob", false).await;
        browser::wait_for_text_among(&alice, ".msg .text", "sentinel from Bob").await;
        let seen = browser::texts(&alice, ".msg .text").await;
        assert!(
            !seen.iter().any(|text| text == "not for the lobby"),
            "{seen:?}"
        );

        // The page counts the room's members across the cluster (of one
        // node here).
        browser::wait_text(&alice, "#room-meta", "2 members on 1 node").await;

        // A validation error is shown in the page.
        let too_long = "x".repeat(2000) + "y";
        alice
            .execute(
                "document.getElementById('text').removeAttribute('maxlength');",
                vec![],
            )
            .await
            .unwrap();
        say(&alice, &too_long, false).await;
        browser::wait_text(
            &alice,
            "#send-error",
            "Not sent: text must be at most 2000 characters, got 2001",
        )
        .await;
        // Clear the composer as a person would (select all, delete), which
        // also shrinks it back.
        let input = alice.find(Locator::Id("text")).await.unwrap();
        input.send_keys(&(Key::Control + "a")).await.unwrap();
        input.send_keys(&Key::Backspace.to_string()).await.unwrap();
        alice
            .execute(
                "document.getElementById('send-error').textContent = '';",
                vec![],
            )
            .await
            .unwrap();

        let path = browser::screenshot(&alice, "chat-memory-alice").await;
        browser::screenshot(&bob, "chat-memory-bob").await;
        assert!(
            std::fs::metadata(&path).unwrap().len() > 10_000,
            "a real picture"
        );

        // Closing a browser makes its connection leave the room.
        bob.clone().close().await.unwrap();
        server.wait_members(&http, "lobby", 1).await;
        // The count follows (the page polls it every few seconds).
        browser::wait_text(&alice, "#room-meta", "1 member on 1 node").await;
    })
    .catch_unwind()
    .await;

    let _ = alice.close().await;
    if let Err(panic) = scenario {
        std::panic::resume_unwind(panic);
    }
}

/// Alice on node A, Bob on node B, one Redis between them; another
/// application publishes its own event to the room.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_people_on_two_nodes_over_redis() {
    use rooms_testkit::redis_server::RedisServer;

    let Some(mut chrome) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start()
        .await
        .expect("a throwaway redis-server");
    let redis_url = redis.url();
    // Fast heartbeats, and a node silent for 6 s is gone: long enough to
    // see the page mark an incomplete count after node B is killed.
    let timing = ["--heartbeat-interval-ms", "200", "--node-expiry-ms", "6000"];
    let node_a = ChatServer::start(
        "node-a",
        &[&["--redis-url", &redis_url][..], &timing].concat(),
    )
    .await;
    let mut node_b = ChatServer::start(
        "node-b",
        &[&["--redis-url", &redis_url][..], &timing].concat(),
    )
    .await;
    let http = http();
    let alice = chrome.session().await;
    let bob = chrome.session().await;

    let scenario = AssertUnwindSafe(async {
        // Alice's page also listens for the other application's event name.
        alice
            .goto(&format!("{}/?name=Alice&room=orders&events=order.updated", node_a.base))
            .await
            .unwrap();
        browser::wait_text(&alice, "#status", "Live").await;
        open_chat(&bob, &node_b.base, "Bob", "orders").await;
        node_a.wait_members(&http, "orders", 1).await;
        node_b.wait_members(&http, "orders", 1).await;
        browser::wait_text(&alice, "#node", "redis · node node-a").await;
        browser::wait_text(&bob, "#node", "redis · node node-b").await;
        // Counted across the cluster (needs the Redis control channel).
        browser::wait_text(&alice, "#room-meta", "2 members on 2 nodes").await;
        browser::wait_text(&bob, "#room-meta", "2 members on 2 nodes").await;

        say(&alice, "Hi Bob, I am on node A.", true).await;
        browser::wait_for_text_among(&bob, ".msg .text", "Hi Bob, I am on node A.").await;
        say(&bob, "Hi Alice, node B here. Redis carried that.", false).await;
        browser::wait_for_text_among(&alice, ".msg .text", "Hi Alice, node B here. Redis carried that.").await;

        let receivers = support::redis_publish(
            &redis_url,
            "sse:room:orders",
            r#"{"v":1,"m":{"event":"order.updated","data":{"orderId":7,"status":"shipped"},"id":"ext-42"},"n":"billing-service"}"#,
        )
        .await;
        assert_eq!(receivers, 2);
        browser::wait_text(&alice, ".event[data-event='order.updated'] .id", "id: ext-42").await;
        let data = browser::text_of(&alice, ".event[data-event='order.updated'] pre").await.unwrap();
        assert!(data.contains("\"orderId\": 7") && data.contains("\"status\": \"shipped\""), "{data}");
        say(&bob, "Order 7 shipped, nice.", false).await;
        browser::wait_for_text_among(&alice, ".msg .text", "Order 7 shipped, nice.").await;

        browser::screenshot(&alice, "chat-redis-node-a-alice").await;
        browser::screenshot(&bob, "chat-redis-node-b-bob").await;

        bob.clone().close().await.unwrap();
        node_b.wait_members(&http, "orders", 0).await;
        assert_eq!(node_a.members(&http, "orders").await, 1);
        browser::wait_text(&alice, "#room-meta", "1 member on 2 nodes").await;

        // Node B dies without a word: until it expires, node A's count lacks
        // its answer, and the page says so; then node B is gone.
        node_b.kill_hard().await;
        browser::wait_text(&alice, "#room-meta", "1 member on 1 of 2 nodes (incomplete)").await;
        assert_eq!(
            alice
                .find(Locator::Id("room-meta"))
                .await
                .unwrap()
                .attr("class")
                .await
                .unwrap()
                .as_deref(),
            Some("meta partial")
        );
        browser::screenshot(&alice, "chat-redis-node-a-incomplete-count").await;
        browser::wait_text(&alice, "#room-meta", "1 member on 1 node").await;
    })
    .catch_unwind()
    .await;

    let _ = alice.close().await;
    if let Err(panic) = scenario {
        std::panic::resume_unwind(panic);
    }
}

/// A stream that drops (its node killed) catches up by itself: the page's
/// `EventSource` reconnects with `Last-Event-ID` once the node is back, and
/// the messages posted meanwhile on the other node appear, replayed from the
/// Redis history, without a reload.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_dropped_stream_catches_up_after_the_automatic_reconnect() {
    use rooms_testkit::redis_server::RedisServer;

    let Some(mut chrome) = Browser::launch().await else {
        return;
    };
    let redis = RedisServer::start()
        .await
        .expect("a throwaway redis-server");
    let redis_url = redis.url();
    let args = ["--redis-url", redis_url.as_str()];
    let port = support::unused_port();
    let mut node_a = ChatServer::start_on("node-a", port, &args).await;
    let node_b = ChatServer::start("node-b", &args).await;
    let http = http();
    let alice = chrome.session().await;

    let scenario = AssertUnwindSafe(async {
        open_chat(&alice, &node_a.base, "Alice", "saga").await;
        node_a.wait_members(&http, "saga", 1).await;
        let post = |text: &'static str| {
            let (node_b, http) = (&node_b, &http);
            async move {
                let (status, answer) = node_b
                    .post(http, "saga", &json!({"name": "Bob", "text": text}))
                    .await;
                assert_eq!(status, 202, "{answer}");
            }
        };
        post("Before the drop.").await;
        browser::wait_for_text_among(&alice, ".msg .text", "Before the drop.").await;

        node_a.kill_hard().await;
        browser::wait_text(&alice, "#status", "Reconnecting…").await;
        post("Sent while you were away, 1.").await;
        post("Sent while you were away, 2.").await;

        let _node_a = ChatServer::start_on("node-a", port, &args).await;
        browser::wait_for_text_among(&alice, ".msg .text", "Sent while you were away, 2.").await;
        browser::wait_text(&alice, "#status", "Live").await;
        let texts = browser::texts(&alice, ".msg .text").await;
        assert_eq!(
            texts,
            [
                "Before the drop.",
                "Sent while you were away, 1.",
                "Sent while you were away, 2."
            ],
            "every message once, in order"
        );
        let notices = browser::texts(&alice, ".notice").await;
        assert!(
            notices.iter().any(|n| n.contains("2 messages you missed")),
            "{notices:?}"
        );
        browser::screenshot(&alice, "chat-redis-caught-up-after-reconnect").await;
    })
    .catch_unwind()
    .await;

    let _ = alice.close().await;
    if let Err(panic) = scenario {
        std::panic::resume_unwind(panic);
    }
}
