//! The stream fuzz harnesses (`harness/stream_framing.rs`, also the cargo-fuzz target
//! `stream_framing`) under proptest in every `cargo test`, so CI checks the same properties
//! the fuzzer does. Longer runs: see `core/fuzz/README.md`.

#[path = "harness/stream_framing.rs"]
mod stream_framing;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Arbitrary bytes, and framed messages, deframed in arbitrary chunks: every result
    /// matches the reference reading of RFC 8323 §3.2, the buffer stays bounded, and messages
    /// come back unchanged.
    #[test]
    fn deframing_matches_the_rfc_on_arbitrary_streams(data in prop::collection::vec(any::<u8>(), 0..600)) {
        stream_framing::run(&data);
    }
}

/// Pseudo-random inputs of growing length (xorshift64*), for the reachability checks.
fn inputs(count: usize, start: usize, step: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count).map(move |i| {
        (0..start + i * step)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    })
}

/// The framing harness must get past the first byte: over a fixed set of pseudo-random
/// inputs it deframes frames of every length form, meets both errors and completes round
/// trips.
#[test]
fn framing_harness_reaches_every_outcome() {
    let mut r = stream_framing::Reached::default();
    for data in inputs(2_000, 8, 1) {
        r.add(&stream_framing::run(&data));
    }
    assert!(r.frames.iter().all(|&n| n > 0), "{r:?}");
    assert!(r.token_length_errors > 0, "{r:?}");
    assert!(r.too_long_errors > 0, "{r:?}");
    assert!(r.round_trips > 100, "{r:?}");
}
