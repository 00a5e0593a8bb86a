//! The cluster adapter on a real 3-master Redis Cluster, beyond the
//! conformance suite: rooms spread over every master, a room survives the loss
//! of its master (its slots moved to another), a live slot move
//! (`sunsubscribe` from Redis) re-subscribes on the new master, and one node
//! in 1,000 rooms hears every one.
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rooms_adapter::{BroadcastOptions, ConnectOptions, RoomsEvent, SseMessage, wire};
use rooms_adapter_redis::key_slot;
use rooms_conformance::{Harness, expect_data, member, next, node, shutdown_all};
use rooms_testkit::cluster_harness::RedisClusterHarness;
use rooms_testkit::poll::eventually;
use rooms_testkit::redis_cluster::{RedisCluster, cli};

const DEADLINE: Duration = Duration::from_secs(20);

fn channel(room: &str) -> String {
    wire::channel_name(wire::DEFAULT_CHANNEL_PREFIX, room)
}

/// The index of the master serving `room`'s channel.
async fn master_of(cluster: &RedisCluster, room: &str) -> usize {
    let slot = key_slot(channel(room).as_bytes());
    cluster
        .owner_of_slot(0, slot)
        .await
        .unwrap()
        .expect("every slot is served")
}

/// A room name served by master `index`, with `tag` in it.
async fn room_on(cluster: &RedisCluster, index: usize, tag: &str) -> String {
    for i in 0.. {
        let room = format!("{tag}-{i}");
        if master_of(cluster, &room).await == index {
            return room;
        }
    }
    unreachable!()
}

