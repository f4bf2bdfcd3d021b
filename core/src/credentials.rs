//! Credentials shared by the security layers (DTLS, TLS): our certificate and key, the trust
//! anchors peers' certificates must chain to, whether a server asks clients for one. PEM is
//! read by rustls-pki-types, never by hand.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::fmt;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CredentialsError> {
        let certificate = CertificateDer::pem_slice_iter(cert_pem)
            .next()
            .ok_or(CredentialsError::Pem("no CERTIFICATE block found"))?
            .map_err(|_| CredentialsError::Pem("malformed CERTIFICATE block"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| CredentialsError::Pem("no private key (PKCS#8 or EC) block found"))?;
        Ok(CertifiedKey { certificate, key })
    }

    /// Reads a certificate and a key from PEM files (libcoap's `-c certfile -j keyfile`;
    /// with `key` `None` the key is looked for in the certificate file, as libcoap does).
    pub fn from_pem_files(cert: &Path, key: Option<&Path>) -> Result<Self, CredentialsError> {
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
pub fn trust_anchors_from_pem(
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let anchors = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CredentialsError::Pem("malformed CERTIFICATE block"))?;
    if anchors.is_empty() {
        return Err(CredentialsError::Pem("no CERTIFICATE block found"));
    }
    Ok(anchors)
}

/// [`trust_anchors_from_pem`] from a file.
pub fn trust_anchors_from_pem_file(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    trust_anchors_from_pem(&read(path)?)
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|e| CredentialsError::Io(format!("{}: {e}", path.display())))
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
    /// Clients are asked for a certificate; one that presents it must be issued by a trust
    /// anchor, one without is served anyway (TLS only: the DTLS layer cannot ask without
    /// requiring).
    Optional,
}

/// A security configuration that cannot work; the message says what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
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
    /// A setting this security layer cannot honour.
    Unsupported(&'static str),
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::NoCredentials => f.write_str("DTLS needs a pre-shared key or a certificate"),
            CredentialsError::EmptyPsk => f.write_str("a PSK identity and key must not be empty"),
            CredentialsError::Pem(what) => write!(f, "PEM: {what}"),
            CredentialsError::Io(e) => write!(f, "cannot read {e}"),
            CredentialsError::BadPrivateKey => f.write_str("the private key cannot be loaded (ECDSA P-256 or P-384, PKCS#8 or SEC1)"),
            CredentialsError::BadTrustAnchor => f.write_str("a trust anchor is not a usable CA certificate"),
            CredentialsError::NoTrustAnchors => f.write_str("certificates are to be verified but no trusted CA was given (libcoap: -C or -R; -n skips verification)"),
            CredentialsError::ClientAuthWithoutCertificate => f.write_str("requiring client certificates needs a server certificate"),
            CredentialsError::OutOfRange(what) => write!(f, "out of range: {what}"),
            CredentialsError::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

impl std::error::Error for CredentialsError {}
