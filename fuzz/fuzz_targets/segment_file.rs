//! A partition segment file as a node reads one at start, with and without
//! valid checksums: batches decode or are refused, never panic or overrun.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::segment(data);
});
