//! Randomness for the security layers from the endpoint's inputs, never from the operating
//! system.
//!
//! The engine reads no entropy source, so a DTLS layer is given 32 secret bytes once
//! ([`Dtls::new`](super::Dtls::new)) and every association mixes them with a fresh nonce from
//! the endpoint's seeded generator. Production code fills those 32 bytes from the OS; a
//! simulation derives them from its seed and replays exactly.
//!
//! Two consumers inside dimpl need randomness: its own seedable generator (randoms, cookie
//! secret, explicit nonces, timer jitter), which takes a `u64` seed per association, and the
//! ephemeral ECDHE keys of certificate mode, which its crypto provider draws from static
//! key-exchange groups. Those groups cannot be handed a generator, so the association lends
//! its generator to the current thread for the duration of each call into dimpl
//! ([`with_generator`]); the groups below draw from it and fail (never fall back to
//! something weaker) when none is lent.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::cell::RefCell;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `parts` under `key`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A deterministic random bit generator: HMAC-SHA256 in counter mode (a PRF keyed with 32
/// secret bytes, NIST SP 800-108 style). Cryptographically strong for as long as its key
/// is secret.
pub(crate) struct Generator {
    key: [u8; 32],
    counter: u64,
}

impl Generator {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Generator { key, counter: 0 }
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            self.counter += 1;
            let block = hmac(&self.key, &[b"block", &self.counter.to_be_bytes()]);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    #[cfg(feature = "dtls")]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill(&mut b);
        u64::from_be_bytes(b)
    }
}

thread_local! {
    static LENT: RefCell<Option<Generator>> = const { RefCell::new(None) };
}

/// Runs `f` (a call into dimpl) with `generator` lent to the key-exchange groups.
pub(crate) fn with_generator<R>(generator: &mut Option<Generator>, f: impl FnOnce() -> R) -> R {
    LENT.with(|slot| *slot.borrow_mut() = generator.take());
    let result = f();
    LENT.with(|slot| *generator = slot.borrow_mut().take());
    result
}

/// Fills `out` from the generator lent to this thread; false if none is (the caller fails
/// rather than fall back to anything weaker).
pub(crate) fn draw(out: &mut [u8]) -> bool {
    LENT.with(|slot| match slot.borrow_mut().as_mut() {
        Some(g) => {
            g.fill(out);
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_keyed() {
        let (mut a, mut b, mut c) = (
            Generator::new([1; 32]),
            Generator::new([1; 32]),
            Generator::new([2; 32]),
        );
        let (mut x, mut y, mut z) = ([0u8; 70], [0u8; 70], [0u8; 70]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x[..32], x[32..64]);
    }
}
