//! The conformance suite, once per publish driver, each case on its own
//! throwaway `redis-server` (needs `redis-server` on PATH).

mod redis {
    rooms_conformance::conformance_suite!(rooms_testkit::redis::RedisHarness);
}

mod deadpool {
    rooms_conformance::conformance_suite!(rooms_testkit::redis::RedisDeadpoolHarness);
}

mod bb8 {
    rooms_conformance::conformance_suite!(rooms_testkit::redis::RedisBb8Harness);
}

mod msgpack {
    rooms_conformance::conformance_suite!(rooms_testkit::redis::RedisMsgpackHarness);
}
