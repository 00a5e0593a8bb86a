//! Running a case, or the whole suite, against a harness, and what each case
//! reports.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CASE_DEADLINE, CASE_NAMES, NO_SKIP_ENV};
use crate::{CaseError, CaseResult, Harness, Outcome};

/// Whether [`NO_SKIP_ENV`] asks for skipped cases to fail.
pub(super) fn no_skip() -> bool {
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
    crate::__with_cases!(__run_all!(H, reports));
    reports
}
