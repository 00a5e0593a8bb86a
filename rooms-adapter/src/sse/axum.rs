//! The axum SSE transport: turns a [`ConnectionReceiver`] into a
//! `text/event-stream` response.
//!
//! - [`SseResponse`] is an [`IntoResponse`]: `Content-Type: text/event-stream`,
//!   `Cache-Control: no-cache`, `X-Accel-Buffering: no` (so a reverse proxy does
//!   not buffer the stream), and a body that writes each [`Delivery`](crate::Delivery)'s
//!   pre-built [`sse_frame`](crate::Delivery::sse_frame) as it is. The frame was built
//!   once per message and is shared by every connection that receives it; this
//!   transport never re-frames.
//! - While nothing is sent for the keep-alive interval (default 15 s), a comment
//!   line (`: keep-alive`) is written so proxies and browsers keep the
//!   connection open, and so a vanished client is noticed.
//! - When the client goes away, the server drops the body, which drops the
//!   receiver: the connection leaves every room. When the connection is ended
//!   on the server side ([`Rooms::disconnect`](crate::Rooms::disconnect), the
//!   slow-consumer policy, or [`Rooms::shutdown`](crate::Rooms::shutdown)), the
//!   body ends after the queued messages.
//! - [`LastEventId`] extracts the `Last-Event-ID` request header that a
//!   reconnecting `EventSource` sends, so the application can replay what the
//!   client missed (with [`SseResponse::initial_message`]) or tell it to resync.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, extract::{Path, State}, response::{IntoResponse, Response}, routing::get};
//! use axum::http::{Request, StatusCode, header};
//! use futures_util::StreamExt;
//! use rooms_adapter::sse::axum::{LastEventId, SseResponse};
//! use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
//! use tower::ServiceExt;
//! # use rooms_adapter::adapter::{EventSink, RoomAdapter};
//! # use rooms_adapter::{Envelope, Error, NodeId, RoomName};
//! # struct Local;
//! # #[async_trait::async_trait]
//! # impl RoomAdapter for Local {
//! #     fn name(&self) -> &str { "local" }
//! #     async fn connect(&self, _: NodeId, _: EventSink) -> Result<(), Error> { Ok(()) }
//! #     async fn disconnect(&self) -> Result<(), Error> { Ok(()) }
//! #     async fn subscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
//! #     async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
//! #     async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> { Ok(()) }
//! # }
//!
//! /// `GET /rooms/{room}/events`: join the room and stream it.
//! async fn events(
//!     State(rooms): State<Rooms>,
//!     Path(room): Path<String>,
//!     LastEventId(last_event_id): LastEventId,
//! ) -> Response {
//!     let Ok(receiver) = rooms.connect(ConnectOptions::new()).await else {
//!         return StatusCode::SERVICE_UNAVAILABLE.into_response();
//!     };
//!     if rooms.join(receiver.id(), room).await.is_err() {
//!         return StatusCode::SERVICE_UNAVAILABLE.into_response();
//!     }
//!     // A real application would replay what the client missed after
//!     // `last_event_id`; here it only says hello.
//!     let hello = SseMessage::new(format!("resumed after {last_event_id:?}")).with_event("hello");
//!     match SseResponse::new(receiver).initial_message(&hello) {
//!         Ok(response) => response.into_response(),
//!         Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let adapter = Arc::new(Local);
//! // In a real server: rooms_adapter_memory::MemoryAdapter, or the Redis adapter.
//! let rooms = Rooms::builder(adapter).build().await?;
//! let app = Router::new().route("/rooms/{room}/events", get(events)).with_state(rooms.clone());
//!
//! let request = Request::get("/rooms/lobby/events").header("last-event-id", "41").body(axum::body::Body::empty())?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
//! assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
//!
//! rooms.broadcast("lobby", SseMessage::new("hi").with_id("42"), BroadcastOptions::new()).await?;
//! let mut body = response.into_body().into_data_stream();
//! assert_eq!(&body.next().await.unwrap()?[..], b"event: hello\ndata: resumed after Some(\"41\")\n\n");
//! assert_eq!(&body.next().await.unwrap()?[..], b"id: 42\ndata: hi\n\n");
//!
//! drop(body); // the client went away: the connection leaves the room
//! assert_eq!(rooms.member_count("lobby"), 0);
//! # Ok(()) }
//! ```
//!
//! ## Graceful shutdown
//!
//! `axum::serve(..).with_graceful_shutdown(signal)` stops accepting when
//! `signal` completes, then waits for every open response to finish. An SSE
//! response never finishes by itself, so the server would wait forever:
//! call [`Rooms::shutdown`](crate::Rooms::shutdown) inside the shutdown
//! future. It ends every connection's stream (after the frames already
//! queued), the responses complete, and `serve` returns.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, extract::{Path, State}, response::Response, routing::get};
//! use axum::response::IntoResponse;
//! use rooms_adapter::sse::axum::{LastEventId, SseResponse};
//! use rooms_adapter::{ConnectOptions, Error, Rooms};
//! use rooms_adapter_memory::MemoryAdapter;
//!
//! async fn events(
//!     State(rooms): State<Rooms>,
//!     Path(room): Path<String>,
//!     last_event_id: LastEventId,
//! ) -> Result<Response, Error> {
//!     let (response, _resume) =
//!         SseResponse::join(&rooms, room, &last_event_id, ConnectOptions::new()).await?;
//!     Ok(response.into_response())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
//!     let app = Router::new()
//!         .route("/rooms/{room}/events", get(events))
//!         .with_state(rooms.clone());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(async move {
//!             // Ctrl-C (add SIGTERM on Unix as well in production).
//!             let _ = tokio::signal::ctrl_c().await;
//!             // Ends every SSE stream, so the open responses complete.
//!             rooms.shutdown().await;
//!         })
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! Send clients a last message before shutting down if they should know
//! (`rooms.to(room).send(..)`, or [`Rooms::send_to`](crate::Rooms::send_to)
//! each connection): it is queued before the stream ends, and an
//! `EventSource` reconnects by itself, e.g. to another node behind the load
//! balancer.

