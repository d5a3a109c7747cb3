//! The cargo-fuzz harnesses (`dwcp_core::fuzzing`) under proptest, so that
//! every CI run exercises them on random inputs as well as on a few
//! hand-made ones.

use dwcp_core::fuzzing;
use proptest::prelude::*;

/// A lane preamble record: identity choice, time step, 22 preamble bytes.
fn record(who: u8, step: u8, nonce: u8, index: u8, count: u8) -> Vec<u8> {
    let mut r = vec![who, step];
    r.extend_from_slice(b"DWCL");
    r.extend_from_slice(&[nonce; 16]);
    r.extend_from_slice(&[index, count]);
    r
}

#[test]
fn hand_made_inputs() {
    // Two groups interleaved, one contradicted by another identity.
    let mut lanes = Vec::new();
    for (who, nonce, index, count) in [(1, 1, 1, 2), (1, 2, 0, 3), (2, 2, 1, 3), (1, 1, 0, 2)] {
        lanes.extend(record(who, 0, nonce, index, count));
    }
    fuzzing::lane_preambles(&lanes);
    // A zstd "bomb": a frame declaring 16 bytes whose content decodes to 1 MiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).expect("zstd");
    let mut input = vec![2, 0, 0, 0, 16];
    input.extend_from_slice(&bomb);
    fuzzing::compressed_data(&input);
    // lz4 and a declared length above the limit.
    let mut input = vec![1, 0x00, 0x1F, 0xFF, 0xFF];
    input.extend_from_slice(&lz4_flex::block::compress(b"hello hello hello"));
    fuzzing::compressed_data(&input);
    // Both sides open, write and finish: bytes arrive both ways.
    let read = fuzzing::two_sided(&[0, 0, 1, 0, 2, 5, 3, 5, 2, 1, 3, 0, 6, 0, 7, 0]);
    assert!(read > 0, "no byte read");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lane_preambles_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::lane_preambles(&data);
    }

    #[test]
    fn compressed_data_never_panics(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::compressed_data(&data);
    }

    #[test]
    fn two_sided_sessions_keep_their_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::two_sided(&data);
    }
}
