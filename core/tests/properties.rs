//! Invariants over thousands of seeded random worlds, run on the deterministic simulator.
//!
//! Each seed builds a world: one or two servers, one to three clients, random transmission
//! parameters and limits, keepalive on some endpoints and sessions, a lossy, duplicating,
//! reordering network with occasional partitions and injected send failures of every kind,
//! and a random workload (CON/NON requests, pings, cancels, closes) while server applications
//! answer at once, late or never. After the workload stops, time runs past every lifetime.
//! Then the recorded run is checked against the engine's promises:
//!
//! 1. every request and ping ends in exactly one terminal event (never two, never none), of
//!    the right kind, for the right peer, carrying the right answer;
//! 2. a request reaches the server application at most once, even across sessions;
//! 3. the liveness bound: a session with keepalive is never alive after `interval + timeout`
//!    of silence (silence measured from the deliveries the simulator made), a keepalive failure
//!    happens exactly at that bound, never later, and an early `Unreachable` failure only after
//!    that many consecutive unreachable sends;
//! 4. state is freed: no peer-opened session survives, every footprint is empty, no timer is
//!    left and nothing is in flight.
//!
//! Replay one seed: `SIM_SEED=1234 cargo test -p coap-engine --test properties replay -- --nocapture`
//! (add `SIM_TRACE=1` for a full trace). Run more seeds: `SIM_SEEDS=100000`.
#![cfg(all(feature = "client", feature = "server"))]

mod sim;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use coap_engine::coap_lite::{MessageClass, MessageType, ResponseType};
use coap_engine::{
    CloseReason, Config, Duration, Error, Event, ExchangeError, FailureReason, Instant, Keepalive,
    Limits, RequestId, SendErrorKind, SessionFootprint, TransmissionParameters,
};
use sim::*;

const DEFAULT_SEEDS: u64 = 10_000;
/// Requests and pings are issued in `[0, WORKLOAD)`.
const WORKLOAD: Duration = Duration::from_secs(60);

// =============================================================================================
// The world

#[derive(Clone, Debug)]
enum Issued {
    Request { peer: SocketAddr, marker: Vec<u8> },
    Ping { peer: SocketAddr },
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Con,
    Non,
    Ping,
    Cancel(u64),
    Close,
    OpenWithKeepalive(Keepalive),
}

/// A `cancel` call: by whom, of what, when (and sequence number), with its result.
struct Cancel {
    node: NodeId,
    id: RequestId,
    at: Instant,
    seq: u64,
    result: Result<(), Error>,
}

/// What the workload did, with sequence numbers to place it among the simulator's records.
#[derive(Default)]
struct Journal {
    issued: BTreeMap<(NodeId, RequestId), (Instant, u64, Issued)>,
    refused: Vec<(NodeId, Error)>,
    cancels: Vec<Cancel>,
    keepalive_set: Vec<(NodeId, SocketAddr, Instant, u64, Option<Keepalive>)>,
    closes: Vec<(NodeId, SocketAddr, Instant)>,
    respond_errors: Vec<(NodeId, Error)>,
}

struct World {
    sim: Sim,
    clients: Vec<NodeId>,
    servers: Vec<NodeId>,
    configs: Vec<Config>,
    journal: Rc<RefCell<Journal>>,
    final_time: Instant,
    description: String,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    seeds: u64,
    requests: u64,
    pings: u64,
    refused: u64,
    responses: u64,
    request_failures: BTreeMap<String, u64>,
    pongs: u64,
    keepalive_failures: u64,
    unreachable_failures: u64,
    send_failures: u64,
    requests_seen: u64,
    redelivered_across_sessions: u64,
    steps: u64,
    transmits: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.requests += o.requests;
        self.pings += o.pings;
        self.refused += o.refused;
        self.responses += o.responses;
        for (k, v) in &o.request_failures {
            *self.request_failures.entry(k.clone()).or_default() += v;
        }
        self.pongs += o.pongs;
        self.keepalive_failures += o.keepalive_failures;
        self.unreachable_failures += o.unreachable_failures;
        self.send_failures += o.send_failures;
        self.requests_seen += o.requests_seen;
        self.redelivered_across_sessions += o.redelivered_across_sessions;
        self.steps += o.steps;
        self.transmits += o.transmits;
    }
}

fn random_keepalive(r: &mut SplitMix64) -> Keepalive {
    keepalive(
        millis(r.range(2_000, 30_000)),
        millis(r.range(1_000, 15_000)),
    )
}