mod last_event_id;
mod stream;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::connection::{ConnectOptions, ConnectionReceiver};
use crate::engine::{Resume, Rooms};
use crate::error::Error;
use crate::ids::RoomName;
use crate::message::SseMessage;
use crate::sse;
pub use last_event_id::{LAST_EVENT_ID, LastEventId};
pub use stream::SseStream;

/// Default interval of keep-alive comments.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest keep-alive interval: one day.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 60 * 60);

/// How many bytes of queued frames one body chunk may join (64 KiB).
pub const COALESCE_BYTES: usize = 64 * 1024;

/// An SSE response streaming one connection's deliveries.
///
/// Build it from the [`ConnectionReceiver`] returned by
/// [`Rooms::connect`](crate::Rooms::connect), after joining rooms, and return
/// it from an axum handler. See the [module docs](self) for a full example.
#[must_use = "an SseResponse does nothing until returned from a handler"]
pub struct SseResponse {
    receiver: ConnectionReceiver,
    keep_alive: Option<Duration>,
    keep_alive_text: String,
    prelude: VecDeque<Bytes>,
}

impl fmt::Debug for SseResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseResponse")
            .field("connection", self.receiver.id())
            .field("keep_alive", &self.keep_alive)
            .field("prelude_frames", &self.prelude.len())
            .finish_non_exhaustive()
    }
}

impl SseResponse {
    /// A response streaming `receiver`, with a `: keep-alive` comment every 15 s
    /// of silence.
    pub fn new(receiver: ConnectionReceiver) -> Self {
        Self {
            receiver,
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            keep_alive_text: "keep-alive".to_owned(),
            prelude: VecDeque::new(),
        }
    }

    /// The whole `GET /rooms/{room}/events` handler in one call: connects
    /// a new connection with `options`, joins `room` resuming after the
    /// client's [`LastEventId`] (what it missed is replayed from history, or
    /// one `event: gap` says history cannot cover it; see
    /// [`Rooms::join_from`]), and streams it. Returns the response and how
    /// the join resumed. On an error the connection is gone again.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use axum::{Router, extract::{Path, State}, http::{Request, StatusCode}};
    /// use axum::response::{IntoResponse, Response};
    /// use axum::routing::get;
    /// use futures_util::StreamExt;
    /// use rooms_adapter::history::HistoryPolicy;
    /// use rooms_adapter::sse::axum::{LastEventId, SseResponse};
    /// use rooms_adapter::{BroadcastOptions, ConnectOptions, Rooms, SseMessage};
    /// use rooms_adapter_memory::MemoryAdapter;
    /// use tower::ServiceExt;
    ///
    /// async fn events(
    ///     State(rooms): State<Rooms>,
    ///     Path(room): Path<String>,
    ///     last_event_id: LastEventId,
    /// ) -> Response {
    ///     match SseResponse::join(&rooms, room, &last_event_id, ConnectOptions::new()).await {
    ///         Ok((response, _resume)) => response.into_response(),
    ///         Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
    ///     .history(HistoryPolicy::new(100, Duration::from_secs(60))?)
    ///     .build()
    ///     .await?;
    /// let first = rooms.broadcast("news", SseMessage::new("one"), BroadcastOptions::new()).await?;
    /// rooms.broadcast("news", SseMessage::new("two"), BroadcastOptions::new()).await?;
    ///
    /// let app = Router::new().route("/rooms/{room}/events", get(events)).with_state(rooms);
    /// let request = Request::get("/rooms/news/events")
    ///     .header("last-event-id", first.id.expect("a position"))
    ///     .body(axum::body::Body::empty())?;
    /// let mut body = app.oneshot(request).await?.into_body().into_data_stream();
    /// let frame = body.next().await.expect("the missed message")?;
    /// assert!(frame.ends_with(b"data: two\n\n"));
    /// # Ok(()) }
    /// ```
    pub async fn join(
        rooms: &Rooms,
        room: impl Into<RoomName>,
        last_event_id: &LastEventId,
        options: ConnectOptions,
    ) -> Result<(SseResponse, Resume), Error> {
        let receiver = rooms.connect(options).await?;
        let resume = rooms
            .join_from(receiver.id(), room, last_event_id.0.as_deref())
            .await?;
        Ok((SseResponse::new(receiver), resume))
    }

