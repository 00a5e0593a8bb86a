//! [`refused_fast`]: a connect that must fail, and fail well: within the
//! connect timeout (never a hang), with an error that is not retryable (a
//! wrong credential or certificate does not get better by retrying).
//!
//! ```no_run
//! # async fn run(adapter: &dyn rooms_adapter::RoomAdapter) -> Result<(), String> {
//! use std::time::Duration;
//!
//! let error = rooms_testkit::refusal::refused_fast(adapter, Duration::from_secs(2)).await?;
//! assert!(error.to_string().contains("authorization violation"));
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use rooms_adapter::adapter::EventSink;
use rooms_adapter::{Error, NodeId, RoomAdapter};

/// The slack given beyond the connect timeout.
pub const SLACK: Duration = Duration::from_secs(1);

/// Connects `adapter` (as node `intruder`) and returns its error if the
/// connect failed within `connect_timeout` + [`SLACK`] with an error that
/// is not retryable; otherwise says what happened instead.
pub async fn refused_fast(
    adapter: &dyn RoomAdapter,
    connect_timeout: Duration,
) -> Result<Error, String> {
    let started = Instant::now();
    let (sink, _events) = EventSink::bounded(8);
    let outcome = tokio::time::timeout(
        connect_timeout * 3,
        adapter.connect(NodeId::from("intruder"), sink),
    )
    .await;
    let took = started.elapsed();
    match outcome {
        Err(_) => Err(format!("the connect hung for {took:?}")),
        Ok(Ok(())) => Err("the connect succeeded".into()),
        Ok(Err(error)) if took > connect_timeout + SLACK => {
            Err(format!("the connect failed only after {took:?}: {error}"))
        }
        Ok(Err(error)) if error.is_retryable() => Err(format!("the error is retryable: {error}")),
        Ok(Err(error)) => Ok(error),
    }
}
