//! Throwaway `redis-server` processes on free loopback ports: [`RedisServer`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use rooms_testkit::redis_server::RedisServer;
//!
//! let mut server = RedisServer::start().await?;
//! println!("{}", server.url()); // redis://127.0.0.1:<port>
//! server.kill()?; // SIGKILL, as a crash would
//! server.restart().await?; // same port, empty data
//! # Ok(()) }
//! ```
//!
//! Each server runs with `--bind 127.0.0.1`, no persistence (`--save ""`,
//! `--appendonly no`) and its own temporary `--dir` (removed on drop), so
//! tests can kill and restart it freely without touching a shared Redis. The
//! process is killed when the [`RedisServer`] is dropped.
//!
//! The binary is `redis-server` on `PATH`, or the path in the
//! `ROOMS_REDIS_SERVER` environment variable.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{self, ServerChild};

/// How long [`RedisServer::start`] waits for the server to answer PING.
pub const START_DEADLINE: Duration = Duration::from_secs(15);

/// Environment variable naming the `redis-server` binary to use.
pub const SERVER_BIN_ENV: &str = "ROOMS_REDIS_SERVER";

/// One `redis-server` process on a loopback port, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: ServerChild,
    extra_args: Vec<String>,
    /// What goes into `redis.conf` in `dir`, passed before the other
    /// arguments ([`start_with_config`](Self::start_with_config)).
    config: Option<String>,
}

