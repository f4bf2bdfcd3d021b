//! CoAP over DTLS (RFC 7252 §9) on the deterministic simulator: handshakes in both modes,
//! typed failures, the stateless cookie exchange and its limits, restarts on either side,
//! and the liveness contract over DTLS (the scenario this engine exists for).
#![cfg(feature = "dtls")]

mod sim;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use coap_engine::coap_lite::{CoapOption, MessageType, Packet};
use coap_engine::dtls::ClientAuth;
use coap_engine::{
    CertificateError, CloseReason, Config, Duration, Endpoint, Error, Event, ExchangeError,
    FailureReason, Instant, Keepalive, Limits, ObserverRemoval, PeerIdentity, RequestId,
    SecurityError, SendErrorKind,
};
use sim::dtls::*;
use sim::*;

const D: Duration = Duration::from_millis(10);

/// A client at 40000 and a server at 5684 over a clean link with delay `D`; the server
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

    fn psk(seed: u64) -> Self {
        World::new(
            seed,
            psk_client(Config::default(), b"client", b"secret", seed),
            psk_server(Config::default(), seed + 1),
        )
    }

    fn events(&self, node: NodeId, pred: impl Fn(&Event) -> bool) -> Vec<(Instant, Event)> {
        self.sim
            .events_where(node, pred)
            .into_iter()
            .map(|l| (l.at, l.event.clone()))
            .collect()
    }

    fn handshake_failures(&self) -> Vec<SecurityError> {
        self.events(self.server, |e| matches!(e, Event::HandshakeFailed { .. }))
            .into_iter()
            .map(|(_, e)| match e {
                Event::HandshakeFailed { error, .. } => error,
                _ => unreachable!(),
            })
            .collect()
    }
}

