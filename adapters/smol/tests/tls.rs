//! CoAP over TLS (RFC 8323 §9) through the smol `StreamDriver` on real loopback sockets,
//! with the test PKI of the core crate: a server the client authenticates (by address and by
//! name), a body large enough to span TLS records, the typed failures of an unknown CA and of
//! a wrong name, a client certificate required and presented or missing, and libcoap's
//! OpenSSL server.
#![cfg(feature = "tls")]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::credentials::{trust_anchors_from_pem, CertifiedKey, ClientAuth};
use coap_engine::tls::{Tls, TlsConfig};
use coap_engine::{
    CertificateError, Config, Event, ExchangeError, FailureReason, Security, SecurityError,
};
use coap_engine_smol::{security_entropy, Client, Error, Events, StreamDriver};
use smol::future::FutureExt as _;
use smol::Timer;

/// Fails the test if `fut` takes longer than `secs` (a hang guard, not a performance check).
async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    fut.or(async {
        Timer::after(StdDuration::from_secs(secs)).await;
        panic!("timed out after {secs} s")
    })
    .await
}

/// The test PKI shared with the core crate's tests: `server` (localhost, 127.0.0.1, ::1)
/// and `client` issued by `ca`, `other-server` by `other-ca`.
fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../core/tests/certs")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(cert_file(name)).unwrap()
}

fn certified(name: &str) -> CertifiedKey {
    CertifiedKey::from_pem(&read(&format!("{name}.pem")), &read(&format!("{name}.key"))).unwrap()
}

fn secure(tls: TlsConfig) -> Config {
    Config {
        security: Some(Security::new(Tls::new(tls, security_entropy()).unwrap())),
        ..Config::default()
    }
}

/// A server with the certificate `name`, asking clients for theirs as `client_auth` says
/// (verified against the test CA). It stores what is PUT and returns it on GET; any other
/// request gets "hello".
fn server(name: &str, client_auth: ClientAuth) -> (SocketAddr, Events, smol::Task<io::Result<()>>) {
    let trust_anchors = match client_auth {
        ClientAuth::NotRequested => Vec::new(),
        _ => trust_anchors_from_pem(&read("ca.pem")).unwrap(),
    };
    let config = secure(TlsConfig {
        certificate: Some(certified(name)),
        trust_anchors,
        client_auth,
        ..TlsConfig::default()
    });
    let driver = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let addr = driver.local_addr().unwrap();
    let events = driver.events();
    let stored = Arc::new(Mutex::new(b"hello".to_vec()));
    smol::spawn(driver.incoming().serve(move |_peer, request| {
        let stored = stored.clone();
        async move {
            let mut response = Packet::new();
            let code = match request.header.code {
                MessageClass::Request(RequestType::Put) => {
                    *stored.lock().unwrap() = request.payload;
                    ResponseType::Changed
                }
                _ => {
                    response.payload = stored.lock().unwrap().clone();
                    ResponseType::Content
                }
            };
            response.header.code = MessageClass::Response(code);
            response
        }
    }))
    .detach();
    (addr, events, driver.spawn())
}

/// A client trusting the test CA, presenting the certificate `certificate` if asked.
fn client(certificate: Option<&str>) -> (Client, Events, smol::Task<io::Result<()>>) {
    let config = secure(TlsConfig {
        certificate: certificate.map(certified),
        trust_anchors: trust_anchors_from_pem(&read("ca.pem")).unwrap(),
        ..TlsConfig::default()
    });
    let driver = StreamDriver::client_only(config).unwrap();
    (driver.client(), driver.events(), driver.spawn())
}

fn get(host: Option<&str>) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    if let Some(host) = host {
        p.add_option(CoapOption::UriHost, host.as_bytes().to_vec());
    }
    p.add_option(CoapOption::UriPath, b"x".to_vec());
    p
}

