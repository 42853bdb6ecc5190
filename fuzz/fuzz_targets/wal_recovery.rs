//! A WAL directory with damaged records and tails: recovery succeeds or
//! refuses with an error, and recovers the same state a second time.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::wal(data);
});
