//! [`PostgresAdapter`]: the [`RoomAdapter`] over PostgreSQL LISTEN/NOTIFY.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterCounters, AdapterStats, ControlTarget, EventSink, RoomAdapter,
};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::channel::{control_all_channel, control_node_channel, room_channel};
use crate::config::{PostgresConfig, describe};
use crate::error::{self, PostgresError};
use crate::listener::{self, Command, Listener, Parts, truncated};
use crate::publisher::Publisher;

/// Capacity of the command queue from the adapter to its listener task
/// (subscribes and unsubscribes wait for room in it).
const COMMAND_QUEUE: usize = 1024;

/// The PostgreSQL medium: one dedicated listening connection per adapter
/// (per node), a pool for publishing, an attachments table for envelopes
/// over the `NOTIFY` limit. Configure it with [`PostgresAdapter::builder`];
/// see the [crate docs](crate) for the behaviour.
pub struct PostgresAdapter {
    config: Arc<PostgresConfig>,
    medium: String,
    shared: Arc<Shared>,
    /// Serializes connect and disconnect.
    lifecycle: tokio::sync::Mutex<()>,
}

impl fmt::Debug for PostgresAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresAdapter")
            .field("medium", &self.medium)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the adapter shares with its tasks.
pub(crate) struct Shared {
    pub(crate) counters: AdapterCounters,
    /// Whether the listening connection is up.
    pub(crate) connected: AtomicBool,
    /// Rooms wanted now.
    pub(crate) wanted: AtomicUsize,
    /// When the listener held back (not held against the server).
    pub(crate) pauses: listener::Pauses,
    phase: Mutex<Phase>,
}

enum Phase {
    Idle,
    Running(Arc<Session>),
    Closed,
}

struct Session {
    publisher: Arc<Publisher>,
    /// The listener's commands (adapters with a sink).
    commands: Option<mpsc::Sender<Command>>,
    sink: Option<EventSink>,
    tasks: Vec<AbortHandle>,
}

