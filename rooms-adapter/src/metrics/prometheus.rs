//! The `prometheus-client` collector (feature `prometheus`).

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::HistogramSnapshot;
use crate::engine::{Inner, Rooms};
use crate::wire::DecodeErrorKind;

/// A [`Collector`] that reads a [`Rooms`] engine's counters and histograms
/// when the registry is encoded (at scrape time): nothing is added to the
/// message path. It holds the engine weakly: once the engine is dropped it
/// reports nothing.
///
/// Register it with [`Rooms::register_metrics`], or
/// `registry.register_collector(Box::new(rooms.metrics_collector()))`. To
/// tell several engines in one registry apart, register each in a
/// [`sub_registry_with_label`](Registry::sub_registry_with_label).
///
/// # Metrics
/// Names as the Prometheus text format shows them (the encoder adds
/// `_total` to counters and `_info` to the info metric).
///
/// | name | type | what |
/// | --- | --- | --- |
/// | `rooms_node_info{node,medium}` | info | this node's id and the adapter's name (`memory`, `redis`, `nats`, ...) |
/// | `rooms_medium_up` | gauge | 1 while the medium is reachable as far as this node knows, else 0 |
/// | `rooms_connections` | gauge | local connections |
/// | `rooms_rooms` | gauge | rooms with at least one local member |
/// | `rooms_cluster_nodes` | gauge | live nodes this node knows, itself included (adapters with the control capability only) |
/// | `rooms_broadcasts_total` | counter | broadcasts made on this node |
/// | `rooms_deliveries_total` | counter | messages queued to local connections |
/// | `rooms_filtered_total` | counter | deliveries the filter rejected |
/// | `rooms_duplicates_total` | counter | deliveries skipped as duplicate message ids |
/// | `rooms_frames_encoded_total` | counter | SSE frames built (one per message, not per connection) |
/// | `rooms_remote_received_total` | counter | envelopes received from the adapter |
/// | `rooms_echoes_dropped_total` | counter | own envelopes echoed back by the medium |
/// | `rooms_remote_rejected_total` | counter | remote messages that could not be framed |
/// | `rooms_lagging_disconnects_total` | counter | connections disconnected for a full queue |
/// | `rooms_lagging_drops_total` | counter | messages dropped for a full queue |
/// | `rooms_inbound_dropped_total` | counter | inbound events dropped (hand-off queue full) |
/// | `rooms_reconnects_total` | counter | times the medium was lost and restored |
/// | `rooms_subscription_errors_total` | counter | subscription changes that failed |
/// | `rooms_deferred_subscriptions_total` | counter | joins completed locally while the medium was down |
/// | `rooms_gaps_signalled_total` | counter | gap events sent |
/// | `rooms_control_rejected_total` | counter | control frames skipped |
/// | `rooms_control_unsent_total` | counter | control frames not sent |
/// | `rooms_queries_answered_total` | counter | cross-node queries answered for other nodes |
/// | `rooms_resumes_total` | counter | joins resumed from a `Last-Event-ID` |
/// | `rooms_adapter_published_total` | counter | envelopes the adapter published |
/// | `rooms_adapter_publish_errors_total` | counter | publishes that failed |
/// | `rooms_adapter_received_total` | counter | envelopes the adapter received and decoded |
/// | `rooms_adapter_dropped_inbound_total` | counter | inbound events the adapter's hand-off dropped |
/// | `rooms_adapter_medium_dropped_total` | counter | messages the medium itself dropped for this node (a NATS slow consumer) |
/// | `rooms_adapter_reconnects_total` | counter | times the adapter lost and restored the medium |
/// | `rooms_adapter_decode_errors_total{kind}` | counter | inbound payloads skipped, by reason |
/// | `rooms_adapter_subscriptions` | gauge | rooms the adapter is subscribed to |
/// | `rooms_publish_duration_seconds` | histogram | broadcast call → medium accepted ([`LatencyStats::publish`](super::LatencyStats::publish)) |
/// | `rooms_delivery_duration_seconds` | histogram | arrival from the medium → queued to every local recipient ([`LatencyStats::delivery`](super::LatencyStats::delivery)) |
/// | `rooms_queue_wait_seconds` | histogram | queued to a connection → taken by its transport, sampled ([`LatencyStats::queue_wait`](super::LatencyStats::queue_wait)) |
///
/// The node and the medium are labels of `rooms_node_info` only, so that
/// every other series stays one per scrape target; join on them with
/// `* on(instance) group_left(node, medium) rooms_node_info`.
///
/// ```
/// use std::sync::Arc;
/// use prometheus_client::registry::Registry;
/// use rooms_adapter::Rooms;
/// use rooms_adapter_memory::MemoryAdapter;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rooms = Rooms::builder(Arc::new(MemoryAdapter::new())).build().await?;
/// let mut registry = Registry::default();
/// rooms.register_metrics(&mut registry);
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry)?;
/// assert!(text.contains("\nrooms_connections 0\n"));
/// assert!(text.contains("# TYPE rooms_publish_duration_seconds histogram"));
/// # rooms.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RoomsCollector {
    engine: Weak<Inner>,
}

