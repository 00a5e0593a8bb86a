//! An in-process stub of a one-shard medium behind the [`Link`] seam, and
//! tests of the whole subscriber loop (table, task, inbound) against it: no
//! Redis needed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rooms_adapter::adapter::{AdapterCounters, AdapterEvent, EventSink, EventStream};
use rooms_adapter::{Envelope, Error, NodeId, RoomName, SseMessage, wire};
use tokio::sync::{mpsc, watch};

use super::link::{Inbound, Link, Push, ShardConnection};
use super::slot::{ShardId, SlotMap, Topology};
use super::table::{Ack, OpKind};
use super::{Command, Shared, Topic};
use crate::config::{Backoff, RedisConfig};

/// The medium: which channels the live connection holds, and faults.
#[derive(Default)]
struct Medium {
    state: Mutex<MediumState>,
    down: AtomicBool,
    /// Answer no batch (a server that hangs).
    frozen: AtomicBool,
    connects: AtomicU64,
}

#[derive(Default)]
struct MediumState {
    /// The live connection: its inbound and generation.
    live: Option<(Arc<Inbound>, ShardId, u64)>,
    channels: HashSet<String>,
    refused: HashSet<String>,
}

impl Medium {
    fn lock(&self) -> std::sync::MutexGuard<'_, MediumState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers `payload` on `channel` if subscribed; whether it was.
    fn publish(&self, channel: &str, payload: &[u8]) -> bool {
        let state = self.lock();
        match &state.live {
            Some((inbound, shard, generation)) if state.channels.contains(channel) => {
                let push = Push::Message {
                    channel: channel.as_bytes(),
                    payload,
                };
                inbound.push(shard, *generation, push);
                true
            }
            _ => false,
        }
    }

    /// Drops the connection, as a server restart would.
    fn kill(&self) {
        let mut state = self.lock();
        state.channels.clear();
        if let Some((inbound, shard, generation)) = state.live.take() {
            inbound.push(&shard, generation, Push::Disconnected);
        }
    }
}

struct StubLink(Arc<Medium>);

#[async_trait]
impl Link for StubLink {
    fn medium(&self) -> &str {
        "stub"
    }

    async fn discover(&self) -> Result<Topology, Error> {
        Ok(Topology::single("stub"))
    }

    async fn connect(
        &self,
        _topology: &Topology,
        shard: &ShardId,
        generation: u64,
        inbound: Arc<Inbound>,
    ) -> Result<Arc<dyn ShardConnection>, Error> {
        self.0.connects.fetch_add(1, Ordering::Relaxed);
        if self.0.down.load(Ordering::Relaxed) {
            return Err(Error::Unavailable {
                medium: "stub".into(),
                reason: "down".into(),
                source: None,
            });
        }
        self.0.lock().live = Some((inbound, Arc::clone(shard), generation));
        Ok(Arc::new(StubConnection(Arc::clone(&self.0))))
    }
}

struct StubConnection(Arc<Medium>);

