//! Unit tests of the subscription table: no Redis, no runtime, time passed in.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;
use crate::config::Backoff;

const DELAY: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(5);

fn settings() -> Settings {
    Settings {
        prefix: "sse:room:".into(),
        unsubscribe_delay: DELAY,
        subscribe_timeout: TIMEOUT,
        batch: 100,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
        ping_interval: Duration::from_secs(3600),
    }
}

fn room(name: &str) -> Topic {
    Topic::from(name)
}

fn room_name(name: &str) -> RoomName {
    RoomName::from(name)
}

fn shard() -> ShardId {
    Arc::from("server")
}

/// A table with one connected shard that owns every slot.
fn connected(now: Instant) -> (Table, u64) {
    let mut table = Table::new(settings(), now);
    assert_eq!(table.actions(now), vec![Action::Discover]);
    table.discovered(Some(Topology::single("server")), now);
    let generation = table.begin_connect(&shard()).unwrap_or_default();
    table.connected(&shard(), generation, true, now);
    (table, generation)
}

fn waiter() -> (Waiter, oneshot::Receiver<Result<(), Error>>) {
    oneshot::channel()
}

/// The one batch `actions` starts, with its rooms sorted.
fn one_op(table: &mut Table, now: Instant) -> (OpKind, u64, Vec<Topic>) {
    let actions = table.actions(now);
    let ops: Vec<_> = actions
        .into_iter()
        .filter_map(|action| match action {
            Action::Op {
                kind,
                generation,
                topics: mut rooms,
                ..
            } => {
                rooms.sort();
                Some((kind, generation, rooms))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ops.len(), 1, "exactly one batch: {ops:?}");
    ops.into_iter()
        .next()
        .unwrap_or((OpKind::Subscribe, 0, Vec::new()))
}

fn answered(rx: &mut oneshot::Receiver<Result<(), Error>>) -> Option<bool> {
    rx.try_recv().ok().map(|result| result.is_ok())
}

fn done(n: usize) -> Result<Vec<Ack>, String> {
    Ok(vec![Ack::Done; n])
}

/// Subscribes `name` and confirms it.
fn subscribed(table: &mut Table, generation: u64, name: &str, now: Instant) {
    let (tx, mut rx) = waiter();
    table.subscribe(room(name), tx, now);
    let (kind, op_generation, rooms) = one_op(table, now);
    assert_eq!((kind, op_generation), (OpKind::Subscribe, generation));
    table.op_done(&shard(), generation, kind, rooms, done(1), now);
    table.answer_waiters();
    assert_eq!(answered(&mut rx), Some(true));
}

#[test]
fn a_subscribe_is_answered_when_redis_confirms_it() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, mut rx) = waiter();
    table.subscribe(room("a"), tx, now);
    assert_eq!(table.take_delivery(), vec![(room("a"), true)]);
    let (kind, _, rooms) = one_op(&mut table, now);
    assert_eq!(answered(&mut rx), None, "not before Redis confirms");
    table.op_done(&shard(), generation, kind, rooms, done(1), now);
    table.answer_waiters();
    assert_eq!(answered(&mut rx), Some(true));
    assert_eq!(table.live(), 1);
    // Already subscribed: answered at once, no new batch.
    let (tx, mut rx) = waiter();
    table.subscribe(room("a"), tx, now);
    assert_eq!(answered(&mut rx), Some(true));
    assert!(table.actions(now).is_empty());
}

#[test]
fn joins_made_while_a_batch_is_in_flight_go_in_the_next_batch() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, _rx) = waiter();
    table.subscribe(room("a"), tx, now);
    let (kind, _, rooms) = one_op(&mut table, now);
    for name in ["b", "c", "d"] {
        let (tx, _rx) = waiter();
        table.subscribe(room(name), tx, now);
    }
    assert!(
        table.actions(now).is_empty(),
        "one batch per shard at a time"
    );
    table.op_done(&shard(), generation, kind, rooms, done(1), now);
    table.answer_waiters();
    let (_, _, rooms) = one_op(&mut table, now);
    assert_eq!(rooms, vec![room("b"), room("c"), room("d")]);
}

#[test]
fn a_left_room_is_silent_at_once_and_unsubscribed_after_the_delay() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    subscribed(&mut table, generation, "a", now);
    table.take_delivery();
    table.unsubscribe(&room("a"), now);
    assert_eq!(table.take_delivery(), vec![(room("a"), false)]);
    assert_eq!(table.live(), 0);
    assert!(
        table.actions(now + DELAY / 2).is_empty(),
        "not before the delay"
    );
    assert!(table.next_wake() <= now + DELAY);
    let (kind, _, rooms) = one_op(&mut table, now + DELAY);
    assert_eq!(
        (kind, rooms.clone()),
        (OpKind::Unsubscribe, vec![room("a")])
    );
    assert!(table.on_redis(&room("a")), "kept until Redis confirms");
    table.op_done(&shard(), generation, kind, rooms, done(1), now + DELAY);
    table.answer_waiters();
    assert!(!table.tracks(&room("a")), "forgotten once confirmed");
}

