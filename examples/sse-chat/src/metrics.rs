//! `GET /metrics`: one `prometheus_client` registry with the library's
//! collector (the engine's and the adapter's counters and latency
//! histograms, see `rooms_adapter::metrics::RoomsCollector`) and this
//! application's own counters, in the Prometheus text format (version
//! 0.0.4).

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use rooms_adapter::Rooms;

use crate::state::AppCounters;

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The registry a scrape encodes: the engine's collector, `sse_chat_info`
/// and the application's counters.
pub fn registry(rooms: &Rooms, app: &AppCounters) -> Registry {
    let mut registry = Registry::default();
    rooms.register_metrics(&mut registry);
    registry.register(
        "sse_chat",
        "This node: its id and backend",
        Info::new(vec![
            ("node", rooms.node_id().as_str().to_owned()),
            ("backend", rooms.adapter_name().to_owned()),
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ]),
    );
    let counters = [
        (
            "sse_chat_messages_posted",
            "Chat messages accepted and broadcast",
            &app.messages_posted,
        ),
        (
            "sse_chat_messages_rejected",
            "Chat messages rejected by validation",
            &app.messages_rejected,
        ),
        (
            "sse_chat_connections_refused",
            "SSE connections refused at the connection limit",
            &app.connections_refused,
        ),
        (
            "sse_chat_publish_failures",
            "Messages delivered locally whose publish to other nodes failed",
            &app.publish_failures,
        ),
        (
            "sse_chat_sockets_refused",
            "Sockets closed at once at the socket limit (--max-sockets)",
            &app.sockets_refused,
        ),
        (
            "sse_chat_header_timeouts",
            "Connections closed because a request head did not arrive in time",
            &app.header_timeouts,
        ),
        (
            "sse_chat_body_timeouts",
            "POSTs answered 408 because the body did not arrive in time",
            &app.body_timeouts,
        ),
        (
            "sse_chat_write_stalls",
            "Connections reset because writes to them made no progress in time",
            &app.write_stalls,
        ),
    ];
    for (name, help, counter) in counters {
        // A clone shares the count.
        registry.register(name, help, counter.clone());
    }
    registry
}

/// Renders a scrape.
pub fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(8192);
    // Writing to a String cannot fail; neither can the collectors.
    let _ = prometheus_text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rooms_adapter_memory::MemoryAdapter;

    use super::*;

    #[tokio::test]
    async fn renders_every_family_once_with_escaped_labels() {
        let rooms = Rooms::builder(Arc::new(MemoryAdapter::new()))
            .node_id("a\"b\\c")
            .build()
            .await
            .unwrap();
        let app = AppCounters::default();
        AppCounters::bump(&app.messages_posted);
        let text = render(&registry(&rooms, &app));
        assert!(text.contains("sse_chat_info{node=\"a\\\"b\\\\c\",backend=\"memory\""));
        assert!(text.contains("rooms_node_info{node=\"a\\\"b\\\\c\",medium=\"memory\"} 1"));
        assert!(text.contains("\nrooms_connections 0\n"));
        assert!(text.contains("\nsse_chat_messages_posted_total 1\n"));
        assert!(text.contains("rooms_adapter_decode_errors_total{kind=\"malformed\"} 0\n"));
        for line in text.lines().filter(|line| line.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} declared once"
            );
        }
        rooms.shutdown().await;
    }
}
