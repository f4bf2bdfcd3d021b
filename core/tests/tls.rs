//! CoAP over TLS (RFC 8323 §9) on the simulator's stream links: handshakes with X.509
//! certificates, typed failures on both sides, the server's handshakes kept apart from its
//! sessions, signaling and exchanges inside the connection, and the liveness contract.
#![cfg(feature = "tls")]

mod sim;

use std::net::SocketAddr;

use coap_engine::coap_lite::{CoapOption, MessageClass, RequestType};
use coap_engine::credentials::ClientAuth;
use coap_engine::tls::{Tls, TlsConfig, TlsVersions};
use coap_engine::{
    CertificateError, CloseReason, Config, ConnectionFailure, Duration, Endpoint, Error, Event,
    ExchangeError, FailureReason, Instant, Keepalive, PeerIdentity, SecurityError, SendErrorKind,
    StreamClosed, StreamCommand,
};
use sim::tls::*;
use sim::*;

const D: Duration = Duration::from_millis(10);

/// A client at 40000 and a server at 5684 over a stream link with delay `D`; the server
/// application is `hello`.
impl World {
    fn new(seed: u64, client: Config, server: Config) -> Self {
        World::builder(seed)
            .delay(D)
            .server_addr(addr(5684))
            .client(client)
            .server(server)
            .server_app(hello)
            .build()
    }

    /// The usual pair: a client trusting the test CA, a server with its certificate.
    fn default(seed: u64) -> Self {
        World::new(
            seed,
            tls_client(Config::default(), "ca", None, seed),
            tls_server(
                Config::default(),
                "server",
                ClientAuth::NotRequested,
                seed + 1,
            ),
        )
    }

    fn handshake_failures(&self) -> Vec<SecurityError> {
        self.sim
            .events(self.server)
            .iter()
            .filter_map(|l| match l.event {
                Event::HandshakeFailed { error, .. } => Some(error),
                _ => None,
            })
            .collect()
    }

    fn has_event(&self, node: NodeId, pred: impl Fn(&Event) -> bool) -> bool {
        self.sim.events(node).iter().any(|l| pred(&l.event))
    }
}

fn security_failure(error: SecurityError) -> Result<Vec<u8>, ExchangeError> {
    Err(ExchangeError::SessionFailed(FailureReason::Security(error)))
}

// ---------------------------------------------------------------------------------------------
// Handshakes

#[test]
fn a_request_over_tls_is_answered_and_the_server_is_authenticated() {
    let mut w = World::default(1);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    // The client verified the server's certificate, and knows it.
    assert_eq!(
        w.sim.endpoint(w.client).peer_identity(w.sa),
        Some(PeerIdentity::Certificate(
            certified("server").certificate.to_vec()
        ))
    );
    // No client certificate was asked for.
    assert_eq!(w.sim.endpoint(w.server).peer_identity(w.ca), None);
    for node in [w.client, w.server] {
        assert!(w.has_event(node, |e| matches!(e, Event::SessionEstablished { .. })));
    }
    // Nothing in the clear: the request's payload is not on the wire.
    for s in w.sim.sent(w.client) {
        assert!(!s.bytes.windows(7).any(|x| x == b"hello 1"));
    }
}

#[test]
fn the_server_announces_a_session_only_once_the_handshake_completed() {
    let mut w = World::default(2);
    let sa = w.sa;
    w.sim
        .input(w.client, |ep, now| ep.open_session(now, sa))
        .unwrap();
    // The TCP connection is up after one round trip; the TLS 1.3 handshake takes another.
    w.sim.run_for(D * 3);
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
    assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 1);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 1);
    assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
    assert!(w.has_event(w.server, |e| matches!(e, Event::SessionNew { .. })));
}

#[test]
fn a_client_certificate_is_verified_and_reported_when_the_server_requires_one() {
    let mut w = World::new(
        3,
        tls_client(Config::default(), "ca", Some("client"), 3),
        tls_server(Config::default(), "server", ClientAuth::Required, 4),
    );
    let id = w.get(b"c");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello c".to_vec()));
    assert_eq!(
        w.sim.endpoint(w.server).peer_identity(w.ca),
        Some(PeerIdentity::Certificate(
            certified("client").certificate.to_vec()
        ))
    );
}

