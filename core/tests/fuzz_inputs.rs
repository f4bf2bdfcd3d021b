//! The fuzz harness (`harness/engine_inputs.rs`, also used by the cargo-fuzz targets in
//! `core/fuzz`) run under proptest for a short time in every `cargo test`, so CI exercises the
//! same input sequences and invariants the fuzzer does. Longer runs: see `core/fuzz/README.md`.

#[path = "harness/engine_inputs.rs"]
mod engine_inputs;

use coap_engine::coap_lite::MessageType;
use coap_engine::codec;
use engine_inputs::{build_message, check_datagram, run, Coverage};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Arbitrary bytes decoded into an engine configuration and an input sequence: no panic,
    /// limits hold, one terminal event per request, well-formed transmits, no busy loop.
    #[test]
    fn engine_survives_arbitrary_input_sequences(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        run(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// `parse` never panics on arbitrary bytes, agrees with `parse_header`, and what it accepts
    /// re-encodes byte for byte.
    #[test]
    fn parse_never_panics_and_round_trips(data in prop::collection::vec(any::<u8>(), 0..64)) {
        check_datagram(&data);
    }

    /// The same on near-valid input: well-formed messages with one byte flipped, truncated or
    /// extended (random bytes rarely get past the version and token checks).
    #[test]
    fn parse_round_trips_mutated_valid_messages(
        mtype in 0u8..4,
        code in any::<u8>(),
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        mut options in prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..300)), 0..4),
        payload in prop::collection::vec(any::<u8>(), 0..16),
        mutation in (0u8..4, any::<usize>(), any::<u8>()),
    ) {
        let mtype = [
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
            MessageType::Reset,
        ][usize::from(mtype)];
        options.sort_by_key(|o| o.0);
        let mut bytes = build_message(mtype, code, mid, &token, &options, &payload)
            .expect("sorted options with values under the length limit encode");
        // Unmutated, a non-empty message built by the encoder must parse.
        if code != 0 {
            prop_assert!(codec::parse(&bytes).is_ok(), "encoder output rejected: {:02x?}", bytes);
        }
        let (kind, at, value) = mutation;
        match kind {
            0 => {
                let i = at % bytes.len();
                bytes[i] ^= value | 1;
            }
            1 => bytes.truncate(at % (bytes.len() + 1)),
            2 => bytes.push(value),
            _ => {}
        }
        check_datagram(&bytes);
    }
}

/// The harness must reach deep engine states from random input, not stop at input validation:
/// over a fixed set of pseudo-random inputs every kind of outcome occurs.
#[test]
fn harness_reaches_every_outcome() {
    let mut total = Coverage::default();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for len in (0..300).map(|i| 200 + i * 7) {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect();
        total.add(&run(&data));
    }
    let c = total;
    assert!(c.steps > 10_000, "{c:?}");
    for (what, n) in [
        ("transmits", c.transmits),
        ("incoming requests", c.requests_received),
        ("responses", c.responses),
        ("request failures", c.request_failures),
        ("pongs", c.pongs),
        ("ping failures", c.ping_failures),
        ("send failures", c.send_failures),
        ("new sessions", c.sessions_new),
        ("established sessions", c.sessions_established),
        ("failed sessions", c.sessions_failed),
        ("closed sessions", c.sessions_closed),
        ("accepted responds", c.responds_ok),
        ("notifications", c.notifications),
        ("observers added", c.observers_added),
        ("observers removed", c.observers_removed),
    ] {
        assert!(n > 0, "the harness never produced any {what}: {c:?}");
    }
}

/// Found by `engine_survives_arbitrary_input_sequences` against commit 577777c: with the link
/// down (every send failing with `TooBig`) a keepalive probe was ended at once, which made the
/// next probe due at once, so an adapter following the drain rule spun at one instant. The
/// input must now run to the end with every invariant holding.
#[test]
fn regression_probe_failing_too_big_does_not_busy_loop() {
    let coverage = run(&PROBE_TOO_BIG_BUSY_LOOP);
    assert!(coverage.steps > 0 && coverage.transmits > 0, "{coverage:?}");
}

#[rustfmt::skip]
const PROBE_TOO_BIG_BUSY_LOOP: [u8; 230] = [
    0, 0, 0, 0, 0, 52, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 2, 0, 221, 0, 0, 2, 0, 0, 0, 1, 0, 0, 108, 9, 0, 8, 9,
    0, 0, 14, 0, 44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 86, 0, 1, 1, 0, 0, 164, 19, 0, 0, 0, 0, 89, 0, 0, 97, 0, 186, 107, 0, 0, 0,
    23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 216, 0, 0, 132, 3, 10, 0, 0, 0, 4, 0, 0, 0, 0, 0, 173, 0, 0, 5, 0, 1, 0, 113,
    0, 0, 0, 0, 0, 243, 0, 39, 0, 0, 0, 0, 37, 0, 124, 0, 0, 0, 0, 89, 0, 0, 163, 0,
    0, 0, 0, 52, 184, 0, 0, 0, 0, 58, 0, 8, 0, 0, 0, 0, 114, 0, 0, 0, 0, 0, 0, 0,
    0, 67, 0, 0, 0, 0, 201, 0, 0, 95, 0, 0, 48, 118,
];
