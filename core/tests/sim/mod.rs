//! A deterministic, seeded network simulator for `coap-engine` tests.
//!
//! N [`Endpoint`]s live at `SocketAddr`s that are only labels (nothing touches a real
//! network). A virtual network with its own PRNG carries their datagrams with per-link delay,
//! jitter (and so reordering), loss and duplication; links can be cut for a window of virtual
//! time, and sends from an endpoint can be made to fail with a chosen [`SendErrorKind`]. Time
//! is virtual: [`Sim::step`] jumps to the earliest of the next delivery, the next scripted
//! action and every endpoint's `poll_timeout()`, and never goes backwards.
//!
//! The simulator is the adapter the engine's docs describe: after **every** input to an
//! endpoint it drains transmits until `None` (reporting injected send failures with
//! `handle_send_result` right after polling the transmit, as a real adapter would), then
//! events until `None`, and only then lets the application act or reads `poll_timeout()`.
//!
//! Everything is recorded with the virtual instant and a global sequence number: every event
//! per endpoint, every transmit with its fate, every delivery. Tests assert on these records.
//!
//! The application is played by per-node hooks (called for each event, after the drain) and
//! by closures scheduled at virtual instants with [`Sim::at`]; both get `&mut Sim` and act via
//! [`Sim::request`], [`Sim::respond`], [`Sim::ping`], ...
//!
//! Same seed, same script: same run, byte for byte.

#![allow(dead_code)]

#[cfg(feature = "dtls")]
pub mod dtls;
#[cfg(any(feature = "dtls", feature = "tls"))]
pub mod pki;
#[cfg(feature = "tls")]
pub mod tls;
mod world;

// Not every test crate that includes this module builds a `World`.
#[allow(unused_imports)]
pub use world::*;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine::codec::{self, Header};
#[cfg(feature = "tcp")]
use coap_engine::StreamCommand;
use coap_engine::{
    Config, Datagram, Duration, Endpoint, Error, Event, IncomingRequestId, Instant, Keepalive,
    RequestId, SendErrorKind, StreamClosed, Transmit, TransmitId, Transport,
};

// ---------------------------------------------------------------------------------------------
// PRNG

/// SplitMix64: tiny, fast, and good enough to drive a network model.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A duration uniform in `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_micros(self.range(lo.as_micros(), hi.as_micros()))
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Derives an independent seed (for an engine, a sub-generator, ...) from a parent seed.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

// ---------------------------------------------------------------------------------------------
// Small helpers for tests

/// `127.0.0.1:port`: only a label.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `[::1]:port`: only a label.
pub fn addr6(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
}

/// Node `i` of a mesh whose first `n_servers` nodes are servers: whether it is a server, and
/// its address (servers at `127.0.0.1:5683+i`, clients at `[::1]:40000+i`).
pub fn mesh_node(i: usize, n_servers: usize) -> (bool, SocketAddr) {
    if i < n_servers {
        (true, addr(5683 + i as u16))
    } else {
        (false, addr6(40_000 + i as u16))
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub fn at_secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

pub fn at_millis(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// The end of time, for windows that never close.
pub const FOREVER: Instant = Instant::from_micros(u64::MAX);

/// A GET request of the given type with a Uri-Path and a payload (the payload is a handy
/// unique marker to recognise a request at the server).
pub fn get(mtype: MessageType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(mtype);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.payload = payload.to_vec();
    p
}

/// A Confirmable GET.
pub fn con_get(path: &str, payload: &[u8]) -> Packet {
    get(MessageType::Confirmable, path, payload)
}

/// A Non-confirmable GET.
pub fn non_get(path: &str, payload: &[u8]) -> Packet {
    get(MessageType::NonConfirmable, path, payload)
}

/// A 2.05 Content response.
pub fn content(payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.payload = payload.to_vec();
    p
}

/// Keepalive of (`interval`, `timeout`).
pub fn keepalive(interval: Duration, timeout: Duration) -> Keepalive {
    Keepalive { interval, timeout }
}

// ---------------------------------------------------------------------------------------------
// Network model

/// One direction of a link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay uniform in `0..=jitter`, drawn per copy (so datagrams reorder).
    pub jitter: Duration,
    /// Probability a datagram is silently lost.
    pub loss: f64,
    /// Probability a delivered datagram is delivered twice (each copy with its own jitter).
    pub duplicate: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// A half-open window of virtual time, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(start: Instant, end: Instant) -> Self {
        Window { start, end }
    }
    /// From `start` on, forever.
    pub fn from(start: Instant) -> Self {
        Window {
            start,
            end: FOREVER,
        }
    }
    pub fn contains(&self, t: Instant) -> bool {
        self.start <= t && t < self.end
    }
}

#[derive(Clone, Copy, Debug)]
struct Cut {
    from: Option<SocketAddr>,
    to: Option<SocketAddr>,
    window: Window,
}

#[derive(Clone, Copy, Debug)]
struct FailRule {
    from: SocketAddr,
    to: Option<SocketAddr>,
    window: Window,
    kind: SendErrorKind,
}

/// What became of one transmit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Handed to the network: `copies` deliveries were scheduled (2 if duplicated).
    Sent { copies: u8 },
    /// Lost by the link's loss probability.
    Lost,
    /// Dropped by a cut link.
    Cut,
    /// Dropped by the test's filter.
    Filtered,
    /// The send failed (injected) and the engine was told.
    Failed(SendErrorKind),
}

