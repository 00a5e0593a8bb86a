//! The conformance suite on a Redis Sentinel deployment (master, replica,
//! three sentinels).
#![cfg(feature = "sentinel")]

mod redis_sentinel {
    rooms_conformance::conformance_suite!(
        rooms_testkit::sentinel_harness::RedisSentinelHarness,
        capabilities = all
    );
}
