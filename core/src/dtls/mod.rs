//! DTLS 1.2 (RFC 6347) as the security layer of `coaps://` endpoints (RFC 7252 §9), on the
//! pure-Rust, sans-IO [dimpl](https://crates.io/crates/dimpl) record layer (feature `dtls`).
//!
//! ```
//! use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
//! use coap_engine::{Config, Endpoint, Security};
//!
//! let dtls = Dtls::new(
//!     DtlsConfig {
//!         psk: Some(PskCredentials { identity: b"sensor-1".to_vec(), key: b"secret".to_vec() }),
//!         ..DtlsConfig::default()
//!     },
//!     [42; 32], // in production: 32 bytes from the operating system's RNG
//! )
//! .unwrap();
//! let config = Config { security: Some(Security::new(dtls)), ..Config::default() };
//! let client = Endpoint::new(config, 7).unwrap();
//! # let _ = client;
//! ```
//!
//! # Security model
//!
//! - **Modes** (RFC 7252 §9): PreSharedKey with `TLS_PSK_WITH_AES_128_CCM_8` (the suite
//!   RFC 7252 §9.1.3.1 mandates), and Certificate with ECDHE-ECDSA and AES-GCM or
//!   ChaCha20-Poly1305 (P-256 or X25519 key exchange; ECDSA P-256/P-384 keys). Extended
//!   Master Secret (RFC 7627) is required. DTLS 1.2 only, as libcoap 4.3.1 speaks it.
//! - **Certificates** are checked by rustls-webpki against [`DtlsConfig::trust_anchors`]:
//!   the chain, the validity period (against the wall-clock time the adapter gives with
//!   [`Endpoint::set_unix_time`](crate::Endpoint::set_unix_time)), the extended key usage, and
//!   for a server the name the client meant: the request's Uri-Host, or the server's IP
//!   address when the URI named an address. Only the peer's end-entity certificate travels
//!   in the handshake, so it must be issued directly by a trust anchor.
//! - **Server abuse limits**: a ClientHello from a new peer is answered with a
//!   HelloVerifyRequest computed from the ClientHello alone (no state is kept, and the
//!   answer is never larger than what arrived); only a ClientHello carrying a valid cookie —
//!   proof that the peer receives at its address — starts a handshake, at most
//!   [`Limits::max_handshakes`](crate::Limits::max_handshakes) at a time, each with at most
//!   16 buffered records. A peer that restarts gets a new association without an off-path
//!   sender being able to end the live one (RFC 6347 §4.2.8): the old session stays until the
//!   new handshake completes.
//! - **Randomness** comes from the 32 bytes given to [`Dtls::new`] mixed with a nonce from
//!   the endpoint's seed per association: keys are as strong as those 32 bytes, and a
//!   simulation replays exactly. Give each process fresh bytes from the OS.
//!
//! Not supported yet: `TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8` (certificate mode with CCM_8),
//! Connection ID (RFC 9146), raw public keys (RFC 7250), session resumption, DTLS 1.3, and
//! asking for a client certificate without requiring one.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

mod channel;
mod config;
mod entropy;
mod hello;
mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::TrustAnchor;

pub use crate::credentials::{
    trust_anchors_from_pem, trust_anchors_from_pem_file, CertifiedKey, ClientAuth, CredentialsError,
};
pub use config::{DtlsConfig, PskCredentials, PskStore};
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use self::channel::{Check, DtlsChannel, PskProbe};
use self::verify::Expect;
use crate::entropy::{hmac, Generator};
use crate::security::{
    Accept, ChannelParams, RecordSink, SecureChannel, SecurityError, SecurityLayer,
};
use crate::time::Instant;

/// Records buffered per association before dimpl refuses more (bounds a handshake's memory).
const MAX_QUEUED_RECORDS: usize = 16;

