//! The poster of chat messages, and waiting for the clients to be ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::message_text;
use super::tally::Tally;
use super::{POST_TIMEOUT, micros_since};

/// One POST's outcome.
#[derive(Debug, Clone, Copy)]
pub struct PostRecord {
    /// The message's sequence number.
    pub seq: u64,
    /// When it was sent (µs since base).
    pub sent_us: u64,
    /// When the answer came (µs since base).
    pub done_us: u64,
    /// The HTTP status; `None` if the request failed or timed out.
    pub status: Option<u16>,
}

impl PostRecord {
    /// Whether the node accepted it (202).
    pub fn accepted(&self) -> bool {
        self.status == Some(202)
    }
}

/// What to post.
#[derive(Debug, Clone)]
pub struct PostPlan {
    /// Nodes to post into; message `seq` goes to `nodes[(seq / rooms) % len]`.
    pub nodes: Vec<SocketAddr>,
    /// Room names; message `seq` goes to `rooms[seq % len]`.
    pub rooms: Vec<String>,
    /// How many messages.
    pub count: u64,
    /// Messages per second; `None` posts as fast as `in_flight` allows.
    pub rate: Option<f64>,
    /// Most requests in flight at once.
    pub in_flight: usize,
}

/// Posts `plan.count` chat messages; returns one record per message, in
/// sequence order.
pub async fn post(plan: PostPlan, base: Instant) -> Result<Vec<PostRecord>, String> {
    if plan.nodes.is_empty() || plan.rooms.is_empty() {
        return Err("nothing to post into".to_owned());
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(plan.in_flight)
        .build(connector);
    let slots = Arc::new(Semaphore::new(plan.in_flight.max(1)));
    let rooms = plan.rooms.len() as u64;
    let mut tasks = JoinSet::new();
    let mut records = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let start = tokio::time::Instant::now();
    for seq in 0..plan.count {
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate.max(1e-3));
            tokio::time::sleep_until(due).await;
        }
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the poster's semaphore closed")?;
        let room_index = usize::try_from(seq % rooms).unwrap_or(0);
        let node_index = usize::try_from((seq / rooms) % plan.nodes.len() as u64).unwrap_or(0);
        let addr = plan.nodes[node_index];
        let uri = format!("http://{addr}/rooms/{}/messages", plan.rooms[room_index]);
        let client = client.clone();
        tasks.spawn(async move {
            let sent_us = micros_since(base);
            let body = serde_json::json!({"name": "soak", "text": message_text(seq, sent_us)});
            let request = Request::post(uri)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())));
            let status = match request {
                Ok(request) => {
                    match tokio::time::timeout(POST_TIMEOUT, client.request(request)).await {
                        Ok(Ok(response)) => {
                            let status = response.status().as_u16();
                            // Read the answer so the connection can be reused.
                            let _ = response.into_body().collect().await;
                            Some(status)
                        }
                        _ => None,
                    }
                }
                Err(_) => None,
            };
            drop(permit);
            PostRecord {
                seq,
                sent_us,
                done_us: micros_since(base),
                status,
            }
        });
        // Collect finished ones as we go so the set stays small.
        while let Some(done) = tasks.try_join_next() {
            records.push(done.map_err(|e| format!("a post task failed: {e}"))?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        records.push(done.map_err(|e| format!("a post task failed: {e}"))?);
    }
    records.sort_by_key(|record| record.seq);
    Ok(records)
}

/// Waits until `tally.delivered` reaches `expected`, or has not moved for
/// `quiet`, or `limit` has passed. Returns the count then.
pub async fn drain(tally: &Tally, expected: u64, quiet: Duration, limit: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = tally.delivered.load(Ordering::Relaxed);
    let mut last_change = tokio::time::Instant::now();
    loop {
        let now = tally.delivered.load(Ordering::Relaxed);
        if now >= expected {
            return now;
        }
        if now != last {
            last = now;
            last_change = tokio::time::Instant::now();
        }
        if last_change.elapsed() >= quiet || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `clients` is ready or failed, up to `limit`.
pub async fn wait_ready(tally: &Tally, clients: usize, limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ready = tally.ready.load(Ordering::Relaxed);
        let failed = tally.failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!(
                "{failed} of {clients} SSE clients could not join ({ready} ready)"
            ));
        }
        if ready >= clients {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "only {ready} of {clients} SSE clients joined within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
