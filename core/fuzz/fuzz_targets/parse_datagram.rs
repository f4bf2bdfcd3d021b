//! `codec::parse_header` and `codec::parse` on arbitrary bytes: never panic, agree on the
//! header, and whatever `parse` accepts survives `to_packet` + `encode_packet` (and the
//! zero-copy `encode`) byte for byte. The checks live in the shared harness so that
//! `core/tests/fuzz_inputs.rs` runs the same ones under proptest.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/engine_inputs.rs"]
mod engine_inputs;

fuzz_target!(|data: &[u8]| {
    engine_inputs::check_datagram(data);
});
