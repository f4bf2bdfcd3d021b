//! dimpl's key-exchange groups, drawing their ephemeral keys from the generator the
//! association lends (see `crate::entropy`).

#[allow(unused_imports)]
use std::prelude::rust_2021::*;

use dimpl::crypto::{ActiveKeyExchange, Buf, NamedGroup, SupportedKxGroup};
use dimpl::CryptoError;

use crate::entropy::draw;

fn random(out: &mut [u8]) -> Result<(), CryptoError> {
    if draw(out) {
        Ok(())
    } else {
        Err(CryptoError::OperationFailed(
            dimpl::CryptoOperation::GenerateEphemeralKey,
        ))
    }
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
        random(&mut bytes)?;
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
            random(&mut bytes)?;
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
    use crate::entropy::{with_generator, Generator};

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