#[test]
fn a_rejoin_during_the_delay_keeps_the_subscription() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    subscribed(&mut table, generation, "a", now);
    table.unsubscribe(&room("a"), now);
    let (tx, mut rx) = waiter();
    table.subscribe(room("a"), tx, now + DELAY / 2);
    assert_eq!(answered(&mut rx), Some(true), "still subscribed: at once");
    assert!(
        table.actions(now + DELAY * 3).is_empty(),
        "the stale leave does nothing"
    );
    assert_eq!(table.live(), 1);
}

#[test]
fn a_failed_unsubscribe_on_a_live_connection_is_retried() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let unsubscribe_delay = Duration::ZERO;
    table.settings.unsubscribe_delay = unsubscribe_delay;
    subscribed(&mut table, generation, "a", now);
    table.unsubscribe(&room("a"), now);
    let (kind, _, rooms) = one_op(&mut table, now);
    // Redis answered nothing useful for this channel (e.g. a desync on
    // another one would drop the connection; here the answer is refused).
    table.op_done(
        &shard(),
        generation,
        kind,
        rooms,
        Ok(vec![Ack::Refused("ERR busy".into())]),
        now,
    );
    table.answer_waiters();
    // Refused on unsubscribe means "not subscribed there": forgotten.
    assert!(!table.tracks(&room("a")));

    subscribed(&mut table, generation, "b", now);
    table.unsubscribe(&room("b"), now);
    let (kind, _, rooms) = one_op(&mut table, now);
    // The batch timed out but the connection is still the current one: the
    // table drops the connection (it is out of step) ...
    table.op_done(
        &shard(),
        generation,
        kind,
        rooms,
        Err("timed out".into()),
        now,
    );
    table.answer_waiters();
    assert!(!table.is_current(&shard(), generation));
    // ... and the room, no longer on any connection, is forgotten.
    assert!(!table.tracks(&room("b")));
}

#[test]
fn a_subscribe_confirmed_after_its_timeout_is_reported_as_reconnected() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, rx) = waiter();
    table.subscribe(room("slow"), tx, now);
    let (kind, _, rooms) = one_op(&mut table, now);
    drop(rx); // the caller gave up after the subscribe timeout
    let later = now + TIMEOUT + Duration::from_secs(1);
    table.op_done(&shard(), generation, kind, rooms, done(1), later);
    table.answer_waiters();
    let reported = table.take_reconnected(later);
    assert_eq!(
        reported.map(|(rooms, _)| rooms),
        Some(vec![room_name("slow")])
    );
}

#[test]
fn a_refused_subscribe_fails_its_caller_and_stops_delivery() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, mut rx) = waiter();
    table.subscribe(room("secret"), tx, now);
    table.take_delivery();
    let (kind, _, rooms) = one_op(&mut table, now);
    let refusal = Ack::Refused("NOPERM".into());
    table.op_done(&shard(), generation, kind, rooms, Ok(vec![refusal]), now);
    table.answer_waiters();
    assert_eq!(answered(&mut rx), Some(false));
    assert_eq!(table.take_delivery(), vec![(room("secret"), false)]);
    let refusals = table.take_refusals();
    assert_eq!(refusals.len(), 1);
    assert!(!refusals[0].unheard, "the caller heard it");
    assert!(!table.tracks(&room("secret")));
}

#[test]
fn a_refused_resubscribe_after_a_reconnect_is_reported() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    subscribed(&mut table, generation, "a", now);
    subscribed(&mut table, generation, "b", now);
    table.lost(&shard(), generation, "reset", now);
    // Reconnect: both rooms are subscribed again in one batch.
    let later = now + Duration::from_secs(1);
    let actions = table.actions(later);
    let Some(Action::Connect { generation, .. }) = actions.into_iter().next() else {
        panic!("reconnects");
    };
    table.connected(&shard(), generation, true, later);
    let (kind, _, rooms) = one_op(&mut table, later);
    assert_eq!(rooms, vec![room("a"), room("b")]);
    table.op_done(
        &shard(),
        generation,
        kind,
        rooms,
        Ok(vec![Ack::Done, Ack::Refused("NOPERM".into())]),
        later,
    );
    table.answer_waiters();
    let refusals = table.take_refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].topic, room("b"));
    assert!(
        refusals[0].unheard,
        "nobody waited: the engine must hear it"
    );
    let reported = table.take_reconnected(later);
    assert_eq!(
        reported,
        Some((vec![room_name("a")], Duration::from_secs(1)))
    );
}