#[async_trait]
impl ShardConnection for StubConnection {
    async fn batch(&self, kind: OpKind, channels: &[String]) -> Result<Vec<Ack>, String> {
        if self.0.frozen.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let mut state = self.0.lock();
        Ok(channels
            .iter()
            .map(|channel| match kind {
                OpKind::Subscribe if state.refused.contains(channel) => {
                    Ack::Refused("NOPERM this user has no permissions".into())
                }
                OpKind::Subscribe => {
                    state.channels.insert(channel.clone());
                    Ack::Done
                }
                OpKind::Unsubscribe => {
                    state.channels.remove(channel);
                    Ack::Done
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Harness {
    medium: Arc<Medium>,
    commands: mpsc::Sender<Command>,
    events: EventStream,
    subscriptions: Arc<AtomicU64>,
    counters: Arc<AdapterCounters>,
    _shutdown: watch::Sender<bool>,
}

const DEADLINE: Duration = Duration::from_secs(5);

async fn harness(unsubscribe_delay: Duration) -> Result<Harness, Error> {
    let medium = Arc::new(Medium::default());
    let config = RedisConfig {
        unsubscribe_delay,
        subscribe_timeout: Duration::from_millis(300),
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
        ..RedisConfig::default()
    };
    let shared = Shared {
        counters: Arc::new(AdapterCounters::default()),
        subscriptions: Arc::new(AtomicU64::new(0)),
        slots: Arc::new(SlotMap::default()),
    };
    let (sink, events) = EventSink::bounded(1024);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let link = Arc::new(StubLink(Arc::clone(&medium)));
    let (commands, _task) = super::start(&config, link, &shared, sink, shutdown_rx).await?;
    Ok(Harness {
        medium,
        commands,
        events,
        subscriptions: shared.subscriptions,
        counters: shared.counters,
        _shutdown: shutdown,
    })
}

impl Harness {
    async fn subscribe(&self, room: &str) -> Result<(), Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let room = RoomName::from(room);
        let _ = self
            .commands
            .send(Command::Subscribe {
                topic: room.into(),
                reply,
            })
            .await;
        tokio::time::timeout(DEADLINE, answer)
            .await
            .map_err(|_| crate::error::timeout("stub subscribe", DEADLINE))?
            .map_err(|_| crate::error::closed())?
    }

    async fn unsubscribe(&self, room: &str) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let room = RoomName::from(room);
        let _ = self
            .commands
            .send(Command::Unsubscribe {
                topic: room.into(),
                reply,
            })
            .await;
        let _ = tokio::time::timeout(DEADLINE, answer).await;
    }

    fn publish(&self, room: &str) -> bool {
        let payload = Envelope::new(NodeId::from("other"), SseMessage::new("hi"))
            .encode(wire::Codec::Json)
            .unwrap_or_default();
        self.medium
            .publish(&wire::channel_name("sse:room:", room), &payload)
    }

    /// The next lifecycle event (messages and `MediumLost` skipped), within
    /// the deadline.
    async fn lifecycle(&mut self) -> Option<AdapterEvent> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(AdapterEvent::Message { .. } | AdapterEvent::MediumLost { .. })) => {
                    continue;
                }
                Ok(event) => return event,
                Err(_) => return None,
            }
        }
    }

    async fn message(&mut self) -> Option<RoomName> {
        match tokio::time::timeout(DEADLINE, self.events.recv()).await {
            Ok(Some(AdapterEvent::Message { room, .. })) => Some(room),
            _ => None,
        }
    }
}

#[tokio::test]
async fn messages_of_subscribed_rooms_are_delivered_and_left_rooms_are_silent() -> Result<(), Error>
{
    let mut h = harness(Duration::from_secs(60)).await?;
    h.subscribe("a").await?;
    assert!(h.publish("a"));
    assert_eq!(h.message().await, Some(RoomName::from("a")));
    h.unsubscribe("a").await;
    // Still on the medium (the delay runs), but not delivered.
    assert!(h.publish("a"), "kept subscribed during the delay");
    assert!(h.events.try_recv().is_err());
    Ok(())
}

#[tokio::test]
async fn a_restart_resubscribes_every_room_and_reports_it() -> Result<(), Error> {
    let mut h = harness(Duration::from_millis(10)).await?;
    h.subscribe("a").await?;
    h.subscribe("b").await?;
    h.medium.kill();
    let event = h.lifecycle().await;
    let Some(AdapterEvent::Reconnected { rooms, .. }) = event else {
        panic!("expected Reconnected, got {event:?}");
    };
    assert_eq!(rooms, vec![RoomName::from("a"), RoomName::from("b")]);
    assert!(h.publish("a") && h.publish("b"), "both subscribed again");
    assert_eq!(h.subscriptions.load(Ordering::Relaxed), 2);
    Ok(())
}

