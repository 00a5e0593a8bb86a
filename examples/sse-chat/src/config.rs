//! Command-line arguments (each also readable from the environment).

mod settings;
mod topology;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use clap::{ArgGroup, Parser};

use settings::parse_node_id;
pub use topology::RedisTopology;

/// An SSE chat server on the `rooms` library.
///
/// One node uses the in-memory backend. Nodes that share a Redis deployment
/// (needs the `redis` feature) form one chat: a message posted to any node
/// reaches every member of the room on every node. The deployment is one
/// server (`--redis-url`), a Redis Cluster (`--redis-cluster`) or a master
/// watched by Redis Sentinels (`--redis-sentinel` and
/// `--redis-sentinel-master`); these exclude each other.
///
/// Values read from the environment are never printed (`--help` shows only
/// the variables' names): `REDIS_URL`, `REDIS_CLUSTER` and `REDIS_SENTINEL`
/// may hold a password.
#[derive(Clone, Parser)]
#[command(name = "sse-chat", version)]
// At most one Redis deployment: `--redis-url`, `--redis-cluster` or
// `--redis-sentinel`.
#[command(group(ArgGroup::new("redis").multiple(false)))]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "SSE_CHAT_HOST", hide_env_values = true, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port, printed at start-up).
    #[arg(
        long,
        short,
        env = "SSE_CHAT_PORT",
        hide_env_values = true,
        default_value_t = 3000
    )]
    pub port: u16,

    /// This node's id, unique in the cluster (default: a random UUID).
    #[arg(long, env = "SSE_CHAT_NODE_ID", hide_env_values = true, value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Redis URL, e.g. redis://127.0.0.1:6379; switches to the Redis backend
    /// (needs a build with `--features redis`). Its password never appears in
    /// `--help`, logs or errors.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, group = "redis")]
    pub redis_url: Option<String>,

    /// Seed URLs of a Redis Cluster (Redis 7+, sharded pub/sub), comma
    /// separated, e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000; switches
    /// to the Redis backend. The credentials of the first URL are used for
    /// every node.
    #[arg(
        long,
        env = "REDIS_CLUSTER",
        hide_env_values = true,
        group = "redis",
        value_name = "URLS"
    )]
    pub redis_cluster: Option<String>,

    /// URLs of the Redis Sentinels, comma separated, e.g.
    /// redis://10.0.0.1:26379,redis://10.0.0.2:26379; switches to the Redis
    /// backend, following the master through failovers. Needs
    /// `--redis-sentinel-master`. The master is reached with the credentials
    /// and database of the first URL.
    #[arg(
        long,
        env = "REDIS_SENTINEL",
        hide_env_values = true,
        group = "redis",
        value_name = "URLS",
        requires = "redis_sentinel_master"
    )]
    pub redis_sentinel: Option<String>,

    /// The name the sentinels monitor the master under (with `--redis-sentinel`).
    #[arg(
        long,
        env = "REDIS_SENTINEL_MASTER",
        hide_env_values = true,
        value_name = "NAME",
        requires = "redis_sentinel"
    )]
    pub redis_sentinel_master: Option<String>,

    /// NATS server URL, e.g. nats://127.0.0.1:4222, or several servers of a
    /// NATS cluster, comma separated; switches to the NATS backend (needs a
    /// build with `--features nats`). Excludes the Redis flags. Its password
    /// or token never appears in `--help`, logs or errors.
    #[arg(
        long,
        env = "NATS_URL",
        hide_env_values = true,
        value_name = "URLS",
        conflicts_with = "redis"
    )]
    pub nats_url: Option<String>,

    /// PostgreSQL connection string, e.g.
    /// postgres://user:password@127.0.0.1:5432/app; switches to the
    /// PostgreSQL LISTEN/NOTIFY backend (needs a build with `--features
    /// postgres`). Excludes the Redis and NATS flags. Its password never
    /// appears in `--help`, logs or errors.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with_all = ["redis", "nats_url"]
    )]
    pub postgres_url: Option<String>,

    /// Seconds of silence before an SSE keep-alive comment is sent.
    #[arg(long, env = "SSE_CHAT_KEEP_ALIVE", hide_env_values = true, default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_secs: u64,

    /// Most SSE streams this node serves at once; a stream beyond it is
    /// answered 503. A slot is taken before the stream joins its room and freed
    /// when it ends, so concurrent requests cannot overshoot.
    #[arg(long, env = "SSE_CHAT_MAX_CONNECTIONS", hide_env_values = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS_LIMIT))]
    pub max_connections: u64,

    /// Most TCP connections (sockets) served at once, whatever they carry;
    /// a socket beyond it gets a best-effort 503 and is closed at once
    /// [default: max-connections + 1024].
    #[arg(long, env = "SSE_CHAT_MAX_SOCKETS", hide_env_values = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SOCKETS_LIMIT))]
    pub max_sockets: Option<u64>,

    /// Milliseconds a client has to send a request's line and headers (also
    /// closes idle keep-alive connections); slower clients are disconnected.
    #[arg(long, env = "SSE_CHAT_HEADER_TIMEOUT_MS", hide_env_values = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    pub header_timeout_ms: u64,

    /// Milliseconds a client has to send a POST body in full; a slower one is
    /// answered 408 and disconnected.
    #[arg(long, env = "SSE_CHAT_BODY_TIMEOUT_MS", hide_env_values = true, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    pub body_timeout_ms: u64,

    /// Milliseconds a write to a client may make no progress (a client that
    /// stopped reading, its buffers full) before its socket is reset.
    #[arg(long, env = "SSE_CHAT_WRITE_STALL_TIMEOUT_MS", hide_env_values = true, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    pub write_stall_timeout_ms: u64,

    /// Milliseconds between this node's heartbeats to the other nodes (node
    /// liveness, `GET /nodes`; 10 to 300000).
    #[arg(long, env = "SSE_CHAT_HEARTBEAT_INTERVAL_MS", hide_env_values = true, default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS))]
    pub heartbeat_interval_ms: u64,

    /// Milliseconds after its last heartbeat that a silent node counts as
    /// gone; longer than the heartbeat interval, at most 600000 [default: 3
    /// heartbeat intervals, 6000].
    #[arg(long, env = "SSE_CHAT_NODE_EXPIRY_MS", hide_env_values = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_NODE_EXPIRY_MS))]
    pub node_expiry_ms: Option<u64>,

    /// Milliseconds a cluster-wide query (`?scope=cluster`) waits for the
    /// other nodes' answers; a node that does not answer in time makes the
    /// answer incomplete (1 to 300000).
    #[arg(long, env = "SSE_CHAT_QUERY_TIMEOUT_MS", hide_env_values = true, default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_QUERY_TIMEOUT_MS))]
    pub query_timeout_ms: u64,

    /// Messages each room keeps in the medium's history, so a client that
    /// reconnects (with `Last-Event-ID`) gets what it missed; 0 turns history
    /// off. Ignored, with a warning, on a backend without history.
    #[arg(long, env = "SSE_CHAT_HISTORY_LEN", hide_env_values = true, default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=MAX_HISTORY_LEN))]
    pub history_len: u64,

    /// Seconds a room's history is kept after its last message.
    #[arg(long, env = "SSE_CHAT_HISTORY_TTL_SECS", hide_env_values = true, default_value_t = 3_600,
          value_parser = clap::value_parser!(u64).range(1..=MAX_HISTORY_TTL_SECS))]
    pub history_ttl_secs: u64,

    /// Seconds to wait for open requests to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,
}

