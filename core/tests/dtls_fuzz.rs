//! The DTLS fuzz harness (`harness/dtls_records.rs`, also the cargo-fuzz target
//! `dtls_records`) under proptest in every `cargo test`: arbitrary, mangled, replayed and
//! misaddressed records into a client and a server DTLS session. Longer runs: see
//! `core/fuzz/README.md`.
#![cfg(feature = "dtls")]

#[path = "harness/dtls_records.rs"]
mod dtls_records;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn dtls_sessions_survive_arbitrary_records(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        dtls_records::run(&data);
    }
}

/// A sequence that completes a handshake and a request, then mangles records: the harness
/// does reach the interesting states (a guard against it bouncing off at the start).
#[test]
fn a_plain_exchange_through_the_harness_completes() {
    // request, then deliveries until the handshake and the exchange are done
    let mut data = vec![0];
    data.extend(std::iter::repeat_n(1, 12));
    // mangle a few of each side's records, then more deliveries and time
    for i in 0..8u8 {
        data.extend_from_slice(&[4, i % 2, 0, i, i % 5, 0, 9, i]);
        data.extend_from_slice(&[1, 7, 0, 200]);
    }
    dtls_records::run(&data);
}
