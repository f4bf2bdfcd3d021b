//! CoAP over TLS (RFC 8323 §9, `coaps+tcp://`) through the mio stream driver on real
//! loopback sockets, with the test PKI of the core's tests: the server authenticated, an
//! untrusted server refused with the reason, a client certificate required and presented
//! (and refused when missing), block-wise bodies and many requests inside the connection,
//! and libcoap's OpenSSL client against our server.
#![cfg(feature = "tls")]

mod stream_common;

use std::path::PathBuf;
use std::process::Command;

use coap_engine::coap_lite::RequestType;
use coap_engine::credentials::{trust_anchors_from_pem_file, CertifiedKey, ClientAuth};
use coap_engine::tls::{Tls, TlsConfig};
use coap_engine::{
    CertificateError, Config, Duration, Event, ExchangeError, FailureReason, Limits, PeerIdentity,
    Security, SecurityError, Transport,
};
use coap_engine_mio::{security_entropy, StreamDriver};
use stream_common::*;

/// The test PKI shared with the core crate's tests.
fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../core/tests/certs")
        .join(name)
}

fn certified(name: &str) -> CertifiedKey {
    CertifiedKey::from_pem_files(
        &cert_file(&format!("{name}.pem")),
        Some(&cert_file(&format!("{name}.key"))),
    )
    .unwrap()
}

fn secure(base: Config, tls: TlsConfig) -> Config {
    let tls = TlsConfig {
        // Short, so that a stalled handshake fails the test soon rather than hanging it.
        handshake_timeout: Duration::from_secs(10),
        ..tls
    };
    Config {
        transport: Transport::Tcp,
        security: Some(Security::new(Tls::new(tls, security_entropy()).unwrap())),
        ..base
    }
}

/// A server presenting `cert` (a file stem), asking clients for certificates issued by the
/// test CA as `client_auth` says.
fn tls_server(cert: &str, client_auth: ClientAuth) -> Config {
    secure(
        tcp(),
        TlsConfig {
            certificate: Some(certified(cert)),
            trust_anchors: trust_anchors_from_pem_file(&cert_file("ca.pem")).unwrap(),
            client_auth,
            ..TlsConfig::default()
        },
    )
}

/// A client trusting the test CA, presenting `own` (a file stem) if given.
fn tls_client(own: Option<&str>) -> StreamDriver {
    let config = secure(
        tcp(),
        TlsConfig {
            trust_anchors: trust_anchors_from_pem_file(&cert_file("ca.pem")).unwrap(),
            certificate: own.map(certified),
            ..TlsConfig::default()
        },
    );
    StreamDriver::new(config).unwrap()
}

fn security_failure(error: SecurityError) -> ExchangeError {
    ExchangeError::SessionFailed(FailureReason::Security(error))
}

#[test]
fn a_request_over_tls_is_answered_and_the_server_is_authenticated() {
    let (server, seen) = Server::start(tls_server("server", ClientAuth::NotRequested));
    let mut client = tls_client(None);
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, b"hello");
    assert_eq!(
        client.endpoint().peer_identity(server.addr),
        Some(PeerIdentity::Certificate(
            certified("server").certificate.to_vec()
        ))
    );
    // No client certificate was asked for.
    let id = client.request(server.addr, &get("whoami")).unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, b"anonymous");
    wait_for(&seen, "a session", |e| {
        matches!(e, Event::SessionNew { .. })
    });
}

#[test]
fn a_server_certificate_from_an_unknown_ca_is_refused_with_the_reason() {
    let (server, seen) = Server::start(tls_server("other-server", ClientAuth::NotRequested));
    let mut client = tls_client(None);
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(
        outcome(&mut client, id).unwrap_err(),
        security_failure(SecurityError::Certificate(CertificateError::UnknownIssuer))
    );
    assert_eq!(client.connections(), 0);
    // The client's alert tells the server, which never had a session.
    wait_for(&seen, "the failed handshake", |e| {
        assert!(!matches!(e, Event::SessionNew { .. }), "{e:?}");
        matches!(e, Event::HandshakeFailed { .. })
    });
}

#[test]
fn a_required_client_certificate_is_presented_and_verified() {
    let (server, _) = Server::start(tls_server("server", ClientAuth::Required));
    let mut client = tls_client(Some("client"));
    let id = client.request(server.addr, &get("whoami")).unwrap();
    let response = outcome(&mut client, id).unwrap();
    assert!(
        response.payload == certified("client").certificate.to_vec(),
        "the server saw another identity: {:?}",
        String::from_utf8_lossy(&response.payload)
    );
}

#[test]
fn a_client_without_the_required_certificate_is_refused_on_both_sides() {
    let (server, seen) = Server::start(tls_server("server", ClientAuth::Required));
    let mut client = tls_client(None);
    let id = client.request(server.addr, &get("hello")).unwrap();
    // TLS 1.3's certificate_required alert (RFC 8446 §6.2) tells the client why.
    assert_eq!(
        outcome(&mut client, id).unwrap_err(),
        security_failure(SecurityError::Alert(116))
    );
    wait_for(&seen, "the refused handshake", |e| {
        matches!(
            e,
            Event::HandshakeFailed {
                error: SecurityError::Certificate(CertificateError::Missing),
                ..
            }
        )
    });
}

#[test]
fn large_bodies_and_many_requests_cross_a_tls_connection_intact() {
    let server_config = Config {
        limits: Limits {
            max_pending_requests: 128,
            ..Limits::default()
        },
        ..tls_server("server", ClientAuth::NotRequested)
    };
    let (server, _) = Server::start(server_config);
    let mut client = tls_client(None);
    let id = client.request(server.addr, &get("big/60000")).unwrap();
    assert!(outcome(&mut client, id).unwrap().payload == pattern(60_000));
    let body = pattern(40_000);
    let id = client
        .request(server.addr, &request(RequestType::Put, "sum", &body))
        .unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, summary(&body));
    let mut pending = std::collections::HashMap::new();
    for i in 0..60 {
        let body = format!("request {i}").into_bytes();
        let id = client
            .request(server.addr, &request(RequestType::Post, "echo", &body))
            .unwrap();
        pending.insert(id, body);
    }
    run_until(&mut client, "60 responses", |_, e| {
        match e {
            Event::Response { id, response, .. } => {
                assert_eq!(pending.remove(id), Some(response.payload.clone()));
            }
            Event::RequestFailed { error, .. } => panic!("a request failed: {error}"),
            _ => {}
        }
        pending.is_empty()
    });
}

#[test]
fn libcoap_openssl_client_gets_a_resource_from_our_server_over_coaps_tcp() {
    let (server, _) = Server::start(tls_server("server", ClientAuth::NotRequested));
    let uri = format!("coaps+tcp://127.0.0.1:{}/hello", server.addr.port());
    let ca = cert_file("ca.pem");
    let output = Command::new("coap-client-openssl")
        .args(["-m", "get", "-B", "20", "-R"])
        .arg(&ca)
        .arg(&uri)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs libcoap's coap-client-openssl (package libcoap3-bin): {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end() == "hello",
        "coap-client-openssl: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
