//! # rooms-conformance
//!
//! The conformance suite every `rooms` medium must pass. A backend plugs in by
//! implementing [`Harness`] (make a fresh medium, make a node on it, optionally
//! cut and restore the medium or publish raw bytes) and expanding the suite:
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate
//! rooms_conformance::conformance_suite!(my_backend::testing::MyHarness);
//! ```
//!
//! That expands into one `#[tokio::test]` per case, so `cargo test` names the
//! case that failed. [`run_suite`] runs every case in-process and returns a
//! report per case (used by `cargo xtask conformance` for its matrix).
//!
//! Cases run through the rooms engine ([`rooms_adapter::Rooms`]) on top of the
//! adapter, as applications use it, plus a few that drive the adapter directly.
//! See [`cases`] for what each proves.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cases;
mod harness;
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use harness::{Capabilities, Harness};
pub use support::{
    CaseError, CaseResult, DELIVERY_TIMEOUT, Outcome, QUIET_PERIOD, expect_data,
    expect_only_sentinel, expect_quiet, fail, member, member_with, next, next_event, node,
    node_with, retry_until, shutdown_all, text, wait_until,
};

/// The longest one case may take before it fails as hung.
pub const CASE_DEADLINE: Duration = Duration::from_secs(120);

/// Calls `$callback!` with `($($args)*)` followed by the name of every case.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            delivers_to_subscribed_nodes_only,
            unsubscribe_stops_delivery,
            rooms_are_independent,
            bidirectional,
            many_nodes_each_get_one_copy,
            echo_is_suppressed,
            except_is_honoured_locally_and_remotely,
            local_only_never_crosses,
            metadata_reaches_remote_filter,
            golden_vector_messages_round_trip,
            per_publisher_order_is_kept,
            concurrent_publishers_lose_nothing,
            subscribe_and_unsubscribe_are_idempotent,
            join_leave_races_settle,
            disconnect_stops_delivery_and_is_idempotent,
            ten_thousand_rooms,
            one_mib_payload,
            odd_room_names,
            malformed_payloads_are_skipped_and_counted,
            reconnect_resubscribes_and_emits_reconnected,
            medium_loss_is_reported_and_status_follows,
            emitter_reaches_every_node,
            nodes_see_each_other_and_leave,
            cluster_queries_sum_every_node,
            silent_node_makes_answers_incomplete_then_expires,
            cut_off_nodes_expire_and_return,
            history_replays_after_a_position,
            history_switch_has_no_gap_or_duplicate,
            history_gap_when_it_cannot_cover,
            publish_fails_fast_while_down,
            full_inbound_queue_drops_and_counts,
            message_ids_are_delivered_once,
            dropped_receiver_leaves_rooms,
            slow_connection_is_disconnected,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_tests {
    (($harness:ty) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let report = $crate::run_case::<$harness, _, _>(
                    stringify!($case),
                    $crate::cases::$case::<$harness>,
                )
                .await;
                report.assert_passed();
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_all {
    (($harness:ty, $reports:ident) $($case:ident),* $(,)?) => {
        $(
            $reports.push(
                $crate::run_case::<$harness, _, _>(stringify!($case), $crate::cases::$case::<$harness>)
                    .await,
            );
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __names {
    (() $($case:ident),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

/// Expands the whole suite into one `#[tokio::test]` per case for `$harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::__with_cases!(__expand_tests!($harness));
    };
}

/// The name of every case, in order.
pub const CASE_NAMES: &[&str] = __with_cases!(__names!());

/// How one case ended.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: &'static str,
    /// Passed, skipped (with the missing capability) or failed (with why).
    pub result: CaseResult,
    /// How long it took, setup and teardown included.
    pub elapsed: Duration,
}

impl CaseReport {
    /// Panics with the failure's message if the case failed (for `#[test]`s).
    /// A skipped case prints why and passes.
    #[allow(clippy::panic)]
    pub fn assert_passed(&self) {
        match &self.result {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Skipped(why)) => eprintln!("SKIPPED {}: {why}", self.name),
            Err(error) => panic!("conformance case {} failed: {error}", self.name),
        }
    }
}

/// Runs one case on a fresh medium of `H`, within [`CASE_DEADLINE`].
pub async fn run_case<H, F, Fut>(name: &'static str, case: F) -> CaseReport
where
    H: Harness,
    F: FnOnce(Arc<H>) -> Fut,
    Fut: Future<Output = CaseResult>,
{
    let started = Instant::now();
    let result = match H::setup().await {
        Err(error) => Err(CaseError(format!("harness setup failed: {error}"))),
        Ok(harness) => {
            let harness = Arc::new(harness);
            let result = match tokio::time::timeout(CASE_DEADLINE, case(Arc::clone(&harness))).await
            {
                Ok(result) => result,
                Err(_) => Err(CaseError(format!(
                    "case did not finish within {CASE_DEADLINE:?}"
                ))),
            };
            if let Ok(harness) = Arc::try_unwrap(harness) {
                harness.teardown().await;
            }
            result
        }
    };
    CaseReport {
        name,
        result,
        elapsed: started.elapsed(),
    }
}

/// Runs every case against `H`, one after another.
pub async fn run_suite<H: Harness>() -> Vec<CaseReport> {
    let mut reports = Vec::with_capacity(CASE_NAMES.len());
    __with_cases!(__run_all!(H, reports));
    reports
}
