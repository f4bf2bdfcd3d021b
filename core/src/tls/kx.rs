//! rustls' crypto provider for the engine: *ring*'s cipher suites and signature checks, with
//! every random value drawn from the generator the connection lends (`crate::entropy`),
//! never from the operating system. That covers the randoms, the ephemeral ECDHE keys
//! (X25519 and P-256) and our ECDSA signatures (deterministic, RFC 6979); so a simulation
//! replays byte for byte from its seed. Only an RSA server key, which *ring* signs with its
//! own randomness (RSA-PSS), is the exception.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::sync::Arc;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{Error, NamedGroup, SignatureAlgorithm, SignatureScheme};
use sha2::Digest;

use crate::entropy::draw;

/// The provider TLS connections use.
pub(super) fn provider() -> CryptoProvider {
    let ring = rustls::crypto::ring::default_provider();
    CryptoProvider {
        kx_groups: vec![&X25519 as &dyn SupportedKxGroup, &P256],
        secure_random: &Lent,
        key_provider: &Keys,
        ..ring
    }
}

/// Randomness from the lent generator; an error (the handshake fails) when none is lent.
#[derive(Debug)]
struct Lent;

impl SecureRandom for Lent {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        if draw(buf) {
            Ok(())
        } else {
            Err(GetRandomFailed)
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0; N];
    if draw(&mut out) {
        Ok(out)
    } else {
        Err(Error::FailedToGetRandomBytes)
    }
}

#[derive(Debug)]
struct X25519Group;
static X25519: X25519Group = X25519Group;

#[derive(Debug)]
struct P256Group;
static P256: P256Group = P256Group;

impl SupportedKxGroup for X25519Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = x25519_dalek::StaticSecret::from(random::<32>()?);
        let public = x25519_dalek::PublicKey::from(&secret).as_bytes().to_vec();
        Ok(Box::new(Exchange::X25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl SupportedKxGroup for P256Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        // A uniformly drawn scalar is out of range with probability ~2^-32: draw again.
        for _ in 0..8 {
            if let Ok(secret) = p256::SecretKey::from_slice(&random::<32>()?) {
                let public = secret.public_key().to_sec1_bytes().to_vec();
                return Ok(Box::new(Exchange::P256 { secret, public }));
            }
        }
        Err(Error::FailedToGetRandomBytes)
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp256r1
    }
}

/// An ephemeral key pair.
enum Exchange {
    X25519 {
        secret: x25519_dalek::StaticSecret,
        public: Vec<u8>,
    },
    P256 {
        secret: p256::SecretKey,
        public: Vec<u8>,
    },
}

impl ActiveKeyExchange for Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let bad = || Error::from(rustls::PeerMisbehaved::InvalidKeyShare);
        match *self {
            Exchange::X25519 { secret, .. } => {
                let peer: [u8; 32] = peer_pub_key.try_into().map_err(|_| bad())?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
                // RFC 7748 §6.1: an all-zero secret means a low-order point.
                if !shared.was_contributory() {
                    return Err(bad());
                }
                Ok(SharedSecret::from(&shared.as_bytes()[..]))
            }
            Exchange::P256 { secret, .. } => {
                let peer = p256::PublicKey::from_sec1_bytes(peer_pub_key).map_err(|_| bad())?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                Ok(SharedSecret::from(shared.raw_secret_bytes().as_slice()))
            }
        }
    }

    fn pub_key(&self) -> &[u8] {
        match self {
            Exchange::X25519 { public, .. } | Exchange::P256 { public, .. } => public,
        }
    }

    fn group(&self) -> NamedGroup {
        match self {
            Exchange::X25519 { .. } => NamedGroup::X25519,
            Exchange::P256 { .. } => NamedGroup::secp256r1,
        }
    }
}

/// Loads our private key: ECDSA P-256 keys sign deterministically here; anything else is
/// *ring*'s.
#[derive(Debug)]
struct Keys;

impl KeyProvider for Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        let ec = match &key_der {
            PrivateKeyDer::Pkcs8(k) => {
                p256::ecdsa::SigningKey::from_pkcs8_der(k.secret_pkcs8_der()).ok()
            }
            PrivateKeyDer::Sec1(k) => p256::SecretKey::from_sec1_der(k.secret_sec1_der())
                .ok()
                .map(p256::ecdsa::SigningKey::from),
            _ => None,
        };
        match ec {
            Some(key) => Ok(Arc::new(EcdsaP256(Arc::new(key)))),
            None => rustls::crypto::ring::sign::any_supported_type(&key_der),
        }
    }
}

#[derive(Clone)]
struct EcdsaP256(Arc<p256::ecdsa::SigningKey>);

impl std::fmt::Debug for EcdsaP256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcdsaP256")
    }
}

impl SigningKey for EcdsaP256 {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for EcdsaP256 {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let hash = sha2::Sha256::digest(message);
        let signature: p256::ecdsa::Signature = self
            .0
            .sign_prehash(&hash)
            .map_err(|_| Error::General("ECDSA signing failed".into()))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
