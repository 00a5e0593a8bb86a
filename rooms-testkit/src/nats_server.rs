//! Throwaway `nats-server` processes on free loopback ports:
//! [`NatsServer`], and 3-server clusters with routes: [`NatsCluster`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rooms_testkit::nats_server::{NatsCluster, NatsServer};
//!
//! let mut server = NatsServer::start().await?;
//! println!("{}", server.url()); // nats://127.0.0.1:<port>
//! server.kill()?; // SIGKILL, as a crash would
//! server.restart().await?; // same port
//!
//! let cluster = NatsCluster::start(3).await?; // routes between all three
//! println!("{:?}", cluster.urls());
//! # Ok(()) }
//! ```
//!
//! Each server runs with its own config file in its own temporary directory
//! (removed on drop), listening on 127.0.0.1 only, with
//! [`TEST_MAX_PAYLOAD`] as `max_payload`: the 1 MiB conformance case and
//! the 4 MiB + 1 malformed payload need more than the server's 1 MiB
//! default. Users must raise `max_payload` the same way to broadcast
//! envelopes over 1 MiB. The process is killed when the value is dropped.
//!
//! The binary is `nats-server` on `PATH`, or the path in the
//! `ROOMS_NATS_SERVER` environment variable.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{self, ServerChild};

use crate::poll::wait_for;
use crate::redis_server::free_port;

/// How long a start waits for the server to accept connections.
pub const START_DEADLINE: Duration = Duration::from_secs(15);

/// Environment variable naming the `nats-server` binary to use.
pub const SERVER_BIN_ENV: &str = "ROOMS_NATS_SERVER";

/// The `max_payload` of throwaway servers: 8 MiB (the server's default is
/// 1 MiB; it accepts up to 64 MiB).
pub const TEST_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// One `nats-server` process on a loopback port, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: ServerChild,
    /// Extra configuration appended to the generated file (e.g. a
    /// `cluster { ... }` block).
    extra_config: String,
    /// The HTTP monitoring port, when asked for.
    monitor_port: Option<u16>,
}

impl NatsServer {
    /// Starts a server on a free port and waits (up to [`START_DEADLINE`])
    /// until it greets a client with INFO. If `nats-server` is missing the
    /// error says how to install it.
    pub async fn start() -> io::Result<Self> {
        Self::start_with_config("").await
    }

    /// Like [`start`](Self::start), with extra lines for the config file
    /// (e.g. `authorization { token: "secret" }`).
    pub async fn start_with_config(extra_config: &str) -> io::Result<Self> {
        Self::start_inner(extra_config, false).await
    }

    /// Like [`start_with_config`](Self::start_with_config), with HTTP
    /// monitoring on another free port (see [`monitor`](Self::monitor)).
    pub async fn start_monitored(extra_config: &str) -> io::Result<Self> {
        Self::start_inner(extra_config, true).await
    }

    async fn start_inner(extra_config: &str, monitored: bool) -> io::Result<Self> {
        let mut last_error = None;
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = Self::on_port(port, extra_config)?;
            if monitored {
                server.monitor_port = Some(free_port()?);
            }
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    /// A server on `port` with `extra_config`, not started.
    fn on_port(port: u16, extra_config: &str) -> io::Result<Self> {
        Ok(Self {
            port,
            dir: temp_dir(port)?,
            child: ServerChild::default(),
            extra_config: extra_config.to_owned(),
            monitor_port: None,
        })
    }

    /// The body of `GET {path}` on the HTTP monitoring port (e.g. `/subsz`,
    /// `/connz?subs=1`), for servers started with monitoring.
    pub async fn monitor(&self, path: &str) -> io::Result<String> {
        let port = self
            .monitor_port
            .ok_or_else(|| io::Error::other("this nats-server has no monitoring port"))?;
        http_get(port, path).await
    }

    /// How many subscriptions the server holds now (`/subsz`), for servers
    /// started with monitoring.
    pub async fn subscription_count(&self) -> io::Result<usize> {
        let body = self.monitor("/subsz").await?;
        json_number(&body, "num_subscriptions")
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Kills the server with SIGKILL (no lame duck mode, as a crash) and
    /// reaps it. Idempotent.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Starts the server again on the same port (killing it first if it
    /// still runs) and waits until it greets clients.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let until = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                Err(error) => process::pause_before_retry(error, until).await?,
            }
        }
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    fn config(&self) -> String {
        format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: {TEST_MAX_PAYLOAD}\nmax_pending: {pending}\n\
             log_file: \"{log}\"\n{monitor}{extra}\n",
            port = self.port,
            monitor = self
                .monitor_port
                .map(|port| format!("http: \"127.0.0.1:{port}\"\n"))
                .unwrap_or_default(),
            pending = 8 * TEST_MAX_PAYLOAD,
            log = self.dir.join("nats.log").display(),
            extra = self.extra_config,
        )
    }

    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        let child = self.spawn()?;
        let port = self.port;
        let child = process::wait_ready(
            child,
            "nats-server",
            port,
            START_DEADLINE,
            "greet",
            || self.log(),
            || greets(port),
        )
        .await?;
        self.child.set(child);
        Ok(())
    }

    fn spawn(&self) -> io::Result<Child> {
        let path = self.dir.join("nats.conf");
        std::fs::write(&path, self.config())?;
        let binary = server_binary();
        Command::new(&binary)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "`{}` not found: the NATS tests need a local nats-server (install it \
                             with `apt-get install nats-server`, or point {SERVER_BIN_ENV} at \
                             the binary)",
                            binary.display()
                        ),
                    )
                } else {
                    io::Error::new(
                        error.kind(),
                        format!("cannot start {}: {error}", binary.display()),
                    )
                }
            })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Several `nats-server`s joined by routes into one cluster, each also
