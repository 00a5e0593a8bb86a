//! Room history on a real redis-server, what is stored: the key layout
//! (names, slot, ttl), trimming reflected in `first`, a new epoch once the
//! keys are lost, ids spliced in without touching hostile data, the payload
//! limit, and foreign garbage in the stream skipped and counted. Outages are
//! in `history_outage.rs`, the cluster layout in `history_cluster.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter::history::{HistoryPolicy, Position};
use rooms_adapter::{Codec, Envelope, Error, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::redis;
use tokio::time::Instant;

use common::history::*;
use common::*;

/// Stored and published with the position as id; the keys are named by the
/// rule, carry the ttl, and the stream holds `{offset}-0` entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_store_positions_under_the_documented_keys() {
    let server = server().await;
    let url = server.url();
    let (a, _) = connected(&url, "a", |b| b).await;
    let (b, mut b_events) = connected(&url, "b", |b| b).await;
    assert!(a.capabilities().history);
    let room = RoomName::from("story");
    b.subscribe(&room).await.expect("subscribe");
    let mut positions = Vec::new();
    for n in 1..=3 {
        let position = a
            .publish_with_history(&room, &message(&format!("m{n}")), &policy(100))
            .await
            .expect("publish");
        assert_eq!(position.offset(), n);
        let (_, received) = next_message(&mut b_events).await;
        assert_eq!(received.message().id, Some(position.to_id()));
        assert_eq!(data_of(&received), format!("m{n}"));
        positions.push(position);
    }
    assert!(positions.iter().all(|p| p.epoch() == positions[0].epoch()));

    let page = read(&b, &room, None).await;
    assert_eq!(page.epoch, positions[0].epoch());
    assert_eq!((page.first, page.latest), (1, 3));
    assert_eq!(offsets(&page), vec![1, 2, 3]);
    for (entry, position) in page.entries.iter().zip(&positions) {
        assert_eq!(entry.envelope.message().id, Some(position.to_id()));
    }
    assert_eq!(offsets(&read(&b, &room, Some(2)).await), vec![3]);
    assert!(read(&b, &room, Some(3)).await.entries.is_empty());
    assert!(read(&b, &room, Some(u64::MAX)).await.entries.is_empty());

    let (stream, meta) = keys_of("sse:room:story");
    let ids: Vec<StreamEntry> =
        query(&url, redis::cmd("XRANGE").arg(&stream).arg("-").arg("+")).await;
    let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["1-0", "2-0", "3-0"]);
    let (epoch, latest): (String, u64) =
        query(&url, redis::cmd("HMGET").arg(&meta).arg("e").arg("o")).await;
    assert_eq!((epoch.as_str(), latest), (positions[0].epoch(), 3));
    // Between the ttl (minus the test's own time) and the ttl plus a
    // sixteenth of slack.
    let (low, high) = (
        TTL.as_millis() as i64 - 10_000,
        TTL.as_millis() as i64 * 17 / 16,
    );
    for key in [&stream, &meta] {
        let ttl: i64 = query(&url, redis::cmd("PTTL").arg(key)).await;
        assert!(ttl >= low && ttl <= high, "{key}: pttl {ttl}");
    }
    // Within the window the expiry is left alone (no PEXPIRE per message);
    // below the low mark (the ttl plus half the slack) it is refreshed. Each
    // case publishes from a node that has not checked this room yet.
    let slack = TTL.as_millis() as i64 / 16;
    for (set, refreshed) in [
        (TTL.as_millis() as i64 + slack * 3 / 4, false),
        (1_000, true),
    ] {
        for key in [&stream, &meta] {
            let _: i64 = query(&url, redis::cmd("PEXPIRE").arg(key).arg(set)).await;
        }
        let (fresh, _) = connected(&url, "fresh", |b| b).await;
        fresh
            .publish_with_history(&room, &message("again"), &policy(100))
            .await
            .expect("publish");
        fresh.disconnect().await.unwrap();
        for key in [&stream, &meta] {
            let ttl: i64 = query(&url, redis::cmd("PTTL").arg(key)).await;
            if refreshed {
                assert!(
                    ttl > TTL.as_millis() as i64 - 10_000,
                    "{key}: refreshed, pttl {ttl}"
                );
            } else {
                assert!(
                    ttl <= set && ttl > set - 10_000,
                    "{key}: left alone, pttl {ttl}"
                );
            }
        }
    }
    // A node that checked the room within the last half slack does not ask
    // again: no PTTL, the expiry it saw still stands. (A ttl of 640 s: its
    // half slack, 20 s, outlasts a slow machine; the first publish under a
    // new ttl always checks.)
    let long = HistoryPolicy::new(100, Duration::from_secs(640)).unwrap();
    let before = command_calls(&url, "pttl").await;
    a.publish_with_history(&room, &message("checks"), &long)
        .await
        .expect("publish");
    assert_eq!(command_calls(&url, "pttl").await, before + 1);
    for _ in 0..5 {
        a.publish_with_history(&room, &message("busy"), &long)
            .await
            .expect("publish");
    }
    assert_eq!(command_calls(&url, "pttl").await, before + 1);
    let position = a
        .publish_with_history(
            &room,
            &message("short"),
            &HistoryPolicy::new(100, Duration::from_secs(5)).unwrap(),
        )
        .await
        .expect("publish");
    assert_eq!(position.offset(), 12);
    let ttl: i64 = query(&url, redis::cmd("PTTL").arg(&stream)).await;
    assert!(
        ttl > 0 && ttl <= 5_000 * 17 / 16,
        "a shorter ttl shortens the expiry: {ttl}"
    );
    assert_eq!(a.stats().published, 10);
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
}