#[test]
fn a_client_without_the_required_certificate_is_refused_on_both_sides() {
    let mut w = World::new(
        5,
        tls_client(Config::default(), "ca", None, 5),
        tls_server(Config::default(), "server", ClientAuth::Required, 6),
    );
    let id = w.get(b"c");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.handshake_failures(),
        vec![SecurityError::Certificate(CertificateError::Missing)]
    );
    // TLS 1.3's certificate_required alert (RFC 8446 §6.2) tells the client why.
    assert_eq!(w.response(id), security_failure(SecurityError::Alert(116)));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
    assert!(!w.has_event(w.server, |e| matches!(e, Event::SessionNew { .. })));
}

#[test]
fn an_optional_client_certificate_may_be_absent() {
    let mut w = World::new(
        7,
        tls_client(Config::default(), "ca", None, 7),
        tls_server(Config::default(), "server", ClientAuth::Optional, 8),
    );
    let id = w.get(b"o");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello o".to_vec()));
    assert_eq!(w.sim.endpoint(w.server).peer_identity(w.ca), None);
}

#[test]
fn a_server_certificate_from_an_unknown_ca_is_refused_with_the_reason() {
    let mut w = World::new(
        9,
        tls_client(Config::default(), "ca", None, 9),
        tls_server(
            Config::default(),
            "other-server",
            ClientAuth::NotRequested,
            10,
        ),
    );
    let id = w.get(b"x");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.response(id),
        security_failure(SecurityError::Certificate(CertificateError::UnknownIssuer))
    );
    // Our alert reached the server: unknown_ca.
    assert_eq!(w.handshake_failures(), vec![SecurityError::Alert(48)]);
    // The client asked its adapter to close the connection.
    assert!(w.sim.endpoint(w.client).session_count() == 0);
}

#[test]
fn a_server_certificate_for_another_name_is_refused() {
    let mut w = World::default(11);
    let mut get = con_get("x", b"");
    get.add_option(CoapOption::UriHost, b"coap.example.org".to_vec());
    let id = w.sim.request(w.client, w.sa, &get).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.response(id),
        security_failure(SecurityError::Certificate(CertificateError::NameMismatch))
    );
}

#[test]
fn the_certificate_name_is_the_uri_host_when_the_request_gives_one() {
    let mut w = World::default(12);
    let mut get = con_get("x", b"h");
    get.add_option(CoapOption::UriHost, b"localhost".to_vec());
    let id = w.sim.request(w.client, w.sa, &get).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello h".to_vec()));
}

#[test]
fn without_verification_any_server_certificate_is_accepted() {
    let client = tls_secure(
        Config::default(),
        TlsConfig {
            verify_peer: false,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            ..TlsConfig::default()
        },
        13,
    );
    let server = tls_server(
        Config::default(),
        "other-server",
        ClientAuth::NotRequested,
        14,
    );
    let mut w = World::new(13, client, server);
    let id = w.get(b"n");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello n".to_vec()));
}

#[test]
fn without_a_wall_clock_a_certificate_cannot_be_checked() {
    let mut sim = Sim::new(15);
    sim.wall_clock = None;
    let c = sim.add_endpoint(addr(40_000), tls_client(Config::default(), "ca", None, 15));
    sim.add_endpoint(
        addr(5684),
        tls_server(Config::default(), "server", ClientAuth::NotRequested, 16),
    );
    let id = sim.request(c, addr(5684), &con_get("x", b"")).unwrap();
    sim.run_for(Duration::from_secs(1));
    assert!(matches!(
        sim.terminal(c, id).event,
        Event::RequestFailed {
            error: ExchangeError::SessionFailed(FailureReason::Security(
                SecurityError::Certificate(CertificateError::NoClock)
            )),
            ..
        }
    ));
}

