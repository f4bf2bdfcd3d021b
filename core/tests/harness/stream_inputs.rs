//! Input-sequence harness for CoAP over TCP (RFC 8323), shared by the cargo-fuzz target
//! `stream_inputs` (`core/fuzz`) and by `core/tests/stream_fuzz.rs`, which runs it under
//! proptest in every `cargo test`.
//!
//! [`run`] decodes arbitrary bytes into a configuration of one TCP [`Endpoint`] and a sequence
//! of inputs. The harness is the endpoint's adapter and every peer at once: it accepts
//! connections from a few peers and opens those the engine asks for, and it reports:
//!
//! - connection events: accepted, connected, connect failed, closed (EOF or reset), also for
//!   peers the engine does not know and out of order;
//! - bytes from a peer: garbage, or frames the harness crafts as the peer would (CSMs with
//!   random Max-Message-Size, Block-Wise-Transfer and unknown elective or critical options,
//!   Pings with or without Custody, Pongs with the tokens of the engine's recent Pings,
//!   Releases with Alternative-Address and Hold-Off, Aborts, requests with Block1, Block2
//!   (BERT's SZX 7 included) and Observe, responses with the tokens of the engine's recent
//!   requests), sometimes mutated, split at random points into several reads;
//! - timeouts, with time advancing (and now and then a stale `now`);
//! - write results, Ok or any [`SendErrorKind`], for recently polled transmits;
//! - application calls: requests with small and large bodies, observations, responses,
//!   pings, cancellations, closes, keepalive changes, notifications, deregistrations.
//!
//! After every input it drains the endpoint as the API says (transmits, stream commands,
//! events, then the deadline) and checks:
//!
//! - nothing panics;
//! - every transmit goes to a connection the engine was told is open, and its bytes are whole
//!   frames ([`Deframer`]) that [`codec::parse`] accepts; the first on each connection is a
//!   CSM (RFC 8323 §5.3); no request or response is larger than the peer said it accepts;
//! - the engine's connections are exactly the adapter's: it asks to connect only to peers
//!   it has no connection with, asks to close only connections it has, and forgets one
//!   exactly when it asks to close it or is told it is gone;
//! - every request or ping id gets at most one terminal event, and only ids the endpoint
//!   issued get one; notifications only for live observations;
//! - `session_count() <= max_sessions`, and each session's footprint within [`Limits`];
//! - unwritten bytes: an application request, response or notification is refused while the
//!   writes the harness has not reported exceed `limits.max_unwritten_bytes`, and those writes
//!   stay within that limit plus one message, not counting what the engine writes while it
//!   reads the peer's bytes (Pongs, its own answers to requests, the next blocks of
//!   transfers), which the core does not all hold back yet (see
//!   [`check_unwritten`](Harness::check_unwritten));
//! - no amplification: a read of the peer's bytes makes at most one write per frame it
//!   completes, plus `max_queued_requests` + 1 (the queued requests an ended exchange lets
//!   go, an Abort for bad input);
//! - no busy loop: once due timers have run, `poll_timeout()` is in the future, and one
//!   instant never sees an endless stream of transmits.

#![allow(dead_code)] // each includer uses a subset

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use coap_engine::coap_lite::{MessageClass, MessageType, Packet};
use coap_engine::codec;
use coap_engine::framing::{frame, Deframer};
use coap_engine::{
    Blockwise, Config, Duration, Endpoint, Error, Event, IncomingRequestId, Instant, Keepalive,
    Limits, RequestId, ResourceId, SendErrorKind, StreamClosed, StreamCommand, Transmit,
    TransmitId, Transport,
};

/// Most inputs one run applies, so a long fuzz input cannot make one execution slow.
pub const MAX_STEPS: usize = 300;

/// Distinct peers; more than the largest `max_sessions` configured, so the cap is reached.
const PEERS: u8 = 5;

/// How many recent transmits, tokens, incoming requests and ids the harness remembers to aim
/// write results, replies, responses and cancellations at.
const RECENT: usize = 16;

/// Resources the harness makes observable: few, so observers of one pile up.
const RESOURCES: u8 = 3;

/// RFC 8323 §5 signals.
const CSM: u8 = codec::code(7, 1);
const PING: u8 = codec::code(7, 2);
const PONG: u8 = codec::code(7, 3);
const RELEASE: u8 = codec::code(7, 4);
const ABORT: u8 = codec::code(7, 5);

/// Option numbers: Observe, Uri-Path, Block2, Block1, Size2, Size1.
const OBSERVE: u16 = 6;
const URI_PATH: u16 = 11;
const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;
const SIZE2: u16 = 28;
const SIZE1: u16 = 60;

/// What a peer may send before the engine's CSM says otherwise (RFC 8323 §5.3.1).
const DEFAULT_MAX_MESSAGE_SIZE: usize = 1152;

/// Reads fuzz bytes; past the end every read yields zeros.
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

pub fn peer(i: u8) -> SocketAddr {
    let i = i % PEERS;
    // Documentation ranges (RFC 5737, RFC 3849); the engine is sans-IO, nothing is sent.
    if i % 2 == 0 {
        SocketAddr::from(([192, 0, 2, 10 + i], 5683))
    } else {
        SocketAddr::new(
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)).into(),
            40_000 + u16::from(i),
        )
    }
}

