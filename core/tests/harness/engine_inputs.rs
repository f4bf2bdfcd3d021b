//! Input-sequence harness shared by the cargo-fuzz targets (`core/fuzz`) and the in-`cargo test`
//! property run (`core/tests/fuzz_inputs.rs`), so both exercise exactly the same code.
//!
//! [`run`] decodes arbitrary bytes into an engine configuration and a sequence of inputs to one
//! [`Endpoint`]: datagrams from a few peers (arbitrary bytes, or replies crafted from what the
//! engine recently sent, optionally mutated), timeouts with time advancing (and occasionally a
//! `now` that goes backwards), send results of any kind for recently polled transmits, and the
//! application calls. After every input it drains the endpoint exactly as the API's drain rule
//! says and checks:
//!
//! - nothing panics;
//! - every transmit is a well-formed CoAP message (it parses with [`codec::parse`]);
//! - every request or ping id gets at most one terminal event, and only ids the endpoint issued
//!   get one;
//! - `session_count() <= limits.max_sessions`, and each session's footprint stays within the
//!   per-session caps of [`Limits`];
//! - a caller that follows the drain rule never busy-loops: once due timers have run,
//!   `poll_timeout()` is in the future.
//!
//! [`check_datagram`] holds the codec properties: `parse` never panics, agrees with
//! `parse_header`, and whatever it accepts survives `to_packet` + `encode_packet` (and the
//! zero-copy `encode`) byte for byte.

#![allow(dead_code)] // each includer uses a subset

use std::collections::BTreeSet;
use std::net::SocketAddr;

use coap_engine::coap_lite::{MessageClass, MessageType, Packet};
use coap_engine::codec::{self, FormatError};
use coap_engine::{
    Blockwise, Config, Duration, Endpoint, Event, IncomingRequestId, Instant, Keepalive, Limits,
    RequestId, ResourceId, SendErrorKind, TransmissionParameters, TransmitId,
};

/// Resources the harness makes observable: few, so observers of one resource pile up.
const RESOURCES: u8 = 3;

/// Most inputs one run applies, so a long fuzz input cannot make one execution slow.
pub const MAX_STEPS: usize = 400;

/// More transmits than this at one instant is a busy loop: even if every message the engine
/// can hold (at most a few per input) were retransmitted at once, it would send fewer.
const BUSY_TRANSMITS: usize = 4 * MAX_STEPS + 1000;

/// Number of distinct peers; more than the largest `max_sessions` the harness configures, so
/// the session cap is reached.
const PEERS: u8 = 6;

/// How many recent transmits / incoming requests / request ids the harness remembers to aim
/// replies, send results, responses and cancellations at.
const RECENT: usize = 16;

/// Checks the codec's properties on one datagram; panics if one does not hold.
pub fn check_datagram(bytes: &[u8]) {
    let header = codec::parse_header(bytes);
    let view = match codec::parse(bytes) {
        Ok(view) => view,
        Err(FormatError::Header(e)) => {
            assert_eq!(
                header,
                Err(e),
                "parse and parse_header disagree on the header"
            );
            return;
        }
        Err(_) => {
            assert!(
                header.is_ok(),
                "parse got past a header that parse_header rejects"
            );
            return;
        }
    };
    let header = header.expect("parse accepted a header that parse_header rejects");
    assert_eq!(view.header, header);
    assert_eq!(view.token.len(), usize::from(header.token_length));
    assert!(header.token_length <= 8);
    if header.is_empty() {
        assert_eq!(
            bytes.len(),
            4,
            "an Empty message is exactly the 4-byte header"
        );
    }

    // The zero-copy path: the view re-encodes to the same bytes.
    let mut out = Vec::new();
    codec::encode(
        &mut out,
        header.mtype,
        header.code,
        header.message_id,
        view.token,
        view.options(),
        view.payload,
    )
    .expect("a parsed view re-encodes");
    assert_eq!(out, bytes, "encode(parse(bytes)) changed the bytes");

    // The coap-lite bridge: to_packet keeps every field, and encode_packet restores the wire.
    let packet = view.to_packet();
    assert_eq!(packet.header.get_type(), header.mtype);
    assert_eq!(u8::from(packet.header.code), header.code);
    assert_eq!(packet.header.message_id, header.message_id);
    assert_eq!(packet.get_token(), view.token);
    assert_eq!(packet.payload, view.payload);
    let from_packet: Vec<(u16, &[u8])> = packet
        .options()
        .flat_map(|(&n, values)| values.iter().map(move |v| (n, v.as_slice())))
        .collect();
    let from_view: Vec<(u16, &[u8])> = view.options().collect();
    assert_eq!(from_packet, from_view, "to_packet changed the options");
    out.clear();
    codec::encode_packet(&mut out, &packet, header.mtype, header.message_id)
        .expect("a parsed packet re-encodes");
    assert_eq!(
        out, bytes,
        "encode_packet(to_packet(parse(bytes))) changed the bytes"
    );
}

