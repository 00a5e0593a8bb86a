//! What the integration tests of the PostgreSQL adapter share: a receiver
//! and a publish-only adapter connected together, and waiting for messages
//! with a deadline.
// Each test file uses its own part of it.
#![allow(dead_code)]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rooms_adapter::adapter::{AdapterEvent, EventSink, EventStream};
use rooms_adapter::{Envelope, NodeId, RoomAdapter, RoomName, SseMessage};
use rooms_adapter_postgres::PostgresAdapter;

/// How long a test waits for what should happen.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The next message (not other events), within [`DEADLINE`].
pub async fn next_message(events: &mut EventStream) -> (RoomName, Envelope) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Message { room, envelope })) => return (room, envelope),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!("no message within {DEADLINE:?}"),
        }
    }
}

/// A receiver connected as node `rx` (its events in a queue of
/// `capacity`) and a publish-only adapter connected as node `tx`.
pub struct Pair {
    /// Connected with a sink.
    pub receiver: Arc<PostgresAdapter>,
    /// Connected as a publisher only.
    pub publisher: Arc<PostgresAdapter>,
    /// The receiver's events.
    pub events: EventStream,
}

impl Pair {
    /// Connects both; the receiver subscribes to each of `rooms`.
    pub async fn connect(
        receiver: Arc<PostgresAdapter>,
        publisher: Arc<PostgresAdapter>,
        capacity: usize,
        rooms: &[&RoomName],
    ) -> Self {
        let (sink, events) = EventSink::bounded(capacity);
        receiver.connect(NodeId::from("rx"), sink).await.unwrap();
        publisher
            .connect_publisher(NodeId::from("tx"))
            .await
            .unwrap();
        for room in rooms {
            receiver.subscribe(room).await.unwrap();
        }
        Self {
            receiver,
            publisher,
            events,
        }
    }

    /// Publishes `data` from node `tx` to `room`; returns the envelope.
    pub async fn publish(&self, room: &RoomName, data: &str) -> Envelope {
        let envelope = Envelope::new(NodeId::from("tx"), SseMessage::new(data));
        self.publisher.publish(room, &envelope).await.unwrap();
        envelope
    }

    /// The receiver's next message, within [`DEADLINE`].
    pub async fn next_message(&mut self) -> (RoomName, Envelope) {
        next_message(&mut self.events).await
    }

    /// Disconnects both.
    pub async fn disconnect(self) {
        self.receiver.disconnect().await.unwrap();
        self.publisher.disconnect().await.unwrap();
    }
}