impl RedisServer {
    /// Starts a server on a free port and waits (up to [`START_DEADLINE`])
    /// until it answers PING.
    ///
    /// If `redis-server` is missing the error says how to install it.
    pub async fn start() -> io::Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Like [`start`](Self::start), with extra `redis-server` arguments (e.g.
    /// `["--requirepass", "secret"]`).
    pub async fn start_with_args(args: &[&str]) -> io::Result<Self> {
        Self::start_inner(None, args).await
    }

    /// Like [`start_with_args`](Self::start_with_args), with a config file:
    /// `config` is written to `redis.conf` in the server's temp directory,
    /// which is passed as the first argument (the usual `--port`, `--dir`, ...
    /// and `args` come after it and win). Redis Sentinel needs this
    /// (`args = ["--sentinel"]`): it rewrites that file with what it learns.
    /// The file is written once, so a [`restart`](Self::restart) keeps the
    /// rewritten state.
    pub async fn start_with_config(config: &str, args: &[&str]) -> io::Result<Self> {
        Self::start_inner(Some(config), args).await
    }

    async fn start_inner(config: Option<&str>, args: &[&str]) -> io::Result<Self> {
        let mut last_error = None;
        // A free port can be taken by someone else before redis binds it: retry.
        for _ in 0..5 {
            let port = free_port()?;
            let dir = temp_dir(port)?;
            let mut server = Self {
                port,
                dir,
                child: ServerChild::default(),
                extra_args: args.iter().map(|arg| (*arg).to_owned()).collect(),
                config: config.map(str::to_owned),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Starts a server on `port` (e.g. for `cargo xtask redis --port 6390`)
    /// and waits until it answers PING.
    pub async fn start_on_port(port: u16) -> io::Result<Self> {
        let mut server = Self {
            port,
            dir: temp_dir(port)?,
            child: ServerChild::default(),
            extra_args: Vec::new(),
            config: None,
        };
        server.spawn_and_wait().await?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Kills the server with SIGKILL (no shutdown, as a crash) and reaps it.
    /// Idempotent.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Starts the server again on the same port (killing it first if it still
    /// runs) and waits until it answers PING. Its data is gone.
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

    /// Like [`restart`](Self::restart), with `args` instead of the extra
    /// arguments it was started with (from now on), e.g. `["--replicaof",
    /// "127.0.0.1", "6380"]` to bring a crashed master back as a replica.
    pub async fn restart_with_args(&mut self, args: &[&str]) -> io::Result<()> {
        self.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart().await
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered, as with a dead proxy or a hung host.
    pub fn pause(&mut self) -> io::Result<()> {
        self.child.signal("STOP", "redis-server")
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT).
    pub fn resume(&mut self) -> io::Result<()> {
        self.child.signal("CONT", "redis-server")
    }

    /// Sends one inline command and returns the raw reply (e.g. `PING` gives
    /// `+PONG\r\n`). For quick checks in tests, not for payloads.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "redis did not answer"))??;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        let child = self.spawn()?;
        let port = self.port;
        let child = process::wait_ready(
            child,
            "redis-server",
            port,
            START_DEADLINE,
            "answer PING",
            || self.log(),
            || ping(port),
        )
        .await?;
        self.child.set(child);
        Ok(())
    }

    fn spawn(&self) -> io::Result<Child> {
        if let Some(config) = &self.config {
            let path = self.config_path();
            if !path.exists() {
                std::fs::write(&path, config)?;
            }
        }
        self.spawn_binary(&server_binary())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }

    fn spawn_binary(&self, binary: &Path) -> io::Result<Child> {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let log = self.dir.join("redis.log").display().to_string();
        let mut command = Command::new(binary);
        if self.config.is_some() {
            command.arg(self.config_path());
        }
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &dir, "--logfile", &log, "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.spawn().map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "`{}` not found: tests and `cargo xtask redis` need a local redis-server \
                         (install it with `apt-get install redis-server`, or point {SERVER_BIN_ENV} \
                         at the binary)",
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server_binary() -> PathBuf {
    std::env::var_os(SERVER_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A port that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn temp_dir(port: u16) -> io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rooms-redis-{}-{}-{}",
        std::process::id(),
        port,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether a server on `port` answers PING right now.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<bool, io::Error>(&reply == b"+PONG\r\n")
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
        let mut server = RedisServer::start().await.expect("redis-server starts");
        let port = server.port();
        assert_eq!(server.command("PING").await.expect("ping"), "+PONG\r\n");
        server.command("SET k v").await.expect("set");
        server.kill().expect("kill");
        assert!(!ping(port).await, "killed server still answers");
        server.restart().await.expect("restart");
        assert_eq!(server.port(), port);
        assert_eq!(
            server.command("GET k").await.expect("get"),
            "$-1\r\n",
            "data is gone"
        );
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "temp dir removed");
        assert!(!ping(port).await, "dropped server still answers");
    }

    #[tokio::test]
    async fn pause_freezes_and_resume_thaws() {
        let mut server = RedisServer::start().await.expect("redis-server starts");
        server.pause().expect("pause");
        assert!(!ping(server.port()).await, "paused server answered");
        server.resume().expect("resume");
        assert!(ping(server.port()).await, "resumed server is silent");
    }

    #[tokio::test]
    async fn config_file_is_read_and_kept_across_restarts() {
        let mut server = RedisServer::start_with_config("maxmemory 12345\n", &[])
            .await
            .expect("redis-server starts");
        let reply = server.command("CONFIG GET maxmemory").await.expect("get");
        assert!(reply.contains("12345"), "{reply}");
        server
            .command("CONFIG SET maxmemory 23456")
            .await
            .expect("set");
        server.command("CONFIG REWRITE").await.expect("rewrite");
        server.restart().await.expect("restart");
        let reply = server.command("CONFIG GET maxmemory").await.expect("get");
        assert!(
            reply.contains("23456"),
            "the rewritten file is kept: {reply}"
        );
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let server = RedisServer {
            port: 1,
            dir: temp_dir(1).expect("temp dir"),
            child: ServerChild::default(),
            extra_args: Vec::new(),
            config: None,
        };
        let error = server
            .spawn_binary(Path::new("/nonexistent/redis-server"))
            .expect_err("missing binary");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error.to_string().contains("apt-get install redis-server"),
            "{error}"
        );
    }
}