/// Builds a well-formed message from fields; `None` if the fields cannot be encoded.
pub fn build_message(
    mtype: MessageType,
    code: u8,
    mid: u16,
    token: &[u8],
    options: &[(u16, Vec<u8>)],
    payload: &[u8],
) -> Option<Vec<u8>> {
    let mut sorted: Vec<(u16, &[u8])> = options.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    sorted.sort_by_key(|&(n, _)| n);
    let mut out = Vec::new();
    codec::encode(
        &mut out,
        mtype,
        code,
        mid,
        token,
        sorted.into_iter(),
        payload,
    )
    .ok()?;
    Some(out)
}

/// Reads fuzz bytes; past the end every read yields zeros, and [`Bytes::is_empty`] ends the run.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.u8()))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length below `bound` read from the input, then that many bytes.
    pub fn chunk(&mut self, bound: u8) -> &'a [u8] {
        let len = usize::from(self.u8() % bound);
        self.take(len)
    }

    /// Picks one of `items` (the first past the end of the input).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

fn peer(i: u8) -> SocketAddr {
    let i = i % PEERS;
    // Documentation ranges (RFC 5737, RFC 3849); nothing is ever sent: the engine is sans-IO.
    if i % 2 == 0 {
        SocketAddr::from(([192, 0, 2, 10 + i], 5683))
    } else {
        SocketAddr::new(
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)).into(),
            5600 + u16::from(i),
        )
    }
}

/// A configuration small enough for the fuzzer to reach every cap and every timer quickly. It
/// always passes [`Config::validate`].
pub fn config_from(input: &mut Bytes<'_>) -> Config {
    let ack_timeout = Duration::from_millis(100 + u64::from(input.u8() % 4) * 700);
    let transmission = TransmissionParameters {
        ack_timeout,
        ack_random_factor_milli: 1000 + u32::from(input.u8() % 3) * 250,
        max_retransmit: input.u8() % 5,
        nstart: 1 + usize::from(input.u8() % 3),
        max_latency: Duration::from_secs(u64::from(input.u8() % 20)),
        processing_delay: ack_timeout,
    };
    let keepalive = match input.u8() % 3 {
        0 => None,
        _ => Some(Keepalive {
            interval: Duration::from_millis(500 + u64::from(input.u8()) * 40),
            timeout: Duration::from_millis(500 + u64::from(input.u8()) * 20),
        }),
    };
    let fail_after_unreachable = match input.u8() % 4 {
        0 => None,
        n => Some(u32::from(n)),
    };
    let extra_critical_options = if input.u8() % 4 == 0 {
        vec![9]
    } else {
        Vec::new()
    };
    let limits = Limits {
        max_sessions: 1 + usize::from(input.u8() % 4),
        max_queued_requests: usize::from(input.u8() % 4),
        max_exchanges: 1 + usize::from(input.u8() % 4),
        max_confirmables: usize::from(input.u8() % 4),
        max_pending_requests: 1 + usize::from(input.u8() % 4),
        max_dedup_entries: 1 + usize::from(input.u8() % 8),
        max_remembered_peers: usize::from(input.u8() % 4),
        max_queued_transmits: 1 + usize::from(input.u8() % 16),
        tracked_transmits: 1 + usize::from(input.u8() % 16),
        max_observers: usize::from(input.u8() % 3),
        max_observers_per_resource: 1 + usize::from(input.u8() % 3),
        max_block_transfers: 0,
        max_handshakes: 0,
        max_unwritten_bytes: 64 * 1024,
        recycled_datagrams: 0,
    };
    // Block-wise settings (and datagram recycling, on or off) derive from bytes already read,
    // so that an input (and every saved fuzz corpus) decodes into the same sequence as before
    // they existed.
    let limits = Limits {
        max_block_transfers: limits.max_pending_requests % 3,
        recycled_datagrams: limits.tracked_transmits % 3,
        ..limits
    };
    let blockwise = Blockwise {
        block_size: 16 << (limits.max_dedup_entries % 7),
        early_negotiation: limits.max_confirmables % 2 == 1,
        max_body_size: 64 << (limits.max_queued_transmits % 8),
    };
    #[allow(clippy::needless_update)]
    Config {
        transmission,
        token_length: input.u8() % 9,
        empty_ack_delay: Duration::from_millis(u64::from(input.u8() % 4) * 300),
        response_timeout: Duration::from_millis(1 + u64::from(input.u8()) * 50),
        keepalive,
        fail_after_unreachable,
        idle_timeout: Duration::from_secs(u64::from(input.u8() % 30)),
        max_message_size: 16 + usize::from(input.u8()) * 4,
        extra_critical_options,
        blockwise,
        limits,
        // Plain endpoints (the `security` feature adds a field, None by default).
        ..Config::default()
    }
}

