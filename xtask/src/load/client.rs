//! Real SSE clients: hyper over one TCP connection each, parsing the frames themselves.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};

use super::sse::SseParser;
use super::tally::{BitSet, Tally};
use super::{CLIENT_JOIN, LATENCY_BATCH, micros_since};

/// Who a client is.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Its number in the run (also picks the latency shard).
    pub index: usize,
    /// The node's address.
    pub addr: SocketAddr,
    /// The room's number (`seq % rooms` of its messages).
    pub room: u64,
    /// The room's name.
    pub room_name: String,
    /// How many rooms the run posts into (`seq % rooms` is the room).
    pub rooms: u64,
}

/// What one client saw, when it is stopped.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Its room's number.
    pub room: u64,
    /// Message numbers within the room (`seq / rooms`) received.
    pub received: BitSet,
    /// Chat messages received more than once.
    pub duplicates: u64,
    /// Chat messages of another room.
    pub foreign: u64,
    /// Chat messages without an `id:`.
    pub without_id: u64,
    /// Message numbers within the room received without an `id:` (a post
    /// the medium could not store is delivered on its node without one).
    pub without_id_numbers: BitSet,
    /// Events whose data could not be read.
    pub malformed: u64,
    /// `notice` events with `"kind":"reconnected"`.
    pub reconnected_notices: u64,
    /// `notice` events with `"kind":"gap"` (this node dropped messages).
    pub gap_notices: u64,
    /// Why the stream failed or ended before the client was stopped.
    pub ended: Option<String>,
}

/// The chat message fields a client reads.
#[derive(Deserialize)]
pub(super) struct Chat<'a> {
    #[serde(borrow)]
    pub(super) text: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct Notice<'a> {
    #[serde(borrow)]
    pub(super) kind: Option<Cow<'a, str>>,
}

/// `s=<seq> t=<µs>` as `(seq, µs)`.
pub fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split(' ');
    let seq = parts.next()?.strip_prefix("s=")?.parse().ok()?;
    let sent = parts.next()?.strip_prefix("t=")?.parse().ok()?;
    Some((seq, sent))
}

/// The chat message text of `seq` sent at `sent_us`.
pub fn message_text(seq: u64, sent_us: u64) -> String {
    format!("s={seq} t={sent_us}")
}

/// Starts one SSE client: it connects, waits for `ready` (then counts itself
/// in [`Tally::ready`]), and reads until `stop` turns true or the stream ends.
/// `joins` bounds how many clients connect at once.
pub fn spawn_client(
    spec: ClientSpec,
    tally: Arc<Tally>,
    base: Instant,
    joins: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ClientReport> {
    tokio::spawn(client(spec, tally, base, joins, stop))
}

pub(super) async fn client(
    spec: ClientSpec,
    tally: Arc<Tally>,
    base: Instant,
    joins: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport {
        room: spec.room,
        ..ClientReport::default()
    };
    let permit = joins.acquire_owned().await.ok();
    let opened = tokio::time::timeout(CLIENT_JOIN, open(&spec)).await;
    let (mut body, connection) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(error)) => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            report.ended = Some(error);
            return report;
        }
        Err(_) => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            report.ended = Some(format!("no response within {CLIENT_JOIN:?}"));
            return report;
        }
    };
    let mut parser = SseParser::default();
    let mut latencies = Vec::with_capacity(LATENCY_BATCH);
    let mut ready = false;
    let join_deadline = tokio::time::Instant::now() + CLIENT_JOIN;
    let mut permit = permit;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until(join_deadline), if !ready => {
                report.ended = Some(format!("no ready event within {CLIENT_JOIN:?}"));
                tally.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            frame = body.frame() => frame,
        };
        let chunk = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue, // trailers
            },
            Some(Err(error)) => {
                report.ended = Some(format!("stream failed: {error}"));
                break;
            }
            None => {
                report.ended = Some("the server ended the stream".to_owned());
                break;
            }
        };
        parser.feed(&chunk, |event| match event.event.as_str() {
            "ready" if !ready => {
                ready = true;
                permit = None;
                tally.ready.fetch_add(1, Ordering::Relaxed);
            }
            "message" => {
                let now = micros_since(base);
                let parsed = serde_json::from_str::<Chat>(&event.data)
                    .ok()
                    .and_then(|chat| parse_text(&chat.text));
                let Some((seq, sent_us)) = parsed else {
                    report.malformed += 1;
                    return;
                };
                if seq % spec.rooms.max(1) != spec.room {
                    report.foreign += 1;
                    return;
                }
                if event.id.is_none() {
                    report.without_id += 1;
                    report.without_id_numbers.insert(seq / spec.rooms.max(1));
                }
                if report.received.insert(seq / spec.rooms.max(1)) {
                    report.duplicates += 1;
                    return;
                }
                tally.delivered.fetch_add(1, Ordering::Relaxed);
                tally.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                latencies.push(now.saturating_sub(sent_us));
                if latencies.len() >= LATENCY_BATCH {
                    tally.record(spec.index, &mut latencies);
                }
            }
            "notice" => match serde_json::from_str::<Notice>(&event.data) {
                Ok(notice) if notice.kind.as_deref() == Some("reconnected") => {
                    report.reconnected_notices += 1;
                    let now = micros_since(base);
                    let _ = tally.first_notice_us.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tally.last_notice_us.fetch_max(now, Ordering::Relaxed);
                }
                Ok(notice) if notice.kind.as_deref() == Some("gap") => {
                    report.gap_notices += 1;
                }
                Ok(_) => {}
                Err(_) => report.malformed += 1,
            },
            _ => {}
        });
    }
    drop(permit);
    tally.record(spec.index, &mut latencies);
    if !ready && report.ended.is_none() {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        report.ended = Some("stopped before its ready event".to_owned());
    }
    connection.abort();
    report
}

/// Connects, sends `GET /rooms/{room}/events`, checks the status.
pub(super) async fn open(
    spec: &ClientSpec,
) -> Result<(hyper::body::Incoming, tokio::task::JoinHandle<()>), String> {
    let stream = tokio::net::TcpStream::connect(spec.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", spec.addr))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(format!("/rooms/{}/events", spec.room_name))
        .header(HOST, spec.addr.to_string())
        .header(ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            connection.abort();
            return Err(format!("GET events: {error}"));
        }
    };
    if response.status() != hyper::StatusCode::OK {
        connection.abort();
        return Err(format!("GET events: status {}", response.status()));
    }
    Ok((response.into_body(), connection))
}