/// One transmit an endpoint produced.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Instant,
    pub seq: u64,
    pub id: TransmitId,
    pub to: SocketAddr,
    pub bytes: Datagram,
    pub header: Option<Header>,
    pub fate: Fate,
}

/// One datagram delivered to a node.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub seq: u64,
    pub from: SocketAddr,
    pub bytes: Bytes,
    pub header: Option<Header>,
}

/// One event an endpoint emitted, with the virtual instant it was drained at.
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub seq: u64,
    pub event: Event,
}

/// What a filter sees of a datagram about to enter the network.
#[derive(Debug)]
pub struct DatagramInfo<'a> {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub header: Option<Header>,
}

impl DatagramInfo<'_> {
    pub fn mtype(&self) -> Option<MessageType> {
        self.header.map(|h| h.mtype)
    }
    pub fn is_request(&self) -> bool {
        self.header.is_some_and(|h| h.is_request())
    }
}

/// A filter's verdict on a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the network model decide (delay, loss, ...).
    Pass,
    /// Drop it silently.
    Drop,
}

pub type Hook = Box<dyn FnMut(&mut Sim, NodeId, &Event)>;
pub type RawHook = Box<dyn FnMut(&mut Sim, SocketAddr, SocketAddr, &[u8])>;
pub type Filter = Box<dyn FnMut(&DatagramInfo<'_>) -> Verdict>;
type Action = Box<dyn FnOnce(&mut Sim)>;

pub type NodeId = usize;

struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Bytes,
    /// On a stream link (CoAP over TCP), what arrives; plain bytes otherwise.
    stream: StreamEvent,
}

/// What travels on a stream link besides bytes: the connection's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamEvent {
    /// Bytes (a datagram, or a chunk of the stream).
    Data,
    /// A connection request arrives at the server, which accepts it.
    Open,
    /// The server accepted: the client learns its connection is open.
    Opened,
    /// The connection could not be opened.
    Refused(SendErrorKind),
    /// The other side closed (end of stream) or reset it.
    Closed(StreamClosed),
}

/// One simulated endpoint and everything recorded about it.
pub struct Node {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
    pub events: Vec<Logged>,
    pub sent: Vec<Sent>,
    pub received: Vec<Received>,
    hook: Option<Hook>,
}

struct RawNode {
    inbox: Vec<Received>,
    hook: Option<RawHook>,
}

/// How many consecutive steps may happen at one virtual instant before the simulator calls
/// it a busy loop (a dead link must never make an engine spin).
const BUSY_LOOP_LIMIT: u64 = 20_000;

pub struct Sim {
    seed: u64,
    now: Instant,
    rng: SplitMix64,
    seq: u64,
    nodes: Vec<Node>,
    by_addr: BTreeMap<SocketAddr, NodeId>,
    raw: BTreeMap<SocketAddr, RawNode>,
    default_link: Link,
    links: BTreeMap<(SocketAddr, SocketAddr), Link>,
    cuts: Vec<Cut>,
    failures: Vec<FailRule>,
    filter: Option<Filter>,
    flight: BTreeMap<(Instant, u64), InFlight>,
    actions: BTreeMap<(Instant, u64), Action>,
    pending: VecDeque<(NodeId, Event)>,
    dispatching: bool,
    same_instant_steps: u64,
    /// Steps taken (for diagnostics and budget checks).
    pub steps: u64,
    /// Datagrams delivered to an address nobody lives at.
    pub blackholed: u64,
    /// Print every transmit, delivery and event to stderr.
    pub trace: bool,
    /// Also report successful sends (`handle_send_result(.., Ok(()))`), which adapters may
    /// do but need not.
    pub report_ok: bool,
    /// The wall-clock time (Unix seconds at the virtual epoch) endpoints are told when they
    /// are added, as an adapter does at start (`Endpoint::set_unix_time`); `None` tells them
    /// nothing.
    pub wall_clock: Option<u64>,
}

