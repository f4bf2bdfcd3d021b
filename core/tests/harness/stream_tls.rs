//! CoAP over TLS (RFC 8323 §9) under arbitrary stream damage: a client and a server endpoint
//! with the test PKI (`core/tests/certs`) exchange their real bytes in memory while the input
//! decides how the connection goes (opened, refused, closed, reset, half-open), how the bytes
//! in flight each way are delivered (in pieces of any size) or damaged (a byte flipped, a
//! range dropped, doubled or replaced by garbage), what strangers send the server (garbage, or
//! a replay of what the client sent), when time passes and writes fail, and what the
//! application asks. Shared by the cargo-fuzz target `stream_tls` and by
//! `core/tests/stream_fuzz.rs`, which runs it under proptest in every `cargo test` (feature
//! `tls`).
//!
//! Checked throughout: no panic; every transmit goes to a connection that is open, as whole
//! TLS records; the engines' commands are consistent with the adapter's connections; every request or ping
//! ends at most once, and only those that were made; sessions and handshakes within their
//! caps; a deadline that fired moves into the future (no busy loop); the server application
//! sees only requests the client made, and only from the client. At the end, with the link
//! gone, every request ends.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::credentials::{trust_anchors_from_pem, CertifiedKey, ClientAuth};
use coap_engine::tls::{Tls, TlsConfig};
use coap_engine::{
    Config, Duration, Endpoint, Event, Instant, Keepalive, Limits, RequestId, Security,
    SendErrorKind, StreamClosed, StreamCommand, Transmit, Transport,
};

/// Most inputs one run applies.
pub const MAX_STEPS: usize = 250;

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
/// 127.0.0.1 is in the test server certificate, so the client's check of it passes.
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5684);

fn stranger(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 41_000 + u16::from(n % 3)))
}

/// The server's caps: a stranger or two can hold handshakes, never more.
const SERVER_SESSIONS: usize = 3;
const SERVER_HANDSHAKES: usize = 2;

/// The wall clock both endpoints are told: inside the test certificates' validity.
const UNIX_NOW: u64 = 1_800_000_000;

/// Reads the fuzz input a byte at a time, zeros when it runs out.
pub struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
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
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The test PKI, parsed once: the client's and the server's TLS configurations, the
/// client's certificate for when it presents one, and the security layers built so far
/// (building one takes longer than a short run: rustls configurations, keys). A layer holds
/// no state between connections, so sharing one between runs keeps each run a function of
/// its input.
struct Pki {
    client: TlsConfig,
    server: TlsConfig,
    client_certificate: CertifiedKey,
    /// By (server side, client certificate or client authentication, handshake timeout).
    layers: Mutex<BTreeMap<(bool, u8, u64), Security>>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let anchors = trust_anchors_from_pem(include_bytes!("../certs/ca.pem")).expect("test CA");
        let server = CertifiedKey::from_pem(
            include_bytes!("../certs/server.pem"),
            include_bytes!("../certs/server.key"),
        )
        .expect("server certificate");
        Pki {
            client: TlsConfig {
                trust_anchors: anchors.clone(),
                ..TlsConfig::default()
            },
            server: TlsConfig {
                certificate: Some(server),
                trust_anchors: anchors,
                ..TlsConfig::default()
            },
            client_certificate: CertifiedKey::from_pem(
                include_bytes!("../certs/client.pem"),
                include_bytes!("../certs/client.key"),
            )
            .expect("client certificate"),
            layers: Mutex::new(BTreeMap::new()),
        }
    })
}

/// The security layer of one side: the server asking clients for certificates as `auth`
/// says (0 not, 1 optionally, 2 required), or the client presenting its own if `auth` is 1.
fn layer(server: bool, auth: u8, handshake_timeout: Duration) -> Security {
    let pki = pki();
    let key = (server, auth, handshake_timeout.as_micros());
    let mut layers = pki.layers.lock().unwrap_or_else(|e| e.into_inner());
    layers
        .entry(key)
        .or_insert_with(|| {
            let tls = if server {
                let client_auth = [
                    ClientAuth::NotRequested,
                    ClientAuth::Optional,
                    ClientAuth::Required,
                ][usize::from(auth)];
                let config = TlsConfig {
                    client_auth,
                    handshake_timeout,
                    ..pki.server.clone()
                };
                Tls::new(config, [1; 32])
            } else {
                let config = TlsConfig {
                    certificate: (auth == 1).then(|| pki.client_certificate.clone()),
                    handshake_timeout,
                    ..pki.client.clone()
                };
                Tls::new(config, [2; 32])
            };
            Security::new(tls.expect("valid TLS configuration"))
        })
        .clone()
}

