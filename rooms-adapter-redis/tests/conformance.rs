//! The conformance suite, once per publish driver, each case on its own
//! throwaway `redis-server` (needs `redis-server` on PATH). The `deadpool` and
//! `bb8` drivers run with their features.

mod redis {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisHarness,
        capabilities = [
            fault_injection,
            raw_publish,
            emitter,
            control,
            history,
            node_fault_injection
        ],
    );
}

#[cfg(feature = "deadpool")]
mod deadpool {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisDeadpoolHarness,
        capabilities = [
            fault_injection,
            raw_publish,
            emitter,
            control,
            history,
            node_fault_injection
        ],
    );
}

#[cfg(feature = "bb8")]
mod bb8 {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisBb8Harness,
        capabilities = [
            fault_injection,
            raw_publish,
            emitter,
            control,
            history,
            node_fault_injection
        ],
    );
}

mod msgpack {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisMsgpackHarness,
        capabilities = [
            fault_injection,
            raw_publish,
            emitter,
            control,
            history,
            node_fault_injection
        ],
    );
}