/// What a run reached, so tests can check the harness explores the engine rather than
/// bouncing off input validation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub steps: usize,
    pub transmits: usize,
    pub requests_received: usize,
    pub responses: usize,
    pub request_failures: usize,
    pub pongs: usize,
    pub ping_failures: usize,
    pub send_failures: usize,
    pub sessions_new: usize,
    pub sessions_established: usize,
    pub sessions_failed: usize,
    pub sessions_closed: usize,
    pub responds_ok: usize,
    pub busy_timeouts: usize,
    pub notifications: usize,
    pub observers_added: usize,
    pub observers_removed: usize,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        self.steps += o.steps;
        self.transmits += o.transmits;
        self.requests_received += o.requests_received;
        self.responses += o.responses;
        self.request_failures += o.request_failures;
        self.pongs += o.pongs;
        self.ping_failures += o.ping_failures;
        self.send_failures += o.send_failures;
        self.sessions_new += o.sessions_new;
        self.sessions_established += o.sessions_established;
        self.sessions_failed += o.sessions_failed;
        self.sessions_closed += o.sessions_closed;
        self.responds_ok += o.responds_ok;
        self.busy_timeouts += o.busy_timeouts;
        self.notifications += o.notifications;
        self.observers_added += o.observers_added;
        self.observers_removed += o.observers_removed;
    }
}

struct Harness {
    ep: Endpoint,
    limits: Limits,
    /// The latest `now` fed (the engine's own notion of now).
    now: Instant,
    transmits: Vec<(TransmitId, SocketAddr, Vec<u8>)>,
    incoming: Vec<IncomingRequestId>,
    ids: Vec<RequestId>,
    issued: BTreeSet<RequestId>,
    ended: BTreeSet<RequestId>,
    cov: Coverage,
    /// While set, the link is down: every transmit's send fails at once with this kind, as a
    /// `sendto()` on a dead interface would.
    link_down: Option<SendErrorKind>,
    /// Transmits since the last input that moved time forward.
    transmits_at_now: usize,
}

fn remember<T>(ring: &mut Vec<T>, item: T) {
    if ring.len() >= RECENT {
        ring.remove(0);
    }
    ring.push(item);
}

/// Runs one input sequence decoded from `data`; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Coverage {
    let mut input = Bytes::new(data);
    let config = config_from(&mut input);
    let limits = config.limits.clone();
    let seed = input.u64();
    let ep = Endpoint::new(config, seed).expect("the harness builds only valid configs");
    let mut h = Harness {
        ep,
        limits,
        now: Instant::ZERO,
        transmits: Vec::new(),
        incoming: Vec::new(),
        ids: Vec::new(),
        issued: BTreeSet::new(),
        ended: BTreeSet::new(),
        cov: Coverage::default(),
        link_down: None,
        transmits_at_now: 0,
    };
    while !input.is_empty() && h.cov.steps < MAX_STEPS {
        h.step(&mut input);
        h.settle();
        h.cov.steps += 1;
    }
    h.cov
}

