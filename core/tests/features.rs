//! What an endpoint built without one of the optional features (`client`, `server`,
//! `observe`, `blockwise`, `tcp`) does instead, on the wire and at the application: each test
//! runs only in builds without the feature it is about (`#[cfg(not(feature = ..))]`), so
//! `cargo test --no-default-features --features <set>` checks the answers the crate
//! documentation ("Features") promises for that set. The liveness contract is checked in
//! every build, whatever the roles.
//!
//! Every check is chosen so that it fails in a build that has the feature: a request a
//! server-less endpoint would have served, a block it would have reassembled, a
//! configuration it would have accepted. The calls a feature removes are checked with probe
//! traits (see `Absent`): such a test compiles only while the engine's call is gone.
//!
//! Virtual time throughout: endpoints driven back to back with chosen `Instant`s, or the
//! in-memory simulator (`tests/sim`).
// The helpers below serve the tests of whichever features a build leaves out: each build uses
// a different part of them (a build with every feature, only the liveness tests').
#![allow(dead_code, unused_imports)]

mod sim;

use std::net::SocketAddr;

use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use coap_engine::{codec, Config, Endpoint, Event, FailureReason, Instant, Transmit};

use sim::{addr, keepalive, secs, Sim, Window};

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 41_000);

fn endpoint(config: Config) -> Endpoint {
    Endpoint::new(config, 11).expect("valid config")
}

/// Everything the engine has to say now: transmits until `None`, then events until `None`.
fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<Event>) {
    let (mut t, mut e) = (Vec::new(), Vec::new());
    while let Some(x) = ep.poll_transmit() {
        t.push(x);
    }
    while let Some(x) = ep.poll_event() {
        e.push(x);
    }
    (t, e)
}

/// A message in RFC 7252's layout, built with coap-lite (the peer's side of a test).
fn message(mtype: MessageType, code: MessageClass, mid: u16, token: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(mtype);
    p.header.code = code;
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p
}

fn bytes(p: &Packet) -> Vec<u8> {
    p.to_bytes().expect("a test message encodes")
}

fn get(mtype: MessageType, mid: u16, token: &[u8]) -> Packet {
    message(
        mtype,
        MessageClass::Request(coap_engine::coap_lite::RequestType::Get),
        mid,
        token,
    )
}

fn content(mtype: MessageType, mid: u16, token: &[u8]) -> Packet {
    message(
        mtype,
        MessageClass::Response(ResponseType::Content),
        mid,
        token,
    )
}

/// Asserts `t` is exactly one Reset to `PEER` for Message ID `mid`: empty, no token.
fn assert_one_reset(t: &[Transmit], mid: u16) {
    assert_eq!(t.len(), 1, "exactly one Reset expected, got {t:?}");
    let rst = codec::parse(&t[0].payload).expect("the Reset parses");
    assert_eq!(rst.header.mtype, MessageType::Reset);
    assert_eq!(rst.header.message_id, mid);
    assert!(rst.header.is_empty() && rst.token.is_empty(), "{rst:?}");
    assert_eq!(t[0].destination, PEER);
}

fn no_request_delivered(e: &[Event]) {
    assert!(
        e.iter().all(|e| !matches!(e, Event::Request { .. })),
        "the application must not see a request: {e:?}"
    );
}

fn no_response_delivered(e: &[Event]) {
    assert!(
        e.iter()
            .all(|e| !matches!(e, Event::Response { .. } | Event::Notification { .. })),
        "the application must not see a response: {e:?}"
    );
}

/// A Block1 or Block2 option value (RFC 7959 §2.2) of one byte: NUM < 16.
fn block(num: u8, more: bool, szx: u8) -> Vec<u8> {
    vec![num << 4 | u8::from(more) << 3 | szx]
}

// ---------------------------------------------------------------------------------------------
// The calls a feature removes are gone.
//
// Each probe trait gives `Endpoint` a method of the same name and receiver as the engine's
// call, taking no arguments. Method resolution prefers an inherent method to a trait method
// at the same receiver type, so where the engine's call exists, `ep.request()` resolves to it
// and the test does not compile (wrong number of arguments); it compiles, and answers the
// probe's name, only in a build without the call.