fn build(seed: u64) -> World {
    let mut r = SplitMix64::new(derive_seed(seed, 0x5EED));
    let mut sim = Sim::new(seed);
    let mut description = String::new();

    // Transmission parameters are shared by all endpoints (mismatched lifetimes would make
    // "at most once" unpromisable).
    let ack_timeout = millis(r.pick(&[500, 1_000, 2_000]));
    let transmission = TransmissionParameters {
        ack_timeout,
        ack_random_factor_milli: r.pick(&[1_000, 1_250, 1_500, 2_000]),
        max_retransmit: r.range(0, 4) as u8,
        nstart: r.pick(&[1, 1, 1, 2, 3]),
        max_latency: secs(r.pick(&[2, 10, 100])),
        processing_delay: ack_timeout,
    };
    let lifetime = transmission.exchange_lifetime();
    let max_transmit_wait = transmission.max_transmit_wait();
    let base = Config {
        transmission,
        token_length: r.pick(&[0, 1, 4, 4, 8]),
        empty_ack_delay: millis(r.pick(&[200, 500, 1_000])),
        response_timeout: r.pick(&[max_transmit_wait, secs(5), secs(30)]),
        idle_timeout: lifetime + secs(r.range(0, 60)),
        ..Config::default()
    };
    let _ = write!(description, "{:?}; ", base);

    let n_servers = 1 + r.below(2) as usize;
    let n_clients = 1 + r.below(3) as usize;
    let mut configs = Vec::new();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut longest_bound = Duration::ZERO;
    for i in 0..n_servers + n_clients {
        let mut c = base.clone();
        if r.chance(0.4) {
            let k = random_keepalive(&mut r);
            longest_bound = longest_bound.max(k.bound());
            c.keepalive = Some(k);
        }
        if r.chance(0.2) {
            c.fail_after_unreachable = Some(r.range(1, 4) as u32);
        }
        c.limits = Limits {
            max_sessions: if r.chance(0.1) {
                r.range(1, 2) as usize
            } else {
                4096
            },
            max_queued_requests: r.pick(&[1, 2, 64]),
            max_pending_requests: r.pick(&[1, 2, 32]),
            max_exchanges: r.pick(&[1, 64, 64]),
            ..Limits::default()
        };
        let (server, a) = mesh_node(i, n_servers);
        let _ = write!(
            description,
            "\n  {} {a}: keepalive {:?}, fail_after_unreachable {:?}, {:?}",
            if server { "server" } else { "client" },
            c.keepalive,
            c.fail_after_unreachable,
            c.limits
        );
        let node = sim.add_endpoint(a, c.clone());
        configs.push(c);
        if server {
            servers.push(node);
        } else {
            clients.push(node);
        }
    }

    // The network.
    let random_link = |r: &mut SplitMix64| Link {
        delay: millis(r.range(1, 50)),
        jitter: millis(r.pick(&[0, 0, 5, 50, 200])),
        loss: r.unit() * r.pick(&[0.0, 0.1, 0.1, 0.5, 0.5]),
        duplicate: r.pick(&[0.0, 0.0, 0.05, 0.2]),
    };
    let link = random_link(&mut r);
    let _ = write!(description, "\n  network {link:?}");
    sim.set_default_link(link);
    for &c in &clients {
        for &s in &servers {
            if r.chance(0.3) {
                let link = random_link(&mut r);
                let (ca, sa) = (sim.addr(c), sim.addr(s));
                let _ = write!(description, "\n  link {ca}<->{sa} {link:?}");
                sim.set_link_both(ca, sa, link);
            }
        }
    }
    let all: Vec<NodeId> = servers.iter().chain(&clients).copied().collect();
    let horizon = WORKLOAD.as_millis() + 20_000;
    for _ in 0..r.below(3) {
        let a = sim.addr(r.pick(&all));
        let b = sim.addr(r.pick(&all));
        let start = at_millis(r.range(0, horizon));
        let window = Window::new(start, start + millis(r.range(1_000, 90_000)));
        match r.below(3) {
            0 if a != b => sim.partition(a, b, window),
            1 if a != b => sim.cut(Some(a), Some(b), window),
            _ => sim.isolate(a, window),
        }
        let _ = write!(description, "\n  cut around {a}/{b} {window:?}");
    }
    let kinds = [
        SendErrorKind::Unreachable,
        SendErrorKind::Refused,
        SendErrorKind::TooBig,
        SendErrorKind::Other,
    ];
    for _ in 0..r.below(3) {
        let from = sim.addr(r.pick(&all));
        let to = if r.chance(0.5) {
            Some(sim.addr(r.pick(&all)))
        } else {
            None
        };
        let start = at_millis(r.range(0, horizon));
        let window = Window::new(start, start + millis(r.range(1_000, 40_000)));
        let kind = r.pick(&kinds);
        sim.fail_sends(from, to, window, kind);
        let _ = write!(
            description,
            "\n  sends {from}->{to:?} fail {kind:?} {window:?}"
        );
    }
    sim.report_ok = r.chance(0.5);

    // The server applications: answer at once, late, or never.
    let journal = Rc::new(RefCell::new(Journal::default()));
    for &s in &servers {
        let mut app_rng = SplitMix64::new(derive_seed(seed, 1_000 + s as u64));
        let j = journal.clone();
        sim.set_app(s, move |sim, node, event| {
            let Event::Request { id, request, .. } = event else {
                return;
            };
            let response = content(&request.payload);
            let id = *id;
            match app_rng.below(100) {
                0..=49 => {
                    if let Err(e) = sim.respond(node, id, &response) {
                        j.borrow_mut().respond_errors.push((node, e));
                    }
                }
                50..=84 => {
                    let t = sim.now() + millis(app_rng.range(50, 4_000));
                    let j = j.clone();
                    sim.at(t, move |sim| {
                        if let Err(e) = sim.respond(node, id, &response) {
                            j.borrow_mut().respond_errors.push((node, e));
                        }
                    });
                }
                _ => {}
            }
        });
    }

    // The client workload.
    let server_addrs: Vec<SocketAddr> = servers.iter().map(|&s| sim.addr(s)).collect();
    for &c in &clients {
        for n in 0..r.range(1, 8) {
            let t = at_millis(r.range(0, WORKLOAD.as_millis() - 1));
            let peer = r.pick(&server_addrs);
            let op = match r.below(100) {
                0..=44 => Op::Con,
                45..=64 => Op::Non,
                65..=79 => Op::Ping,
                80..=91 => Op::Cancel(r.next_u64()),
                92..=95 => Op::Close,
                _ => Op::OpenWithKeepalive(random_keepalive(&mut r)),
            };
            if let Op::OpenWithKeepalive(k) = op {
                longest_bound = longest_bound.max(k.bound());
            }
            let marker = format!("c{c}#{n}").into_bytes();
            let j = journal.clone();
            let _ = write!(description, "\n  {t:?} client {c} {op:?} -> {peer}");
            sim.at(t, move |sim| run_op(sim, &j, c, peer, op, marker));
        }
    }

    // Workload over: switch client keepalive off so that probes stop and state can drain.
    let stop = Instant::ZERO + WORKLOAD + secs(5);
    {
        let (j, clients) = (journal.clone(), clients.clone());
        sim.at(stop, move |sim| {
            for &c in &clients {
                let peers: Vec<SocketAddr> = sim.endpoint(c).peers().collect();
                for peer in peers {
                    let seq = sim.mark();
                    if sim.set_keepalive(c, peer, None).is_ok() {
                        j.borrow_mut()
                            .keepalive_set
                            .push((c, peer, sim.now(), seq, None));
                    }
                }
            }
        });
    }
    // Past every lifetime: the last request may be first heard MAX_TRANSMIT_SPAN after the
    // workload, answered up to 4 s later, its separate response retransmitted for
    // MAX_TRANSMIT_WAIT; an unanswered one is kept EXCHANGE_LIFETIME; then idle_timeout.
    let final_time = stop
        + max_transmit_wait * 2
        + base.response_timeout
        + lifetime * 2
        + base.idle_timeout
        + longest_bound * 2
        + secs(60);
    World {
        sim,
        clients,
        servers,
        configs,
        journal,
        final_time,
        description,
    }
}

