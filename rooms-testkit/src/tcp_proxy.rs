//! [`FaultProxy`]: a TCP proxy on a free loopback port that can cut every
//! connection through it and refuse new ones, then let them through again.
//! Fault injection for a medium that the tests must not kill (a shared
//! server), e.g. PostgreSQL.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rooms_testkit::tcp_proxy::FaultProxy;
//!
//! let proxy = FaultProxy::start("127.0.0.1:5432").await?;
//! println!("connect to 127.0.0.1:{}", proxy.port());
//! proxy.cut(); // every proxied connection is closed, new ones are closed at once
//! proxy.restore(); // new connections go through again
//! # Ok(()) }
//! ```

use std::io;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A fault-injecting TCP proxy; stops (closing everything) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    /// `(up, generation)`: a cut bumps the generation, which ends every
    /// pipe of an older one.
    state: Arc<watch::Sender<(bool, u64)>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (state, _) = watch::channel((true, 0u64));
        let state = Arc::new(state);
        let upstream = upstream.to_owned();
        let accept = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&state)));
        Ok(Self {
            port,
            state,
            accept,
        })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the proxy; new connections are
    /// accepted and closed at once (the client sees the server hang up).
    pub fn cut(&self) {
        self.state.send_modify(|(up, generation)| {
            *up = false;
            *generation += 1;
        });
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.state.send_modify(|(up, _)| *up = true);
    }

    /// Whether connections go through.
    pub fn is_up(&self) -> bool {
        self.state.borrow().0
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    state: Arc<watch::Sender<(bool, u64)>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (up, generation) = *state.borrow();
        if !up {
            drop(client);
            continue;
        }
        let mut cuts = state.subscribe();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cuts.wait_for(|(_, now)| *now != generation) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn proxies_cuts_and_restores() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let address = echo.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(&address).await.expect("proxy");
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        stream.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.expect("echo");
        assert_eq!(&got, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "cut connection still open: {read:?}"
        );
        let mut refused = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("accepted");
        let mut buffer = [0u8; 1];
        assert!(matches!(refused.read(&mut buffer).await, Ok(0) | Err(_)));

        proxy.restore();
        let mut again = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        again.write_all(b"back").await.expect("write");
        again.read_exact(&mut got).await.expect("echo");
        assert_eq!(&got, b"back");
    }
}
