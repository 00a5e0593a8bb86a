//! What every throwaway server of the kit shares: waiting for a freshly
//! spawned process to answer, with a deadline and a clear error.

use std::future::Future;
use std::io;
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits until `ready` says the server `name` on `port` answers, within
/// `deadline`. If the process exits first, the error carries the last lines
/// of its `log`; if the deadline passes, the process is killed and the error
/// says what did not happen (`waited_for`, e.g. "answer PING").
pub(crate) async fn wait_ready<F, Fut>(
    mut child: Child,
    name: &str,
    port: u16,
    deadline: Duration,
    waited_for: &str,
    log: impl Fn() -> String,
    mut ready: F,
) -> io::Result<Child>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait()? {
            let log = log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(io::Error::other(format!(
                "{name} on port {port} exited with {status}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        if ready().await {
            return Ok(child);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{name} on port {port} did not {waited_for} within {deadline:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
