//! What a DTLS endpoint is configured with: pre-shared keys, certificates, trust anchors.
//! PEM is read by rustls-pki-types, never by hand.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::credentials::{CertifiedKey, ClientAuth};

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