/// `max_len` trims the stream exactly, and `first` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_is_reflected_in_first() {
    let server = server().await;
    let url = server.url();
    let (a, _) = connected(&url, "a", |b| b).await;
    let room = RoomName::from("short");
    for n in 1..=5 {
        a.publish_with_history(&room, &message(&format!("m{n}")), &policy(3))
            .await
            .expect("publish");
    }
    let page = read(&a, &room, None).await;
    assert_eq!((page.first, page.latest), (3, 5));
    assert_eq!(offsets(&page), vec![3, 4, 5]);
    assert_eq!(offsets(&read(&a, &room, Some(1)).await), vec![3, 4, 5]);
    assert_eq!(offsets(&read(&a, &room, Some(4)).await), vec![5]);
    // Pages: `XRANGE .. COUNT`, each saying where the next starts.
    let head = a.read_history(&room, Some(1), 2).await.expect("read");
    assert_eq!((offsets(&head), head.next_after), (vec![3, 4], Some(4)));
    let tail = a
        .read_history(&room, head.next_after, 2)
        .await
        .expect("read");
    assert_eq!((offsets(&tail), tail.next_after), (vec![5], None));
    let probe = a.read_history(&room, None, 0).await.expect("read");
    assert!(probe.entries.is_empty() && probe.next_after.is_some() && probe.latest == 5);
    let (stream, _) = keys_of("sse:room:short");
    let len: u64 = query(&url, redis::cmd("XLEN").arg(&stream)).await;
    assert_eq!(len, 3);
    // Deleting the stream alone (eviction): the epoch stays, nothing is kept.
    let _: u64 = query(&url, redis::cmd("DEL").arg(&stream)).await;
    let page = read(&a, &room, None).await;
    assert_eq!((page.first, page.latest, page.entries.len()), (6, 5, 0));
    a.disconnect().await.unwrap();
}

