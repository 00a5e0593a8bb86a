//! `GET /metrics`: the engine's and the adapter's counters in the Prometheus
//! text exposition format (version 0.0.4).

use std::fmt::Write as _;

use rooms_adapter::wire::DecodeErrorKind;
use rooms_adapter::{AdapterStats, EngineStats};

use crate::state::AppCounters;

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything a metrics scrape needs, read at one moment.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// This node's id.
    pub node: &'a str,
    /// The backend's name (`memory`, `redis`).
    pub backend: &'a str,
    /// The engine's counters.
    pub engine: EngineStats,
    /// The adapter's counters.
    pub adapter: AdapterStats,
    /// The application's counters.
    pub app: &'a AppCounters,
    /// Live nodes this node knows (itself included); `None` when the
    /// backend has no node liveness.
    pub live_nodes: Option<u64>,
}

struct Writer(String);

impl Writer {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.header(name, kind, help);
        self.sample(name, "", value);
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders a scrape.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut w = Writer(String::with_capacity(4096));
    let e = &s.engine;
    let a = &s.adapter;

    w.header("sse_chat_info", "gauge", "This node: its id and backend.");
    w.sample(
        "sse_chat_info",
        &format!(
            "{{node=\"{}\",backend=\"{}\",version=\"{}\"}}",
            label(s.node),
            label(s.backend),
            env!("CARGO_PKG_VERSION")
        ),
        1,
    );

    w.metric(
        "rooms_connections",
        "gauge",
        "Local connections.",
        e.connections,
    );
    w.metric(
        "rooms_rooms",
        "gauge",
        "Rooms with at least one local member.",
        e.rooms,
    );
    if let Some(nodes) = s.live_nodes {
        w.metric(
            "rooms_cluster_nodes",
            "gauge",
            "Live nodes this node knows, itself included.",
            nodes,
        );
    }
    let counters: [(&str, &str, u64); 16] = [
        (
            "rooms_broadcasts_total",
            "Broadcasts made on this node.",
            e.broadcasts,
        ),
        (
            "rooms_deliveries_total",
            "Messages queued to local connections.",
            e.deliveries,
        ),
        (
            "rooms_filtered_total",
            "Deliveries the filter rejected.",
            e.filtered,
        ),
        (
            "rooms_duplicates_total",
            "Deliveries skipped as duplicate message ids.",
            e.duplicates,
        ),
        (
            "rooms_frames_encoded_total",
            "SSE frames built (one per message, not per connection).",
            e.frames_encoded,
        ),
        (
            "rooms_remote_received_total",
            "Envelopes received from the adapter.",
            e.remote_received,
        ),
        (
            "rooms_echoes_dropped_total",
            "Own envelopes echoed back by the medium, dropped.",
            e.echoes_dropped,
        ),
        (
            "rooms_remote_rejected_total",
            "Remote messages that could not be framed.",
            e.remote_rejected,
        ),
        (
            "rooms_lagging_disconnects_total",
            "Connections disconnected because their queue was full.",
            e.lagging_disconnects,
        ),
        (
            "rooms_lagging_drops_total",
            "Messages dropped for a full connection queue.",
            e.lagging_drops,
        ),
        (
            "rooms_inbound_dropped_total",
            "Inbound adapter events dropped (hand-off queue full).",
            e.inbound_dropped,
        ),
        (
            "rooms_reconnects_total",
            "Times the medium was lost and restored (engine view).",
            e.reconnects,
        ),
        (
            "rooms_subscription_errors_total",
            "Subscription changes the adapter reported as failed.",
            e.subscription_errors,
        ),
        (
            "rooms_control_rejected_total",
            "Control frames skipped: malformed, of another version, or from too many nodes.",
            e.control_rejected,
        ),
        (
            "rooms_control_unsent_total",
            "Control frames (heartbeats, queries, answers) not sent.",
            e.control_unsent,
        ),
        (
            "rooms_queries_answered_total",
            "Cluster-wide queries this node answered for other nodes.",
            e.queries_answered,
        ),
    ];
    for (name, help, value) in counters {
        w.metric(name, "counter", help, value);
    }

    let adapter_counters: [(&str, &str, u64); 5] = [
        (
            "rooms_adapter_published_total",
            "Envelopes published to the medium.",
            a.published,
        ),
        (
            "rooms_adapter_publish_errors_total",
            "Publishes that failed.",
            a.publish_errors,
        ),
        (
            "rooms_adapter_received_total",
            "Envelopes received and decoded.",
            a.received,
        ),
        (
            "rooms_adapter_dropped_inbound_total",
            "Inbound events dropped by the adapter.",
            a.dropped_inbound,
        ),
        (
            "rooms_adapter_reconnects_total",
            "Times the medium was lost and restored.",
            a.reconnects,
        ),
    ];
    for (name, help, value) in adapter_counters {
        w.metric(name, "counter", help, value);
    }
    w.metric(
        "rooms_adapter_subscriptions",
        "gauge",
        "Rooms the adapter is subscribed to.",
        a.subscriptions,
    );
    w.header(
        "rooms_adapter_decode_errors_total",
        "counter",
        "Inbound payloads skipped, by reason.",
    );
    for kind in DecodeErrorKind::ALL {
        let value = a.decode_errors.get(&kind).copied().unwrap_or(0);
        w.sample(
            "rooms_adapter_decode_errors_total",
            &format!("{{kind=\"{}\"}}", kind.name()),
            value,
        );
    }

    let app = s.app;
    let app_counters: [(&str, &str, u64); 8] = [
        (
            "sse_chat_messages_posted_total",
            "Chat messages accepted and broadcast.",
            AppCounters::get(&app.messages_posted),
        ),
        (
            "sse_chat_messages_rejected_total",
            "Chat messages rejected by validation.",
            AppCounters::get(&app.messages_rejected),
        ),
        (
            "sse_chat_connections_refused_total",
            "SSE connections refused at the connection limit.",
            AppCounters::get(&app.connections_refused),
        ),
        (
            "sse_chat_publish_failures_total",
            "Messages delivered locally whose publish to other nodes failed.",
            AppCounters::get(&app.publish_failures),
        ),
        (
            "sse_chat_sockets_refused_total",
            "Sockets closed at once at the socket limit (--max-sockets).",
            AppCounters::get(&app.sockets_refused),
        ),
        (
            "sse_chat_header_timeouts_total",
            "Connections closed because a request head did not arrive in time.",
            AppCounters::get(&app.header_timeouts),
        ),
        (
            "sse_chat_body_timeouts_total",
            "POSTs answered 408 because the body did not arrive in time.",
            AppCounters::get(&app.body_timeouts),
        ),
        (
            "sse_chat_write_stalls_total",
            "Connections reset because writes to them made no progress in time.",
            AppCounters::get(&app.write_stalls),
        ),
    ];
    for (name, help, value) in app_counters {
        w.metric(name, "counter", help, value);
    }
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once_with_escaped_labels() {
        let app = AppCounters::default();
        AppCounters::bump(&app.messages_posted);
        let text = render(&Snapshot {
            node: "a\"b\\c",
            backend: "memory",
            engine: EngineStats::default(),
            adapter: AdapterStats::default(),
            app: &app,
            live_nodes: Some(2),
        });
        assert!(text.contains("\nrooms_cluster_nodes 2\n"));
        assert!(text.contains("\nrooms_queries_answered_total 0\n"));
        assert!(text.contains("sse_chat_info{node=\"a\\\"b\\\\c\",backend=\"memory\""));
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
        // Every sample line is `name[{labels}] integer`.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