/// A TCP configuration small enough for the fuzzer to reach every cap and timer quickly; it
/// always passes [`Config::validate`].
pub fn config_from(input: &mut Bytes<'_>) -> Config {
    let keepalive = match input.u8() % 3 {
        0 => None,
        _ => Some(Keepalive {
            interval: Duration::from_millis(500 + u64::from(input.u8()) * 40),
            timeout: Duration::from_millis(500 + u64::from(input.u8()) * 20),
        }),
    };
    // Small sizes make everything go block-wise; large ones let BERT blocks through.
    let max_message_size = match input.u8() % 4 {
        0 => 16 + usize::from(input.u8()) * 4,
        1 => DEFAULT_MAX_MESSAGE_SIZE,
        2 => 2100 + usize::from(input.u8()) * 16,
        _ => 64 + usize::from(input.u8()),
    };
    let limits = Limits {
        max_sessions: 1 + usize::from(input.u8() % 4),
        // 0 refuses every request: rarely.
        max_queued_requests: usize::from(input.u8() % 8).min(4),
        max_exchanges: 1 + usize::from(input.u8() % 4),
        max_confirmables: usize::from(input.u8() % 4),
        max_pending_requests: 1 + usize::from(input.u8() % 4),
        max_observers: usize::from(input.u8() % 3),
        max_observers_per_resource: 1 + usize::from(input.u8() % 3),
        max_block_transfers: usize::from(input.u8() % 3),
        max_queued_transmits: 1 + usize::from(input.u8()) * 4,
        tracked_transmits: 1 + usize::from(input.u8() % 64),
        max_unwritten_bytes: 64 * (1 + usize::from(input.u8() % 48)),
        ..Limits::default()
    };
    let blockwise = Blockwise {
        block_size: 16 << (input.u8() % 7),
        early_negotiation: input.u8() % 2 == 1,
        max_body_size: 64 << (input.u8() % 9),
    };
    Config {
        token_length: input.u8() % 9,
        response_timeout: Duration::from_millis(1 + u64::from(input.u8()) * 50),
        keepalive,
        idle_timeout: Duration::from_secs(u64::from(input.u8() % 30)),
        max_message_size,
        extra_critical_options: if input.u8() % 4 == 0 {
            vec![9]
        } else {
            Vec::new()
        },
        blockwise,
        limits,
        transport: Transport::Tcp,
        ..Config::default()
    }
}

/// What a run reached, so tests can check the harness explores the engine rather than
/// bouncing off at the start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub steps: usize,
    pub transmits: usize,
    pub frames: usize,
    pub connects: usize,
    pub closes: usize,
    pub accepted: usize,
    pub requests_received: usize,
    pub responses: usize,
    pub request_failures: usize,
    pub notifications: usize,
    pub pongs: usize,
    pub ping_failures: usize,
    pub sessions_established: usize,
    pub sessions_failed: usize,
    pub sessions_closed: usize,
    pub released: usize,
    pub aborts_sent: usize,
    pub block_frames: usize,
    pub bert_frames: usize,
    pub responds_ok: usize,
    pub observers_added: usize,
    pub backlog_refusals: usize,
    pub busy_timeouts: usize,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        macro_rules! add {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        add!(
            steps,
            transmits,
            frames,
            connects,
            closes,
            accepted,
            requests_received,
            responses,
            request_failures,
            notifications,
            pongs,
            ping_failures,
            sessions_established,
            sessions_failed,
            sessions_closed,
            released,
            aborts_sent,
            block_frames,
            bert_frames,
            responds_ok,
            observers_added,
            backlog_refusals,
            busy_timeouts
        );
    }
}

/// One connection as the adapter sees it.
struct Conn {
    /// Tells this connection from an earlier one with the same peer.
    generation: u64,
    /// The engine was told it is open (accepted, or connected after it asked).
    open: bool,
    /// Frames the engine wrote on it.
    frames: usize,
    /// Polled writes the harness has not reported done.
    unreported: Vec<Write>,
    /// The peer side sent a CSM (as crafted; it may have been split or mutated).
    peer_csm: bool,
    /// The largest Max-Message-Size the engine can believe the peer announced: RFC 8323's
    /// default or more, or None once mutated bytes may have announced anything.
    peer_max: Option<usize>,
    /// The peer's bytes as the engine reads them, to count the frames each read completes.
    from_peer: Deframer,
    /// `from_peer` met framing the engine cannot read past.
    from_peer_broken: bool,
}

impl Conn {
    fn new(generation: u64, open: bool) -> Self {
        Conn {
            generation,
            open,
            frames: 0,
            unreported: Vec::new(),
            peer_csm: false,
            peer_max: Some(DEFAULT_MAX_MESSAGE_SIZE),
            from_peer: Deframer::default(),
            from_peer_broken: false,
        }
    }

    fn unwritten(&self) -> usize {
        self.unreported.iter().map(|w| w.len).sum()
    }
}

/// One write the engine asked for.
struct Write {
    id: TransmitId,
    len: usize,
    /// The code of its frame (a write is one frame).
    code: u8,
    cause: Cause,
}

/// What made the engine write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// The application, a timer, the connection's opening.
    Own,
    /// Bytes from the peer: an answer to the peer (a Pong, a 5.03 for a request beyond
    /// `max_pending_requests`, a 2.31 Continue) or what the peer's answer let go on (the next
    /// block of a transfer).
    Answer,
}

impl Conn {
    /// Unwritten bytes but for the engine's one-off signals (CSM, Release, Abort).
    fn unwritten_but_signals(&self) -> usize {
        self.unreported
            .iter()
            .filter(|w| ![CSM, RELEASE, ABORT].contains(&w.code))
            .map(|w| w.len)
            .sum()
    }
}

/// A Block1 or Block2 value (RFC 7959 §2.2): number, more, size exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    num: u32,
    more: bool,
    szx: u8,
}

impl Block {
    fn parse(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let v = value.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        Some(Block {
            num: v >> 4,
            more: v & 0x08 != 0,
            szx: (v & 0x07) as u8,
        })
    }

    fn encode(self) -> Vec<u8> {
        let v = (self.num & 0xF_FFFF) << 4 | u32::from(self.more) << 3 | u32::from(self.szx & 7);
        uint(v)
    }
}

/// An unsigned option value without leading zero bytes (RFC 7252 §3.2).
fn uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(4);
    bytes[first..].to_vec()
}

/// One of the engine's requests, as a peer received it.
#[derive(Clone, Debug)]
struct SentRequest {
    peer: SocketAddr,
    token: Vec<u8>,
    observe: bool,
    block1: Option<Block>,
    block2: Option<Block>,
}