    /// Sends a keep-alive comment after `interval` without any other output
    /// (clamped to 1 ms ..= [`MAX_KEEP_ALIVE`]).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = Some(interval.clamp(Duration::from_millis(1), MAX_KEEP_ALIVE));
        self
    }

    /// Sends no keep-alive comments. A client that vanishes is then noticed
    /// only when the next message is written.
    pub fn no_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// The text of keep-alive comments (default `keep-alive`; line breaks
    /// become spaces).
    pub fn keep_alive_text(mut self, text: impl Into<String>) -> Self {
        self.keep_alive_text = text.into();
        self
    }

    /// Sends a `retry:` field first, telling the browser how long to wait
    /// before reconnecting.
    pub fn retry(mut self, after: Duration) -> Self {
        let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.prelude
            .push_back(Bytes::from(format!("retry: {millis}\n\n")));
        self
    }

    /// Sends this message to this client before anything broadcast, e.g. a
    /// greeting or a replay of what it missed after its [`LastEventId`].
    /// Messages are sent in the order they are added.
    ///
    /// Fails if the message cannot be framed (a line break in `event` or `id`).
    pub fn initial_message(mut self, message: &SseMessage) -> Result<Self, Error> {
        self.prelude.push_back(sse::frame(message)?);
        Ok(self)
    }

    /// Sends this comment first (`: {text}`), e.g. to flush the response
    /// through a proxy right away.
    pub fn initial_comment(mut self, text: &str) -> Self {
        self.prelude.push_back(sse::comment(text));
        self
    }

    /// The body stream: each item is one complete SSE frame or comment.
    /// Dropping it drops the receiver (the connection leaves all rooms).
    pub fn into_stream(self) -> SseStream {
        SseStream {
            keep_alive_frame: sse::comment(&self.keep_alive_text),
            timer: self
                .keep_alive
                .map(|every| (every, Box::pin(tokio::time::sleep(every)))),
            receiver: self.receiver,
            prelude: self.prelude,
        }
    }
}

