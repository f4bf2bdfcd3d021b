//! The stream fuzz harnesses (`harness/stream_framing.rs`, `harness/stream_inputs.rs`, also
//! the cargo-fuzz targets `stream_framing` and `stream_inputs`) under proptest in every
//! `cargo test`, so CI checks the same properties the fuzzer does. Longer runs: see
//! `core/fuzz/README.md`.

#[path = "harness/stream_framing.rs"]
mod stream_framing;
#[path = "harness/stream_inputs.rs"]
mod stream_inputs;

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// A TCP endpoint driven by arbitrary connection events, peer bytes, time, write results
    /// and application calls: no panic, whole well-formed frames, connections in step with
    /// the adapter, one terminal event per request, limits and the unwritten-bytes cap held,
    /// no busy loop.
    #[test]
    fn tcp_endpoint_survives_arbitrary_input_sequences(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        stream_inputs::run(&data);
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

/// The input harness must reach deep engine states from random input, not stop at the first
/// frame: over a fixed set of pseudo-random inputs every kind of outcome occurs.
#[test]
fn input_harness_reaches_every_outcome() {
    let mut c = stream_inputs::Coverage::default();
    for data in inputs(300, 200, 7) {
        c.add(&stream_inputs::run(&data));
    }
    assert!(c.steps > 10_000, "{c:?}");
    for (what, n) in [
        ("transmits", c.transmits),
        ("connects", c.connects),
        ("closes", c.closes),
        ("accepted connections", c.accepted),
        ("incoming requests", c.requests_received),
        ("responses", c.responses),
        ("request failures", c.request_failures),
        ("notifications", c.notifications),
        ("pongs", c.pongs),
        ("ping failures", c.ping_failures),
        ("established sessions", c.sessions_established),
        ("failed sessions", c.sessions_failed),
        ("closed sessions", c.sessions_closed),
        ("releases", c.released),
        ("aborts sent", c.aborts_sent),
        ("block-wise frames", c.block_frames),
        ("BERT frames", c.bert_frames),
        ("accepted responds", c.responds_ok),
        ("observers added", c.observers_added),
        ("refusals for a write backlog", c.backlog_refusals),
    ] {
        assert!(n > 0, "the harness never produced any {what}: {c:?}");
    }
}
