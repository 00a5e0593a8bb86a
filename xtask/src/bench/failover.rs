//! `cargo xtask bench failover`: how long a room is dark when the master of a
//! Redis Sentinel deployment dies.
//!
//! Per run, a fresh throwaway deployment (master, replica, three sentinels:
//! `rooms_testkit::redis_sentinel`) and two adapters with the library's
//! default settings: node A publishes a numbered message every
//! [`TICK`] into a room that node B subscribed. The master is SIGKILLed; the
//! figure is the time from the kill until B receives the first message A
//! published after it (the room's dark time), next to how long the sentinels
//! took to promote the replica (the floor no client can beat).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rooms_adapter::adapter::{AdapterEvent, EventSink, RoomAdapter};
use rooms_adapter::{Envelope, NodeId, RoomName, SseMessage};
use rooms_adapter_redis::RedisAdapter;
use rooms_testkit::redis_sentinel::RedisSentinel;
use serde_json::{Value, json};

use super::{Bench, Row, Verdict, median};

/// How often node A publishes.
const TICK: Duration = Duration::from_millis(10);
/// The longest a run may take to see a message through after the kill.
const DEADLINE: Duration = Duration::from_secs(60);

impl Bench {
    pub(super) fn failover(&mut self) -> Result<(), String> {
        let mut runs = Vec::new();
        for rep in 0..self.plan.local_reps {
            let label = format!("sentinel failover #{}", rep + 1);
            eprintln!("   {label}");
            let run = self.runtime.block_on(one_failover())?;
            self.runs.push((label, run.clone()));
            runs.push(run);
        }
        let dark: Vec<f64> = runs.iter().map(|run| ms(&run["dark_ms"])).collect();
        let promoted: Vec<f64> = runs.iter().map(|run| ms(&run["promoted_ms"])).collect();
        let worst = dark.iter().copied().fold(0.0, f64::max);
        let (dark_median, promoted_median) = (median(dark.clone()), median(promoted));
        self.rows.push(Row {
            bench: "Sentinel failover: master SIGKILLed, one room published every 10 ms, \
                    default settings; the room dark from the kill to the first message through"
                .to_owned(),
            figure: format!(
                "{dark_median:.0} ms (median of {}; worst {worst:.0} ms)",
                dark.len()
            ),
            baseline: format!("{promoted_median:.0} ms until the sentinels promoted the replica"),
            ratio: format!("+{:.0} ms", dark_median - promoted_median),
            target: "report".to_owned(),
            verdict: Verdict::Info,
        });
        Ok(())
    }
}

fn ms(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

async fn one_failover() -> Result<Value, String> {
    let mut deployment = RedisSentinel::start()
        .await
        .map_err(|e| format!("cannot start a sentinel deployment: {e}"))?;
    let urls = deployment.sentinel_urls();
    let master = deployment.master_name();
    let connect = |node: &'static str| {
        let adapter = RedisAdapter::sentinel(urls.clone(), master).build();
        async move {
            let adapter = adapter.map_err(|e| e.to_string())?;
            let (sink, events) = EventSink::bounded(65_536);
            adapter
                .connect(NodeId::from(node), sink)
                .await
                .map_err(|e| format!("node {node} cannot connect: {e}"))?;
            Ok::<_, String>((adapter, events))
        }
    };
    let (publisher, _ignored) = connect("a").await?;
    let (receiver, mut events) = connect("b").await?;
    let room = RoomName::from("failover");
    receiver
        .subscribe(&room)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;

    let publisher = Arc::new(publisher);
    let next = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (publisher, next, room) = (Arc::clone(&publisher), Arc::clone(&next), room.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let envelope = Envelope::new(NodeId::from("a"), SseMessage::new(seq));
                let _ = publisher.publish(&room, &envelope).await;
            }
        })
    };
    // Messages flow before the kill.
    wait_for_seq(&mut events, 0).await?;

    let old = deployment
        .kill_master()
        .await
        .map_err(|e| format!("kill master: {e}"))?;
    let killed = Instant::now();
    let first_after = next.load(Ordering::Relaxed);
    let (_, promoted) = deployment
        .wait_for_failover(old, DEADLINE)
        .await
        .map_err(|e| format!("no failover: {e}"))?;
    let outage = wait_for_seq(&mut events, first_after).await?;
    let dark = killed.elapsed();
    ticker.abort();
    let _ = receiver.disconnect().await;
    let _ = publisher.disconnect().await;
    Ok(json!({
        "dark_ms": dark.as_secs_f64() * 1e3,
        "promoted_ms": promoted.as_secs_f64() * 1e3,
        "reconnected_outage_ms": outage.map(|outage| outage.as_secs_f64() * 1e3),
    }))
}

/// Waits until a message numbered `from` or later arrives; returns the
/// outage of a `Reconnected` seen meanwhile.
async fn wait_for_seq(
    events: &mut rooms_adapter::adapter::EventStream,
    from: u64,
) -> Result<Option<Duration>, String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut outage = None;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Message { envelope, .. })) => {
                let seq = envelope.message().data.parse::<u64>().unwrap_or(0);
                if seq >= from {
                    return Ok(outage);
                }
            }
            Ok(Some(AdapterEvent::Reconnected { outage: o, .. })) => outage = Some(o),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the receiver's event stream ended".into()),
            Err(_) => return Err(format!("no message {from}+ within {DEADLINE:?}")),
        }
    }
}