/// serving HTTP monitoring (to check the routes).
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers with routes to each other and waits until
    /// every one has a route to every other.
    pub async fn start(size: usize) -> io::Result<Self> {
        let client_ports = (0..size)
            .map(|_| free_port())
            .collect::<io::Result<Vec<_>>>()?;
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<io::Result<Vec<_>>>()?;
        let monitor_ports = (0..size)
            .map(|_| free_port())
            .collect::<io::Result<Vec<_>>>()?;
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
            .collect();
        let mut servers = Vec::with_capacity(size);
        for i in 0..size {
            let extra = format!(
                "server_name: \"n{i}\"\n\
                 cluster {{\n  name: \"rooms-test\"\n  listen: \"127.0.0.1:{route}\"\n  \
                 routes: [{routes}]\n}}\n",
                route = route_ports[i],
                routes = routes.join(", "),
            );
            let mut server = NatsServer::on_port(client_ports[i], &extra)?;
            server.monitor_port = Some(monitor_ports[i]);
            server.spawn_and_wait().await?;
            servers.push(server);
        }
        let cluster = Self { servers };
        cluster.wait_for_routes().await?;
        Ok(cluster)
    }

    /// The client URLs, in server order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The servers.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Server `index`, e.g. to kill it.
    pub fn server_mut(&mut self, index: usize) -> Option<&mut NatsServer> {
        self.servers.get_mut(index)
    }

    /// The index of the server listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|server| server.port() == port)
    }

    /// Waits until every running server has a route to every other running
    /// server.
    pub async fn wait_for_routes(&self) -> io::Result<()> {
        let running = self.servers.iter().filter(|s| s.child.is_some()).count();
        let expected = running.saturating_sub(1);
        for server in &self.servers {
            let (true, Some(monitor)) = (server.child.is_some(), server.monitor_port) else {
                continue;
            };
            wait_for(
                &format!("nats-server :{} has {expected} routes", server.port()),
                START_DEADLINE,
                || async move { Ok(route_count(monitor).await? >= expected) },
            )
            .await?;
        }
        Ok(())
    }
}

/// How many routes the server with monitoring on `port` has (`/routez`).
async fn route_count(port: u16) -> io::Result<usize> {
    json_number(&http_get(port, "/routez").await?, "num_routes")
}

/// The response (headers included) to `GET {path}` on a loopback port.
async fn http_get(port: u16, path: &str) -> io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut body))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{path} did not answer")))??;
    Ok(body)
}

/// The first integer value of `"key":` in a JSON text.
fn json_number(body: &str, key: &str) -> io::Result<usize> {
    body.split(&format!("\"{key}\":"))
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|digits| digits.parse().ok())
        })
        .ok_or_else(|| io::Error::other(format!("no {key} in {body:?}")))
}

fn server_binary() -> PathBuf {
    std::env::var_os(SERVER_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

fn temp_dir(port: u16) -> io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rooms-nats-{}-{}-{}",
        std::process::id(),
        port,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether a server on `port` greets a new connection with INFO right now.
async fn greets(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await?;
        Ok::<bool, io::Error>(&greeting == b"INFO ")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_kills_and_restarts_on_the_same_port() {
        let mut server = NatsServer::start().await.expect("nats-server starts");
        let port = server.port();
        assert!(greets(port).await);
        server.kill().expect("kill");
        assert!(!greets(port).await, "killed server still greets");
        server.restart().await.expect("restart");
        assert_eq!(server.port(), port);
        assert!(greets(port).await);
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "temp dir removed");
        assert!(!greets(port).await, "dropped server still greets");
    }

    #[tokio::test]
    async fn a_cluster_forms_routes() {
        let cluster = NatsCluster::start(3).await.expect("cluster starts");
        assert_eq!(cluster.urls().len(), 3);
        for server in cluster.servers() {
            let port = server.monitor_port.expect("monitored");
            assert_eq!(route_count(port).await.expect("routez"), 2);
        }
    }
}