impl Rooms {
    /// A [`RoomsCollector`] of this engine, to register into a
    /// `prometheus_client` registry.
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_collector(&self) -> RoomsCollector {
        RoomsCollector {
            engine: Arc::downgrade(self.inner_ref()),
        }
    }

    /// Registers this engine's metrics ([`RoomsCollector`]) into `registry`.
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.metrics_collector()));
    }
}

/// Encodes one unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Fmt {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one unlabelled histogram.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Fmt {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // The encoder wants per-bucket counts and accumulates them itself.
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .map(|(bound, cumulative)| {
            let count = cumulative.saturating_sub(previous);
            previous = *cumulative;
            (*bound, count)
        })
        .collect();
    buckets.push((f64::INFINITY, snapshot.count.saturating_sub(previous)));
    metric.encode_histogram::<NoLabelSet>(
        snapshot.sum.as_secs_f64(),
        snapshot.count,
        &buckets,
        None,
    )
}

type Fmt = Result<(), std::fmt::Error>;

impl Collector for RoomsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Fmt {
        let Some(inner) = self.engine.upgrade() else {
            return Ok(());
        };
        let rooms = Rooms::from_inner(inner);
        let e = rooms.stats();
        let a = rooms.adapter_stats();
        let latency = rooms.latency_stats();
        let enc = &mut encoder;