#[cfg(not(feature = "client"))]
#[test]
fn without_client_there_is_no_request_call() {
    trait Absent {
        fn request(&mut self) -> &'static str {
            "no request"
        }
    }
    impl Absent for Endpoint {}
    let mut ep = endpoint(Config::default());
    assert_eq!(ep.request(), "no request");
}

#[cfg(not(all(feature = "client", feature = "observe")))]
#[test]
fn without_client_and_observe_there_are_no_observe_and_deregister_calls() {
    trait Absent {
        fn observe(&mut self) -> &'static str {
            "no observe"
        }
        fn deregister(&mut self) -> &'static str {
            "no deregister"
        }
    }
    impl Absent for Endpoint {}
    let mut ep = endpoint(Config::default());
    assert_eq!(ep.observe(), "no observe");
    assert_eq!(ep.deregister(), "no deregister");
}

#[cfg(not(feature = "server"))]
#[test]
fn without_server_there_is_no_respond_call() {
    trait Absent {
        fn respond(&mut self) -> &'static str {
            "no respond"
        }
    }
    impl Absent for Endpoint {}
    let mut ep = endpoint(Config::default());
    assert_eq!(ep.respond(), "no respond");
}

#[cfg(not(all(feature = "server", feature = "observe")))]
#[test]
fn without_server_and_observe_there_are_no_observer_calls() {
    trait AbsentMut {
        fn respond_observe(&mut self) -> &'static str {
            "no respond_observe"
        }
        fn notify(&mut self) -> &'static str {
            "no notify"
        }
    }
    trait Absent {
        fn observers(&self) -> &'static str {
            "no observers"
        }
    }
    impl AbsentMut for Endpoint {}
    impl Absent for Endpoint {}
    let mut ep = endpoint(Config::default());
    assert_eq!(ep.respond_observe(), "no respond_observe");
    assert_eq!(ep.notify(), "no notify");
    assert_eq!(ep.observers(), "no observers");
}

#[cfg(not(feature = "tcp"))]
#[test]
fn without_tcp_there_are_no_connection_calls() {
    trait Absent {
        fn handle_connected(&mut self) -> &'static str {
            "no handle_connected"
        }
        fn handle_connect_failed(&mut self) -> &'static str {
            "no handle_connect_failed"
        }
        fn handle_accepted(&mut self) -> &'static str {
            "no handle_accepted"
        }
        fn handle_closed(&mut self) -> &'static str {
            "no handle_closed"
        }
    }
    impl Absent for Endpoint {}
    let mut ep = endpoint(Config::default());
    assert_eq!(ep.handle_connected(), "no handle_connected");
    assert_eq!(ep.handle_connect_failed(), "no handle_connect_failed");
    assert_eq!(ep.handle_accepted(), "no handle_accepted");
    assert_eq!(ep.handle_closed(), "no handle_closed");
}

// ---------------------------------------------------------------------------------------------
// Without `server`: a request is rejected and opens no session.

#[cfg(not(feature = "server"))]
#[test]
fn without_server_a_strangers_con_request_gets_a_stateless_reset() {
    let mut ep = endpoint(Config::default());
    let request = get(MessageType::Confirmable, 0x4711, &[0xA1, 0xA2]);
    ep.handle_datagram(Instant::ZERO, PEER, &bytes(&request));
    let (t, e) = drain(&mut ep);
    assert_one_reset(&t, 0x4711);
    assert!(e.is_empty(), "no session, no request: {e:?}");
    assert_eq!(ep.session_count(), 0, "a rejected request keeps no state");
    // Its retransmission is rejected again, still without state (nothing was cached).
    ep.handle_datagram(Instant::from_millis(2_000), PEER, &bytes(&request));
    let (t, e) = drain(&mut ep);
    assert_one_reset(&t, 0x4711);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(ep.session_count(), 0);
}

