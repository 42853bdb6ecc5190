//! Client requests (create topic, produce, fetch) as the client port decodes
//! them, run on an in-memory 3-node cluster whose checkers must stay clean.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::client_requests(data);
});
