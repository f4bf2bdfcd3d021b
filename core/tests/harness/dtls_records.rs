//! Arbitrary records into DTLS sessions: a PSK client and a PSK server endpoint talk in
//! memory while the input bytes decide what else arrives — garbage, real records with a byte
//! flipped, cut short, replayed, delivered out of order or from another address, ClientHellos
//! from strangers — and when time passes and sends fail. Shared by the cargo-fuzz target
//! `dtls_records` and by `core/tests/dtls_fuzz.rs`, which runs it under proptest in every
//! `cargo test` (feature `dtls`).
//!
//! Checked throughout: no panic; every request ends at most once, and only requests that
//! were made end; sessions and half-open handshakes stay within their caps; a deadline that
//! fired moves into the future (no busy loop); nothing opened from a mangled record reaches
//! the server application unless it is byte for byte a request the client made.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
use coap_engine::{
    Config, Duration, Endpoint, Event, Instant, Limits, RequestId, Security, SendErrorKind,
};

/// Reads the fuzz input a byte at a time, zeros when it runs out.
pub struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn config(server: bool) -> Config {
    let dtls = if server {
        let mut t = BTreeMap::new();
        t.insert(b"client".to_vec(), b"secret".to_vec());
        DtlsConfig {
            psk_store: Some(Arc::new(t)),
            handshake_timeout: Duration::from_secs(10),
            ..DtlsConfig::default()
        }
    } else {
        DtlsConfig {
            psk: Some(PskCredentials {
                identity: b"client".to_vec(),
                key: b"secret".to_vec(),
            }),
            handshake_timeout: Duration::from_secs(10),
            ..DtlsConfig::default()
        }
    };
    let entropy = [if server { 1 } else { 2 }; 32];
    Config {
        security: Some(Security::new(Dtls::new(dtls, entropy).expect("valid"))),
        limits: Limits {
            max_sessions: 4,
            max_handshakes: 2,
            ..Limits::default()
        },
        ..Config::default()
    }
}

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5684);

fn stranger(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 41_000 + u16::from(n % 4)))
}

struct Side {
    ep: Endpoint,
    /// Datagrams it sent, for replays and mutations.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Ids whose terminal event was seen.
    ended: BTreeSet<RequestId>,
}

impl Side {
    /// The drain rule, with invariants; `fail` reports every send as failed.
    fn drain(
        &mut self,
        now: Instant,
        fail: Option<SendErrorKind>,
        issued: &BTreeSet<RequestId>,
        seen: &mut Vec<Vec<u8>>,
    ) {
        while let Some(t) = self.ep.poll_transmit() {
            if let Some(kind) = fail {
                self.ep.handle_send_result(now, t.id, Err(kind));
            } else {
                self.sent.push((t.destination, t.payload.to_vec()));
            }
        }
        while let Some(event) = self.ep.poll_event() {
            match event {
                Event::Response { id, .. }
                | Event::RequestFailed { id, .. }
                | Event::Pong { id, .. }
                | Event::PingFailed { id, .. } => {
                    assert!(issued.contains(&id), "terminal event for unknown {id:?}");
                    assert!(self.ended.insert(id), "{id:?} ended twice");
                }
                Event::Request { id, request, .. } => {
                    seen.push(request.payload.clone());
                    let mut r = Packet::new();
                    r.header.code = MessageClass::Response(ResponseType::Content);
                    let _ = self.ep.respond(now, id, &r);
                }
                _ => {}
            }
        }
        assert!(self.ep.session_count() <= 4);
        assert!(self.ep.handshakes_in_progress() <= 2);
    }
}

