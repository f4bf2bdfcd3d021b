//! The test PKI in `tests/certs` and entropy derived from a world's seed, for the secure
//! transports' simulations.

use coap_engine::credentials::CertifiedKey;

use super::derive_seed;

/// The wall-clock time every simulated endpoint is told (2027-01-15): inside the test
/// certificates' validity.
pub const UNIX_NOW: u64 = 1_800_000_000; // the simulator's default wall clock

/// 32 bytes of "entropy" derived from a seed.
pub fn entropy(seed: u64) -> [u8; 32] {
    let mut e = [0; 32];
    for (i, chunk) in e.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&derive_seed(seed, 0xE0 + i as u64).to_be_bytes());
    }
    e
}

/// A file of the test PKI.
pub fn pem(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/certs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn certified(name: &str) -> CertifiedKey {
    CertifiedKey::from_pem(&pem(&format!("{name}.pem")), &pem(&format!("{name}.key"))).unwrap()
}