impl Harness {
    fn step(&mut self, input: &mut Bytes<'_>) {
        // Now and then an adapter hands in a stale `now`; the engine must treat it as the
        // latest it has seen.
        let at = match input.u8() % 16 {
            0 => Instant::from_micros(self.now.as_micros().saturating_sub(500_000)),
            _ => self.now,
        };
        match input.u8() % 14 {
            0 | 1 => {
                let from = peer(input.u8());
                let len = usize::from(input.u8() % 48);
                let bytes = input.take(len);
                self.ep.handle_datagram(at, from, bytes);
            }
            2..=4 => self.reply_to_recent(at, input),
            5 => self.unsolicited(at, input),
            6 | 7 => {
                let step = match input.u8() % 8 {
                    0 => Duration::ZERO,
                    1 => Duration::from_micros(1),
                    2 => Duration::from_millis(u64::from(input.u8())),
                    3 => Duration::from_millis(u64::from(input.u8()) * 10),
                    4 => Duration::from_secs(u64::from(input.u8() % 8)),
                    5 => Duration::from_secs(u64::from(input.u8()) * 4),
                    // Jump straight to the armed deadline, as a timer would.
                    _ => match self.ep.poll_timeout() {
                        Some(t) => t - self.now,
                        None => Duration::from_secs(1),
                    },
                };
                self.now += step;
                if step > Duration::ZERO {
                    self.transmits_at_now = 0;
                }
                self.ep.handle_timeout(self.now);
            }
            8 => {
                let id = match self.transmits.len() {
                    0 => return,
                    n => self.transmits[usize::from(input.u8()) % n].0,
                };
                let result = match input.u8() % 5 {
                    0 => Ok(()),
                    1 => Err(SendErrorKind::Unreachable),
                    2 => Err(SendErrorKind::Refused),
                    3 => Err(SendErrorKind::TooBig),
                    _ => Err(SendErrorKind::Other),
                };
                self.ep.handle_send_result(at, id, result);
            }
            9 => self.request(at, input),
            10 => self.respond(at, input),
            11 => {
                if let Ok(id) = self.ep.ping(at, peer(input.u8())) {
                    self.issue(id);
                }
            }
            12 => {
                if self.ids.is_empty() {
                    return;
                }
                let id = self.ids[usize::from(input.u8()) % self.ids.len()];
                let _ = self.ep.cancel(at, id);
            }
            _ => {
                let to = peer(input.u8());
                match input.u8() % 6 {
                    0 => {
                        let _ = self.ep.close_session(at, to);
                    }
                    4 => {
                        let mut packet = Packet::new();
                        packet.header.code = MessageClass::from(match input.u8() % 8 {
                            0 => input.u8(),
                            _ => response_code(input),
                        });
                        packet.payload = vec![0x0b; usize::from(input.u8()) * 2];
                        let resource = ResourceId(u64::from(input.u8() % RESOURCES));
                        let _ = self.ep.notify(at, resource, &packet, input.u8() % 2 == 0);
                    }
                    5 => {
                        if let Some(&id) =
                            self.ids.get(usize::from(input.u8()) % (self.ids.len() + 1))
                        {
                            let _ = self.ep.deregister(at, id);
                        }
                    }
                    1 => {
                        let _ = self.ep.open_session(at, to);
                    }
                    2 => {
                        self.link_down = input.pick(&[
                            None,
                            Some(SendErrorKind::Unreachable),
                            Some(SendErrorKind::TooBig),
                            Some(SendErrorKind::Refused),
                            Some(SendErrorKind::Other),
                        ]);
                    }
                    _ => {
                        let keepalive = match input.u8() % 3 {
                            0 => None,
                            _ => Some(Keepalive {
                                interval: Duration::from_millis(1 + u64::from(input.u8()) * 30),
                                timeout: Duration::from_millis(1 + u64::from(input.u8()) * 20),
                            }),
                        };
                        let _ = self.ep.set_keepalive(at, to, keepalive);
                    }
                }
            }
        }
    }

    fn issue(&mut self, id: RequestId) {
        assert!(self.issued.insert(id), "{id:?} issued twice");
        remember(&mut self.ids, id);
    }