impl Shared {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PostgresAdapter {
    pub(crate) fn new(config: PostgresConfig) -> Self {
        let medium = describe(&config.pg);
        Self {
            config: Arc::new(config),
            medium,
            shared: Arc::new(Shared {
                counters: AdapterCounters::default(),
                connected: AtomicBool::new(false),
                wanted: AtomicUsize::new(0),
                pauses: listener::Pauses::default(),
                phase: Mutex::new(Phase::Idle),
            }),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// The validated settings.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The medium in logs and errors, e.g. `postgres at 127.0.0.1:5432/app`
    /// (never the password).
    pub fn medium(&self) -> &str {
        &self.medium
    }

    /// Whether the listening connection is up now (false before `connect`,
    /// while reconnecting, after `disconnect`, and for publish-only
    /// adapters).
    pub fn is_connected(&self) -> bool {
        self.session().is_ok() && self.shared.connected.load(Ordering::Acquire)
    }

    /// The SQL that creates the attachments table of these settings (for a
    /// migration, with [`create_attachment_table(false)`](crate::PostgresAdapterBuilder::create_attachment_table)).
    ///
    /// ```
    /// let adapter = rooms_adapter_postgres::PostgresAdapter::builder("postgres://localhost/app")
    ///     .build()?;
    /// let sql = adapter.attachment_table_sql();
    /// assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"rooms_attachments\""), "{sql}");
    /// # Ok::<(), rooms_adapter::Error>(())
    /// ```
    pub fn attachment_table_sql(&self) -> String {
        crate::publisher::table_sql(&self.config.quoted_table())
    }

    /// Deletes attachment rows older than the TTL now (the adapter also does
    /// it every cleanup interval); returns how many were deleted.
    pub async fn clean_attachments(&self) -> Result<u64, Error> {
        let session = self.session()?;
        Ok(session.publisher.cleanup().await?)
    }

    fn session(&self) -> Result<Arc<Session>, Error> {
        match &*self.shared.phase() {
            Phase::Running(session) => Ok(Arc::clone(session)),
            Phase::Idle | Phase::Closed => Err(error::closed()),
        }
    }

    /// Builds the pool (and the table); with a sink, opens the listening
    /// connection and starts its task.
    async fn start(&self, node: NodeId, sink: Option<EventSink>) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        match &*self.shared.phase() {
            Phase::Idle => {}
            Phase::Running(_) => return Ok(()),
            Phase::Closed => return Err(error::closed()),
        }
        let prefix = self.config.control_prefix();
        let control = [
            control_all_channel(&prefix),
            control_node_channel(&prefix, node.as_str()),
        ];
        let publisher = Publisher::new(&self.config, &self.medium)?;
        if self.config.create_attachment_table {
            publisher.ensure_table(&self.config.quoted_table()).await?;
        }
        let mut tasks = vec![
            tokio::spawn(clean_periodically(
                Arc::downgrade(&publisher),
                self.config.cleanup_interval,
            ))
            .abort_handle(),
        ];
        let mut commands = None;
        if let Some(sink) = &sink {
            let link = match listener::open(&self.config, &self.medium).await {
                Ok(link) => link,
                Err(failure) => {
                    abort_all(&tasks);
                    publisher.close();
                    return Err(failure.into());
                }
            };
            let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
            let (ready_tx, ready_rx) = oneshot::channel();
            let parts = Parts {
                config: Arc::clone(&self.config),
                medium: self.medium.clone(),
                shared: Arc::clone(&self.shared),
                sink: sink.clone(),
                publisher: Arc::clone(&publisher),
                control,
            };
            let task = Listener::new(parts, link, ready_tx);
            tasks.push(tokio::spawn(task.run(command_rx)).abort_handle());
            let limit = self.config.subscribe_timeout;
            let ready = match tokio::time::timeout(limit, ready_rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(error::closed()),
                Err(_) => Err(PostgresError::Timeout {
                    operation: "LISTEN on the control channels".into(),
                    after: limit,
                }
                .into()),
            };
            if let Err(failure) = ready {
                abort_all(&tasks);
                publisher.close();
                self.shared.connected.store(false, Ordering::Release);
                return Err(failure);
            }
            commands = Some(command_tx);
        }
        *self.shared.phase() = Phase::Running(Arc::new(Session {
            publisher,
            commands,
            sink,
            tasks,
        }));
        Ok(())
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        let session = self.session()?;
        let Some(commands) = &session.commands else {
            return Err(Error::Unsupported {
                adapter: "postgres".into(),
                capability: "subscriptions on a publish-only adapter",
            });
        };
        commands.send(command).await.map_err(|_| error::closed())
    }

    async fn publish_bytes(
        &self,
        channel: &str,
        bytes: bytes::Bytes,
        what: &str,
        frame: Frame,
    ) -> Result<(), Error> {
        let session = self.session()?;
        match session.publisher.publish(channel, bytes, what).await {
            Ok(()) => {
                // `published` counts room envelopes only: a heartbeat must not
                // look like a broadcast.
                if frame == Frame::Room {
                    self.shared.counters.record_published();
                }
                Ok(())
            }
            Err(failure) => {
                self.shared.counters.record_publish_error();
                Err(failure.into())
            }
        }
    }
}

/// What a publish carries, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A room's envelope: counted in [`AdapterStats::published`].
    Room,
    /// A cluster control frame: not a broadcast, not counted as one.
    Control,
}

/// Deletes old attachment rows every `interval` while the publisher lives.
async fn clean_periodically(publisher: std::sync::Weak<Publisher>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(publisher) = publisher.upgrade() else {
            return;
        };
        match publisher.cleanup().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "old attachments deleted"),
            Err(error) => tracing::debug!(%error, "attachment cleanup failed; retried later"),
        }
    }
}

fn abort_all(tasks: &[AbortHandle]) {
    for task in tasks {
        task.abort();
    }
}

#[async_trait]
impl RoomAdapter for PostgresAdapter {
    fn name(&self) -> &str {
        "postgres"
    }

