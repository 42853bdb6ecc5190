//! Arbitrary bytes as a sequence of committed metadata entries: decoding
//! and applying must never panic, refused commands must change nothing but
//! the applied index, and a snapshot must restore to an equal state.
#![no_main]

use chronik_core::{MetadataCommand, MetadataState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut state = MetadataState::new();
    let mut index = 0;
    for chunk in data.split(|b| *b == 0xff) {
        index += 1;
        let Ok(cmd) = postcard::from_bytes::<MetadataCommand>(chunk) else { continue };
        let before = state.clone();
        if state.apply(index, cmd).is_err() {
            let after = state.clone();
            let mut expected = before;
            // Only the applied index may move on a refused command.
            let _ = expected.apply(index, MetadataCommand::DeleteTopic { name: String::new() });
            assert_eq!(after, expected, "a refused command changed state");
        }
    }
    let back = MetadataState::restore(state.applied_index(), &state.snapshot()).expect("own snapshot");
    assert_eq!(back, state);
});
