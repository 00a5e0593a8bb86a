//! The throwaway cluster itself: starts, loses a master, moves its slots,
//! comes back after a full restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rooms_testkit::redis_cluster::{RedisCluster, cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_kills_reassigns_and_restarts() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start().await.expect("cluster starts");
    eprintln!("cluster started in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);

    // Each master owns a third of the slots.
    for (slot, owner) in [(0u16, 0usize), (8000, 1), (16383, 2)] {
        assert_eq!(cluster.owner_of_slot(0, slot).await.unwrap(), Some(owner));
    }
    assert_eq!(cluster.keyslot("foo").await.unwrap(), 12182);

    // A full restart brings it back.
    let restarted = Instant::now();
    cluster.kill_all().unwrap();
    cluster.restart_all().await.expect("cluster restarts");
    eprintln!("cluster restarted in {:?}", restarted.elapsed());

    // Master 1 dies; its slots move to master 0.
    let moved = Instant::now();
    cluster.kill(1).unwrap();
    cluster.reassign_slots(1, 0).await.expect("slots move");
    eprintln!("slots reassigned in {:?}", moved.elapsed());
    assert_eq!(cluster.owner_of_slot(2, 8000).await.unwrap(), Some(0));
    let reply = cli(cluster.port(2), &["SPUBLISH", "foo", "x"]).await;
    assert!(reply.is_ok(), "{reply:?}");
}
