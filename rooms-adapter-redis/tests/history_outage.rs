//! Room history while Redis is down: publishes and reads fail fast with a
//! retryable error and work again once it is back (every bundled driver);
//! a custom driver that cannot run scripts offers no history.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use rooms_adapter::Error;
use rooms_adapter::RoomName;
use rooms_adapter::adapter::RoomAdapter;
use rooms_adapter::history::Position;
use rooms_adapter_redis::{RedisAdapter, RedisAdapterBuilder};
use rooms_testkit::poll::eventually;
use tokio::time::Instant;

use common::history::*;
use common::*;

async fn fails_fast_with(configure: fn(RedisAdapterBuilder) -> RedisAdapterBuilder, name: &str) {
    let mut server = server().await;
    let url = server.url();
    let (adapter, _) = connected(&url, "a", configure).await;
    let room = RoomName::from("down");
    adapter
        .publish_with_history(&room, &message("up"), &policy(10))
        .await
        .expect("publish while up");
    server.kill().expect("kill");
    for n in 0..2 {
        let started = Instant::now();
        let error = adapter
            .publish_with_history(&room, &message(&format!("down {n}")), &policy(10))
            .await
            .expect_err("publish while down fails");
        assert!(error.is_retryable(), "{name}: {error}");
        // The harness publish timeout is 1 s.
        assert!(
            started.elapsed() <= Duration::from_millis(1_500),
            "{name}: took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let error = adapter
            .read_history(&room, None, 10)
            .await
            .expect_err("read while down fails");
        assert!(error.is_retryable(), "{name}: {error}");
        assert!(started.elapsed() <= Duration::from_millis(1_500));
    }
    assert!(adapter.stats().publish_errors >= 2);
    server.restart().await.expect("restart");
    let (back, policy) = (message("back"), policy(10));
    let what = format!("{name}: a publish with history once Redis is back");
    let position: Position = eventually(&what, DEADLINE, || {
        adapter.publish_with_history(&room, &back, &policy)
    })
    .await;
    assert!(position.offset() >= 1);
    adapter.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_fails_fast_while_down_redis_driver() {
    fails_fast_with(|b| b.redis_driver(), "redis").await;
}

#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_fails_fast_while_down_deadpool_driver() {
    fails_fast_with(|b| b.deadpool_driver(4), "deadpool").await;
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_fails_fast_while_down_bb8_driver() {
    fails_fast_with(|b| b.bb8_driver(4), "bb8").await;
}

/// A custom driver that cannot run scripts: no history capability.
#[tokio::test]
async fn drivers_without_scripts_offer_no_history() {
    struct Silent;
    #[async_trait::async_trait]
    impl rooms_adapter_redis::PublishDriver for Silent {
        fn name(&self) -> &str {
            "silent"
        }
        async fn publish(&self, _: &str, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
    }
    let adapter = RedisAdapter::builder("redis://127.0.0.1:1")
        .driver(Silent)
        .build()
        .unwrap();
    assert!(!adapter.capabilities().history);
    let adapter = RedisAdapter::builder("redis://127.0.0.1:1")
        .build()
        .unwrap();
    assert!(adapter.capabilities().history);
}
