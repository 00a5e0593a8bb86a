//! Waiting with a deadline, shared by the throwaway deployments.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

/// How long the waits below sleep between two checks.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok(Some(value))`
/// or `within` has passed (then a [`TimedOut`](io::ErrorKind::TimedOut)
/// error naming `what` and the last error `check` returned). `Ok(None)` and
/// `Err(_)` both mean "not yet"; an `Err` is a handy way to say why.
pub(crate) async fn wait_until<T, F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = error.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {within:?} waiting until {what} {last}"),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`wait_until`] for checks that only say yes (`Ok(true)`) or not yet.
pub(crate) async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<bool>>,
{
    wait_until(what, within, || {
        let ready = check();
        async move { Ok(ready.await?.then_some(())) }
    })
    .await
}
