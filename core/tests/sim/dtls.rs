//! DTLS configurations for simulated endpoints (feature `dtls`): the test PKI, pre-shared
//! keys, and entropy derived from the world's seed so that a run replays exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use coap_engine::dtls::{trust_anchors_from_pem, ClientAuth, Dtls, DtlsConfig, PskCredentials};
use coap_engine::{Config, Duration, Security};

pub use super::pki::*;

/// `base` made secure with `dtls`.
pub fn secure(base: Config, dtls: DtlsConfig, seed: u64) -> Config {
    let dtls = Dtls::new(dtls, entropy(seed)).expect("valid DTLS config");
    Config {
        security: Some(Security::new(dtls)),
        ..base
    }
}

/// Handshakes fail after this long in the scenarios (short, to keep the tests quick).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn psk_client(base: Config, identity: &[u8], key: &[u8], seed: u64) -> Config {
    let dtls = DtlsConfig {
        psk: Some(PskCredentials {
            identity: identity.to_vec(),
            key: key.to_vec(),
        }),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..DtlsConfig::default()
    };
    secure(base, dtls, seed)
}

/// The server's PSK table: "client" → "secret", "other" → "another secret".
pub fn psk_table() -> Arc<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut t = BTreeMap::new();
    t.insert(b"client".to_vec(), b"secret".to_vec());
    t.insert(b"other".to_vec(), b"another secret".to_vec());
    Arc::new(t)
}

pub fn psk_server(base: Config, seed: u64) -> Config {
    let dtls = DtlsConfig {
        psk_store: Some(psk_table()),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..DtlsConfig::default()
    };
    secure(base, dtls, seed)
}

/// A certificate-mode client trusting `ca` (a file stem in tests/certs), presenting
/// `own` if given.
pub fn cert_client(base: Config, ca: &str, own: Option<&str>, seed: u64) -> Config {
    let dtls = DtlsConfig {
        trust_anchors: trust_anchors_from_pem(&pem(&format!("{ca}.pem"))).unwrap(),
        certificate: own.map(certified),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..DtlsConfig::default()
    };
    secure(base, dtls, seed)
}

/// A certificate-mode server presenting `cert` (a file stem), optionally requiring client
/// certificates issued by the test CA, and optionally also serving PSK clients.
pub fn cert_server(
    base: Config,
    cert: &str,
    client_auth: ClientAuth,
    psk: bool,
    seed: u64,
) -> Config {
    let dtls = DtlsConfig {
        certificate: Some(certified(cert)),
        trust_anchors: trust_anchors_from_pem(&pem("ca.pem")).unwrap(),
        client_auth,
        psk_store: psk.then(|| psk_table() as Arc<dyn coap_engine::dtls::PskStore>),
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..DtlsConfig::default()
    };
    secure(base, dtls, seed)
}