/// Lower bound of `--heartbeat-interval-ms` (the library's).
pub const MIN_HEARTBEAT_MS: u64 = 10;

/// Upper bound of `--heartbeat-interval-ms`: five minutes.
pub const MAX_HEARTBEAT_MS: u64 = 300_000;

/// Upper bound of `--node-expiry-ms`: ten minutes.
pub const MAX_NODE_EXPIRY_MS: u64 = 600_000;

/// Upper bound of `--query-timeout-ms`: five minutes.
pub const MAX_QUERY_TIMEOUT_MS: u64 = 300_000;

/// Upper bound of `--history-len` (the library's limit).
pub const MAX_HISTORY_LEN: u64 = rooms_adapter::history::MAX_HISTORY_LEN as u64;

/// Upper bound of `--history-ttl-secs` (the library's limit, 30 days).
pub const MAX_HISTORY_TTL_SECS: u64 = rooms_adapter::history::MAX_HISTORY_TTL.as_secs();

/// Upper bound of `--max-connections` and `--max-sockets`.
pub const MAX_SOCKETS_LIMIT: u64 = 1 << 20;

/// Upper bound of the `--*-timeout-ms` flags (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("node_id", &self.node_id)
            // May hold a password.
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<hidden>"))
            .field(
                "redis_cluster",
                &self.redis_cluster.as_ref().map(|_| "<hidden>"),
            )
            .field(
                "redis_sentinel",
                &self.redis_sentinel.as_ref().map(|_| "<hidden>"),
            )
            .field("redis_sentinel_master", &self.redis_sentinel_master)
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<hidden>"))
            .field(
                "postgres_url",
                &self.postgres_url.as_ref().map(|_| "<hidden>"),
            )
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("max_connections", &self.max_connections)
            .field("max_sockets", &self.max_sockets)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("body_timeout_ms", &self.body_timeout_ms)
            .field("write_stall_timeout_ms", &self.write_stall_timeout_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("node_expiry_ms", &self.node_expiry_ms)
            .field("query_timeout_ms", &self.query_timeout_ms)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::settings::ClusterTiming;
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_listen_on_localhost_3000() {
        let args = Args::try_parse_from(["sse-chat"]).unwrap();
        assert_eq!(args.listen_addr().to_string(), "127.0.0.1:3000");
        assert_eq!(args.keep_alive(), Duration::from_secs(15));
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let args = Args::try_parse_from([
            "sse-chat",
            "--port",
            "0",
            "--node-id",
            "node-a",
            "--redis-url",
            "redis://127.0.0.1:7000",
            "--keep-alive-secs",
            "1",
        ])
        .unwrap();
        assert_eq!(args.port, 0);
        assert_eq!(args.node_id.as_deref(), Some("node-a"));
        assert_eq!(args.redis_url.as_deref(), Some("redis://127.0.0.1:7000"));
        assert!(Args::try_parse_from(["sse-chat", "--node-id", "a b"]).is_err());
        assert!(Args::try_parse_from(["sse-chat", "--keep-alive-secs", "0"]).is_err());
        assert!(Args::try_parse_from(["sse-chat", "--port", "70000"]).is_err());
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        let args = Args::try_parse_from(["sse-chat"]).unwrap();
        let limits = args.limits();
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.write_stall_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_sockets, 10_000 + 1024);
        assert_eq!(args.body_timeout(), Duration::from_secs(10));
        let args =
            Args::try_parse_from(["sse-chat", "--max-connections", "5", "--max-sockets", "3"])
                .unwrap();
        assert_eq!((args.max_streams(), args.max_sockets()), (5, 3));
        for flag in [
            "--header-timeout-ms",
            "--body-timeout-ms",
            "--write-stall-timeout-ms",
        ] {
            assert!(
                Args::try_parse_from(["sse-chat", flag, "0"]).is_err(),
                "{flag}"
            );
            assert!(
                Args::try_parse_from(["sse-chat", flag, "3600001"]).is_err(),
                "{flag}"
            );
            assert!(
                Args::try_parse_from(["sse-chat", flag, "250"]).is_ok(),
                "{flag}"
            );
        }
        assert!(Args::try_parse_from(["sse-chat", "--max-sockets", "0"]).is_err());
        assert!(Args::try_parse_from(["sse-chat", "--max-connections", "2000000"]).is_err());
    }

    #[test]
    fn cluster_timing_has_the_library_defaults_and_is_checked() {
        let parse = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("sse-chat").chain(flags.iter().copied()))
        };
        let timing = parse(&[]).unwrap().cluster_timing().unwrap();
        assert_eq!(
            timing,
            ClusterTiming {
                heartbeat_interval: Duration::from_millis(2_000),
                node_expiry: None,
                query_timeout: Duration::from_millis(1_000),
            }
        );
        assert_eq!(
            rooms_adapter::cluster::DEFAULT_HEARTBEAT_INTERVAL,
            timing.heartbeat_interval
        );
        assert_eq!(
            rooms_adapter::cluster::DEFAULT_QUERY_TIMEOUT,
            timing.query_timeout
        );
        let timing = parse(&[
            "--heartbeat-interval-ms",
            "200",
            "--node-expiry-ms",
            "1000",
            "--query-timeout-ms",
            "300",
        ])
        .unwrap()
        .cluster_timing()
        .unwrap();
        assert_eq!(timing.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(timing.node_expiry, Some(Duration::from_millis(1_000)));
        assert_eq!(timing.query_timeout, Duration::from_millis(300));
        for (flag, bad) in [
            ("--heartbeat-interval-ms", "9"),
            ("--heartbeat-interval-ms", "300001"),
            ("--node-expiry-ms", "0"),
            ("--node-expiry-ms", "600001"),
            ("--query-timeout-ms", "0"),
            ("--query-timeout-ms", "300001"),
        ] {
            assert!(parse(&[flag, bad]).is_err(), "{flag} {bad}");
        }
        let error = parse(&[
            "--heartbeat-interval-ms",
            "1000",
            "--node-expiry-ms",
            "1000",
        ])
        .unwrap()
        .cluster_timing()
        .unwrap_err();
        assert!(
            error.contains("--node-expiry-ms (1000) must be longer"),
            "{error}"
        );
        // Without --node-expiry-ms the expiry follows the interval.
        assert!(
            parse(&["--heartbeat-interval-ms", "10000"])
                .unwrap()
                .cluster_timing()
                .is_ok()
        );
    }

    #[test]
    fn debug_output_hides_the_redis_url() {
        let args =
            Args::try_parse_from(["sse-chat", "--redis-url", "redis://:hunter2@h:1"]).unwrap();
        assert!(!format!("{args:?}").contains("hunter2"));
        for flags in [
            &[
                "--redis-cluster",
                "redis://:hunter2@h:1,redis://:hunter2@h:2",
            ][..],
            &[
                "--redis-sentinel",
                "redis://:hunter2@h:1",
                "--redis-sentinel-master",
                "m",
            ],
        ] {
            let args =
                Args::try_parse_from(std::iter::once("sse-chat").chain(flags.iter().copied()))
                    .unwrap();
            assert!(!format!("{args:?}").contains("hunter2"), "{args:?}");
            let topology = args.redis_topology().unwrap().unwrap();
            assert!(!format!("{topology:?}").contains("hunter2"), "{topology:?}");
        }
    }

    #[test]
    fn one_redis_topology_at_most() {
        let parse = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("sse-chat").chain(flags.iter().copied()))
        };
        let url = ["--redis-url", "redis://:hunter2@h:1"];
        let cluster = ["--redis-cluster", "redis://:hunter2@h:1"];
        let sentinel = [
            "--redis-sentinel",
            "redis://:hunter2@h:1",
            "--redis-sentinel-master",
            "m",
        ];
        for (one, other) in [
            (&url[..], &cluster[..]),
            (&url, &sentinel),
            (&cluster, &sentinel),
        ] {
            let error = parse(&[one, other].concat()).err().unwrap();
            assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
            let shown = error.to_string();
            assert!(shown.contains("cannot be used with"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // The sentinel flags need each other.
        for flags in [&sentinel[..2], &sentinel[2..]] {
            let error = parse(flags).err().unwrap();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::MissingRequiredArgument
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert_eq!(parse(&[]).unwrap().redis_topology(), Ok(None));
    }

    #[test]
    fn url_lists_are_split_and_checked() {
        let topology = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("sse-chat").chain(flags.iter().copied()))
                .unwrap()
                .redis_topology()
        };
        assert_eq!(
            topology(&["--redis-cluster", "redis://a:1, redis://b:2 ,redis://c:3"]),
            Ok(Some(RedisTopology::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into(),
                "redis://c:3".into()
            ])))
        );
        assert_eq!(
            topology(&[
                "--redis-sentinel",
                "redis://a:26379",
                "--redis-sentinel-master",
                " mymaster "
            ]),
            Ok(Some(RedisTopology::Sentinel {
                urls: vec!["redis://a:26379".into()],
                master: "mymaster".into()
            }))
        );
        assert_eq!(
            topology(&["--redis-url", "redis://a:1"]),
            Ok(Some(RedisTopology::Single("redis://a:1".into())))
        );
        let error =
            topology(&["--redis-cluster", "redis://:hunter2@a:1,,redis://b:2"]).unwrap_err();
        assert!(error.contains("URL 2 of 3 is empty"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = topology(&["--redis-cluster", " , "]).unwrap_err();
        assert!(
            error.contains("--redis-cluster (or REDIS_CLUSTER) is empty"),
            "{error}"
        );
        let error = topology(&[
            "--redis-sentinel",
            "redis://:hunter2@a:1,",
            "--redis-sentinel-master",
            "m",
        ])
        .unwrap_err();
        assert!(error.contains("URL 2 of 2 is empty"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        for master in ["", "  ", "my master"] {
            let error = topology(&[
                "--redis-sentinel",
                "redis://a:1",
                "--redis-sentinel-master",
                master,
            ])
            .unwrap_err();
            assert!(error.contains("--redis-sentinel"), "{error}");
        }
    }
}
