//! The conformance suite on the shared PostgreSQL server (`ROOMS_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`), each case through its
//! own fault-injecting proxy, with its own channels and attachments table.

mod json {
    rooms_conformance::conformance_suite!(
        rooms_testkit::postgres::PostgresHarness,
        capabilities = [fault_injection, raw_publish, emitter, control],
    );
}

mod msgpack {
    rooms_conformance::conformance_suite!(
        rooms_testkit::postgres::PostgresMsgpackHarness,
        capabilities = [fault_injection, raw_publish, emitter, control],
    );
}
