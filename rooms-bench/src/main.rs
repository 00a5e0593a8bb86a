//! `rooms-bench`: one benchmark (or one side of one) per subcommand. Started by
//! `cargo xtask bench`, which reads the `READY` and `RESULT {json}` lines.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rooms_adapter::engine::DEFAULT_CONNECTION_QUEUE;
use rooms_adapter::wire::Codec;
use rooms_bench::common::{cpu_seconds, emit};
use rooms_bench::cross::{self, Load, ReceiveSpec};
use rooms_bench::{cluster, codec, fanout, history, join, memory, memory_traffic, receive_path};

#[derive(Parser)]
#[command(about = "rooms benchmarks (run them all with `cargo xtask bench`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    Json,
    Msgpack,
}

impl From<CodecArg> for Codec {
    fn from(codec: CodecArg) -> Self {
        match codec {
            CodecArg::Json => Codec::Json,
            CodecArg::Msgpack => Codec::MessagePack,
        }
    }
}

/// Which implementation of a cross-node side.
#[derive(Clone, Copy, ValueEnum)]
enum CrossSide {
    /// Plain redis-rs, no adapter.
    Raw,
    /// A `Rooms` engine over `RedisAdapter`.
    Adapter,
}

#[derive(Clone, Copy, ValueEnum)]
enum LocalSide {
    Engine,
    Naive,
    /// `wire::decode` alone (receive-path only).
    Decode,
}

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeArg {
    Multi,
    Current,
}

/// What both sides of a cross-node run are told.
#[derive(clap::Args)]
struct CrossNode {
    #[arg(long, value_enum)]
    side: CrossSide,
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "json")]
    codec: CodecArg,
    #[arg(long, default_value = "redis")]
    driver: String,
    #[arg(long)]
    count: u64,
    #[arg(long, value_enum, default_value = "multi")]
    runtime: RuntimeArg,
}

#[derive(Subcommand)]
enum Command {
    /// Receiving node of a cross-node run: prints READY once subscribed.
    Recv {
        #[command(flatten)]
        node: CrossNode,
        /// Record one-way latency (the publisher must be paced).
        #[arg(long)]
        latency: bool,
        #[arg(long, default_value_t = 1000)]
        warmup: u64,
        #[arg(long, default_value_t = 5000)]
        idle_ms: u64,
        /// Raw side: only count messages instead of decoding each envelope
        /// (a stricter reference than any real receiver).
        #[arg(long)]
        count_only: bool,
        /// Queue capacity of the receiving connection (adapter side).
        #[arg(long, default_value_t = DEFAULT_CONNECTION_QUEUE)]
        queue: usize,
    },
    /// Publishing node of a cross-node run.
    Pub {
        #[command(flatten)]
        node: CrossNode,
        /// Publishes in flight (burst mode).
        #[arg(long, default_value_t = 1000)]
        in_flight: usize,
        /// Messages per second (paced mode, for latency).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Decode + dispatch of pre-recorded payloads, one core.
    ReceivePath {
        #[arg(long, value_enum)]
        side: LocalSide,
        #[arg(long, value_enum, default_value = "json")]
        codec: CodecArg,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 1024)]
        window: u64,
    },
    /// One broadcast to a room of many local connections.
    Fanout {
        #[arg(long, value_enum)]
        side: LocalSide,
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Give every broadcast its own message id.
        #[arg(long)]
        ids: bool,
        /// Rooms each connection is in (the broadcast room and others).
        #[arg(long, default_value_t = 1)]
        rooms_per_connection: usize,
    },
    /// Resident bytes per idle connection.
    Memory {
        #[arg(long, value_enum)]
        side: LocalSide,
        #[arg(long, default_value_t = 100_000)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
    },
    /// Resident bytes per connection after messages with ids were drained.
    MemoryTraffic {
        #[arg(long, value_enum)]
        side: LocalSide,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        rooms_per_connection: usize,
        /// Rooms in the pool (default: as many as each connection joins).
        #[arg(long, default_value_t = 0)]
        rooms: usize,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
    },
    /// Joins of new rooms, with redis-server healthy or frozen (SIGSTOP).
    Join {
        #[arg(long)]
        url: String,
        /// redis-server's process id, to freeze it.
        #[arg(long)]
        redis_pid: Option<u32>,
        /// Freeze redis-server during the joins.
        #[arg(long)]
        freeze: bool,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// Connect, subscribe and publish timeout of the adapter.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 30)]
        recovery_deadline_s: u64,
    },
    /// Cross-node queries and node expiry (cluster awareness).
    Cluster {
        /// Redis URL; without it, a memory bus.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        #[arg(long, default_value_t = 50)]
        rooms: usize,
        #[arg(long, default_value_t = 4)]
        members: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 200)]
        heartbeat_ms: u64,
        #[arg(long, default_value_t = 1000)]
        expiry_ms: u64,
    },
    /// Broadcast throughput with history off and on, and the replay rate.
    History {
        /// Redis URL; without it, a memory bus.
        #[arg(long)]
        url: Option<String>,
        /// Messages per pass (history off, on).
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Messages each room's history keeps (the policy's `max_len`), and
        /// the length of the replay.
        #[arg(long, default_value_t = 10_000)]
        history_len: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// `current`: both nodes on one thread, so the figure is the CPU
        /// cost per message, not how two tasks on two cores wake each other.
        #[arg(long, value_enum, default_value = "multi")]
        runtime: RuntimeArg,
    },
    /// The attachment path's cost over PostgreSQL: one message of `size`
    /// bytes at a time, then a burst.
    PgAttach {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 65_536)]
        size: usize,
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Codec encode/decode on the golden vectors.
    Codec {
        #[arg(long, default_value_t = 300)]
        millis: u64,
    },
}

