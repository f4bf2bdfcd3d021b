//! TLS configurations for simulated CoAP-over-TCP endpoints (feature `tls`): the test PKI,
//! and entropy derived from the world's seed so that a run replays exactly.

use coap_engine::credentials::{trust_anchors_from_pem, ClientAuth};
use coap_engine::tls::{Tls, TlsConfig, TlsVersions};
use coap_engine::{Config, Duration, Security, Transport};

pub use super::pki::*;

/// Handshakes fail after this long in the scenarios (short, to keep the tests quick).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// `base` over TCP, made secure with `tls`.
pub fn tls_secure(base: Config, tls: TlsConfig, seed: u64) -> Config {
    let tls = Tls::new(tls, entropy(seed)).expect("valid TLS config");
    Config {
        transport: Transport::Tcp,
        security: Some(Security::new(tls)),
        ..base
    }
}

/// A client trusting `ca` (a file stem in tests/certs), presenting `own` if given.
pub fn tls_client(base: Config, ca: &str, own: Option<&str>, seed: u64) -> Config {
    let tls = TlsConfig {
        trust_anchors: trust_anchors_from_pem(&pem(&format!("{ca}.pem"))).unwrap(),
        certificate: own.map(certified),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..TlsConfig::default()
    };
    tls_secure(base, tls, seed)
}

/// A server presenting `cert` (a file stem), asking clients for certificates issued by the
/// test CA as `client_auth` says.
pub fn tls_server(base: Config, cert: &str, client_auth: ClientAuth, seed: u64) -> Config {
    let tls = TlsConfig {
        certificate: Some(certified(cert)),
        trust_anchors: trust_anchors_from_pem(&pem("ca.pem")).unwrap(),
        client_auth,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..TlsConfig::default()
    };
    tls_secure(base, tls, seed)
}

/// `config` (made by `tls_client` or `tls_server`) limited to `versions`: rebuilt from the
/// same files, as a layer cannot be changed once made.
pub fn tls_with_versions(base: Config, client: bool, versions: TlsVersions, seed: u64) -> Config {
    let tls = if client {
        TlsConfig {
            trust_anchors: trust_anchors_from_pem(&pem("ca.pem")).unwrap(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            versions,
            ..TlsConfig::default()
        }
    } else {
        TlsConfig {
            certificate: Some(certified("server")),
            trust_anchors: trust_anchors_from_pem(&pem("ca.pem")).unwrap(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            versions,
            ..TlsConfig::default()
        }
    };
    tls_secure(base, tls, seed)
}
