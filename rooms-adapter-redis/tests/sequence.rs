//! The Redis event-id sequence: one counter for every node.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use futures_util::future::join_all;
use rooms_adapter::sequence::EventIdSequence;
use rooms_adapter_redis::RedisEventIdSequence;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_increase_across_two_nodes() {
    let server = server().await;
    let url = server.url();
    let a = RedisEventIdSequence::connect(&url, "chat:event-id")
        .await
        .expect("a");
    let b = RedisEventIdSequence::connect(&url, "chat:event-id")
        .await
        .expect("b");
    let other = RedisEventIdSequence::connect(&url, "other:event-id")
        .await
        .expect("other");

    assert_eq!(a.next_id().await.expect("id"), "0-000000000001");
    assert_eq!(b.next_id().await.expect("id"), "0-000000000002");
    assert_eq!(
        other.next_id().await.expect("id"),
        "0-000000000001",
        "keys are independent"
    );

    // Alternating: each id is larger than the one before, whichever node asks.
    let mut last = String::from("0-000000000002");
    for i in 0..100 {
        let sequence = if i % 2 == 0 { &a } else { &b };
        let id = sequence.next_id().await.expect("id");
        assert!(id > last, "{id} after {last}");
        last = id;
    }

    // Concurrent: no duplicates, no gaps.
    let ids = join_all((0..200).map(|i| if i % 2 == 0 { a.next_id() } else { b.next_id() })).await;
    let ids: BTreeSet<String> = ids.into_iter().map(|id| id.expect("id")).collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(ids.first().map(String::as_str), Some("0-000000000103"));
    assert_eq!(ids.last().map(String::as_str), Some("0-000000000302"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_a_retryable_error() {
    let mut server = server().await;
    let url = server.url();
    let ids = RedisEventIdSequence::connect(&url, "k")
        .await
        .expect("connect");
    server.kill().expect("kill");
    let error = ids.next_id().await.expect_err("down");
    assert!(error.is_retryable(), "{error}");
    let error = RedisEventIdSequence::connect(&url, "k")
        .await
        .expect_err("down");
    assert!(error.is_retryable(), "{error}");
}
