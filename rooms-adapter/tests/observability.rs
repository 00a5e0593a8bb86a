//! Latency histograms and the Prometheus collector (feature `prometheus`).
//! Tracing spans are tested in `spans.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::traffic;
use rooms_adapter::{BroadcastOptions, Rooms, SseMessage};
use rooms_adapter_memory::MemoryAdapter;

#[tokio::test]
async fn latency_histograms_fill_with_traffic() {
    let (a, b, _member) = traffic(20).await;
    let sent = a.latency_stats();
    assert_eq!(sent.publish.count, 20, "{sent:?}");
    assert!(sent.publish.sum > Duration::ZERO);
    // Node a has no member: nothing was delivered or queued there.
    assert_eq!(sent.delivery.count, 0);
    assert_eq!(sent.queue_wait.count, 0);

    let received = b.latency_stats();
    // Sampled: the first 8 messages from the medium, then one in 8
    // (the 9th and the 17th): 10 of 20.
    assert_eq!(received.delivery.count, 10, "{received:?}");
    // Deliveries are stamped the same way (per thread); the connection
    // records its first stamped one, then one in 16.
    assert!((1..=2).contains(&received.queue_wait.count), "{received:?}");
    assert_eq!(received.publish.count, 0);
    let last = received.delivery.buckets.last().expect("buckets").1;
    assert!(last <= received.delivery.count);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn local_only_broadcasts_are_not_publishes() {
    let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
        .build()
        .await
        .expect("engine");
    rooms
        .broadcast(
            "lobby",
            SseMessage::new("x"),
            BroadcastOptions::new().local_only(),
        )
        .await
        .expect("broadcast");
    assert_eq!(rooms.latency_stats().publish.count, 0);
    rooms
        .broadcast("lobby", SseMessage::new("x"), BroadcastOptions::new())
        .await
        .expect("broadcast");
    assert_eq!(rooms.latency_stats().publish.count, 1);
    rooms.shutdown().await;
}

#[cfg(feature = "prometheus")]
mod prometheus {
    use prometheus_client::registry::Registry;
    use prometheus_parse::{LineInfo, Scrape, Value};

    use super::*;

    /// Parses an exposition, insisting that every line is a comment or a
    /// sample the parser understands.
    fn parse(text: &str) -> Scrape {
        for line in text.lines() {
            let parsed = LineInfo::parse(line);
            let known = matches!(
                parsed,
                LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. }
            ) || line.starts_with("# EOF")
                || line.starts_with("# UNIT");
            assert!(known, "unparsable line {line:?} in\n{text}");
        }
        Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses")
    }

    fn value(scrape: &Scrape, name: &str) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .unwrap_or_else(|| panic!("no {name}"));
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is {other:?}"),
        }
    }

    /// The count of the `+Inf` bucket of a histogram.
    fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let Value::Histogram(buckets) = &sample.value else {
            panic!("{name} is {:?}", sample.value);
        };
        assert_eq!(buckets.len(), 20, "{buckets:?}");
        for pair in buckets.windows(2) {
            assert!(pair[0].less_than < pair[1].less_than);
            assert!(pair[0].count <= pair[1].count, "cumulative: {buckets:?}");
        }
        let last = buckets.last().expect("a bucket");
        assert!(last.less_than.is_infinite());
        assert_eq!(value(scrape, &format!("{name}_count")), last.count);
        last.count
    }

    #[tokio::test]
    async fn collector_output_parses_and_has_histogram_samples() {
        let (a, b, _member) = traffic(5).await;
        let mut registry = Registry::default();
        // Two engines in one registry, told apart by a label.
        a.register_metrics(registry.sub_registry_with_label(("engine".into(), "a".into())));
        b.register_metrics(registry.sub_registry_with_label(("engine".into(), "b".into())));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("encodes");
        let scrape = parse(&text);
        let of = |engine: &str, name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get("engine") == Some(engine))
                .map(|s| s.value.clone())
                .unwrap_or_else(|| panic!("no {name} of {engine}"))
        };
        assert_eq!(of("a", "rooms_broadcasts_total"), Value::Counter(5.0));
        assert_eq!(of("b", "rooms_remote_received_total"), Value::Counter(5.0));
        assert_eq!(of("b", "rooms_connections"), Value::Gauge(1.0));
        assert_eq!(
            of("a", "rooms_adapter_published_total"),
            Value::Counter(5.0)
        );
        let Value::Histogram(buckets) = of("b", "rooms_delivery_duration_seconds") else {
            panic!("not a histogram");
        };
        assert_eq!(buckets.last().map(|b| b.count), Some(5.0));
        let Value::Histogram(buckets) = of("a", "rooms_publish_duration_seconds") else {
            panic!("not a histogram");
        };
        assert_eq!(buckets.last().map(|b| b.count), Some(5.0));
        let info = scrape
            .samples
            .iter()
            .find(|s| s.metric == "rooms_node_info" && s.labels.get("engine") == Some("b"))
            .expect("info");
        assert_eq!(info.labels.get("node"), Some("node-b"));
        assert_eq!(info.labels.get("medium"), Some("memory-bus"));
        assert!(
            text.contains("# HELP rooms_queue_wait_seconds "),
            "HELP text: {text}"
        );

        // One engine alone: unlabelled samples, every family once.
        let mut registry = Registry::default();
        b.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("encodes");
        let scrape = parse(&text);
        assert_eq!(
            histogram_count(&scrape, "rooms_delivery_duration_seconds"),
            5.0
        );
        assert!(histogram_count(&scrape, "rooms_queue_wait_seconds") >= 1.0);
        assert_eq!(
            histogram_count(&scrape, "rooms_publish_duration_seconds"),
            0.0
        );
        assert_eq!(value(&scrape, "rooms_medium_up"), 1.0);
        assert_eq!(value(&scrape, "rooms_deliveries_total"), 5.0);
        for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).expect("a name");
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} declared once"
            );
        }

        // The OpenMetrics encoding works too.
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &registry).expect("encodes");
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("rooms_queue_wait_seconds_bucket{le=\"+Inf\"}"));

        // A dropped engine reports nothing, and does not fail the scrape.
        a.shutdown().await;
        b.shutdown().await;
        drop(b);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("encodes");
        assert!(
            text.contains("rooms_connections 0") || text.is_empty(),
            "{text}"
        );
    }
}
