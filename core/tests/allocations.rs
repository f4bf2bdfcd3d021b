//! Heap allocations per round trip (a Confirmable GET, its piggybacked answer), counted with
//! a counting allocator phase by phase, on the server's side and on the client's, with both
//! ways of draining transmits. Deterministic (no timing); run with `--nocapture` to see the
//! figures. The bounds are today's counts, so that a rise fails: in a steady exchange the
//! engine's own sending allocates nothing (sent datagrams are recycled), and what remains is
//! the coap-lite `Packet` handed to the application for each message received.
#![cfg(all(feature = "client", feature = "server"))]

mod counting;

use std::net::SocketAddr;

use coap_engine::coap_lite::ResponseType;
use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use coap_engine::{Config, Endpoint, Event, Instant};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Round trips measured, after as many to warm up (sessions made, tables grown,
/// deduplication caches full so that entries start being recycled).
const ROUNDS: u32 = 2_000;

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5683);

fn request_bytes(mid: u16, path: bool) -> Vec<u8> {
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

fn answer() -> Packet {
    let mut answer = Packet::new();
    answer.header.code = MessageClass::Response(ResponseType::Content);
    answer.payload = b"Nov 29 03:25:01".to_vec();
    answer
}

/// Allocation counts of the measured rounds, per phase.
struct Phases<const N: usize> {
    counts: [usize; N],
    measured: bool,
}

impl<const N: usize> Phases<N> {
    fn new() -> Self {
        Phases {
            counts: [0; N],
            measured: false,
        }
    }

    fn run<T>(&mut self, k: usize, f: impl FnOnce() -> T) -> T {
        let before = counting::allocs();
        let out = f();
        if self.measured {
            self.counts[k] += counting::allocs() - before;
        }
        out
    }

    fn per_round(&self) -> [f64; N] {
        self.counts.map(|c| c as f64 / f64::from(ROUNDS))
    }
}

/// Drains one transmit, either way, into `buf`; its length. (The adapter's copy of a
/// polled `Transmit` is dropped at once, as after a send.)
fn drain(endpoint: &mut Endpoint, into: bool, buf: &mut Vec<u8>) -> Option<usize> {
    if into {
        endpoint.poll_transmit_into(buf).map(|_| buf.len())
    } else {
        let t = endpoint.poll_transmit()?;
        buf.clear();
        buf.extend_from_slice(&t.payload);
        Some(buf.len())
    }
}

/// The allocation counter is global: one measurement at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The server's side: (handle_datagram, poll_event, respond, drain the answer).
fn server_round_trip(path: bool, into: bool) -> [f64; 4] {
    let mut server = Endpoint::new(Config::default(), 1).unwrap();
    let answer = answer();
    let requests: Vec<Vec<u8>> = (0..2 * ROUNDS)
        .map(|i| request_bytes(i as u16, path))
        .collect();
    let mut buf = Vec::with_capacity(1152);
    let mut phases = Phases::<4>::new();
    for (i, bytes) in requests.iter().enumerate() {
        phases.measured = i >= ROUNDS as usize;
        let now = Instant::from_micros(i as u64 * 100);
        phases.run(0, || server.handle_datagram(now, CLIENT, bytes));
        let event = phases.run(1, || {
            // A new peer's first datagram also tells of its session.
            let mut request = None;
            while let Some(e) = server.poll_event() {
                if let Event::Request { id, request: r, .. } = e {
                    request = Some((id, r));
                }
            }
            request
        });
        let (id, request) = event.unwrap_or_else(|| panic!("no request for datagram {i}"));
        phases.run(2, || {
            drop(request);
            server.respond(now, id, &answer).unwrap();
        });
        let mut sent = 0;
        phases.run(3, || {
            while let Some(len) = drain(&mut server, into, &mut buf) {
                sent += len;
            }
        });
        assert!(sent > 0, "an answer to datagram {i}");
    }
    phases.per_round()
}

/// The client's side: (request, drain the request, handle_datagram of the answer,
/// poll_event), with the server's side uncounted.
fn client_round_trip(into: bool) -> [f64; 4] {
    let mut client = Endpoint::new(Config::default(), 2).unwrap();
    let mut server = Endpoint::new(Config::default(), 3).unwrap();
    let answer = answer();
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, b"time".to_vec());
    let mut buf = Vec::with_capacity(1152);
    let mut phases = Phases::<4>::new();
    for i in 0..2 * ROUNDS {
        phases.measured = i >= ROUNDS;
        let now = Instant::from_micros(u64::from(i) * 100);
        let id = phases.run(0, || client.request(now, SERVER, &get).unwrap());
        phases.run(1, || drain(&mut client, into, &mut buf).unwrap());
        server.handle_datagram(now, CLIENT, &buf);
        while let Some(e) = server.poll_event() {
            if let Event::Request { id, .. } = e {
                server.respond(now, id, &answer).unwrap();
            }
        }
        drain(&mut server, true, &mut buf).unwrap();
        phases.run(2, || client.handle_datagram(now, SERVER, &buf));
        let answered = phases.run(3, || {
            let mut answered = false;
            while let Some(e) = client.poll_event() {
                answered |= matches!(e, Event::Response { id: r, .. } if r == id);
            }
            answered
        });
        assert!(answered, "round trip {i} answered");
    }
    phases.per_round()
}

#[test]
fn a_server_round_trip_allocates_only_the_request_it_hands_over() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for path in [false, true] {
        for into in [false, true] {
            let [datagram, event, respond, transmit] = server_round_trip(path, into);
            eprintln!(
                "server, GET{}, {}: handle_datagram {datagram:.3}, poll_event {event:.3}, \
                 respond (dropping the request) {respond:.3}, drain {transmit:.3} \
                 allocations per round trip",
                if path { " /time" } else { " /" },
                if into {
                    "poll_transmit_into"
                } else {
                    "poll_transmit"
                },
            );
            // The request's Packet: its token, and per option a B-tree entry, a list node
            // and the value. (The hundredth is the amortized growth of the session's tables.)
            let handed_over = if path { 5.01 } else { 2.01 };
            assert!(datagram <= handed_over, "handle_datagram: {datagram:.3}");
            assert!(
                event + respond + transmit <= 0.01,
                "answering allocated {:.3} per round trip",
                event + respond + transmit
            );
        }
    }
}

#[test]
fn a_client_round_trip_allocates_only_the_response_it_hands_over() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for into in [false, true] {
        let [request, drain, datagram, event] = client_round_trip(into);
        eprintln!(
            "client, GET /time, {}: request {request:.3}, drain {drain:.3}, handle_datagram \
             {datagram:.3}, poll_event {event:.3} allocations per round trip",
            if into {
                "poll_transmit_into"
            } else {
                "poll_transmit"
            },
        );
        // The request's token, and the response's Packet (its token, its payload).
        assert!(request + drain <= 1.01, "sending: {:.3}", request + drain);
        assert!(
            datagram + event <= 2.01,
            "receiving: {:.3}",
            datagram + event
        );
    }
}
