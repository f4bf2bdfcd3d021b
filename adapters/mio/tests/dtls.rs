//! `coaps://` through the mio driver over real loopback sockets: DTLS 1.2 in PSK and
//! certificate mode, and the typed failures of a wrong key and of an untrusted certificate.
#![cfg(feature = "dtls")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::dtls::{
    trust_anchors_from_pem_file, CertifiedKey, Dtls, DtlsConfig, PskCredentials,
};
use coap_engine::{
    CertificateError, Config, Duration, Event, ExchangeError, FailureReason, PeerIdentity,
    Security, SecurityError,
};
use coap_engine_mio::mio::{Events, Poll, Token};
use coap_engine_mio::{dtls_entropy, Driver};

const SERVER: Token = Token(1);
const CLIENT: Token = Token(2);

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

/// A server and a client driver on 127.0.0.1 in one user-owned `mio::Poll`, with every event
/// each of them produced.
struct Pair {
    poll: Poll,
    server: Driver,
    client: Driver,
    server_events: Vec<Event>,
    client_events: Vec<Event>,
}

impl Pair {
    fn new(server: Config, client: Config) -> Pair {
        let poll = Poll::new().unwrap();
        let mut server = Driver::bind("127.0.0.1:0".parse().unwrap(), server).unwrap();
        let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), client).unwrap();
        server.register(poll.registry(), SERVER).unwrap();
        client.register(poll.registry(), CLIENT).unwrap();
        Pair {
            poll,
            server,
            client,
            server_events: Vec::new(),
            client_events: Vec::new(),
        }
    }

    fn server_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }

    fn client_addr(&self) -> SocketAddr {
        self.client.local_addr().unwrap()
    }

    /// Runs both drivers until `done` holds for the events so far (the server answers every
    /// request with "secure " + its path); fails the test after `secs` seconds.
    fn run_until(&mut self, secs: u64, done: impl Fn(&Pair) -> bool) {
        let mut events = Events::with_capacity(64);
        let give_up = StdInstant::now() + StdDuration::from_secs(secs);
        while !done(self) {
            assert!(
                StdInstant::now() < give_up,
                "not done after {secs} s; client: {:#?}; server: {:#?}",
                self.client_events,
                self.server_events
            );
            let timeout = match (self.server.next_timeout(), self.client.next_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map_or(StdDuration::from_millis(100), |t| {
                t.min(StdDuration::from_millis(100))
            });
            self.poll.poll(&mut events, Some(timeout)).unwrap();
            for event in events.iter() {
                match event.token() {
                    SERVER => self.server.handle_event(event),
                    CLIENT => self.client.handle_event(event),
                    _ => unreachable!(),
                }
            }
            self.server.handle_timeout();
            self.client.handle_timeout();
            while let Some(event) = self.server.poll_event() {
                if let Event::Request { id, request, .. } = &event {
                    let path = request
                        .get_option(CoapOption::UriPath)
                        .and_then(|p| p.front())
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default();
                    let mut response = Packet::new();
                    response.header.code = MessageClass::Response(ResponseType::Content);
                    response.payload = format!("secure {path}").into_bytes();
                    self.server.respond(*id, &response).unwrap();
                }
                self.server_events.push(event);
            }
            while let Some(event) = self.client.poll_event() {
                self.client_events.push(event);
            }
        }
    }

    /// The payload of the client's response, if one arrived.
    fn response(&self) -> Option<&[u8]> {
        self.client_events.iter().find_map(|e| match e {
            Event::Response { response, .. } => Some(&response.payload[..]),
            _ => None,
        })
    }

    /// Why the client's request failed, if it did.
    fn request_error(&self) -> Option<ExchangeError> {
        self.client_events.iter().find_map(|e| match e {
            Event::RequestFailed { error, .. } => Some(*error),
            _ => None,
        })
    }

    fn ended(&self) -> bool {
        self.response().is_some() || self.request_error().is_some()
    }
}