/// The two configurations, from the first bytes of the input: whether the server asks for a
/// client certificate and whether the client has one, keepalive on the client, message and
/// block sizes.
fn configs(input: &mut Bytes<'_>) -> (Config, Config) {
    let client_auth = input.u8() % 3;
    let client_cert = input.u8() % 2;
    let keepalive = match input.u8() % 3 {
        0 => Some(Keepalive {
            interval: Duration::from_millis(500 + u64::from(input.u8()) * 40),
            timeout: Duration::from_millis(500 + u64::from(input.u8()) * 20),
        }),
        _ => None,
    };
    let max_message_size = [1152, 256, 4096][usize::from(input.u8() % 3)];
    let handshake_timeout = Duration::from_secs([5, 10, 20, 30][usize::from(input.u8() % 4)]);
    let base = Config {
        transport: Transport::Tcp,
        max_message_size,
        response_timeout: Duration::from_secs(1 + u64::from(input.u8() % 30)),
        ..Config::default()
    };
    let client = Config {
        keepalive,
        security: Some(layer(false, client_cert, handshake_timeout)),
        limits: Limits {
            max_sessions: 2,
            ..Limits::default()
        },
        ..base.clone()
    };
    let server = Config {
        security: Some(layer(true, client_auth, handshake_timeout)),
        limits: Limits {
            max_sessions: SERVER_SESSIONS,
            max_handshakes: SERVER_HANDSHAKES,
            ..Limits::default()
        },
        ..base
    };
    (client, server)
}

/// The client's connection to the server, as its adapter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dial {
    None,
    /// The client asked to connect.
    Connecting,
    Open,
}

/// A connection the adapter dropped since the engine's outputs were last drained.
#[derive(Clone, Copy, Debug, Default)]
struct Gone {
    dropped: bool,
    /// The engine had writes queued when it was dropped, which may be for it.
    late_writes: bool,
}

/// What a run reached, so tests can check the harness gets past the handshake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub steps: usize,
    pub sessions: usize,
    pub handshake_failures: usize,
    pub requests_seen: usize,
    pub responses: usize,
    pub pongs: usize,
    pub failures: usize,
}

impl Reached {
    pub fn add(&mut self, o: &Reached) {
        self.steps += o.steps;
        self.sessions += o.sessions;
        self.handshake_failures += o.handshake_failures;
        self.requests_seen += o.requests_seen;
        self.responses += o.responses;
        self.pongs += o.pongs;
        self.failures += o.failures;
    }
}

struct World {
    client: Endpoint,
    server: Endpoint,
    now: Instant,
    dial: Dial,
    /// Connections the server's adapter holds (the client's, strangers').
    accepted: BTreeSet<SocketAddr>,
    /// Bytes written and not yet delivered, each way, on the client's connection.
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    /// Everything the client ever wrote, for strangers to replay.
    client_log: Vec<u8>,
    /// Writes fail with this kind while set.
    fail: Option<SendErrorKind>,
    /// The adapter dropped the client's connection, or one of the server's, since the last
    /// drain: a close the engine asked for meanwhile finds it gone, and so do the writes it
    /// had queued by then (and only those).
    client_gone: Gone,
    server_gone: BTreeMap<SocketAddr, Gone>,
    issued: BTreeSet<RequestId>,
    ended: BTreeSet<RequestId>,
    /// Payload markers of the requests the client made, and of those the server app saw.
    made: BTreeSet<Vec<u8>>,
    reached: Reached,
}

/// Runs one input sequence; panics if an invariant breaks.
pub fn run(data: &[u8]) -> Reached {
    let mut input = Bytes(data);
    let (client, server) = configs(&mut input);
    let mut w = World {
        client: Endpoint::new(client, 1).expect("valid"),
        server: Endpoint::new(server, 2).expect("valid"),
        now: Instant::ZERO,
        dial: Dial::None,
        accepted: BTreeSet::new(),
        c2s: Vec::new(),
        s2c: Vec::new(),
        client_log: Vec::new(),
        fail: None,
        client_gone: Gone::default(),
        server_gone: BTreeMap::new(),
        issued: BTreeSet::new(),
        ended: BTreeSet::new(),
        made: BTreeSet::new(),
        reached: Reached::default(),
    };
    w.client.set_unix_time(w.now, UNIX_NOW);
    w.server.set_unix_time(w.now, UNIX_NOW);
    while !input.is_empty() && w.reached.steps < MAX_STEPS {
        w.reached.steps += 1;
        w.step(&mut input);
        w.settle();
    }
    w.finish();
    w.reached
}

