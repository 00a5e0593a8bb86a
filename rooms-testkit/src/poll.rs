//! Waiting for a condition with a deadline, for the throwaway deployments
//! and for tests.
//!
//! A test that waits for something to happen polls for it: it never sleeps a
//! fixed time and hopes. Every wait here has a deadline and names what it
//! waited for when the deadline passes, so a test that waits can fail.
//!
//! - [`eventually`] panics when the deadline passes: for tests. Its check
//!   returns a `bool`, an `Option` or a `Result` (see [`Outcome`]).
//! - [`wait_until`] and [`wait_for`] return a
//!   [`TimedOut`](io::ErrorKind::TimedOut) error instead: for tooling that
//!   reports errors rather than panicking.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use rooms_testkit::poll::eventually;
//!
//! let started = std::time::Instant::now();
//! eventually("ten milliseconds have passed", Duration::from_secs(5), || async {
//!     started.elapsed() >= Duration::from_millis(10)
//! })
//! .await;
//! # }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

/// How long the waits below sleep between two checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a check passed to [`eventually`] returns: ready (with a value), or
/// not yet (maybe with a reason, which the timeout message quotes).
pub trait Outcome {
    /// What [`eventually`] returns once the check is ready.
    type Value;

    /// `Ok(value)` when ready; `Err(reason)` when not yet.
    fn ready(self) -> Result<Self::Value, Option<String>>;
}

/// `true` is ready.
impl Outcome for bool {
    type Value = ();

    fn ready(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

/// `Some(value)` is ready with `value`.
impl<T> Outcome for Option<T> {
    type Value = T;

    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Ok(value)` is ready with `value`; an `Err` is "not yet", and the last
/// one is quoted if the deadline passes.
impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;

    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(|error| Some(error.to_string()))
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it is ready (see [`Outcome`])
/// and returns its value; panics naming `what` (and the last error `check`
/// returned, if any) once `within` has passed.
pub async fn eventually<R, F, Fut>(what: &str, within: Duration, mut check: F) -> R::Value
where
    R: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        match check().await.ready() {
            Ok(value) => return value,
            Err(None) => {}
            Err(reason) => last = reason,
        }
        if Instant::now() >= deadline {
            match last {
                Some(last) => {
                    panic!("timed out after {within:?} waiting for {what} (last: {last})")
                }
                None => panic!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok(Some(value))`
/// or `within` has passed (then a [`TimedOut`](io::ErrorKind::TimedOut)
/// error naming `what` and the last error `check` returned). `Ok(None)` and
/// `Err(_)` both mean "not yet"; an `Err` is a handy way to say why.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> io::Result<T>
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
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> io::Result<()>
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn eventually_returns_the_first_ready_value() {
        let mut calls = 0;
        let value = eventually("the third call", SHORT * 10, || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a condition that never holds")]
    async fn eventually_panics_naming_what_it_waited_for() {
        eventually("a condition that never holds", SHORT, || async { false }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "(last: still 7)")]
    async fn eventually_quotes_the_last_error() {
        eventually("an Ok", SHORT, || async { Err::<(), _>("still 7") }).await;
    }

    #[tokio::test]
    async fn wait_for_times_out_with_what_it_waited_for() {
        let error = wait_for("never", SHORT, || async { Ok(false) })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("waiting until never"), "{error}");
    }
}