#[tokio::test]
async fn a_refused_resubscribe_is_reported_as_lost() -> Result<(), Error> {
    let mut h = harness(Duration::from_millis(10)).await?;
    h.subscribe("open").await?;
    h.subscribe("secret").await?;
    h.medium
        .lock()
        .refused
        .insert(wire::channel_name("sse:room:", "secret"));
    h.medium.kill();
    let mut lost = None;
    let mut reconnected = None;
    while lost.is_none() || reconnected.is_none() {
        match h.lifecycle().await {
            Some(AdapterEvent::SubscriptionLost { room, reason }) => lost = Some((room, reason)),
            Some(AdapterEvent::Reconnected { rooms, .. }) => reconnected = Some(rooms),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (room, reason) = lost.unwrap_or_else(|| (RoomName::from(""), String::new()));
    assert_eq!(room, RoomName::from("secret"));
    assert!(reason.contains("NOPERM"), "{reason}");
    assert_eq!(reconnected, Some(vec![RoomName::from("open")]));
    // A later subscribe asks the medium again (and is refused again).
    assert!(h.subscribe("secret").await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_subscribe_while_down_times_out_then_is_reported_when_back() -> Result<(), Error> {
    let mut h = harness(Duration::from_millis(10)).await?;
    h.medium.down.store(true, Ordering::Relaxed);
    h.medium.kill();
    let started = h.medium.connects.load(Ordering::Relaxed);
    // The caller's own deadline (the adapter's subscribe timeout) runs out.
    let (reply, answer) = tokio::sync::oneshot::channel();
    let room = RoomName::from("late");
    let _ = h
        .commands
        .send(Command::Subscribe {
            topic: room.into(),
            reply,
        })
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), answer)
            .await
            .is_err()
    );
    // Reconnect attempts go on, with backoff.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.medium.connects.load(Ordering::Relaxed) < started + 2 {
        assert!(tokio::time::Instant::now() < deadline, "retries connecting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.medium.down.store(false, Ordering::Relaxed);
    let event = h.lifecycle().await;
    let Some(AdapterEvent::Reconnected { rooms, .. }) = event else {
        panic!("expected Reconnected, got {event:?}");
    };
    assert_eq!(rooms, vec![RoomName::from("late")]);
    assert!(h.publish("late"));
    Ok(())
}

#[tokio::test]
async fn an_unsubscribe_reaches_the_medium_even_when_the_caller_stops_waiting() -> Result<(), Error>
{
    let h = harness(Duration::ZERO).await?;
    h.subscribe("a").await?;
    // Fire and forget: nobody awaits the reply.
    let (reply, _) = tokio::sync::oneshot::channel();
    let room = RoomName::from("a");
    let _ = h
        .commands
        .send(Command::Unsubscribe {
            topic: room.into(),
            reply,
        })
        .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.publish("a") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the medium forgets the room"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_hung_batch_drops_the_connection_and_recovers() -> Result<(), Error> {
    let mut h = harness(Duration::from_millis(10)).await?;
    h.subscribe("a").await?;
    h.medium.frozen.store(true, Ordering::Relaxed);
    let (reply, _answer) = tokio::sync::oneshot::channel();
    let room = RoomName::from("b");
    let _ = h
        .commands
        .send(Command::Subscribe {
            topic: room.into(),
            reply,
        })
        .await;
    // The batch times out (300 ms): the connection is replaced.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.medium.connects.load(Ordering::Relaxed) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "reconnects");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.medium.frozen.store(false, Ordering::Relaxed);
    let event = h.lifecycle().await;
    let Some(AdapterEvent::Reconnected { rooms, .. }) = event else {
        panic!("expected Reconnected, got {event:?}");
    };
    assert!(rooms.contains(&RoomName::from("a")), "{rooms:?}");
    Ok(())
}

#[tokio::test]
async fn losing_the_medium_is_reported_once_even_with_no_rooms() -> Result<(), Error> {
    let mut h = harness(Duration::from_millis(10)).await?;
    h.medium.down.store(true, Ordering::Relaxed);
    h.medium.kill();
    let event = tokio::time::timeout(DEADLINE, h.events.recv()).await;
    let Ok(Some(AdapterEvent::MediumLost { reason })) = event else {
        panic!("expected MediumLost, got {event:?}");
    };
    assert!(reason.contains("lost"), "{reason}");
    // Failed reconnects do not report it again.
    let started = h.medium.connects.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.medium.connects.load(Ordering::Relaxed) < started + 2 {
        assert!(tokio::time::Instant::now() < deadline, "retries connecting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.events.try_recv().is_err(), "one MediumLost per outage");
    h.medium.down.store(false, Ordering::Relaxed);
    let event = tokio::time::timeout(DEADLINE, h.events.recv()).await;
    let Ok(Some(AdapterEvent::Reconnected { rooms, .. })) = event else {
        panic!("expected Reconnected, got {event:?}");
    };
    assert!(rooms.is_empty(), "{rooms:?}");
    Ok(())
}

const CONTROL_ALL: &str = "rooms-control:sse:room:all";
const CONTROL_INBOX: &str = "rooms-control:sse:room:node:b";

/// A harness whose node also holds its two control channels.
async fn control_harness() -> Result<Harness, Error> {
    let h = harness(Duration::from_millis(10)).await?;
    let topics = [CONTROL_ALL, CONTROL_INBOX].map(Topic::control);
    super::subscribe_all(&h.commands, topics, DEADLINE).await?;
    Ok(h)
}

impl Harness {
    /// The next event that is not a lifecycle event, within the deadline.
    async fn frame(&mut self) -> Option<AdapterEvent> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(AdapterEvent::MediumLost { .. } | AdapterEvent::Reconnected { .. })) => {
                    continue;
                }
                Ok(event) => return event,
                Err(_) => return None,
            }
        }
    }
}

