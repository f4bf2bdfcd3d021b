//! Heap allocations per server round trip (a Confirmable GET in, its piggybacked answer
//! out), counted with a counting allocator, phase by phase: the figures behind the hot
//! path's cost. Deterministic (no timing); run with `--nocapture` to see them. The bounds
//! are regression guards at today's counts.

mod counting;

use std::net::SocketAddr;

use coap_engine::coap_lite::ResponseType;
use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use coap_engine::{Config, Endpoint, Event, Instant};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const ROUNDS: u32 = 2_000;

fn request(mid: u16, path: bool) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(u32::from(mid).to_be_bytes().to_vec());
    if path {
        p.add_option(CoapOption::UriPath, b"time".to_vec());
    }
    p.to_bytes().unwrap()
}

/// Allocations per round trip in each phase: (handle_datagram, poll_event, respond,
/// poll_transmit and dropping the transmit).
fn per_round_trip(path: bool) -> [f64; 4] {
    let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let mut server = Endpoint::new(Config::default(), 1).unwrap();
    let mut answer = Packet::new();
    answer.header.code = MessageClass::Response(ResponseType::Content);
    answer.payload = b"Nov 29 03:25:01".to_vec();
    let requests: Vec<Vec<u8>> = (0..2 * ROUNDS).map(|i| request(i as u16, path)).collect();
    let mut counts = [0usize; 4];
    for (i, bytes) in requests.iter().enumerate() {
        // The first half warms up: the session exists, its tables have grown.
        let measured = i >= ROUNDS as usize;
        let now = Instant::from_micros(i as u64 * 100);
        let mut phase = |k: usize, f: &mut dyn FnMut()| {
            let before = counting::allocs();
            f();
            if measured {
                counts[k] += counting::allocs() - before;
            }
        };
        phase(0, &mut || server.handle_datagram(now, peer, bytes));
        let mut event = None;
        phase(1, &mut || {
            // A new peer's first datagram also tells of its session.
            while let Some(e) = server.poll_event() {
                if matches!(e, Event::Request { .. }) {
                    event = Some(e);
                }
            }
        });
        let Some(Event::Request { id, request, .. }) = event else {
            panic!("no request event for datagram {i}")
        };
        let mut request = Some(request);
        phase(2, &mut || {
            drop(request.take());
            server.respond(now, id, &answer).unwrap();
        });
        let mut sent = 0;
        phase(3, &mut || {
            while let Some(t) = server.poll_transmit() {
                sent += t.payload.len();
            }
        });
        assert!(sent > 0, "an answer to datagram {i}");
    }
    counts.map(|c| c as f64 / f64::from(ROUNDS))
}

#[test]
fn a_round_trip_allocates_a_bounded_number_of_times() {
    for path in [false, true] {
        let [datagram, event, respond, transmit] = per_round_trip(path);
        let total = datagram + event + respond + transmit;
        eprintln!(
            "GET{}: {total:.2} allocations per round trip: handle_datagram {datagram:.2}, \
             poll_event {event:.2}, respond (dropping the request) {respond:.2}, \
             poll_transmit {transmit:.2}",
            if path { " /time" } else { " /" }
        );
        // Today: the request's coap-lite Packet handed to the application (its token, and
        // per option a B-tree entry, a list node and the value), and the answer's datagram,
        // shared by the transmit and the deduplication cache that answers duplicates. A
        // rise is a regression to look at.
        // (The hundredth is the amortized growth of the session's tables.)
        let bound = if path { 6.01 } else { 3.01 };
        assert!(total <= bound, "{total:.4} allocations per round trip");
        assert!(respond >= 1.0, "the cached answer needs one");
    }
}