struct Harness {
    ep: Endpoint,
    config: Config,
    now: Instant,
    conns: BTreeMap<SocketAddr, Conn>,
    generations: u64,
    /// Recent transmits: (id, peer, connection generation).
    transmits: Vec<(TransmitId, SocketAddr, u64)>,
    requests_sent: Vec<SentRequest>,
    pings_sent: Vec<(SocketAddr, Vec<u8>)>,
    incoming: Vec<(IncomingRequestId, SocketAddr)>,
    ids: Vec<RequestId>,
    issued: BTreeSet<RequestId>,
    ended: BTreeSet<RequestId>,
    cov: Coverage,
    /// Transmits, and bytes fed, since time last moved forward.
    transmits_at_now: usize,
    fed_at_now: usize,
    /// Prints every input and output (see [`replay`]).
    trace: bool,
    /// What the engine is doing that may make it write.
    cause: Cause,
    /// Writes made while reading the peer's bytes.
    answers: usize,
}

fn remember<T>(ring: &mut Vec<T>, item: T) {
    if ring.len() >= RECENT {
        ring.remove(0);
    }
    ring.push(item);
}

/// Runs one input sequence decoded from `data`; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Coverage {
    run_with(data, false)
}

/// [`run`], printing every input and output to stderr: for reading a failing input.
pub fn replay(data: &[u8]) -> Coverage {
    run_with(data, true)
}

