//! TCP lane preambles and their assembly into connections.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dwcp_core::fuzzing::lane_preambles(data);
});