impl Sim {
    /// An empty simulation; every random choice (network and engines) derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Sim {
            seed,
            now: Instant::ZERO,
            rng: SplitMix64::new(derive_seed(seed, u64::MAX)),
            seq: 0,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            raw: BTreeMap::new(),
            default_link: Link::default(),
            links: BTreeMap::new(),
            cuts: Vec::new(),
            failures: Vec::new(),
            filter: None,
            flight: BTreeMap::new(),
            actions: BTreeMap::new(),
            pending: VecDeque::new(),
            dispatching: false,
            same_instant_steps: 0,
            steps: 0,
            blackholed: 0,
            trace: false,
            report_ok: false,
            wall_clock: Some(1_800_000_000),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// The network's own generator (for workloads that want to share the sim's randomness).
    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh sequence number, to place a test's own records among the simulator's.
    pub fn mark(&mut self) -> u64 {
        self.next_seq()
    }

    // ------------------------------------------------------------------ topology

    /// Adds an endpoint at `addr`; its engine seed derives from the sim seed and its index.
    pub fn add_endpoint(&mut self, addr: SocketAddr, config: Config) -> NodeId {
        assert!(
            !self.by_addr.contains_key(&addr) && !self.raw.contains_key(&addr),
            "{addr} taken"
        );
        let id = self.nodes.len();
        let mut endpoint =
            Endpoint::new(config, derive_seed(self.seed, id as u64)).expect("valid config");
        if let Some(unix) = self.wall_clock {
            endpoint.set_unix_time(self.now, unix + self.now.as_micros() / 1_000_000);
        }
        self.nodes.push(Node {
            addr,
            endpoint,
            events: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
            hook: None,
        });
        self.by_addr.insert(addr, id);
        id
    }

    /// Adds a raw node: datagrams to it are recorded (and passed to its hook, if any) but no
    /// engine processes them. A test can answer with [`Sim::inject`].
    pub fn add_raw(&mut self, addr: SocketAddr) {
        assert!(!self.by_addr.contains_key(&addr), "{addr} taken");
        self.raw.insert(
            addr,
            RawNode {
                inbox: Vec::new(),
                hook: None,
            },
        );
    }

    pub fn set_raw_hook(
        &mut self,
        addr: SocketAddr,
        hook: impl FnMut(&mut Sim, SocketAddr, SocketAddr, &[u8]) + 'static,
    ) {
        self.raw.get_mut(&addr).expect("raw node").hook = Some(Box::new(hook));
    }

    pub fn raw_inbox(&self, addr: SocketAddr) -> &[Received] {
        &self.raw[&addr].inbox
    }

    /// The application of `node`: called once per event, after the drain, in order.
    pub fn set_app(&mut self, node: NodeId, hook: impl FnMut(&mut Sim, NodeId, &Event) + 'static) {
        self.nodes[node].hook = Some(Box::new(hook));
    }

    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[node]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn addr(&self, node: NodeId) -> SocketAddr {
        self.nodes[node].addr
    }

    pub fn endpoint(&self, node: NodeId) -> &Endpoint {
        &self.nodes[node].endpoint
    }

    pub fn events(&self, node: NodeId) -> &[Logged] {
        &self.nodes[node].events
    }

    pub fn sent(&self, node: NodeId) -> &[Sent] {
        &self.nodes[node].sent
    }

    pub fn received(&self, node: NodeId) -> &[Received] {
        &self.nodes[node].received
    }

    /// The virtual time of the last datagram `node` actually received from `peer`.
    pub fn last_heard(&self, node: NodeId, peer: SocketAddr) -> Option<Instant> {
        self.nodes[node]
            .received
            .iter()
            .rev()
            .find(|r| r.from == peer)
            .map(|r| r.at)
    }

    // ------------------------------------------------------------------ network settings

