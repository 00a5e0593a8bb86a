//! # rooms-conformance
//!
//! The conformance suite every `rooms` medium must pass. A backend plugs in by
//! implementing [`Harness`] (make a fresh medium, make a node on it, optionally
//! cut and restore the medium or publish raw bytes) and expanding the suite in
//! an integration test, naming the optional capabilities it offers:
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate
//! rooms_conformance::conformance_suite!(
//!     my_backend::testing::MyHarness,
//!     capabilities = [fault_injection, raw_publish, emitter, control],
//! );
//! ```
//!
//! That expands into one `#[test]` per case, so `cargo test` names the case
//! that failed; a case that needs a capability not in the list is an
//! *ignored* test (`ignored, needs capability history`), and one more test,
//! `declared_capabilities_match_the_harness`, checks the list against what
//! the harness and adapter report. Set `ROOMS_CONFORMANCE_NO_SKIP=1` to make
//! any ignored case a failure. The suite brings its own tokio runtime: the
//! test crate needs no tokio of its own.
//!
//! [`run_suite`] runs every case in-process and returns a report per case
//! (used by `cargo xtask conformance` for its matrix).
//!
//! Cases run through the rooms engine ([`rooms_adapter::Rooms`]) on top of the
//! adapter, as applications use it, plus a few that drive the adapter directly.
//! See [`cases`] for what each proves, [`CASES`] for what each needs, and the
//! [`guide`] for writing an adapter from scratch.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cases;
pub mod guide;
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

/// The `#[async_trait]` attribute, for `impl Harness` (and `impl RoomAdapter`)
/// without a dependency of your own.
pub use async_trait::async_trait;
/// The `bytes` crate, whose `Bytes` carries control frames.
pub use bytes;
/// The core crate: [`RoomAdapter`](rooms_adapter::RoomAdapter) and the
/// contract's types, at the version the suite checks.
pub use rooms_adapter;

/// Everything an adapter's test crate uses, in one import.
pub mod prelude {
    pub use crate::{Capabilities, Harness, async_trait, conformance_suite};
    pub use rooms_adapter::{
        AdapterCapabilities, AdapterCounters, AdapterEvent, AdapterStats, ControlTarget, Envelope,
        Error, EventSink, NodeId, RoomAdapter, RoomName, SinkOutcome,
    };
}

/// The environment variable that turns ignored (skipped) cases into failures:
/// set it to `1` in CI to prove the whole suite ran.
pub const NO_SKIP_ENV: &str = "ROOMS_CONFORMANCE_NO_SKIP";

/// The longest one case may take before it fails as hung.
pub const CASE_DEADLINE: Duration = Duration::from_secs(120);

/// An optional capability some cases need. `FaultInjection`, `RawPublish`
/// and `NodeFaultInjection` are the [`Harness`]'s ([`Capabilities`]), the
/// others the adapter's
/// ([`AdapterCapabilities`](rooms_adapter::AdapterCapabilities)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// [`Capabilities::fault_injection`]: the harness can cut and restore the
    /// medium.
    FaultInjection,
    /// [`Capabilities::raw_publish`]: the harness can publish raw bytes on a
    /// room's channel.
    RawPublish,
    /// [`AdapterCapabilities::emitter`](rooms_adapter::AdapterCapabilities::emitter):
    /// publish-only connections.
    Emitter,
    /// [`AdapterCapabilities::control`](rooms_adapter::AdapterCapabilities::control):
    /// control frames between nodes.
    Control,
    /// [`AdapterCapabilities::history`](rooms_adapter::AdapterCapabilities::history):
    /// per-room history.
    History,
    /// [`Capabilities::node_fault_injection`]: the harness can cut one node
    /// off the medium while the others keep it.
    NodeFaultInjection,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 6] = [
        Capability::FaultInjection,
        Capability::RawPublish,
        Capability::Emitter,
        Capability::Control,
        Capability::History,
        Capability::NodeFaultInjection,
    ];

    /// Its name in [`conformance_suite!`]'s `capabilities = [...]`.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::FaultInjection => "fault_injection",
            Capability::RawPublish => "raw_publish",
            Capability::Emitter => "emitter",
            Capability::Control => "control",
            Capability::History => "history",
            Capability::NodeFaultInjection => "node_fault_injection",
        }
    }

    /// The capability named `name`, if any.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether the harness or the adapter offers it.
    pub fn offered_by(
        self,
        harness: Capabilities,
        adapter: rooms_adapter::AdapterCapabilities,
    ) -> bool {
        match self {
            Capability::FaultInjection => harness.fault_injection,
            Capability::RawPublish => harness.raw_publish,
            Capability::Emitter => adapter.emitter,
            Capability::Control => adapter.control,
            Capability::History => adapter.history,
            Capability::NodeFaultInjection => harness.node_fault_injection,
        }
    }
}