impl World {
    fn step(&mut self, input: &mut Bytes<'_>) {
        let now = self.now;
        match input.u8() % 32 {
            // The client application: requests (their payload marks them), pings, closes.
            0..=3 => {
                let marker = format!("r{}", self.reached.steps).into_bytes();
                let mut p = Packet::new();
                p.header.code = MessageClass::Request(RequestType::Post);
                p.add_option(CoapOption::UriPath, b"x".to_vec());
                p.payload = marker.clone();
                // Now and then a body that goes block-wise inside the connection.
                let extra = match input.u8() % 8 {
                    0 => 3000,
                    1 => 300,
                    _ => 0,
                };
                p.payload.extend(std::iter::repeat_n(b'.', extra));
                if let Ok(id) = self.client.request(now, SERVER, &p) {
                    self.issued.insert(id);
                    self.made.insert(p.payload);
                }
            }
            4 => {
                if let Ok(id) = self.client.ping(now, SERVER) {
                    self.issued.insert(id);
                }
            }
            5 => {
                let _ = self.client.close_session(now, SERVER);
            }
            // The connection the client asked for opens (or is refused), in either order.
            6..=8 => self.connect(input),
            9 => {
                if self.dial == Dial::Connecting {
                    let kind = [
                        SendErrorKind::Refused,
                        SendErrorKind::Unreachable,
                        SendErrorKind::Other,
                    ][usize::from(input.u8() % 3)];
                    self.client.handle_connect_failed(now, SERVER, kind);
                    self.dial = Dial::None;
                    self.client_dropped();
                }
            }
            // Everything in flight is delivered, both ways, until the two are quiet.
            10..=15 | 28..=31 => {
                for _ in 0..16 {
                    if self.c2s.is_empty() && self.s2c.is_empty() {
                        break;
                    }
                    self.deliver(true, usize::MAX);
                    self.drain();
                    self.deliver(false, usize::MAX);
                    self.drain();
                }
            }
            // Bytes in flight are delivered, in pieces of any size.
            16..=18 => {
                let to_server = input.u8() % 2 == 0;
                let n = match input.u8() % 4 {
                    0 => usize::from(input.u8()),
                    1 => usize::from(input.u16()),
                    _ => usize::MAX,
                };
                self.deliver(to_server, n);
            }
            // ... or damaged on the way.
            19 | 20 => {
                let to_server = input.u8() % 2 == 0;
                let pipe = if to_server {
                    &mut self.c2s
                } else {
                    &mut self.s2c
                };
                damage(pipe, input);
            }
            // A stranger connects to the server and sends garbage or the client's bytes.
            21 => {
                let who = stranger(input.u8());
                if !self.accepted.contains(&who) && self.server.handle_accepted(now, who).is_ok() {
                    self.accepted.insert(who);
                }
                self.drain();
                let bytes = if input.u8() % 2 == 0 && !self.client_log.is_empty() {
                    let from = usize::from(input.u16()) % self.client_log.len();
                    let to = from + usize::from(input.u16()) % (self.client_log.len() - from + 1);
                    self.client_log[from..to].to_vec()
                } else {
                    let n = usize::from(input.u8());
                    input.take(n).to_vec()
                };
                if self.accepted.contains(&who) {
                    self.server.handle_datagram(now, who, &bytes);
                    self.drain();
                }
                if input.u8() % 4 == 0 && self.accepted.remove(&who) {
                    self.server.handle_closed(now, who, StreamClosed::Eof);
                    self.server_dropped(who);
                }
            }
            // The connection breaks: both ends told, or one only (half-open).
            22 => {
                let how = [StreamClosed::Reset, StreamClosed::Eof][usize::from(input.u8() % 2)];
                let ends = input.u8() % 3;
                if ends != 1 && self.dial == Dial::Open {
                    self.client.handle_closed(now, SERVER, how);
                    self.dial = Dial::None;
                    self.client_dropped();
                }
                if ends != 0 && self.accepted.remove(&CLIENT) {
                    self.server.handle_closed(now, CLIENT, how);
                    self.server_dropped(CLIENT);
                }
                self.c2s.clear();
                self.s2c.clear();
            }
            // Time passes; deadlines that are due fire.
            23..=25 => {
                self.now += match input.u8() % 4 {
                    0 => Duration::from_millis(u64::from(input.u8())),
                    1 => Duration::from_secs(u64::from(input.u8() % 64)),
                    _ => Duration::from_millis(u64::from(input.u16()) * 8),
                };
                let now = self.now;
                for ep in [&mut self.client, &mut self.server] {
                    if ep.poll_timeout().is_some_and(|t| t <= now) {
                        ep.handle_timeout(now);
                    }
                }
            }
            // Writes start or stop failing.
            26 => {
                self.fail = match input.u8() % 8 {
                    0 => Some(SendErrorKind::Other),
                    1 => Some(SendErrorKind::Unreachable),
                    _ => None,
                };
            }
            // A stale `now`.
            _ => {
                let stale = Instant::from_micros(now.as_micros().saturating_sub(300_000));
                self.client.handle_timeout(stale);
                self.server.handle_timeout(stale);
            }
        }
    }

