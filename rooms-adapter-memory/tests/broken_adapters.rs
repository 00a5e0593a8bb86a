//! A suite that cannot fail is worthless: each deliberately broken adapter here
//! violates one rule of the contract, and the conformance case for that rule
//! must catch it, while the same case passes on the real memory bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use rooms_adapter::adapter::{
    AdapterCapabilities, AdapterEvent, AdapterStats, ControlTarget, EventSink, RoomAdapter,
};
use rooms_adapter::history::{HistoryPage, HistoryPolicy, Position};
use rooms_adapter::{Envelope, Error, NodeId, RoomName};
use rooms_adapter_memory::{MemoryBus, MemoryBusAdapter};
use rooms_conformance::{Capabilities, CaseReport, Harness, cases, run_case};
use rooms_testkit::memory::MemoryHarness;
use rooms_testkit::nodes::Nodes;

const IGNORES_UNSUBSCRIBE: u8 = 0;
const DROPS_EXCEPT: u8 = 1;
const PUBLISHES_TWICE: u8 = 2;
const LOSES_EVERY_100TH: u8 = 3;
const KEEPS_DELIVERING_AFTER_DISCONNECT: u8 = 4;
const HIDES_MEDIUM_LOSS: u8 = 5;
const DROPS_INBOX_FRAMES: u8 = 6;
const LOSES_A_HISTORY_ENTRY: u8 = 7;
const CLAIMS_EVERY_PAGE_IS_THE_LAST: u8 = 8;
const FORGETS_THE_ROOMS_IT_RESUBSCRIBED: u8 = 9;

/// The memory bus adapter with one fault.
struct Broken<const FAULT: u8> {
    inner: MemoryBusAdapter,
    published: AtomicU64,
}

#[async_trait]
impl<const FAULT: u8> RoomAdapter for Broken<FAULT> {
    fn name(&self) -> &str {
        "broken"
    }

    async fn connect(&self, node: NodeId, sink: EventSink) -> Result<(), Error> {
        if FAULT == HIDES_MEDIUM_LOSS || FAULT == FORGETS_THE_ROOMS_IT_RESUBSCRIBED {
            // Passes every event on except `MediumLost`, or reports
            // `Reconnected` without its rooms.
            let (inner_sink, mut events) = EventSink::bounded(65_536);
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    match event {
                        AdapterEvent::MediumLost { .. } if FAULT == HIDES_MEDIUM_LOSS => {}
                        AdapterEvent::Reconnected { outage, .. }
                            if FAULT == FORGETS_THE_ROOMS_IT_RESUBSCRIBED =>
                        {
                            sink.send_lifecycle(AdapterEvent::Reconnected {
                                rooms: Vec::new(),
                                outage,
                            })
                            .await;
                        }
                        AdapterEvent::Message { .. } => {
                            sink.send(event);
                        }
                        other => {
                            sink.send_lifecycle(other).await;
                        }
                    }
                }
            });
            return self.inner.connect(node, inner_sink).await;
        }
        self.inner.connect(node, sink).await
    }

    async fn disconnect(&self) -> Result<(), Error> {
        if FAULT == KEEPS_DELIVERING_AFTER_DISCONNECT {
            // "Disconnects" without stopping delivery.
            return Ok(());
        }
        self.inner.disconnect().await
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), Error> {
        self.inner.subscribe(room).await
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), Error> {
        if FAULT == IGNORES_UNSUBSCRIBE {
            return Ok(());
        }
        self.inner.unsubscribe(room).await
    }

    async fn publish(&self, room: &RoomName, envelope: &Envelope) -> Result<(), Error> {
        let n = self.published.fetch_add(1, Ordering::Relaxed) + 1;
        match FAULT {
            DROPS_EXCEPT => {
                let stripped = envelope.clone().with_except(None);
                self.inner.publish(room, &stripped).await
            }
            PUBLISHES_TWICE => {
                // Same content, but a different source node: not an echo.
                let copy = Envelope::new(NodeId::from("impostor"), envelope.message().clone());
                self.inner.publish(room, envelope).await?;
                self.inner.publish(room, &copy).await
            }
            LOSES_EVERY_100TH if n.is_multiple_of(100) => Ok(()),
            _ => self.inner.publish(room, envelope).await,
        }
    }

    fn stats(&self) -> AdapterStats {
        self.inner.stats()
    }

    fn capabilities(&self) -> AdapterCapabilities {
        self.inner.capabilities()
    }

    async fn connect_publisher(&self, node: NodeId) -> Result<(), Error> {
        self.inner.connect_publisher(node).await
    }

    async fn publish_control(&self, target: &ControlTarget, payload: &[u8]) -> Result<(), Error> {
        if FAULT == DROPS_INBOX_FRAMES && matches!(target, ControlTarget::Node(_)) {
            // Frames to one node (answers) are lost; broadcasts still flow.
            return Ok(());
        }
        self.inner.publish_control(target, payload).await
    }

    async fn publish_with_history(
        &self,
        room: &RoomName,
        envelope: &Envelope,
        policy: &HistoryPolicy,
    ) -> Result<Position, Error> {
        self.inner
            .publish_with_history(room, envelope, policy)
            .await
    }

    async fn read_history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let mut page = self.inner.read_history(room, after, limit).await?;
        if FAULT == LOSES_A_HISTORY_ENTRY && !page.entries.is_empty() {
            // The oldest entry asked for goes missing.
            page.entries.remove(0);
        }
        if FAULT == CLAIMS_EVERY_PAGE_IS_THE_LAST {
            // A bounded page that does not say more follows.
            page.next_after = None;
        }
        Ok(page)
    }
}

