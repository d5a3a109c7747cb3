//! Two connections over the simulated link, streams opened by both ends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dwcp_core::fuzzing::two_sided(data);
});
