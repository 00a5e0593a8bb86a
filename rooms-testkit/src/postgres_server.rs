//! Where the PostgreSQL server of the tests is: a running server (tests
//! never start or kill it; they isolate themselves with their own channel
//! prefixes and tables, and inject faults with a
//! [`FaultProxy`](crate::tcp_proxy::FaultProxy)); and [`PostgresServer`],
//! a throwaway cluster for what the shared server cannot be set up for
//! (TLS with test certificates, client certificate authentication).

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::redis_server::free_port;

/// Environment variable with the URL of the PostgreSQL server tests use.
pub const URL_ENV: &str = "ROOMS_POSTGRES_URL";

/// The server tests use without [`URL_ENV`] (the one this kind of machine
/// runs: trust authentication, database `test`).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the PostgreSQL server tests use.
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Environment variable naming the directory of the PostgreSQL server
/// binaries (`initdb`, `postgres`) that [`PostgresServer`] runs.
pub const BIN_DIR_ENV: &str = "ROOMS_POSTGRES_BIN";

/// How long a start waits for the server to accept connections.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// The TLS files of a [`PostgresServer`] (PEM): they are copied into its
/// directory, owned by the user it runs as.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA that client certificates must chain to (`ssl_ca_file`), for
    /// `cert` authentication.
    pub client_ca: Option<PathBuf>,
}

/// What a [`PostgresServer`] starts with besides its defaults.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `ssl = on` with these files.
    pub tls: Option<ServerTls>,
    /// `pg_hba.conf` lines put before the default ones (which trust every
    /// user on 127.0.0.1 and on the socket), e.g.
    /// `hostssl all app 127.0.0.1/32 cert`.
    pub hba: Vec<String>,
}

/// A throwaway PostgreSQL cluster: `initdb` in a temporary directory, then
/// `postgres` on a free loopback port (socket in that directory, no
/// durability: fsync off), stopped and removed on drop. The shared server
/// (on 5432) is never touched.
///
/// `initdb` and `postgres` refuse to run as root: run as root, the kit runs
/// them as the `postgres` user (as Debian's packages create it). The
/// binaries come from [`BIN_DIR_ENV`], else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use rooms_testkit::postgres_server::PostgresServer;
///
/// let server = PostgresServer::start(Default::default()).await?;
/// println!("{}", server.url()); // postgres://postgres@127.0.0.1:<port>/postgres
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PostgresServer {
    /// Initialises a cluster, starts it and waits (up to
    /// [`START_DEADLINE`]) until it accepts connections. A missing binary
    /// or user is an error saying what to install.
    pub async fn start(options: ServerOptions) -> io::Result<Self> {
        let bin = bin_dir()?;
        let owner = run_as()?;
        let dir = temp_dir()?;
        let mut server = Self {
            port: 0,
            dir,
            child: None,
        };
        if let Some(owner) = owner {
            std::os::unix::fs::chown(&server.dir, Some(owner.0), Some(owner.1))?;
        }
        let data = server.dir.join("data");
        let status = command(&bin.join("initdb"), owner, &server.dir)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                server.dir.join("initdb.log"),
            )?))
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "initdb failed ({status}): {}",
                std::fs::read_to_string(server.dir.join("initdb.log")).unwrap_or_default()
            )));
        }
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 60\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            server.dir.display()
        ));
        if let Some(tls) = &options.tls {
            let copy = |from: &Path, name: &str| -> io::Result<PathBuf> {
                let to = server.dir.join(name);
                std::fs::copy(from, &to)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
                if let Some(owner) = owner {
                    std::os::unix::fs::chown(&to, Some(owner.0), Some(owner.1))?;
                }
                Ok(to)
            };
            let cert = copy(&tls.cert, "server.crt")?;
            let key = copy(&tls.key, "server.key")?;
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = &tls.client_ca {
                let ca = copy(ca, "client-ca.crt")?;
                conf.push_str(&format!("ssl_ca_file = '{}'\n", ca.display()));
            }
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let mut hba = options.hba.join("\n");
        hba.push_str("\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n");
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        let mut last_error = None;
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..5 {
            server.port = free_port()?;
            let log = std::fs::File::create(server.dir.join("postgres.log"))?;
            if let Some(owner) = owner {
                std::os::unix::fs::chown(
                    server.dir.join("postgres.log"),
                    Some(owner.0),
                    Some(owner.1),
                )?;
            }
            let child = command(&bin.join("postgres"), owner, &server.dir)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(server.port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()?;
            let pid_file = data.join("postmaster.pid");
            let port = server.port;
            let log_path = server.dir.join("postgres.log");
            match crate::process::wait_ready(
                child,
                "postgres",
                port,
                START_DEADLINE,
                "accept connections",
                || std::fs::read_to_string(&log_path).unwrap_or_default(),
                || {
                    let ready = std::fs::read_to_string(&pid_file)
                        .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|s| s.trim() == "ready"));
                    async move { ready }
                },
            )
            .await
            {
                Ok(child) => {
                    server.child = Some(child);
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("postgres did not start")))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust
    /// authentication for every user but those `hba` lines say otherwise).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL for `user`, with `?{query}` when not empty (e.g.
    /// `sslmode=require`).
    pub fn url_for(&self, user: &str, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://{user}@127.0.0.1:{}/postgres{query}", self.port)
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown (SIGINT): the backends go too; SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command for `binary`, run as `owner` when given, in `dir`.
fn command(binary: &Path, owner: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(dir);
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// The directory of `initdb` and `postgres`.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    for dir in on_path {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no PostgreSQL server binaries (initdb, postgres): install them (Debian: `apt-get \
             install postgresql`; `.ci/run` does) or point {BIN_DIR_ENV} at their directory"
        ),
    ))
}

/// The user and group to run the server as: `None` when this process is
/// not root, else the `postgres` user's.
fn run_as() -> io::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    if uid != Some(0) {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "initdb and postgres refuse to run as root, and there is no `postgres` user to \
                 run them as (Debian's postgresql package creates it)",
            )
        })
}

fn temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rooms-pg-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
