//! Arbitrary bytes to the frame decoder and to a live session.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dwcp_core::fuzzing::decode_frames(data);
    dwcp_core::fuzzing::session(data);
});