/// The room channels (control channels left out) subscribed on master `index`.
async fn shard_channels(cluster: &RedisCluster, index: usize) -> BTreeSet<String> {
    cli(cluster.port(index), &["PUBSUB", "SHARDCHANNELS"])
        .await
        .unwrap()
        .lines()
        .filter(|line| line.starts_with(wire::DEFAULT_CHANNEL_PREFIX))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_every_master() {
    let h = RedisClusterHarness::setup().await.unwrap();
    let b = node(&h).await.unwrap();
    let rx = b.connect(ConnectOptions::new()).await.unwrap();
    let rooms: Vec<String> = (0..60).map(|i| format!("spread-{i}")).collect();
    for room in &rooms {
        b.join(rx.id(), room.as_str()).await.unwrap();
    }
    let cluster = h.cluster().lock().await;
    let mut seen = HashSet::new();
    for index in 0..cluster.len() {
        let channels = shard_channels(&cluster, index).await;
        assert!(
            !channels.is_empty(),
            "master {index} holds no room; rooms hash to every master"
        );
        for channel in channels {
            let room = channel
                .strip_prefix(wire::DEFAULT_CHANNEL_PREFIX)
                .unwrap()
                .to_owned();
            assert_eq!(
                master_of(&cluster, &room).await,
                index,
                "{channel} is subscribed on master {index}, which does not serve its slot"
            );
            assert_eq!(
                u32::from(key_slot(channel.as_bytes())),
                u32::from(cluster.keyslot(&channel).await.unwrap()),
                "slot of {channel}"
            );
            seen.insert(room);
        }
    }
    let all: HashSet<String> = rooms.iter().cloned().collect();
    assert_eq!(
        seen, all,
        "every room is subscribed exactly where it belongs"
    );
    drop(cluster);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_survives_the_loss_of_its_master() {
    let h = RedisClusterHarness::setup().await.unwrap();
    let (a, b) = (node(&h).await.unwrap(), node(&h).await.unwrap());
    let (doomed, survivor) = {
        let cluster = h.cluster().lock().await;
        (
            room_on(&cluster, 1, "doomed").await,
            room_on(&cluster, 2, "calm").await,
        )
    };
    let mut rx = member(&b, &doomed).await.unwrap();
    let mut calm = member(&b, &survivor).await.unwrap();
    let mut lifecycle = b.lifecycle();
    a.broadcast(
        doomed.as_str(),
        SseMessage::new("before"),
        BroadcastOptions::new(),
    )
    .await
    .unwrap();
    expect_data(&mut rx, "before").await.unwrap();

    // Master 1 dies; its slots move to master 0 (as a failover would).
    let killed = Instant::now();
    let reassigned;
    {
        let mut cluster = h.cluster().lock().await;
        cluster.kill(1).unwrap();
        cluster.reassign_slots(1, 0).await.unwrap();
        reassigned = killed.elapsed();
    }

    // Publish until the room hears again.
    let mut attempt = 0u32;
    let first_delivery = loop {
        assert!(killed.elapsed() < DEADLINE, "the room stayed dark");
        attempt += 1;
        let _ = a
            .broadcast(
                doomed.as_str(),
                SseMessage::new(format!("after-{attempt}")),
                BroadcastOptions::new(),
            )
            .await;
        if let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_millis(25), rx.recv()).await
        {
            assert!(
                delivery
                    .message()
                    .data
                    .as_str()
                    .is_some_and(|d| d.starts_with("after-"))
            );
            break killed.elapsed();
        }
    };
    eprintln!(
        "FAILOVER: room dark for {first_delivery:?} after SIGKILL of its master \
         (slots reassigned after {reassigned:?}, delivered {:?} later; {attempt} publishes tried)",
        first_delivery.saturating_sub(reassigned)
    );

    let event = next_reconnected(&mut lifecycle).await;
    let Some(RoomsEvent::Reconnected { rooms, outage, .. }) = event else {
        panic!("no Reconnected event: {event:?}");
    };
    let rooms: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    assert_eq!(rooms, vec![doomed.as_str()], "only the moved room was lost");
    eprintln!("FAILOVER: Reconnected reported an outage of {outage:?}");
    assert!(b.adapter_stats().reconnects >= 1);

    // The room on the untouched master never noticed.
    a.broadcast(
        survivor.as_str(),
        SseMessage::new("calm"),
        BroadcastOptions::new(),
    )
    .await
    .unwrap();
    expect_data(&mut calm, "calm").await.unwrap();
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_slot_move_resubscribes_on_the_new_master() {
    let h = RedisClusterHarness::setup().await.unwrap();
    let (a, b) = (node(&h).await.unwrap(), node(&h).await.unwrap());
    let room = {
        let cluster = h.cluster().lock().await;
        room_on(&cluster, 0, "moving").await
    };
    let mut rx = member(&b, &room).await.unwrap();
    let mut lifecycle = b.lifecycle();
    let slot = key_slot(channel(&room).as_bytes());
    {
        let mut cluster = h.cluster().lock().await;
        assert!(shard_channels(&cluster, 0).await.contains(&channel(&room)));
        cluster.move_slot(slot, 0, 2).await.unwrap();
        // Redis dropped the channel on the old master (and said so) ...
        assert!(!shard_channels(&cluster, 0).await.contains(&channel(&room)));
    }
    // ... and the adapter subscribed it on the new one.
    let event = next_reconnected(&mut lifecycle).await;
    let Some(RoomsEvent::Reconnected { rooms, .. }) = event else {
        panic!("no Reconnected event: {event:?}");
    };
    assert_eq!(
        rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        vec![room.as_str()]
    );
    {
        let cluster = h.cluster().lock().await;
        assert!(shard_channels(&cluster, 2).await.contains(&channel(&room)));
    }
    a.broadcast(
        room.as_str(),
        SseMessage::new("moved"),
        BroadcastOptions::new(),
    )
    .await
    .unwrap();
    expect_data(&mut rx, "moved").await.unwrap();
    shutdown_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_in_a_thousand_rooms_hears_them_all() {
    const ROOMS: usize = 1_000;
    let h = RedisClusterHarness::setup().await.unwrap();
    let (a, b) = (node(&h).await.unwrap(), node(&h).await.unwrap());
    let mut rx = b
        .connect(ConnectOptions::new().queue_capacity(2 * ROOMS))
        .await
        .unwrap();
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("thousand-{i}")).collect();
    let started = Instant::now();
    let joins = rooms.iter().map(|room| b.join(rx.id(), room.as_str()));
    for result in futures_util::future::join_all(joins).await {
        result.unwrap();
    }
    eprintln!("joined {ROOMS} rooms in {:?}", started.elapsed());
    assert_eq!(b.adapter_stats().subscriptions, ROOMS as u64);
    {
        let cluster = h.cluster().lock().await;
        let mut total = 0;
        for index in 0..cluster.len() {
            total += shard_channels(&cluster, index).await.len();
        }
        assert_eq!(total, ROOMS, "one shard subscription per room");
    }
    let started = Instant::now();
    for room in &rooms {
        a.broadcast(
            room.as_str(),
            SseMessage::new(room.as_str()),
            BroadcastOptions::new(),
        )
        .await
        .unwrap();
    }
    let mut heard = HashSet::new();
    while heard.len() < ROOMS {
        let delivery = next(&mut rx, "a message of every room").await.unwrap();
        let data = delivery.message().data.as_str().unwrap().into_owned();
        assert!(heard.insert(data), "a room was heard twice");
    }
    eprintln!(
        "{ROOMS} rooms published and heard in {:?}",
        started.elapsed()
    );
    eventually(
        "the publisher to report every publish",
        DEADLINE,
        || async { a.adapter_stats().published == ROOMS as u64 },
    )
    .await;
    shutdown_all(&[&a, &b]).await;
}

/// The next `Reconnected` (a `MediumLost` before it skipped), within the
/// deadline.
async fn next_reconnected(
    lifecycle: &mut tokio::sync::broadcast::Receiver<RoomsEvent>,
) -> Option<RoomsEvent> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, lifecycle.recv()).await {
            Ok(Ok(RoomsEvent::MediumLost { .. })) => continue,
            Ok(Ok(event)) => return Some(event),
            _ => return None,
        }
    }
}