#[test]
fn reconnect_with_churn_reports_only_rooms_still_wanted() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    for name in ["a", "b", "c"] {
        subscribed(&mut table, generation, name, now);
    }
    table.lost(&shard(), generation, "reset", now);
    assert_eq!(table.live(), 0);
    // While down: one room leaves, one joins.
    table.unsubscribe(&room("b"), now);
    let (tx, mut joined) = waiter();
    table.subscribe(room("d"), tx, now);
    let later = now + Duration::from_millis(50);
    let Some(Action::Connect { generation, .. }) = table.actions(later).into_iter().next() else {
        panic!("reconnects");
    };
    assert!(table.actions(later).is_empty(), "one connect at a time");
    table.connected(&shard(), generation, true, later);
    let (kind, _, rooms) = one_op(&mut table, later);
    assert_eq!(rooms, vec![room("a"), room("c"), room("d")]);
    table.op_done(&shard(), generation, kind, rooms, done(3), later);
    table.answer_waiters();
    assert_eq!(answered(&mut joined), Some(true));
    let reported = table.take_reconnected(later).map(|(rooms, _)| rooms);
    assert_eq!(reported, Some(vec![room_name("a"), room_name("c")]));
    assert_eq!(table.live(), 3);
    assert!(!table.tracks(&room("b")));
}

#[test]
fn a_failed_connect_backs_off() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    subscribed(&mut table, generation, "a", now);
    table.lost(&shard(), generation, "reset", now);
    let Some(Action::Connect { generation, .. }) = table.actions(now + TIMEOUT).into_iter().next()
    else {
        panic!("reconnects");
    };
    table.connected(&shard(), generation, false, now + TIMEOUT);
    let retry_at = table.next_wake();
    assert!(retry_at > now + TIMEOUT, "waits before the next attempt");
    let next = table.actions(retry_at);
    assert!(
        next.iter()
            .any(|action| matches!(action, Action::Connect { .. })),
        "{next:?}"
    );
}

#[test]
fn redis_dropping_a_channel_resubscribes_it_and_reports_it() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    subscribed(&mut table, generation, "a", now);
    table.unsubscribed(&shard(), generation, &room("a"), now);
    assert_eq!(table.live(), 0);
    let actions = table.actions(now);
    assert!(actions.contains(&Action::Discover), "{actions:?}");
    let rooms = vec![room("a")];
    let op = Action::Op {
        shard: shard(),
        generation,
        kind: OpKind::Subscribe,
        topics: rooms.clone(),
    };
    assert!(actions.contains(&op), "{actions:?}");
    table.op_done(&shard(), generation, OpKind::Subscribe, rooms, done(1), now);
    table.answer_waiters();
    let reported = table.take_reconnected(now).map(|(rooms, _)| rooms);
    assert_eq!(reported, Some(vec![room_name("a")]));
}

#[test]
fn a_moved_room_waits_for_the_next_discovery() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, mut rx) = waiter();
    table.subscribe(room("a"), tx, now);
    let (kind, _, rooms) = one_op(&mut table, now);
    table.op_done(&shard(), generation, kind, rooms, Ok(vec![Ack::Moved]), now);
    table.answer_waiters();
    assert_eq!(answered(&mut rx), None, "still wanted, still waiting");
    // Discovery backs off (no storm while a cluster is down).
    let soon = now + Duration::from_millis(20);
    assert_eq!(table.actions(soon), vec![Action::Discover]);
    table.discovered(Some(Topology::single("server")), soon);
    let (_, _, rooms) = one_op(&mut table, soon);
    assert_eq!(rooms, vec![room("a")]);
}

#[test]
fn answers_of_an_old_connection_are_ignored() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, mut rx) = waiter();
    table.subscribe(room("a"), tx, now);
    let (kind, _, rooms) = one_op(&mut table, now);
    table.lost(&shard(), generation, "reset", now);
    table.op_done(&shard(), generation, kind, rooms, done(1), now);
    table.answer_waiters();
    assert_eq!(answered(&mut rx), None);
    assert!(!table.on_redis(&room("a")));
}