    /// The connection the client asked for: accepted by the server (or refused, the cap
    /// reached), and reported open to the client, in either order.
    fn connect(&mut self, input: &mut Bytes<'_>) {
        if self.dial != Dial::Connecting {
            return;
        }
        let now = self.now;
        self.c2s.clear();
        self.s2c.clear();
        let client_first = input.u8() % 4 == 0;
        if client_first {
            self.client.handle_connected(now, SERVER);
            self.dial = Dial::Open;
        }
        // A connection from the client's address replaces any the server still holds.
        self.accepted.remove(&CLIENT);
        match self.server.handle_accepted(now, CLIENT) {
            Ok(()) => {
                self.accepted.insert(CLIENT);
                if !client_first {
                    self.client.handle_connected(now, SERVER);
                    self.dial = Dial::Open;
                }
            }
            Err(_) => {
                // The server's adapter closes what it could not serve.
                if client_first {
                    self.client.handle_closed(now, SERVER, StreamClosed::Reset);
                } else {
                    self.client
                        .handle_connect_failed(now, SERVER, SendErrorKind::Refused);
                }
                self.dial = Dial::None;
                self.client_dropped();
            }
        }
    }

    /// Up to `n` bytes in flight reach their end, as one read.
    fn deliver(&mut self, to_server: bool, n: usize) {
        let now = self.now;
        if to_server {
            let n = n.min(self.c2s.len());
            let bytes: Vec<u8> = self.c2s.drain(..n).collect();
            if self.accepted.contains(&CLIENT) && !bytes.is_empty() {
                self.server.handle_datagram(now, CLIENT, &bytes);
            }
        } else {
            let n = n.min(self.s2c.len());
            let bytes: Vec<u8> = self.s2c.drain(..n).collect();
            if self.dial == Dial::Open && !bytes.is_empty() {
                self.client.handle_datagram(now, SERVER, &bytes);
            }
        }
    }

    /// The drain rule for both endpoints, with the checks; then deadlines already due are
    /// fired, and must move into the future.
    fn settle(&mut self) {
        self.drain();
        for _ in 0..3 {
            let now = self.now;
            let mut due = false;
            for ep in [&mut self.client, &mut self.server] {
                if ep.poll_timeout().is_some_and(|t| t <= now) {
                    ep.handle_timeout(now);
                    due = true;
                }
            }
            if !due {
                return;
            }
            self.drain();
        }
        panic!(
            "a deadline still due at {:?} after firing it three times (client {:?}, server {:?})",
            self.now,
            self.client.poll_timeout(),
            self.server.poll_timeout()
        );
    }