    /// A peer answers (or misanswers) something the engine recently sent it.
    fn reply_to_recent(&mut self, at: Instant, input: &mut Bytes<'_>) {
        if self.transmits.is_empty() {
            return;
        }
        let (_, dest, sent) =
            self.transmits[usize::from(input.u8()) % self.transmits.len()].clone();
        let from = if input.u8() % 8 == 0 {
            peer(input.u8())
        } else {
            dest
        };
        let Ok(view) = codec::parse(&sent) else {
            return;
        };
        let (mid, token) = (view.header.message_id, view.token.to_vec());
        let new_mid = self.message_id(input);
        let mut code = response_code(input);
        let mut options = options(input);
        if view.option(6).is_some() && input.u8() % 4 != 0 {
            // An answer to an observation: mostly a notification with a sequence number.
            code = codec::code(2, 5);
            options.retain(|(n, _)| *n != 6);
            options.push((6, vec![input.u8()]));
            options.sort_by_key(|(n, _)| *n);
        }
        let payload = input.chunk(8).to_vec();
        let mut bytes = match input.u8() % 8 {
            0 => build_message(MessageType::Acknowledgement, 0, mid, &[], &[], &[]),
            1 => build_message(
                MessageType::Acknowledgement,
                code,
                mid,
                &token,
                &options,
                &payload,
            ),
            2 => build_message(MessageType::Reset, 0, mid, &[], &[], &[]),
            3 => build_message(
                MessageType::Confirmable,
                code,
                new_mid,
                &token,
                &options,
                &payload,
            ),
            4 => build_message(
                MessageType::NonConfirmable,
                code,
                new_mid,
                &token,
                &options,
                &payload,
            ),
            5 => Some(sent.clone()),
            6 => build_message(MessageType::Confirmable, 0, new_mid, &[], &[], &[]),
            _ => {
                let mtype = input.pick(&[MessageType::Confirmable, MessageType::NonConfirmable]);
                let code = codec::code(input.u8() % 8, input.u8() % 32);
                build_message(mtype, code, new_mid, &token, &options, &payload)
            }
        }
        .unwrap_or(sent);
        mutate(&mut bytes, input);
        self.ep.handle_datagram(at, from, &bytes);
    }

    /// A peer sends something of its own: usually a request, sometimes anything well formed.
    fn unsolicited(&mut self, at: Instant, input: &mut Bytes<'_>) {
        let from = peer(input.u8());
        let mtype = input.pick(&[
            MessageType::Confirmable,
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
            MessageType::Reset,
        ]);
        let code = match input.u8() % 4 {
            0 => codec::code(input.u8() % 8, input.u8() % 32),
            _ => codec::code(0, 1 + input.u8() % 7),
        };
        let mid = self.message_id(input);
        let token = input.chunk(9).to_vec();
        let options = options(input);
        let payload = input.chunk(8).to_vec();
        if let Some(mut bytes) = build_message(mtype, code, mid, &token, &options, &payload) {
            mutate(&mut bytes, input);
            self.ep.handle_datagram(at, from, &bytes);
        }
    }

    /// Message IDs from a small range collide often, exercising deduplication.
    fn message_id(&mut self, input: &mut Bytes<'_>) -> u16 {
        match input.u8() % 4 {
            0 => input.u16(),
            _ => u16::from(input.u8() % 16),
        }
    }

    fn request(&mut self, at: Instant, input: &mut Bytes<'_>) {
        let to = peer(input.u8());
        let mut packet = Packet::new();
        packet.header.set_type(input.pick(&[
            MessageType::Confirmable,
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
        ]));
        packet.header.code = MessageClass::from(match input.u8() % 8 {
            0 => input.u8(),
            _ => codec::code(0, 1 + input.u8() % 4),
        });
        if input.u8() % 4 == 0 {
            // Explicit tokens, including an over-long one (9 bytes).
            let len = usize::from(input.u8() % 10);
            packet.set_token(input.take(len).to_vec());
        }
        for (number, value) in options(input) {
            packet.add_option(number.into(), value);
        }
        // Sometimes larger than the configured max_message_size.
        packet.payload = vec![0x42; usize::from(input.u8()) * 4];
        let issued = if input.u8() % 4 == 0 {
            if input.u8() % 4 != 0 {
                packet.header.code = MessageClass::from(codec::code(0, 1));
            }
            self.ep.observe(at, to, &packet)
        } else {
            self.ep.request(at, to, &packet)
        };
        if let Ok(id) = issued {
            self.issue(id);
        }
    }

