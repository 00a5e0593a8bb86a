//! Tracing spans: a test binary of its own, because tracing caches each
//! callsite's interest process-wide, and tests running at the same time
//! without a subscriber would race that cache.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex, PoisonError};

use common::traffic;
use tracing_subscriber::layer::SubscriberExt as _;

/// A layer that records every span: its id, name and fields (given at
/// creation or recorded later).
#[derive(Debug, Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<LoggedSpan>>>);

/// A span's id, name and `(field, value)` pairs.
type LoggedSpan = (u64, String, Vec<(String, String)>);

#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((
            id.into_u64(),
            attrs.metadata().name().to_owned(),
            fields.0,
        ));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, known)) = log
            .iter_mut()
            .rev()
            .find(|(span, ..)| *span == id.into_u64())
        {
            known.extend(fields.0);
        }
    }
}

impl SpanLog {
    fn find(&self, name: &str) -> Option<Vec<(String, String)>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, span, _)| span == name)
            .map(|(_, _, fields)| fields.clone())
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

#[tokio::test(flavor = "current_thread")]
async fn broadcast_join_and_delivery_produce_spans_with_their_fields() {
    // Below debug, the per-connection and per-message spans are not built.
    {
        let log = SpanLog::default();
        let subscriber = tracing_subscriber::registry()
            .with(log.clone())
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        let _default = tracing::subscriber::set_default(subscriber);
        let (a, b, _member) = traffic(1).await;
        for name in [
            "rooms.connect",
            "rooms.join",
            "rooms.broadcast",
            "rooms.publish",
            "rooms.deliver",
        ] {
            assert_eq!(log.find(name), None, "{name}");
        }
        a.shutdown().await;
        b.shutdown().await;
    }

    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry()
        .with(log.clone())
        .with(tracing_subscriber::filter::LevelFilter::TRACE);
    // This thread only: the runtime is current-thread, so the engine's tasks
    // run here too.
    let _default = tracing::subscriber::set_default(subscriber);

    let (a, b, _member) = traffic(1).await;
    let broadcast = log.find("rooms.broadcast").expect("a broadcast span");
    assert_eq!(field(&broadcast, "room"), Some("lobby"), "{broadcast:?}");
    assert_eq!(field(&broadcast, "node"), Some("node-a"), "{broadcast:?}");
    assert_eq!(
        field(&broadcast, "medium"),
        Some("memory-bus"),
        "{broadcast:?}"
    );
    assert_eq!(field(&broadcast, "published"), Some("1"), "{broadcast:?}");

    let publish = log.find("rooms.publish").expect("a publish span");
    assert_eq!(field(&publish, "room"), Some("lobby"), "{publish:?}");

    let join = log.find("rooms.join").expect("a join span");
    assert_eq!(field(&join, "room"), Some("lobby"), "{join:?}");
    assert_eq!(field(&join, "connection"), Some("member"), "{join:?}");
    assert_eq!(field(&join, "node"), Some("node-b"), "{join:?}");

    let connect = log.find("rooms.connect").expect("a connect span");
    assert_eq!(field(&connect, "connection"), Some("member"), "{connect:?}");

    let deliver = log.find("rooms.deliver").expect("a delivery span");
    assert_eq!(field(&deliver, "room"), Some("lobby"), "{deliver:?}");
    assert_eq!(field(&deliver, "from"), Some("node-a"), "{deliver:?}");
    assert_eq!(field(&deliver, "delivered"), Some("1"), "{deliver:?}");
    a.shutdown().await;
    b.shutdown().await;
}
