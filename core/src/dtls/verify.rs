//! Certificate checks with rustls-webpki: the chain up to a trust anchor, the validity
//! period, the extended key usage and, for a server, the name the client meant.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

use std::net::IpAddr;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::security::CertificateError;

/// Who is being checked.
#[derive(Clone, Debug)]
pub(crate) enum Expect {
    /// A server, for the name the client used (DNS name or IP address).
    Server(ServerName<'static>),
    /// A client.
    Client,
}

/// The name to check a server's certificate against: the host the request named, else the
/// address we sent it to.
pub(crate) fn server_name(name: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    name.and_then(|n| ServerName::try_from(n.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(ip.into()))
}

pub(crate) fn anchors(
    certs: &[CertificateDer<'static>],
) -> Result<Vec<TrustAnchor<'static>>, webpki::Error> {
    certs
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect()
}

pub(crate) fn verify(
    der: &[u8],
    anchors: &[TrustAnchor<'static>],
    unix_now: Option<u64>,
    expect: &Expect,
) -> Result<(), CertificateError> {
    let der = CertificateDer::from(der);
    let cert = EndEntityCert::try_from(&der).map_err(map)?;
    let unix_now = unix_now.ok_or(CertificateError::NoClock)?;
    let time = UnixTime::since_unix_epoch(core::time::Duration::from_secs(unix_now));
    let usage = match expect {
        Expect::Server(_) => KeyUsage::server_auth(),
        Expect::Client => KeyUsage::client_auth(),
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &[],
        time,
        usage,
        None,
        None,
    )
    .map_err(map)?;
    if let Expect::Server(name) = expect {
        cert.verify_is_valid_for_subject_name(name).map_err(map)?;
    }
    Ok(())
}

fn map(e: webpki::Error) -> CertificateError {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer | E::CaUsedAsEndEntity => CertificateError::UnknownIssuer,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotYetValid,
        E::CertNotValidForName(_) => CertificateError::NameMismatch,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedCertVersion => CertificateError::UnsupportedAlgorithm,
        E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => CertificateError::WrongUsage,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::Malformed,
        _ => CertificateError::Other,
    }
}