/// A client without a certificate of its own still needs one to build a certificate-mode
/// dimpl instance; it is sent only if a server asks for a client certificate, and such a
/// server refuses it (nobody trusts it). Its key is public on purpose: it authenticates
/// nothing.
const ANONYMOUS_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBpTCCAUugAwIBAgIUI53qaD6UFn0NHsQ5SWHfxpnUcEcwCgYIKoZIzj0EAwIw
JzElMCMGA1UEAwwcY29hcC1lbmdpbmUgYW5vbnltb3VzIGNsaWVudDAgFw0yNjEx
MjgyMDUzNTRaGA8yMTI2MTEwNDIwNTM1NFowJzElMCMGA1UEAwwcY29hcC1lbmdp
bmUgYW5vbnltb3VzIGNsaWVudDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABPRd
Kpwb09nhbjdzI0pj6mQxfp3IaH9jUpg03S6Xrz48V7miHB9h+zHabzo/T2+jMsEy
sH9jdEq1U8j1r5tAngWjUzBRMB0GA1UdDgQWBBSNPT6bwYNADqKdvqIuOq2zDUhT
oTAfBgNVHSMEGDAWgBSNPT6bwYNADqKdvqIuOq2zDUhToTAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0gAMEUCIA38WH25eAIaniSu5uXcckpDJwLPf2n9j2Dl
EMD/CpdfAiEAvTg627Zc+RbgYH7WggZF4A29n/20efMcIi0l58AR0pQ=
-----END CERTIFICATE-----
";
const ANONYMOUS_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTWD2NXgZ+E6tFDD3
9pwZEcCg7Wc6aHnK/Jp7v0Hjo5OhRANCAAT0XSqcG9PZ4W43cyNKY+pkMX6dyGh/
Y1KYNN0ul68+PFe5ohwfYfsx2m86P09vozLBMrB/Y3RKtVPI9a+bQJ4F
-----END PRIVATE KEY-----
";

/// The PSK side of one association.
enum PskRole {
    Client {
        identity: Vec<u8>,
        resolver: Arc<dyn dimpl::PskResolver>,
    },
    Server {
        hint: Option<Vec<u8>>,
        resolver: Arc<dyn dimpl::PskResolver>,
    },
}

/// Which authentication an association uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Psk,
    Certificate,
}

/// The DTLS security layer of an endpoint: put it in [`Config::security`](crate::Config::security)
/// with [`Security::new`](crate::Security::new). See the [module docs](self).
pub struct Dtls {
    config: DtlsConfig,
    /// One crypto provider per mode, each with only what that mode uses: dimpl checks
    /// every component of a provider each time it builds an association's configuration
    /// (with test signatures and key exchanges), so a PSK association must not pay for
    /// ECDSA and ECDHE it never uses.
    psk_provider: dimpl::crypto::CryptoProvider,
    certificate_provider: dimpl::crypto::CryptoProvider,
    entropy: [u8; 32],
    cookie_key: [u8; 32],
    anchors: Arc<Vec<TrustAnchor<'static>>>,
    /// Ours, or the anonymous placeholder for a client without one.
    certificate: dimpl::DtlsCertificate,
    has_certificate: bool,
}

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dtls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A client's PSK, handed to dimpl whatever hint the server sends.
struct ClientKey(Vec<u8>);

