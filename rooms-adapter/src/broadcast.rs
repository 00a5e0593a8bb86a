//! Broadcasts: the fluent [`Broadcast`] builder ([`Rooms::to`]), the
//! options of the long form ([`Rooms::broadcast`]), results and the delivery
//! filter.
//!
//! The two forms do the same:
//!
//! ```
//! # use std::sync::Arc;
//! # use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
//! # use rooms_adapter_memory::MemoryAdapter;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rooms_adapter::Error> {
//! # let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
//! # let sender = rooms.connect(ConnectOptions::new()).await?;
//! # rooms.join(sender.id(), "lobby").await?;
//! #[derive(serde::Serialize)]
//! struct Chat<'a> { name: &'a str, text: &'a str }
//! let chat = Chat { name: "ada", text: "hi" };
//!
//! // Fluent, like socketioxide's `io.to("lobby").except(id).emit("chat", &data)`:
//! rooms.to("lobby").except(sender.id()).emit("chat", &chat).await?;
//!
//! // The long form:
//! let message = SseMessage::json(&chat)?.with_event("chat");
//! let options = BroadcastOptions::new().except(sender.id());
//! rooms.broadcast("lobby", message, options).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::connection::ConnectionInfo;
use crate::engine::Rooms;
use crate::error::Error;
use crate::ids::{ConnectionId, RoomName};
use crate::message::SseMessage;

/// Options of one broadcast.
///
/// ```
/// use rooms_adapter::BroadcastOptions;
/// use serde_json::json;
///
/// let options = BroadcastOptions::new()
///     .except("conn-1")
///     .metadata(json!({"projectId": 42}));
/// assert!(!options.is_local_only());
/// ```
#[derive(Debug, Clone, Default)]
pub struct BroadcastOptions {
    pub(crate) except: Option<ConnectionId>,
    pub(crate) local_only: bool,
    pub(crate) metadata: Option<Value>,
}

impl BroadcastOptions {
    /// Deliver to every member on every node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Skip this connection (typically the sender) on every node.
    #[must_use]
    pub fn except(mut self, connection: impl Into<ConnectionId>) -> Self {
        self.except = Some(connection.into());
        self
    }

    /// Deliver on this node only; publish nothing to the medium.
    #[must_use]
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Opaque metadata for the delivery filter on every node; never sent to
    /// clients.
    #[must_use]
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Whether this broadcast stays on this node.
    pub fn is_local_only(&self) -> bool {
        self.local_only
    }
}

impl Rooms {
    /// Starts a broadcast to `room`: chain [`Broadcast::to`] for more rooms,
    /// [`except`](Broadcast::except), [`local`](Broadcast::local),
    /// [`metadata`](Broadcast::metadata) or [`id`](Broadcast::id), then
    /// [`send`](Broadcast::send) a message or [`emit`](Broadcast::emit) an
    /// event with any `Serialize` data. The same as [`Rooms::broadcast`] (one
    /// room) or [`Rooms::broadcast_to`] (several) with [`BroadcastOptions`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use rooms_adapter::{ConnectOptions, Rooms, SseMessage};
    /// # use rooms_adapter_memory::MemoryAdapter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rooms_adapter::Error> {
    /// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
    /// let mut ada = rooms.connect(ConnectOptions::new()).await?;
    /// let bob = rooms.connect(ConnectOptions::new()).await?;
    /// rooms.join(ada.id(), "lobby").await?;
    /// rooms.join(bob.id(), "lobby").await?;
    ///
    /// // Everyone in the room but bob, who sent it:
    /// let report = rooms.to("lobby").except(bob.id()).send(SseMessage::new("hi")).await?;
    /// assert_eq!(report.delivered, 1);
    /// // An event with JSON data from any `Serialize`, to two rooms at once:
    /// rooms.to("lobby").to("news").emit("score", &serde_json::json!({"home": 2})).await?;
    /// // On this node only, nothing crosses the medium:
    /// rooms.to("lobby").local().send(SseMessage::new("local")).await?;
    ///
    /// assert_eq!(ada.recv().await.expect("hi").message().data, "hi");
    /// assert_eq!(ada.recv().await.expect("score").message().event.as_deref(), Some("score"));
    /// # Ok(()) }
    /// ```
    pub fn to(&self, room: impl Into<RoomName>) -> Broadcast<'_> {
        Broadcast {
            rooms: self,
            targets: vec![room.into()],
            options: BroadcastOptions::new(),
            id: None,
        }
    }
}

