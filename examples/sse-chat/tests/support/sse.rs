//! A real SSE client: events read off a streaming HTTP response.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::DEADLINE;

/// One server-sent event as a client parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the frame had no `event:` line).
    pub event: String,
    /// The `id:` of this frame, if it had one.
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// A streaming SSE client over reqwest. Dropping it closes the connection.
pub struct SseClient {
    pub status: u16,
    pub headers: HeaderMap,
    pub(super) events: mpsc::Receiver<SseEvent>,
    pub(super) comments: Arc<AtomicUsize>,
    pub(super) reader: JoinHandle<()>,
}

impl SseClient {
    /// Opens `url`, checks for a 200, and starts parsing the body.
    pub async fn open(http: &reqwest::Client, url: &str) -> SseClient {
        Self::open_with(http.get(url)).await
    }

    pub async fn open_with(request: reqwest::RequestBuilder) -> SseClient {
        let response = timeout(DEADLINE, request.send())
            .await
            .expect("SSE response headers in time")
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let (sender, events) = mpsc::channel(1024);
        let comments = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&comments);
        let mut body = response.bytes_stream();
        let reader = tokio::spawn(async move {
            let mut parser = Parser::default();
            while let Some(Ok(chunk)) = body.next().await {
                for item in parser.feed(&chunk) {
                    match item {
                        Item::Event(event) => {
                            if sender.send(event).await.is_err() {
                                return;
                            }
                        }
                        Item::Comment => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        SseClient {
            status,
            headers,
            events,
            comments,
            reader,
        }
    }

    /// The next event, or `None` if the stream ended; panics after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        timeout(within, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {within:?}"))
    }

    /// The next event; panics if none comes within the deadline or the stream ends.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(DEADLINE)
            .await
            .expect("the SSE stream ended")
    }

    /// Skips events until one of type `event` arrives.
    pub async fn next_of(&mut self, event: &str) -> SseEvent {
        loop {
            let next = self.next().await;
            if next.event == event {
                return next;
            }
        }
    }

    /// Events up to and including the first whose data contains `sentinel`.
    pub async fn until_data_contains(&mut self, sentinel: &str) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let next = self.next().await;
            let done = next.data.contains(sentinel);
            seen.push(next);
            if done {
                return seen;
            }
        }
    }

    /// Waits for the stream to end (server closed it).
    pub async fn wait_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.events.recv(),
            )
            .await
            {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => panic!("the SSE stream did not end within {DEADLINE:?}"),
            }
        }
    }

    /// Keep-alive (and other) comments seen so far.
    pub fn comments(&self) -> usize {
        self.comments.load(Ordering::Relaxed)
    }

    /// Closes the connection, as a browser tab being closed would.
    pub fn close(self) {
        self.reader.abort();
    }
}

pub(super) enum Item {
    Event(SseEvent),
    Comment,
}

/// An incremental `text/event-stream` parser (WHATWG rules for the fields
/// these tests need).
#[derive(Default)]
pub(super) struct Parser {
    pub(super) buffer: Vec<u8>,
    pub(super) event: Option<String>,
    pub(super) id: Option<String>,
    pub(super) data: Vec<String>,
}

impl Parser {
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        self.buffer.extend_from_slice(chunk);
        let mut items = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    items.push(Item::Event(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        id: self.id.take(),
                        data: self.data.join("\n"),
                    }));
                }
                self.event = None;
                self.id = None;
                self.data.clear();
                continue;
            }
            if line.starts_with(':') {
                items.push(Item::Comment);
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        items
    }
}
