//! TLS (RFC 8323 §9, `coaps+tcp://`) as the security layer of CoAP-over-TCP endpoints, on
//! rustls' unbuffered (sans-IO) API (feature `tls`): TLS 1.3 and 1.2, X.509 certificates
//! checked by rustls against [`TlsConfig::trust_anchors`] and the name the client meant (the
//! request's Uri-Host, or the server's address), optional or required client
//! certificates, ALPN "coap" (§8.2; a server that selects none is accepted).
//!
//! ```
//! use coap_engine::tls::{Tls, TlsConfig};
//! use coap_engine::{Config, Endpoint, Security, Transport};
//!
//! let anchors = coap_engine::credentials::trust_anchors_from_pem(include_bytes!(
//!     "../../tests/certs/ca.pem"
//! ))
//! .unwrap();
//! let tls = Tls::new(TlsConfig { trust_anchors: anchors, ..TlsConfig::default() }, [7; 32]).unwrap();
//! let config = Config {
//!     transport: Transport::Tcp,
//!     security: Some(Security::new(tls)),
//!     ..Config::default()
//! };
//! let client = Endpoint::new(config, 1).unwrap();
//! # let _ = client;
//! ```
//!
//! The same seam as DTLS carries it (`coap_engine::security`), with the same credential
//! types ([`crate::credentials`]). Randomness (randoms, ECDHE keys) comes from the 32 bytes
//! given to [`Tls::new`] mixed with the endpoint's seed, as for DTLS; certificate validity is
//! checked against the wall-clock time the adapter gives
//! ([`Endpoint::set_unix_time`](crate::Endpoint::set_unix_time)).

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

mod channel;
mod kx;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use self::channel::TlsChannel;
pub use crate::credentials::{
    trust_anchors_from_pem, trust_anchors_from_pem_file, CertifiedKey, ClientAuth, CredentialsError,
};
use crate::entropy::{hmac, Generator};
use crate::security::{
    Accept, ChannelParams, RecordSink, SecureChannel, SecurityError, SecurityLayer,
};
use crate::time::{Duration, Instant};

/// How a TLS endpoint authenticates (X.509 certificates; RFC 8323 §9.1).
///
/// - **Client**: the server's certificate is verified against `trust_anchors` and the name
///   the request used (its Uri-Host, else the server's IP address) unless `verify_peer` is
///   off; `certificate` is presented if the server asks.
/// - **Server**: `certificate` is required; `client_auth` asks clients for theirs, verified
///   against `trust_anchors`.
#[derive(Clone)]
pub struct TlsConfig {
    /// Our certificate and key (PKCS#8 or SEC1 ECDSA, or RSA).
    pub certificate: Option<CertifiedKey>,
    /// The CA certificates that issue the certificates we accept from peers.
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// Client role: verify the server's certificate (default true); off (libcoap's `-n`)
    /// gives encryption without authentication.
    pub verify_peer: bool,
    /// Server role: whether clients are asked for a certificate, and must present one.
    pub client_auth: ClientAuth,
    /// A handshake not complete this long after the session started fails with
    /// [`SecurityError::HandshakeTimeout`] (default 30 s).
    pub handshake_timeout: Duration,
    /// The TLS versions offered or accepted (default both 1.3 and 1.2).
    pub versions: TlsVersions,
}

/// Which TLS versions an endpoint speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVersions {
    /// TLS 1.3 and 1.2, 1.3 preferred.
    #[default]
    All,
    /// TLS 1.3 only.
    Tls13,
    /// TLS 1.2 only (for peers that need it; 1.3 is preferable wherever it works).
    Tls12,
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

impl TlsVersions {
    fn rustls(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        match self {
            TlsVersions::All => rustls::ALL_VERSIONS,
            TlsVersions::Tls13 => &TLS13_ONLY,
            TlsVersions::Tls12 => &TLS12_ONLY,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificate: None,
            trust_anchors: Vec::new(),
            verify_peer: true,
            client_auth: ClientAuth::NotRequested,
            handshake_timeout: Duration::from_secs(30),
            versions: TlsVersions::All,
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificate", &self.certificate)
            .field("trust_anchors", &self.trust_anchors.len())
            .field("verify_peer", &self.verify_peer)
            .field("client_auth", &self.client_auth)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("versions", &self.versions)
            .finish()
    }
}

/// The TLS security layer of a CoAP-over-TCP endpoint: put it in
/// [`Config::security`](crate::Config::security) of an endpoint whose transport is
/// [`Transport::Tcp`](crate::Transport::Tcp). See the [module docs](self).
pub struct Tls {
    config: TlsConfig,
    client: Option<Arc<rustls::ClientConfig>>,
    server: Option<Arc<rustls::ServerConfig>>,
    entropy: [u8; 32],
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// ALPN for CoAP over TLS (RFC 8323 §8.2).
const ALPN: &[u8] = b"coap";

impl Tls {
    /// Checks `config` and makes the layer. `entropy`: 32 secret bytes (the OS RNG in
    /// production) from which, with the endpoint's seed, all the layer's randomness derives.
    pub fn new(config: TlsConfig, entropy: [u8; 32]) -> Result<Tls, CredentialsError> {
        if config.handshake_timeout == Duration::ZERO {
            return Err(CredentialsError::OutOfRange(
                "handshake_timeout must be greater than zero",
            ));
        }
        let provider = Arc::new(kx::provider());
        let time = Arc::new(channel::WallClock);
        let versions = config.versions.rustls();
        let mut roots = rustls::RootCertStore::empty();
        for anchor in &config.trust_anchors {
            roots
                .add(anchor.clone())
                .map_err(|_| CredentialsError::BadTrustAnchor)?;
        }
        let roots = Arc::new(roots);
        let key = |c: &CertifiedKey| (vec![c.certificate.clone()], c.key.clone_key());

        // Client side: always possible (a client with no anchors must turn verification off).
        let client = {
            let builder =
                rustls::ClientConfig::builder_with_details(provider.clone(), time.clone())
                    .with_protocol_versions(versions)
                    .map_err(|_| CredentialsError::Unsupported("TLS versions"))?;
            let builder = if config.verify_peer {
                if roots.is_empty() {
                    None
                } else {
                    Some(builder.with_root_certificates(roots.clone()))
                }
            } else {
                Some(
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(NoVerification(
                            provider.clone(),
                        ))),
                )
            };
            match builder {
                None => None,
                Some(b) => {
                    let mut c = match &config.certificate {
                        Some(cert) => {
                            let (chain, key) = key(cert);
                            b.with_client_auth_cert(chain, key)
                                .map_err(|_| CredentialsError::BadPrivateKey)?
                        }
                        None => b.with_no_client_auth(),
                    };
                    c.alpn_protocols = vec![ALPN.to_vec()];
                    c.enable_sni = true;
                    // No session state outlives a connection: a reconnect is a full handshake.
                    c.resumption = rustls::client::Resumption::disabled();
                    Some(Arc::new(c))
                }
            }
        };