    fn drain(&mut self) {
        // Until both are quiet: what one side does can make the other write (a close).
        loop {
            let mut busy = false;
            while let Some(t) = self.client.poll_transmit() {
                busy = true;
                self.client_wrote(t);
            }
            while let Some(c) = self.client.poll_stream_command() {
                busy = true;
                self.client_command(c);
            }
            while let Some(t) = self.server.poll_transmit() {
                busy = true;
                self.server_wrote(t);
            }
            while let Some(c) = self.server.poll_stream_command() {
                busy = true;
                self.server_command(c);
            }
            while let Some(e) = self.client.poll_event() {
                busy = true;
                self.client_event(e);
            }
            while let Some(e) = self.server.poll_event() {
                busy = true;
                self.server_event(e);
            }
            if !busy {
                break;
            }
        }
        self.client_gone = Gone::default();
        self.server_gone.clear();
        assert!(self.client.session_count() <= 2);
        assert!(self.server.session_count() <= SERVER_SESSIONS);
        assert!(self.server.handshakes_in_progress() <= SERVER_HANDSHAKES);
    }

    fn client_dropped(&mut self) {
        self.client_gone = Gone {
            dropped: true,
            late_writes: self.client_gone.late_writes || self.client.has_transmits(),
        };
    }

    fn server_dropped(&mut self, peer: SocketAddr) {
        let late_writes = self.server.has_transmits();
        let gone = self.server_gone.entry(peer).or_default();
        gone.dropped = true;
        gone.late_writes |= late_writes;
    }

    fn client_wrote(&mut self, t: Transmit) {
        assert_eq!(t.destination, SERVER, "the client wrote to a stranger");
        check_records(&t.payload);
        if self.dial != Dial::Open && self.client_gone.late_writes {
            return; // queued before the adapter dropped the connection: discarded
        }
        assert_eq!(
            self.dial,
            Dial::Open,
            "the client wrote to a connection that is not open"
        );
        let now = self.now;
        match self.fail {
            Some(kind) => self.client.handle_send_result(now, t.id, Err(kind)),
            None => {
                self.client.handle_send_result(now, t.id, Ok(()));
                self.client_log.extend_from_slice(&t.payload);
                self.c2s.extend_from_slice(&t.payload);
            }
        }
    }

    fn server_wrote(&mut self, t: Transmit) {
        check_records(&t.payload);
        let late = self
            .server_gone
            .get(&t.destination)
            .is_some_and(|g| g.late_writes);
        if !self.accepted.contains(&t.destination) && late {
            return;
        }
        assert!(
            self.accepted.contains(&t.destination),
            "the server wrote to {}, which has no connection",
            t.destination
        );
        let now = self.now;
        match self.fail {
            Some(kind) => self.server.handle_send_result(now, t.id, Err(kind)),
            None => {
                self.server.handle_send_result(now, t.id, Ok(()));
                if t.destination == CLIENT && self.dial == Dial::Open {
                    self.s2c.extend_from_slice(&t.payload);
                }
            }
        }
    }

    fn client_command(&mut self, c: StreamCommand) {
        let now = self.now;
        match c {
            StreamCommand::Connect(p) => {
                assert_eq!(p, SERVER);
                assert_eq!(
                    self.dial,
                    Dial::None,
                    "asked to connect while a connection exists"
                );
                self.dial = Dial::Connecting;
            }
            StreamCommand::Close(p) => {
                assert_eq!(p, SERVER);
                assert!(
                    self.dial != Dial::None || self.client_gone.dropped,
                    "asked to close no connection"
                );
                // What was written goes out first, then the server reads the end.
                if self.dial == Dial::Open && self.accepted.contains(&CLIENT) {
                    self.deliver(true, usize::MAX);
                    if self.accepted.remove(&CLIENT) {
                        self.server.handle_closed(now, CLIENT, StreamClosed::Eof);
                        self.server_dropped(CLIENT);
                    }
                }
                self.dial = Dial::None;
                self.c2s.clear();
                self.s2c.clear();
            }
            other => panic!("unknown command {other:?}"),
        }
    }

    fn server_command(&mut self, c: StreamCommand) {
        let now = self.now;
        match c {
            StreamCommand::Close(p) => {
                assert!(
                    self.accepted.contains(&p) || self.server_gone.contains_key(&p),
                    "the server asked to close a connection with {p}, which has none"
                );
                if p == CLIENT {
                    if self.dial == Dial::Open {
                        self.deliver(false, usize::MAX);
                        if self.dial == Dial::Open {
                            self.client.handle_closed(now, SERVER, StreamClosed::Eof);
                            self.dial = Dial::None;
                            self.client_dropped();
                        }
                    }
                    self.c2s.clear();
                    self.s2c.clear();
                }
                self.accepted.remove(&p);
            }
            other => panic!("the server asked for {other:?}"),
        }
    }

