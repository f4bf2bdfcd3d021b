//! What a DTLS endpoint is configured with: pre-shared keys, certificates, trust anchors.
//! PEM is read by rustls-pki-types, never by hand.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::time::Duration;

/// A client's pre-shared key (RFC 4279): the identity it names and the key (libcoap's
/// `-u identity -k key`).
#[derive(Clone, PartialEq, Eq)]
pub struct PskCredentials {
    /// The PSK identity sent to the server.
    pub identity: Vec<u8>,
    /// The shared secret.
    pub key: Vec<u8>,
}

impl fmt::Debug for PskCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskCredentials")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("key", &"<secret>")
            .finish()
    }
}

/// A server's pre-shared keys, looked up by the identity a client names. A table
/// (`BTreeMap` or `HashMap` of identity → key) or any closure is one.
///
/// ```
/// use std::collections::BTreeMap;
/// use coap_engine::dtls::PskStore;
/// let mut table = BTreeMap::new();
/// table.insert(b"sensor-1".to_vec(), b"secret-1".to_vec());
/// assert_eq!(table.key(b"sensor-1").as_deref(), Some(&b"secret-1"[..]));
/// let one = |id: &[u8]| (id == b"me").then(|| b"k".to_vec());
/// assert!(one.key(b"you").is_none());
/// ```
pub trait PskStore: Send + Sync {
    /// The key of `identity`, or `None` if it is unknown.
    fn key(&self, identity: &[u8]) -> Option<Vec<u8>>;
}

impl PskStore for BTreeMap<Vec<u8>, Vec<u8>> {
    fn key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.get(identity).cloned()
    }
}

impl PskStore for HashMap<Vec<u8>, Vec<u8>> {
    fn key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.get(identity).cloned()
    }
}

impl<F: Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync> PskStore for F {
    fn key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self(identity)
    }
}

/// Our certificate (DER) and its private key (PKCS#8 or SEC1; ECDSA P-256 or P-384).
#[derive(PartialEq, Eq)]
pub struct CertifiedKey {
    /// The end-entity certificate. Only this certificate is sent: the peer must trust its
    /// issuer directly.
    pub certificate: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for CertifiedKey {
    fn clone(&self) -> Self {
        CertifiedKey {
            certificate: self.certificate.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field(
                "certificate",
                &format_args!("{} bytes", self.certificate.len()),
            )
            .field("key", &"<secret>")
            .finish()
    }
}

impl CertifiedKey {
    /// Reads the first certificate of `cert_pem` and the private key of `key_pem`.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, DtlsConfigError> {
        let certificate = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or(DtlsConfigError::Pem("no CERTIFICATE block found"))?
            .map_err(|_| DtlsConfigError::Pem("malformed CERTIFICATE block"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| DtlsConfigError::Pem("no private key (PKCS#8 or EC) block found"))?;
        Ok(CertifiedKey { certificate, key })
    }

    /// Reads a certificate and a key from PEM files (libcoap's `-c certfile -j keyfile`;
    /// with `key` `None` the key is looked for in the certificate file, as libcoap does).
    pub fn from_pem_files(cert: &Path, key: Option<&Path>) -> Result<Self, DtlsConfigError> {
        let cert_pem = read(cert)?;
        let key_pem = match key {
            Some(k) => read(k)?,
            None => cert_pem.clone(),
        };
        CertifiedKey::from_pem(&cert_pem, &key_pem)
    }
}

/// Reads every certificate of a PEM bundle as a trust anchor (libcoap's `-C cafile` and
/// `-R trust_casfile`).
pub fn trust_anchors_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, DtlsConfigError> {
    let anchors = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DtlsConfigError::Pem("malformed CERTIFICATE block"))?;
    if anchors.is_empty() {
        return Err(DtlsConfigError::Pem("no CERTIFICATE block found"));
    }
    Ok(anchors)
}

/// [`trust_anchors_from_pem`] from a file.
pub fn trust_anchors_from_pem_file(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, DtlsConfigError> {
    trust_anchors_from_pem(&read(path)?)
}

fn read(path: &Path) -> Result<Vec<u8>, DtlsConfigError> {
    std::fs::read(path).map_err(|e| DtlsConfigError::Io(format!("{}: {e}", path.display())))
}

/// Whether a server asks clients for a certificate (certificate mode only; a PSK client
/// never sends one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate (the default, as libcoap's server without
    /// `-R`/`-C`).
    #[default]
    NotRequested,
    /// Every certificate-mode client must present a certificate issued by one of the trust
    /// anchors; a client without one fails its handshake.
    Required,
}

/// How a secure endpoint authenticates, in either role.
///
/// - **Client**: `psk` (identity and key), or `certificate` mode, where the server's
///   certificate is verified against `trust_anchors` and the name the request used
///   (its Uri-Host, else the server's IP address) unless `verify_peer` is off. With both, a
///   client uses PSK.
/// - **Server**: `psk_store` (keys looked up by identity, optional `psk_hint`) and/or
///   `certificate`; a server with both serves each client in the mode its ClientHello
///   prefers. `client_auth` asks certificate-mode clients for a certificate, verified against
///   `trust_anchors`.
///
/// ```
/// use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
/// let config = DtlsConfig {
///     psk: Some(PskCredentials { identity: b"me".to_vec(), key: b"secret".to_vec() }),
///     ..DtlsConfig::default()
/// };
/// let dtls = Dtls::new(config, [7; 32] /* 32 bytes from the OS RNG in real use */).unwrap();
/// # let _ = dtls;
/// ```
#[derive(Clone)]
pub struct DtlsConfig {
    /// Client role: our PSK identity and key.
    pub psk: Option<PskCredentials>,
    /// Server role: keys of the PSK identities we accept.
    pub psk_store: Option<Arc<dyn PskStore>>,
    /// Server role: the identity hint sent to PSK clients (RFC 4279 §2), if any.
    pub psk_hint: Option<Vec<u8>>,
    /// Our certificate and key: required for a certificate-mode server; a client sends it
    /// when the server asks.
    pub certificate: Option<CertifiedKey>,
    /// The CA certificates that issue the certificates we accept from peers.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// Client role, certificate mode: verify the server's certificate (default true).
    /// Turning it off (libcoap's `-n`) accepts any server: it gives encryption without
    /// authentication, open to a man in the middle.
    pub verify_peer: bool,
    /// Server role: whether clients must present a certificate.
    pub client_auth: ClientAuth,
    /// A handshake that has not completed this long after it started fails with
    /// [`SecurityError::HandshakeTimeout`](crate::SecurityError::HandshakeTimeout) (default
    /// 30 s). Flights are retransmitted from 1 s, doubling (RFC 6347 §4.2.4.1).
    pub handshake_timeout: Duration,
    /// Largest datagram produced (default 1280, the IPv6 minimum MTU); handshake messages
    /// are fragmented to fit.
    pub mtu: usize,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            psk: None,
            psk_store: None,
            psk_hint: None,
            certificate: None,
            trust_anchors: Vec::new(),
            verify_peer: true,
            client_auth: ClientAuth::NotRequested,
            handshake_timeout: Duration::from_secs(30),
            mtu: 1280,
        }
    }
}

