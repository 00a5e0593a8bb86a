//! The graceful-shutdown recipe of `rooms_adapter::sse::axum`, on a real
//! server: `rooms.shutdown()` inside `with_graceful_shutdown` ends the open
//! SSE streams, so the server exits and the client sees its stream end.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rooms_adapter::sse::axum::{LastEventId, SseResponse};
use rooms_adapter::{ConnectOptions, Error, Rooms, SseMessage};
use rooms_adapter_memory::MemoryAdapter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

const DEADLINE: Duration = Duration::from_secs(10);

async fn events(
    State(rooms): State<Rooms>,
    Path(room): Path<String>,
    last_event_id: LastEventId,
) -> Result<Response, Error> {
    let (response, _resume) =
        SseResponse::join(&rooms, room, &last_event_id, ConnectOptions::new()).await?;
    Ok(response.into_response())
}

/// Reads from `stream` into `seen` until `seen` contains `needle`.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    let mut buffer = [0u8; 4096];
    while !seen.windows(needle.len()).any(|window| window == needle) {
        let read = timeout(DEADLINE, stream.read(&mut buffer))
            .await
            .expect("data within the deadline")
            .expect("read");
        assert!(
            read > 0,
            "stream ended before {:?}: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_sse_streams_and_the_server_exits() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route("/rooms/{room}/events", get(events))
        .with_state(rooms.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let on_shutdown = rooms.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                on_shutdown.shutdown().await;
            })
            .await
    });

    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(
            b"GET /rooms/lobby/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&seen).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    // The client is a member: a broadcast reaches it through the server.
    let report = rooms
        .to("lobby")
        .send(SseMessage::new("before shutdown"))
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    read_until(&mut client, &mut seen, b"data: before shutdown\n\n").await;

    let started = Instant::now();
    stop.send(()).unwrap();
    let served = timeout(DEADLINE, server)
        .await
        .expect("the server exits once the SSE streams end")
        .expect("server task");
    served.expect("serve returns Ok");

    // The client saw the stream end: the last chunk of the chunked body,
    // then the connection closed.
    read_until(&mut client, &mut seen, b"0\r\n\r\n").await;
    let mut rest = Vec::new();
    let read = timeout(DEADLINE, client.read_to_end(&mut rest))
        .await
        .expect("the connection closes within the deadline")
        .unwrap();
    assert_eq!(read, 0, "nothing after the end of the stream: {rest:?}");
    assert!(started.elapsed() < DEADLINE);
    assert!(rooms.is_closed());
    assert_eq!(rooms.stats().connections, 0);
}