/// Once the keys are gone (FLUSHALL, or the meta hash deleted), reads show a
/// fresh epoch and the next publish starts a new one at offset 1, dropping
/// any stale stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_keys_start_a_new_epoch() {
    let server = server().await;
    let url = server.url();
    let (a, _) = connected(&url, "a", |b| b).await;
    let room = RoomName::from("lost");
    let empty = read(&a, &room, None).await;
    assert_eq!((empty.first, empty.latest, empty.entries.len()), (1, 0, 0));
    assert!(Position::new(&empty.epoch, 0).is_some());

    let first = a
        .publish_with_history(&room, &message("one"), &policy(10))
        .await
        .unwrap();
    a.publish_with_history(&room, &message("two"), &policy(10))
        .await
        .unwrap();
    let _: () = query(&url, &mut redis::cmd("FLUSHALL")).await;
    let flushed = read(&a, &room, None).await;
    assert_eq!((flushed.latest, flushed.entries.len()), (0, 0));
    assert_ne!(flushed.epoch, first.epoch());
    let second = a
        .publish_with_history(&room, &message("three"), &policy(10))
        .await
        .unwrap();
    assert_eq!(second.offset(), 1);
    assert_ne!(second.epoch(), first.epoch());

    // Only the meta hash lost: the stale stream goes with the old epoch.
    a.publish_with_history(&room, &message("four"), &policy(10))
        .await
        .unwrap();
    let (_, meta) = keys_of("sse:room:lost");
    let _: u64 = query(&url, redis::cmd("DEL").arg(&meta)).await;
    let third = a
        .publish_with_history(&room, &message("five"), &policy(10))
        .await
        .unwrap();
    assert_eq!(third.offset(), 1);
    assert_ne!(third.epoch(), second.epoch());
    let page = read(&a, &room, None).await;
    assert_eq!(page.epoch, third.epoch());
    assert_eq!(offsets(&page), vec![1]);
    assert_eq!(data_of(&page.entries[0].envelope), "five");

    // A meta hash that is not ours (an epoch of the wrong shape) too.
    let _: () = query(&url, redis::cmd("HSET").arg(&meta).arg("e").arg("NOT-HEX")).await;
    let fourth = a
        .publish_with_history(&room, &message("six"), &policy(10))
        .await
        .unwrap();
    assert_eq!(fourth.offset(), 1);
    assert_ne!(fourth.epoch(), third.epoch());

    // Foreign values of the wrong type or shape: a new epoch, never stuck.
    let (stream, _) = keys_of("sse:room:lost");
    let _: () = query(&url, redis::cmd("HSET").arg(&meta).arg("o").arg("x")).await;
    let fifth = a
        .publish_with_history(&room, &message("seven"), &policy(10))
        .await
        .unwrap();
    assert_eq!(fifth.offset(), 1);
    assert_ne!(fifth.epoch(), fourth.epoch());
    let _: () = query(&url, redis::cmd("SET").arg(&meta).arg("a string")).await;
    let page = read(&a, &room, None).await;
    assert_eq!((page.latest, page.entries.len()), (0, 0));
    let sixth = a
        .publish_with_history(&room, &message("eight"), &policy(10))
        .await
        .unwrap();
    assert_eq!(sixth.offset(), 1);
    let _: () = query(&url, redis::cmd("SET").arg(&stream).arg("a string")).await;
    let page = read(&a, &room, None).await;
    assert_eq!((page.first, page.latest, page.entries.len()), (2, 1, 0));
    let seventh = a
        .publish_with_history(&room, &message("nine"), &policy(10))
        .await
        .unwrap();
    assert_eq!(
        (seventh.epoch(), seventh.offset()),
        (sixth.epoch(), 2),
        "a stream of another type is replaced, the epoch kept"
    );
    // Entries beyond the offset (a foreign writer): the stream is replaced.
    let _: String = query(
        &url,
        redis::cmd("XADD")
            .arg(&stream)
            .arg("99-0")
            .arg("d")
            .arg("x"),
    )
    .await;
    let eighth = a
        .publish_with_history(&room, &message("ten"), &policy(10))
        .await
        .unwrap();
    assert_eq!(eighth.offset(), 3);
    let page = read(&a, &room, None).await;
    assert_eq!((page.first, page.latest), (3, 3));
    assert_eq!(offsets(&page), vec![3]);
    a.disconnect().await.unwrap();
}

/// The id is spliced in place of a random placeholder: data that looks like
/// a placeholder or a position (in either codec) is stored and delivered
/// intact, and a message with an id of its own keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_data_is_stored_intact() {
    let server = server().await;
    let url = server.url();
    for codec in [Codec::Json, Codec::MessagePack] {
        let (a, _) = connected(&url, "a", |b| b.codec(codec)).await;
        let (b, mut b_events) = connected(&url, "b", |b| b).await;
        let room = RoomName::from(format!("hostile-{codec:?}"));
        b.subscribe(&room).await.expect("subscribe");
        let hostile = [
            "h1.gggggggggggg.gggggggggggggggg",
            "h1.vvvvvvvvvvvv.vvvvvvvvvvvvvvvv h1.%s.%016x",
            r#"","id":"h1.000000000000.0000000000000001"#,
            "h1.000000000000.0000000000000001",
        ];
        for data in hostile {
            let position = a
                .publish_with_history(&room, &message(data), &policy(10))
                .await
                .expect("publish");
            let (_, received) = next_message(&mut b_events).await;
            assert_eq!(data_of(&received), data, "{codec:?}");
            assert_eq!(received.message().id, Some(position.to_id()));
        }
        let own = Envelope::new(
            NodeId::from("a"),
            SseMessage::new("mine").with_id("h1.gggggggggggg.gggggggggggggggg"),
        );
        a.publish_with_history(&room, &own, &policy(10))
            .await
            .expect("publish");
        let (_, received) = next_message(&mut b_events).await;
        assert_eq!(
            received.message().id.as_deref(),
            Some("h1.gggggggggggg.gggggggggggggggg")
        );
        let page = read(&b, &room, None).await;
        let stored: Vec<String> = page.entries.iter().map(|e| data_of(&e.envelope)).collect();
        let mut expected: Vec<String> = hostile.iter().map(|s| (*s).to_owned()).collect();
        expected.push("mine".into());
        assert_eq!(stored, expected, "{codec:?}");
        a.disconnect().await.unwrap();
        b.disconnect().await.unwrap();
    }
}