impl dimpl::PskResolver for ClientKey {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// Stands in for the PSK store of the stateless cookie computation, which never reaches a
/// key exchange.
struct NoKeys;

impl dimpl::PskResolver for NoKeys {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl Dtls {
    /// Checks `config` and makes the layer. `entropy` is the secret all of the layer's
    /// randomness derives from (keys, randoms, cookies): 32 bytes from the operating
    /// system's RNG in production, a value derived from the test's seed in a simulation.
    pub fn new(config: DtlsConfig, entropy: [u8; 32]) -> Result<Dtls, CredentialsError> {
        if config.handshake_timeout == crate::Duration::ZERO {
            return Err(CredentialsError::OutOfRange(
                "handshake_timeout must be greater than zero",
            ));
        }
        if !(256..=16384).contains(&config.mtu) {
            return Err(CredentialsError::OutOfRange(
                "mtu must be 256 to 16384 bytes",
            ));
        }
        if let Some(psk) = &config.psk {
            if psk.identity.is_empty() || psk.key.is_empty() {
                return Err(CredentialsError::EmptyPsk);
            }
        }
        let nothing = config.psk.is_none()
            && config.psk_store.is_none()
            && config.certificate.is_none()
            && config.trust_anchors.is_empty()
            && config.verify_peer;
        if nothing {
            return Err(CredentialsError::NoCredentials);
        }
        let (psk_provider, certificate_provider) = providers();
        let provider = &certificate_provider;
        let (certificate, has_certificate) = match &config.certificate {
            Some(c) => (
                dimpl::DtlsCertificate {
                    certificate: c.certificate.to_vec(),
                    private_key: c.key.secret_der().to_vec(),
                },
                true,
            ),
            None => {
                let c =
                    CertifiedKey::from_pem(ANONYMOUS_CERT.as_bytes(), ANONYMOUS_KEY.as_bytes())?;
                (
                    dimpl::DtlsCertificate {
                        certificate: c.certificate.to_vec(),
                        private_key: c.key.secret_der().to_vec(),
                    },
                    false,
                )
            }
        };
        // dimpl panics on a key it cannot load: load it here first.
        if certificate.certificate.is_empty()
            || provider
                .key_provider
                .load_private_key(&certificate.private_key)
                .is_err()
        {
            return Err(CredentialsError::BadPrivateKey);
        }
        let anchors =
            verify::anchors(&config.trust_anchors).map_err(|_| CredentialsError::BadTrustAnchor)?;
        if config.client_auth == ClientAuth::Optional {
            return Err(CredentialsError::Unsupported(
                "optional client certificates over DTLS (dimpl asks only when it requires one)",
            ));
        }
        if config.client_auth == ClientAuth::Required {
            if !has_certificate {
                return Err(CredentialsError::ClientAuthWithoutCertificate);
            }
            if anchors.is_empty() {
                return Err(CredentialsError::NoTrustAnchors);
            }
        }
        let cookie_key = hmac(&entropy, &[b"cookie"]);
        Ok(Dtls {
            config,
            psk_provider,
            certificate_provider,
            entropy,
            cookie_key,
            anchors: Arc::new(anchors),
            certificate,
            has_certificate,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &DtlsConfig {
        &self.config
    }

    /// dimpl's configuration for one association.
    fn dimpl_config(
        &self,
        seed: u64,
        mode: Mode,
        psk: Option<PskRole>,
    ) -> Result<Arc<dimpl::Config>, SecurityError> {
        use dimpl::crypto::Dtls12CipherSuite as Suite;
        let suites: &[Suite] = match mode {
            Mode::Psk => &[Suite::PSK_AES128_CCM_8],
            Mode::Certificate => &[
                Suite::ECDHE_ECDSA_AES128_GCM_SHA256,
                Suite::ECDHE_ECDSA_AES256_GCM_SHA384,
                Suite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256,
            ],
        };
        let mut builder = dimpl::Config::builder()
            .with_crypto_provider(match mode {
                Mode::Psk => self.psk_provider.clone(),
                Mode::Certificate => self.certificate_provider.clone(),
            })
            .dangerously_set_rng_seed(seed)
            .mtu(self.config.mtu)
            .max_queue_rx(MAX_QUEUED_RECORDS)
            .max_queue_tx(MAX_QUEUED_RECORDS)
            .handshake_timeout(self.config.handshake_timeout.into())
            .flight_start_rto(core::time::Duration::from_secs(1))
            // The overall handshake timeout decides, not a count of flights.
            .flight_retries(32)
            .require_client_certificate(self.config.client_auth == ClientAuth::Required)
            .use_server_cookie(true)
            .dtls12_cipher_suites(suites)
            .dtls13_cipher_suites(&[]);
        builder = match psk {
            Some(PskRole::Client { identity, resolver }) => {
                builder.with_psk_client(identity, resolver)
            }
            Some(PskRole::Server { hint, resolver }) => builder.with_psk_server(hint, resolver),
            None => builder,
        };
        // dimpl tries a key exchange of every group while it validates: lend it a
        // generator (whose keys are thrown away) so that nothing falls back to another source.
        let mut validation = Some(self.generator(b"validate", &[&seed.to_be_bytes()]));
        crate::entropy::with_generator(&mut validation, || builder.build())
            .map(Arc::new)
            .map_err(|e| {
                log::warn!("DTLS: configuration refused by dimpl: {e}");
                SecurityError::Internal
            })
    }

    /// The association's generator and dimpl's seed, from our secret and the engine's nonce.
    fn generator(&self, label: &[u8], parts: &[&[u8]]) -> Generator {
        let mut input: Vec<&[u8]> = vec![label];
        input.extend_from_slice(parts);
        Generator::new(hmac(&self.entropy, &input))
    }

    /// The seed of the server instance answering `peer`'s ClientHello with `random`: the
    /// same for the cookie-less ClientHello and the one with the cookie, so the cookie that
    /// dimpl computes at the first is the one it accepts at the second; keyed by our secret
    /// and the peer's address, so a cookie is good for that address only.
    fn cookie_seed(&self, peer: SocketAddr, random: &[u8]) -> u64 {
        let addr = address_bytes(peer);
        // The random's first four bytes are the client's clock (RFC 5246 §7.4.1.2); dimpl
        // fills them from the system clock, which would make a simulation's server timing
        // depend on when it ran. The other 28 bytes are random.
        let random = random.get(4..).unwrap_or(random);
        let digest = hmac(&self.cookie_key, &[&addr, random]);
        u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }

    /// The mode a server uses for a ClientHello: the first suite offered that we serve.
    fn server_mode(&self, suites: impl Iterator<Item = u16>) -> Mode {
        let psk = self.config.psk_store.is_some();
        for s in suites {
            if psk && s == hello::PSK_AES128_CCM_8 {
                return Mode::Psk;
            }
            if self.has_certificate && hello::ECDHE_ECDSA_SUITES.contains(&s) {
                return Mode::Certificate;
            }
        }
        // Nothing in common: the handshake fails with a typed reason.
        if self.has_certificate {
            Mode::Certificate
        } else {
            Mode::Psk
        }
    }

    /// A server instance for `peer` at `seed`, in `mode`.
    fn server_instance(
        &self,
        now: Instant,
        seed: u64,
        mode: Mode,
        probe: Option<Arc<PskProbe>>,
    ) -> Result<dimpl::Dtls, SecurityError> {
        let t = channel_time(now);
        Ok(match mode {
            Mode::Psk => {
                let resolver: Arc<dyn dimpl::PskResolver> = match probe {
                    Some(p) => p,
                    None => Arc::new(NoKeys),
                };
                let psk = PskRole::Server {
                    hint: self.config.psk_hint.clone(),
                    resolver,
                };
                dimpl::Dtls::new_12_psk(self.dimpl_config(seed, mode, Some(psk))?, t)
            }
            Mode::Certificate => dimpl::Dtls::new_12(
                self.dimpl_config(seed, mode, None)?,
                self.certificate.clone(),
                t,
            ),
        })
    }
}

/// The crypto providers of the two modes: dimpl's RustCrypto provider cut down to the
/// DTLS 1.2 suites each mode negotiates, with the engine's seeded key exchanges. (dimpl
/// insists on DTLS 1.3 suites in a provider; a 1.2 instance never uses them.)
fn providers() -> (dimpl::crypto::CryptoProvider, dimpl::crypto::CryptoProvider) {
    use dimpl::crypto::{Dtls12CipherSuite as Suite, SupportedDtls12CipherSuite};
    type Suites = &'static [&'static dyn SupportedDtls12CipherSuite];
    static CUT: std::sync::OnceLock<(Suites, Suites)> = std::sync::OnceLock::new();
    let all = dimpl::crypto::rust_crypto::default_provider();
    let (psk, ecdhe) = *CUT.get_or_init(|| {
        let pick = |want: &[Suite]| -> Suites {
            // Made once per process and kept for its life (dimpl takes static slices).
            Box::leak(
                all.cipher_suites
                    .iter()
                    .copied()
                    .filter(|s| want.contains(&s.suite()))
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            )
        };
        (
            pick(&[Suite::PSK_AES128_CCM_8]),
            pick(&[
                Suite::ECDHE_ECDSA_AES128_GCM_SHA256,
                Suite::ECDHE_ECDSA_AES256_GCM_SHA384,
                Suite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256,
            ]),
        )
    });
    let mut p = all.clone();
    p.cipher_suites = psk;
    p.kx_groups = &[];
    let mut c = all;
    c.cipher_suites = ecdhe;
    c.kx_groups = entropy::KX_GROUPS;
    (p, c)
}

fn channel_time(now: Instant) -> std::time::Instant {
    channel::to_std_instant(now)
}

fn address_bytes(peer: SocketAddr) -> Vec<u8> {
    let mut v = match peer.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&peer.port().to_be_bytes());
    v
}

/// Collects what a throwaway or fresh instance produced, to look at before passing on.
#[derive(Default)]
struct Collect {
    datagrams: Vec<Vec<u8>>,
}

impl RecordSink for Collect {
    fn transmit(&mut self, datagram: &[u8]) {
        self.datagrams.push(datagram.to_vec());
    }
    fn deliver(&mut self, _message: &[u8]) {}
}

impl SecurityLayer for Dtls {
    fn connect(
        &self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<&str>,
        params: ChannelParams,
    ) -> Result<Box<dyn SecureChannel>, SecurityError> {
        let mut generator = self.generator(
            b"client",
            &[&params.nonce.to_be_bytes(), &address_bytes(peer)],
        );
        let seed = generator.next_u64();
        let t = channel_time(now);
        let (mut dtls, check) = match &self.config.psk {
            Some(psk) => {
                let resolver = Arc::new(ClientKey(psk.key.clone()));
                let psk = PskRole::Client {
                    identity: psk.identity.clone(),
                    resolver,
                };
                let config = self.dimpl_config(seed, Mode::Psk, Some(psk))?;
                (dimpl::Dtls::new_12_psk(config, t), Check::Psk(None))
            }
            None => {
                let check = if self.config.verify_peer {
                    if self.anchors.is_empty() {
                        log::warn!("DTLS: no trust anchors to verify the server with");
                        return Err(SecurityError::NoCredentials);
                    }
                    let name = verify::server_name(server_name, peer.ip());
                    Check::Certificate(self.anchors.clone(), Expect::Server(name))
                } else {
                    Check::Nothing
                };
                let config = self.dimpl_config(seed, Mode::Certificate, None)?;
                (
                    dimpl::Dtls::new_12(config, self.certificate.clone(), t),
                    check,
                )
            }
        };
        dtls.set_active(true);
        Ok(Box::new(DtlsChannel::new(
            dtls,
            generator,
            true,
            check,
            params.unix_epoch,
        )))
    }