#[test]
fn tls_1_2_works_too_and_the_servers_csm_may_come_first() {
    // Over TLS 1.2 the server's first flight ends its handshake: its CSM can reach the
    // client with, or before, the client's own first write.
    let client = tls_with_versions(Config::default(), true, TlsVersions::Tls12, 17);
    let server = tls_with_versions(Config::default(), false, TlsVersions::All, 18);
    let mut w = World::new(17, client, server);
    let id = w.get(b"12");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 12".to_vec()));
    // TLS 1.2 on the wire: the client's ClientKeyExchange (handshake type 16) travels in a
    // plaintext handshake record, which TLS 1.3 does not have.
    let stream: Vec<u8> = w
        .sim
        .sent(w.client)
        .iter()
        .flat_map(|s| s.bytes.to_vec())
        .collect();
    let mut records = Vec::new();
    let mut rest = &stream[..];
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        records.push((rest[0], rest.get(5).copied()));
        rest = &rest[(5 + len).min(rest.len())..];
    }
    assert!(records.contains(&(22, Some(16))), "{records:?}");
}

#[test]
fn no_common_version_is_a_typed_refusal_on_both_sides() {
    let client = tls_with_versions(Config::default(), true, TlsVersions::Tls13, 19);
    let server = tls_with_versions(Config::default(), false, TlsVersions::Tls12, 20);
    let mut w = World::new(19, client, server);
    let id = w.get(b"v");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.response(id),
        security_failure(SecurityError::NoCommonVersion)
    );
    assert_eq!(w.handshake_failures(), vec![SecurityError::NoCommonVersion]);
}

