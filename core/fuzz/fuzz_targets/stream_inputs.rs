//! One CoAP-over-TCP endpoint driven by a sequence of connection events, peer bytes (garbage
//! or crafted frames), time, write results and application calls decoded from the fuzz
//! bytes, with the invariants of `core/tests/harness/stream_inputs.rs` checked throughout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/stream_inputs.rs"]
mod stream_inputs;

fuzz_target!(|data: &[u8]| {
    stream_inputs::run(data);
});
