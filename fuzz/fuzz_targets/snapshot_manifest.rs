//! A partition snapshot's manifest, as a peer sends it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::manifest(data);
});