async fn next_event<T>(events: &Events, pick: impl Fn(Event) -> Option<T>) -> T {
    loop {
        let event = events.recv().await.expect("the driver stopped");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

fn security_failure(error: SecurityError) -> Result<Packet, Error> {
    Err(Error::Exchange(ExchangeError::SessionFailed(
        FailureReason::Security(error),
    )))
}

#[test]
fn a_request_over_tls_is_answered_by_a_server_the_client_authenticated() {
    smol::block_on(within(30, async {
        let (addr, server_events, _server) = server("server", ClientAuth::NotRequested);
        // Checked against the address (the certificate names 127.0.0.1) ...
        let (client_a, events, _a) = client(None);
        let response = client_a.request(addr, get(None)).await.unwrap();
        assert_eq!(response.payload, b"hello");
        let established = next_event(&events, |e| match e {
            Event::SessionEstablished { peer } => Some(peer),
            _ => None,
        })
        .await;
        assert_eq!(established, addr);
        // ... and against the name in Uri-Host.
        let (client_b, _events, _b) = client(None);
        let response = client_b
            .request(addr, get(Some("localhost")))
            .await
            .unwrap();
        assert_eq!(response.payload, b"hello");
        // The server announced each session once its handshake completed.
        for _ in 0..2 {
            next_event(&server_events, |e| match e {
                Event::SessionNew { .. } => Some(()),
                Event::HandshakeFailed { error, .. } => panic!("handshake failed: {error:?}"),
                _ => None,
            })
            .await;
        }
    }));
}

#[test]
fn a_body_spanning_many_tls_records_arrives_byte_exact() {
    smol::block_on(within(60, async {
        let (addr, _server_events, _server) = server("server", ClientAuth::NotRequested);
        let (client, _events, _client) = client(None);
        let body: Vec<u8> = (0..40_000u32)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 24) as u8)
            .collect();
        let mut put = get(None);
        put.header.code = MessageClass::Request(RequestType::Put);
        put.payload = body.clone();
        let stored = client.request(addr, put).await.unwrap();
        assert_eq!(
            stored.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
        let back = client.request(addr, get(None)).await.unwrap();
        assert_eq!(back.payload.len(), body.len());
        assert!(back.payload == body, "the body came back changed");
    }));
}

#[test]
fn a_server_certificate_from_an_unknown_ca_fails_as_unknown_issuer() {
    smol::block_on(within(30, async {
        let (addr, server_events, _server) = server("other-server", ClientAuth::NotRequested);
        let (client, _events, _client) = client(None);
        let result = client.request(addr, get(None)).await;
        assert_eq!(
            result,
            security_failure(SecurityError::Certificate(CertificateError::UnknownIssuer))
        );
        // The server heard why from the client's alert, and opened no session.
        next_event(&server_events, |e| match e {
            Event::HandshakeFailed { .. } => Some(()),
            Event::SessionNew { .. } => panic!("a session despite the refused certificate"),
            _ => None,
        })
        .await;
    }));
}

#[test]
fn a_name_the_server_certificate_does_not_carry_fails_as_name_mismatch() {
    smol::block_on(within(30, async {
        let (addr, _server_events, _server) = server("server", ClientAuth::NotRequested);
        let (client, _events, _client) = client(None);
        let result = client.request(addr, get(Some("example.org"))).await;
        assert_eq!(
            result,
            security_failure(SecurityError::Certificate(CertificateError::NameMismatch))
        );
    }));
}

#[test]
fn a_required_client_certificate_is_presented_and_accepted() {
    smol::block_on(within(30, async {
        let (addr, server_events, _server) = server("server", ClientAuth::Required);
        let (client, _events, _client) = client(Some("client"));
        let response = client.request(addr, get(None)).await.unwrap();
        assert_eq!(response.payload, b"hello");
        next_event(&server_events, |e| match e {
            Event::SessionNew { .. } => Some(()),
            Event::HandshakeFailed { error, .. } => panic!("handshake failed: {error:?}"),
            _ => None,
        })
        .await;
    }));
}

#[test]
fn a_client_without_the_required_certificate_is_refused_on_both_sides() {
    smol::block_on(within(30, async {
        let (addr, server_events, _server) = server("server", ClientAuth::Required);
        let (client, _events, _client) = client(None);
        let result = client.request(addr, get(None)).await;
        // TLS 1.3's certificate_required alert (RFC 8446 §6.2) tells the client why.
        assert_eq!(result, security_failure(SecurityError::Alert(116)));
        let error = next_event(&server_events, |e| match e {
            Event::HandshakeFailed { error, .. } => Some(error),
            Event::SessionNew { .. } => panic!("a session without the required certificate"),
            _ => None,
        })
        .await;
        assert_eq!(error, SecurityError::Certificate(CertificateError::Missing));
    }));
}

/// libcoap's example server built with OpenSSL, on free loopback ports (TLS on port + 1),
/// killed when dropped.
struct Libcoap(Child);

impl Drop for Libcoap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn libcoap_openssl_server_over_tls_answers_a_client_that_verified_it() {
    // Two adjacent free ports: libcoap serves plain CoAP on the first and TLS on the next.
    let (plain, tls) = loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            break (port, SocketAddr::from(([127, 0, 0, 1], port + 1)));
        }
    };
    let cert = cert_file("server.pem");
    let key = cert_file("server.key");
    let child = Command::new("coap-server-openssl")
        .args(["-A", "127.0.0.1", "-p", &plain.to_string()])
        .arg("-c")
        .arg(&cert)
        .arg("-j")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test needs libcoap's coap-server-openssl (Debian: libcoap3-bin): {e}")
        });
    let _server = Libcoap(child);
    let ready = (0..100).any(|_| {
        std::thread::sleep(StdDuration::from_millis(100));
        TcpStream::connect(tls).is_ok()
    });
    assert!(
        ready,
        "coap-server-openssl did not listen on {tls} within 10 s"
    );
    smol::block_on(within(30, async {
        let (client, _events, _client) = client(None);
        let mut root = Packet::new();
        root.header.code = MessageClass::Request(RequestType::Get);
        root.add_option(CoapOption::UriHost, b"localhost".to_vec());
        let response = client.request(tls, root).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        let text = String::from_utf8_lossy(&response.payload);
        assert!(text.contains("libcoap"), "{text}");
    }));
}
