//! What every throwaway server of the kit shares: waiting for a freshly
//! spawned process to answer, with a deadline and a clear error; the
//! process handle (kill, signals, liveness); restarting on the same port.

use std::future::Future;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The process of a throwaway server, while it runs.
#[derive(Debug, Default)]
pub(crate) struct ServerChild(Option<Child>);

impl ServerChild {
    /// Holds a freshly started process.
    pub(crate) fn set(&mut self, child: Child) {
        self.0 = Some(child);
    }

    /// Whether a process is held (it may have exited since).
    pub(crate) fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The process id, while held.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.0 {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL (as a crash) and reaps it; a paused
    /// one is resumed first, so the kill is not queued behind SIGSTOP.
    /// Idempotent.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.0.take() {
            let _ = signal(child.id(), "CONT");
            match child.kill() {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::InvalidInput => {} // already exited
                Err(error) => return Err(error),
            }
            child.wait()?;
        }
        Ok(())
    }

    /// Sends the signal `name` (e.g. `STOP`) to the process; `server` names
    /// it in the error when none runs.
    pub(crate) fn signal(&self, name: &str, server: &str) -> io::Result<()> {
        match &self.0 {
            Some(child) => signal(child.id(), name),
            None => Err(io::Error::other(format!("{server} is not running"))),
        }
    }
}

/// Sends the signal `name` to `pid` with `kill(1)`.
fn signal(pid: u32, name: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -{name} {pid} failed: {status}"
        )))
    }
}

/// After a failed start on the port a server just lost (which may linger
/// for a moment after the kill): waits a little before the next try, or
/// gives the error back for a missing binary (`NotFound`) or past `until`.
pub(crate) async fn pause_before_retry(error: io::Error, until: Instant) -> io::Result<()> {
    if error.kind() == io::ErrorKind::NotFound || Instant::now() >= until {
        return Err(error);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

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