    /// The link used wherever no per-link setting applies.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// The link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: SocketAddr, to: SocketAddr, link: Link) {
        self.links.insert((from, to), link);
    }

    /// Both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: SocketAddr, b: SocketAddr, link: Link) {
        self.set_link(a, b, link);
        self.set_link(b, a, link);
    }

    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> Link {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Cuts one direction (`None` = any address) for `window`: datagrams sent, or due for
    /// delivery, inside it vanish silently.
    pub fn cut(&mut self, from: Option<SocketAddr>, to: Option<SocketAddr>, window: Window) {
        self.cuts.push(Cut { from, to, window });
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&mut self, a: SocketAddr, b: SocketAddr, window: Window) {
        self.cut(Some(a), Some(b), window);
        self.cut(Some(b), Some(a), window);
    }

    /// Cuts everything to and from `a`.
    pub fn isolate(&mut self, a: SocketAddr, window: Window) {
        self.cut(Some(a), None, window);
        self.cut(None, Some(a), window);
    }

    /// Makes sends from `from` (to `to`, or to anyone) fail with `kind` during `window`: the
    /// datagram is not delivered and the engine gets `handle_send_result(now, id, Err(kind))`
    /// right after it polled the transmit.
    pub fn fail_sends(
        &mut self,
        from: SocketAddr,
        to: Option<SocketAddr>,
        window: Window,
        kind: SendErrorKind,
    ) {
        self.failures.push(FailRule {
            from,
            to,
            window,
            kind,
        });
    }

    /// Installs a filter consulted for every datagram before the network model.
    pub fn set_filter(&mut self, filter: impl FnMut(&DatagramInfo<'_>) -> Verdict + 'static) {
        self.filter = Some(Box::new(filter));
    }

    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    fn is_cut(&self, from: SocketAddr, to: SocketAddr, t: Instant) -> bool {
        self.cuts.iter().any(|c| {
            c.window.contains(t) && c.from.is_none_or(|f| f == from) && c.to.is_none_or(|x| x == to)
        })
    }

    /// Puts a raw datagram on the wire from `from` to `to`, delivered after `delay` (no loss,
    /// no cut: the test decided it arrives).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], delay: Duration) {
        let seq = self.next_seq();
        let at = self.now + delay;
        self.flight.insert(
            (at, seq),
            InFlight {
                from,
                to,
                bytes: Bytes::Raw(Rc::from(bytes)),
                stream: StreamEvent::Data,
            },
        );
    }

    // ------------------------------------------------------------------ the application

    /// Runs `action` at virtual instant `t` (or now, if `t` has passed).
    pub fn at(&mut self, t: Instant, action: impl FnOnce(&mut Sim) + 'static) {
        let seq = self.next_seq();
        self.actions
            .insert((t.max(self.now), seq), Box::new(action));
    }

    /// Any input to an endpoint, followed by the drain (and the application's reactions).
    pub fn input<R>(&mut self, node: NodeId, f: impl FnOnce(&mut Endpoint, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[node].endpoint, now);
        self.drain(node);
        self.dispatch();
        r
    }

    #[cfg(feature = "client")]
    pub fn request(
        &mut self,
        node: NodeId,
        peer: SocketAddr,
        packet: &Packet,
    ) -> Result<RequestId, Error> {
        self.input(node, |ep, now| ep.request(now, peer, packet))
    }

    #[cfg(feature = "server")]
    pub fn respond(
        &mut self,
        node: NodeId,
        id: IncomingRequestId,
        packet: &Packet,
    ) -> Result<(), Error> {
        self.input(node, |ep, now| ep.respond(now, id, packet))
    }

    pub fn ping(&mut self, node: NodeId, peer: SocketAddr) -> Result<RequestId, Error> {
        self.input(node, |ep, now| ep.ping(now, peer))
    }

    pub fn cancel(&mut self, node: NodeId, id: RequestId) -> Result<(), Error> {
        self.input(node, |ep, now| ep.cancel(now, id))
    }

    pub fn open_session(&mut self, node: NodeId, peer: SocketAddr) -> Result<(), Error> {
        self.input(node, |ep, now| ep.open_session(now, peer))
    }

    pub fn close_session(&mut self, node: NodeId, peer: SocketAddr) -> Result<(), Error> {
        self.input(node, |ep, now| ep.close_session(now, peer))
    }

    pub fn set_keepalive(
        &mut self,
        node: NodeId,
        peer: SocketAddr,
        k: Option<Keepalive>,
    ) -> Result<(), Error> {
        self.input(node, |ep, now| ep.set_keepalive(now, peer, k))
    }

    // ------------------------------------------------------------------ the adapter

    /// The drain rule: transmits until `None` (each routed at once, failures reported at
    /// once), then events until `None`. `poll_timeout` is read afterwards, by `next_time`.
    fn drain(&mut self, node: NodeId) {
        while let Some(t) = self.nodes[node].endpoint.poll_transmit() {
            if self.is_stream(node) {
                self.write(node, t);
            } else {
                self.route(node, t);
            }
        }
        #[cfg(feature = "tcp")]
        while let Some(c) = self.nodes[node].endpoint.poll_stream_command() {
            self.stream_command(node, c);
        }
        #[cfg(not(feature = "tcp"))]
        if let Some(c) = self.nodes[node].endpoint.poll_stream_command() {
            unreachable!("a stream command without feature tcp: {c:?}");
        }
        while let Some(event) = self.nodes[node].endpoint.poll_event() {
            let seq = self.next_seq();
            if self.trace {
                eprintln!(
                    "{:?} #{node} {}: {event:?}",
                    self.now, self.nodes[node].addr
                );
            }
            self.nodes[node].events.push(Logged {
                at: self.now,
                seq,
                event: event.clone(),
            });
            self.pending.push_back((node, event));
        }
        assert!(
            !self.nodes[node].endpoint.has_transmits(),
            "polling events produced transmits"
        );
    }

    /// Hands queued events to the applications; their calls are inputs and are drained in turn.
    fn dispatch(&mut self) {
        if self.dispatching {
            return;
        }
        self.dispatching = true;
        while let Some((node, event)) = self.pending.pop_front() {
            if let Some(mut hook) = self.nodes[node].hook.take() {
                hook(self, node, &event);
                if self.nodes[node].hook.is_none() {
                    self.nodes[node].hook = Some(hook);
                }
            }
        }
        self.dispatching = false;
    }

    fn route(&mut self, node: NodeId, t: Transmit) {
        let now = self.now;
        let from = self.nodes[node].addr;
        let to = t.destination;
        let header = codec::parse_header(&t.payload).ok();
        let seq = self.next_seq();
        let failure = self
            .failures
            .iter()
            .find(|r| r.from == from && r.to.is_none_or(|x| x == to) && r.window.contains(now))
            .map(|r| r.kind);
        let fate = if let Some(kind) = failure {
            Fate::Failed(kind)
        } else if self.filter.as_mut().is_some_and(|f| {
            f(&DatagramInfo {
                at: now,
                from,
                to,
                bytes: &t.payload,
                header,
            }) == Verdict::Drop
        }) {
            Fate::Filtered
        } else if self.is_cut(from, to, now) {
            Fate::Cut
        } else {
            let link = self.link(from, to);
            if self.rng.chance(link.loss) {
                Fate::Lost
            } else {
                let copies = if self.rng.chance(link.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let jitter = self.rng.range(0, link.jitter.as_micros());
                    let at = now + link.delay + Duration::from_micros(jitter);
                    let s = self.next_seq();
                    self.flight.insert(
                        (at, s),
                        InFlight {
                            from,
                            to,
                            bytes: Bytes::Engine(t.payload.clone()),
                            stream: StreamEvent::Data,
                        },
                    );
                }
                Fate::Sent { copies }
            }
        };
        if self.trace {
            eprintln!(
                "{now:?} #{node} {from} -> {to}: {} {header:?} {fate:?}",
                t.id.as_u64()
            );
        }
        self.nodes[node].sent.push(Sent {
            at: now,
            seq,
            id: t.id,
            to,
            bytes: t.payload,
            header,
            fate,
        });
        match fate {
            // A real adapter learns of the failure from the socket call it just made.
            Fate::Failed(kind) => {
                self.nodes[node]
                    .endpoint
                    .handle_send_result(now, t.id, Err(kind))
            }
            _ if self.report_ok => self.nodes[node]
                .endpoint
                .handle_send_result(now, t.id, Ok(())),
            _ => {}
        }
    }

    fn deliver(&mut self, d: InFlight) {
        if d.stream != StreamEvent::Data {
            #[cfg(feature = "tcp")]
            self.deliver_stream_event(d);
            #[cfg(not(feature = "tcp"))]
            unreachable!("a stream event without feature tcp: {:?}", d.stream);
            #[cfg(feature = "tcp")]
            return;
        }
        let now = self.now;
        let to_stream = self.by_addr.get(&d.to).is_some_and(|&n| self.is_stream(n));
        if to_stream && self.is_cut(d.from, d.to, now) {
            // A stream holds its bytes through a cut; they arrive when it ends, in order.
            if let Some(at) = self.uncut(d.from, d.to, now) {
                let s = self.next_seq();
                self.flight.insert((at, s), d);
            }
            return;
        }
        if self.is_cut(d.from, d.to, now) {
            if self.trace {
                eprintln!("{now:?} {} -> {}: cut in flight", d.from, d.to);
            }
            return;
        }
        let seq = self.next_seq();
        let header = codec::parse_header(&d.bytes).ok();
        let rec = Received {
            at: now,
            seq,
            from: d.from,
            bytes: d.bytes.clone(),
            header,
        };
        if let Some(&node) = self.by_addr.get(&d.to) {
            if self.trace {
                eprintln!("{now:?} #{node} {} <- {}: {header:?}", d.to, d.from);
            }
            if self.nodes[node]
                .endpoint
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                // What the engine would do first anyway; doing it as its own input makes the
                // log show timer-driven events (a session failing now) before this delivery.
                self.input(node, |ep, now| ep.handle_timeout(now));
            }
            let seq = self.next_seq();
            let rec = Received { seq, ..rec };
            self.nodes[node].received.push(rec);
            self.nodes[node]
                .endpoint
                .handle_datagram(now, d.from, &d.bytes);
            self.drain(node);
            self.dispatch();
        } else if let Some(raw) = self.raw.get_mut(&d.to) {
            raw.inbox.push(rec);
            if let Some(mut hook) = raw.hook.take() {
                hook(self, d.to, d.from, &d.bytes);
                if let Some(raw) = self.raw.get_mut(&d.to) {
                    raw.hook.get_or_insert(hook);
                }
            }
            self.dispatch();
        } else {
            self.blackholed += 1;
        }
    }

    // ------------------------------------------------------------------ virtual time

    /// The earliest instant anything is due: a delivery, an action, an endpoint's deadline.
    pub fn next_time(&self) -> Option<Instant> {
        let mut next = self.flight.keys().next().map(|k| k.0);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(k) = self.actions.keys().next() {
            consider(k.0);
        }
        for n in &self.nodes {
            if let Some(t) = n.endpoint.poll_timeout() {
                consider(t);
            }
        }
        next
    }

    /// Advances to the next instant anything is due and handles everything due by then:
    /// endpoint timeouts, deliveries (in order), actions. Returns false if nothing is due ever.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_time() else {
            return false;
        };
        let t = t.max(self.now);
        if t == self.now {
            self.same_instant_steps += 1;
            assert!(
                self.same_instant_steps < BUSY_LOOP_LIMIT,
                "seed {}: busy loop: {} steps at {:?} without time advancing",
                self.seed,
                self.same_instant_steps,
                self.now
            );
        } else {
            self.same_instant_steps = 0;
        }
        self.now = t;
        self.steps += 1;
        for node in 0..self.nodes.len() {
            if self.nodes[node]
                .endpoint
                .poll_timeout()
                .is_some_and(|d| d <= t)
            {
                self.input(node, |ep, now| ep.handle_timeout(now));
            }
        }
        while let Some(entry) = self.flight.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let d = entry.remove();
            self.deliver(d);
        }
        while let Some(entry) = self.actions.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let action = entry.remove();
            action(self);
            self.dispatch();
        }
        true
    }

    /// Runs everything due up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.next_time().is_some_and(|n| n <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until nothing is due within `horizon` of the current time, or `limit` is reached;
    /// returns the time it stopped at.
    pub fn run_until_quiet(&mut self, horizon: Duration, limit: Instant) -> Instant {
        while let Some(n) = self.next_time() {
            if n > self.now + horizon || n > limit {
                break;
            }
            self.step();
        }
        self.now
    }

    /// Deliveries still in the network.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }
}