fn run_with(data: &[u8], trace: bool) -> Coverage {
    let mut input = Bytes::new(data);
    let config = config_from(&mut input);
    let seed = input.u64();
    let ep = Endpoint::new(config.clone(), seed).expect("the harness builds only valid configs");
    let mut h = Harness {
        ep,
        config,
        now: Instant::ZERO,
        conns: BTreeMap::new(),
        generations: 0,
        transmits: Vec::new(),
        requests_sent: Vec::new(),
        pings_sent: Vec::new(),
        incoming: Vec::new(),
        ids: Vec::new(),
        issued: BTreeSet::new(),
        ended: BTreeSet::new(),
        cov: Coverage::default(),
        transmits_at_now: 0,
        fed_at_now: 0,
        trace,
        cause: Cause::Own,
        answers: 0,
    };
    if trace {
        eprintln!("{:?}", h.config);
    }
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
        let kind = input.u8() % 32;
        if self.trace {
            eprintln!(
                "-- step {} kind {kind} at {at:?} (now {:?})",
                self.cov.steps, self.now
            );
        }
        match kind {
            0 | 1 => {
                // Mostly a new peer; sometimes one with a connection, which it replaces.
                let i = input.u8();
                let p = (0..PEERS)
                    .map(|n| peer(i / 8 + n))
                    .find(|p| i % 8 == 0 || !self.conns.contains_key(p))
                    .unwrap_or(peer(i / 8));
                self.accept(at, p);
            }
            2..=4 => {
                let p = self.connecting_peer(input);
                self.note(format_args!("connected {p}"));
                self.ep.handle_connected(at, p);
                if let Some(c) = self.conns.get_mut(&p) {
                    c.open = true;
                }
            }
            5 => {
                let p = self.connecting_peer(input);
                let kind = send_error(input);
                self.note(format_args!("connect to {p} failed: {kind:?}"));
                self.ep.handle_connect_failed(at, p, kind);
                self.conns.remove(&p);
            }
            6 => {
                let p = self.some_peer(input);
                let how = input.pick(&[StreamClosed::Eof, StreamClosed::Reset]);
                self.note(format_args!("{p} closed: {how:?}"));
                self.ep.handle_closed(at, p, how);
                self.conns.remove(&p);
            }
            7 if input.u8() % 2 == 0 => {
                let p = self.open_peer(input);
                let len = usize::from(input.u8() % 64);
                let bytes = input.take(len).to_vec();
                self.feed(at, p, &bytes);
            }
            7..=15 => self.peer_frames(at, input),
            16..=18 => self.advance_time(input),
            19 | 20 => self.write_result(at, input),
            21..=23 => self.request(at, input),
            24..=26 => self.respond(at, input),
            27 => {
                let p = self.some_peer(input);
                let pinged = self.ep.ping(at, p);
                self.note(format_args!("ping {p}: {pinged:?}"));
                if let Ok(id) = pinged {
                    self.issue(id);
                }
            }
            28 => {
                if let Some(&id) = self.ids.get(usize::from(input.u8()) % (self.ids.len() + 1)) {
                    let cancelled = self.ep.cancel(at, id);
                    self.note(format_args!("cancel {id:?}: {cancelled:?}"));
                }
            }
            29 | 30 => self.notify(at, input),
            _ => {
                let p = self.some_peer(input);
                match input.u8() % 5 {
                    0 => {
                        let closed = self.ep.close_session(at, p);
                        self.note(format_args!("close {p}: {closed:?}"));
                    }
                    1 => {
                        let opened = self.ep.open_session(at, p);
                        self.note(format_args!("open {p}: {opened:?}"));
                    }
                    2 => {
                        if let Some(&id) =
                            self.ids.get(usize::from(input.u8()) % (self.ids.len() + 1))
                        {
                            let result = self.ep.deregister(at, id);
                            self.note(format_args!("deregister {id:?}: {result:?}"));
                        }
                    }
                    _ => {
                        let keepalive = match input.u8() % 3 {
                            0 => None,
                            _ => Some(Keepalive {
                                interval: Duration::from_millis(1 + u64::from(input.u8()) * 30),
                                timeout: Duration::from_millis(1 + u64::from(input.u8()) * 20),
                            }),
                        };
                        let result = self.ep.set_keepalive(at, p, keepalive);
                        self.note(format_args!("keepalive {p} {keepalive:?}: {result:?}"));
                    }
                }
            }
        }
    }

    /// Mostly a peer with a connection, sometimes any.
    fn some_peer(&self, input: &mut Bytes<'_>) -> SocketAddr {
        let i = input.u8();
        if i % 4 != 0 && !self.conns.is_empty() {
            *self
                .conns
                .keys()
                .nth(usize::from(i / 4) % self.conns.len())
                .expect("in range")
        } else {
            peer(i / 4)
        }
    }

    /// A peer that can send bytes: mostly one with an open connection, sometimes one without
    /// any (the engine drops what it sends). Never one whose connection is still opening:
    /// nothing can arrive on it yet.
    fn open_peer(&self, input: &mut Bytes<'_>) -> SocketAddr {
        let i = input.u8();
        let open: Vec<SocketAddr> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open)
            .map(|(p, _)| *p)
            .collect();
        if i % 8 != 0 && !open.is_empty() {
            return open[usize::from(i / 8) % open.len()];
        }
        (0..PEERS)
            .map(|n| peer(i / 8 + n))
            .find(|p| self.conns.get(p).is_none_or(|c| c.open))
            .unwrap_or(peer(i / 8))
    }

    /// Mostly a connection the engine is waiting for, sometimes any peer.
    fn connecting_peer(&self, input: &mut Bytes<'_>) -> SocketAddr {
        let i = input.u8();
        let waiting: Vec<SocketAddr> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.open)
            .map(|(p, _)| *p)
            .collect();
        if i % 4 != 0 && !waiting.is_empty() {
            waiting[usize::from(i / 4) % waiting.len()]
        } else {
            peer(i / 4)
        }
    }

    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.trace {
            eprintln!("   {what}");
        }
    }

    fn new_conn(&mut self, open: bool) -> Conn {
        self.generations += 1;
        Conn::new(self.generations, open)
    }

    fn accept(&mut self, at: Instant, p: SocketAddr) {
        // A connection from an address the engine already has one with replaces it.
        self.conns.remove(&p);
        let accepted = self.ep.handle_accepted(at, p);
        self.note(format_args!("accepted {p}: {accepted:?}"));
        if accepted.is_ok() {
            self.cov.accepted += 1;
            let conn = self.new_conn(true);
            self.conns.insert(p, conn);
        }
    }

    /// Bytes read from `p`'s connection, then the drain rule.
    fn feed(&mut self, at: Instant, p: SocketAddr, bytes: &[u8]) {
        if self.trace {
            eprintln!("   {p} sends {bytes:02x?}");
        }
        self.fed_at_now += bytes.len();
        let frames = self
            .conns
            .get_mut(&p)
            .map_or(0, |c| frames_completed(c, bytes));
        self.ep.handle_datagram(at, p, bytes);
        self.cause = Cause::Answer;
        let before = self.answers;
        self.drain();
        self.cause = Cause::Own;
        // No amplification: a frame gets at most one answer (a Pong, a 5.03, the next
        // block), a frame that ends an exchange may let the queued requests go, and bad
        // input one Abort.
        let bound = frames + self.config.limits.max_queued_requests + 1;
        assert!(
            self.answers - before <= bound,
            "{} writes answered a read of {frames} frames from {p}",
            self.answers - before
        );
    }

    fn advance_time(&mut self, input: &mut Bytes<'_>) {
        let step = match input.u8() % 8 {
            0 => Duration::ZERO,
            1 => Duration::from_micros(1),
            2 => Duration::from_millis(u64::from(input.u8())),
            3 => Duration::from_millis(u64::from(input.u8()) * 10),
            4 => Duration::from_secs(u64::from(input.u8() % 8)),
            5 => Duration::from_secs(u64::from(input.u8()) * 4),
            // Straight to the armed deadline, as a timer would.
            _ => match self.ep.poll_timeout() {
                Some(t) => t - self.now,
                None => Duration::from_secs(1),
            },
        };
        self.now += step;
        self.note(format_args!("time + {step:?} = {:?}", self.now));
        if step > Duration::ZERO {
            self.transmits_at_now = 0;
            self.fed_at_now = 0;
        }
        self.ep.handle_timeout(self.now);
    }

    fn write_result(&mut self, at: Instant, input: &mut Bytes<'_>) {
        if self.transmits.is_empty() {
            return;
        }
        let (id, p, generation) = self.transmits[usize::from(input.u8()) % self.transmits.len()];
        let result = match input.u8() % 8 {
            0 => Err(send_error(input)),
            _ => Ok(()),
        };
        self.note(format_args!("write {id:?}: {result:?}"));
        self.ep.handle_send_result(at, id, result);
        if let Some(c) = self.conns.get_mut(&p) {
            if c.generation == generation {
                // A stream is written in order: a write done means every earlier one is.
                c.unreported.retain(|w| w.id > id);
            }
        }
    }

    fn issue(&mut self, id: RequestId) {
        assert!(self.issued.insert(id), "{id:?} issued twice");
        remember(&mut self.ids, id);
    }

    /// The unwritten bytes of `p`'s connection (0 if there is none: a new one starts empty).
    fn unwritten(&self, p: SocketAddr) -> usize {
        self.conns.get(&p).map_or(0, Conn::unwritten)
    }

    fn backlogged(&self, p: SocketAddr) -> bool {
        self.unwritten(p) > self.config.limits.max_unwritten_bytes
    }

    // ------------------------------------------------------------------ application calls

    fn request(&mut self, at: Instant, input: &mut Bytes<'_>) {
        let to = self.some_peer(input);
        let mut packet = Packet::new();
        packet.header.set_type(input.pick(&[
            MessageType::Confirmable,
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
        ]));
        packet.header.code = MessageClass::from(match input.u8() % 16 {
            0 => input.u8(),
            n => codec::code(0, 1 + n % 5),
        });
        if input.u8() % 4 == 0 {
            // Explicit tokens, an over-long one (9 bytes) included.
            let len = usize::from(input.u8() % 10);
            packet.set_token(input.take(len).to_vec());
        }
        let path = input.pick(&[&b"a"[..], b"b", b"obs"]);
        packet.add_option(URI_PATH.into(), path.to_vec());
        for (number, value) in options(input) {
            packet.add_option(number.into(), value);
        }
        packet.payload = vec![0x42; body_len(input)];
        let backlogged = self.backlogged(to);
        let issued = if input.u8() % 4 == 0 {
            if input.u8() % 4 != 0 {
                packet.header.code = MessageClass::from(codec::code(0, 1));
            }
            self.ep.observe(at, to, &packet)
        } else {
            self.ep.request(at, to, &packet)
        };
        self.note(format_args!(
            "request to {to} ({} bytes): {issued:?}",
            packet.payload.len()
        ));
        match issued {
            Ok(id) => {
                assert!(
                    !backlogged,
                    "a request to {to} accepted with {} bytes unwritten (limit {})",
                    self.unwritten(to),
                    self.config.limits.max_unwritten_bytes
                );
                self.issue(id);
            }
            Err(Error::QueueFull) if backlogged => self.cov.backlog_refusals += 1,
            Err(_) => {}
        }
    }

    fn respond(&mut self, at: Instant, input: &mut Bytes<'_>) {
        if self.incoming.is_empty() {
            return;
        }
        // Includes requests already answered or gone with their session: refused.
        let (id, from) = self.incoming[usize::from(input.u8()) % self.incoming.len()];
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(match input.u8() % 8 {
            0 => input.u8(),
            _ => response_code(input),
        });
        for (number, value) in options(input) {
            packet.add_option(number.into(), value);
        }
        packet.payload = vec![0x17; body_len(input)];
        // Whatever connection the answer goes to, none that was backlogged may get it.
        let backlogged: BTreeSet<SocketAddr> = self
            .conns
            .keys()
            .copied()
            .filter(|&p| self.backlogged(p))
            .collect();
        let answered = if input.u8() % 2 == 0 {
            let resource = ResourceId(u64::from(input.u8() % RESOURCES));
            self.ep
                .respond_observe(at, id, resource, &packet)
                .map(|added| self.cov.observers_added += usize::from(added))
        } else {
            self.ep.respond(at, id, &packet)
        };
        self.note(format_args!(
            "respond {id:?} ({} bytes): {answered:?}",
            packet.payload.len()
        ));
        if answered.is_ok() {
            assert!(
                !backlogged.contains(&from),
                "a response to {from} accepted with {} bytes unwritten (limit {})",
                self.unwritten(from),
                self.config.limits.max_unwritten_bytes
            );
            self.cov.responds_ok += 1;
        }
        self.drain_checking_backlog(&backlogged);
    }

    fn notify(&mut self, at: Instant, input: &mut Bytes<'_>) {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(match input.u8() % 8 {
            0 => input.u8(),
            _ => response_code(input),
        });
        packet.payload = vec![0x0b; body_len(input)];
        let resource = ResourceId(u64::from(input.u8() % RESOURCES));
        let backlogged: BTreeSet<SocketAddr> = self
            .conns
            .keys()
            .copied()
            .filter(|&p| self.backlogged(p))
            .collect();
        let sent = self.ep.notify(at, resource, &packet, input.u8() % 2 == 0);
        self.note(format_args!("notify {resource:?}: {sent:?}"));
        self.drain_checking_backlog(&backlogged);
    }

    /// Drains after an answer or a notification: no response may have gone to a connection
    /// that was backlogged before the call.
    fn drain_checking_backlog(&mut self, backlogged: &BTreeSet<SocketAddr>) {
        while let Some(t) = self.ep.poll_transmit() {
            if backlogged.contains(&t.destination) {
                let mut d = Deframer::default();
                d.push(&t.payload);
                let mut m = Vec::new();
                while let Ok(true) = d.next(usize::MAX, &mut m) {
                    let class = m[1] >> 5;
                    assert!(
                        !(2..=5).contains(&class),
                        "a response went to {} with {} bytes unwritten (limit {})",
                        t.destination,
                        self.unwritten(t.destination),
                        self.config.limits.max_unwritten_bytes
                    );
                }
            }
            self.on_transmit(t);
        }
    }

    // ------------------------------------------------------------------ the peers

    /// A peer sends frames of its own making: one to four, sometimes mutated, read in one to
    /// four pieces.
    fn peer_frames(&mut self, at: Instant, input: &mut Bytes<'_>) {
        let p = self.open_peer(input);
        let mut stream = Vec::new();
        let count = 1 + input.u8() % 4;
        for i in 0..count {
            let csm_first = i == 0 && self.conns.get(&p).is_some_and(|c| !c.peer_csm);
            let message = if csm_first && input.u8() % 8 != 0 {
                self.csm(p, input)
            } else {
                self.peer_message(p, input)
            };
            if let Some(m) = message {
                frame(&mut stream, &m);
            }
        }
        if input.u8() % 16 == 0 {
            mutate(&mut stream, input);
            if let Some(c) = self.conns.get_mut(&p) {
                c.peer_max = None;
            }
        }
        // Read in pieces cut at random points, each its own input.
        let mut cuts: Vec<usize> = (0..input.u8() % 4)
            .map(|_| usize::from(input.u16()) % (stream.len() + 1))
            .collect();
        cuts.sort_unstable();
        cuts.push(stream.len());
        let mut from = 0;
        for (i, &to) in cuts.iter().enumerate() {
            self.feed(at, p, &stream[from..to]);
            from = to;
            if i + 1 < cuts.len() {
                self.settle();
            }
        }
    }

    /// A message of the peer's, in RFC 7252's layout (the harness frames it).
    fn peer_message(&mut self, p: SocketAddr, input: &mut Bytes<'_>) -> Option<Vec<u8>> {
        match input.u8() % 64 {
            0..=2 => self.csm(p, input),
            3..=9 => {
                let token = input.chunk(9).to_vec();
                let custody: &[(u16, Vec<u8>)] = if input.u8() % 2 == 0 {
                    &[(2, Vec::new())]
                } else {
                    &[]
                };
                build(PING, &token, custody, &[])
            }
            10..=15 => {
                let mine: Vec<&Vec<u8>> = self
                    .pings_sent
                    .iter()
                    .rev()
                    .filter(|(to, _)| *to == p)
                    .map(|(_, t)| t)
                    .collect();
                let i = usize::from(input.u8());
                let token = match mine.get(i % (mine.len() + 1)) {
                    Some(&t) => t.clone(),
                    None => input.chunk(9).to_vec(),
                };
                build(PONG, &token, &[], &[])
            }
            16 => {
                let mut options = Vec::new();
                if input.u8() % 2 == 0 {
                    let len = usize::from(input.u8() % 24);
                    options.push((2, input.take(len).to_vec()));
                }
                if input.u8() % 2 == 0 {
                    let len = usize::from(input.u8() % 6);
                    options.push((4, input.take(len).to_vec()));
                }
                build(RELEASE, &[], &options, &[])
            }
            17 => {
                let mut options = Vec::new();
                if input.u8() % 2 == 0 {
                    let len = usize::from(input.u8() % 4);
                    options.push((2, input.take(len).to_vec()));
                }
                build(ABORT, &[], &options, b"bye")
            }
            18..=39 => self.peer_request(input),
            40..=61 => self.peer_response(p, input),
            _ => {
                // Empty messages (valid with nothing else, malformed with a token), unknown
                // signals, reserved classes.
                let code = input.pick(&[0, 0, codec::code(7, 6), codec::code(7, 31), 0x20, 0xC1]);
                let token = input.chunk(3).to_vec();
                let payload = input.chunk(3).to_vec();
                build(code, &token, &[], &payload)
            }
        }
    }

    /// A Capabilities and Settings Message: Max-Message-Size and Block-Wise-Transfer in their
    /// valid and invalid forms, and unknown options, elective and (rarely) critical.
    fn csm(&mut self, p: SocketAddr, input: &mut Bytes<'_>) -> Option<Vec<u8>> {
        let mut options = Vec::new();
        if input.u8() % 4 != 0 {
            let size = match input.u8() % 8 {
                0 => u32::from(input.u8()),
                1 => 16 + u32::from(input.u16() % 2048),
                2 => 1152,
                3 => 65_536 + u32::from(input.u16()),
                4 => u32::from_be_bytes([input.u8(), input.u8(), input.u8(), input.u8()]),
                _ => 2048 + u32::from(input.u8()) * 64,
            };
            let mut value = uint(size);
            if input.u8() % 8 == 0 {
                // Leading zeros are harmless up to 4 bytes; a longer value is ignored.
                value.splice(0..0, [0, 0]);
            }
            options.push((2u16, value));
        }
        match input.u8() % 4 {
            0 => {}
            1 => options.push((4, vec![input.u8()])),
            _ => options.push((4, Vec::new())),
        }
        if input.u8() % 4 == 0 {
            // Mostly elective (even): a critical one ends the connection. 2 and 4 repeat
            // Max-Message-Size or Block-Wise-Transfer.
            let number = input.pick(&[6u16, 8, 10, 100, 2, 4, 6, 8, 10, 100, 2, 4, 1, 3, 9, 101]);
            let len = usize::from(input.u8() % 3);
            options.push((number, input.take(len).to_vec()));
        }
        if let Some(c) = self.conns.get_mut(&p) {
            c.peer_csm = true;
            // Whichever Max-Message-Size the engine heeds, it is no larger than the largest.
            for (_, value) in options.iter().filter(|(n, v)| *n == 2 && v.len() <= 4) {
                let size = value
                    .iter()
                    .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
                c.peer_max = c.peer_max.map(|bound| bound.max(size));
            }
        }
        build(CSM, &[], &options, &[])
    }

    /// A request from the peer: any method, Uri-Path, Observe, Block1/Block2 (SZX 7 too),
    /// Size1, unknown options, bodies from empty to several kilobytes.
    fn peer_request(&mut self, input: &mut Bytes<'_>) -> Option<Vec<u8>> {
        let code = match input.u8() % 8 {
            0 => codec::code(0, input.u8() % 32),
            n => codec::code(0, 1 + n % 7),
        };
        let token = input.chunk(9).to_vec();
        let mut code = code;
        let mut options = vec![(URI_PATH, input.pick(&[&b"a"[..], b"b", b"obs"]).to_vec())];
        match input.u8() % 4 {
            0 => options.push((OBSERVE, Vec::new())),
            1 => options.push((OBSERVE, vec![1])),
            _ => {}
        }
        if !options[1..].is_empty() && input.u8() % 4 != 0 {
            code = codec::code(0, 1); // registrations are GETs
        }
        let mut payload_len = usize::from(input.u8() % 48);
        match input.u8() % 6 {
            0 | 1 => {
                let block = block_option(input);
                payload_len = block_payload(block, input);
                options.push((BLOCK1, block.encode()));
                if input.u8() % 4 == 0 {
                    options.push((SIZE1, uint(u32::from(input.u16()))));
                }
            }
            2 => options.push((BLOCK2, block_option(input).encode())),
            _ => {}
        }
        options.extend(self::options(input));
        let payload = vec![0x5a; payload_len];
        build(code, &token, &options, &payload)
    }

    /// A response from the peer, mostly with the token of one of the engine's recent
    /// requests to it, shaped to continue it (Block1 echoed, Block2 next blocks, BERT,
    /// notifications), sometimes not.
    fn peer_response(&mut self, p: SocketAddr, input: &mut Bytes<'_>) -> Option<Vec<u8>> {
        // Mostly the latest request, then older ones.
        let mine: Vec<&SentRequest> = self
            .requests_sent
            .iter()
            .rev()
            .filter(|r| r.peer == p)
            .collect();
        let sent = match input.u8() % 4 {
            0 => mine.get(usize::from(input.u8()) % (mine.len() + 1)),
            _ => mine.first(),
        }
        .map(|&r| r.clone());
        let token = match &sent {
            Some(r) if input.u8() % 8 != 0 => r.token.clone(),
            _ => input.chunk(9).to_vec(),
        };
        let mut code = response_code(input);
        let mut options = Vec::new();
        let mut payload_len = usize::from(input.u8() % 32);
        if let Some(r) = &sent {
            if r.observe && input.u8() % 4 != 0 {
                code = codec::code(2, 5);
                options.push((OBSERVE, uint(u32::from(input.u16()))));
            }
            if let Some(b1) = r.block1 {
                if input.u8() % 4 != 0 {
                    code = if b1.more {
                        codec::code(2, 31)
                    } else {
                        codec::code(2, 4)
                    };
                    options.push((BLOCK1, b1.encode()));
                }
            }
            if input.u8() % 2 == 0 {
                // The block asked for (or the first), more to come or not, in the asked size
                // or another (BERT too).
                let asked = r.block2.unwrap_or(Block {
                    num: 0,
                    more: false,
                    szx: 6,
                });
                let block = Block {
                    num: if input.u8() % 8 == 0 {
                        u32::from(input.u8())
                    } else {
                        asked.num
                    },
                    more: input.u8() % 3 != 0,
                    szx: if input.u8() % 4 == 0 {
                        input.u8() % 8
                    } else {
                        asked.szx
                    },
                };
                payload_len = block_payload(block, input);
                options.push((BLOCK2, block.encode()));
                if input.u8() % 4 == 0 {
                    options.push((SIZE2, uint(u32::from(input.u16()))));
                }
            }
        }
        options.extend(self::options(input));
        let payload = vec![0x33; payload_len];
        build(code, &token, &options, &payload)
    }

    // ------------------------------------------------------------------ drain and checks

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
            "poll_timeout() = {:?} is still not after now = {:?} after three handle_timeout \
             calls: an adapter following the drain rule would busy-loop",
            self.ep.poll_timeout(),
            self.now
        );
    }

    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.on_transmit(t);
        }
        while let Some(c) = self.ep.poll_stream_command() {
            if self.trace {
                eprintln!("   command {c:?}");
            }
            match c {
                StreamCommand::Connect(p) => {
                    assert!(
                        !self.conns.contains_key(&p),
                        "asked to connect to {p}, which has a connection"
                    );
                    self.cov.connects += 1;
                    let conn = self.new_conn(false);
                    self.conns.insert(p, conn);
                }
                StreamCommand::Close(p) => {
                    assert!(
                        self.conns.remove(&p).is_some(),
                        "asked to close a connection with {p}, which has none"
                    );
                    self.cov.closes += 1;
                }
                other => panic!("unknown stream command {other:?}"),
            }
        }
        while let Some(event) = self.ep.poll_event() {
            self.on_event(event);
        }
        let _ = self.ep.poll_timeout();
        self.check_connections();
        self.check_limits();
        self.check_unwritten();
    }

    fn on_transmit(&mut self, t: Transmit) {
        if self.trace {
            eprintln!(
                "   write {:?} to {}: {:02x?}",
                t.id,
                t.destination,
                &t.payload[..]
            );
        }
        self.cov.transmits += 1;
        self.transmits_at_now += 1;
        // Even one frame per byte fed, plus everything every step could have queued, is
        // finite; more at one instant is a feedback loop that would spin an adapter.
        let busy = 4 * MAX_STEPS + 1000 + self.fed_at_now;
        assert!(
            self.transmits_at_now <= busy,
            "busy loop: {} transmits at {:?} without time advancing",
            self.transmits_at_now,
            self.now
        );
        let p = t.destination;
        let conn = self
            .conns
            .get_mut(&p)
            .unwrap_or_else(|| panic!("a write to {p}, which has no connection"));
        assert!(conn.open, "a write to {p} before its connection opened");
        let generation = conn.generation;
        // The engine writes whole frames on a plain stream.
        let mut d = Deframer::default();
        d.push(&t.payload);
        let mut m = Vec::new();
        let mut code = 0;
        let mut frames = 0;
        loop {
            match d.next(usize::MAX, &mut m) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => panic!(
                    "the engine wrote bad framing ({e}): {:02x?}",
                    &t.payload[..]
                ),
            }
            frames += 1;
            let view = codec::parse(&m)
                .unwrap_or_else(|e| panic!("the engine wrote a malformed message ({e}): {m:02x?}"));
            code = view.header.code;
            if conn.frames == 0 {
                assert_eq!(code, CSM, "the first message on a connection is not a CSM");
            }
            conn.frames += 1;
            self.cov.frames += 1;
            let class = code >> 5;
            if class != 7 {
                if let Some(max) = conn.peer_max {
                    let mut framed = Vec::new();
                    frame(&mut framed, &m);
                    assert!(
                        framed.len() <= max,
                        "a message of {} bytes (framed) to a peer accepting {max}",
                        framed.len()
                    );
                }
            }
            for (n, v) in view.options() {
                if n == BLOCK1 || n == BLOCK2 {
                    self.cov.block_frames += 1;
                    if Block::parse(v).is_some_and(|b| b.szx == 7) {
                        self.cov.bert_frames += 1;
                    }
                }
            }
            match code {
                ABORT => self.cov.aborts_sent += 1,
                PING => remember(&mut self.pings_sent, (p, view.token.to_vec())),
                c if c >> 5 == 0 && c != 0 => {
                    let block = |n| view.option(n).and_then(Block::parse);
                    let sent = SentRequest {
                        peer: p,
                        token: view.token.to_vec(),
                        observe: view.option(OBSERVE).is_some(),
                        block1: block(BLOCK1),
                        block2: block(BLOCK2),
                    };
                    remember(&mut self.requests_sent, sent);
                }
                _ => {}
            }
        }
        assert_eq!(frames, 1, "a write that is not one frame");
        assert_eq!(d.pending(), 0, "a write that ends inside a frame");
        conn.unreported.push(Write {
            id: t.id,
            len: t.payload.len(),
            code,
            cause: self.cause,
        });
        if self.cause == Cause::Answer {
            self.answers += 1;
        }
        remember(&mut self.transmits, (t.id, p, generation));
    }

    fn on_event(&mut self, event: Event) {
        if self.trace {
            eprintln!("   event {event:?}");
        }
        let terminal = match event {
            Event::Request { id, peer, .. } => {
                self.cov.requests_received += 1;
                remember(&mut self.incoming, (id, peer));
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
            Event::Notification { id, .. } => {
                assert!(self.issued.contains(&id), "notification for unknown {id:?}");
                assert!(
                    !self.ended.contains(&id),
                    "notification after the end of {id:?}"
                );
                self.cov.notifications += 1;
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
            Event::Released { .. } => {
                self.cov.released += 1;
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

    /// The engine has a session exactly where the adapter has a connection: it asked for
    /// each one it opened, and it asked to close each one it dropped unless told it was gone.
    fn check_connections(&self) {
        let engine: BTreeSet<SocketAddr> = self.ep.peers().collect();
        let adapter: BTreeSet<SocketAddr> = self.conns.keys().copied().collect();
        assert_eq!(
            engine, adapter,
            "the engine's sessions and the adapter's connections differ"
        );
    }

    fn check_limits(&self) {
        let l = &self.config.limits;
        let count = self.ep.session_count();
        assert!(
            count <= l.max_sessions,
            "{count} sessions exceed max_sessions {}",
            l.max_sessions
        );
        let mut observers = 0;
        for &p in self.conns.keys() {
            let Some(info) = self.ep.session_info(p) else {
                continue;
            };
            let f = info.footprint;
            assert!(f.exchanges <= l.max_exchanges, "{f:?} over {l:?}");
            assert!(
                f.queued_requests <= l.max_queued_requests,
                "{f:?} over {l:?}"
            );
            assert!(
                f.pending_requests <= l.max_pending_requests,
                "{f:?} over {l:?}"
            );
            assert!(
                f.block_transfers <= l.max_block_transfers,
                "{f:?} over {l:?}"
            );
            assert!(f.observers <= l.max_observers, "{f:?} over {l:?}");
            // On a stream nothing awaits an acknowledgement but Pings: the application's
            // (max_confirmables) and one keepalive probe.
            assert!(
                f.confirmables_in_flight <= l.max_confirmables + 1,
                "{} Pings in flight over max_confirmables {} + a probe",
                f.confirmables_in_flight,
                l.max_confirmables
            );
            observers += f.observers;
        }
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

    /// The engine refuses application messages beyond `max_unwritten_bytes`, and holds back
    /// what it would write on its own (Pongs, its answers to requests, next blocks,
    /// re-registrations) while a connection is over it, so everything but its one-off
    /// signals (CSM, Release, Abort) that the adapter has not written stays within it plus
    /// one message, plus the Pings that may be in flight (the application's, capped by
    /// `max_confirmables`, and a keepalive probe: 6 bytes each with their 4-byte tokens).
    fn check_unwritten(&self) {
        let l = &self.config.limits;
        // One message: the largest the engine builds, framed.
        let message = self.config.max_message_size + 2;
        let pings = (l.max_confirmables + 1) * 6;
        for (p, c) in &self.conns {
            let unwritten = c.unwritten_but_signals();
            assert!(
                unwritten <= l.max_unwritten_bytes + message + pings,
                "{unwritten} bytes (signals aside) unwritten to {p}, over \
                 max_unwritten_bytes {} + one message of {message} + {pings} of Pings",
                l.max_unwritten_bytes
            );
        }
    }
}

/// How many frames `bytes` completes on `conn`'s stream from the peer.
fn frames_completed(conn: &mut Conn, bytes: &[u8]) -> usize {
    if conn.from_peer_broken {
        return 0;
    }
    conn.from_peer.push(bytes);
    let mut frames = 0;
    let mut m = Vec::new();
    loop {
        match conn.from_peer.next(usize::MAX, &mut m) {
            Ok(true) => frames += 1,
            Ok(false) => return frames,
            Err(_) => {
                conn.from_peer_broken = true;
                return frames;
            }
        }
    }
}

fn send_error(input: &mut Bytes<'_>) -> SendErrorKind {
    input.pick(&[
        SendErrorKind::Unreachable,
        SendErrorKind::Refused,
        SendErrorKind::TooBig,
        SendErrorKind::Other,
    ])
}

fn response_code(input: &mut Bytes<'_>) -> u8 {
    input.pick(&[
        codec::code(2, 5),
        codec::code(2, 5),
        codec::code(2, 4),
        codec::code(2, 31),
        codec::code(4, 4),
        codec::code(4, 13),
        codec::code(5, 3),
        codec::code(3, 0),
    ])
}

/// Body sizes from empty to several blocks (and several BERT units).
fn body_len(input: &mut Bytes<'_>) -> usize {
    match input.u8() % 8 {
        0..=3 => usize::from(input.u8() % 64),
        4 | 5 => usize::from(input.u8()) * 4,
        6 => 1000 + usize::from(input.u8()) * 16,
        _ => 4096 + usize::from(input.u8()) * 64,
    }
}

/// A Block1/Block2 value: small numbers, mostly valid size exponents, BERT (7) often.
fn block_option(input: &mut Bytes<'_>) -> Block {
    Block {
        num: match input.u8() % 4 {
            0 => u32::from(input.u16()),
            _ => u32::from(input.u8() % 4),
        },
        more: input.u8() % 2 == 0,
        szx: input.pick(&[0, 2, 4, 6, 6, 7, 7, 7]),
    }
}

/// A payload length fitting `block` (whole units for BERT), or not.
fn block_payload(block: Block, input: &mut Bytes<'_>) -> usize {
    let size = if block.szx == 7 {
        1024 * (1 + usize::from(input.u8() % 3))
    } else {
        16 << block.szx
    };
    match input.u8() % 8 {
        0 => usize::from(input.u8()),
        1 if size > 1 => size - 1,
        _ if block.more => size,
        _ => size / 2,
    }
}

/// 0–2 options: known and unknown, critical and elective.
fn options(input: &mut Bytes<'_>) -> Vec<(u16, Vec<u8>)> {
    let count = input.u8() % 4;
    (0..count.saturating_sub(1))
        .map(|_| {
            let number = input.pick(&[3u16, 9, 12, 15, 17, 60, 65001, 1000, 2049]);
            let len = usize::from(input.u8() % 5);
            (number, input.take(len).to_vec())
        })
        .collect()
}

/// A message in RFC 7252's layout (the harness frames it); None if it cannot be encoded.
fn build(code: u8, token: &[u8], options: &[(u16, Vec<u8>)], payload: &[u8]) -> Option<Vec<u8>> {
    let mut sorted: Vec<(u16, &[u8])> = options.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    sorted.sort_by_key(|&(n, _)| n);
    let mut out = Vec::new();
    codec::encode(
        &mut out,
        MessageType::NonConfirmable,
        code,
        0,
        token,
        sorted.into_iter(),
        payload,
    )
    .ok()?;
    Some(out)
}

/// Flips a byte, cuts the bytes short or adds one, so near-valid frames reach the deframer and
/// the parser.
fn mutate(bytes: &mut Vec<u8>, input: &mut Bytes<'_>) {
    match input.u8() % 3 {
        0 if !bytes.is_empty() => {
            let i = usize::from(input.u16()) % bytes.len();
            bytes[i] ^= input.u8() | 1;
        }
        1 => {
            let keep = usize::from(input.u16()) % (bytes.len() + 1);
            bytes.truncate(keep);
        }
        _ => bytes.push(input.u8()),
    }
}