impl IntoResponse for SseResponse {
    fn into_response(self) -> Response {
        let mut response = Body::from_stream(self.into_stream()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{EventSink, RoomAdapter};
    use crate::{BroadcastOptions, ConnectOptions, Envelope, NodeId, RoomName, Rooms};
    use axum::extract::FromRequestParts;
    use axum::http::Request;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use tokio::time::Instant;

    struct Local;

    #[async_trait::async_trait]
    impl RoomAdapter for Local {
        fn name(&self) -> &str {
            "local"
        }
        async fn connect(&self, _: NodeId, _: EventSink) -> Result<(), Error> {
            Ok(())
        }
        async fn disconnect(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn subscribe(&self, _: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> {
            Ok(())
        }
    }

    async fn engine() -> Rooms {
        Rooms::builder(Arc::new(Local)).build().await.unwrap()
    }

    async fn member(rooms: &Rooms, room: &str) -> ConnectionReceiver {
        let receiver = rooms.connect(ConnectOptions::new()).await.unwrap();
        rooms.join(receiver.id(), room).await.unwrap();
        receiver
    }

    #[tokio::test]
    async fn response_has_sse_headers() {
        let rooms = engine().await;
        let response = SseResponse::new(member(&rooms, "r").await).into_response();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers["x-accel-buffering"], "no");
    }

    #[tokio::test]
    async fn body_carries_the_shared_frame_without_copying() {
        let rooms = engine().await;
        let mut a = SseResponse::new(member(&rooms, "r").await).into_stream();
        let mut b = SseResponse::new(member(&rooms, "r").await).into_stream();
        let report = rooms
            .broadcast(
                "r",
                SseMessage::new("x\ny").with_event("e").with_id("1"),
                BroadcastOptions::new(),
            )
            .await
            .unwrap();
        assert_eq!(report.delivered, 2);
        let first = a.next().await.unwrap().unwrap();
        let second = b.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"event: e\nid: 1\ndata: x\ndata: y\n\n");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "both connections got the same buffer"
        );
        assert_eq!(rooms.stats().frames_encoded, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_comments_fill_silence_only() {
        let rooms = engine().await;
        let mut stream = SseResponse::new(member(&rooms, "r").await)
            .keep_alive(Duration::from_secs(10))
            .keep_alive_text("ping")
            .retry(Duration::from_millis(1500))
            .into_stream();
        let start = Instant::now();
        assert_eq!(
            &stream.next().await.unwrap().unwrap()[..],
            b"retry: 1500\n\n"
        );
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b": ping\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(10));

        // A message resets the interval.
        tokio::time::sleep(Duration::from_secs(7)).await;
        rooms
            .broadcast("r", SseMessage::new(1), BroadcastOptions::new())
            .await
            .unwrap();
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"data: 1\n\n");
        let sent = Instant::now();
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b": ping\n\n");
        assert_eq!(sent.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn initial_messages_come_first_and_are_validated() {
        let rooms = engine().await;
        let receiver = member(&rooms, "r").await;
        rooms
            .broadcast("r", SseMessage::new("live"), BroadcastOptions::new())
            .await
            .unwrap();
        let response = SseResponse::new(receiver)
            .initial_comment("hello")
            .initial_message(&SseMessage::new("missed").with_id("7"))
            .unwrap();
        let mut stream = response.no_keep_alive().into_stream();
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b": hello\n\n");
        assert_eq!(
            &stream.next().await.unwrap().unwrap()[..],
            b"id: 7\ndata: missed\n\n"
        );
        assert_eq!(
            &stream.next().await.unwrap().unwrap()[..],
            b"data: live\n\n"
        );

        let receiver = member(&rooms, "r").await;
        let bad = SseMessage::new(1).with_id("1\nevent: x");
        assert!(SseResponse::new(receiver).initial_message(&bad).is_err());
    }

    #[tokio::test]
    async fn dropping_the_body_leaves_all_rooms() {
        let rooms = engine().await;
        let receiver = member(&rooms, "r").await;
        rooms.join(receiver.id(), "s").await.unwrap();
        let response = SseResponse::new(receiver).into_response();
        assert_eq!(rooms.member_count("r"), 1);
        drop(response);
        assert_eq!(rooms.member_count("r"), 0);
        assert_eq!(rooms.member_count("s"), 0);
        assert_eq!(rooms.stats().connections, 0);
    }

    #[tokio::test]
    async fn server_side_disconnect_ends_the_body_after_queued_messages() {
        let rooms = engine().await;
        let receiver = member(&rooms, "r").await;
        let id = receiver.id().clone();
        let mut stream = SseResponse::new(receiver).into_stream();
        rooms
            .broadcast("r", SseMessage::new("last"), BroadcastOptions::new())
            .await
            .unwrap();
        rooms.disconnect(&id).await.unwrap();
        assert_eq!(
            &stream.next().await.unwrap().unwrap()[..],
            b"data: last\n\n"
        );
        assert!(stream.next().await.is_none());

        let mut other = SseResponse::new(member(&rooms, "r").await).into_stream();
        rooms.shutdown().await;
        assert!(other.next().await.is_none());
    }

    #[tokio::test]
    async fn last_event_id_is_extracted() {
        async fn extract(request: Request<()>) -> LastEventId {
            let (mut parts, ()) = request.into_parts();
            let Ok(id) = LastEventId::from_request_parts(&mut parts, &()).await;
            id
        }
        let with = Request::get("/")
            .header("Last-Event-ID", "abc-1")
            .body(())
            .unwrap();
        assert_eq!(extract(with).await, LastEventId(Some("abc-1".into())));
        let empty = Request::get("/")
            .header("last-event-id", "")
            .body(())
            .unwrap();
        assert_eq!(extract(empty).await, LastEventId(None));
        let without = Request::get("/").body(()).unwrap();
        assert_eq!(extract(without).await, LastEventId(None));
    }
}