fn failed_with(result: Result<Vec<u8>, ExchangeError>) -> SecurityError {
    match result {
        Err(ExchangeError::SessionFailed(FailureReason::Security(e))) => e,
        other => panic!("expected a security failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes and modes

#[test]
fn a_refused_request_to_a_new_peer_starts_no_handshake() {
    // The session made for the call is discarded when the call is refused (here: no room to
    // queue a request at all); nothing about it may reach the wire.
    let config = psk_client(
        Config {
            limits: Limits {
                max_queued_requests: 0,
                ..Limits::default()
            },
            ..Config::default()
        },
        b"client",
        b"secret",
        70,
    );
    let mut ep = Endpoint::new(config, 70).unwrap();
    let peer = addr(5684);
    assert_eq!(
        ep.request(Instant::ZERO, peer, &con_get("x", b"")),
        Err(Error::QueueFull)
    );
    assert!(
        ep.poll_transmit().is_none(),
        "a ClientHello for a refused call"
    );
    assert_eq!(ep.session_count(), 0);
    assert!(ep.poll_event().is_none());
}

#[test]
fn psk_handshake_then_requests_and_the_peer_identity() {
    let mut w = World::psk(1);
    let id = w.get(b"a");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello a".to_vec()));
    // Two round trips for the cookie exchange and the handshake, one for the request.
    let established = w.events(w.client, |e| matches!(e, Event::SessionEstablished { .. }));
    assert_eq!(established.len(), 1);
    assert_eq!(
        w.sim.endpoint(w.server).peer_identity(w.ca),
        Some(PeerIdentity::PreSharedKey(b"client".to_vec()))
    );
    assert!(
        w.sim
            .endpoint(w.client)
            .session_info(w.sa)
            .unwrap()
            .established
    );
    // Later requests reuse the association: no further handshake.
    let before = w.sim.sent(w.client).len();
    let id = w.get(b"b");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello b".to_vec()));
    assert_eq!(
        w.sim.sent(w.client).len(),
        before + 1,
        "one record, nothing else"
    );
}

#[test]
fn certificate_handshake_checks_the_name_the_request_used() {
    let mut w = World::new(
        2,
        cert_client(Config::default(), "ca", None, 2),
        cert_server(
            Config::default(),
            "server",
            ClientAuth::NotRequested,
            false,
            3,
        ),
    );
    // To an address: the certificate must name 127.0.0.1, which it does.
    let id = w.get(b"ip");
    w.sim.run_for(Duration::from_secs(2));
    assert_eq!(w.response(id), Ok(b"hello ip".to_vec()));
    assert!(matches!(
        w.sim.endpoint(w.client).peer_identity(w.sa),
        Some(PeerIdentity::Certificate(der)) if der == certified("server").certificate.to_vec()
    ));

    // Uri-Host names the host to check: "localhost" passes, another name does not.
    for (seed, host, ok) in [(4, "localhost", true), (5, "coap.example", false)] {
        let mut w = World::new(
            seed,
            cert_client(Config::default(), "ca", None, seed),
            cert_server(
                Config::default(),
                "server",
                ClientAuth::NotRequested,
                false,
                seed + 1,
            ),
        );
        let mut get = con_get("x", b"n");
        get.add_option(CoapOption::UriHost, host.as_bytes().to_vec());
        let id = w.sim.request(w.client, w.sa, &get).unwrap();
        w.sim.run_for(Duration::from_secs(2));
        if ok {
            assert_eq!(w.response(id), Ok(b"hello n".to_vec()));
        } else {
            let e = failed_with(w.response(id));
            assert_eq!(
                e,
                SecurityError::Certificate(CertificateError::NameMismatch)
            );
        }
    }
}

#[test]
fn a_server_with_psk_and_a_certificate_serves_each_client_in_its_own_mode() {
    let mut sim = Sim::new(6);
    let server = cert_server(
        Config::default(),
        "server",
        ClientAuth::NotRequested,
        true,
        7,
    );
    let s = sim.add_endpoint(addr(5684), server);
    sim.set_app(s, hello);
    let p = sim.add_endpoint(
        addr(40_001),
        psk_client(Config::default(), b"other", b"another secret", 8),
    );
    let c = sim.add_endpoint(addr(40_002), cert_client(Config::default(), "ca", None, 9));
    let ip = sim.request(p, addr(5684), &con_get("x", b"psk")).unwrap();
    let ic = sim.request(c, addr(5684), &con_get("x", b"cert")).unwrap();
    sim.run_for(Duration::from_secs(2));
    assert!(
        matches!(&sim.terminal(p, ip).event, Event::Response { response, .. } if response.payload == b"hello psk")
    );
    assert!(
        matches!(&sim.terminal(c, ic).event, Event::Response { response, .. } if response.payload == b"hello cert")
    );
    assert_eq!(
        sim.endpoint(s).peer_identity(addr(40_001)),
        Some(PeerIdentity::PreSharedKey(b"other".to_vec()))
    );
    assert_eq!(
        sim.endpoint(s).peer_identity(addr(40_002)),
        None,
        "no client certificate asked"
    );
}

#[test]
fn required_client_certificates_are_verified() {
    // With the test CA's client certificate: accepted, and the server knows who it is.
    let mut w = World::new(
        10,
        cert_client(Config::default(), "ca", Some("client"), 10),
        cert_server(Config::default(), "server", ClientAuth::Required, false, 11),
    );
    let id = w.get(b"me");
    w.sim.run_for(Duration::from_secs(2));
    assert_eq!(w.response(id), Ok(b"hello me".to_vec()));
    assert!(matches!(
        w.sim.endpoint(w.server).peer_identity(w.ca),
        Some(PeerIdentity::Certificate(der)) if der == certified("client").certificate.to_vec()
    ));

    // Without one (the engine's anonymous placeholder goes): refused by the server, and the
    // client's session fails with a typed reason.
    let mut w = World::new(
        12,
        cert_client(Config::default(), "ca", None, 12),
        cert_server(Config::default(), "server", ClientAuth::Required, false, 13),
    );
    let id = w.get(b"anon");
    w.sim.run_for(Duration::from_secs(30));
    assert_eq!(
        w.handshake_failures(),
        vec![SecurityError::Certificate(CertificateError::UnknownIssuer)]
    );
    // The server says why with a fatal unknown_ca alert, so the client knows at once.
    assert_eq!(failed_with(w.response(id)), SecurityError::Alert(48));
    assert!(w.sim.terminal(w.client, id).at < Instant::from_millis(200));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Typed failures

#[test]
fn a_wrong_key_or_an_unknown_identity_fails_with_a_typed_reason_on_both_sides() {
    for (seed, identity, key, server_says) in [
        (
            20,
            &b"client"[..],
            &b"wrong"[..],
            SecurityError::PskMismatch,
        ),
        (
            21,
            &b"stranger"[..],
            &b"secret"[..],
            SecurityError::UnknownPskIdentity,
        ),
    ] {
        let mut w = World::new(
            seed,
            psk_client(Config::default(), identity, key, seed),
            psk_server(Config::default(), seed + 100),
        );
        let id = w.get(b"x");
        w.sim.run_for(HANDSHAKE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(w.handshake_failures(), vec![server_says]);
        // The server answers the client's Finished with a decrypt_error alert (the same for
        // an unknown identity, RFC 4279 §2, so identities cannot be probed): the client
        // knows at once instead of at its handshake timeout.
        assert_eq!(
            failed_with(w.response(id)),
            SecurityError::CredentialsRejected
        );
        let (at, reason) = w.session_failure(w.client).unwrap();
        assert_eq!(
            reason,
            FailureReason::Security(SecurityError::CredentialsRejected)
        );
        assert!(at < Instant::from_millis(200), "{at:?}");
        assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
        assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
    }
}

#[test]
fn a_client_in_a_mode_the_server_does_not_serve_is_refused_with_an_alert() {
    // A PSK client and a certificate-only server: no cipher suite in common.
    let mut w = World::new(
        45,
        psk_client(Config::default(), b"client", b"secret", 45),
        cert_server(
            Config::default(),
            "server",
            ClientAuth::NotRequested,
            false,
            46,
        ),
    );
    let id = w.get(b"x");
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(
        w.handshake_failures(),
        vec![SecurityError::NoCommonCipherSuite]
    );
    assert_eq!(failed_with(w.response(id)), SecurityError::Alert(40)); // handshake_failure
    assert!(w.sim.terminal(w.client, id).at < Instant::from_millis(200));
    assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
}

#[test]
fn certificates_are_refused_for_the_right_reason() {
    let cases: [(u64, &str, Option<u64>, CertificateError); 4] = [
        (
            30,
            "other-server",
            Some(1_800_000_000),
            CertificateError::UnknownIssuer,
        ),
        // The test certificates are valid from 2026 to 2126.
        (31, "server", Some(5_000_000_000), CertificateError::Expired),
        (
            32,
            "server",
            Some(1_000_000_000),
            CertificateError::NotYetValid,
        ),
        (33, "server", None, CertificateError::NoClock),
    ];
    for (seed, cert, clock, expect) in cases {
        let mut sim = Sim::new(seed);
        sim.wall_clock = clock;
        let c = sim.add_endpoint(
            addr(40_000),
            cert_client(Config::default(), "ca", None, seed),
        );
        sim.wall_clock = Some(UNIX_NOW);
        let s = sim.add_endpoint(
            addr(5684),
            cert_server(
                Config::default(),
                cert,
                ClientAuth::NotRequested,
                false,
                seed,
            ),
        );
        sim.set_app(s, hello);
        let id = sim.request(c, addr(5684), &con_get("x", b"")).unwrap();
        sim.run_for(Duration::from_secs(30));
        let e = match &sim.terminal(c, id).event {
            Event::RequestFailed {
                error: ExchangeError::SessionFailed(FailureReason::Security(e)),
                ..
            } => *e,
            other => panic!("{cert}: {other:?}"),
        };
        assert_eq!(e, SecurityError::Certificate(expect), "{cert} at {clock:?}");
        // Refused as soon as the certificate arrived: one round trip after the cookie.
        assert!(sim.terminal(c, id).at < Instant::from_millis(100));
        assert!(e.to_string().contains(&expect.to_string()));
    }
}

#[test]
fn a_client_without_credentials_for_the_mode_cannot_start() {
    // A certificate client with verification on but no trust anchors is refused at once.
    let dtls = coap_engine::dtls::DtlsConfig {
        verify_peer: true,
        trust_anchors: Vec::new(),
        certificate: Some(certified("client")),
        ..Default::default()
    };
    let config = secure(Config::default(), dtls, 40);
    let mut ep = Endpoint::new(config, 1).unwrap();
    let err = ep
        .request(Instant::ZERO, addr(5684), &con_get("x", b""))
        .unwrap_err();
    assert_eq!(err, Error::Security(SecurityError::NoCredentials));
    assert_eq!(ep.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Session semantics

#[test]
fn requests_made_during_the_handshake_wait_for_it_within_the_queue_bound() {
    let client = Config {
        limits: Limits {
            max_queued_requests: 3,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut w = World::new(
        50,
        psk_client(client, b"client", b"secret", 50),
        psk_server(Config::default(), 51),
    );
    let ids: Vec<RequestId> = (0..3u8).map(|i| w.get(&[b'0' + i])).collect();
    // Nothing but the handshake goes out before it completes.
    let early = w.sim.request(w.client, w.sa, &con_get("x", b"4"));
    assert_eq!(early.unwrap_err(), Error::QueueFull);
    w.sim.run_for(Duration::from_secs(1));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(w.response(*id), Ok(format!("hello {i}").into_bytes()));
    }
    let established = w.events(w.client, |e| matches!(e, Event::SessionEstablished { .. }))[0].0;
    let first_request = w.sim.requests_seen(w.server)[0].0;
    assert!(
        first_request > established,
        "requests wait for the handshake"
    );
}

#[test]
fn a_handshake_survives_lost_duplicated_and_reordered_flights() {
    let mut completed = 0;
    for seed in 0..100u64 {
        let mut w = World::psk(1000 + seed);
        w.sim.set_default_link(Link {
            delay: D,
            jitter: Duration::from_millis(40),
            loss: 0.25,
            duplicate: 0.25,
        });
        let id = w.get(b"lossy");
        w.sim.run_for(Duration::from_secs(120));
        match w.response(id) {
            Ok(body) => {
                assert_eq!(body, b"hello lossy");
                completed += 1;
            }
            // A quarter of all datagrams lost: some handshakes or requests run out of time.
            Err(ExchangeError::SessionFailed(FailureReason::Security(
                SecurityError::HandshakeTimeout | SecurityError::CredentialsRejected,
            )))
            | Err(ExchangeError::Timeout)
            | Err(ExchangeError::SessionFailed(FailureReason::NoResponse)) => {}
            Err(e) => panic!("seed {seed}: {e:?}"),
        }
        assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
    }
    assert!(completed >= 80, "only {completed}/100 completed");
}

#[test]
fn a_tampered_record_is_dropped_and_the_retransmission_gets_through() {
    let mut w = World::psk(60);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    // Flip one bit of the next application record from the client (content type 23).
    let tampered = Rc::new(RefCell::new(0));
    let t = tampered.clone();
    let ca = w.ca;
    w.sim.set_filter(move |d| {
        if d.from == ca && d.bytes.first() == Some(&23) && *t.borrow() == 0 {
            *t.borrow_mut() += 1;
            return Verdict::Drop;
        }
        Verdict::Pass
    });
    let id = w.get(b"2");
    // The first transmission is replaced by a tampered copy delivered instead.
    let record = w.sim.sent(w.client).last().unwrap().bytes.to_vec();
    let mut bad = record.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    w.sim.inject(w.ca, w.sa, &bad, D);
    w.sim.run_for(Duration::from_secs(10));
    assert_eq!(*tampered.borrow(), 1);
    assert_eq!(
        w.response(id),
        Ok(b"hello 2".to_vec()),
        "retransmitted, intact"
    );
    assert!(
        w.sim.requests_seen(w.server).len() == 2,
        "the tampered copy never reached the application"
    );
    assert!(w.session_failure(w.client).is_none() && w.session_failure(w.server).is_none());
}

#[test]
fn a_client_that_restarts_gets_a_new_association_which_replaces_the_old_session() {
    let mut w = World::psk(70);
    let id = w.get(b"before");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello before".to_vec()));
    // The client process restarts: a new endpoint at the same address, no state.
    let config = psk_client(Config::default(), b"client", b"secret", 71);
    w.sim
        .input(w.client, |ep, _| *ep = Endpoint::new(config, 71).unwrap());
    let restarted = w.sim.now();
    w.get(b"after");
    w.sim.run_for(Duration::from_secs(1));
    // The new endpoint numbers its requests afresh: find its answer after the restart.
    let answers: Vec<Vec<u8>> = w
        .events(w.client, |e| matches!(e, Event::Response { .. }))
        .into_iter()
        .filter(|(at, _)| *at >= restarted)
        .map(|(_, e)| match e {
            Event::Response { response, .. } => response.payload,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(answers, vec![b"hello after".to_vec()]);
    let closed = w.events(w.server, |e| matches!(e, Event::SessionClosed { .. }));
    assert!(
        matches!(
            &closed[..],
            [(
                _,
                Event::SessionClosed {
                    reason: CloseReason::Replaced,
                    ..
                }
            )]
        ),
        "{closed:?}"
    );
    assert_eq!(w.sim.endpoint(w.server).session_count(), 1);
}

#[test]
fn an_off_path_client_hello_does_not_end_a_live_association() {
    let mut w = World::psk(80);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    // An attacker replays the client's first ClientHello, and a ClientHello with a forged
    // cookie, from the client's address: the server can only answer with a cookie challenge,
    // which goes to the real client (who ignores it).
    let hello = w.sim.sent(w.client)[0].bytes.to_vec();
    w.sim.inject(w.ca, w.sa, &hello, D);
    let second = w.sim.sent(w.client)[1].bytes.to_vec(); // the ClientHello with our cookie
    let mut forged = second.clone();
    let cookie_byte = 13 + 12 + 2 + 32 + 1 + 1; // record, handshake, version, random, sid, len
    forged[cookie_byte] ^= 0xFF;
    w.sim.inject(w.ca, w.sa, &forged, D);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 1);
    assert_eq!(w.sim.endpoint(w.server).handshakes_in_progress(), 0);
    let id = w.get(b"2");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 2".to_vec()));
    assert!(w
        .events(w.server, |e| matches!(
            e,
            Event::SessionClosed { .. } | Event::SessionFailed { .. }
        ))
        .is_empty());
}

#[test]
fn a_restarted_server_is_noticed_within_the_keepalive_bound_and_the_next_request_handshakes_again()
{
    let k = Keepalive {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    };
    let client = Config {
        keepalive: Some(k),
        ..Config::default()
    };
    let mut w = World::new(
        90,
        psk_client(client, b"client", b"secret", 90),
        psk_server(Config::default(), 91),
    );
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    // The server restarts with no memory of the association; its records make no sense to
    // the new server, which drops them.
    let config = psk_server(Config::default(), 92);
    w.sim
        .input(w.server, |ep, _| *ep = Endpoint::new(config, 92).unwrap());
    w.sim.run_for(Duration::from_secs(10));
    let (at, reason) = w.session_failure(w.client).expect("failure detected");
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    assert_eq!(at, last_heard + k.bound());
    // The next request starts a new association by itself.
    let id = w.get(b"2");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 2".to_vec()));
}

#[test]
fn without_keepalive_a_restarted_server_ends_the_session_after_the_retransmissions() {
    let mut w = World::psk(100);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let config = psk_server(Config::default(), 101);
    w.sim
        .input(w.server, |ep, _| *ep = Endpoint::new(config, 101).unwrap());
    let id = w.get(b"2");
    w.sim.run_for(Duration::from_secs(120));
    assert_eq!(w.response(id), Err(ExchangeError::Timeout));
    let (at, reason) = w.session_failure(w.client).unwrap();
    assert_eq!(reason, FailureReason::NoResponse);
    assert_eq!(at, w.sim.terminal(w.client, id).at);
    let id = w.get(b"3");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 3".to_vec()));
}

#[test]
fn closing_a_session_sends_close_notify_and_the_peer_closes_too() {
    let mut w = World::psk(110);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let sa = w.sa;
    w.sim.close_session(w.client, sa).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    let closed = w.events(w.server, |e| matches!(e, Event::SessionClosed { .. }));
    assert!(
        matches!(
            &closed[..],
            [(
                _,
                Event::SessionClosed {
                    reason: CloseReason::PeerClosed,
                    ..
                }
            )]
        ),
        "{closed:?}"
    );
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Abuse limits (server)

#[test]
fn a_cookie_challenge_keeps_no_state_and_is_never_larger_than_the_client_hello() {
    let mut sim = Sim::new(120);
    let s = sim.add_endpoint(addr(5684), psk_server(Config::default(), 120));
    // A flood of first ClientHellos from many (spoofed) addresses: each gets one small
    // answer, and the server keeps nothing.
    let mut clients = Vec::new();
    for i in 0..50u16 {
        let c = sim.add_endpoint(
            addr(41_000 + i),
            psk_client(Config::default(), b"client", b"secret", u64::from(i)),
        );
        clients.push(c);
    }
    // Only the first flight is allowed through, so no cookie ever comes back.
    let server = addr(5684);
    sim.set_filter(move |d| {
        if d.to == server && d.bytes.len() > 13 + 12 + 35 && d.bytes[13 + 12 + 34 + 1] != 0 {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    for &c in &clients {
        sim.request(c, server, &con_get("x", b"")).unwrap();
    }
    sim.run_for(Duration::from_millis(25));
    assert_eq!(sim.endpoint(s).handshakes_in_progress(), 0);
    assert_eq!(sim.endpoint(s).session_count(), 0);
    for &c in &clients {
        let hello = &sim.sent(c)[0];
        let answers: Vec<_> = sim
            .received(c)
            .iter()
            .filter(|r| r.from == server)
            .collect();
        assert_eq!(answers.len(), 1);
        assert!(
            answers[0].bytes.len() <= hello.bytes.len(),
            "no amplification"
        );
        assert_eq!(answers[0].bytes[13], 3, "a HelloVerifyRequest");
    }
}

#[test]
fn half_open_handshakes_are_capped_and_a_slot_frees_when_one_times_out() {
    let server = Config {
        limits: Limits {
            max_handshakes: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut sim = Sim::new(130);
    let s = sim.add_endpoint(addr(5684), psk_server(server, 130));
    sim.set_app(s, hello);
    let server = addr(5684);
    let stuck: Vec<NodeId> = (0..3u16)
        .map(|i| {
            sim.add_endpoint(
                addr(42_000 + i),
                psk_client(Config::default(), b"client", b"secret", u64::from(i) + 7),
            )
        })
        .collect();
    // Clients 0 and 1 get their cookie and then fall silent (their second ClientHello gets
    // through, nothing after): two half-open handshakes on the server.
    let (a0, a1) = (addr(42_000), addr(42_001));
    let counts = Rc::new(RefCell::new(BTreeMap::<SocketAddr, u32>::new()));
    let k = counts.clone();
    sim.set_filter(move |d| {
        if d.to != server || !(d.from == a0 || d.from == a1) {
            return Verdict::Pass;
        }
        let mut k = k.borrow_mut();
        let n = k.entry(d.from).or_default();
        *n += 1;
        if *n <= 2 {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    });
    sim.request(stuck[0], server, &con_get("x", b"0")).unwrap();
    sim.request(stuck[1], server, &con_get("x", b"1")).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.endpoint(s).handshakes_in_progress(), 2);
    // A third peer is challenged (statelessly) but its ClientHello with the cookie is dropped
    // while the table is full; its own retransmissions try again.
    let third = sim.request(stuck[2], server, &con_get("x", b"2")).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.endpoint(s).handshakes_in_progress(), 2);
    assert_eq!(sim.endpoint(s).session_count(), 0);
    // The stuck handshakes time out on the server; then the third gets through.
    sim.run_for(HANDSHAKE_TIMEOUT + Duration::from_secs(20));
    let failures = sim.events_where(s, |e| {
        matches!(
            e,
            Event::HandshakeFailed {
                error: SecurityError::HandshakeTimeout,
                ..
            }
        )
    });
    assert_eq!(failures.len(), 2);
    let done = sim.terminal(stuck[2], third);
    assert!(
        matches!(&done.event, Event::Response { response, .. } if response.payload == b"hello 2")
            || matches!(
                &done.event,
                Event::RequestFailed {
                    error: ExchangeError::SessionFailed(FailureReason::Security(
                        SecurityError::HandshakeTimeout
                    )),
                    ..
                }
            ),
        "{:?}",
        done.event
    );
    assert_eq!(sim.endpoint(s).handshakes_in_progress(), 0);
}

// ---------------------------------------------------------------------------------------------
// Determinism

fn transcript(seed: u64) -> Vec<(Instant, Vec<u8>)> {
    let mut w = World::new(
        seed,
        cert_client(Config::default(), "ca", None, seed),
        cert_server(
            Config::default(),
            "server",
            ClientAuth::NotRequested,
            true,
            seed + 1,
        ),
    );
    w.sim.set_default_link(Link {
        delay: D,
        jitter: Duration::from_millis(20),
        loss: 0.2,
        duplicate: 0.1,
    });
    for i in 0..5u8 {
        w.get(&[i]);
    }
    w.sim.run_for(Duration::from_secs(60));
    [w.client, w.server]
        .iter()
        .flat_map(|&n| w.sim.sent(n).iter().map(|s| (s.at, s.bytes.to_vec())))
        .collect()
}

#[test]
fn the_same_seed_replays_the_same_bytes() {
    let a = transcript(140);
    assert!(a.len() > 10);
    assert_eq!(a, transcript(140), "same seed, same run, byte for byte");
    assert_ne!(a, transcript(141));
}

// ---------------------------------------------------------------------------------------------
// Requests, observe and block-wise work the same over DTLS

#[test]
fn block_wise_bodies_and_observe_work_over_dtls() {
    let mut w = World::psk(150);
    // A 5 kB request body goes in Block1 blocks, a 5 kB response comes in Block2 blocks.
    let mut put = con_get("x", &big_body());
    put.header.code =
        coap_engine::coap_lite::MessageClass::Request(coap_engine::coap_lite::RequestType::Put);
    let id = w.sim.request(w.client, w.sa, &put).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(b"got 5000 bytes".to_vec()));
    let id = w.sim.request(w.client, w.sa, &con_get("big", b"")).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(big_body()));
    // Observe: the registration and two notifications.
    let mut get = con_get("obs", b"");
    get.header.set_type(MessageType::NonConfirmable);
    let obs = w.observe(&get);
    w.sim.run_for(Duration::from_secs(1));
    for n in 1..=2u8 {
        w.sim
            .input(w.server, |ep, now| {
                ep.notify(now, TIME, &content(&[n]), false)
            })
            .unwrap();
        w.sim.run_for(Duration::from_secs(1));
    }
    let payloads: Vec<Vec<u8>> = w
        .events(w.client, |e| matches!(e, Event::Notification { .. }))
        .into_iter()
        .map(|(_, e)| match e {
            Event::Notification { response, .. } => response.payload,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(payloads, vec![b"hello ".to_vec(), vec![1], vec![2]]);
    let _ = obs;
}

// ---------------------------------------------------------------------------------------------
// The liveness contract over DTLS

const K: Keepalive = Keepalive {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(3),
};

fn with_keepalive() -> Config {
    Config {
        keepalive: Some(K),
        ..Config::default()
    }
}

/// Transmits `node` made in `[from, to)`.
fn transmits_between(sim: &Sim, node: NodeId, from: Instant, to: Instant) -> usize {
    sim.sent(node)
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .count()
}

/// A client observing over DTLS: the registration, then a notification every second.
fn observing_world(seed: u64) -> (World, RequestId) {
    let mut w = World::new(
        seed,
        psk_client(with_keepalive(), b"client", b"secret", seed),
        psk_server(Config::default(), seed + 1),
    );
    let get = con_get("obs", b"");
    let id = w.observe(&get);
    for n in 0..100u8 {
        w.sim.at(Instant::from_secs(1 + u64::from(n)), move |sim| {
            let _ = sim.input(1, |ep, now| ep.notify(now, TIME, &content(&[n]), false));
        });
    }
    w.sim.run_for(Duration::from_millis(4500));
    (w, id)
}

#[test]
fn observing_over_dtls_when_sends_start_failing_unreachable_fails_within_the_bound() {
    let (mut w, id) = observing_world(200);
    // The radio dies: every send fails with ENETUNREACH, and nothing arrives either.
    let cut = w.sim.now();
    w.sim
        .fail_sends(w.ca, None, Window::from(cut), SendErrorKind::Unreachable);
    w.sim.cut(Some(w.sa), Some(w.ca), Window::from(cut));
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w
        .session_failure(w.client)
        .expect("the failure is reported");
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    assert!(
        at <= last_heard + K.bound(),
        "{at:?} > {:?}",
        last_heard + K.bound()
    );
    assert_eq!(at, last_heard + K.bound());
    assert!(matches!(
        &w.sim.terminal(w.client, id).event,
        Event::RequestFailed {
            error: ExchangeError::SessionFailed(FailureReason::KeepaliveTimeout { .. }),
            ..
        }
    ));
    // Failed sends were reported and did not spin: a probe and its backoff, nothing more.
    assert!(!w
        .events(w.client, |e| matches!(
            e,
            Event::SendFailed {
                kind: SendErrorKind::Unreachable,
                ..
            }
        ))
        .is_empty());
    assert!(transmits_between(&w.sim, w.client, cut, at) <= 4);
}

#[test]
fn silent_loss_over_dtls_fails_within_the_bound() {
    let (mut w, _) = observing_world(210);
    let cut = w.sim.now();
    w.sim.partition(w.ca, w.sa, Window::from(cut));
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.client).unwrap();
    assert!(matches!(reason, FailureReason::KeepaliveTimeout { .. }));
    assert_eq!(at, last_heard + K.bound());
    assert!(transmits_between(&w.sim, w.client, cut, at) <= 4);
}

#[test]
fn a_confirmable_request_in_retransmission_over_dtls_does_not_delay_the_failure() {
    let mut w = World::new(
        220,
        psk_client(with_keepalive(), b"client", b"secret", 220),
        psk_server(Config::default(), 221),
    );
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    let cut = w.sim.now();
    w.sim.partition(w.ca, w.sa, Window::from(cut));
    let pending = w.get(b"2"); // retransmitted into the void
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.client).unwrap();
    assert!(matches!(reason, FailureReason::KeepaliveTimeout { .. }));
    assert_eq!(at, last_heard + K.bound());
    assert!(matches!(
        w.response(pending),
        Err(ExchangeError::SessionFailed(
            FailureReason::KeepaliveTimeout { .. }
        ))
    ));
}

#[test]
fn a_dtls_server_with_keepalive_drops_a_vanished_observer_within_the_bound() {
    let mut w = World::new(
        230,
        psk_client(Config::default(), b"client", b"secret", 230),
        psk_server(with_keepalive(), 231),
    );
    let get = con_get("obs", b"");
    w.observe(&get);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.endpoint(w.server).observers(TIME), 1);
    let last_heard = w.sim.last_heard(w.server, w.ca).unwrap();
    w.sim.isolate(w.ca, Window::from(w.sim.now()));
    for n in 0..20u8 {
        w.sim
            .input(w.server, |ep, now| {
                ep.notify(now, TIME, &content(&[n]), false)
            })
            .unwrap();
        w.sim.run_for(Duration::from_secs(1));
    }
    let removed = w.events(w.server, |e| matches!(e, Event::ObserverRemoved { .. }));
    assert!(matches!(
        &removed[..],
        [(
            _,
            Event::ObserverRemoved {
                reason: ObserverRemoval::SessionEnded,
                ..
            }
        )]
    ));
    assert_eq!(removed[0].0, last_heard + K.bound());
    assert_eq!(w.sim.endpoint(w.server).observers(TIME), 0);
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

#[test]
fn a_stalled_handshake_fails_within_the_keepalive_bound_or_the_handshake_timeout() {
    // The server never answers: with keepalive, the session fails at creation + bound.
    let mut w = World::new(
        240,
        psk_client(with_keepalive(), b"client", b"secret", 240),
        psk_server(Config::default(), 241),
    );
    w.sim.isolate(w.sa, Window::from(Instant::ZERO));
    let id = w.get(b"x");
    w.sim.run_for(Duration::from_secs(60));
    let (at, reason) = w.session_failure(w.client).unwrap();
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    assert_eq!(at, Instant::ZERO + K.bound());
    assert!(matches!(
        w.response(id),
        Err(ExchangeError::SessionFailed(
            FailureReason::KeepaliveTimeout { .. }
        ))
    ));
    // Flights are retransmitted on dimpl's backoff (1 s, 2 s, ...), never in a loop.
    assert!(transmits_between(&w.sim, w.client, Instant::ZERO, at) <= 4);

    // Without keepalive, and with every send failing: the handshake timeout decides.
    let mut w = World::psk(242);
    w.sim.fail_sends(
        w.ca,
        None,
        Window::from(Instant::ZERO),
        SendErrorKind::Unreachable,
    );
    let id = w.get(b"x");
    w.sim.run_for(HANDSHAKE_TIMEOUT + Duration::from_secs(5));
    let (at, reason) = w.session_failure(w.client).unwrap();
    assert_eq!(
        reason,
        FailureReason::Security(SecurityError::HandshakeTimeout)
    );
    assert!(at <= Instant::ZERO + HANDSHAKE_TIMEOUT);
    assert_eq!(failed_with(w.response(id)), SecurityError::HandshakeTimeout);
    let failed_sends = w
        .events(w.client, |e| matches!(e, Event::SendFailed { .. }))
        .len();
    assert!(
        (3..=8).contains(&failed_sends),
        "{failed_sends} failed sends in 20 s"
    );
}

#[test]
fn unreachable_sends_during_the_handshake_fail_the_session_early_when_configured() {
    let client = Config {
        fail_after_unreachable: Some(3),
        ..Config::default()
    };
    let mut w = World::new(
        250,
        psk_client(client, b"client", b"secret", 250),
        psk_server(Config::default(), 251),
    );
    w.sim.fail_sends(
        w.ca,
        None,
        Window::from(Instant::ZERO),
        SendErrorKind::Unreachable,
    );
    let id = w.get(b"x");
    w.sim.run_for(Duration::from_secs(30));
    assert_eq!(
        w.response(id),
        Err(ExchangeError::SessionFailed(FailureReason::Unreachable {
            failures: 3
        }))
    );
    let (at, _) = w.session_failure(w.client).unwrap();
    assert!(at < Instant::from_secs(10), "{at:?}");
}

#[allow(dead_code)]
fn _unused(_: Packet) {}

/// Found by the property test: a session the server made when a handshake completed was
/// never given a timer when no request came with the handshake, so keepalive never watched
/// it and it was never reaped.
#[test]
fn a_session_opened_by_a_handshake_alone_is_watched_by_keepalive() {
    let mut w = World::new(
        260,
        psk_client(Config::default(), b"client", b"secret", 260),
        psk_server(with_keepalive(), 261),
    );
    let sa = w.sa;
    w.sim.open_session(w.client, sa).unwrap(); // the handshake, and nothing after it
    w.sim.run_for(Duration::from_millis(500));
    let opened = w.events(w.server, |e| matches!(e, Event::SessionEstablished { .. }))[0].0;
    w.sim.isolate(w.ca, Window::from(w.sim.now()));
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.server).expect("the server notices");
    assert!(matches!(reason, FailureReason::KeepaliveTimeout { .. }));
    assert_eq!(at, opened + K.bound());
}
