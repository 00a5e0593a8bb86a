//! The throwaway Sentinel deployment itself: starts, loses its master, fails
//! over to the replica (which kept the data), takes the old master back as a
//! replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rooms_adapter_redis::redis::{self, AsyncCommands};
use rooms_testkit::redis_sentinel::{MASTER_NAME, RedisSentinel};

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn role(url: &str) -> String {
    let reply: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut connect(url).await)
        .await
        .unwrap();
    match reply.first() {
        Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("ROLE: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_master_crashes() {
    let started = Instant::now();
    let mut deployment = RedisSentinel::start().await.expect("deployment starts");
    eprintln!("sentinel deployment started in {:?}", started.elapsed());
    assert_eq!(deployment.master_name(), MASTER_NAME);
    assert_eq!(deployment.sentinel_urls().len(), 3);

    let old_url = deployment.master_url().await.unwrap();
    let old_port = deployment.master_port().await.unwrap();
    assert_eq!(old_url, format!("redis://127.0.0.1:{old_port}"));
    assert_eq!(role(&old_url).await, "master");

    // A write (acknowledged by the replica) and a publish on the master.
    let mut master = connect(&old_url).await;
    let () = master.set("rooms:before", "kept").await.unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut master)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica acknowledged the write");
    let _receivers: i64 = master.publish("rooms:channel", "before").await.unwrap();
    drop(master);

    let killed = deployment.kill_master().await.unwrap();
    assert_eq!(killed, old_port);
    let (new_port, took) = deployment
        .wait_for_failover(old_port, Duration::from_secs(30))
        .await
        .expect("the sentinels fail over");
    eprintln!("failover took {took:?} (127.0.0.1:{old_port} -> 127.0.0.1:{new_port})");
    assert_ne!(new_port, old_port);
    assert_eq!(deployment.master_port().await.unwrap(), new_port);

    // The new master has the data and takes writes and publishes.
    let new_url = deployment.master_url().await.unwrap();
    assert_eq!(new_url, format!("redis://127.0.0.1:{new_port}"));
    let mut master = connect(&new_url).await;
    let kept: String = master.get("rooms:before").await.unwrap();
    assert_eq!(kept, "kept");
    let () = master.set("rooms:after", "written").await.unwrap();
    let _receivers: i64 = master.publish("rooms:channel", "after").await.unwrap();

    // The old master comes back as a replica of the new one.
    let restarted = Instant::now();
    deployment
        .restart_killed()
        .await
        .expect("old master rejoins");
    eprintln!("old master rejoined in {:?}", restarted.elapsed());
    let rejoined = format!("redis://127.0.0.1:{old_port}");
    assert_eq!(role(&rejoined).await, "slave");
    let synced: String = connect(&rejoined).await.get("rooms:after").await.unwrap();
    assert_eq!(synced, "written");
    assert_eq!(deployment.master_port().await.unwrap(), new_port);
}
