//! The conformance suite on a throwaway `nats-server` per case (needs
//! `nats-server` on PATH), once per codec.

mod json {
    rooms_conformance::conformance_suite!(
        rooms_testkit::nats::NatsHarness,
        capabilities = [fault_injection, raw_publish, emitter, control],
    );
}

mod msgpack {
    rooms_conformance::conformance_suite!(
        rooms_testkit::nats::NatsMsgpackHarness,
        capabilities = [fault_injection, raw_publish, emitter, control],
    );
}