#[tokio::test]
async fn control_frames_are_handed_over_undecoded() -> Result<(), Error> {
    let mut h = control_harness().await?;
    assert!(h.medium.publish(CONTROL_ALL, b"not an envelope"));
    let event = h.frame().await;
    let Some(AdapterEvent::Control { payload }) = event else {
        panic!("expected Control, got {event:?}");
    };
    assert_eq!(&payload[..], b"not an envelope");
    assert!(h.medium.publish(CONTROL_INBOX, br#"{"v":1}"#));
    let event = h.frame().await;
    assert!(
        matches!(&event, Some(AdapterEvent::Control { payload }) if &payload[..] == br#"{"v":1}"#),
        "{event:?}"
    );
    // Never decoded, never counted as envelopes.
    let stats = h.counters.snapshot(0, None);
    assert_eq!((stats.received, stats.decode_errors_total()), (0, 0));
    assert_eq!(h.subscriptions.load(Ordering::Relaxed), 0);
    Ok(())
}

#[tokio::test]
async fn an_oversized_control_frame_is_skipped_and_counted() -> Result<(), Error> {
    let mut h = control_harness().await?;
    let limit = RedisConfig::default().max_payload_bytes;
    assert!(h.medium.publish(CONTROL_ALL, &vec![b'x'; limit + 1]));
    assert!(h.medium.publish(CONTROL_ALL, b"small"));
    let event = h.frame().await;
    assert!(
        matches!(&event, Some(AdapterEvent::Control { payload }) if &payload[..] == b"small"),
        "{event:?}"
    );
    let stats = h.counters.snapshot(0, None);
    assert_eq!(
        stats.decode_errors.get(&wire::DecodeErrorKind::TooLarge),
        Some(&1)
    );
    Ok(())
}

#[tokio::test]
async fn a_room_named_like_a_control_channel_stays_a_room() -> Result<(), Error> {
    let mut h = control_harness().await?;
    h.subscribe(CONTROL_ALL).await?;
    h.subscribe("all").await?;
    assert_eq!(h.subscriptions.load(Ordering::Relaxed), 2);
    for room in [CONTROL_ALL, "all"] {
        assert!(h.publish(room));
        let event = h.frame().await;
        assert!(
            matches!(&event, Some(AdapterEvent::Message { room: heard, .. }) if heard.as_str() == room),
            "{event:?}"
        );
    }
    assert!(h.medium.publish(CONTROL_ALL, b"frame"));
    let event = h.frame().await;
    assert!(
        matches!(event, Some(AdapterEvent::Control { .. })),
        "{event:?}"
    );
    Ok(())
}

#[tokio::test]
async fn control_channels_come_back_after_a_restart_unreported() -> Result<(), Error> {
    let mut h = control_harness().await?;
    h.subscribe("a").await?;
    h.medium.kill();
    let event = h.lifecycle().await;
    let Some(AdapterEvent::Reconnected { rooms, .. }) = event else {
        panic!("expected Reconnected, got {event:?}");
    };
    assert_eq!(rooms, vec![RoomName::from("a")], "rooms only");
    assert!(h.medium.publish(CONTROL_ALL, b"again"));
    assert!(h.medium.publish(CONTROL_INBOX, b"again"));
    assert_eq!(h.subscriptions.load(Ordering::Relaxed), 1);
    Ok(())
}