fn runtime(kind: RuntimeArg) -> Result<tokio::runtime::Runtime> {
    match kind {
        RuntimeArg::Multi => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        RuntimeArg::Current => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .context("starting the tokio runtime")
}

/// Runs `work` as a spawned task of a new runtime and waits for it.
fn run_spawned<F>(kind: RuntimeArg, work: F) -> Result<serde_json::Value>
where
    F: Future<Output = Result<serde_json::Value>> + Send + 'static,
{
    runtime(kind)?.block_on(async move {
        tokio::spawn(work)
            .await
            .context("the benchmark task panicked")?
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Recv {
            node:
                CrossNode {
                    side,
                    url,
                    codec,
                    driver,
                    count,
                    runtime: kind,
                },
            latency,
            warmup,
            idle_ms,
            count_only,
            queue,
        } => {
            let spec = ReceiveSpec {
                count,
                latency,
                warmup: if latency { warmup } else { 0 },
                start_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_millis(idle_ms),
                raw_decode: !count_only,
            };
            // The loop runs in a spawned task, on a worker thread like the
            // medium's tasks, as an application's handlers would.
            run_spawned(kind, async move {
                match side {
                    CrossSide::Raw => cross::receive_raw(&url, spec).await,
                    CrossSide::Adapter => {
                        let rooms = adapter_node(&url, codec.into(), &driver, queue).await?;
                        let result = cross::receive_engine(&rooms, spec).await;
                        rooms.shutdown().await;
                        result
                    }
                }
            })?
        }
        Command::Pub {
            node:
                CrossNode {
                    side,
                    url,
                    codec,
                    driver,
                    count,
                    runtime: kind,
                },
            in_flight,
            rate,
        } => {
            let load = match rate {
                Some(rate) => Load::Paced { count, rate },
                None => Load::Burst { count, in_flight },
            };
            run_spawned(kind, async move {
                match side {
                    CrossSide::Raw => cross::publish_raw(&url, codec.into(), load).await,
                    CrossSide::Adapter => {
                        let rooms =
                            adapter_node(&url, codec.into(), &driver, DEFAULT_CONNECTION_QUEUE)
                                .await?;
                        let result = cross::publish_engine(&rooms, load).await;
                        rooms.shutdown().await;
                        result
                    }
                }
            })?
        }
        Command::ReceivePath {
            side,
            codec,
            count,
            window,
        } => runtime(RuntimeArg::Current)?.block_on(async move {
            match side {
                LocalSide::Engine => receive_path::engine(codec.into(), count, window).await,
                LocalSide::Naive => receive_path::naive(codec.into(), count, window).await,
                LocalSide::Decode => receive_path::decode_only(codec.into(), count),
            }
        })?,
        Command::Fanout {
            side,
            connections,
            rounds,
            ids,
            rooms_per_connection,
        } => runtime(RuntimeArg::Multi)?.block_on(async move {
            let shape = fanout::Shape {
                ids,
                rooms_per_connection,
            };
            match side {
                LocalSide::Naive => fanout::naive_shaped(connections, rounds, shape).await,
                _ => fanout::engine_shaped(connections, rounds, shape).await,
            }
        })?,
        Command::Memory {
            side,
            connections,
            rooms,
        } => runtime(RuntimeArg::Current)?.block_on(async move {
            match side {
                LocalSide::Naive => memory::naive(connections, rooms).await,
                _ => memory::engine(connections, rooms).await,
            }
        })?,
        Command::MemoryTraffic {
            side,
            connections,
            rooms_per_connection,
            rooms,
            messages,
        } => runtime(RuntimeArg::Current)?.block_on(async move {
            let traffic = memory_traffic::Traffic {
                connections,
                rooms_per_connection,
                rooms,
                messages,
            };
            match side {
                LocalSide::Naive => memory_traffic::naive(traffic).await,
                _ => memory_traffic::engine(traffic).await,
            }
        })?,
        Command::Join {
            url,
            redis_pid,
            freeze,
            rooms,
            timeout_ms,
            recovery_deadline_s,
        } => run_spawned(RuntimeArg::Multi, async move {
            join::run(join::JoinSpec {
                url,
                redis_pid,
                freeze,
                rooms,
                timeout: Duration::from_millis(timeout_ms),
                recovery_deadline: Duration::from_secs(recovery_deadline_s),
            })
            .await
        })?,
        Command::Cluster {
            url,
            nodes,
            rooms,
            members,
            queries,
            heartbeat_ms,
            expiry_ms,
        } => run_spawned(RuntimeArg::Multi, async move {
            cluster::run(cluster::ClusterSpec {
                redis_url: url,
                nodes,
                rooms,
                members,
                queries,
                heartbeat: Duration::from_millis(heartbeat_ms),
                expiry: Duration::from_millis(expiry_ms),
            })
            .await
        })?,
        Command::History {
            url,
            messages,
            history_len,
            reps,
            runtime,
        } => run_spawned(runtime, async move {
            history::run(history::HistorySpec {
                redis_url: url,
                messages,
                history_len,
                reps,
            })
            .await
        })?,
        Command::PgAttach { url, size, count } => run_spawned(RuntimeArg::Multi, async move {
            rooms_bench::pg::attachment_cost(&url, size, count).await
        })?,
        Command::Codec { millis } => codec::measure(Duration::from_millis(millis))?,
    };
    let mut result = result;
    result["cpu_s"] = serde_json::json!(cpu_seconds()?);
    emit(&result);
    Ok(())
}

/// A `Rooms` engine over `RedisAdapter` with the chosen publish driver
/// (`redis`, `deadpool` or `bb8`, pools of the default size). A receiving node
/// gives its connection a queue of `queue` deliveries.
async fn adapter_node(
    url: &str,
    codec: Codec,
    driver: &str,
    queue: usize,
) -> Result<rooms_adapter::Rooms> {
    use rooms_adapter_redis::DEFAULT_POOL_SIZE;
    use rooms_adapter_redis::RedisAdapter;

    if rooms_bench::pg::is_postgres(url) {
        return rooms_bench::pg::adapter_node(url, codec, queue).await;
    }
    if cross::is_nats(url) {
        let adapter = rooms_adapter_nats::NatsAdapter::builder(url)
            .codec(codec)
            .build()
            .context("building the NatsAdapter")?;
        return rooms_adapter::Rooms::builder(std::sync::Arc::new(adapter))
            .connection_queue_capacity(queue)
            .build()
            .await
            .context("starting the rooms engine over NATS");
    }
    let builder = RedisAdapter::builder(url).codec(codec);
    let builder = match driver {
        "redis" => builder.redis_driver(),
        "deadpool" => builder.deadpool_driver(DEFAULT_POOL_SIZE),
        "bb8" => builder.bb8_driver(DEFAULT_POOL_SIZE),
        other => anyhow::bail!("unknown driver {other:?} (redis, deadpool or bb8)"),
    };
    let adapter = builder.build().context("building the RedisAdapter")?;
    rooms_adapter::Rooms::builder(std::sync::Arc::new(adapter))
        .connection_queue_capacity(queue)
        .build()
        .await
        .context("starting the rooms engine over Redis")
}
