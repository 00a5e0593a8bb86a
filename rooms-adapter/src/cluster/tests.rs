//! Unit tests of the control runtime's rules, with a fake engine and no medium.

use super::*;

#[test]
fn settings_are_validated_naming_the_value() {
    let ok = ClusterSettings::default();
    assert!(ok.validate().is_ok());
    assert_eq!(ok.expiry(), DEFAULT_NODE_EXPIRY);
    let too_fast = ClusterSettings {
        heartbeat: Duration::from_millis(1),
        ..ok
    };
    assert!(
        matches!(too_fast.validate(), Err(Error::Config(m)) if m.contains("heartbeat_interval"))
    );
    let short_expiry = ClusterSettings {
        expiry: Some(Duration::from_secs(1)),
        ..ok
    };
    assert!(matches!(short_expiry.validate(), Err(Error::Config(m)) if m.contains("node_expiry")));
    let no_wait = ClusterSettings {
        query_timeout: Duration::ZERO,
        ..ok
    };
    assert!(matches!(no_wait.validate(), Err(Error::Config(m)) if m.contains("query_timeout")));
}

mod runtime {
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use async_trait::async_trait;
    use tokio::sync::broadcast;

    use super::super::control::{Control, LocalView};
    use super::super::frame::{Answer, AnswerKind, ControlFrame, Heartbeat, Query, QueryKind};
    use super::super::{ClusterSettings, NodeDeparture};
    use crate::adapter::{ControlTarget, EventSink, RoomAdapter};
    use crate::engine::RoomsEvent;
    use crate::error::Error;
    use crate::ids::{NodeId, RoomName};
    use crate::wire::Envelope;

