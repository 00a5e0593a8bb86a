//! Two `sse-chat` processes sharing one throwaway `nats-server`: a message
//! posted to either node reaches the room's members on both, and nothing
//! leaks into other rooms. Needs `--features nats`.
#![cfg(feature = "nats")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rooms_testkit::nats_server::NatsServer;
use support::ChatServer;

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
    support::two_nodes_share_a_room(&node_a, &node_b, "nats").await;
}