#[test]
fn a_lost_connection_is_reported_once_and_its_return_even_with_no_rooms() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    assert_eq!(table.take_medium_lost(), None);
    table.lost(&shard(), generation, "reset", now);
    assert!(
        table
            .take_medium_lost()
            .is_some_and(|reason| reason.contains("reset"))
    );
    assert_eq!(table.take_medium_lost(), None, "once per outage");
    let later = now + Duration::from_millis(300);
    let Some(Action::Connect { generation, .. }) = table.actions(later).into_iter().next() else {
        panic!("reconnects");
    };
    table.connected(&shard(), generation, false, later);
    assert_eq!(
        table.take_medium_lost(),
        None,
        "a failed reconnect is the same outage"
    );
    assert_eq!(table.take_reconnected(later), None, "not back yet");
    let retry = table.next_wake();
    let Some(Action::Connect { generation, .. }) = table.actions(retry).into_iter().next() else {
        panic!("retries");
    };
    table.connected(&shard(), generation, true, retry);
    assert_eq!(
        table.take_reconnected(retry),
        Some((Vec::new(), retry.duration_since(now)))
    );
    assert_eq!(table.take_reconnected(retry), None, "reported once");
}

fn control(name: &str) -> Topic {
    Topic::control(format!("rooms-control:sse:room:{name}"))
}

#[test]
fn control_channels_are_subscribed_like_rooms_but_never_counted() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, mut all) = waiter();
    table.subscribe(control("all"), tx, now);
    let (tx, mut inbox) = waiter();
    table.subscribe(control("node:b"), tx, now);
    let (tx, _room) = waiter();
    table.subscribe(room("all"), tx, now);
    let mut delivery = table.take_delivery();
    delivery.sort();
    assert_eq!(
        delivery,
        vec![
            (room("all"), true),
            (control("all"), true),
            (control("node:b"), true)
        ]
    );
    let (kind, _, topics) = one_op(&mut table, now);
    assert_eq!(topics, vec![room("all"), control("all"), control("node:b")]);
    // A room and a control channel of the same name are different channels.
    assert_eq!(
        topics
            .iter()
            .map(|topic| topic.channel("sse:room:"))
            .collect::<Vec<_>>(),
        [
            "sse:room:all",
            "rooms-control:sse:room:all",
            "rooms-control:sse:room:node:b"
        ]
    );
    table.op_done(&shard(), generation, kind, topics, done(3), now);
    table.answer_waiters();
    assert_eq!(answered(&mut all), Some(true));
    assert_eq!(answered(&mut inbox), Some(true));
    assert_eq!(table.live(), 1, "only the room counts");
    assert!(table.on_redis(&control("all")));
}

#[test]
fn control_channels_come_back_after_a_reconnect_and_are_not_reported() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, _all) = waiter();
    table.subscribe(control("all"), tx, now);
    let (kind, _, topics) = one_op(&mut table, now);
    table.op_done(&shard(), generation, kind, topics, done(1), now);
    subscribed(&mut table, generation, "a", now);
    table.answer_waiters();
    table.lost(&shard(), generation, "reset", now);
    assert!(table.take_medium_lost().is_some());
    let later = now + Duration::from_secs(1);
    let Some(Action::Connect { generation, .. }) = table.actions(later).into_iter().next() else {
        panic!("reconnects");
    };
    table.connected(&shard(), generation, true, later);
    let (kind, _, topics) = one_op(&mut table, later);
    assert_eq!(topics, vec![room("a"), control("all")], "both come back");
    assert_eq!(
        table.take_reconnected(later),
        None,
        "not before the control channel is back too"
    );
    table.op_done(&shard(), generation, kind, topics, done(2), later);
    table.answer_waiters();
    assert_eq!(
        table.take_reconnected(later),
        Some((vec![room_name("a")], Duration::from_secs(1))),
        "only rooms are listed"
    );
    assert_eq!(table.live(), 1);
    assert!(table.on_redis(&control("all")));
}

#[test]
fn a_control_channel_dropped_by_redis_is_resubscribed_silently() {
    let now = Instant::now();
    let (mut table, generation) = connected(now);
    let (tx, _all) = waiter();
    table.subscribe(control("all"), tx, now);
    let (kind, _, topics) = one_op(&mut table, now);
    table.op_done(&shard(), generation, kind, topics, done(1), now);
    // Its slot moved: Redis says it is no longer subscribed.
    table.unsubscribed(&shard(), generation, &control("all"), now);
    assert!(!table.on_redis(&control("all")));
    let later = now + Duration::from_millis(10);
    let (kind, _, topics) = one_op(&mut table, later);
    assert_eq!(
        (kind, topics.clone()),
        (OpKind::Subscribe, vec![control("all")])
    );
    table.op_done(&shard(), generation, kind, topics, done(1), later);
    assert!(table.on_redis(&control("all")));
    assert_eq!(table.take_reconnected(later), None, "no room to report");
    assert_eq!(table.live(), 0);
}
