//! Hostile HTTP clients against the real `sse-chat` binary (memory backend):
//! slowloris heads, POST bodies that never finish, bursts of sockets over the
//! cap, SSE clients that stop reading, and secrets in `--help`. Raw TCP clients
//! where a well-behaved HTTP client cannot misbehave as needed.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{ChatServer, DEADLINE, SseClient, assert_not_printed, eventually, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;
use tokio::time::{Instant, timeout};

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A clean end of stream.
    Eof,
    /// A reset or another error.
    Error(io::ErrorKind),
}

/// Reads until the server ends the connection; returns everything read and
/// how it ended. Panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Ending) {
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 16 * 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) => return (seen, Ending::Eof),
            Ok(Ok(read)) => seen.extend_from_slice(&buffer[..read]),
            Ok(Err(error)) => return (seen, Ending::Error(error.kind())),
            Err(_) => panic!(
                "the server did not close the connection within {within:?}; it sent:\n{}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

async fn connect(server: &ChatServer) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap()
}

/// The value of an unlabelled sample in `GET /metrics`.
async fn metric(server: &ChatServer, http: &reqwest::Client, name: &str) -> u64 {
    let text = server.metrics_text(http).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

/// Waits until the unlabelled metric `name` is at least `at_least`.
async fn wait_metric(server: &ChatServer, http: &reqwest::Client, name: &str, at_least: u64) {
    eventually(&format!("{name} >= {at_least}"), DEADLINE, || async {
        (metric(server, http, name).await >= at_least).then_some(())
    })
    .await;
}

const HEADER_TIMEOUT: Duration = Duration::from_millis(600);

/// How late after its timeout a close may come on a loaded machine (these
/// tests share 2 cores with builds); a missing timeout would never close.
const SLACK: Duration = Duration::from_secs(4);

#[tokio::test]
async fn slowloris_clients_are_closed_within_the_header_timeout() {
    let server = ChatServer::start("hostile-slowloris", &["--header-timeout-ms", "600"]).await;
    let http = http();
    // A well-behaved SSE client, open for longer than the header timeout.
    let mut reader = SseClient::open(&http, &server.url("/rooms/lobby/events")).await;
    reader.next_of("ready").await;

    let started = Instant::now();
    // 1. A request line and part of the headers, then nothing.
    let mut partial = connect(&server).await;
    partial
        .write_all(b"GET /rooms/lobby/events HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // 2. Headers dripped one byte every 50 ms, never finished: the timeout is
    //    for the whole head, not per byte.
    let drip = connect(&server).await;
    let (mut drip_read, mut drip_write) = drip.into_split();
    let dripping = tokio::spawn(async move {
        if drip_write.write_all(b"GET / HTTP/1.1\r\n").await.is_err() {
            return;
        }
        // One byte per tick (the slow drip is what is under test), until
        // writing fails once the server has closed.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while drip_write.write_all(b"x").await.is_ok() {
            tick.tick().await;
        }
    });
    // 3. Connected, nothing sent at all.
    let mut silent = connect(&server).await;

    let (_, ending) = read_until_closed(&mut partial, DEADLINE).await;
    let partial_closed = started.elapsed();
    println!("partial head: closed after {partial_closed:?} ({ending:?})");
    let mut drip_seen = Vec::new();
    let drip_closed = timeout(DEADLINE, async {
        let mut buffer = [0_u8; 1024];
        loop {
            match drip_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(read) => drip_seen.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .expect("the dripping client is closed");
    println!("dripping head: closed after {drip_closed:?}");
    timeout(DEADLINE, dripping)
        .await
        .expect("writing fails once closed")
        .unwrap();
    let (_, ending) = read_until_closed(&mut silent, DEADLINE).await;
    let silent_closed = started.elapsed();
    println!("silent: closed after {silent_closed:?} ({ending:?})");

    for (what, closed) in [
        ("partial head", partial_closed),
        ("dripping head", drip_closed),
        ("silent socket", silent_closed),
    ] {
        // Not before the timeout (so it is the timeout that closed it), and
        // soon after it (see SLACK).
        assert!(
            closed >= HEADER_TIMEOUT - Duration::from_millis(100),
            "{what} closed after {closed:?}, before the timeout"
        );
        assert!(
            closed < HEADER_TIMEOUT + SLACK,
            "{what} closed after {closed:?}, long after the {HEADER_TIMEOUT:?} timeout"
        );
    }
    wait_metric(&server, &http, "sse_chat_header_timeouts_total", 3).await;

    // The stream that sent its head in time outlived the header timeout.
    let (status, _) = server
        .post(
            &http,
            "lobby",
            &json!({"name": "ada", "text": "still here"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(reader.next().await.json()["text"], "still here");
}

#[tokio::test]
async fn a_post_body_that_never_finishes_is_answered_408_and_closed() {
    let server = ChatServer::start(
        "hostile-body",
        &["--body-timeout-ms", "600", "--header-timeout-ms", "60000"],
    )
    .await;
    let http = http();
    let timeout_ms = Duration::from_millis(600);
    let head = "POST /rooms/lobby/messages HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n";

    // Part of the body, then nothing.
    let started = Instant::now();
    let mut stuck = connect(&server).await;
    stuck
        .write_all(format!("{head}{{\"name\":").as_bytes())
        .await
        .unwrap();
    // The body dripped, a byte every 50 ms: 100 bytes would take 5 s.
    let mut dripping = connect(&server).await;
    dripping.write_all(head.as_bytes()).await.unwrap();
    let drip_started = Instant::now();
    let drip = async {
        let mut buffer = [0_u8; 4096];
        let mut seen = Vec::new();
        // One body byte per tick: the slow body is what is under test.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                read = dripping.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return (seen, drip_started.elapsed()),
                    Ok(read) => seen.extend_from_slice(&buffer[..read]),
                },
                _ = tick.tick() => {
                    // Fails once the server has closed; the read sees it.
                    let _ = dripping.write_all(b" ").await;
                }
            }
        }
    };
    let (drip_seen, drip_closed) = timeout(DEADLINE, drip)
        .await
        .expect("the dripping POST is closed");
    let (stuck_seen, _) = read_until_closed(&mut stuck, DEADLINE).await;
    let stuck_closed = started.elapsed();

    for (what, seen, closed) in [
        ("stuck body", stuck_seen, stuck_closed),
        ("dripping body", drip_seen, drip_closed),
    ] {
        let answer = String::from_utf8_lossy(&seen);
        println!("{what}: closed after {closed:?}; answer:\n{answer}");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{what}: {answer}");
        assert!(
            answer.to_lowercase().contains("connection: close"),
            "{what}: {answer}"
        );
        assert!(
            answer.contains("body not received within 600 ms"),
            "{what}: {answer}"
        );
        assert!(
            closed >= timeout_ms - Duration::from_millis(100),
            "{what}: {closed:?}"
        );
        assert!(closed < timeout_ms + SLACK, "{what}: {closed:?}");
    }
    wait_metric(&server, &http, "sse_chat_body_timeouts_total", 2).await;

    // A body that arrives in time is still accepted.
    let (status, answer) = server
        .post(&http, "lobby", &json!({"name": "ada", "text": "in time"}))
        .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn a_burst_of_sockets_never_gets_more_than_the_cap_served() {
    const CAP: usize = 4;
    const BURST: usize = 24;
    let server = ChatServer::start(
        "hostile-cap",
        &["--max-sockets", "4", "--max-connections", "100"],
    )
    .await;
    let http = http();

    // Every socket connects, then all send their request at the same moment.
    let barrier = Arc::new(Barrier::new(BURST));
    let mut tasks = Vec::new();
    for _ in 0..BURST {
        let barrier = Arc::clone(&barrier);
        let port = server.port;
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            barrier.wait().await;
            let sent = stream
                .write_all(b"GET /rooms/burst/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            // The status line, or how the socket ended without one.
            let mut head = Vec::new();
            let mut buffer = [0_u8; 1024];
            let outcome = timeout(DEADLINE, async {
                loop {
                    if head.windows(4).any(|window| window == b"\r\n\r\n") {
                        return String::from_utf8_lossy(&head)
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    match stream.read(&mut buffer).await {
                        Ok(0) => return "EOF".to_owned(),
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                        Err(error) => return format!("error: {error}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| "no answer".to_owned());
            let _ = sent;
            (outcome, stream)
        }));
    }
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        let (outcome, stream) = task.await.unwrap();
        if outcome.starts_with("HTTP/1.1 200") {
            served.push(stream);
        } else {
            refused.push(outcome);
        }
    }
    println!(
        "{} served, {} refused: {refused:?}",
        served.len(),
        refused.len()
    );
    assert_eq!(
        served.len(),
        CAP,
        "exactly the cap is served; refused: {refused:?}"
    );
    for outcome in &refused {
        assert!(
            outcome.starts_with("HTTP/1.1 503") || outcome == "EOF" || outcome.starts_with("error"),
            "a refused socket is answered 503 or closed: {outcome}"
        );
    }

    // While the cap is taken, even a request for the metrics is refused.
    if let Ok(response) = http.get(server.url("/healthz")).send().await {
        assert_eq!(response.status(), 503);
    }

    // Two served clients leave: their sockets' permits come back, and no more
    // than the cap was ever in the room.
    served.truncate(CAP - 2);
    eventually("a free socket", DEADLINE, || async {
        let response = http.get(server.url("/healthz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    server.wait_members(&http, "burst", CAP - 2).await;
    assert!(metric(&server, &http, "sse_chat_sockets_refused_total").await >= (BURST - CAP) as u64);
    assert_eq!(
        metric(&server, &http, "sse_chat_connections_refused_total").await,
        0,
        "the socket cap, not the stream cap, refused them"
    );
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_is_reset() {
    let server = ChatServer::start(
        "hostile-stall",
        &[
            "--write-stall-timeout-ms",
            "500",
            "--header-timeout-ms",
            "60000",
        ],
    )
    .await;
    let http = http();

    // A subscriber with a small receive window that never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .unwrap();
    stalled
        .write_all(b"GET /rooms/stall/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    server.wait_members(&http, "stall", 1).await;

    // Large messages until the server has given up on the subscriber.
    let text = "x".repeat(2000);
    let posted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut posters = Vec::new();
    for _ in 0..4 {
        let (http, url, text) = (
            http.clone(),
            server.url("/rooms/stall/messages"),
            text.clone(),
        );
        let (posted, stop) = (Arc::clone(&posted), Arc::clone(&stop));
        posters.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && posted.load(std::sync::atomic::Ordering::Relaxed) < 50_000
            {
                let response = http
                    .post(&url)
                    .json(&json!({"name": "flood", "text": text}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    wait_metric(&server, &http, "sse_chat_write_stalls_total", 1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for poster in posters {
        poster.await.unwrap();
    }
    println!(
        "writes stalled after about {} messages of 2 KB",
        posted.load(std::sync::atomic::Ordering::Relaxed)
    );

    // The socket is gone on the server's side: reading what was buffered
    // ends in a reset (or an end of stream), not in more of the stream.
    let (seen, ending) = read_until_closed(&mut stalled, DEADLINE).await;
    println!(
        "the stalled client read {} bytes, then {ending:?}",
        seen.len()
    );
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200 "));
    assert!(
        !seen.ends_with(b"0\r\n\r\n"),
        "the response was not ended normally: the connection was cut"
    );
    server.wait_members(&http, "stall", 0).await;

    // A client that reads is unaffected.
    let mut reader = SseClient::open(&http, &server.url("/rooms/stall/events")).await;
    reader.next_of("ready").await;
    let (status, _) = server
        .post(&http, "stall", &json!({"name": "ada", "text": "after"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(reader.next().await.json()["text"], "after");
}

#[tokio::test]
async fn help_does_not_print_the_redis_password() {
    for flag in ["--help", "-h"] {
        let output = timeout(
            DEADLINE,
            ChatServer::command(&[flag])
                .env("REDIS_URL", "redis://user:hunter2@127.0.0.1:1")
                .output(),
        )
        .await
        .expect("exits quickly")
        .unwrap();
        assert!(output.status.success(), "{flag}: {:?}", output.status);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("REDIS_URL"),
            "{flag} names the variable:\n{stdout}"
        );
        for flag_name in [
            "--header-timeout-ms",
            "--body-timeout-ms",
            "--write-stall-timeout-ms",
            "--max-sockets",
        ] {
            assert!(
                stdout.contains(flag_name),
                "{flag} lists {flag_name}:\n{stdout}"
            );
        }
        assert_not_printed(&output, "hunter2", flag);
    }

    // A start-up failure with that URL does not print the password either.
    let output = timeout(
        DEADLINE,
        ChatServer::command(&["--port", "0"])
            .env("REDIS_URL", "redis://user:hunter2@127.0.0.1:1")
            .output(),
    )
    .await
    .expect("exits quickly")
    .unwrap();
    assert!(!output.status.success());
    assert_not_printed(&output, "hunter2", "a start-up failure");
}
