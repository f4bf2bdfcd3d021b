//! RFC 8323 framing: arbitrary bytes and framed messages pushed into a `Deframer` in
//! arbitrary chunks, every result checked against a reference reading of the RFC; see
//! `core/tests/harness/stream_framing.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/stream_framing.rs"]
mod stream_framing;

fuzz_target!(|data: &[u8]| {
    stream_framing::run(data);
});