    fn accept(
        &self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        params: ChannelParams,
        sink: &mut dyn RecordSink,
    ) -> Accept {
        if self.config.psk_store.is_none() && !self.has_certificate {
            return Accept::Ignore; // a client-only endpoint serves no handshakes
        }
        if !hello::records_ok(datagram) {
            return Accept::Ignore;
        }
        let Some(ch) = hello::client_hello(datagram) else {
            return Accept::Ignore;
        };
        let seed = self.cookie_seed(peer, ch.random);
        let first = ch.without_cookie();
        if ch.cookie.is_empty() {
            // Stateless: a throwaway instance with this ClientHello's seed computes the
            // HelloVerifyRequest, and is gone when this returns.
            let Ok(mut oracle) = self.server_instance(now, seed, Mode::Psk, None) else {
                return Accept::Ignore;
            };
            let mut hvr = Collect::default();
            if oracle.handle_packet(&first).is_err() {
                return Accept::Ignore;
            }
            channel::drain(&mut oracle, &mut hvr);
            for d in hvr.datagrams {
                // Never more bytes out than in: no amplification for a spoofed sender.
                if hello::is_hello_verify_request(&d) && d.len() <= datagram.len() {
                    sink.transmit(&d);
                }
            }
            return Accept::Replied;
        }
        let mode = self.server_mode(ch.suites());
        let probe = match mode {
            Mode::Psk => self
                .config
                .psk_store
                .clone()
                .map(|s| Arc::new(PskProbe::new(s))),
            Mode::Certificate => None,
        };
        let Ok(dtls) = self.server_instance(now, seed, mode, probe.clone()) else {
            return Accept::Ignore;
        };
        let check = match mode {
            Mode::Psk => Check::Psk(probe),
            Mode::Certificate if self.config.client_auth == ClientAuth::Required => {
                Check::Certificate(self.anchors.clone(), Expect::Client)
            }
            Mode::Certificate => Check::Nothing,
        };
        let generator = self.generator(
            b"server",
            &[&params.nonce.to_be_bytes(), &address_bytes(peer)],
        );
        let mut channel = DtlsChannel::new(dtls, generator, false, check, params.unix_epoch);
        // The state this server would be in had it answered the cookie-less ClientHello
        // itself: that answer was the stateless one above.
        let mut discard = Collect::default();
        if channel
            .drive(now, &mut discard, |d| d.handle_packet(&first))
            .is_err()
        {
            return Accept::Ignore;
        }
        let mut out = Collect::default();
        if let Err(e) = channel.drive(now, &mut out, |d| d.handle_packet(datagram)) {
            // The cookie was good (a mismatch is answered, not an error): the peer is at its
            // address and hears the alert saying why, e.g. no cipher suite in common.
            for d in out.datagrams.iter().filter(|d| d.len() <= datagram.len()) {
                sink.transmit(d);
            }
            return Accept::Refused(e);
        }
        if out
            .datagrams
            .iter()
            .any(|d| hello::is_hello_verify_request(d))
        {
            // The cookie was not the one for this address and ClientHello: challenge again.
            for d in out.datagrams.iter().filter(|d| d.len() <= datagram.len()) {
                sink.transmit(d);
            }
            return Accept::Replied;
        }
        for d in &out.datagrams {
            sink.transmit(d);
        }
        Accept::Open(Box::new(channel))
    }

    fn opens_association(&self, datagram: &[u8]) -> bool {
        hello::starts_client_hello(datagram)
    }

    fn name(&self) -> &'static str {
        "DTLS 1.2"
    }
}