struct BrokenHarness<const FAULT: u8>(MemoryHarness, Nodes<Arc<Broken<FAULT>>>);

#[async_trait]
impl<const FAULT: u8> Harness for BrokenHarness<FAULT> {
    async fn setup() -> Result<Self, Error> {
        Ok(Self(MemoryHarness::new(MemoryBus::new()), Nodes::default()))
    }

    async fn new_adapter(&self) -> Result<Arc<dyn RoomAdapter>, Error> {
        let node = Arc::new(Broken::<FAULT> {
            inner: self.0.bus().adapter(),
            published: AtomicU64::new(0),
        });
        let adapter: Arc<dyn RoomAdapter> = node.clone();
        self.1.add(&adapter, node);
        Ok(adapter)
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn cut(&self) -> Result<(), Error> {
        self.0.cut().await
    }

    async fn restore(&self) -> Result<(), Error> {
        self.0.restore().await
    }

    async fn cut_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.1.find(node)?.inner.cut_off();
        Ok(())
    }

    async fn restore_node(&self, node: &Arc<dyn RoomAdapter>) -> Result<(), Error> {
        self.1.find(node)?.inner.restore().await;
        Ok(())
    }
}

fn assert_caught(report: &CaseReport) {
    match &report.result {
        Err(error) => eprintln!("caught as expected by {}: {error}", report.name),
        Ok(outcome) => panic!(
            "case {} did not catch the broken adapter (outcome {outcome:?})",
            report.name
        ),
    }
}

macro_rules! caught {
    ($test:ident, $fault:expr, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let control =
                run_case::<MemoryHarness, _, _>(stringify!($case), cases::$case::<MemoryHarness>)
                    .await;
            control.assert_passed();
            let report = run_case::<BrokenHarness<{ $fault }>, _, _>(
                stringify!($case),
                cases::$case::<BrokenHarness<{ $fault }>>,
            )
            .await;
            assert_caught(&report);
        }
    };
}

caught!(
    ignoring_unsubscribe_is_caught,
    IGNORES_UNSUBSCRIBE,
    unsubscribe_stops_delivery
);
caught!(
    ignoring_unsubscribe_is_caught_at_the_adapter,
    IGNORES_UNSUBSCRIBE,
    subscribe_and_unsubscribe_are_idempotent
);
caught!(
    dropping_except_is_caught,
    DROPS_EXCEPT,
    except_is_honoured_locally_and_remotely
);
caught!(publishing_twice_is_caught, PUBLISHES_TWICE, bidirectional);
caught!(
    publishing_twice_breaks_order,
    PUBLISHES_TWICE,
    per_publisher_order_is_kept
);
caught!(
    losing_messages_is_caught,
    LOSES_EVERY_100TH,
    concurrent_publishers_lose_nothing
);
caught!(
    disconnect_that_keeps_delivering_is_caught,
    KEEPS_DELIVERING_AFTER_DISCONNECT,
    disconnect_stops_delivery_and_is_idempotent
);
caught!(
    hiding_a_medium_loss_is_caught,
    HIDES_MEDIUM_LOSS,
    medium_loss_is_reported_and_status_follows
);
caught!(
    an_emitter_that_drops_except_is_caught,
    DROPS_EXCEPT,
    emitter_reaches_every_node
);
caught!(
    losing_answers_is_caught,
    DROPS_INBOX_FRAMES,
    cluster_queries_sum_every_node
);
caught!(
    losing_a_history_entry_is_caught,
    LOSES_A_HISTORY_ENTRY,
    history_replays_after_a_position
);
caught!(
    a_page_that_hides_the_next_is_caught,
    CLAIMS_EVERY_PAGE_IS_THE_LAST,
    history_reads_page_by_page
);
caught!(
    forgetting_resubscribed_rooms_is_caught,
    FORGETS_THE_ROOMS_IT_RESUBSCRIBED,
    history_recovers_after_a_node_outage
);
