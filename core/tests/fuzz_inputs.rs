//! The fuzz harness (`harness/engine_inputs.rs`, also used by the cargo-fuzz targets in
//! `core/fuzz`) run under proptest for a short time in every `cargo test`, so CI exercises the
//! same input sequences and invariants the fuzzer does. Longer runs: see `core/fuzz/README.md`.
#![cfg(all(feature = "client", feature = "server", feature = "observe"))]

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

/// Found by the harness: a Confirmable re-registration of an observation carried a response
/// deadline too, so the exchange timed out while its CON was still retransmitting, and a
/// later TooBig send failure of that CON ended the request a second time.
#[test]
fn regression_observation_ended_twice_by_timeout_then_send_failure() {
    run(&REGRESSION_DOUBLE_TERMINAL);
}

#[rustfmt::skip]
const REGRESSION_DOUBLE_TERMINAL: [u8; 1035] = [
    4, 31, 97, 0, 2, 39, 58, 4, 86, 1, 0, 199, 0, 0, 0, 4, 0, 0, 0, 13, 0, 0, 0, 74,
    67, 44, 12, 2, 34, 4, 41, 0, 0, 44, 0, 0, 0, 157, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 44, 0, 5, 61, 65, 17, 0, 1, 0, 1, 0, 11, 138, 77, 0, 0, 0, 0, 0, 51,
    55, 0, 220, 0, 0, 0, 0, 3, 0, 121, 187, 4, 1, 0, 1, 8, 0, 29, 0, 128, 187, 1, 5, 0,
    0, 126, 0, 66, 103, 0, 0, 0, 0, 0, 0, 0, 8, 3, 0, 254, 0, 1, 1, 0, 0, 4, 56, 179,
    75, 0, 76, 90, 0, 0, 123, 15, 0, 11, 64, 0, 121, 113, 0, 0, 0, 1, 56, 0, 29, 0, 38, 0,
    1, 0, 48, 0, 61, 0, 149, 16, 24, 0, 0, 17, 192, 0, 92, 1, 0, 2, 21, 9, 41, 0, 0, 24,
    36, 0, 0, 0, 0, 48, 3, 0, 16, 0, 1, 9, 1, 0, 4, 18, 0, 0, 11, 42, 0, 0, 16, 47,
    0, 0, 0, 0, 0, 0, 60, 16, 128, 27, 0, 11, 32, 0, 50, 0, 0, 0, 176, 0, 0, 0, 13, 59,
    168, 0, 94, 0, 0, 0, 28, 0, 74, 0, 0, 27, 0, 11, 0, 0, 61, 0, 100, 1, 0, 9, 0, 227,
    0, 0, 146, 0, 6, 126, 0, 0, 0, 0, 0, 0, 43, 0, 184, 0, 1, 9, 2, 0, 20, 142, 0, 0,
    0, 0, 0, 0, 75, 0, 0, 0, 0, 142, 0, 0, 0, 57, 0, 0, 34, 0, 6, 243, 0, 0, 0, 0,
    105, 0, 0, 37, 1, 104, 0, 0, 124, 43, 0, 0, 0, 84, 0, 4, 17, 0, 134, 0, 0, 0, 14, 0,
    123, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 126, 0, 244, 0, 0, 0, 0, 0, 62, 0, 0, 90, 42, 117, 0, 182, 0, 173, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 37, 0, 0, 0, 0, 12, 198, 0, 0, 0, 0, 0, 0, 0, 0, 188, 0, 4, 0,
    0, 159, 0, 0, 85, 0, 5, 0, 3, 0, 0, 0, 91, 0, 126, 0, 13, 0, 86, 0, 0, 0, 0, 0,
    0, 1, 0, 0, 5, 0, 0, 73, 0, 0, 0, 0, 250, 0, 0, 0, 0, 0, 0, 0, 32, 85, 0, 0,
    0, 0, 0, 40, 0, 0, 0, 0, 0, 10, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 153, 47, 0, 0, 0, 0,
    53, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 114, 0, 0, 0, 236, 0, 0, 0, 19, 0, 0, 0, 34, 0, 0, 0, 0, 48, 8, 41, 0, 0, 22,
    0, 0, 0, 52, 0, 0, 0, 102, 0, 5, 0, 0, 0, 0, 0, 0, 20, 0, 0, 184, 142, 0, 0, 0,
    0, 0, 0, 20, 58, 0, 0, 0, 9, 0, 0, 223, 0, 90, 0, 25, 137, 0, 0, 0, 197, 0, 0, 0,
    0, 0, 0, 209, 0, 106, 0, 0, 0, 0, 0, 0, 209, 0, 80, 2, 0, 44, 0, 1, 57, 0, 0, 192,
    73, 0, 0, 1, 0, 0, 62, 38, 0, 150, 0, 0, 0, 219, 3, 91, 0, 3, 139, 0, 0, 253, 0, 38,
    0, 0, 0, 104, 0, 138, 0, 0, 13, 0, 47, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14, 46, 165, 98, 154, 188, 150, 113, 128, 125,
    10, 43, 79, 66, 235, 192, 118, 68, 132, 113, 140, 142, 13, 31, 152, 134, 99, 94, 188, 245, 83, 8, 136, 10,
    183, 104, 6, 173, 90, 214, 241, 119, 235, 223, 85, 112, 145, 140, 193, 98, 246, 67, 133, 70, 23, 6, 143, 153,
    179, 47, 42, 111, 149, 144, 141, 43, 108, 130, 241, 34, 116, 40, 224, 96, 203, 46, 44, 163, 106, 33, 117, 127,
    177, 241, 249, 14, 107, 95, 53, 96, 253, 224, 55, 223, 45, 192, 91, 173, 39, 39, 74, 59, 77, 122, 21, 25,
    216, 85, 150, 36, 56, 122, 244, 236, 73, 235, 36, 109, 91, 19, 17, 46, 212, 46, 66, 176, 65, 116, 162, 255,
    174, 80, 184, 37, 41, 43, 251, 55, 228, 144, 224, 50, 196, 138, 32, 167, 135, 135, 223, 4, 37, 118, 2, 240,
    37, 178, 163, 19, 165, 55, 104, 220, 195, 164, 18, 202, 149, 203, 59, 59, 104, 150, 74, 181, 25, 69, 159, 57,
    150, 54, 229, 130, 38, 102, 11, 159, 19, 58, 103, 226, 129, 130, 40, 71, 122, 235, 242, 2, 44, 97, 202, 4,
    110, 29, 119, 116, 4, 229, 59, 86, 211, 2, 188, 223, 195, 225, 115, 137, 16, 16, 10, 162, 77, 40, 239, 45,
    66, 21, 242, 90, 87, 41, 27, 253, 89, 80, 21, 59, 230, 126, 152, 209, 185, 67, 137, 86, 234, 207, 56, 144,
    246, 119, 231,
];