    /// Opens the pool (creating the attachments table unless told not to)
    /// and the listening connection, and returns once the control channels
    /// are listened to.
    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        self.start(node, Some(sink)).await
    }

    /// Opens the pool only: no listening connection.
    async fn connect_publisher(&self, node: NodeId) -> Result<(), Error> {
        self.start(node, None).await
    }

    fn capabilities(&self) -> AdapterCapabilities {
        AdapterCapabilities::NONE.with_emitter().with_control()
    }

    /// Stops every task, closes the listening connection and the pool, and
    /// fails every later call with [`Error::Closed`]. Idempotent.
    async fn disconnect(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock().await;
        let phase = std::mem::replace(&mut *self.shared.phase(), Phase::Closed);
        if let Phase::Running(session) = phase {
            abort_all(&session.tasks);
            session.publisher.close();
        }
        self.shared.wanted.store(0, Ordering::Relaxed);
        self.shared.connected.store(false, Ordering::Release);
        Ok(())
    }

    /// Listens to `room`'s channel and returns once the server confirmed
    /// the `LISTEN` (batched with other rooms' in one round trip). While the
    /// listening connection is down it fails at once with a retryable
    /// error; the room stays wanted and is listened after the reconnect.
    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        let channel = room_channel(&self.config.channel_prefix, room.as_str());
        let (reply, answer) = oneshot::channel();
        self.command(Command::Subscribe {
            room: room.clone(),
            channel,
            reply,
        })
        .await?;
        // The time the listener holds back for attachment reads does not
        // count: it cannot read the confirmation meanwhile, and nothing is
        // wrong with the server.
        let limit = self.config.subscribe_timeout;
        let started = Instant::now();
        let paused_before = self.shared.pauses.total(started);
        let deadline = |now: Instant| {
            started + limit + self.shared.pauses.total(now).saturating_sub(paused_before)
        };
        let mut answer = answer;
        loop {
            match tokio::time::timeout_at(deadline(Instant::now()), &mut answer).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => return Err(error::closed()),
                Err(_) => {
                    if Instant::now() >= deadline(Instant::now()) {
                        return Err(PostgresError::Timeout {
                            operation: format!("subscribe to room {:?}", truncated(room.as_str())),
                            after: limit,
                        }
                        .into());
                    }
                }
            }
        }
    }

    /// Stops delivery for `room` at once and `UNLISTEN`s after the
    /// unsubscribe delay, unless the room is subscribed again meanwhile.
    /// Idempotent.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        match self
            .command(Command::Unsubscribe {
                room: room.clone(),
                reply,
            })
            .await
        {
            Ok(()) => {}
            // Nothing to unsubscribe from on a closed adapter.
            Err(Error::Closed { .. }) => return Ok(()),
            Err(failure) => return Err(failure),
        }
        let _ = answer.await;
        Ok(())
    }

    /// Publishes the envelope with `pg_notify` on the room's channel, or
    /// through the attachments table when its frame is over the threshold.
    /// Fails within the publish timeout (at once when the server refuses
    /// connections) while PostgreSQL is down.
    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let bytes = envelope.encode(self.config.codec)?;
        if bytes.len() > self.config.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                room: truncated(room.as_str()),
                size: bytes.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        let channel = room_channel(&self.config.channel_prefix, room.as_str());
        let what = format!("room {:?}", truncated(room.as_str()));
        self.publish_bytes(&channel, bytes, &what, Frame::Room).await
    }

    /// Publishes a control frame on `{control_prefix}all` or the target
    /// node's inbox.
    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        let prefix = self.config.control_prefix();
        let channel = match target {
            ControlTarget::Node(node) => control_node_channel(&prefix, node.as_str()),
            _ => control_all_channel(&prefix),
        };
        self.publish_bytes(
            &channel,
            bytes::Bytes::copy_from_slice(payload),
            "the control channel",
            Frame::Control,
        )
        .await
    }

    fn stats(&self) -> AdapterStats {
        let sink = self.session().ok().and_then(|session| session.sink.clone());
        self.shared
            .counters
            .snapshot(self.shared.wanted.load(Ordering::Relaxed), sink.as_ref())
    }
}