/// Runs one input sequence.
pub fn run(data: &[u8]) {
    let mut input = Bytes(data);
    let mut now = Instant::ZERO;
    let mut client = Side {
        ep: Endpoint::new(config(false), 1).expect("valid"),
        sent: Vec::new(),
        ended: BTreeSet::new(),
    };
    let mut server = Side {
        ep: Endpoint::new(config(true), 2).expect("valid"),
        sent: Vec::new(),
        ended: BTreeSet::new(),
    };
    let mut issued = BTreeSet::new();
    let mut made: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut seen = Vec::new();
    let mut fail: Option<SendErrorKind> = None;
    let mut delivered = (0usize, 0usize); // next of client.sent / server.sent to deliver
    let mut steps = 0;
    while !input.is_empty() && steps < 300 {
        steps += 1;
        match input.u8() % 12 {
            // A request from the client (its payload marks it).
            0 => {
                let marker = format!("r{steps}").into_bytes();
                let mut p = Packet::new();
                p.header.code = MessageClass::Request(RequestType::Get);
                p.add_option(CoapOption::UriPath, b"x".to_vec());
                p.payload = marker.clone();
                if let Ok(id) = client.ep.request(now, SERVER, &p) {
                    issued.insert(id);
                    made.insert(marker);
                }
            }
            // Deliver the next datagrams each way, in order.
            1..=3 => {
                while let Some((to, d)) = client.sent.get(delivered.0).cloned() {
                    delivered.0 += 1;
                    if to == SERVER {
                        server.ep.handle_datagram(now, CLIENT, &d);
                    }
                }
                while let Some((to, d)) = server.sent.get(delivered.1).cloned() {
                    delivered.1 += 1;
                    if to == CLIENT {
                        client.ep.handle_datagram(now, SERVER, &d);
                    }
                }
            }
            // A datagram each side sent, mutated, to the other (or from a stranger).
            4 | 5 => {
                let from_client = input.u8() % 2 == 0;
                let pool = if from_client {
                    &client.sent
                } else {
                    &server.sent
                };
                if pool.is_empty() {
                    continue;
                }
                let (_, mut d) = pool[usize::from(input.u16()) % pool.len()].clone();
                match input.u8() % 5 {
                    0 if !d.is_empty() => {
                        let at = usize::from(input.u16()) % d.len();
                        d[at] ^= input.u8() | 1;
                    }
                    1 => d.truncate(usize::from(input.u16()) % (d.len() + 1)),
                    2 => d.extend_from_slice(input.take(16)),
                    3 => {} // a plain replay
                    _ => {
                        let copy = d.clone();
                        d.extend_from_slice(&copy); // two records in one datagram
                    }
                }
                if from_client {
                    let from = if input.u8() % 4 == 0 {
                        stranger(input.u8())
                    } else {
                        CLIENT
                    };
                    server.ep.handle_datagram(now, from, &d);
                } else {
                    client.ep.handle_datagram(now, SERVER, &d);
                }
            }
            // Garbage, to either side.
            6 => {
                let n = usize::from(input.u8());
                let bytes = input.take(n).to_vec();
                if input.u8() % 2 == 0 {
                    server.ep.handle_datagram(now, stranger(input.u8()), &bytes);
                } else {
                    client.ep.handle_datagram(now, SERVER, &bytes);
                }
            }
            // Time passes; deadlines that are due fire, and move on afterwards.
            7 | 8 => {
                now += Duration::from_millis(u64::from(input.u16()) * 8);
                for side in [&mut client, &mut server] {
                    if side.ep.poll_timeout().is_some_and(|t| t <= now) {
                        side.ep.handle_timeout(now);
                    }
                }
            }
            // Sends start or stop failing.
            9 => {
                fail = match input.u8() % 4 {
                    0 => Some(SendErrorKind::Unreachable),
                    1 => Some(SendErrorKind::Other),
                    _ => None,
                };
            }
            // The application closes or pings.
            10 => {
                if input.u8() % 2 == 0 {
                    let _ = client.ep.close_session(now, SERVER);
                } else if let Ok(id) = client.ep.ping(now, SERVER) {
                    issued.insert(id);
                }
            }
            _ => {
                if let Ok(id) = client.ep.ping(now, SERVER) {
                    issued.insert(id);
                }
            }
        }
        client.drain(now, fail, &issued, &mut seen);
        server.drain(now, fail, &BTreeSet::new(), &mut seen);
        // No busy loop: after handling its deadline, an endpoint's next one is in the future.
        for side in [&mut client, &mut server] {
            if side.ep.poll_timeout().is_some_and(|t| t <= now) {
                side.ep.handle_timeout(now);
                side.drain(now, fail, &issued, &mut seen);
                if let Some(t) = side.ep.poll_timeout() {
                    assert!(t > now, "deadline {t:?} still due at {now:?} after firing");
                }
            }
        }
    }
    for payload in &seen {
        assert!(
            made.contains(payload),
            "the server application got a request nobody made: {payload:02x?}"
        );
    }
    // Let everything run out: every request ends.
    for _ in 0..1000 {
        let Some(t) = [client.ep.poll_timeout(), server.ep.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        now = now.max(t);
        client.ep.handle_timeout(now);
        server.ep.handle_timeout(now);
        client.drain(now, Some(SendErrorKind::Unreachable), &issued, &mut seen);
        server.drain(
            now,
            Some(SendErrorKind::Unreachable),
            &BTreeSet::new(),
            &mut seen,
        );
    }
    assert_eq!(
        client.ended.len(),
        issued.len(),
        "every request ended once the link was gone long enough"
    );
}
