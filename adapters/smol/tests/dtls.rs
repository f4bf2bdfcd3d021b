//! `coaps://` through the smol driver over real loopback sockets: DTLS 1.2 in PSK and
//! certificate mode, an observation over PSK, and the typed failures of a wrong key and of
//! an untrusted certificate.
#![cfg(feature = "dtls")]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::dtls::{
    trust_anchors_from_pem_file, CertifiedKey, Dtls, DtlsConfig, PskCredentials,
};
use coap_engine::{
    CertificateError, Config, Duration, Event, ExchangeError, FailureReason, Security,
    SecurityError,
};
use coap_engine_smol::{dtls_entropy, Client, Driver, Error, Events};
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

/// The test PKI shared with the core crate's tests.
fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../core/tests/certs")
        .join(name)
}

/// A secure endpoint configuration. The short handshake timeout keeps the failure tests
/// fast: a refused PSK is only noticed by the client when its handshake times out.
fn secure(dtls: DtlsConfig) -> Config {
    let dtls = DtlsConfig {
        handshake_timeout: Duration::from_secs(3),
        ..dtls
    };
    Config {
        security: Some(Security::new(Dtls::new(dtls, dtls_entropy()).unwrap())),
        ..Config::default()
    }
}

fn psk_server() -> Config {
    let mut keys = BTreeMap::new();
    keys.insert(b"client-1".to_vec(), b"secret-key-1".to_vec());
    secure(DtlsConfig {
        psk_store: Some(Arc::new(keys)),
        ..DtlsConfig::default()
    })
}

fn psk_client(key: &[u8]) -> Config {
    secure(DtlsConfig {
        psk: Some(PskCredentials {
            identity: b"client-1".to_vec(),
            key: key.to_vec(),
        }),
        ..DtlsConfig::default()
    })
}

fn certificate_server(cert: &str, key: &str) -> Config {
    let certified = CertifiedKey::from_pem_files(&cert_file(cert), Some(&cert_file(key))).unwrap();
    secure(DtlsConfig {
        certificate: Some(certified),
        ..DtlsConfig::default()
    })
}

fn client_trusting_ca() -> Config {
    secure(DtlsConfig {
        trust_anchors: trust_anchors_from_pem_file(&cert_file("ca.pem")).unwrap(),
        ..DtlsConfig::default()
    })
}

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

/// A server on 127.0.0.1 answering every request with "secure " + its path; returns its
/// address, its event stream and the task that drives it.
fn server(config: Config) -> (SocketAddr, Events, smol::Task<io::Result<()>>) {
    let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let (addr, events) = (driver.local_addr().unwrap(), driver.events());
    smol::spawn(driver.incoming().serve(|_peer, request| async move {
        let path = request
            .get_option(CoapOption::UriPath)
            .and_then(|p| p.front())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let mut response = Packet::new();
        response.header.code = MessageClass::Response(ResponseType::Content);
        response.payload = format!("secure {path}").into_bytes();
        response
    }))
    .detach();
    (addr, events, driver.spawn())
}

/// A client on 127.0.0.1; returns its handle, its address and the task that drives it.
fn client(config: Config) -> (Client, SocketAddr, smol::Task<io::Result<()>>) {
    let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let addr = driver.local_addr().unwrap();
    (driver.client(), addr, driver.spawn())
}

#[test]
fn psk_client_and_server_complete_a_get() {
    smol::block_on(within(10, async {
        let (server_addr, _events, _server) = server(psk_server());
        let (client, _, _task) = client(psk_client(b"secret-key-1"));
        let response = client.request(server_addr, get("hello")).await.unwrap();
        assert_eq!(response.payload, b"secure hello");
        // A second request goes over the same association.
        let response = client.request(server_addr, get("again")).await.unwrap();
        assert_eq!(response.payload, b"secure again");
    }));
}