/// One case of the suite and the capabilities it needs (it is skipped without
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseInfo {
    /// The case's name: its function in [`cases`] and its test's name.
    pub name: &'static str,
    /// Every capability it needs.
    pub needs: &'static [Capability],
}

/// Calls `$callback!` with `($($args)*)` followed by every case, as
/// `name [capability ...]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! { ($($args)*)
            delivers_to_subscribed_nodes_only [],
            unsubscribe_stops_delivery [],
            rooms_are_independent [],
            bidirectional [],
            many_nodes_each_get_one_copy [],
            echo_is_suppressed [],
            except_is_honoured_locally_and_remotely [],
            local_only_never_crosses [],
            metadata_reaches_remote_filter [],
            golden_vector_messages_round_trip [],
            per_publisher_order_is_kept [],
            concurrent_publishers_lose_nothing [],
            subscribe_and_unsubscribe_are_idempotent [],
            join_leave_races_settle [],
            disconnect_stops_delivery_and_is_idempotent [],
            ten_thousand_rooms [],
            one_mib_payload [],
            odd_room_names [],
            malformed_payloads_are_skipped_and_counted [raw_publish],
            reconnect_resubscribes_and_emits_reconnected [fault_injection],
            medium_loss_is_reported_and_status_follows [fault_injection],
            emitter_reaches_every_node [emitter],
            nodes_see_each_other_and_leave [control],
            cluster_queries_sum_every_node [control],
            silent_node_makes_answers_incomplete_then_expires [control],
            cut_off_nodes_expire_and_return [fault_injection control],
            history_replays_after_a_position [history],
            history_switch_has_no_gap_or_duplicate [history],
            history_gap_when_it_cannot_cover [history],
            history_reads_page_by_page [history],
            history_recovers_after_a_node_outage [node_fault_injection history],
            publish_fails_fast_while_down [fault_injection],
            full_inbound_queue_drops_and_counts [],
            message_ids_are_delivered_once [],
            dropped_receiver_leaves_rooms [],
            slow_connection_is_disconnected [],
        }
    };
}

/// The [`Capability`] named by an identifier; a compile error for any other.
#[doc(hidden)]
#[macro_export]
macro_rules! __capability {
    (fault_injection) => {
        $crate::Capability::FaultInjection
    };
    (raw_publish) => {
        $crate::Capability::RawPublish
    };
    (emitter) => {
        $crate::Capability::Emitter
    };
    (control) => {
        $crate::Capability::Control
    };
    (history) => {
        $crate::Capability::History
    };
    (node_fault_injection) => {
        $crate::Capability::NodeFaultInjection
    };
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "unknown conformance capability `",
            ::core::stringify!($other),
            "`: expected fault_injection, raw_publish, emitter, control, history or \
             node_fault_injection"
        ))
    };
}

