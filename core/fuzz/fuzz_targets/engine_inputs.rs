//! A whole endpoint driven by a sequence of inputs decoded from the fuzz bytes (datagrams from
//! several peers, timeouts, send results, application calls), drained after every input, with
//! the invariants of `core/tests/harness/engine_inputs.rs` checked throughout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/engine_inputs.rs"]
mod engine_inputs;

fuzz_target!(|data: &[u8]| {
    engine_inputs::run(data);
});