fn run_op(
    sim: &mut Sim,
    j: &Rc<RefCell<Journal>>,
    c: NodeId,
    peer: SocketAddr,
    op: Op,
    marker: Vec<u8>,
) {
    let now = sim.now();
    match op {
        Op::Con | Op::Non => {
            let confirmable = matches!(op, Op::Con);
            let mtype = if confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let seq = sim.mark();
            match sim.request(c, peer, &get(mtype, "p", &marker)) {
                Ok(id) => {
                    let issued = Issued::Request { peer, marker };
                    j.borrow_mut().issued.insert((c, id), (now, seq, issued));
                }
                Err(e) => j.borrow_mut().refused.push((c, e)),
            }
        }
        Op::Ping => {
            let seq = sim.mark();
            match sim.ping(c, peer) {
                Ok(id) => {
                    j.borrow_mut()
                        .issued
                        .insert((c, id), (now, seq, Issued::Ping { peer }));
                }
                Err(e) => j.borrow_mut().refused.push((c, e)),
            }
        }
        Op::Cancel(pick) => {
            let mine: Vec<RequestId> = j
                .borrow()
                .issued
                .keys()
                .filter(|k| k.0 == c)
                .map(|k| k.1)
                .collect();
            if mine.is_empty() {
                return;
            }
            let target = mine[(pick % mine.len() as u64) as usize];
            let seq = sim.mark();
            let result = sim.cancel(c, target);
            j.borrow_mut().cancels.push(Cancel {
                node: c,
                id: target,
                at: now,
                seq,
                result,
            });
        }
        Op::Close => {
            if sim.close_session(c, peer).is_ok() {
                j.borrow_mut().closes.push((c, peer, now));
            }
        }
        Op::OpenWithKeepalive(k) => {
            if sim.open_session(c, peer).is_err() {
                return;
            }
            let seq = sim.mark();
            if sim.set_keepalive(c, peer, Some(k)).is_ok() {
                j.borrow_mut()
                    .keepalive_set
                    .push((c, peer, now, seq, Some(k)));
            }
        }
    }
}