#[cfg(not(feature = "server"))]
#[test]
fn without_server_a_strangers_non_request_gets_nothing() {
    let mut ep = endpoint(Config::default());
    ep.handle_datagram(
        Instant::ZERO,
        PEER,
        &bytes(&get(MessageType::NonConfirmable, 0x0815, &[7])),
    );
    let (t, e) = drain(&mut ep);
    assert!(t.is_empty(), "nothing is sent: {t:?}");
    assert!(e.is_empty(), "no session, no request: {e:?}");
    assert_eq!(ep.session_count(), 0);
}

/// On a session the endpoint opened itself (to ping, say), the peer's requests are rejected
/// with Reset, CON and NON alike (RFC 7252 §4.2, §4.3), and the session stays as it was.
#[cfg(not(feature = "server"))]
#[test]
fn without_server_requests_on_an_open_session_are_rejected_with_reset() {
    let mut ep = endpoint(Config::default());
    ep.open_session(Instant::ZERO, PEER).expect("session opens");
    drain(&mut ep);
    assert_eq!(ep.session_count(), 1);
    for (i, mtype) in [MessageType::Confirmable, MessageType::NonConfirmable]
        .into_iter()
        .enumerate()
    {
        let mid = 0x100 + i as u16;
        ep.handle_datagram(
            Instant::from_millis(10 * (i as u64 + 1)),
            PEER,
            &bytes(&get(mtype, mid, &[0xB0, i as u8])),
        );
        let (t, e) = drain(&mut ep);
        assert_one_reset(&t, mid);
        no_request_delivered(&e);
        assert_eq!(ep.session_count(), 1, "{mtype:?}");
    }
}

/// CoAP over TCP has no Reset: a request to an endpoint that is no server gets 4.02 Bad
/// Option with its token (RFC 8323 §3.3, RFC 7252 §5.4.1) and never reaches the application.
#[cfg(all(feature = "tcp", not(feature = "server")))]
#[test]
fn without_server_a_request_on_a_stream_is_refused_with_4_02() {
    use coap_engine::framing::{frame, Deframer};
    use coap_engine::Transport;

    let mut ep = endpoint(Config {
        transport: Transport::Tcp,
        ..Config::default()
    });
    ep.handle_accepted(Instant::ZERO, PEER)
        .expect("connection accepted");
    drain(&mut ep);
    // The peer's CSM (7.01, no options), then a GET with token C0 C1.
    let mut stream = Vec::new();
    // 7.01 CSM in RFC 7252's layout (type and Message ID are not framed).
    assert!(frame(&mut stream, &[0x40, codec::code(7, 1), 0, 0]));
    assert!(frame(
        &mut stream,
        &bytes(&get(MessageType::Confirmable, 0, &[0xC0, 0xC1]))
    ));
    ep.handle_datagram(Instant::from_millis(5), PEER, &stream);
    let mut written = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        written.extend_from_slice(&t.payload);
        ep.handle_send_result(Instant::from_millis(5), t.id, Ok(()));
    }
    let mut events = Vec::new();
    while let Some(e) = ep.poll_event() {
        events.push(e);
    }
    no_request_delivered(&events);
    let mut deframer = Deframer::default();
    deframer.push(&written);
    let mut msg = Vec::new();
    let mut refusals = Vec::new();
    while deframer
        .next(usize::MAX, &mut msg)
        .expect("the engine frames well")
    {
        let view = codec::parse(&msg).expect("a well-formed message");
        if view.header.code == codec::code(4, 2) {
            refusals.push(view.token.to_vec());
        }
    }
    assert_eq!(
        refusals,
        [vec![0xC0, 0xC1]],
        "one 4.02 with the request's token"
    );
}

// ---------------------------------------------------------------------------------------------
// Without `client`: every response is unexpected.

