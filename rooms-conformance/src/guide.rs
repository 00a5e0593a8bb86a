//! # Write your own adapter
//!
//! From an empty crate to a green `cargo test` with the whole suite, using
//! only the published API of `rooms-adapter` and `rooms-conformance`. The
//! repository's `examples/adapter-template` is the result of these steps (an
//! in-process bus on `tokio::sync::broadcast`, about 340 lines): copy it and
//! swap the bus for your medium.
//!
//! ## 1. Dependencies
//!
//! ```toml
//! [dependencies]
//! rooms-adapter = "0.1"
//! # What your medium needs; the template uses tokio's broadcast and watch
//! # channels, a spawned reader task and `select!`.
//! tokio = { version = "1.47", features = ["sync", "rt", "macros"] }
//!
//! [dev-dependencies]
//! rooms-conformance = "0.1"
//! ```
//!
//! `rooms-adapter` re-exports what implementing the trait takes
//! ([`rooms_adapter::async_trait`], [`rooms_adapter::bytes`]);
//! `rooms-conformance` re-exports it again for the test crate
//! ([`prelude`](crate::prelude)) and runs the cases on its own tokio runtime:
//! the tests need no tokio, `async-trait` or `bytes` of their own.
//!
//! ## 2. `impl RoomAdapter`
//!
//! One value per node. The engine calls [`connect`](rooms_adapter::RoomAdapter::connect)
//! once with the node's id and an [`EventSink`](rooms_adapter::EventSink);
//! from then on the adapter hands every inbound envelope of a subscribed room
//! to the sink. Read the trait's
//! [`# Contract`](rooms_adapter::RoomAdapter#contract) first: every rule
//! there is checked by a case below. The skeleton:
//!
//! ```no_run
//! use std::collections::HashSet;
//! use std::sync::Mutex;
//!
//! use rooms_adapter::{
//!     AdapterCapabilities, AdapterCounters, AdapterStats, Envelope, Error, EventSink, NodeId,
//!     RoomAdapter, RoomName, async_trait,
//! };
//!
//! #[derive(Default)]
//! pub struct MyAdapter {
//!     rooms: Mutex<HashSet<RoomName>>,
//!     sink: Mutex<Option<EventSink>>,
//!     counters: AdapterCounters,
//! }
//!
//! #[async_trait]
//! impl RoomAdapter for MyAdapter {
//!     fn name(&self) -> &str {
//!         "my-medium"
//!     }
//!
//!     /// Optional capabilities: build from NONE with the const `with_*` methods.
//!     fn capabilities(&self) -> AdapterCapabilities {
//!         AdapterCapabilities::NONE.with_emitter()
//!     }
//!
//!     async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
//!         // Take every baseline of the medium *here*, then spawn the reader:
//!         // for each payload of a subscribed room, `wire::decode` it, then
//!         // `counters.record_received()` and `sink.send(AdapterEvent::Message
//!         // { .. })`, or `counters.record_decode_error(..)`.
//!         let _ = node;
//!         *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
//!         Ok(())
//!     }
//!
//!     async fn disconnect(&self) -> Result<(), Error> {
//!         // Abort the reader *and await it*; idempotent.
//!         self.rooms.lock().unwrap_or_else(|e| e.into_inner()).clear();
//!         self.sink.lock().unwrap_or_else(|e| e.into_inner()).take();
//!         Ok(())
//!     }
//!
//!     async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
//!         // Return once the medium confirmed it.
//!         self.rooms.lock().unwrap_or_else(|e| e.into_inner()).insert(room.clone());
//!         Ok(())
//!     }
//!
//!     async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
//!         self.rooms.lock().unwrap_or_else(|e| e.into_inner()).remove(room);
//!         Ok(())
//!     }
//!
//!     async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
//!         // `envelope.encode(Codec::Json)?`, hand it to the medium; while the
//!         // medium is down fail fast with Error::Unavailable (retryable).
//!         let _ = (room, envelope);
//!         self.counters.record_published();
//!         Ok(())
//!     }
//!
//!     async fn connect_publisher(&self, _node: NodeId) -> Result<(), Error> {
//!         Ok(()) // publish-only, for an Emitter (the `emitter` capability)
//!     }
//!
//!     fn stats(&self) -> AdapterStats {
//!         let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner()).len();
//!         // With the sink, so `dropped_inbound` is what overflowed it.
//!         self.counters
//!             .snapshot(rooms, self.sink.lock().unwrap_or_else(|e| e.into_inner()).as_ref())
//!     }
//! }
//! ```
//!
//! ## 3. A [`Harness`](crate::Harness)
//!
//! The suite makes a fresh medium per case ([`setup`](crate::Harness::setup)),
//! one adapter per node on it ([`new_adapter`](crate::Harness::new_adapter)),
//! and, if the harness says so in [`capabilities`](crate::Harness::capabilities),
//! cuts and restores the medium for every node at once
//! ([`cut`](crate::Harness::cut), [`restore`](crate::Harness::restore):
//! capability `fault_injection`), for one node while the others keep it
//! ([`cut_node`](crate::Harness::cut_node),
//! [`restore_node`](crate::Harness::restore_node): capability
//! `node_fault_injection`, e.g. a proxy per node, or an ACL user per node
//! that is disabled and whose connections are killed) and publishes raw
//! bytes on a room's channel ([`publish_raw`](crate::Harness::publish_raw):
//! capability `raw_publish`).
//! Put it in `tests/harness/mod.rs`:
//!
//! ```no_run
//! # mod my_adapter {
//! #     use rooms_adapter::{Envelope, Error, EventSink, NodeId, RoomAdapter, RoomName};
//! #     #[derive(Clone, Default)] pub struct Bus;
//! #     impl Bus {
//! #         pub fn adapter(&self) -> A { A }
//! #         pub fn cut(&self) {}
//! #         pub fn restore(&self) {}
//! #         pub fn publish_raw(&self, _: &RoomName, _: &[u8]) -> Result<(), Error> { Ok(()) }
//! #     }
//! #     pub struct A;
//! #     #[rooms_adapter::async_trait]
//! #     impl RoomAdapter for A {
//! #         fn name(&self) -> &str { "a" }
//! #         async fn connect(&self, _: NodeId, _: EventSink) -> Result<(), Error> { Ok(()) }
//! #         async fn disconnect(&self) -> Result<(), Error> { Ok(()) }
//! #         async fn subscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
//! #         async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> { Ok(()) }
//! #         async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> { Ok(()) }
//! #     }
//! # }
//! use std::sync::Arc;
//!
//! use my_adapter::Bus;
//! use rooms_conformance::prelude::*;
//!
//! pub struct BusHarness {
//!     bus: Bus,
//! }
//!
//! #[async_trait]
//! impl Harness for BusHarness {
//!     async fn setup() -> Result<Self, Error> {
//!         Ok(Self { bus: Bus::default() })
//!     }
//!
//!     async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
//!         Ok(Arc::new(self.bus.adapter()))
//!     }
//!
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::NONE.with_fault_injection().with_raw_publish()
//!     }
//!
//!     async fn cut(&self) -> Result<(), Error> {
//!         self.bus.cut();
//!         Ok(())
//!     }
//!
//!     async fn restore(&self) -> Result<(), Error> {
//!         self.bus.restore();
//!         Ok(())
//!     }
//!
//!     async fn publish_raw(&self, room: &RoomName, payload: &[u8]) -> Result<(), Error> {
//!         self.bus.publish_raw(room, payload)
//!     }
//! }
//!
//! // tests/conformance.rs is then `mod harness;` and this:
//! rooms_conformance::conformance_suite!(
//!     BusHarness,
//!     capabilities = [fault_injection, raw_publish],
//! );
//! # fn main() {}
//! ```
//!
//! A medium outside the process (a server) starts a throwaway one in
//! `setup` (on a free port: cases run in parallel) and stops it in
//! [`teardown`](crate::Harness::teardown); `cut` kills it and `restore`
//! starts it again on the same port.
//!
//! ## 4. `tests/conformance.rs` and `cargo test`
//!
//! ```ignore
//! mod harness;
//!
//! rooms_conformance::conformance_suite!(
//!     harness::BusHarness,
//!     capabilities = [fault_injection, raw_publish, emitter, control],
//! );
//! ```
//!
//! List every optional capability the harness and the adapter offer:
//! `fault_injection`, `raw_publish` and `node_fault_injection` from the harness's
//! [`Capabilities`](crate::Capabilities), `emitter`, `control` and `history`
//! from the adapter's [`AdapterCapabilities`](rooms_adapter::AdapterCapabilities).
//! The macro makes one `#[test]` per case; a case that needs a capability
//! not listed is `#[ignore]`d with the reason, and
//! `declared_capabilities_match_the_harness` fails if the list and the
//! harness disagree. The template's run:
//!
//! ```text
//! test full_inbound_queue_drops_and_counts ... ok
//! test golden_vector_messages_round_trip ... ok
//! test history_gap_when_it_cannot_cover ... ignored, needs capability history
//! test history_reads_page_by_page ... ignored, needs capability history
//! test history_recovers_after_a_node_outage ... ignored, needs capability node_fault_injection
//! test history_replays_after_a_position ... ignored, needs capability history
//! test history_switch_has_no_gap_or_duplicate ... ignored, needs capability history
//! ...
//! test result: ok. 32 passed; 0 failed; 5 ignored; 0 measured; 0 filtered out
//! ```
//!
//! - `ROOMS_CONFORMANCE_NO_SKIP=1 cargo test` fails while any case is
//!   ignored: set it in CI once the adapter offers everything.
//! - `cargo test -- --include-ignored` runs the ignored cases anyway; they
//!   report themselves skipped (and fail with `ROOMS_CONFORMANCE_NO_SKIP=1`).
//! - `cargo test history` runs the cases whose name contains `history`;
//!   `-- --nocapture` shows the suite's `SKIPPED` lines and the summary.
//!
//! ## The cases
//!
//! Every case runs on a fresh medium, within [`CASE_DEADLINE`](crate::CASE_DEADLINE).
//! "Arrives" means within [`DELIVERY_TIMEOUT`](crate::DELIVERY_TIMEOUT)
//! (15 s); "nothing else" means nothing but a sentinel sent afterwards
//! arrives, and nothing for [`QUIET_PERIOD`](crate::QUIET_PERIOD) (150 ms)
//! after it. Nodes are engines ([`Rooms`](rooms_adapter::Rooms)) on adapters
//! of the harness; "raw adapter" means the case drives one adapter itself.
//! The same list, with the capabilities as data, is [`CASES`](crate::CASES).
//!
//! | Case | Exercises | Passes when | Needs |
//! |---|---|---|---|
//! | `delivers_to_subscribed_nodes_only` | 3 nodes; a member of `r1` on b, of `other` on c; a publishes to `r1` | b's member gets it; c's member gets nothing else | — |
//! | `unsubscribe_stops_delivery` | the last member of `r` leaves (and joins `s`) | the engine drops `r`, `stats().subscriptions == 1` (within 15 s), nothing of `r` arrives, and the node's `remote_received` grows by exactly 1 (the sentinel): the adapter hands over nothing of `r` | — |
//! | `rooms_are_independent` | two rooms on one node | each member gets its room's message and nothing else | — |
//! | `bidirectional` | both nodes publish to one room | each member gets each message once | — |
//! | `many_nodes_each_get_one_copy` | 4 nodes, one member each | every member gets exactly one copy | — |
//! | `echo_is_suppressed` | the medium echoes a's own envelope | a's member gets it once; a's `stats().deliveries == 1` | — |
//! | `except_is_honoured_locally_and_remotely` | `except` naming a connection on the publishing node, then on the other | the publisher's report says 1 local delivery; each excluded connection gets only the other message and the sentinel | — |
//! | `local_only_never_crosses` | a `local_only` broadcast | report `delivered 1, published 0`; the adapter's `published` unchanged; the other node gets nothing else | — |
//! | `metadata_reaches_remote_filter` | metadata crosses into the other node's delivery filter | the matching member gets it, `filtered == 1`, the other gets nothing else | — |
//! | `golden_vector_messages_round_trip` | every TypeScript golden vector (data types, unicode, escapes, id/retry, metadata, odd rooms) | message and metadata arrive equal | — |
//! | `per_publisher_order_is_kept` | 1,000 messages from one publisher | all arrive, in order | — |
//! | `concurrent_publishers_lose_nothing` | 3 nodes × 4 tasks × 250 messages to one room | all 3,000 arrive, each once, then nothing else | — |
//! | `subscribe_and_unsubscribe_are_idempotent` | raw adapter: subscribe twice, unsubscribe twice and a room never subscribed, disconnect twice | `subscriptions == 1` after two subscribes and one `Message` per publish; `subscriptions == 0` (within 15 s) and no `Message` after unsubscribing; every call `Ok` | — |
//! | `join_leave_races_settle` | 40 connections join and leave one room concurrently | 20 members, the engine subscribed to exactly that room, the members get a message; once all left, no subscription anywhere and `subscriptions == 0` | — |
//! | `disconnect_stops_delivery_and_is_idempotent` | connection disconnect and node shutdown (twice each); raw adapter `disconnect` twice | receivers end, joins fail `Closed`; after the adapter's `disconnect` returns nothing reaches its sink (150 ms) | — |
//! | `ten_thousand_rooms` | one connection in 10,000 rooms | `subscriptions == 10_000`; a broadcast to every room brings 10,000 messages | — |
//! | `one_mib_payload` | a 1 MiB message | arrives intact | — |
//! | `odd_room_names` | `""`, unicode and emoji, spaces, `*`, `?[]{}`, `:`, `\n`, `\t`, 1,000 characters | each member gets its room's message and nothing else | — |
//! | `malformed_payloads_are_skipped_and_counted` | 7 bad payloads (garbage, `v: 2`, truncated MessagePack, no `m`, `m` not an object, empty, over 4 MiB) between two good ones | both good ones arrive, nothing else; `decode_errors_total() == 7` (within 15 s) | `raw_publish` |
//! | `reconnect_resubscribes_and_emits_reconnected` | cut and restore with nothing awaited in between | `Reconnected` (within 15 s) lists both rooms; publishing works again (retried up to 15 s) and arrives; `reconnects >= 1` | `fault_injection` |
//! | `medium_loss_is_reported_and_status_follows` | cut, then restore | the first lifecycle event after the cut is `MediumLost`; `medium_status()` is down; `Reconnected` lists the room; the status is up again | `fault_injection` |
//! | `emitter_reaches_every_node` | an [`Emitter`](rooms_adapter::emitter::Emitter) on `connect_publisher` | members on both nodes get it; `except` honoured; its metadata reaches the remote filter | `emitter` |
//! | `nodes_see_each_other_and_leave` | 3 nodes heartbeating every 100 ms | each lists 3 nodes (itself first), `NodeJoined`, connection and room counts; after one shuts down, `NodeLeft { Left }` and 2 nodes | `control` |
//! | `cluster_queries_sum_every_node` | members of `r` on two nodes, odd and empty room names | `cluster_member_count` is 5 and complete from either node; odd room 1, unknown room 0; `cluster_rooms` exact | `control` |
//! | `silent_node_makes_answers_incomplete_then_expires` | a raw adapter sends one heartbeat and never answers; then 3 junk control frames | answers are incomplete naming it, after the query timeout (under 5 s more); `control_rejected` grows by 3; `NodeLeft { Expired }`; answers complete again | `control` |
//! | `cut_off_nodes_expire_and_return` | cut while two nodes know each other | a query is incomplete (within timeout + 5 s), the peer expires; after restore both list each other and answers are complete | `fault_injection`, `control` |
//! | `history_replays_after_a_position` | 5 messages, resume after the 2nd; resume from the latest | ids are increasing positions of one epoch; `Replayed { 3 }`, 3–5 in order with their ids, then live; `Replayed { 0 }` then live | `history` |
//! | `history_switch_has_no_gap_or_duplicate` | resume from the 10th of 400 messages published meanwhile | messages 10 to 399 arrive exactly once, in order | `history` |
//! | `history_gap_when_it_cannot_cover` | history of 3; resume from a trimmed id, an unknown id, an application id | `Gap { Trimmed }` / `Gap { UnknownId }` and one `event: gap`, then live; the application id resumes with `Replayed { 1 }` | `history` |
//! | `history_reads_page_by_page` | 522 messages (more than 2 × [`READ_PAGE`](rooms_adapter::history::READ_PAGE)); raw adapter reads of 0 and of 100 entries; resumes after the first | a read of 0 entries gives first 1, latest 522 and a next page; pages of at most 100 whose `next_after` is their last offset hold 1..=522 once, in order, in 6 pages; `Replayed { 521 }` in order; into a queue of 100, `Replayed { 100 }`, 2..=101 in order | `history` |
//! | `history_recovers_after_a_node_outage` | [`cut_node`](crate::Harness::cut_node) b while a publishes 286 messages (more than a page), then `restore_node` while a publishes 200 more | b's member gets nothing while cut; b's `Reconnected` lists the room as recovered, and when it is seen the 286 are queued already, in order; the 200 follow in order; nothing twice, nothing in another room | `node_fault_injection`, `history` |
//! | `publish_fails_fast_while_down` | broadcast while cut | fails with a retryable error in under 5 s; the local member still gets it | `fault_injection` |
//! | `full_inbound_queue_drops_and_counts` | raw adapter on a sink of 8; 100 messages | within 15 s `received >= 100` and `dropped_inbound >= 92`; at most 8 queued and `queued + dropped_inbound + medium_dropped >= 100`; a message after draining arrives | — |
//! | `message_ids_are_delivered_once` | one message with an id to two rooms of one connection | delivered once; `duplicates == 1` | — |
//! | `dropped_receiver_leaves_rooms` | a client's receiver is dropped | its rooms are empty and unsubscribed; `subscriptions == 0` | — |
//! | `slow_connection_is_disconnected` | a connection with a queue of 4 stops reading; 20 messages | the fast member gets all 20; `lagging_disconnects == 1`; one member left | — |
//!
//! ## The contract, answered
//!
//! The rules and the answers to the questions they leave open are in the
//! trait's [`# Contract`](rooms_adapter::RoomAdapter#contract); in short:
//!
//! - `subscribe` before `connect`: the engine never does it; refuse with
//!   `Error::Closed` or remember the room, as you like.
//! - A second `connect`: answer a non-retryable `Error::Config`; never
//!   deliver into two sinks.
//! - Decode errors of rooms not subscribed: not counted (not decoded).
//! - `Reconnected` lists every room wanted when it is sent, whoever
//!   re-subscribed it.
//! - Frames the medium lost: [`AdapterCounters::record_medium_dropped`](rooms_adapter::AdapterCounters::record_medium_dropped)
//!   (`AdapterStats::medium_dropped`), apart from `dropped_inbound`.
//! - `received` counts envelopes the sink then dropped.
//! - Raw publish while cut: no rule; the suite never does it.
//!
//! ## Pitfalls
//!
//! - **No `Reconnected` after a quick cut and restore.** The cases cut and
//!   restore with nothing awaited in between. A reader task that reads its
//!   baseline (a receiver of the medium, an outage counter) when it first
//!   runs starts after the restore and sees nothing. Take it in `connect`
//!   and move it into the task. Send `MediumLost` once per outage, then
//!   `Reconnected`, both with
//!   [`push_lifecycle`](rooms_adapter::EventSink::push_lifecycle) /
//!   [`send_lifecycle`](rooms_adapter::EventSink::send_lifecycle) (never
//!   dropped).
//! - **Deliveries after `disconnect`.** `JoinHandle::abort` only asks; await
//!   the handle (take it out of any `std` mutex first) before returning.
//! - **`dropped_inbound` stays 0.** Send messages and control frames with
//!   [`EventSink::send`](rooms_adapter::EventSink::send) (never waits, drops
//!   and counts when full) and build `stats()` with
//!   [`AdapterCounters::snapshot`](rooms_adapter::AdapterCounters::snapshot)
//!   *given the sink*; keep the sink after `connect` for that.
//! - **`subscriptions` never returns to 0.** It is the number of rooms
//!   subscribed now: unsubscribe and disconnect remove rooms.
//! - **A message after `unsubscribe`.** Check the subscription and hand the
//!   event over under the same lock `unsubscribe` takes, or filter in the
//!   medium before `unsubscribe` returns.
//! - **A publish while down hangs.** Fail fast (the case allows 5 s) with a
//!   retryable error (`Error::Unavailable`, `Error::Timeout`); do not wait
//!   for the medium to come back.
//! - **Messages lost under load.** A bounded medium buffer that overflows
//!   (a lagging `broadcast::Receiver`, a slow consumer) loses messages the
//!   ordering and concurrency cases count: size it for the suite's bursts
//!   (10,000 messages to one node) and count what it loses with
//!   `record_medium_dropped`.
//! - **Control frames in raw-adapter cases.** With `control`, other nodes'
//!   heartbeats reach every connected adapter's sink and share its queue;
//!   they are part of the overflow in `full_inbound_queue_drops_and_counts`.
//! - **Declaring capabilities.** `capabilities = [...]` must match the
//!   harness and the adapter exactly, or `declared_capabilities_match_the_harness`
//!   fails and tells you the list to write.
//! - **Shared media.** Cases run in parallel, each with its own harness: two
//!   harnesses must never share a medium (ports, channel prefixes, files).
