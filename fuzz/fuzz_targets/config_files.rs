//! A node's config file (TOML, then validated) and a principals file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chronik_net::fuzzing::config_files(data);
});