#[test]
fn psk_observation_notifies_and_deregisters() {
    use coap_engine::ResourceId;
    use smol::stream::StreamExt as _;
    const CLOCK: ResourceId = ResourceId(1);
    fn content(payload: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Response(ResponseType::Content);
        p.payload = payload.to_vec();
        p
    }
    smol::block_on(within(20, async {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), psk_server()).unwrap();
        let (server_addr, incoming, _server) = (
            driver.local_addr().unwrap(),
            driver.incoming(),
            driver.spawn(),
        );
        let (client, _, _task) = client(psk_client(b"secret-key-1"));
        let mut observation = client.observe(server_addr, get("clock")).await.unwrap();

        let registration = incoming.next().await.unwrap();
        assert_eq!(registration.request.get_observe_value(), Some(Ok(0)));
        let added = registration.responder.respond_observe(CLOCK, content(b"0"));
        assert_eq!(added.await, Ok(true));
        assert_eq!(observation.next().await.unwrap().unwrap().payload, b"0");
        assert_eq!(incoming.notify(CLOCK, content(b"1"), true).await, Ok(1));
        assert_eq!(observation.next().await.unwrap().unwrap().payload, b"1");

        let answering = smol::spawn(async move {
            let deregistration = incoming.next().await.unwrap();
            assert_eq!(deregistration.request.get_observe_value(), Some(Ok(1)));
            deregistration
                .responder
                .respond(content(b"bye"))
                .await
                .unwrap();
            incoming
        });
        assert_eq!(observation.deregister().await.unwrap().payload, b"bye");
        let incoming = answering.await;
        assert_eq!(incoming.observers(CLOCK).await, Ok(0));
    }));
}

#[test]
fn certificate_mode_get_with_uri_host_localhost() {
    smol::block_on(within(10, async {
        let (server_addr, _events, _server) =
            server(certificate_server("server.pem", "server.key"));
        let (client, _, _task) = client(client_trusting_ca());
        let mut request = get("hello");
        request.add_option(CoapOption::UriHost, b"localhost".to_vec());
        let response = client.request(server_addr, request).await.unwrap();
        assert_eq!(response.payload, b"secure hello");
    }));
}

#[test]
fn certificate_mode_get_to_the_servers_ip_address() {
    // No Uri-Host: the server's certificate must name 127.0.0.1, which it does.
    smol::block_on(within(10, async {
        let (server_addr, _events, _server) =
            server(certificate_server("server.pem", "server.key"));
        let (client, _, _task) = client(client_trusting_ca());
        let response = client
            .request(server_addr, get("by-address"))
            .await
            .unwrap();
        assert_eq!(response.payload, b"secure by-address");
    }));
}

#[test]
fn wrong_psk_fails_the_request_and_the_servers_handshake() {
    smol::block_on(within(10, async {
        let (server_addr, server_events, _server) = server(psk_server());
        let (client, client_addr, _task) = client(psk_client(b"not-the-key"));
        let result = client.request(server_addr, get("hello")).await;
        assert!(
            matches!(
                result,
                Err(Error::Exchange(ExchangeError::SessionFailed(
                    FailureReason::Security(_)
                )))
            ),
            "{result:?}"
        );
        // The server tells the wrong key from an unknown identity, and opened no session.
        loop {
            match server_events.recv().await {
                Some(Event::HandshakeFailed { peer, error }) => {
                    assert_eq!(peer, client_addr);
                    assert_eq!(error, SecurityError::PskMismatch);
                    break;
                }
                Some(Event::SessionNew { peer }) => {
                    panic!("a client with the wrong key got a session: {peer}")
                }
                Some(_) => {}
                None => panic!("the server stopped without reporting the handshake"),
            }
        }
    }));
}

#[test]
fn untrusted_server_certificate_is_refused_as_unknown_issuer() {
    smol::block_on(within(10, async {
        let (server_addr, _events, _server) =
            server(certificate_server("other-server.pem", "other-server.key"));
        let (client, _, _task) = client(client_trusting_ca());
        let mut request = get("hello");
        request.add_option(CoapOption::UriHost, b"localhost".to_vec());
        let result = client.request(server_addr, request).await;
        assert_eq!(
            result,
            Err(Error::Exchange(ExchangeError::SessionFailed(
                FailureReason::Security(SecurityError::Certificate(
                    CertificateError::UnknownIssuer
                ))
            )))
        );
    }));
}