impl fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsConfig")
            .field("psk", &self.psk)
            .field("psk_store", &self.psk_store.as_ref().map(|_| "<store>"))
            .field(
                "psk_hint",
                &self.psk_hint.as_ref().map(|h| String::from_utf8_lossy(h)),
            )
            .field("certificate", &self.certificate)
            .field("trust_anchors", &self.trust_anchors.len())
            .field("verify_peer", &self.verify_peer)
            .field("client_auth", &self.client_auth)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// A DTLS configuration that cannot work; the message says what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsConfigError {
    /// Neither a PSK nor a certificate for any role.
    NoCredentials,
    /// An empty PSK identity or key.
    EmptyPsk,
    /// PEM input without what was asked for.
    Pem(&'static str),
    /// A file could not be read.
    Io(String),
    /// Our private key could not be loaded (only ECDSA P-256/P-384 keys are supported).
    BadPrivateKey,
    /// A trust anchor is not a usable CA certificate.
    BadTrustAnchor,
    /// Peers' certificates are to be verified but no trust anchors were given.
    NoTrustAnchors,
    /// `client_auth` is `Required` without a server certificate (certificate mode).
    ClientAuthWithoutCertificate,
    /// The handshake timeout is zero, or the MTU is below 256 bytes or above 16384.
    OutOfRange(&'static str),
}

impl fmt::Display for DtlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsConfigError::NoCredentials => f.write_str("DTLS needs a pre-shared key or a certificate"),
            DtlsConfigError::EmptyPsk => f.write_str("a PSK identity and key must not be empty"),
            DtlsConfigError::Pem(what) => write!(f, "PEM: {what}"),
            DtlsConfigError::Io(e) => write!(f, "cannot read {e}"),
            DtlsConfigError::BadPrivateKey => f.write_str("the private key cannot be loaded (ECDSA P-256 or P-384, PKCS#8 or SEC1)"),
            DtlsConfigError::BadTrustAnchor => f.write_str("a trust anchor is not a usable CA certificate"),
            DtlsConfigError::NoTrustAnchors => f.write_str("certificates are to be verified but no trusted CA was given (libcoap: -C or -R; -n skips verification)"),
            DtlsConfigError::ClientAuthWithoutCertificate => f.write_str("requiring client certificates needs a server certificate"),
            DtlsConfigError::OutOfRange(what) => write!(f, "out of range: {what}"),
        }
    }
}

impl std::error::Error for DtlsConfigError {}
