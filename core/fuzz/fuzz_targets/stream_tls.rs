//! A TLS client and server endpoint over an in-memory connection that the fuzz bytes open,
//! break, half-open and damage, with strangers replaying the client's bytes, and the
//! invariants of `core/tests/harness/stream_tls.rs` checked throughout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/stream_tls.rs"]
mod stream_tls;

fuzz_target!(|data: &[u8]| {
    stream_tls::run(data);
});
