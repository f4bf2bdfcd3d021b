//! Message-layer details tested directly on one endpoint: RFC 7252 §4.5 (a duplicate
//! Confirmable message is acknowledged and processed once) and the confirmable cap.
#![cfg(feature = "server")]

use coap_engine::coap_lite::{MessageClass, MessageType, Packet, ResponseType};
use coap_engine::{codec, Config, Duration, Endpoint, Event, Instant, Transmit};
use std::net::SocketAddr;

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

#[test]
fn duplicate_con_before_the_answer_gets_the_empty_ack_and_the_answer_turns_separate() {
    let peer: SocketAddr = "[::1]:41000".parse().unwrap();
    let config = Config {
        empty_ack_delay: Duration::from_secs(5),
        ..Config::default()
    };
    let mut server = Endpoint::new(config, 3).unwrap();
    let request = [0x41, 0x01, 0x00, 0x10, 0xAA]; // CON GET, MID 0x10, token AA

    server.handle_datagram(Instant::ZERO, peer, &request);
    let (t, e) = drain(&mut server);
    assert!(
        t.is_empty(),
        "the application has 5 s to answer piggybacked"
    );
    let id = e
        .iter()
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .expect("request delivered");

    // The client's first retransmission arrives before the answer.
    server.handle_datagram(Instant::from_millis(2_500), peer, &request);
    let (t, e) = drain(&mut server);
    assert!(e.is_empty(), "processed only once: {e:?}");
    assert_eq!(t.len(), 1);
    let ack = codec::parse(&t[0].payload).unwrap();
    assert_eq!(ack.header.mtype, MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x10);
    assert!(ack.header.is_empty());

    // The answer now goes as a separate CON response with the request's token.
    let mut response = Packet::new();
    response.header.code = MessageClass::Response(ResponseType::Content);
    server
        .respond(Instant::from_millis(3_000), id, &response)
        .unwrap();
    let (t, _) = drain(&mut server);
    let separate = codec::parse(&t[0].payload).unwrap();
    assert_eq!(separate.header.mtype, MessageType::Confirmable);
    assert_eq!(separate.token, [0xAA]);
    assert_ne!(separate.header.message_id, 0x10);

    // A later duplicate gets the very same Empty ACK again (from the cache), and is not
    // delivered again. (The separate response may be retransmitted at the same time.)
    let empty_ack = empty_ack_for_0x10();
    server.handle_datagram(Instant::from_millis(3_500), peer, &request);
    let (t2, e2) = drain(&mut server);
    assert!(e2.is_empty());
    assert_eq!(
        t2.len(),
        1,
        "only the cached ACK: the separate response is not due yet"
    );
    assert_eq!(&*t2[0].payload, &empty_ack[..]);
}

/// Empty ACK for Message ID 0x10: version 1, type ACK, TKL 0, code 0.00.
fn empty_ack_for_0x10() -> [u8; 4] {
    [0x60, 0x00, 0x00, 0x10]
}

/// `Limits::max_confirmables`: pings beyond it are refused, and a late answer beyond it goes
/// as a NON separate response, so a peer that never acknowledges cannot grow our state.
#[test]
fn confirmable_cap_refuses_pings_and_turns_separate_responses_non() {
    let peer: SocketAddr = "[::1]:41001".parse().unwrap();
    let mut config = Config::default();
    config.limits.max_confirmables = 1;
    let mut ep = Endpoint::new(config, 5).unwrap();

    ep.ping(Instant::ZERO, peer).unwrap();
    assert_eq!(
        ep.ping(Instant::ZERO, peer),
        Err(coap_engine::Error::QueueFull)
    );
    drain(&mut ep);

    // Two CON requests the application answers late (after the Empty ACKs went out).
    for (mid, token) in [(0x20u8, 0xB1u8), (0x21, 0xB2)] {
        ep.handle_datagram(Instant::ZERO, peer, &[0x41, 0x01, 0x00, mid, token]);
    }
    let (_, events) = drain(&mut ep);
    let ids: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    ep.handle_timeout(Instant::from_millis(1_500));
    let (acks, _) = drain(&mut ep);
    assert_eq!(acks.len(), 2, "an Empty ACK for each request");

    let mut response = Packet::new();
    response.header.code = MessageClass::Response(ResponseType::Content);
    // The outstanding ping already fills the cap: both answers go Non-confirmable.
    for id in ids {
        ep.respond(Instant::from_millis(1_600), id, &response)
            .unwrap();
    }
    let (t, _) = drain(&mut ep);
    let types: Vec<_> = t
        .iter()
        .map(|t| codec::parse(&t.payload).unwrap().header.mtype)
        .collect();
    assert_eq!(
        types,
        [MessageType::NonConfirmable, MessageType::NonConfirmable]
    );
    assert_eq!(
        ep.session_info(peer)
            .unwrap()
            .footprint
            .confirmables_in_flight,
        1
    );
}
