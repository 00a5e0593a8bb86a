//! The conformance suite against the memory bus: as is, and round-tripping
//! every envelope through each codec.

mod memory {
    rooms_conformance::conformance_suite!(rooms_testkit::memory::MemoryHarness, capabilities = all);
}

mod memory_json {
    rooms_conformance::conformance_suite!(
        rooms_testkit::memory::MemoryJsonHarness,
        capabilities = all
    );
}

mod memory_msgpack {
    rooms_conformance::conformance_suite!(
        rooms_testkit::memory::MemoryMsgpackHarness,
        capabilities = all
    );
}