#[test]
fn a_layer_without_trust_anchors_or_certificate_is_refused_at_configuration() {
    assert!(Tls::new(TlsConfig::default(), [0; 32]).is_err());
    let required_without_cert = TlsConfig {
        client_auth: ClientAuth::Required,
        verify_peer: false,
        ..TlsConfig::default()
    };
    assert!(Tls::new(required_without_cert, [0; 32]).is_err());
    let zero_timeout = TlsConfig {
        verify_peer: false,
        handshake_timeout: Duration::ZERO,
        ..TlsConfig::default()
    };
    assert!(Tls::new(zero_timeout, [0; 32]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Handshakes that never complete

#[test]
fn a_server_that_never_answers_the_client_hello_fails_the_handshake_in_time() {
    let mut w = World::default(20);
    let (ca, sa) = (w.ca, w.sa);
    w.sim.cut(Some(sa), Some(ca), Window::from(Instant::ZERO));
    let id = w.get(b"t");
    w.sim.run_for(Duration::from_secs(60));
    assert_eq!(
        w.response(id),
        security_failure(SecurityError::HandshakeTimeout)
    );
    let (at, _) = w.session_failure(w.client).unwrap();
    assert_eq!(at, Instant::ZERO + HANDSHAKE_TIMEOUT);
    // Meanwhile the server gave up on it too, and told its adapter to close it.
    assert!(w
        .handshake_failures()
        .contains(&SecurityError::HandshakeTimeout));
    assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
}

/// A TLS server endpoint driven by hand, with a connection accepted from PEER.
struct Hand {
    ep: Endpoint,
    written: Vec<u8>,
    commands: Vec<StreamCommand>,
    events: Vec<Event>,
}

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 41_000);

impl Hand {
    fn server(config: Config) -> Self {
        let mut h = Hand {
            ep: Endpoint::new(config, 3).unwrap(),
            written: Vec::new(),
            commands: Vec::new(),
            events: Vec::new(),
        };
        h.ep.set_unix_time(Instant::ZERO, UNIX_NOW);
        h.ep.handle_accepted(Instant::ZERO, PEER).unwrap();
        h.drain(Instant::ZERO);
        h
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.ep.poll_transmit() {
            self.written.extend_from_slice(&t.payload);
            self.ep.handle_send_result(now, t.id, Ok(()));
        }
        while let Some(c) = self.ep.poll_stream_command() {
            self.commands.push(c);
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    fn feed(&mut self, now: Instant, bytes: &[u8]) {
        self.ep.handle_datagram(now, PEER, bytes);
        self.drain(now);
    }
}

fn hand_server() -> Hand {
    Hand::server(tls_server(
        Config::default(),
        "server",
        ClientAuth::NotRequested,
        30,
    ))
}

#[test]
fn a_client_that_connects_and_says_nothing_is_dropped_after_the_handshake_timeout() {
    let mut h = hand_server();
    assert_eq!(h.ep.handshakes_in_progress(), 1);
    assert_eq!(h.ep.session_count(), 0);
    assert_eq!(h.ep.poll_timeout(), Some(Instant::ZERO + HANDSHAKE_TIMEOUT));
    h.ep.handle_timeout(Instant::ZERO + HANDSHAKE_TIMEOUT);
    h.drain(Instant::ZERO + HANDSHAKE_TIMEOUT);
    assert_eq!(h.ep.handshakes_in_progress(), 0);
    assert!(matches!(
        h.events.as_slice(),
        [Event::HandshakeFailed {
            peer: PEER,
            error: SecurityError::HandshakeTimeout
        }]
    ));
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
}

#[test]
fn bytes_that_are_not_tls_are_refused_with_an_alert_and_the_connection_closed() {
    let mut h = hand_server();
    // A plain CoAP-over-TCP CSM where a ClientHello should be.
    h.feed(Instant::ZERO, &[0x30, 0xE1, 0x22, 0x04, 0x00, 0x40]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::HandshakeFailed {
            peer: PEER,
            error: SecurityError::Protocol
        }]
    ));
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
    // A TLS alert record (content type 21) went back.
    assert_eq!(h.written.first(), Some(&21));
    assert_eq!(h.ep.handshakes_in_progress(), 0);
}

#[test]
fn a_client_that_disconnects_mid_handshake_is_reported() {
    let mut h = hand_server();
    h.ep.handle_closed(Instant::ZERO, PEER, StreamClosed::Eof);
    h.drain(Instant::ZERO);
    assert!(matches!(
        h.events.as_slice(),
        [Event::HandshakeFailed {
            peer: PEER,
            error: SecurityError::ConnectionClosed
        }]
    ));
    assert!(h.commands.is_empty(), "the connection is gone already");
}

#[test]
fn handshakes_in_progress_are_capped() {
    let config = Config {
        limits: coap_engine::Limits {
            max_handshakes: 2,
            ..coap_engine::Limits::default()
        },
        ..tls_server(Config::default(), "server", ClientAuth::NotRequested, 31)
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    ep.handle_accepted(Instant::ZERO, addr(1)).unwrap();
    ep.handle_accepted(Instant::ZERO, addr(2)).unwrap();
    assert_eq!(
        ep.handle_accepted(Instant::ZERO, addr(3)),
        Err(Error::SessionLimit)
    );
    assert_eq!(ep.handshakes_in_progress(), 2);
}

#[test]
fn a_huge_record_header_is_refused_without_buffering_it() {
    let mut h = hand_server();
    // A handshake record announcing 65535 bytes: more than TLS allows.
    h.feed(Instant::ZERO, &[22, 3, 3, 0xFF, 0xFF]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::HandshakeFailed { .. }]
    ));
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
}

// ---------------------------------------------------------------------------------------------
// Inside the connection

#[test]
fn requests_made_before_the_handshake_wait_for_it_and_go_in_order() {
    let mut w = World::default(40);
    let ids: Vec<_> = (0..5u8).map(|i| w.get(&[b'0' + i])).collect();
    w.sim.run_for(Duration::from_secs(1));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(w.response(*id), Ok(format!("hello {i}").into_bytes()));
    }
}

#[test]
fn a_large_body_goes_block_wise_through_the_tls_records() {
    let mut w = World::default(41);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut put = con_get("x", &body);
    put.header.code = MessageClass::Request(RequestType::Put);
    let id = w.sim.request(w.client, w.sa, &put).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(b"got 20000 bytes".to_vec()));
}