    fn client_event(&mut self, e: Event) {
        let id = match e {
            Event::Response { id, .. } => {
                self.reached.responses += 1;
                id
            }
            Event::Pong { id, .. } => {
                self.reached.pongs += 1;
                id
            }
            Event::RequestFailed { id, .. } | Event::PingFailed { id, .. } => {
                self.reached.failures += 1;
                id
            }
            Event::Request { .. } => panic!("the client got a request"),
            _ => return,
        };
        assert!(
            self.issued.contains(&id),
            "terminal event for unknown {id:?}"
        );
        assert!(self.ended.insert(id), "{id:?} ended twice");
    }

    fn server_event(&mut self, e: Event) {
        match e {
            Event::Request {
                id, peer, request, ..
            } => {
                assert_eq!(peer, CLIENT, "a request from a stranger");
                assert!(
                    self.made.contains(&request.payload),
                    "the server application got a request nobody made: {:02x?}",
                    request.payload
                );
                self.reached.requests_seen += 1;
                let mut r = Packet::new();
                r.header.code = MessageClass::Response(ResponseType::Changed);
                r.payload = request.payload[..request.payload.len().min(8)].to_vec();
                let _ = self.server.respond(self.now, id, &r);
            }
            Event::SessionNew { .. } => self.reached.sessions += 1,
            Event::HandshakeFailed { .. } => self.reached.handshake_failures += 1,
            Event::Response { .. }
            | Event::RequestFailed { .. }
            | Event::Pong { .. }
            | Event::PingFailed { .. } => panic!("the server made no request: {e:?}"),
            _ => {}
        }
    }

    /// The link goes, time runs past every deadline: every request ends.
    fn finish(&mut self) {
        let now = self.now;
        if self.dial != Dial::None {
            self.client.handle_closed(now, SERVER, StreamClosed::Reset);
            self.dial = Dial::None;
        }
        for p in std::mem::take(&mut self.accepted) {
            self.server.handle_closed(now, p, StreamClosed::Reset);
        }
        self.c2s.clear();
        self.s2c.clear();
        self.drain();
        for _ in 0..1000 {
            let Some(t) = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            self.now = self.now.max(t);
            let now = self.now;
            self.client.handle_timeout(now);
            self.server.handle_timeout(now);
            self.drain();
            // Nothing connects any more.
            if self.dial == Dial::Connecting {
                self.client
                    .handle_connect_failed(now, SERVER, SendErrorKind::Unreachable);
                self.dial = Dial::None;
                self.drain();
            }
        }
        assert_eq!(
            self.ended, self.issued,
            "every request ends once the link is gone"
        );
    }
}

/// A write is whole TLS records (RFC 8446 §5.1): a known content type, a 1.x version, a
/// length within the limit, and nothing after the last.
fn check_records(mut bytes: &[u8]) {
    assert!(!bytes.is_empty(), "an empty write");
    while !bytes.is_empty() {
        let Some(&[kind, major, minor, hi, lo]) = bytes.first_chunk::<5>() else {
            panic!("a write ends inside a TLS record header: {bytes:02x?}");
        };
        assert!((20..=23).contains(&kind), "TLS record of type {kind}");
        assert!(
            major == 3 && minor <= 4,
            "TLS record version {major}.{minor}"
        );
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        assert!(len <= 16384 + 256, "TLS record of {len} bytes");
        assert!(
            bytes.len() >= 5 + len,
            "a write ends inside a TLS record ({} of {len} bytes)",
            bytes.len() - 5
        );
        bytes = &bytes[5 + len..];
    }
}

/// Damages the bytes in flight: a byte flipped, a range dropped, doubled or replaced by
/// garbage, the rest cut off.
fn damage(pipe: &mut Vec<u8>, input: &mut Bytes<'_>) {
    if pipe.is_empty() {
        return;
    }
    let at = usize::from(input.u16()) % pipe.len();
    let len = (usize::from(input.u8()) + 1).min(pipe.len() - at);
    match input.u8() % 5 {
        0 => pipe[at] ^= input.u8() | 1,
        1 => {
            pipe.drain(at..at + len);
        }
        2 => {
            let copy = pipe[at..at + len].to_vec();
            pipe.splice(at..at, copy);
        }
        3 => {
            let garbage = input.take(len).to_vec();
            pipe.splice(at..at + garbage.len(), garbage);
        }
        _ => pipe.truncate(at),
    }
}
