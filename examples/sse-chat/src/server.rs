//! The HTTP server: hyper's HTTP/1.1 connection driver with the defences a
//! public server needs against hostile clients.
//!
//! - **Header-read timeout** (`--header-timeout-ms`): a client must send a
//!   request's complete head within this time, counted from when the server
//!   starts waiting for it; this also closes idle keep-alive connections.
//!   Slowloris clients (a partial request line or headers, sent slowly or never
//!   finished) are closed.
//! - **Socket cap** (`--max-sockets`): a [`Semaphore`] permit is taken for
//!   every accepted socket *before* it is served and released when the
//!   connection ends, so no burst can have more sockets served at once. A
//!   socket beyond the cap gets a best-effort `503` and is closed at once.
//! - **Write-stall timeout** (`--write-stall-timeout-ms`): a socket whose write
//!   makes no progress for this long (a client that stopped reading, with
//!   every buffer full) is reset and its connection ends, so a stalled SSE
//!   client cannot hold a socket, a task and its buffers.
//! - `TCP_NODELAY` on every accepted socket: SSE frames are small, written
//!   once each, and must not wait for the peer's delayed ACK (up to 40 ms).
//! - Graceful shutdown: on `shutdown`, the listener is closed, idle
//!   connections are closed, and open responses are given `grace` to finish.
//!
//! The request-body timeout is per route, in [`routes`](crate::routes).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::state::{AppCounters, AppState};

/// The limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a complete request head.
    pub header_timeout: Duration,
    /// Time a write may make no progress before the socket is reset.
    pub write_stall_timeout: Duration,
    /// Most sockets served at once.
    pub max_sockets: usize,
    /// Time open responses get to finish once shutting down.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down
/// gracefully. Returns once every connection has ended, or the grace period
/// has run out.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let service = TowerToHyperService::new(router);
    let sockets = Arc::new(Semaphore::new(
        limits.max_sockets.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        // Taken before serving, released when the connection's task ends: the
        // cap holds whatever the timing of a burst.
        let Ok(permit) = Arc::clone(&sockets).try_acquire_owned() else {
            AppCounters::bump(&state.counters.sockets_refused);
            tracing::debug!(%peer, max_sockets = limits.max_sockets, "socket refused: too many open");
            refuse(stream);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let io = TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout));
        let connection = graceful.watch(builder.serve_connection(io, service.clone()));
        let counters = Arc::clone(&state.counters);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                if is_write_stall(&error) {
                    AppCounters::bump(&counters.write_stalls);
                    tracing::info!(%peer, "connection closed: its writes stalled");
                } else if error.is_timeout() {
                    AppCounters::bump(&counters.header_timeouts);
                    tracing::debug!(%peer, "connection closed: request head not received in time");
                } else {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }

    // No new connections; idle ones close, open responses finish (the
    // engine's shutdown ends every SSE stream) within the grace period.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "open requests did not finish in time; closing them");
        }
    }
}

/// After a failed `accept`: per-connection errors are skipped; others (out of
/// file descriptors, say) are logged and retried after a pause, so the loop
/// does not spin.
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The answer to a socket beyond the cap, written only if it fits in the
/// socket's buffer right away.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 53\r\n\
connection: close\r\n\
retry-after: 1\r\n\
\r\n\
{\"error\":\"this node is busy; try again in a moment\"}\n";

/// Answers `503` without waiting, then closes the socket. What the client has
/// already sent (up to 64 KiB, so a flooding client cannot hold the accept
/// loop) is read first, so that the close is less likely to become a reset
/// that discards the answer before the client reads it.
fn refuse(stream: TcpStream) {
    let mut scratch = [0_u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut scratch), Ok(read) if read > 0) {
            break;
        }
    }
    let _ = stream.try_write(REFUSED);
    drop(stream);
}

/// The error a stalled write ends a connection with.
#[derive(Debug)]
struct WriteStalled(Duration);

impl std::fmt::Display for WriteStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no write progress for {:?}", self.0)
    }
}

impl std::error::Error for WriteStalled {}

/// Whether hyper's connection error came from a [`WriteStalled`].
fn is_write_stall(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<WriteStalled>() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<WriteStalled>())
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A TCP stream whose writes fail with [`WriteStalled`] once they have made no
/// progress for `limit`; the socket is then reset (`SO_LINGER` 0), which also
/// frees the data stuck in the kernel's send buffer at once.
///
/// The timer runs only while a write is pending: an idle connection is never
/// timed out by it.
struct StallGuard {
    stream: TcpStream,
    limit: Duration,
    /// Armed while a write is pending; `None` until the first stall.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallGuard {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        Self {
            stream,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Starts the clock if it is not running, and fails once it has run out.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let now = Instant::now();
        // The limit is bounded by the command line; far future if it is not.
        let deadline = now
            .checked_add(self.limit)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Reset rather than close: the peer is not reading, so a graceful
        // close would keep the unsent data in the kernel until it gave up.
        let _ = self.stream.set_zero_linger();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            WriteStalled(self.limit),
        )))
    }

    /// After a write: bytes written stop the clock, `Pending` runs it.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Pending => self.stalled(cx),
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(0)),
            ready => {
                self.armed = false;
                ready
            }
        }
    }

    /// After a flush or shutdown: `Pending` runs the clock (nothing else
    /// counts as progress).
    fn after_other(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        match result {
            Poll::Pending => self.stalled(cx),
            ready => ready,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.after_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.after_other(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.after_other(cx, result)
    }
}