    fn respond(&mut self, at: Instant, input: &mut Bytes<'_>) {
        if self.incoming.is_empty() {
            return;
        }
        // Includes requests already answered or expired: the engine must refuse those.
        let id = self.incoming[usize::from(input.u8()) % self.incoming.len()];
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(match input.u8() % 8 {
            0 => input.u8(),
            _ => response_code(input),
        });
        for (number, value) in options(input) {
            packet.add_option(number.into(), value);
        }
        packet.payload = vec![0x17; usize::from(input.u8()) * 2];
        let answered = if input.u8() % 2 == 0 {
            let resource = ResourceId(u64::from(input.u8() % RESOURCES));
            self.ep
                .respond_observe(at, id, resource, &packet)
                .map(|added| self.cov.observers_added += usize::from(added))
        } else {
            self.ep.respond(at, id, &packet)
        };
        if answered.is_ok() {
            self.cov.responds_ok += 1;
        }
    }

    /// Follows the drain rule, then checks the invariants. If the armed deadline has already
    /// passed, fires it as an adapter's timer would; it must then move into the future.
    fn settle(&mut self) {
        self.drain();
        for _ in 0..3 {
            match self.ep.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.cov.busy_timeouts += 1;
                    self.ep.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        panic!(
            "poll_timeout() = {:?} is still not after now = {:?} after three handle_timeout calls: \
             an adapter following the drain rule would busy-loop",
            self.ep.poll_timeout(),
            self.now
        );
    }

    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.cov.transmits += 1;
            self.transmits_at_now += 1;
            // One instant can legitimately see every pending message retransmitted, but never
            // an endless stream: that is a feedback loop (e.g. a failed send that makes the
            // next send due at once) which would spin an adapter.
            assert!(
                self.transmits_at_now <= BUSY_TRANSMITS,
                "busy loop: {} transmits at {:?} without time advancing (link down: {:?})",
                self.transmits_at_now,
                self.now,
                self.link_down
            );
            if let Err(e) = codec::parse(&t.payload) {
                panic!(
                    "the engine sent a malformed message ({e}): {:02x?}",
                    &t.payload[..]
                );
            }
            remember(
                &mut self.transmits,
                (t.id, t.destination, t.payload.to_vec()),
            );
            if let Some(kind) = self.link_down {
                self.ep.handle_send_result(self.now, t.id, Err(kind));
            }
        }
        while let Some(event) = self.ep.poll_event() {
            let terminal = match event {
                Event::Request { id, .. } => {
                    self.cov.requests_received += 1;
                    remember(&mut self.incoming, id);
                    None
                }
                Event::Response { id, .. } => {
                    self.cov.responses += 1;
                    Some(id)
                }
                Event::RequestFailed { id, .. } => {
                    self.cov.request_failures += 1;
                    Some(id)
                }
                Event::Pong { id, .. } => {
                    self.cov.pongs += 1;
                    Some(id)
                }
                Event::PingFailed { id, .. } => {
                    self.cov.ping_failures += 1;
                    Some(id)
                }
                Event::SendFailed { .. } => {
                    self.cov.send_failures += 1;
                    None
                }
                Event::SessionNew { .. } => {
                    self.cov.sessions_new += 1;
                    None
                }
                Event::SessionEstablished { .. } => {
                    self.cov.sessions_established += 1;
                    None
                }
                Event::SessionFailed { .. } => {
                    self.cov.sessions_failed += 1;
                    None
                }
                Event::SessionClosed { .. } => {
                    self.cov.sessions_closed += 1;
                    None
                }
                Event::Notification { id, .. } => {
                    assert!(self.issued.contains(&id), "notification for unknown {id:?}");
                    assert!(
                        !self.ended.contains(&id),
                        "notification after the end of {id:?}"
                    );
                    self.cov.notifications += 1;
                    None
                }
                Event::ObserverRemoved { .. } => {
                    self.cov.observers_removed += 1;
                    None
                }
                _ => None,
            };
            if let Some(id) = terminal {
                assert!(
                    self.issued.contains(&id),
                    "terminal event for {id:?}, which was never issued"
                );
                assert!(self.ended.insert(id), "second terminal event for {id:?}");
            }
        }
        let _ = self.ep.poll_timeout();
        self.check_limits();
    }

    fn check_limits(&self) {
        let l = &self.limits;
        let count = self.ep.session_count();
        assert!(
            count <= l.max_sessions,
            "{count} sessions exceed max_sessions {}",
            l.max_sessions
        );
        assert_eq!(self.ep.peers().count(), count);
        let mut observers = 0;
        for p in 0..PEERS {
            let Some(info) = self.ep.session_info(peer(p)) else {
                continue;
            };
            let f = info.footprint;
            assert!(
                f.exchanges <= l.max_exchanges,
                "{f:?} exceeds max_exchanges in {l:?}"
            );
            assert!(
                f.queued_requests <= l.max_queued_requests,
                "{f:?} exceeds max_queued_requests in {l:?}"
            );
            assert!(
                f.pending_requests <= l.max_pending_requests,
                "{f:?} exceeds max_pending_requests in {l:?}"
            );
            assert!(
                f.dedup_entries <= l.max_dedup_entries,
                "{f:?} exceeds max_dedup_entries in {l:?}"
            );
            assert!(
                f.block_transfers <= l.max_block_transfers,
                "{f:?} exceeds max_block_transfers in {l:?}"
            );
            // Requests' CONs are bounded by max_exchanges, pings and separate responses by
            // max_confirmables, and there is at most one keepalive probe.
            assert!(
                f.observers <= l.max_observers,
                "{f:?} exceeds max_observers in {l:?}"
            );
            // ... and notifications by one per observer (a new one replaces the old).
            assert!(
                f.confirmables_in_flight
                    <= l.max_exchanges + l.max_confirmables + 1 + l.max_observers,
                "{f:?} exceeds the confirmable bound in {l:?}"
            );
            observers += f.observers;
        }
        // The registry indexing observers by resource agrees with the sessions holding them.
        let indexed: usize = (0..RESOURCES)
            .map(|r| self.ep.observers(ResourceId(u64::from(r))))
            .sum();
        assert_eq!(
            indexed, observers,
            "observer registry out of step with sessions"
        );
        for r in 0..RESOURCES {
            assert!(self.ep.observers(ResourceId(u64::from(r))) <= l.max_observers_per_resource);
        }
    }
}

