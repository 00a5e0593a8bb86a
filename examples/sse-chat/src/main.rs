//! `sse-chat`: the runnable example of `rooms`, an SSE chat server.
//!
//! ```text
//! cargo run -p sse-chat                     # one node, memory backend, http://127.0.0.1:3000
//! cargo run -p sse-chat --features redis -- --port 3001 --redis-url redis://127.0.0.1:6379
//! cargo run -p sse-chat --features redis -- --redis-cluster redis://127.0.0.1:7000,redis://127.0.0.1:7001
//! cargo run -p sse-chat --features redis -- --redis-sentinel redis://127.0.0.1:26379 --redis-sentinel-master mymaster
//! ```
//!
//! Modules: [`config`] (arguments), [`backend`] (memory, or Redis as one
//! server, a cluster or a Sentinel deployment), [`server`]
//! (hyper with timeouts, a socket cap and `TCP_NODELAY`), [`routes`] (HTTP API
//! and handlers), [`validation`], [`state`], [`metrics`], [`notices`] (medium
//! outages told to clients), [`shutdown`].

mod backend;
mod config;
mod error;
mod metrics;
mod notices;
mod routes;
mod server;
mod shutdown;
mod state;
mod validation;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing_subscriber::EnvFilter;

use crate::config::Args;
use crate::state::{AppCounters, AppState};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("sse_chat=info,rooms_adapter=info,warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let addr = args.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener
        .local_addr()
        .map_err(|error| format!("cannot read the address of the listener on {addr}: {error}"))?;

    let rooms = backend::build(&args).await?;
    let counters = Arc::new(AppCounters::default());
    let state = AppState {
        rooms: rooms.clone(),
        keep_alive: args.keep_alive(),
        max_connections: args.max_connections,
        streams: Arc::new(Semaphore::new(args.max_streams())),
        body_timeout: args.body_timeout(),
        metrics: Arc::new(metrics::registry(&rooms, &counters)),
        counters,
    };
    let notices = tokio::spawn(notices::relay(rooms.clone()));

    tracing::info!(
        node = %rooms.node_id(),
        backend = rooms.adapter_name(),
        "sse-chat listening on http://{local}"
    );
    // One line on stdout that scripts and tests can wait for.
    println!("sse-chat listening on http://{local}");
    let _ = std::io::stdout().flush();

    let engine = rooms.clone();
    let shutdown = async move {
        shutdown::signal().await;
        // Ends every SSE stream (after its queued messages) so the server's
        // graceful shutdown can finish, and releases the medium.
        engine.shutdown().await;
    };
    server::serve(
        listener,
        routes::router(state.clone()),
        &state,
        args.limits(),
        shutdown,
    )
    .await;
    rooms.shutdown().await;
    notices.abort();
    tracing::info!("stopped");
    Ok(())
}