#[test]
fn psk_client_and_server_complete_a_get() {
    let mut pair = Pair::new(psk_server(), psk_client(b"secret-key-1"));
    let server = pair.server_addr();
    pair.client.request(server, &get("hello")).unwrap();
    pair.run_until(10, Pair::ended);
    assert_eq!(
        pair.response(),
        Some(&b"secure hello"[..]),
        "{:#?}",
        pair.client_events
    );
    // The server knows which identity it served.
    let client = pair.client_addr();
    assert_eq!(
        pair.server.endpoint().peer_identity(client),
        Some(PeerIdentity::PreSharedKey(b"client-1".to_vec()))
    );
}

#[test]
fn certificate_mode_get_with_uri_host_localhost() {
    let mut pair = Pair::new(
        certificate_server("server.pem", "server.key"),
        client_trusting_ca(),
    );
    let server = pair.server_addr();
    let mut request = get("hello");
    request.add_option(CoapOption::UriHost, b"localhost".to_vec());
    pair.client.request(server, &request).unwrap();
    pair.run_until(10, Pair::ended);
    assert_eq!(
        pair.response(),
        Some(&b"secure hello"[..]),
        "{:#?}",
        pair.client_events
    );
    let Some(PeerIdentity::Certificate(der)) = pair.client.endpoint().peer_identity(server) else {
        panic!("the client holds no certificate of the server");
    };
    let pem =
        CertifiedKey::from_pem_files(&cert_file("server.pem"), Some(&cert_file("server.key")))
            .unwrap();
    assert_eq!(der, pem.certificate.to_vec());
}

#[test]
fn certificate_mode_get_to_the_servers_ip_address() {
    // No Uri-Host: the server's certificate must name 127.0.0.1, which it does.
    let mut pair = Pair::new(
        certificate_server("server.pem", "server.key"),
        client_trusting_ca(),
    );
    let server = pair.server_addr();
    pair.client.request(server, &get("by-address")).unwrap();
    pair.run_until(10, Pair::ended);
    assert_eq!(
        pair.response(),
        Some(&b"secure by-address"[..]),
        "{:#?}",
        pair.client_events
    );
}

#[test]
fn wrong_psk_fails_the_request_and_the_servers_handshake() {
    let mut pair = Pair::new(psk_server(), psk_client(b"not-the-key"));
    let server = pair.server_addr();
    let client = pair.client_addr();
    pair.client.request(server, &get("hello")).unwrap();
    let refused = |p: &Pair| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed { .. }))
    };
    pair.run_until(10, |p| p.ended() && refused(p));
    assert!(
        matches!(
            pair.request_error(),
            Some(ExchangeError::SessionFailed(FailureReason::Security(_)))
        ),
        "{:#?}",
        pair.client_events
    );
    let failed: Vec<_> = pair
        .server_events
        .iter()
        .filter_map(|e| match e {
            Event::HandshakeFailed { peer, error } => Some((*peer, *error)),
            _ => None,
        })
        .collect();
    // The server tells the wrong key from an unknown identity.
    assert_eq!(failed, vec![(client, SecurityError::PskMismatch)]);
    assert!(
        !pair
            .server_events
            .iter()
            .any(|e| matches!(e, Event::Request { .. } | Event::SessionNew { .. })),
        "a client with the wrong key got a session: {:#?}",
        pair.server_events
    );
}

#[test]
fn untrusted_server_certificate_is_refused_as_unknown_issuer() {
    let mut pair = Pair::new(
        certificate_server("other-server.pem", "other-server.key"),
        client_trusting_ca(),
    );
    let server = pair.server_addr();
    let mut request = get("hello");
    request.add_option(CoapOption::UriHost, b"localhost".to_vec());
    pair.client.request(server, &request).unwrap();
    pair.run_until(10, Pair::ended);
    assert_eq!(
        pair.request_error(),
        Some(ExchangeError::SessionFailed(FailureReason::Security(
            SecurityError::Certificate(CertificateError::UnknownIssuer)
        ))),
        "{:#?}",
        pair.client_events
    );
    assert!(
        !pair
            .server_events
            .iter()
            .any(|e| matches!(e, Event::Request { .. })),
        "the request reached the untrusted server: {:#?}",
        pair.server_events
    );
}