// =============================================================================================
// The checks

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn describe_error(e: &ExchangeError) -> String {
    let s = format!("{e:?}");
    s.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Invariant 1 (and the cancel contract): exactly one terminal event per request and ping.
fn check_terminals(w: &World, stats: &mut Stats) -> Result<(), String> {
    let j = w.journal.borrow();
    let token_ok = w.configs[0].token_length >= 4;
    let mut ended: BTreeMap<(NodeId, RequestId), (Instant, u64, &Event)> = BTreeMap::new();
    for node in 0..w.sim.nodes().len() {
        for l in w.sim.events(node) {
            let Some(id) = terminal_of(&l.event) else {
                continue;
            };
            let key = (node, id);
            let Some((issued_at, issued_seq, issued)) = j.issued.get(&key) else {
                return Err(format!(
                    "node {node}: terminal event for a request never issued: {l:?}"
                ));
            };
            ensure!(
                l.seq > *issued_seq && l.at >= *issued_at,
                "node {node}: {l:?} before its request"
            );
            if let Some(first) = ended.get(&key) {
                return Err(format!(
                    "node {node}: {id:?} ended twice: {:?} and {l:?}",
                    first.2
                ));
            }
            ended.insert(key, (l.at, l.seq, &l.event));
            match (issued, &l.event) {
                (
                    Issued::Request { peer, marker, .. },
                    Event::Response {
                        peer: p, response, ..
                    },
                ) => {
                    ensure!(
                        p == peer,
                        "{id:?}: response from {p}, request went to {peer}"
                    );
                    let code = response.header.code;
                    let answered = code == MessageClass::Response(ResponseType::Content);
                    let engine = code == MessageClass::Response(ResponseType::ServiceUnavailable);
                    ensure!(
                        answered || engine,
                        "{id:?}: unexpected response code {code:?}"
                    );
                    if answered && token_ok {
                        ensure!(
                            &response.payload == marker,
                            "{id:?}: got the answer to {:?}, asked {:?}",
                            String::from_utf8_lossy(&response.payload),
                            String::from_utf8_lossy(marker)
                        );
                    }
                    stats.responses += 1;
                }
                (Issued::Request { peer, .. }, Event::RequestFailed { peer: p, error, .. }) => {
                    ensure!(
                        p == peer,
                        "{id:?}: failure reported for {p}, request went to {peer}"
                    );
                    *stats
                        .request_failures
                        .entry(describe_error(error))
                        .or_default() += 1;
                }
                (Issued::Ping { peer }, Event::Pong { peer: p, .. }) => {
                    ensure!(p == peer, "{id:?}: pong from {p}, ping went to {peer}");
                    stats.pongs += 1;
                }
                (Issued::Ping { peer }, Event::PingFailed { peer: p, error, .. }) => {
                    ensure!(
                        p == peer,
                        "{id:?}: ping failure for {p}, ping went to {peer}"
                    );
                    *stats
                        .request_failures
                        .entry(format!("ping {}", describe_error(error)))
                        .or_default() += 1;
                }
                (issued, e) => return Err(format!("{id:?}: {issued:?} ended with {e:?}")),
            }
        }
    }
    for (key, (at, _, issued)) in &j.issued {
        ensure!(
            ended.contains_key(key),
            "node {}: {:?} issued at {at:?} ({issued:?}) never ended",
            key.0,
            key.1
        );
        match issued {
            Issued::Request { .. } => stats.requests += 1,
            Issued::Ping { .. } => stats.pings += 1,
        }
    }
    for Cancel {
        node,
        id,
        at,
        seq,
        result,
    } in &j.cancels
    {
        let (end_at, end_seq, event) = ended[&(*node, *id)];
        match result {
            Ok(()) => {
                let cancelled = matches!(
                    event,
                    Event::RequestFailed {
                        error: ExchangeError::Cancelled,
                        ..
                    } | Event::PingFailed {
                        error: ExchangeError::Cancelled,
                        ..
                    }
                );
                ensure!(
                    cancelled && end_at == *at && end_seq > *seq,
                    "cancel of {id:?} at {at:?} accepted, but it ended {event:?} at {end_at:?}"
                );
            }
            Err(Error::UnknownRequest) => {
                ensure!(
                    end_seq < *seq,
                    "cancel of {id:?} at {at:?} refused though it was pending"
                )
            }
            Err(e) => return Err(format!("cancel of {id:?}: unexpected error {e:?}")),
        }
    }
    for (node, e) in &j.refused {
        let acceptable = matches!(
            e,
            Error::QueueFull | Error::SessionLimit | Error::TokenInUse
        );
        ensure!(acceptable, "node {node}: request refused with {e:?}");
    }
    stats.refused += j.refused.len() as u64;
    for (node, e) in &j.respond_errors {
        ensure!(
            *e == Error::UnknownRequest,
            "node {node}: respond failed with {e:?}"
        );
    }
    Ok(())
}

/// One session's life as reconstructed from the records.
struct Incarnation {
    number: usize,
    remote: bool,
    watch_since: Instant,
    last_heard: Instant,
    heard: bool,
    established: bool,
    keepalive: Option<Keepalive>,
    markers: BTreeSet<Vec<u8>>,
}

impl Incarnation {
    fn silent_since(&self) -> Instant {
        self.last_heard.max(self.watch_since)
    }

    /// When the session must have failed unless the peer is heard first.
    fn deadline(&self) -> Option<Instant> {
        self.keepalive.map(|k| self.silent_since() + k.bound())
    }
}

enum Item<'a> {
    Rx(&'a Received),
    Tx(&'a Sent),
    Ev(&'a Logged),
    Keepalive(SocketAddr, Instant, Option<Keepalive>),
}

/// Invariants 2 and 3, and the session lifecycle, from one node's merged records.
fn check_sessions(w: &World, node: NodeId, stats: &mut Stats) -> Result<(), String> {
    let j = w.journal.borrow();
    let config = &w.configs[node];
    let mut items: Vec<(u64, Item<'_>)> = Vec::new();
    items.extend(w.sim.received(node).iter().map(|r| (r.seq, Item::Rx(r))));
    items.extend(w.sim.sent(node).iter().map(|s| (s.seq, Item::Tx(s))));
    items.extend(w.sim.events(node).iter().map(|l| (l.seq, Item::Ev(l))));
    items.extend(
        j.keepalive_set
            .iter()
            .filter(|k| k.0 == node)
            .map(|k| (k.3, Item::Keepalive(k.1, k.2, k.4))),
    );
    items.sort_by_key(|i| i.0);

    let mut live: BTreeMap<SocketAddr, Incarnation> = BTreeMap::new();
    // Every marker the application saw, from any session: for the cross-session count.
    // Which session first handed each request to the application, and how sessions ended.
    let mut seen_in: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut failed_sessions: BTreeSet<usize> = BTreeSet::new();
    let mut incarnations = 0;
    let mut last_rx: Option<(SocketAddr, Instant)> = None;
    let mut failed_transmits = BTreeMap::new();
    let mut unreachable_streak: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for (_, item) in &items {
        match item {
            Item::Rx(r) => {
                last_rx = Some((r.from, r.at));
                unreachable_streak.remove(&r.from);
                if let Some(inc) = live.get_mut(&r.from) {
                    if let Some(deadline) = inc.deadline() {
                        ensure!(
                            r.at < deadline,
                            "node {node}: session with {} still alive at {:?}, silent since {:?} (keepalive {:?}, deadline {deadline:?})",
                            r.from,
                            r.at,
                            inc.silent_since(),
                            inc.keepalive
                        );
                    }
                    inc.last_heard = inc.last_heard.max(r.at);
                    inc.heard = true;
                }
                continue;
            }
            Item::Tx(s) => {
                if let Fate::Failed(kind) = s.fate {
                    failed_transmits.insert(s.id, (s.at, s.to, kind));
                }
                // Unreachable sends to the peer since it was last heard (or its last session
                // ended, or a send was reported successful). The engine counts only those of
                // the current session, a subset: so this count is never below the engine's.
                match s.fate {
                    Fate::Failed(SendErrorKind::Unreachable) => {
                        *unreachable_streak.entry(s.to).or_default() += 1
                    }
                    Fate::Failed(_) => {}
                    _ if w.sim.report_ok => {
                        unreachable_streak.remove(&s.to);
                    }
                    _ => {}
                }
            }
            Item::Keepalive(peer, at, k) => {
                if let Some(inc) = live.get_mut(peer) {
                    // `set_keepalive`: silence counts from the later of now and last heard.
                    inc.watch_since = *at;
                    inc.keepalive = *k;
                }
            }
            Item::Ev(l) => match &l.event {
                Event::SessionNew { peer } => {
                    ensure!(
                        !live.contains_key(peer),
                        "node {node}: SessionNew for {peer}, which has one: {l:?}"
                    );
                    // A peer-opened session is created by the datagram just delivered.
                    let remote = last_rx == Some((*peer, l.at));
                    incarnations += 1;
                    live.insert(
                        *peer,
                        Incarnation {
                            number: incarnations,
                            remote,
                            watch_since: l.at,
                            last_heard: l.at,
                            heard: remote,
                            established: false,
                            keepalive: config.keepalive,
                            markers: BTreeSet::new(),
                        },
                    );
                }
                Event::SessionEstablished { peer } => {
                    let inc = live
                        .get_mut(peer)
                        .ok_or_else(|| format!("node {node}: {l:?} without a session"))?;
                    ensure!(
                        inc.heard && !inc.established,
                        "node {node}: {l:?} unexpected (heard {}, established {})",
                        inc.heard,
                        inc.established
                    );
                    inc.established = true;
                }
                Event::SessionFailed { peer, reason } => {
                    let inc = live
                        .remove(peer)
                        .ok_or_else(|| format!("node {node}: {l:?} without a session"))?;
                    ensure!(
                        inc.established == inc.heard,
                        "node {node}: session with {peer} heard {} but established {}",
                        inc.heard,
                        inc.established
                    );
                    let streak = unreachable_streak.remove(peer).unwrap_or(0);
                    failed_sessions.insert(inc.number);
                    match reason {
                        FailureReason::KeepaliveTimeout { .. } => {
                            let Some(deadline) = inc.deadline() else {
                                return Err(format!(
                                    "node {node}: keepalive failure without keepalive: {l:?}"
                                ));
                            };
                            ensure!(
                                l.at <= deadline,
                                "node {node}: LIVENESS BOUND BROKEN: {peer} failed at {:?}, silent since {:?}, keepalive {:?}: deadline {deadline:?}",
                                l.at,
                                inc.silent_since(),
                                inc.keepalive
                            );
                            ensure!(l.at == deadline, "node {node}: premature keepalive failure of {peer} at {:?}, deadline {deadline:?}", l.at);
                            stats.keepalive_failures += 1;
                        }
                        FailureReason::Unreachable { failures } => {
                            ensure!(
                                config.fail_after_unreachable == Some(*failures)
                                    && streak >= *failures,
                                "node {node}: {l:?} after a streak of {streak} (config {:?})",
                                config.fail_after_unreachable
                            );
                            if let Some(deadline) = inc.deadline() {
                                ensure!(
                                    l.at < deadline,
                                    "node {node}: {l:?} later than the keepalive bound"
                                );
                            }
                            stats.unreachable_failures += 1;
                        }
                        other => return Err(format!("node {node}: unknown failure {other:?}")),
                    }
                }
                Event::SessionClosed { peer, reason } => {
                    let inc = live
                        .remove(peer)
                        .ok_or_else(|| format!("node {node}: {l:?} without a session"))?;
                    ensure!(
                        inc.established == inc.heard,
                        "node {node}: session with {peer} heard {} but established {}",
                        inc.heard,
                        inc.established
                    );
                    unreachable_streak.remove(peer);
                    if let Some(deadline) = inc.deadline() {
                        ensure!(
                            l.at < deadline,
                            "node {node}: {l:?} outlived its keepalive bound (silent since {:?}, {:?})",
                            inc.silent_since(),
                            inc.keepalive
                        );
                    }
                    match reason {
                        CloseReason::Idle => {
                            ensure!(inc.remote, "node {node}: own session reaped as idle: {l:?}")
                        }
                        CloseReason::Local => ensure!(
                            j.closes
                                .iter()
                                .any(|c| c.0 == node && c.1 == *peer && c.2 == l.at),
                            "node {node}: {l:?} nobody asked for"
                        ),
                        other => {
                            return Err(format!("node {node}: unknown close reason {other:?}"))
                        }
                    }
                }
                Event::Request { peer, request, .. } => {
                    let inc = live
                        .get_mut(peer)
                        .ok_or_else(|| format!("node {node}: {l:?} without a session"))?;
                    ensure!(
                        inc.remote,
                        "node {node}: request on a session it opened itself"
                    );
                    let marker = request.payload.clone();
                    ensure!(
                        inc.markers.insert(marker.clone()),
                        "node {node}: request {:?} reached the application twice in one session",
                        String::from_utf8_lossy(&marker)
                    );
                    // Across sessions too: an ended session's deduplication state outlives it
                    // by EXCHANGE_LIFETIME, so even a retransmission that arrives after a
                    // keepalive failure is recognised.
                    if let Some(first) = seen_in.insert(marker.clone(), inc.number) {
                        stats.redelivered_across_sessions += 1;
                        return Err(format!(
                            "node {node}: request {:?} reached the application again (first in session {first}, failed: {})",
                            String::from_utf8_lossy(&marker),
                            failed_sessions.contains(&first)
                        ));
                    }
                    stats.requests_seen += 1;
                }
                Event::SendFailed {
                    transmit,
                    peer,
                    kind,
                } => {
                    let Some((at, to, k)) = failed_transmits.remove(transmit) else {
                        return Err(format!(
                            "node {node}: {l:?} for a transmit that did not fail"
                        ));
                    };
                    ensure!(
                        at == l.at && to == *peer && k == *kind,
                        "node {node}: {l:?} does not match its failure"
                    );
                    stats.send_failures += 1;
                }
                _ => {}
            },
        }
    }
    ensure!(
        failed_transmits.is_empty(),
        "node {node}: failed transmits never reported: {failed_transmits:?}"
    );
    let end = w.sim.now();
    for (peer, inc) in &live {
        ensure!(
            w.sim.endpoint(node).session_info(*peer).is_some(),
            "node {node}: {peer}'s session vanished silently"
        );
        if let Some(deadline) = inc.deadline() {
            ensure!(
                end < deadline,
                "node {node}: session with {peer} alive at the end though silent since {:?} ({:?})",
                inc.silent_since(),
                inc.keepalive
            );
        }
    }
    ensure!(
        w.sim.endpoint(node).session_count() == live.len(),
        "node {node}: {} sessions, records show {}",
        w.sim.endpoint(node).session_count(),
        live.len()
    );
    Ok(())
}

/// RFC 7252 §4.2 on every Confirmable message: retransmitted at most MAX_RETRANSMIT times,
/// first after a timeout T in [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR], then after 2T,
/// 4T, ... — whatever the network or the send results did. (No busy loop on a dead link.)
///
/// Messages are told apart by (peer, session, Message ID): a new session to the same peer
/// starts at a fresh random Message ID, which may repeat one of the previous session's.
fn check_backoff(w: &World, node: NodeId) -> Result<(), String> {
    let p = &w.configs[node].transmission;
    // Sessions with each peer that ended so far: a transmit belongs to the next one.
    let mut ended: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut records: Vec<(u64, Option<&Sent>, Option<SocketAddr>)> = Vec::new();
    records.extend(w.sim.sent(node).iter().map(|s| (s.seq, Some(s), None)));
    records.extend(w.sim.events(node).iter().filter_map(|l| match l.event {
        Event::SessionFailed { peer, .. } | Event::SessionClosed { peer, .. } => {
            Some((l.seq, None, Some(peer)))
        }
        _ => None,
    }));
    records.sort_by_key(|r| r.0);
    let mut by_message: BTreeMap<(SocketAddr, usize, u16), Vec<Instant>> = BTreeMap::new();
    for (_, sent, end) in records {
        if let Some(peer) = end {
            *ended.entry(peer).or_default() += 1;
        }
        if let Some(s) = sent.filter(|s| s.mtype() == MessageType::Confirmable) {
            let session = ended.get(&s.to).copied().unwrap_or(0);
            by_message
                .entry((s.to, session, s.mid()))
                .or_default()
                .push(s.at);
        }
    }
    for ((to, _, mid), times) in by_message {
        ensure!(
            times.len() <= 1 + p.max_retransmit as usize,
            "node {node}: CON {mid} to {to} sent {} times: {times:?}",
            times.len()
        );
        let Some(&[first, second]) = times.first_chunk::<2>() else {
            continue;
        };
        let t = second - first;
        ensure!(
            p.ack_timeout <= t && t <= p.max_initial_timeout(),
            "node {node}: CON {mid} to {to}: initial timeout {t:?} out of range: {times:?}"
        );
        for (k, pair) in times.windows(2).enumerate() {
            ensure!(
                pair[1] - pair[0] == t * (1 << k),
                "node {node}: CON {mid} to {to} off its backoff: {times:?}"
            );
        }
    }
    Ok(())
}

/// Invariant 4: everything is freed once every lifetime has passed.
fn check_freed(w: &World) -> Result<(), String> {
    for node in 0..w.sim.nodes().len() {
        let ep = w.sim.endpoint(node);
        for peer in ep.peers() {
            let info = ep.session_info(peer).unwrap();
            ensure!(
                !info.opened_by_peer,
                "node {node}: peer-opened session with {peer} never reaped: {info:?}"
            );
            ensure!(
                info.footprint == SessionFootprint::default(),
                "node {node}: session with {peer} still holds {info:?}"
            );
        }
        ensure!(
            ep.poll_timeout().is_none(),
            "node {node}: a timer is still armed at {:?}",
            ep.poll_timeout()
        );
    }
    ensure!(w.sim.in_flight() == 0, "datagrams still in flight");
    Ok(())
}

fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    let mut w = build(seed);
    w.sim.trace = trace;
    if trace {
        eprintln!("seed {seed}: {}", w.description);
    }
    let end = w.final_time;
    w.sim.run_until(end);
    let mut stats = Stats {
        seeds: 1,
        steps: w.sim.steps,
        ..Stats::default()
    };
    stats.transmits = w.sim.nodes().iter().map(|n| n.sent.len() as u64).sum();
    let checked = check_terminals(&w, &mut stats)
        .and_then(|()| {
            for node in w.servers.iter().chain(&w.clients) {
                check_sessions(&w, *node, &mut stats)?;
                check_backoff(&w, *node)?;
            }
            Ok(())
        })
        .and_then(|()| check_freed(&w));
    checked
        .map(|()| stats)
        .map_err(|e| format!("{e}\n  world: {}", w.description))
}

fn run_seed_caught(seed: u64) -> Result<Stats, String> {
    match catch_unwind(AssertUnwindSafe(|| run_seed(seed, false))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn invariants_hold_for_10_000_seeds() {
    let seeds = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8) as u64;
    type Outcome = (Stats, Vec<(u64, String)>, Vec<u64>);
    let results: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    let mut failures = Vec::new();
                    let mut redelivery_seeds = Vec::new();
                    // A plain loop over this thread's share of the seeds.
                    let mut seed = t;
                    while seed < seeds {
                        match run_seed_caught(seed) {
                            Ok(s) => {
                                if s.redelivered_across_sessions > 0 {
                                    redelivery_seeds.push(seed);
                                }
                                stats.add(&s)
                            }
                            Err(e) => failures.push((seed, e)),
                        }
                        seed += threads;
                    }
                    (stats, failures, redelivery_seeds)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let mut redelivery_seeds = Vec::new();
    for (s, f, r) in results {
        stats.add(&s);
        failures.extend(f);
        redelivery_seeds.extend(r);
    }
    redelivery_seeds.sort();
    failures.sort_by_key(|f| f.0);
    println!(
        "property seeds run: {} ({} passed, {} failed)",
        seeds,
        stats.seeds,
        failures.len()
    );
    println!("{stats:#?}");
    if !redelivery_seeds.is_empty() {
        redelivery_seeds.truncate(10);
        println!("requests re-delivered to a server application by a later session (e.g.): seeds {redelivery_seeds:?}");
    }
    if !failures.is_empty() {
        let mut report = String::new();
        for (seed, e) in failures.iter().take(5) {
            let _ = writeln!(report, "seed {seed}: {e}\n  replay: SIM_SEED={seed} cargo test -p coap-engine --test properties replay -- --nocapture\n");
        }
        panic!(
            "{} of {seeds} seeds failed; first ones:\n{report}",
            failures.len()
        );
    }
    assert_eq!(stats.seeds, seeds);
    // The workload must really exercise what the invariants are about.
    assert!(stats.requests > seeds && stats.pings > 0 && stats.responses > 0);
    assert!(
        stats.keepalive_failures > 0 && stats.unreachable_failures > 0 && stats.send_failures > 0
    );
    assert!(
        stats.request_failures.len() >= 5,
        "failure kinds seen: {:?}",
        stats.request_failures
    );
}

/// Replays one seed (`SIM_SEED`, default 0) with the checks; `SIM_TRACE=1` prints everything.
#[test]
fn replay() {
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let trace = std::env::var("SIM_TRACE").is_ok_and(|v| v == "1");
    match run_seed(seed, trace) {
        Ok(stats) => println!("seed {seed}: ok {stats:?}"),
        Err(e) => panic!("seed {seed}: {e}"),
    }
}