fn response_code(input: &mut Bytes<'_>) -> u8 {
    input.pick(&[
        codec::code(2, 5),
        codec::code(2, 5),
        codec::code(2, 4),
        codec::code(4, 4),
        codec::code(5, 3),
        codec::code(3, 0),
        codec::code(2, 31),
    ])
}

/// 0–2 options: known and unknown, critical and elective, small and large numbers, and the
/// Block options of RFC 7959 with values of 0–5 bytes (so also malformed ones: longer than 3
/// bytes, or SZX 7).
fn options(input: &mut Bytes<'_>) -> Vec<(u16, Vec<u8>)> {
    let count = input.u8() % 4;
    (0..count.saturating_sub(1))
        .map(|_| {
            let number = input.pick(&[3u16, 6, 6, 9, 11, 23, 12, 15, 27, 60, 1000, 65001]);
            if number == 6 {
                // Observe: mostly register (empty, i.e. 0) or deregister (1).
                let value = match input.u8() % 4 {
                    0 | 1 => Vec::new(),
                    2 => vec![1],
                    _ => input.chunk(4).to_vec(),
                };
                return (number, value);
            }
            let len = usize::from(input.u8() % 6);
            (number, input.take(len).to_vec())
        })
        .collect()
}

/// Sometimes flips, truncates or extends a message so near-valid input reaches the parser.
fn mutate(bytes: &mut Vec<u8>, input: &mut Bytes<'_>) {
    match input.u8() % 8 {
        0 if !bytes.is_empty() => {
            let i = usize::from(input.u8()) % bytes.len();
            bytes[i] ^= input.u8() | 1;
        }
        1 => {
            let keep = usize::from(input.u8()) % (bytes.len() + 1);
            bytes.truncate(keep);
        }
        2 => bytes.push(input.u8()),
        _ => {}
    }
}
