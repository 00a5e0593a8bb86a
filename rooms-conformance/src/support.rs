//! What cases are made of: failures, waits with deadlines, nodes and members.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rooms_adapter::adapter::{AdapterEvent, EventStream};
use rooms_adapter::{
    ConnectOptions, ConnectionReceiver, Delivery, Error, Rooms, RoomsBuilder, SseMessage,
};

use crate::harness::Harness;

/// How long a case waits for something that must happen.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a case listens for something that must *not* happen, after a
/// sentinel proved that everything published before it has arrived.
pub const QUIET_PERIOD: Duration = Duration::from_millis(150);

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError(pub String);

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CaseError {}

impl From<Error> for CaseError {
    fn from(error: Error) -> Self {
        CaseError(format!("unexpected error: {error}"))
    }
}

/// The outcome of a case: passed, failed, or skipped for a missing capability.
pub type CaseResult = Result<Outcome, CaseError>;

/// A case that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The harness lacks a capability the case needs.
    Skipped(&'static str),
}

/// Fails the case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::CaseError(format!($($msg)+)));
        }
    };
}

/// Fails with `message`.
pub fn fail<T>(message: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError(message.into()))
}

/// Polls `condition` until it holds or `within` passes.
pub async fn wait_until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), CaseError> {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return fail(format!("timed out after {within:?} waiting until {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Retries `attempt` until it succeeds or `within` passes (e.g. publishing
/// while a node reconnects).
pub async fn retry_until<T, F, Fut>(
    what: &str,
    within: Duration,
    mut attempt: F,
) -> Result<T, CaseError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return fail(format!("{what} still failing after {within:?}: {error}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The next event on a raw adapter's stream within `within`, skipping
/// control frames (other nodes' heartbeats reach every connected adapter that
/// has the control capability); `None` if none came or the stream ended.
pub async fn next_event(events: &mut EventStream, within: Duration) -> Option<AdapterEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(AdapterEvent::Control { .. })) => {}
            Ok(event) => return event,
            Err(_) => return None,
        }
    }
}

/// A new engine on a new adapter of the harness's medium.
pub async fn node<H: Harness>(harness: &H) -> Result<Rooms, CaseError> {
    node_with(harness, |builder| builder).await
}

/// Like [`node`], with the builder adjusted by `configure`.
pub async fn node_with<H: Harness>(
    harness: &H,
    configure: impl FnOnce(RoomsBuilder) -> RoomsBuilder,
) -> Result<Rooms, CaseError> {
    let adapter = harness.new_adapter().await?;
    Ok(configure(Rooms::builder(adapter)).build().await?)
}

/// A new connection on `rooms` that joined `room`, with a queue large enough for
/// the suite's bursts.
pub async fn member(rooms: &Rooms, room: &str) -> Result<ConnectionReceiver, CaseError> {
    member_with(rooms, room, ConnectOptions::new().queue_capacity(16_384)).await
}

/// A new connection with `options` that joined `room`.
pub async fn member_with(
    rooms: &Rooms,
    room: &str,
    options: ConnectOptions,
) -> Result<ConnectionReceiver, CaseError> {
    let receiver = rooms.connect(options).await?;
    rooms.join(receiver.id(), room).await?;
    Ok(receiver)
}

/// The next delivery, or a failure naming `what` after [`DELIVERY_TIMEOUT`].
pub async fn next(
    receiver: &mut ConnectionReceiver,
    what: &str,
) -> Result<Arc<Delivery>, CaseError> {
    match tokio::time::timeout(DELIVERY_TIMEOUT, receiver.recv()).await {
        Ok(Some(delivery)) => Ok(delivery),
        Ok(None) => fail(format!(
            "connection {} ended while waiting for {what}",
            receiver.id()
        )),
        Err(_) => fail(format!(
            "connection {} got nothing within {DELIVERY_TIMEOUT:?} while waiting for {what}",
            receiver.id()
        )),
    }
}

/// The next delivery, which must carry `data`.
pub async fn expect_data(
    receiver: &mut ConnectionReceiver,
    data: impl Into<serde_json::Value>,
) -> Result<(), CaseError> {
    let data = data.into();
    let delivery = next(receiver, &format!("data {data}")).await?;
    ensure!(
        delivery.message().data == data,
        "connection {} expected data {data}, got {:?}",
        receiver.id(),
        delivery.message()
    );
    Ok(())
}

/// Nothing arrives within [`QUIET_PERIOD`].
pub async fn expect_quiet(receiver: &mut ConnectionReceiver) -> Result<(), CaseError> {
    match tokio::time::timeout(QUIET_PERIOD, receiver.recv()).await {
        Err(_) => Ok(()),
        Ok(None) => fail(format!("connection {} ended unexpectedly", receiver.id())),
        Ok(Some(delivery)) => fail(format!(
            "connection {} got an unexpected message: {:?}",
            receiver.id(),
            delivery.message()
        )),
    }
}

/// The next delivery is the sentinel `data` (nothing unexpected came first),
/// and nothing follows it within [`QUIET_PERIOD`].
pub async fn expect_only_sentinel(
    receiver: &mut ConnectionReceiver,
    data: &str,
) -> Result<(), CaseError> {
    expect_data(receiver, data).await?;
    expect_quiet(receiver).await
}

/// A message whose data is `data`.
pub fn text(data: &str) -> SseMessage {
    SseMessage::new(data)
}

/// Shuts every node down.
pub async fn shutdown_all(nodes: &[&Rooms]) {
    for node in nodes {
        node.shutdown().await;
    }
}

/// The room names the `odd_room_names` case uses: empty, unicode and emoji,
/// spaces, `*`, `?[]{}`, a `:`-nested name, a newline, a tab and 1,000
/// characters. An adapter that maps room names onto its medium's names
/// (channels, subjects) should unit-test that every one of them maps to a
/// distinct, valid name, adding whatever its medium finds odd too.
///
/// ```
/// let names = rooms_conformance::odd_room_names();
/// assert!(names.iter().any(String::is_empty));
/// assert!(names.iter().any(|name| name.chars().count() == 1_000));
/// ```
pub fn odd_room_names() -> Vec<String> {
    [
        "",
        "project:42:chat room/ü 日本 🚀",
        "with spaces",
        "*",
        "?[]{}",
        "sse:room:nested",
        "line\nbreak",
        "tab\there",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(std::iter::once("x".repeat(1000)))
    .collect()
}
