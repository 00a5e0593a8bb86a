//! Two `sse-chat` processes sharing one PostgreSQL server (LISTEN/NOTIFY;
//! `ROOMS_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`):
//! a message posted to either node reaches the room's members on both, and
//! nothing leaks into other rooms. Needs `--features postgres`.
#![cfg(feature = "postgres")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rooms_testkit::postgres_server::server_url;
use support::ChatServer;

async fn node(name: &str) -> ChatServer {
    ChatServer::start(name, &["--postgres-url", &server_url()]).await
}

#[tokio::test]
async fn a_message_posted_to_either_node_reaches_both_and_only_its_room() {
    let node_a = node("node-a").await;
    let node_b = node("node-b").await;
    support::two_nodes_share_a_room(&node_a, &node_b, "postgres").await;
}
