//! The whole conformance suite against the template's bus.

mod harness;

rooms_conformance::conformance_suite!(
    harness::BusHarness,
    capabilities = [fault_injection, raw_publish, emitter, control],
);
