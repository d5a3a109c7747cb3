//! Compressed DATA through the codec layer and a connection: bombs, lying
//! lengths, corrupt streams.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dwcp_core::fuzzing::compressed_data(data);
});