/// Over the payload limit: refused before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let server = server().await;
    let url = server.url();
    let (a, _) = connected(&url, "a", |b| b.max_payload_bytes(256)).await;
    let room = RoomName::from("big");
    let error = a
        .publish_with_history(&room, &message(&"x".repeat(300)), &policy(10))
        .await
        .expect_err("too large");
    assert!(matches!(error, Error::PayloadTooLarge { .. }), "{error}");
    assert_eq!(read(&a, &room, None).await.latest, 0);
    a.disconnect().await.unwrap();
}

/// Entries a foreign client wrote into the stream that do not decode (or
/// lack the `d` field) are skipped and counted; the others are returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_entries_are_skipped_and_counted() {
    let server = server().await;
    let url = server.url();
    let (a, _) = connected(&url, "a", |b| b).await;
    let room = RoomName::from("garbage");
    a.publish_with_history(&room, &message("good 1"), &policy(100))
        .await
        .unwrap();
    let (stream, meta) = keys_of("sse:room:garbage");
    let xadd = |id: &str, field: &str, value: &[u8]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg(id).arg(field).arg(value);
        cmd
    };
    let _: String = query(&url, &mut xadd("2-0", "d", b"not an envelope")).await;
    let _: String = query(&url, &mut xadd("3-0", "x", b"{}")).await;
    let _: String = query(&url, &mut xadd("4-0", "d", &[0xc1, 0xff, 0x00])).await;
    let _: String = query(&url, &mut xadd("4-1", "d", b"{}")).await;
    let _: () = query(&url, redis::cmd("HSET").arg(&meta).arg("o").arg(4)).await;
    a.publish_with_history(&room, &message("good 5"), &policy(100))
        .await
        .unwrap();
    let before = a.stats().decode_errors_total();
    let page = read(&a, &room, None).await;
    assert_eq!(offsets(&page), vec![1, 5]);
    assert_eq!((page.first, page.latest), (1, 5));
    assert_eq!(a.stats().decode_errors_total() - before, 4);
    a.disconnect().await.unwrap();
}

/// A rough measurement (ignored by default): publishes per second into one
/// room with and without history, in the same run, 64 concurrent
/// publishers, one subscriber node counting arrivals.
///
/// ```text
/// cargo test --release -p rooms-adapter-redis --test history -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --release --ignored --nocapture"]
async fn publish_rate_with_and_without_history() {
    use std::sync::Arc;

    const MESSAGES: usize = 64_000;
    const PUBLISHERS: usize = 64;
    let server = server().await;
    let url = server.url();
    let (subscriber, mut events) = connected(&url, "sub", |b| b).await;
    let (publisher, _) =
        connected(&url, "pub", |b| b.publish_timeout(Duration::from_secs(10))).await;
    let publisher = Arc::new(publisher);
    let envelope = Envelope::new(
        NodeId::from("node-publisher-0001"),
        SseMessage::new(serde_json::json!({"text": "x".repeat(70), "user": "alice"}))
            .with_event("chat"),
    );
    for history in [false, true, false, true] {
        let room = RoomName::from(format!("bench-{history}"));
        subscriber.subscribe(&room).await.expect("subscribe");
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..PUBLISHERS {
            let (publisher, envelope, room) =
                (Arc::clone(&publisher), envelope.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..MESSAGES / PUBLISHERS {
                    if history {
                        publisher
                            .publish_with_history(&room, &envelope, &policy(500))
                            .await
                            .expect("publish");
                    } else {
                        publisher.publish(&room, &envelope).await.expect("publish");
                    }
                }
            }));
        }
        let mut received = 0;
        while received < MESSAGES {
            match tokio::time::timeout(DEADLINE, events.recv()).await {
                Ok(Some(rooms_adapter::AdapterEvent::Message { .. })) => received += 1,
                Ok(_) => {}
                Err(_) => panic!("receive stalled at {received}"),
            }
        }
        let rate = received as f64 / started.elapsed().as_secs_f64();
        for task in tasks {
            task.await.expect("publisher");
        }
        println!("history {history}: {rate:.0} messages/s");
        subscriber.unsubscribe(&room).await.expect("unsubscribe");
    }
    let info: String = query(&url, redis::cmd("INFO").arg("commandstats")).await;
    for line in info.lines() {
        if ["evalsha", "publish", "xadd", "pexpire", "hincrby"]
            .iter()
            .any(|c| line.starts_with(&format!("cmdstat_{c}:")))
        {
            println!("{line}");
        }
    }
    publisher.disconnect().await.unwrap();
    subscriber.disconnect().await.unwrap();
}