/// Expands `{ yes }` if `$cap` is in the list, else `{ no }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __if_declared {
    (fault_injection [fault_injection $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (raw_publish [raw_publish $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (emitter [emitter $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (control [control $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (history [history $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    (node_fault_injection [node_fault_injection $(, $($rest:tt)*)?] {$($yes:tt)*} {$($no:tt)*}) => { $($yes)* };
    ($cap:ident [$other:ident $(, $($rest:tt)*)?] $yes:tt $no:tt) => {
        $crate::__if_declared! { $cap [$($($rest)*)?] $yes $no }
    };
    ($cap:ident [] $yes:tt {$($no:tt)*}) => { $($no)* };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __expand_tests {
    (($harness:ty, $declared:tt) $($case:ident [$($need:ident)*]),* $(,)?) => {
        $(
            $crate::__case_test! { ($harness, $declared) $case [$($need)*] }
        )*
    };
}

/// One case's test: plain when every capability it needs is declared,
/// ignored (naming the first missing one) otherwise.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_test {
    (($harness:ty, $declared:tt) $case:ident []) => {
        #[test]
        fn $case() {
            $crate::__private::run_test::<$harness, _, _>(
                ::core::stringify!($case),
                true,
                $crate::cases::$case::<$harness>,
            );
        }
    };
    (($harness:ty, $declared:tt) $case:ident [$need:ident $($rest:ident)*]) => {
        $crate::__if_declared! { $need $declared
            { $crate::__case_test! { ($harness, $declared) $case [$($rest)*] } }
            { $crate::__ignored_test! { $harness, $case, $need } }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ignored_test {
    ($harness:ty, $case:ident, fault_injection) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability fault_injection" }
    };
    ($harness:ty, $case:ident, raw_publish) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability raw_publish" }
    };
    ($harness:ty, $case:ident, emitter) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability emitter" }
    };
    ($harness:ty, $case:ident, control) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability control" }
    };
    ($harness:ty, $case:ident, history) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability history" }
    };
    ($harness:ty, $case:ident, node_fault_injection) => {
        $crate::__ignored_test! { @ $harness, $case, "needs capability node_fault_injection" }
    };
    (@ $harness:ty, $case:ident, $why:literal) => {
        #[test]
        #[ignore = $why]
        fn $case() {
            $crate::__private::run_test::<$harness, _, _>(
                ::core::stringify!($case),
                false,
                $crate::cases::$case::<$harness>,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_all {
    (($harness:ty, $reports:ident) $($case:ident [$($need:ident)*]),* $(,)?) => {
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
    (() $($case:ident [$($need:ident)*]),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_infos {
    (() $($case:ident [$($need:ident)*]),* $(,)?) => {
        &[$($crate::CaseInfo {
            name: stringify!($case),
            needs: &[$($crate::__capability!($need)),*],
        }),*]
    };
}

/// Expands the whole suite for `$harness` into one `#[test]` per case, plus
/// `declared_capabilities_match_the_harness`.
///
/// `capabilities = [...]` lists the optional [`Capability`]s the harness and
/// its adapter offer, by name: `fault_injection`, `raw_publish`,
/// `node_fault_injection` (the harness's [`Capabilities`]), `emitter`,
/// `control`, `history` (the
/// adapter's `AdapterCapabilities`). A case that needs a capability not
/// listed is generated `#[ignore = "needs capability ..."]`, so `cargo test`
/// shows it as ignored; `cargo test -- --include-ignored` runs it anyway
/// (it then reports itself skipped). Without the list, no optional
/// capability is declared.
///
/// The list must match what the harness and the adapter report: a case that
/// needs a declared capability and finds it missing fails, and
/// `declared_capabilities_match_the_harness` fails for an offered capability
/// not declared. With `ROOMS_CONFORMANCE_NO_SKIP=1` that test also fails while
/// any case is ignored.
///
/// The tests run on the suite's own multi-threaded tokio runtime; the test
/// crate needs no tokio, only `rooms-conformance`.
///
/// ```ignore
/// rooms_conformance::conformance_suite!(MyHarness, capabilities = [fault_injection, emitter]);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty $(,)?) => {
        $crate::conformance_suite!($harness, capabilities = []);
    };
    ($harness:ty, capabilities = [$($cap:ident),* $(,)?] $(,)?) => {
        const _: &[$crate::Capability] = &[$($crate::__capability!($cap)),*];
        $crate::__with_cases!(__expand_tests!($harness, [$($cap),*]));
        #[test]
        fn declared_capabilities_match_the_harness() {
            $crate::__private::check_declared::<$harness>(&[$($crate::__capability!($cap)),*]);
        }
    };
}

/// The name of every case, in order.
pub const CASE_NAMES: &[&str] = __with_cases!(__names!());

/// Every case, in order, with the capabilities it needs.
pub const CASES: &[CaseInfo] = __with_cases!(__case_infos!());

/// What the macro's tests call. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use tokio;

    fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            #[allow(clippy::panic)]
            Err(error) => panic!("cannot start the suite's tokio runtime: {error}"),
        }
    }

    /// Runs one case on a fresh runtime and panics unless it conforms.
    pub fn run_test<H, F, Fut>(name: &'static str, declared: bool, case: F)
    where
        H: Harness,
        F: FnOnce(Arc<H>) -> Fut,
        Fut: Future<Output = CaseResult>,
    {
        runtime()
            .block_on(run_case::<H, F, Fut>(name, case))
            .assert_conforms(declared);
    }

    /// Checks the declared capabilities against the harness and its adapter.
    #[allow(clippy::panic)]
    pub fn check_declared<H: Harness>(declared: &[Capability]) {
        let offered = runtime().block_on(async {
            let harness = H::setup().await?;
            let adapter = harness.new_adapter().await;
            let harness_caps = harness.capabilities();
            let result = adapter.map(|adapter| {
                let adapter_caps = adapter.capabilities();
                Capability::ALL
                    .into_iter()
                    .filter(|c| c.offered_by(harness_caps, adapter_caps))
                    .collect::<Vec<_>>()
            });
            harness.teardown().await;
            result
        });
        let offered = match offered {
            Ok(offered) => offered,
            Err(error) => panic!("harness setup failed: {error}"),
        };
        let names =
            |caps: &[Capability]| caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
        let missing: Vec<_> = declared
            .iter()
            .copied()
            .filter(|c| !offered.contains(c))
            .collect();
        let undeclared: Vec<_> = offered
            .iter()
            .copied()
            .filter(|c| !declared.contains(c))
            .collect();
        if !missing.is_empty() || !undeclared.is_empty() {
            panic!(
                "conformance_suite! declares capabilities [{}], the harness and adapter offer [{}] \
                 (declared but not offered: [{}]; offered but not declared: [{}]): \
                 write `capabilities = [{}]`",
                names(declared),
                names(&offered),
                names(&missing),
                names(&undeclared),
                names(&offered),
            );
        }
        let ignored: Vec<_> = CASES
            .iter()
            .filter(|case| case.needs.iter().any(|need| !declared.contains(need)))
            .map(|case| case.name)
            .collect();
        if !ignored.is_empty() {
            eprintln!(
                "conformance: {} of {} cases ignored for capabilities not offered: {}",
                ignored.len(),
                CASES.len(),
                ignored.join(", ")
            );
            if no_skip() {
                panic!(
                    "{NO_SKIP_ENV} is set and {} case(s) are ignored for capabilities not \
                     offered: {}",
                    ignored.len(),
                    ignored.join(", ")
                );
            }
        }
    }
}

/// Whether [`NO_SKIP_ENV`] asks for skipped cases to fail.
fn no_skip() -> bool {
    std::env::var_os(NO_SKIP_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

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
    /// A skipped case prints why and passes, unless [`NO_SKIP_ENV`] is set.
    pub fn assert_passed(&self) {
        self.assert_conforms(false);
    }

    /// Like [`assert_passed`](Self::assert_passed), and with
    /// `capabilities_declared` a skipped case fails too: every capability it
    /// needs was declared, so skipping means the harness or adapter does not
    /// offer what it declared.
    #[allow(clippy::panic)]
    pub fn assert_conforms(&self, capabilities_declared: bool) {
        match &self.result {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Skipped(why)) if capabilities_declared => panic!(
                "conformance case {} was skipped ({why}), but conformance_suite! declares \
                 every capability it needs: remove the capability from the list, or make \
                 the harness or adapter offer it",
                self.name
            ),
            Ok(Outcome::Skipped(why)) if no_skip() => {
                panic!(
                    "conformance case {} skipped ({why}) and {NO_SKIP_ENV} is set",
                    self.name
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_has_a_row_for_every_case() {
        let guide = include_str!("guide.rs");
        for case in CASES {
            let needs = if case.needs.is_empty() {
                "—".to_owned()
            } else {
                case.needs
                    .iter()
                    .map(|need| format!("`{}`", need.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let row = guide
                .lines()
                .find(|line| line.starts_with(&format!("//! | `{}` |", case.name)));
            assert!(
                row.is_some_and(|row| row.ends_with(&format!("| {needs} |"))),
                "the guide's table has no row for {} ending in `| {needs} |`",
                case.name
            );
        }
    }

    #[test]
    fn case_names_and_capabilities_agree() {
        assert_eq!(CASES.len(), CASE_NAMES.len());
        for (case, name) in CASES.iter().zip(CASE_NAMES) {
            assert_eq!(case.name, *name);
        }
        for capability in Capability::ALL {
            assert_eq!(Capability::from_name(capability.name()), Some(capability));
        }
    }

    /// The golden vectors are a copy (so the crate can be packaged): they
    /// must stay the same as the core's, when the workspace is there.
    #[test]
    fn golden_vectors_match_the_cores() {
        let core = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../rooms-adapter/tests/fixtures/ts-v1-vectors.json");
        if let Ok(core) = std::fs::read_to_string(core) {
            assert!(
                core == include_str!("../fixtures/ts-v1-vectors.json"),
                "rooms-conformance/fixtures/ts-v1-vectors.json differs from \
                 rooms-adapter/tests/fixtures/ts-v1-vectors.json: copy it again"
            );
        }
    }
}
