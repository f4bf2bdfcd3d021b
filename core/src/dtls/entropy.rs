//! Randomness for DTLS from the endpoint's inputs, never from the operating system.
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

use dimpl::crypto::{ActiveKeyExchange, Buf, NamedGroup, SupportedKxGroup};
use dimpl::CryptoError;
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

fn draw(out: &mut [u8]) -> Result<(), CryptoError> {
    LENT.with(|slot| match slot.borrow_mut().as_mut() {
        Some(g) => {
            g.fill(out);
            Ok(())
        }
        None => Err(CryptoError::OperationFailed(
            dimpl::CryptoOperation::GenerateEphemeralKey,
        )),
    })
}

/// An ephemeral key pair drawn from the lent generator.
enum Exchange {
    X25519 {
        secret: x25519_dalek::StaticSecret,
        public: Buf,
    },
    P256 {
        secret: p256::SecretKey,
        public: Buf,
    },
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exchange::X25519 { .. } => "Exchange::X25519",
            Exchange::P256 { .. } => "Exchange::P256",
        })
    }
}

impl ActiveKeyExchange for Exchange {
    fn pub_key(&self) -> &[u8] {
        match self {
            Exchange::X25519 { public, .. } | Exchange::P256 { public, .. } => public,
        }
    }

    fn complete(self: Box<Self>, peer_pub: &[u8], out: &mut Buf) -> Result<(), CryptoError> {
        match *self {
            Exchange::X25519 { secret, .. } => {
                let peer: [u8; 32] = peer_pub
                    .try_into()
                    .map_err(|_| CryptoError::InvalidPublicKey(NamedGroup::X25519))?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                // RFC 7748 §6.1: an all-zero secret means a low-order point.
                if !shared.was_contributory() {
                    return Err(CryptoError::InvalidPublicKey(NamedGroup::X25519));
                }
                out.clear();
                out.extend_from_slice(shared.as_bytes());
                Ok(())
            }
            Exchange::P256 { secret, .. } => {
                let peer = p256::PublicKey::from_sec1_bytes(peer_pub)
                    .map_err(|_| CryptoError::InvalidPublicKey(NamedGroup::Secp256r1))?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                out.clear();
                out.extend_from_slice(shared.raw_secret_bytes().as_slice());
                Ok(())
            }
        }
    }

    fn group(&self) -> NamedGroup {
        match self {
            Exchange::X25519 { .. } => NamedGroup::X25519,
            Exchange::P256 { .. } => NamedGroup::Secp256r1,
        }
    }
}

#[derive(Debug)]
struct X25519;

impl SupportedKxGroup for X25519 {
    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }

    fn start_exchange(&self, mut buf: Buf) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let mut bytes = [0; 32];
        draw(&mut bytes)?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        buf.clear();
        buf.extend_from_slice(x25519_dalek::PublicKey::from(&secret).as_bytes());
        Ok(Box::new(Exchange::X25519 {
            secret,
            public: buf,
        }))
    }
}

#[derive(Debug)]
struct P256;

impl SupportedKxGroup for P256 {
    fn name(&self) -> NamedGroup {
        NamedGroup::Secp256r1
    }

    fn start_exchange(&self, mut buf: Buf) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        // Rejection sampling: a 32-byte string is a valid scalar with probability ≈ 1 - 2^-32.
        for _ in 0..16 {
            let mut bytes = [0; 32];
            draw(&mut bytes)?;
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                buf.clear();
                buf.extend_from_slice(&secret.public_key().to_sec1_bytes());
                return Ok(Box::new(Exchange::P256 {
                    secret,
                    public: buf,
                }));
            }
        }
        Err(CryptoError::OperationFailed(
            dimpl::CryptoOperation::GenerateEphemeralKey,
        ))
    }
}

static KX_X25519: X25519 = X25519;
static KX_P256: P256 = P256;

/// The key-exchange groups of the engine's DTLS, in order of preference.
pub(crate) static KX_GROUPS: &[&dyn SupportedKxGroup] = &[&KX_X25519, &KX_P256];

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

    #[test]
    fn key_exchange_needs_a_lent_generator_and_agrees() {
        assert!(KX_P256.start_exchange(Buf::new()).is_err());
        let mut g1 = Some(Generator::new([3; 32]));
        let mut g2 = Some(Generator::new([4; 32]));
        for group in KX_GROUPS {
            let a = with_generator(&mut g1, || group.start_exchange(Buf::new())).unwrap();
            let b = with_generator(&mut g2, || group.start_exchange(Buf::new())).unwrap();
            let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
            let (mut sa, mut sb) = (Buf::new(), Buf::new());
            a.complete(&pb, &mut sa).unwrap();
            b.complete(&pa, &mut sb).unwrap();
            assert_eq!(&*sa, &*sb, "{:?}", group.name());
        }
        assert!(g1.is_some(), "the generator comes back after the call");
    }
}
