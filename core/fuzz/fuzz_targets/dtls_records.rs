//! A PSK client and server DTLS session in memory, fed arbitrary, mangled, replayed and
//! misaddressed records between their own, with the invariants of
//! `core/tests/harness/dtls_records.rs` checked throughout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/dtls_records.rs"]
mod dtls_records;

fuzz_target!(|data: &[u8]| {
    dtls_records::run(data);
});
