//! The conformance suite on a 3-master Redis Cluster (sharded pub/sub).
#![cfg(feature = "cluster")]

mod redis_cluster {
    rooms_conformance::conformance_suite!(
        rooms_testkit::cluster_harness::RedisClusterHarness,
        capabilities = all
    );
}
