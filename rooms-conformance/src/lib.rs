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
mod runner;
mod suite;
mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use harness::{Capabilities, Harness};
use runner::no_skip;
pub use runner::{CaseReport, run_case, run_suite};
pub use support::{
    CaseError, CaseResult, DELIVERY_TIMEOUT, Outcome, QUIET_PERIOD, expect_data,
    expect_only_sentinel, expect_quiet, fail, member, member_with, next, next_event, node,
    node_with, odd_room_names, retry_until, shutdown_all, text, wait_until,
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
    /// Every capability (what `capabilities = all` declares).
    pub const ALL: [Capability; 6] = __with_all_capabilities!(__capabilities!());

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
