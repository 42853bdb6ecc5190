//! A peer batch off the wire (a node with a valid certificate can still send
//! anything): the protobuf envelope, then each Raft message in it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::peer_batch(data);
});