        {
            let labels = [
                ("node", rooms.node_id().as_str()),
                ("medium", rooms.adapter_name()),
            ];
            let mut metric = enc.encode_descriptor(
                "rooms_node",
                "This node: its id and the medium's name.",
                None,
                MetricType::Info,
            )?;
            metric.encode_info(&labels)?;
        }
        gauge(
            enc,
            "rooms_medium_up",
            "Whether the medium is reachable as far as this node knows (1) or not (0).",
            u64::from(rooms.medium_status().is_up()),
        )?;
        gauge(
            enc,
            "rooms_connections",
            "Local connections.",
            e.connections,
        )?;
        gauge(
            enc,
            "rooms_rooms",
            "Rooms with at least one local member.",
            e.rooms,
        )?;
        if let Ok(nodes) = rooms.nodes() {
            gauge(
                enc,
                "rooms_cluster_nodes",
                "Live nodes this node knows, itself included.",
                nodes.len() as u64,
            )?;
        }
        let counters: [(&str, &str, u64); 19] = [
            (
                "rooms_broadcasts",
                "Broadcasts made on this node.",
                e.broadcasts,
            ),
            (
                "rooms_deliveries",
                "Messages queued to local connections.",
                e.deliveries,
            ),
            (
                "rooms_filtered",
                "Deliveries the filter rejected.",
                e.filtered,
            ),
            (
                "rooms_duplicates",
                "Deliveries skipped as duplicate message ids.",
                e.duplicates,
            ),
            (
                "rooms_frames_encoded",
                "SSE frames built (one per message, not per connection).",
                e.frames_encoded,
            ),
            (
                "rooms_remote_received",
                "Envelopes received from the adapter.",
                e.remote_received,
            ),
            (
                "rooms_echoes_dropped",
                "Own envelopes echoed back by the medium, dropped.",
                e.echoes_dropped,
            ),
            (
                "rooms_remote_rejected",
                "Remote messages that could not be framed.",
                e.remote_rejected,
            ),
            (
                "rooms_lagging_disconnects",
                "Connections disconnected because their queue was full.",
                e.lagging_disconnects,
            ),
            (
                "rooms_lagging_drops",
                "Messages dropped for a full connection queue.",
                e.lagging_drops,
            ),
            (
                "rooms_inbound_dropped",
                "Inbound adapter events dropped (hand-off queue full).",
                e.inbound_dropped,
            ),
            (
                "rooms_reconnects",
                "Times the medium was lost and restored (engine view).",
                e.reconnects,
            ),
            (
                "rooms_subscription_errors",
                "Subscription changes the adapter reported as failed.",
                e.subscription_errors,
            ),
            (
                "rooms_deferred_subscriptions",
                "Joins completed locally while the medium was down, subscribed in the background.",
                e.deferred_subscriptions,
            ),
            (
                "rooms_gaps_signalled",
                "Gap events sent (messages dropped under pressure).",
                e.gaps_signalled,
            ),
            (
                "rooms_control_rejected",
                "Control frames skipped: malformed, of another version, or from too many nodes.",
                e.control_rejected,
            ),
            (
                "rooms_control_unsent",
                "Control frames (heartbeats, queries, answers) not sent.",
                e.control_unsent,
            ),
            (
                "rooms_queries_answered",
                "Cluster-wide queries this node answered for other nodes.",
                e.queries_answered,
            ),
            (
                "rooms_resumes",
                "Joins resumed from a Last-Event-ID (replay or gap event).",
                e.resumes,
            ),
        ];
        for (name, help, value) in counters {
            counter(enc, name, help, value)?;
        }

        let adapter_counters: [(&str, &str, u64); 6] = [
            (
                "rooms_adapter_published",
                "Envelopes published to the medium.",
                a.published,
            ),
            (
                "rooms_adapter_publish_errors",
                "Publishes that failed.",
                a.publish_errors,
            ),
            (
                "rooms_adapter_received",
                "Envelopes received and decoded.",
                a.received,
            ),
            (
                "rooms_adapter_dropped_inbound",
                "Inbound events dropped by the adapter.",
                a.dropped_inbound,
            ),
            (
                "rooms_adapter_medium_dropped",
                "Messages the medium itself dropped for this node (e.g. a NATS slow consumer).",
                a.medium_dropped,
            ),
            (
                "rooms_adapter_reconnects",
                "Times the medium was lost and restored.",
                a.reconnects,
            ),
        ];
        for (name, help, value) in adapter_counters {
            counter(enc, name, help, value)?;
        }
        {
            let mut family = enc.encode_descriptor(
                "rooms_adapter_decode_errors",
                "Inbound payloads skipped, by reason.",
                None,
                MetricType::Counter,
            )?;
            for kind in DecodeErrorKind::ALL {
                let value = a.decode_errors.get(&kind).copied().unwrap_or(0);
                let labels = [("kind", kind.name())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            enc,
            "rooms_adapter_subscriptions",
            "Rooms the adapter is subscribed to.",
            a.subscriptions,
        )?;

        histogram(
            enc,
            "rooms_publish_duration_seconds",
            "Time from a broadcast call until the medium accepted it for every room.",
            &latency.publish,
        )?;
        histogram(
            enc,
            "rooms_delivery_duration_seconds",
            "Time from a message's arrival from the medium until it was queued to every local recipient.",
            &latency.delivery,
        )?;
        histogram(
            enc,
            "rooms_queue_wait_seconds",
            "Time a delivery waited in a connection's queue until the transport took it (sampled).",
            &latency.queue_wait,
        )?;
        Ok(())
    }
}
