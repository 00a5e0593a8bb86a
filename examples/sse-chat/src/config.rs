//! Command-line arguments (each also readable from the environment).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::validation;

/// An SSE chat server on the `rooms` library.
///
/// One node uses the in-memory backend. Nodes that share a Redis server
/// (`--redis-url`, needs the `redis` feature) form one chat: a message posted
/// to any node reaches every member of the room on every node.
#[derive(Debug, Clone, Parser)]
#[command(name = "sse-chat", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "SSE_CHAT_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port, printed at start-up).
    #[arg(long, short, env = "SSE_CHAT_PORT", default_value_t = 3000)]
    pub port: u16,

    /// This node's id, unique in the cluster (default: a random UUID).
    #[arg(long, env = "SSE_CHAT_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Redis URL, e.g. redis://127.0.0.1:6379; switches to the Redis backend
    /// (needs a build with `--features redis`).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Seconds of silence before an SSE keep-alive comment is sent.
    #[arg(long, env = "SSE_CHAT_KEEP_ALIVE", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keep_alive_secs: u64,

    /// Most SSE connections this node accepts at once.
    #[arg(long, env = "SSE_CHAT_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Seconds to wait for open requests to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl Args {
    /// The address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

fn parse_node_id(raw: &str) -> Result<String, String> {
    validation::node_id(raw)
        .map(str::to_owned)
        .map_err(|error| error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
