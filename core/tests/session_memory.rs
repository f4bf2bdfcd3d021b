//! What an idle peer session costs a server in heap bytes, measured with a counting
//! allocator: a session that served one Confirmable request and is within
//! EXCHANGE_LIFETIME, so its deduplication entry and cached answer are alive. Run with
//! `--nocapture` to see the figures; `coap-bench -M` measures the whole process by RSS.
#![cfg(feature = "server")]

mod counting;

use std::net::SocketAddr;

use coap_engine::coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use coap_engine::{Config, Endpoint, Event, Instant, Limits};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn peer(i: u32) -> SocketAddr {
    SocketAddr::from((
        (u32::from_be_bytes([127, 64, 0, 0]) + 1 + i).to_be_bytes(),
        5683,
    ))
}

fn request(i: u32) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = i as u16;
    p.set_token(i.to_be_bytes().to_vec());
    p.add_option(
        coap_engine::coap_lite::CoapOption::UriPath,
        b"time".to_vec(),
    );
    p.to_bytes().unwrap()
}

/// Heap bytes per idle session after `n` peers each had one request answered.
fn bytes_per_idle_session(n: u32) -> f64 {
    let config = Config {
        limits: Limits {
            max_sessions: n as usize + 1,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut server = Endpoint::new(config, 1).unwrap();
    let now = Instant::ZERO;
    let requests: Vec<Vec<u8>> = (0..n).map(request).collect();
    let mut answer = Packet::new();
    answer.header.code = MessageClass::Response(ResponseType::Content);
    answer.payload = b"Nov 29 03:25:01".to_vec();
    let before = counting::live();
    for (i, bytes) in requests.iter().enumerate() {
        server.handle_datagram(now, peer(i as u32), bytes);
        while let Some(event) = server.poll_event() {
            if let Event::Request { id, .. } = event {
                server.respond(now, id, &answer).unwrap();
            }
        }
        let mut sent = 0;
        while server.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, 1, "one piggybacked answer per request");
    }
    assert_eq!(server.session_count(), n as usize);
    let after = counting::live();
    drop(requests);
    (after - before) as f64 / f64::from(n)
}

#[test]
fn an_idle_session_costs_a_bounded_number_of_heap_bytes() {
    for n in [1_000, 100_000] {
        let per = bytes_per_idle_session(n);
        eprintln!("{n} idle sessions: {per:.0} heap bytes each");
        assert!(per > 0.0, "sessions cannot be free");
    }
}
