//! Room history on a Redis Cluster: both keys of a room live in its
//! channel's slot, on the master serving it, and the script's `SPUBLISH`
//! reaches subscribers.
#![cfg(feature = "cluster")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use rooms_adapter::RoomName;
use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter_redis::key_slot;

use common::history::*;
use common::*;

/// On a cluster both keys of a room live in its channel's slot, on the
/// master serving it, and the script's SPUBLISH reaches subscribers.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_live_on_the_channel_slot() {
    use rooms_conformance::Harness;
    use rooms_testkit::cluster_harness::RedisClusterHarness;
    use rooms_testkit::redis_cluster::cli;

    let h = RedisClusterHarness::setup().await.expect("cluster");
    let connect =
        |id: &'static str| connect_adapter(h.adapter_with(|b| b).expect("valid"), id, 1_024);
    let (a, _) = connect("a").await;
    let (b, mut b_events) = connect("b").await;
    assert!(a.capabilities().history);
    let rooms = ["alpha", "beta", "gamma", "{x}delta", "epsilon"];
    for name in rooms {
        let room = RoomName::from(name);
        b.subscribe(&room).await.expect("subscribe");
        let position = a
            .publish_with_history(&room, &message(name), &policy(10))
            .await
            .expect("publish");
        let (got, received) = next_message(&mut b_events).await;
        assert_eq!(got, room);
        assert_eq!(received.message().id, Some(position.to_id()));
        let page = read(&b, &room, None).await;
        assert_eq!(offsets(&page), vec![1]);

        let channel = format!("sse:room:{name}");
        let slot = key_slot(channel.as_bytes());
        let cluster = h.cluster().lock().await;
        let owner = cluster
            .owner_of_slot(0, slot)
            .await
            .unwrap()
            .expect("served");
        let (stream, meta) = keys_of(&channel);
        for key in [&stream, &meta] {
            assert_eq!(cluster.keyslot(key).await.unwrap(), slot, "{key}");
            let exists = cli(cluster.port(owner), &["EXISTS", key]).await.unwrap();
            assert_eq!(exists.trim(), "1", "{key} on master {owner}");
        }
    }
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
}
