//! The conformance suite, once per publish driver, each case on its own
//! throwaway `redis-server` (needs `redis-server` on PATH). The `deadpool` and
//! `bb8` drivers run with their features.

mod redis {
    rooms_conformance::conformance_suite!(rooms_testkit::redis::RedisHarness, capabilities = all);
}

#[cfg(feature = "deadpool")]
mod deadpool {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisDeadpoolHarness,
        capabilities = all
    );
}

#[cfg(feature = "bb8")]
mod bb8 {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisBb8Harness,
        capabilities = all
    );
}

mod msgpack {
    rooms_conformance::conformance_suite!(
        rooms_testkit::redis::RedisMsgpackHarness,
        capabilities = all
    );
}