    /// A medium that records control frames, or refuses them.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(ControlTarget, Vec<u8>)>>,
        down: bool,
    }

    #[async_trait]
    impl RoomAdapter for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        async fn connect(&self, _: NodeId, _: EventSink) -> Result<(), Error> {
            Ok(())
        }
        async fn disconnect(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn subscribe(&self, _: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &RoomName) -> Result<(), Error> {
            Ok(())
        }
        async fn publish(&self, _: &RoomName, _: &Envelope) -> Result<(), Error> {
            Ok(())
        }
        async fn publish_control(
            &self,
            target: &ControlTarget,
            payload: &[u8],
        ) -> Result<(), Error> {
            if self.down {
                return Err(Error::Unavailable {
                    medium: "recorder".into(),
                    reason: "down".into(),
                    source: None,
                });
            }
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((target.clone(), payload.to_vec()));
            Ok(())
        }
    }

    /// An engine with three members in `r`, recording what it is told.
    struct Local {
        events: broadcast::Sender<RoomsEvent>,
    }

    impl LocalView for Local {
        fn member_count(&self, room: &str) -> usize {
            if room == "r" { 3 } else { 0 }
        }
        fn room_counts(&self) -> Vec<(RoomName, usize)> {
            vec![(RoomName::from("r"), 3)]
        }
        fn totals(&self) -> (u64, u64) {
            (3, 1)
        }
        fn emit(&self, event: RoomsEvent) {
            let _ = self.events.send(event);
        }
    }

    type Setup = (
        std::sync::Arc<Control>,
        std::sync::Arc<Recorder>,
        tokio::sync::mpsc::Receiver<(ControlTarget, Vec<u8>)>,
        Local,
        broadcast::Receiver<RoomsEvent>,
    );

    fn setup(down: bool) -> Setup {
        let adapter = std::sync::Arc::new(Recorder {
            down,
            ..Recorder::default()
        });
        let settings = ClusterSettings {
            query_timeout: std::time::Duration::from_millis(200),
            ..ClusterSettings::default()
        };
        let (control, outbox) = Control::new(NodeId::from("me"), settings, adapter.clone());
        let (events, lifecycle) = broadcast::channel(16);
        (control, adapter, outbox, Local { events }, lifecycle)
    }

    fn beat(node: &str) -> Vec<u8> {
        ControlFrame::Heartbeat(Heartbeat {
            node: node.into(),
            interval_ms: 100,
            expiry_ms: 300,
            connections: 1,
            rooms: 1,
        })
        .encode()
    }

    #[tokio::test]
    async fn a_new_node_is_reported_once_and_welcomed() {
        let (control, _, mut outbox, local, mut lifecycle) = setup(false);
        control.receive(&beat("b"), &local);
        control.receive(&beat("b"), &local);
        control.receive(&beat("me"), &local);
        assert_eq!(
            lifecycle.try_recv().ok(),
            Some(RoomsEvent::NodeJoined { node: "b".into() })
        );
        assert!(lifecycle.try_recv().is_err(), "one event per join");
        let (target, frame) = outbox.try_recv().expect("a welcome heartbeat");
        assert_eq!(target, ControlTarget::Node("b".into()));
        assert!(matches!(
            ControlFrame::decode(&frame),
            Ok(ControlFrame::Heartbeat(Heartbeat { ref node, connections: 3, .. })) if node == "me"
        ));
        assert!(outbox.try_recv().is_err());
        let nodes = control.live_nodes(&local);
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].is_self && nodes[1].id == "b");
    }

    #[tokio::test]
    async fn queries_are_answered_into_the_askers_inbox() {
        let (control, _, mut outbox, local, _lifecycle) = setup(false);
        for (id, query) in [
            (4, QueryKind::MemberCount { room: "r".into() }),
            (5, QueryKind::Rooms),
        ] {
            let frame = ControlFrame::Query(Query {
                node: "asker".into(),
                id,
                query,
            });
            control.receive(&frame.encode(), &local);
        }
        let answers: Vec<_> = std::iter::from_fn(|| outbox.try_recv().ok()).collect();
        assert_eq!(answers.len(), 2);
        for (target, frame) in &answers {
            assert_eq!(*target, ControlTarget::Node("asker".into()));
            let Ok(ControlFrame::Answer(Answer { node, .. })) = ControlFrame::decode(frame) else {
                panic!("not an answer");
            };
            assert_eq!(node, "me");
        }
        assert!(matches!(
            ControlFrame::decode(&answers[0].1),
            Ok(ControlFrame::Answer(Answer {
                id: 4,
                answer: AnswerKind::MemberCount { count: 3 },
                ..
            }))
        ));
        assert_eq!(control.counters.answered.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn junk_is_counted_and_leave_forgets() {
        let (control, _, _outbox, local, mut lifecycle) = setup(false);
        control.receive(b"{}", &local);
        control.receive(br#"{"v":3,"type":"leave","node":"b"}"#, &local);
        assert_eq!(control.counters.rejected.load(Ordering::Relaxed), 2);
        control.receive(&beat("b"), &local);
        let leave = ControlFrame::Leave { node: "b".into() }.encode();
        control.receive(&leave, &local);
        control.receive(&leave, &local);
        let events: Vec<_> = std::iter::from_fn(|| lifecycle.try_recv().ok()).collect();
        assert_eq!(
            events,
            vec![
                RoomsEvent::NodeJoined { node: "b".into() },
                RoomsEvent::NodeLeft {
                    node: "b".into(),
                    departure: NodeDeparture::Left
                },
            ]
        );
    }

    #[tokio::test]
    async fn alone_a_query_answers_at_once_without_the_medium() {
        let (control, adapter, _outbox, _local, _lifecycle) = setup(false);
        let gathered = control
            .ask(QueryKind::Rooms, AnswerKind::MemberCount { count: 2 })
            .await;
        let answer = gathered.into_answer(());
        assert_eq!((answer.answered, answer.known), (1, 1));
        assert!(answer.is_complete());
        assert!(
            adapter
                .sent
                .lock()
                .map(|sent| sent.is_empty())
                .unwrap_or(false)
        );
    }

    #[tokio::test]
    async fn answers_complete_a_query_and_silence_makes_it_incomplete() {
        let (control, adapter, _outbox, local, _lifecycle) = setup(false);
        control.receive(&beat("b"), &local);
        control.receive(&beat("c"), &local);
        let asking = tokio::spawn({
            let control = control.clone();
            async move {
                control
                    .ask(
                        QueryKind::MemberCount { room: "r".into() },
                        AnswerKind::MemberCount { count: 3 },
                    )
                    .await
                    .into_answer(())
            }
        });
        // Wait for the query on the medium, then answer for b only.
        let id = loop {
            let sent = adapter
                .sent
                .lock()
                .map(|sent| sent.clone())
                .unwrap_or_default();
            if let Some(Ok(ControlFrame::Query(query))) =
                sent.first().map(|(_, frame)| ControlFrame::decode(frame))
            {
                break query.id;
            }
            tokio::task::yield_now().await;
        };
        let answer = ControlFrame::Answer(Answer {
            node: "b".into(),
            id,
            answer: AnswerKind::MemberCount { count: 2 },
        });
        control.receive(&answer.encode(), &local);
        let answer = asking.await.expect("the query task");
        assert_eq!((answer.answered, answer.known), (2, 3));
        assert_eq!(answer.missing, vec![NodeId::from("c")]);
        assert!(answer.elapsed >= std::time::Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_query_on_a_dead_medium_returns_at_once() {
        let (control, _, _outbox, local, _lifecycle) = setup(true);
        control.receive(&beat("b"), &local);
        let answer = control
            .ask(QueryKind::Rooms, AnswerKind::MemberCount { count: 0 })
            .await
            .into_answer(());
        assert_eq!(answer.missing, vec![NodeId::from("b")]);
        assert!(answer.elapsed < std::time::Duration::from_millis(200));
        assert_eq!(control.counters.unsent.load(Ordering::Relaxed), 1);
    }
}