/// Bytes on the wire: the engine's own `Datagram` (shared, no copy) or raw injected bytes.
#[derive(Clone, Debug)]
pub enum Bytes {
    Engine(Datagram),
    Raw(Rc<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Engine(d) => d,
            Bytes::Raw(r) => r,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream links (CoAP over TCP)
//
// A stream link is reliable and ordered: a write is delivered after the link's delay, never
// before what was written earlier on the same connection, and cut into chunks of random
// sizes (a peer must reassemble frames across reads). While a link is cut, what is written
// waits and arrives when the cut ends (a stalled TCP connection); a cut that never ends is
// a peer that is gone. Sends from a node made to fail fail its writes. Connections are
// opened, accepted and closed as the engines ask.

impl Sim {
    fn is_stream(&self, node: NodeId) -> bool {
        self.nodes[node].endpoint.config().transport == Transport::Tcp
    }

    /// The first instant from `t` on at which `from → to` is not cut (None: never).
    fn uncut(&self, from: SocketAddr, to: SocketAddr, mut t: Instant) -> Option<Instant> {
        // Cuts can chain; each pass moves past one.
        for _ in 0..=self.cuts.len() {
            let Some(c) = self.cuts.iter().find(|c| {
                c.window.contains(t)
                    && c.from.is_none_or(|f| f == from)
                    && c.to.is_none_or(|x| x == to)
            }) else {
                return Some(t);
            };
            if c.window.end == FOREVER {
                return None;
            }
            t = c.window.end;
        }
        Some(t)
    }

    /// Schedules `what` on the connection `from → to`, in order after what is already on it.
    fn on_stream(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        what: StreamEvent,
        bytes: Bytes,
    ) -> bool {
        let link = self.link(from, to);
        let Some(at) = self.uncut(from, to, self.now + link.delay) else {
            return false;
        };
        let last = self
            .flight
            .iter()
            .filter(|(_, f)| f.from == from && f.to == to)
            .map(|(k, _)| k.0)
            .max()
            .unwrap_or(at);
        let at = at.max(last);
        let s = self.next_seq();
        self.flight.insert(
            (at, s),
            InFlight {
                from,
                to,
                bytes,
                stream: what,
            },
        );
        true
    }

    /// A write on a connection: delivered in order, in random chunks.
    fn write(&mut self, node: NodeId, t: Transmit) {
        let now = self.now;
        let from = self.nodes[node].addr;
        let to = t.destination;
        let seq = self.next_seq();
        let failure = self
            .failures
            .iter()
            .find(|r| r.from == from && r.to.is_none_or(|x| x == to) && r.window.contains(now))
            .map(|r| r.kind);
        let fate = match failure {
            Some(kind) => Fate::Failed(kind),
            None => {
                let bytes: &[u8] = &t.payload;
                let mut at = 0;
                while at < bytes.len() {
                    let chunk = self.rng.range(1, (bytes.len() - at) as u64) as usize;
                    let piece = Bytes::Raw(Rc::from(&bytes[at..at + chunk]));
                    self.on_stream(from, to, StreamEvent::Data, piece);
                    at += chunk;
                }
                Fate::Sent { copies: 1 }
            }
        };
        if self.trace {
            eprintln!(
                "{now:?} #{node} {from} => {to}: {} bytes {fate:?}",
                t.payload.len()
            );
        }
        self.nodes[node].sent.push(Sent {
            at: now,
            seq,
            id: t.id,
            to,
            bytes: t.payload,
            header: None,
            fate,
        });
        // Stream adapters report every write, done or failed.
        let result = match fate {
            Fate::Failed(kind) => Err(kind),
            _ => Ok(()),
        };
        self.nodes[node]
            .endpoint
            .handle_send_result(now, t.id, result);
    }

    #[cfg(feature = "tcp")]
    fn stream_command(&mut self, node: NodeId, c: StreamCommand) {
        let from = self.nodes[node].addr;
        if self.trace {
            eprintln!("{:?} #{node} {from}: {c:?}", self.now);
        }
        let empty = || Bytes::Raw(Rc::from(&[][..]));
        match c {
            StreamCommand::Connect(to) => {
                let failing = self
                    .failures
                    .iter()
                    .find(|r| {
                        r.from == from
                            && r.to.is_none_or(|x| x == to)
                            && r.window.contains(self.now)
                    })
                    .map(|r| r.kind);
                let reachable = self.by_addr.get(&to).is_some_and(|&n| self.is_stream(n));
                match failing {
                    Some(kind) => {
                        self.nodes[node]
                            .endpoint
                            .handle_connect_failed(self.now, to, kind);
                        self.drain(node);
                    }
                    None if !reachable => {
                        let at = self.now + self.link(from, to).delay * 2;
                        let s = self.next_seq();
                        self.flight.insert(
                            (at, s),
                            InFlight {
                                from: to,
                                to: from,
                                bytes: empty(),
                                stream: StreamEvent::Refused(SendErrorKind::Refused),
                            },
                        );
                    }
                    None => {
                        self.on_stream(from, to, StreamEvent::Open, empty());
                    }
                }
            }
            StreamCommand::Close(to) => {
                self.on_stream(from, to, StreamEvent::Closed(StreamClosed::Eof), empty());
            }
            _ => {}
        }
    }

    #[cfg(feature = "tcp")]
    fn deliver_stream_event(&mut self, d: InFlight) {
        let Some(&node) = self.by_addr.get(&d.to) else {
            return;
        };
        let now = self.now;
        if self.trace {
            eprintln!("{now:?} #{node} {} <= {}: {:?}", d.to, d.from, d.stream);
        }
        match d.stream {
            StreamEvent::Open => {
                let accepted = self.nodes[node].endpoint.handle_accepted(now, d.from);
                // The client learns the connection is open before any byte on it arrives.
                let reply = match accepted {
                    Ok(()) => StreamEvent::Opened,
                    Err(_) => StreamEvent::Refused(SendErrorKind::Refused),
                };
                self.on_stream(d.to, d.from, reply, Bytes::Raw(Rc::from(&[][..])));
            }
            StreamEvent::Opened => self.nodes[node].endpoint.handle_connected(now, d.from),
            StreamEvent::Refused(kind) => self.nodes[node]
                .endpoint
                .handle_connect_failed(now, d.from, kind),
            StreamEvent::Closed(how) => self.nodes[node].endpoint.handle_closed(now, d.from, how),
            StreamEvent::Data => {}
        }
        self.drain(node);
        self.dispatch();
    }

    /// Resets the connection between `a` and `b` now: both sides learn it, and what was in
    /// flight on it is lost (a later connection between the same addresses starts clean).
    #[cfg(feature = "tcp")]
    pub fn reset_connection(&mut self, a: SocketAddr, b: SocketAddr) {
        self.drop_in_flight(a, b);
        for (x, y) in [(a, b), (b, a)] {
            if let Some(&node) = self.by_addr.get(&x) {
                self.input(node, |ep, now| {
                    ep.handle_closed(now, y, StreamClosed::Reset)
                });
            }
        }
    }
}

impl Sim {
    /// `a` loses its connection with `b` (a crash, a NAT that forgot it) and `b` is not told:
    /// the connection is half-open. `b` writes on into the void until something (its
    /// keepalive) notices.
    #[cfg(feature = "tcp")]
    pub fn lose_connection(&mut self, a: SocketAddr, b: SocketAddr) {
        self.drop_in_flight(a, b);
        if let Some(&node) = self.by_addr.get(&a) {
            self.input(node, |ep, now| {
                ep.handle_closed(now, b, StreamClosed::Reset)
            });
        }
    }

    fn drop_in_flight(&mut self, a: SocketAddr, b: SocketAddr) {
        self.flight
            .retain(|_, f| !((f.from == a && f.to == b) || (f.from == b && f.to == a)));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the records

/// The request or ping a terminal event ends, if `event` is terminal.
pub fn terminal_of(event: &Event) -> Option<RequestId> {
    match event {
        Event::Response { id, .. }
        | Event::RequestFailed { id, .. }
        | Event::Pong { id, .. }
        | Event::PingFailed { id, .. } => Some(*id),
        _ => None,
    }
}

impl Sim {
    /// Every terminal event `node` emitted for `id`.
    pub fn terminals(&self, node: NodeId, id: RequestId) -> Vec<&Logged> {
        self.events(node)
            .iter()
            .filter(|l| terminal_of(&l.event) == Some(id))
            .collect()
    }

    /// The one terminal event for `id`; panics (with the log) unless there is exactly one.
    pub fn terminal(&self, node: NodeId, id: RequestId) -> &Logged {
        let t = self.terminals(node, id);
        assert_eq!(
            t.len(),
            1,
            "request {id:?} must end exactly once; events: {:#?}",
            self.events(node)
        );
        t[0]
    }

    /// The requests `node`'s application was given: (when, id, request).
    pub fn requests_seen(&self, node: NodeId) -> Vec<(Instant, IncomingRequestId, &Packet)> {
        self.events(node)
            .iter()
            .filter_map(|l| match &l.event {
                Event::Request { id, request, .. } => Some((l.at, *id, request)),
                _ => None,
            })
            .collect()
    }

    /// Events of `node` matching `pred`.
    pub fn events_where(&self, node: NodeId, pred: impl Fn(&Event) -> bool) -> Vec<&Logged> {
        self.events(node)
            .iter()
            .filter(|l| pred(&l.event))
            .collect()
    }

    /// Transmits from `node` to `peer`.
    pub fn sent_to(&self, node: NodeId, peer: SocketAddr) -> Vec<&Sent> {
        self.sent(node).iter().filter(|s| s.to == peer).collect()
    }
}

impl Sent {
    pub fn mtype(&self) -> MessageType {
        self.header.expect("engine sends valid headers").mtype
    }
    pub fn mid(&self) -> u16 {
        self.header.expect("engine sends valid headers").message_id
    }
    pub fn code(&self) -> u8 {
        self.header.expect("engine sends valid headers").code
    }
    pub fn is_empty_con(&self) -> bool {
        self.mtype() == MessageType::Confirmable && self.code() == 0
    }
}