/// A broadcast being built: see [`Rooms::to`]. Nothing is sent until
/// [`send`](Self::send) or [`emit`](Self::emit) is awaited.
#[derive(Debug)]
#[must_use = "a broadcast does nothing until `send` or `emit` is awaited"]
pub struct Broadcast<'a> {
    rooms: &'a Rooms,
    targets: Vec<RoomName>,
    options: BroadcastOptions,
    id: Option<String>,
}

impl Broadcast<'_> {
    /// Adds another room. A connection in several of the rooms gets one copy.
    pub fn to(mut self, room: impl Into<RoomName>) -> Self {
        self.targets.push(room.into());
        self
    }

    /// Skips this connection (typically the sender) on every node. One
    /// connection can be skipped: a second call replaces the first.
    pub fn except(mut self, connection: impl Into<ConnectionId>) -> Self {
        self.options = self.options.except(connection);
        self
    }

    /// Delivers on this node only; publishes nothing to the medium (and
    /// stores nothing in history).
    pub fn local(mut self) -> Self {
        self.options = self.options.local_only();
        self
    }

    /// Opaque metadata for the [`DeliveryFilter`] on every node; never sent to
    /// clients.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.options = self.options.metadata(metadata);
        self
    }

    /// Sets the message's SSE `id` (replacing any it has), which browsers
    /// echo back as `Last-Event-ID` and nodes use to drop duplicates.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The options gathered so far, as for [`Rooms::broadcast`].
    pub fn options(&self) -> &BroadcastOptions {
        &self.options
    }

    /// Broadcasts `message` (an [`SseMessage`], or an `Arc` of one).
    pub async fn send(self, message: impl Into<Arc<SseMessage>>) -> Result<BroadcastReport, Error> {
        let mut message = message.into();
        if let Some(id) = self.id {
            Arc::make_mut(&mut message).id = Some(id);
        }
        self.rooms
            .broadcast_to(self.targets, message, self.options)
            .await
    }

    /// Broadcasts an SSE event named `event` whose data is `data` serialised as
    /// JSON ([`SseMessage::json`]). Fails with [`Error::InvalidData`] when
    /// `data` cannot be serialised, before anything is sent.
    pub async fn emit<T: Serialize + ?Sized>(
        self,
        event: impl Into<String>,
        data: &T,
    ) -> Result<BroadcastReport, Error> {
        let message = SseMessage::json(data)?.with_event(event);
        self.send(message).await
    }
}

/// What a broadcast did on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Local connections that got the message queued.
    pub delivered: usize,
    /// Local connections the delivery filter rejected.
    pub filtered: usize,
    /// Local connections that could not take it (queue full or gone).
    pub dropped: usize,
    /// Rooms the envelope was published to (0 for a local-only broadcast).
    pub published: usize,
    /// With history on: the message's SSE id (its application id, or its
    /// history position; for several rooms, the last room's), which a client
    /// can resume from.
    pub id: Option<String>,
}

/// Decides, before delivery, whether a connection gets a message: `(connection,
/// message, metadata) -> bool`. It runs for local and remote broadcasts alike.
///
/// ```
/// use std::sync::Arc;
/// use rooms_adapter::DeliveryFilter;
///
/// // Deliver only to connections whose context names the message's project.
/// let filter: DeliveryFilter = Arc::new(|connection, _message, metadata| {
///     match (connection.context, metadata) {
///         (Some(context), Some(meta)) => context["projectId"] == meta["projectId"],
///         _ => true,
///     }
/// });
/// # let _ = filter;
/// ```
pub type DeliveryFilter =
    Arc<dyn Fn(&ConnectionInfo<'_>, &SseMessage, Option<&Value>) -> bool + Send + Sync>;