        // Server side: with a certificate.
        let server = match &config.certificate {
            None => {
                if config.client_auth != ClientAuth::NotRequested {
                    return Err(CredentialsError::ClientAuthWithoutCertificate);
                }
                None
            }
            Some(cert) => {
                let builder = rustls::ServerConfig::builder_with_details(provider.clone(), time)
                    .with_protocol_versions(versions)
                    .map_err(|_| CredentialsError::Unsupported("TLS versions"))?;
                let builder = match config.client_auth {
                    ClientAuth::NotRequested => builder.with_no_client_auth(),
                    auth => {
                        if roots.is_empty() {
                            return Err(CredentialsError::NoTrustAnchors);
                        }
                        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            roots.clone(),
                            provider.clone(),
                        );
                        let verifier = if auth == ClientAuth::Optional {
                            verifier.allow_unauthenticated()
                        } else {
                            verifier
                        };
                        builder.with_client_cert_verifier(
                            verifier
                                .build()
                                .map_err(|_| CredentialsError::BadTrustAnchor)?,
                        )
                    }
                };
                let (chain, key) = key(cert);
                let mut s = builder
                    .with_single_cert(chain, key)
                    .map_err(|_| CredentialsError::BadPrivateKey)?;
                s.alpn_protocols = vec![ALPN.to_vec()];
                s.send_tls13_tickets = 0;
                s.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                Some(Arc::new(s))
            }
        };
        if client.is_none() && server.is_none() {
            return Err(CredentialsError::NoCredentials);
        }
        Ok(Tls {
            config,
            client,
            server,
            entropy,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    fn generator(&self, label: &[u8], nonce: u64, peer: SocketAddr) -> Generator {
        let mut addr = match peer.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        addr.extend_from_slice(&peer.port().to_be_bytes());
        Generator::new(hmac(&self.entropy, &[label, &nonce.to_be_bytes(), &addr]))
    }
}

impl SecurityLayer for Tls {
    fn connect(
        &self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<&str>,
        params: ChannelParams,
    ) -> Result<Box<dyn SecureChannel>, SecurityError> {
        let Some(config) = self.client.clone() else {
            log::warn!("TLS: no trust anchors to verify the server with");
            return Err(SecurityError::NoCredentials);
        };
        let name = server_name
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
            .unwrap_or(ServerName::IpAddress(peer.ip().into()));
        let mut generator = Some(self.generator(b"tls client", params.nonce, peer));
        let conn = crate::entropy::with_generator(&mut generator, || {
            rustls::client::UnbufferedClientConnection::new(config, name)
        })
        .map_err(|e| channel::map_error(&e, true))?;
        Ok(Box::new(TlsChannel::client(
            conn,
            generator,
            params.unix_epoch,
            now + self.config.handshake_timeout,
        )))
    }

    fn accept(
        &self,
        _now: Instant,
        _peer: SocketAddr,
        _datagram: &[u8],
        _params: ChannelParams,
        _sink: &mut dyn RecordSink,
    ) -> Accept {
        Accept::Ignore // a stream's server association starts with the connection
    }

    fn accept_stream(
        &self,
        now: Instant,
        peer: SocketAddr,
        params: ChannelParams,
    ) -> Result<Box<dyn SecureChannel>, SecurityError> {
        let Some(config) = self.server.clone() else {
            return Err(SecurityError::NoCredentials);
        };
        let mut generator = Some(self.generator(b"tls server", params.nonce, peer));
        let conn = crate::entropy::with_generator(&mut generator, || {
            rustls::server::UnbufferedServerConnection::new(config)
        })
        .map_err(|e| channel::map_error(&e, false))?;
        Ok(Box::new(TlsChannel::server(
            conn,
            generator,
            params.unix_epoch,
            now + self.config.handshake_timeout,
        )))
    }

    fn opens_association(&self, _datagram: &[u8]) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "TLS"
    }
}

/// Accepts any server certificate (libcoap's `-n`): encryption without authentication. The
/// handshake's signatures are still checked, so the peer must hold the certificate's key.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