#[cfg(not(feature = "client"))]
#[test]
fn without_client_a_response_is_unexpected_and_reset() {
    let mut ep = endpoint(Config::default());
    // From a stranger: a stateless Reset.
    ep.handle_datagram(
        Instant::ZERO,
        PEER,
        &bytes(&content(MessageType::Confirmable, 0x200, &[1, 2, 3, 4])),
    );
    let (t, e) = drain(&mut ep);
    assert_one_reset(&t, 0x200);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(ep.session_count(), 0);
    // On a session, CON and NON alike (§4.2, §4.3).
    ep.open_session(Instant::from_millis(10), PEER)
        .expect("session opens");
    drain(&mut ep);
    for (i, mtype) in [MessageType::Confirmable, MessageType::NonConfirmable]
        .into_iter()
        .enumerate()
    {
        let mid = 0x201 + i as u16;
        ep.handle_datagram(
            Instant::from_millis(20 + 10 * i as u64),
            PEER,
            &bytes(&content(mtype, mid, &[1, 2, 3, 4])),
        );
        let (t, e) = drain(&mut ep);
        assert_one_reset(&t, mid);
        no_response_delivered(&e);
        assert_eq!(ep.session_count(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Without `observe`: a registration is an ordinary request.

/// A GET with Observe: 0 reaches the application as a plain request, the option still in
/// it, and `respond` answers without Observe: the client learns it is not observing (RFC
/// 7641 §3.1).
#[cfg(all(feature = "server", not(feature = "observe")))]
#[test]
fn without_observe_a_registration_is_a_request_and_its_answer_has_no_observe() {
    let mut ep = endpoint(Config::default());
    let mut register = get(MessageType::Confirmable, 0x300, &[0xD0]);
    register.add_option(CoapOption::Observe, Vec::new());
    ep.handle_datagram(Instant::ZERO, PEER, &bytes(&register));
    let (t, e) = drain(&mut ep);
    assert!(t.is_empty(), "the application answers: {t:?}");
    let (id, request) = e
        .iter()
        .find_map(|e| match e {
            Event::Request { id, request, .. } => Some((*id, request)),
            _ => None,
        })
        .expect("delivered as a request");
    assert_eq!(
        request.get_first_option(CoapOption::Observe),
        Some(&Vec::new()),
        "the Observe option is the application's to see"
    );
    let mut answer = Packet::new();
    answer.header.code = MessageClass::Response(ResponseType::Content);
    answer.payload = b"22.5 C".to_vec();
    ep.respond(Instant::from_millis(5), id, &answer)
        .expect("answered");
    let (t, _) = drain(&mut ep);
    assert_eq!(t.len(), 1, "{t:?}");
    let ack = Packet::from_bytes(&t[0].payload).expect("the answer parses");
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x300);
    assert_eq!(ack.get_token(), [0xD0]);
    assert_eq!(
        ack.header.code,
        MessageClass::Response(ResponseType::Content)
    );
    assert_eq!(ack.get_first_option(CoapOption::Observe), None);
    assert_eq!(ack.payload, b"22.5 C");
}

/// A client's GET with Observe: 0 made with `request` is an ordinary exchange: the first
/// response ends it (as `Event::Response`, its Observe option kept), and a later
/// notification on its token is unexpected.
#[cfg(all(feature = "client", not(feature = "observe")))]
#[test]
fn without_observe_a_notification_after_the_response_is_unexpected() {
    let mut ep = endpoint(Config::default());
    let mut register = get(MessageType::Confirmable, 0, &[]);
    register.add_option(CoapOption::Observe, Vec::new());
    let id = ep
        .request(Instant::ZERO, PEER, &register)
        .expect("request accepted");
    let (t, _) = drain(&mut ep);
    assert_eq!(t.len(), 1);
    let sent = Packet::from_bytes(&t[0].payload).expect("the request parses");
    assert_eq!(
        sent.get_first_option(CoapOption::Observe),
        Some(&Vec::new()),
        "sent as the application built it"
    );
    let (mid, token) = (sent.header.message_id, sent.get_token().to_vec());
    let mut first = content(MessageType::Acknowledgement, mid, &token);
    first.add_option(CoapOption::Observe, vec![7]);
    ep.handle_datagram(Instant::from_millis(20), PEER, &bytes(&first));
    let (t, e) = drain(&mut ep);
    assert!(t.is_empty(), "{t:?}");
    let response = e
        .iter()
        .find_map(|e| match e {
            Event::Response {
                id: r, response, ..
            } if *r == id => Some(response),
            _ => None,
        })
        .expect("the exchange ends with a response");
    assert_eq!(
        response.get_first_option(CoapOption::Observe),
        Some(&vec![7])
    );
    assert!(
        e.iter().all(|e| !matches!(e, Event::Notification { .. })),
        "{e:?}"
    );

    let mut later = content(MessageType::NonConfirmable, 0x5000, &token);
    later.add_option(CoapOption::Observe, vec![8]);
    ep.handle_datagram(Instant::from_millis(1_000), PEER, &bytes(&later));
    let (t, e) = drain(&mut ep);
    assert_one_reset(&t, 0x5000);
    no_response_delivered(&e);
}

// ---------------------------------------------------------------------------------------------
// Without `blockwise`: Block options are the application's, and a body must fit one message.

/// A Block1 upload's first block and a request for a later Block2 block reach the application
/// as they arrived: no 2.31 Continue, no reassembly, no answer from the engine.
#[cfg(all(feature = "server", not(feature = "blockwise")))]
#[test]
fn without_blockwise_block_requests_reach_the_application_as_they_arrived() {
    let mut ep = endpoint(Config::default());
    let mut upload = message(
        MessageType::Confirmable,
        MessageClass::Request(coap_engine::coap_lite::RequestType::Put),
        0x400,
        &[0xE0],
    );
    upload.add_option(CoapOption::UriPath, b"fw".to_vec());
    upload.add_option(CoapOption::Block1, block(0, true, 0));
    upload.payload = vec![0x5A; 16];
    let mut fetch = get(MessageType::Confirmable, 0x401, &[0xE1]);
    fetch.add_option(CoapOption::UriPath, b"log".to_vec());
    fetch.add_option(CoapOption::Block2, block(3, false, 2));
    for (at, sent, option) in [
        (0, &upload, CoapOption::Block1),
        (10, &fetch, CoapOption::Block2),
    ] {
        ep.handle_datagram(Instant::from_millis(at), PEER, &bytes(sent));
        let (t, e) = drain(&mut ep);
        assert!(t.is_empty(), "no 2.31 or block from the engine: {t:?}");
        let request = e
            .iter()
            .find_map(|e| match e {
                Event::Request { request, .. } => Some(request),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{option:?} request delivered: {e:?}"));
        assert_eq!(
            request.get_first_option(option),
            sent.get_first_option(option)
        );
        assert_eq!(request.payload, sent.payload);
        assert_eq!(request.get_token(), sent.get_token());
    }
}

#[cfg(all(feature = "server", not(feature = "blockwise")))]
#[test]
fn without_blockwise_a_response_too_large_for_one_message_is_refused() {
    let mut ep = endpoint(Config::default());
    ep.handle_datagram(
        Instant::ZERO,
        PEER,
        &bytes(&get(MessageType::Confirmable, 0x402, &[0xE2])),
    );
    let (_, e) = drain(&mut ep);
    let id = e
        .iter()
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .expect("request delivered");
    let mut big = Packet::new();
    big.header.code = MessageClass::Response(ResponseType::Content);
    big.payload = vec![0x42; 2_000];
    let max = Config::default().max_message_size;
    assert!(
        matches!(
            ep.respond(Instant::from_millis(5), id, &big),
            Err(coap_engine::Error::MessageTooLarge(n)) if n > max
        ),
        "a 2000-byte body does not fit {max} bytes"
    );
    let (t, _) = drain(&mut ep);
    assert!(t.is_empty(), "nothing truncated went out: {t:?}");
    // The request is still the application's to answer, with what fits.
    let mut small = big.clone();
    small.payload.truncate(100);
    ep.respond(Instant::from_millis(6), id, &small)
        .expect("a body that fits goes");
    let (t, _) = drain(&mut ep);
    assert_eq!(t.len(), 1);
    let ack = Packet::from_bytes(&t[0].payload).expect("parses");
    assert_eq!(ack.payload.len(), 100);
    assert_eq!(ack.get_first_option(CoapOption::Block2), None);
}

#[cfg(all(feature = "client", not(feature = "blockwise")))]
#[test]
fn without_blockwise_a_request_too_large_for_one_message_is_refused() {
    let mut ep = endpoint(Config::default());
    let mut put = message(
        MessageType::Confirmable,
        MessageClass::Request(coap_engine::coap_lite::RequestType::Put),
        0,
        &[],
    );
    put.payload = vec![0x42; 5_000];
    let max = Config::default().max_message_size;
    assert!(
        matches!(
            ep.request(Instant::ZERO, PEER, &put),
            Err(coap_engine::Error::MessageTooLarge(n)) if n > max
        ),
        "a 5000-byte body does not fit {max} bytes"
    );
    let (t, _) = drain(&mut ep);
    assert!(t.is_empty(), "{t:?}");
    assert_eq!(ep.session_count(), 0, "a refused call leaves no session");
}

/// A response carrying Block2 (the first of several blocks) ends the exchange as it is: the
/// engine asks for no further block.
#[cfg(all(feature = "client", not(feature = "blockwise")))]
#[test]
fn without_blockwise_a_block2_response_is_delivered_as_it_arrived() {
    let mut ep = endpoint(Config::default());
    let id = ep
        .request(Instant::ZERO, PEER, &get(MessageType::Confirmable, 0, &[]))
        .expect("request accepted");
    let (t, _) = drain(&mut ep);
    assert_eq!(t.len(), 1);
    let sent = codec::parse(&t[0].payload).expect("parses");
    let (mid, token) = (sent.header.message_id, sent.token.to_vec());
    let mut first = content(MessageType::Acknowledgement, mid, &token);
    first.add_option(CoapOption::Block2, block(0, true, 2));
    first.add_option(CoapOption::Size2, vec![0x01, 0x00]);
    first.payload = (0..64).collect();
    ep.handle_datagram(Instant::from_millis(20), PEER, &bytes(&first));
    let (t, e) = drain(&mut ep);
    assert!(t.is_empty(), "no request for block 1: {t:?}");
    let response = e
        .iter()
        .find_map(|e| match e {
            Event::Response {
                id: r, response, ..
            } if *r == id => Some(response),
            _ => None,
        })
        .expect("the block is the response");
    assert_eq!(
        response.get_first_option(CoapOption::Block2),
        Some(&block(0, true, 2))
    );
    assert_eq!(
        response.get_first_option(CoapOption::Size2),
        Some(&vec![0x01, 0x00])
    );
    assert_eq!(response.payload, first.payload);
    // Nothing more is due: time passes without a further request.
    ep.handle_timeout(Instant::from_secs(300));
    let (t, _) = drain(&mut ep);
    assert!(t.is_empty(), "{t:?}");
}

// ---------------------------------------------------------------------------------------------
// Without `tcp`: the configuration is refused.

#[cfg(not(feature = "tcp"))]
#[test]
fn without_tcp_transport_tcp_is_refused_naming_the_field() {
    let config = Config {
        transport: coap_engine::Transport::Tcp,
        ..Config::default()
    };
    let err = config
        .validate()
        .expect_err("Transport::Tcp needs feature tcp");
    assert_eq!(err.field(), "transport");
    let err = Endpoint::new(config, 1).err().expect("refused");
    assert_eq!(err.field(), "transport");
    // The same configuration over UDP is fine: only the transport is refused.
    Config::default().validate().expect("UDP needs no feature");
}

// ---------------------------------------------------------------------------------------------
// Liveness, in every build.

const INTERVAL: u64 = 20;
const TIMEOUT: u64 = 10;

/// When `node` reported its session with `peer` failed, and why; panics unless it did.
fn failure(sim: &Sim, node: usize, peer: SocketAddr) -> (Instant, FailureReason) {
    sim.events(node)
        .iter()
        .find_map(|l| match &l.event {
            Event::SessionFailed { peer: p, reason } if *p == peer => Some((l.at, *reason)),
            _ => None,
        })
        .unwrap_or_else(|| {
            panic!(
                "the session with {peer} never failed: {:#?}",
                sim.events(node)
            )
        })
}

/// Checks the contract: the session failed for its keepalive, no later than
/// `last_heard + interval + timeout`.
fn assert_within_the_keepalive_bound(sim: &Sim, node: usize, peer: SocketAddr) {
    let heard = sim.last_heard(node, peer).expect("the peer was heard once");
    let (at, reason) = failure(sim, node, peer);
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    let bound = heard + secs(INTERVAL) + secs(TIMEOUT);
    assert!(
        at <= bound,
        "failed at {at:?}, after last_heard {heard:?} + interval + timeout = {bound:?}"
    );
    assert!(
        at >= heard + secs(INTERVAL),
        "failed at {at:?}, before the peer was silent for the interval"
    );
}

/// A session this endpoint opened, with keepalive: the peer answers a ping, then goes
/// silent. Needs neither role: `open_session`, `set_keepalive` and `ping` are in every build.
#[test]
fn a_session_we_opened_fails_a_silent_peer_within_the_keepalive_bound() {
    let mut sim = Sim::new(7);
    let (a_addr, b_addr) = (addr(40_000), addr(5683));
    let a = sim.add_endpoint(a_addr, Config::default());
    let b = sim.add_endpoint(b_addr, Config::default());
    sim.open_session(a, b_addr).expect("session opens");
    sim.set_keepalive(a, b_addr, Some(keepalive(secs(INTERVAL), secs(TIMEOUT))))
        .expect("keepalive set");
    let ping = sim.ping(a, b_addr).expect("ping sent");
    sim.run_for(secs(1));
    assert!(
        matches!(sim.terminal(a, ping).event, Event::Pong { .. }),
        "the peer answers the ping: {:?}",
        sim.events(a)
    );
    // From now on the peer is gone.
    sim.isolate(b_addr, Window::from(sim.now()));
    sim.run_for(secs(120));
    assert_within_the_keepalive_bound(&sim, a, b_addr);
    assert!(
        sim.events(b)
            .iter()
            .all(|l| !matches!(l.event, Event::Request { .. } | Event::Response { .. })),
        "a ping is no request"
    );
}

/// A session a peer's request opened, with keepalive from `Config::keepalive`: the client is
/// answered, then goes silent, and the server notices within the bound.
#[cfg(feature = "server")]
#[test]
fn a_session_a_request_opened_fails_a_silent_client_within_the_keepalive_bound() {
    let mut sim = Sim::new(8);
    let (client, server_addr) = (addr(40_001), addr(5683));
    sim.add_raw(client);
    let server = sim.add_endpoint(
        server_addr,
        Config {
            keepalive: Some(keepalive(secs(INTERVAL), secs(TIMEOUT))),
            ..Config::default()
        },
    );
    sim.set_app(server, |sim, node, event| {
        if let Event::Request { id, .. } = event {
            let answer = sim::content(b"ok");
            sim.respond(node, *id, &answer).expect("answered");
        }
    });
    let request = bytes(&get(MessageType::Confirmable, 0x600, &[0xF0]));
    sim.inject(client, server_addr, &request, secs(0));
    sim.run_for(secs(1));
    let answers = sim.raw_inbox(client);
    assert_eq!(answers.len(), 1, "the request is answered");
    assert_eq!(
        answers[0].header.map(|h| h.mtype),
        Some(MessageType::Acknowledgement)
    );
    // The raw client never answers the server's pings.
    sim.run_for(secs(120));
    assert_within_the_keepalive_bound(&sim, server, client);
}
