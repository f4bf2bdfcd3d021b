//! In-memory request→response round trips between a client and a server [`Endpoint`], with
//! no I/O, so the figure is the engine's own cost per exchange.
//!
//! Groups (every iteration is one round trip, reported as `Throughput::Elements(1)`):
//! - `round_trip/con_piggybacked`: CON GET with one Uri-Path, answered by a piggybacked
//!   2.05 Content on the ACK.
//! - `round_trip/non`: NON GET answered by a NON 2.05 Content.
//! - `codec/*`: the codec work one CON round trip implies (encode request, parse + to_packet
//!   it, encode response, parse + to_packet it), and each part alone, so the engine's own
//!   bookkeeping can be told apart from encoding and decoding.
//!
//! Both endpoints live across iterations (as a real client and server would) and virtual
//! time advances 1 µs per round trip, so deduplication fills to its cap and evicts, the
//! retransmission and Empty-ACK timers are armed and disarmed, and timers are checked on every
//! input exactly as in production. Outputs are drained as [`Endpoint`]'s drain rule says
//! (transmits, then events, then `poll_timeout`), each datagram delivered as soon as it is
//! polled.
//!
//! Run: `cargo bench -p coap-engine --bench round_trip` (under a minute: 1 s warm-up and 3 s of
//! measurement per benchmark). Medians are in `target/criterion/<group>/<name>/new/estimates.json`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use coap_engine::codec;
use coap_engine::{Config, Duration, Endpoint, Event, Instant};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PATH: &[u8] = b"sensors";
const BODY: &[u8] = b"22.5 C";

fn request(mtype: MessageType) -> Packet {
    let mut get = Packet::new();
    get.header.set_type(mtype);
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, PATH.to_vec());
    get
}

fn response() -> Packet {
    let mut response = Packet::new();
    response.header.code = MessageClass::Response(ResponseType::Content);
    response.payload = BODY.to_vec();
    response
}

/// A client and a server endpoint wired back to back.
struct Pair {
    client: Endpoint,
    server: Endpoint,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    now: Instant,
    get: Packet,
    content: Packet,
}

impl Pair {
    fn new(mtype: MessageType) -> Self {
        Pair {
            client: Endpoint::new(Config::default(), 1).expect("default config is valid"),
            server: Endpoint::new(Config::default(), 2).expect("default config is valid"),
            client_addr: "[2001:db8::1]:40000".parse().expect("address"),
            server_addr: "[2001:db8::2]:5683".parse().expect("address"),
            now: Instant::ZERO,
            get: request(mtype),
            content: response(),
        }
    }

    /// One full round trip; returns the response payload length (so the work cannot be
    /// optimised away) and panics if the exchange did not complete.
    fn round_trip(&mut self) -> usize {
        self.now += Duration::from_micros(1);
        let now = self.now;
        let id = self
            .client
            .request(now, self.server_addr, &self.get)
            .expect("request accepted");

        // Client drain: its transmit goes to the server, which is then drained itself.
        while let Some(t) = self.client.poll_transmit() {
            self.server
                .handle_datagram(now, self.client_addr, &t.payload);
            // A server reply before the application answered (an Empty ACK or Reset) would
            // mean the benchmark is not measuring what it claims.
            assert!(
                self.server.poll_transmit().is_none(),
                "unexpected early server transmit"
            );
            while let Some(event) = self.server.poll_event() {
                if let Event::Request { id, .. } = event {
                    self.server
                        .respond(now, id, &self.content)
                        .expect("respond accepted");
                    while let Some(t) = self.server.poll_transmit() {
                        self.client
                            .handle_datagram(now, self.server_addr, &t.payload);
                    }
                }
            }
            black_box(self.server.poll_timeout());
        }
        let mut got = None;
        while let Some(event) = self.client.poll_event() {
            if let Event::Response {
                id: rid, response, ..
            } = event
            {
                assert_eq!(rid, id);
                got = Some(response.payload.len());
            }
        }
        black_box(self.client.poll_timeout());
        got.expect("round trip completed")
    }
}

fn bench_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    for (name, mtype) in [
        ("con_piggybacked", MessageType::Confirmable),
        ("non", MessageType::NonConfirmable),
    ] {
        let mut pair = Pair::new(mtype);
        // The first exchange creates both sessions; keep it out of the measurement.
        assert_eq!(pair.round_trip(), BODY.len());
        group.bench_function(name, |b| b.iter(|| pair.round_trip()));
        // Bounded state after millions of round trips: one session each, nothing pending.
        for ep in [&pair.client, &pair.server] {
            assert_eq!(ep.session_count(), 1);
        }
        let info = pair
            .server
            .session_info(pair.client_addr)
            .expect("server session");
        assert_eq!(info.footprint.pending_requests, 0);
        assert!(info.footprint.dedup_entries <= Config::default().limits.max_dedup_entries);
    }
    group.finish();
}

fn bench_codec(c: &mut Criterion) {
    let get = request(MessageType::Confirmable);
    let content = response();
    let token = [0xA1, 0xB2, 0xC3, 0xD4];
    let mut get_tok = get.clone();
    get_tok.set_token(token.to_vec());
    let mut content_tok = content.clone();
    content_tok.set_token(token.to_vec());
    let mut req_bytes = Vec::new();
    codec::encode_packet(&mut req_bytes, &get_tok, MessageType::Confirmable, 0x1234)
        .expect("encodes");
    let mut resp_bytes = Vec::new();
    codec::encode_packet(
        &mut resp_bytes,
        &content_tok,
        MessageType::Acknowledgement,
        0x1234,
    )
    .expect("encodes");

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(256);
    // All the codec work of one CON round trip, as the engine does it (encode into a reused
    // buffer, parse, and build the Packet handed to the application).
    group.bench_function("round_trip_equivalent", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_packet(
                &mut buf,
                black_box(&get_tok),
                MessageType::Confirmable,
                0x1234,
            )
            .expect("encodes");
            let request = codec::parse(black_box(&buf)).expect("parses").to_packet();
            buf.clear();
            codec::encode_packet(
                &mut buf,
                black_box(&content_tok),
                MessageType::Acknowledgement,
                0x1234,
            )
            .expect("encodes");
            let response = codec::parse(black_box(&buf)).expect("parses").to_packet();
            request.payload.len() + response.payload.len()
        })
    });
    group.bench_function("parse_request", |b| {
        b.iter(|| {
            codec::parse(black_box(&req_bytes))
                .map(|m| m.payload.len())
                .expect("parses")
        })
    });
    group.bench_function("parse_to_packet_request", |b| {
        b.iter(|| {
            codec::parse(black_box(&req_bytes))
                .expect("parses")
                .to_packet()
        })
    });
    group.bench_function("encode_packet_request", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_packet(
                &mut buf,
                black_box(&get_tok),
                MessageType::Confirmable,
                0x1234,
            )
            .expect("encodes");
            buf.len()
        })
    });
    group.bench_function("parse_to_packet_response", |b| {
        b.iter(|| {
            codec::parse(black_box(&resp_bytes))
                .expect("parses")
                .to_packet()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_engine, bench_codec
}
criterion_main!(benches);