#[test]
fn messages_larger_than_a_tls_record_cross_in_several_records() {
    // 48 kB messages allowed on both sides, and whole bodies marked as one block by the
    // applications themselves (Block1/Block2 0, no more): each 40 kB message is one frame
    // spanning three TLS records.
    let big = |c: Config| Config {
        max_message_size: 48 * 1024,
        ..c
    };
    let mut w = World::new(
        42,
        tls_client(big(Config::default()), "ca", None, 42),
        tls_server(
            big(Config::default()),
            "server",
            ClientAuth::NotRequested,
            43,
        ),
    );
    let whole = vec![0x06]; // num 0, no more, SZX 6
    let block2 = whole.clone();
    w.sim.set_app(w.server, move |sim, node, event| {
        if let Event::Request { id, request, .. } = event {
            let mut echo = content(&request.payload.iter().rev().copied().collect::<Vec<_>>());
            echo.add_option(CoapOption::Block2, block2.clone());
            sim.respond(node, *id, &echo).unwrap();
        }
    });
    // Until the server's CSM says otherwise, its limit is RFC 8323's default (1152 bytes).
    let hello = w.get(b"");
    w.sim.run_for(Duration::from_secs(1));
    assert!(w.response(hello).is_ok());
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let mut put = con_get("x", &body);
    put.header.code = MessageClass::Request(RequestType::Put);
    put.add_option(CoapOption::Block1, whole);
    let id = w.sim.request(w.client, w.sa, &put).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    let want: Vec<u8> = body.iter().rev().copied().collect();
    let got = w.response(id).expect("answered");
    assert!(
        got == want,
        "{} bytes back, not the 40000 sent reversed",
        got.len()
    );
    // One write carried the whole request: more than one TLS record's worth.
    assert!(w.sim.sent(w.client).iter().any(|s| s.bytes.len() > 40_000));
}

#[test]
fn closing_a_session_releases_the_connection_and_sends_close_notify() {
    let mut w = World::default(43);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let sa = w.sa;
    w.sim.close_session(w.client, sa).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    // The server read the Release inside the connection.
    assert!(w.has_event(w.server, |e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::Released,
            ..
        }
    )));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

#[test]
fn an_application_ping_gets_a_pong_through_tls() {
    let mut w = World::default(44);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let sa = w.sa;
    let ping = w.sim.ping(w.client, sa).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    match &w.sim.terminal(w.client, ping).event {
        Event::Pong { rtt, .. } => assert_eq!(*rtt, D * 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reset_connection_fails_the_session_on_both_sides() {
    let mut w = World::default(45);
    w.sim.set_app(w.server, |_, _, _| {});
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    let (ca, sa) = (w.ca, w.sa);
    w.sim.reset_connection(ca, sa);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.response(id),
        Err(ExchangeError::SessionFailed(FailureReason::Connection(
            ConnectionFailure::Reset
        )))
    );
    assert!(matches!(
        w.session_failure(w.server),
        Some((_, FailureReason::Connection(ConnectionFailure::Reset)))
    ));
}

// ---------------------------------------------------------------------------------------------
// Liveness

const K: Keepalive = Keepalive {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(3),
};

#[test]
fn a_frozen_tls_peer_is_detected_within_the_keepalive_bound() {
    let client = tls_client(
        Config {
            keepalive: Some(K),
            ..Config::default()
        },
        "ca",
        None,
        50,
    );
    let server = tls_server(Config::default(), "server", ClientAuth::NotRequested, 51);
    let mut w = World::new(50, client, server);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    w.sim.run_for(Duration::from_secs(10));
    assert!(w.session_failure(w.client).is_none(), "Pongs keep it alive");
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    w.sim.cut(Some(w.sa), Some(w.ca), Window::from(w.sim.now()));
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.client).expect("noticed");
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    assert_eq!(at, last_heard + K.bound());
}

#[test]
fn failing_writes_during_the_handshake_cannot_stretch_the_bound() {
    let client = tls_client(
        Config {
            keepalive: Some(K),
            ..Config::default()
        },
        "ca",
        None,
        52,
    );
    let server = tls_server(Config::default(), "server", ClientAuth::NotRequested, 53);
    let mut w = World::new(52, client, server);
    w.sim.fail_sends(
        w.ca,
        None,
        Window::from(Instant::ZERO),
        SendErrorKind::Unreachable,
    );
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.client).expect("noticed");
    assert!(at <= Instant::ZERO + K.bound(), "{reason:?} at {at:?}");
    assert!(w.response(id).is_err());
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut w = World::default(seed);
        let id = w.get(b"1");
        w.sim.run_for(Duration::from_secs(1));
        assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
        w.sim
            .sent(w.client)
            .iter()
            .chain(w.sim.sent(w.server))
            .map(|s| (s.at, s.bytes.to_vec()))
            .collect::<Vec<_>>()
    };
    let a = run(60);
    assert_eq!(a, run(60));
    assert_ne!(a, run(61));
}
