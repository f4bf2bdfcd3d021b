//! Invariants over thousands of seeded worlds running CoAP over TCP (and, with feature
//! `tls`, over TLS) on the simulator's stream links.
//!
//! Each seed: one server (keepalive on some), one to three clients (keepalive on some), links
//! with random delay and random segmentation, and on some connections a partition (the
//! stream holds its bytes), failing writes, a reset, or a half-open connection (one side
//! forgets it, the other is not told). The workload: requests of random body sizes (up to
//! several blocks) over the first minute, pings, and closes. Then time runs past every
//! lifetime and the run is checked:
//!
//! 1. every request and ping ends in exactly one terminal event, and a response carries its
//!    own request's marker and body;
//! 2. the server application sees each request at most once;
//! 3. liveness: a keepalive failure comes no later than `interval + timeout` after the last
//!    bytes delivered from the peer, and never before that much silence;
//! 4. (TLS) every client handshake ends within the handshake timeout;
//! 5. state is freed: no session or handshake left on the server, nothing in flight.
//!
//! Replay one seed: `SIM_SEED=12 cargo test -p coap-engine --test stream_properties replay --
//! --nocapture` (`SIM_TRACE=1` traces it; `--features tls` and `SIM_TLS=1` for TLS); more
//! seeds with `STREAM_SEEDS=100000` / `TLS_SEEDS=20000`.
#![cfg(all(
    feature = "tcp",
    feature = "client",
    feature = "server",
    feature = "blockwise"
))]

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use coap_engine::coap_lite::{CoapOption, MessageClass, RequestType};
use coap_engine::{
    Config, Duration, Event, FailureReason, Instant, Keepalive, RequestId, SendErrorKind, Transport,
};
use sim::*;

const DEFAULT_SEEDS: u64 = 10_000;
#[cfg(feature = "tls")]
const DEFAULT_TLS_SEEDS: u64 = 2_000;
const WORKLOAD: Duration = Duration::from_secs(60);
/// Handshakes fail after this long (TLS worlds).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Issued {
    /// A POST of a body of `body` bytes, answered with the body itself (block-wise both ways
    /// when large: the answer's further blocks come from the response the server kept,
    /// RFC 7959 §2.6).
    Upload {
        marker: Vec<u8>,
        body: usize,
    },
    /// A GET of a representation of `body` bytes made from the marker.
    Download {
        marker: Vec<u8>,
        body: usize,
    },
    Ping,
}

struct World {
    sim: Sim,
    server: NodeId,
    tls: bool,
    clients: Vec<(NodeId, Option<Keepalive>)>,
    issued: BTreeMap<(NodeId, RequestId), Issued>,
}

fn random_keepalive(r: &mut SplitMix64) -> Keepalive {
    Keepalive {
        interval: r.duration(Duration::from_secs(1), Duration::from_secs(8)),
        timeout: r.duration(Duration::from_secs(1), Duration::from_secs(6)),
    }
}

const SERVER: u16 = 5683;

fn server_config(base: Config, tls: bool, seed: u64) -> Config {
    if tls {
        #[cfg(feature = "tls")]
        return sim::tls::tls_server(
            base,
            "server",
            coap_engine::credentials::ClientAuth::NotRequested,
            seed,
        );
    }
    let _ = seed;
    Config {
        transport: Transport::Tcp,
        ..base
    }
}

fn client_config(base: Config, tls: bool, seed: u64) -> Config {
    if tls {
        #[cfg(feature = "tls")]
        return sim::tls::tls_client(base, "ca", None, seed);
    }
    let _ = seed;
    Config {
        transport: Transport::Tcp,
        ..base
    }
}

/// The body a request carries: its marker, padded to `len` bytes.
fn body(marker: &[u8], len: usize) -> Vec<u8> {
    let mut b = marker.to_vec();
    b.resize(len.max(marker.len()), b'.');
    b
}

fn build(seed: u64, tls: bool, trace: bool) -> World {
    let mut sim = Sim::new(seed);
    sim.trace = trace;
    let mut r = SplitMix64::new(derive_seed(seed, 7));
    sim.set_default_link(Link {
        delay: r.duration(Duration::from_millis(1), Duration::from_millis(80)),
        ..Link::default()
    });
    let server_base = Config {
        keepalive: r.chance(0.3).then(|| random_keepalive(&mut r)),
        max_message_size: r.pick(&[1152, 4096, 64 * 1024]),
        idle_timeout: Duration::from_secs(300),
        ..Config::default()
    };
    let sa = addr(SERVER);
    let server = sim.add_endpoint(sa, server_config(server_base, tls, derive_seed(seed, 1)));
    // Answers show which request they answer: an upload's body echoed; a download's
    // representation, made from the marker and length in its query (so that the stateless
    // Block2 requests of a download are answered alike).
    sim.set_app(server, |sim, node, event| {
        if let Event::Request { id, request, .. } = event {
            let query = request.get_option(CoapOption::UriQuery);
            let answer = match query.and_then(|q| q.front()) {
                Some(q) => {
                    let q = String::from_utf8_lossy(q).into_owned();
                    let (marker, len) = q.rsplit_once('=').expect("m=len");
                    body(marker.as_bytes(), len.parse().expect("a length"))
                }
                None => request.payload.clone(),
            };
            sim.respond(node, *id, &content(&answer)).expect("respond");
        }
    });
    let mut clients = Vec::new();
    for i in 0..r.range(1, 3) {
        let keepalive = r.chance(0.5).then(|| random_keepalive(&mut r));
        let base = Config {
            keepalive,
            max_message_size: r.pick(&[1152, 8192, 64 * 1024]),
            ..Config::default()
        };
        let ca = addr(40_000 + i as u16);
        let node = sim.add_endpoint(ca, client_config(base, tls, derive_seed(seed, 10 + i)));
        clients.push((node, keepalive));
        let at = |r: &mut SplitMix64| Instant::from_millis(r.range(0, 50_000));
        if r.chance(0.3) {
            let start = at(&mut r);
            let end = start + r.duration(Duration::from_secs(1), Duration::from_secs(20));
            sim.partition(ca, sa, Window::new(start, end));
        }
        if r.chance(0.15) {
            let start = at(&mut r);
            let end = start + r.duration(Duration::from_secs(1), Duration::from_secs(10));
            let kind = r.pick(&[SendErrorKind::Unreachable, SendErrorKind::Other]);
            sim.fail_sends(ca, None, Window::new(start, end), kind);
        }
        if r.chance(0.15) {
            let t = at(&mut r);
            sim.at(t, move |sim| sim.reset_connection(ca, sa));
        }
        if r.chance(0.15) {
            // Half-open: one side forgets the connection, the other is not told.
            let t = at(&mut r);
            let (a, b) = if r.chance(0.5) { (ca, sa) } else { (sa, ca) };
            sim.at(t, move |sim| sim.lose_connection(a, b));
        }
    }
    let mut world = World {
        sim,
        server,
        tls,
        clients,
        issued: BTreeMap::new(),
    };
    // The workload, fixed up front: (when, client, what).
    let mut plan: Vec<(Instant, NodeId, u8, usize)> = Vec::new();
    for &(node, _) in &world.clients {
        for _ in 0..r.range(1, 10) {
            let what = r.pick(&[0u8, 0, 0, 3, 3, 1, 2]); // upload, download, ping, close
            let len = r.pick(&[0usize, 20, 900, 3000, 9000]);
            plan.push((
                Instant::from_millis(r.range(0, WORKLOAD.as_millis())),
                node,
                what,
                len,
            ));
        }
    }
    plan.sort();
    for (n, (at, node, what, len)) in plan.into_iter().enumerate() {
        world.sim.run_until(at);
        match what {
            0 => {
                let marker = format!("{seed}/{n}:").into_bytes();
                let mut post = con_get("x", &body(&marker, len));
                post.header.code = MessageClass::Request(RequestType::Post);
                if let Ok(id) = world.sim.request(node, sa, &post) {
                    world
                        .issued
                        .insert((node, id), Issued::Upload { marker, body: len });
                }
            }
            3 => {
                let marker = format!("{seed}/{n}:").into_bytes();
                let mut get = con_get("x", b"");
                let query = format!("{}={len}", String::from_utf8_lossy(&marker));
                get.add_option(CoapOption::UriQuery, query.into_bytes());
                if let Ok(id) = world.sim.request(node, sa, &get) {
                    world
                        .issued
                        .insert((node, id), Issued::Download { marker, body: len });
                }
            }
            1 => {
                if let Ok(id) = world.sim.ping(node, sa) {
                    world.issued.insert((node, id), Issued::Ping);
                }
            }
            _ => {
                let _ = world.sim.close_session(node, sa);
            }
        }
    }
    world
}

fn check(w: &World) -> Result<(), String> {
    let sa = addr(SERVER);
    // 1. One terminal event per request and ping, and the right answer.
    for (&(node, id), issued) in &w.issued {
        let terminals = w.sim.terminals(node, id);
        if terminals.len() != 1 {
            return Err(format!(
                "{issued:?} {id:?} of node {node} ended {} times",
                terminals.len()
            ));
        }
        match (&terminals[0].event, issued) {
            (
                Event::Response { response, .. },
                Issued::Upload { marker, body: len } | Issued::Download { marker, body: len },
            ) => {
                if response.payload != body(marker, *len) {
                    return Err(format!(
                        "{id:?} got {} bytes starting {:?}, not its own body",
                        response.payload.len(),
                        String::from_utf8_lossy(
                            &response.payload[..response.payload.len().min(20)]
                        )
                    ));
                }
            }
            (Event::RequestFailed { .. }, Issued::Upload { .. } | Issued::Download { .. }) => {}
            (Event::Pong { .. } | Event::PingFailed { .. }, Issued::Ping) => {}
            (other, _) => return Err(format!("{issued:?} ended with {other:?}")),
        }
    }
    // 2. At most once at the server application (an upload's body; a download's block
    // requests are each a request of their own, stateless Block2).
    let mut seen = BTreeSet::new();
    for (_, _, request) in w.sim.requests_seen(w.server) {
        if request.payload.is_empty() {
            continue;
        }
        let marker: Vec<u8> = request
            .payload
            .iter()
            .copied()
            .take_while(|&b| b != b':')
            .collect();
        if !seen.insert(marker.clone()) {
            return Err(format!(
                "request {:?} delivered twice",
                String::from_utf8_lossy(&marker)
            ));
        }
    }
    // 3. Liveness, both roles.
    let mut watched: Vec<(NodeId, SocketAddr, Keepalive)> = w
        .clients
        .iter()
        .filter_map(|&(n, k)| k.map(|k| (n, sa, k)))
        .collect();
    if let Some(k) = w.sim.endpoint(w.server).config().keepalive {
        for &(n, _) in &w.clients {
            watched.push((w.server, w.sim.addr(n), k));
        }
    }
    for (node, peer, k) in watched {
        for l in w.sim.events(node) {
            let Event::SessionFailed {
                peer: p,
                reason: FailureReason::KeepaliveTimeout { silent_for },
                ..
            } = &l.event
            else {
                continue;
            };
            if *p != peer {
                continue;
            }
            let created = w
                .sim
                .events(node)
                .iter()
                .filter(|e| {
                    e.at <= l.at && matches!(&e.event, Event::SessionNew { peer: q } if *q == peer)
                })
                .map(|e| e.at)
                .next_back()
                .unwrap_or(Instant::ZERO);
            let last_delivery = w
                .sim
                .received(node)
                .iter()
                .filter(|r| r.from == peer && r.at <= l.at && r.at >= created)
                .map(|r| r.at)
                .next_back()
                .unwrap_or(created)
                .max(created);
            if l.at > last_delivery + k.bound() {
                return Err(format!(
                    "node {node}: keepalive failure at {:?}, later than {:?} + {:?}",
                    l.at,
                    last_delivery,
                    k.bound()
                ));
            }
            if *silent_for < k.bound() {
                return Err(format!(
                    "node {node}: failed after only {silent_for:?} of silence"
                ));
            }
        }
    }
    // 4. Every client handshake ends within the handshake timeout.
    if w.tls {
        for &(node, _) in &w.clients {
            let events = w.sim.events(node);
            for (i, l) in events.iter().enumerate() {
                if !matches!(l.event, Event::SessionNew { .. }) {
                    continue;
                }
                let end = events[i + 1..].iter().find(|e| {
                    matches!(
                        e.event,
                        Event::SessionEstablished { .. }
                            | Event::SessionFailed { .. }
                            | Event::SessionClosed { .. }
                    )
                });
                match end {
                    Some(e) if e.at <= l.at + HANDSHAKE_TIMEOUT => {}
                    other => {
                        return Err(format!(
                            "node {node}: handshake started {:?} ended {:?}",
                            l.at,
                            other.map(|e| (e.at, &e.event))
                        ))
                    }
                }
            }
        }
    }
    // 5. Freed.
    let server = w.sim.endpoint(w.server);
    if server.session_count() != 0 || server.handshakes_in_progress() != 0 {
        return Err(format!(
            "server holds {} sessions and {} handshakes at the end",
            server.session_count(),
            server.handshakes_in_progress()
        ));
    }
    if w.sim.in_flight() != 0 {
        return Err("bytes still in flight".into());
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    requests: u64,
    answered: u64,
    pongs: u64,
    keepalive_failures: u64,
    connection_failures: u64,
}

fn run_seed(seed: u64, tls: bool, trace: bool) -> Result<Stats, String> {
    let mut w = build(seed, tls, trace);
    w.sim
        .run_until(Instant::ZERO + WORKLOAD + Duration::from_secs(700));
    // Clients close what they still hold, so that the server can be checked for leftovers.
    for &(node, _) in &w.clients.clone() {
        let _ = w.sim.close_session(node, addr(SERVER));
    }
    w.sim.run_for(Duration::from_secs(400));
    check(&w)?;
    let mut s = Stats {
        requests: w.issued.len() as u64,
        ..Stats::default()
    };
    for &(node, _) in &w.clients {
        for l in w.sim.events(node) {
            match &l.event {
                Event::Response { .. } => s.answered += 1,
                Event::Pong { .. } => s.pongs += 1,
                Event::SessionFailed {
                    reason: FailureReason::KeepaliveTimeout { .. },
                    ..
                } => s.keepalive_failures += 1,
                Event::SessionFailed {
                    reason: FailureReason::Connection(_),
                    ..
                } => s.connection_failures += 1,
                _ => {}
            }
        }
    }
    Ok(s)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_many(seeds: u64, tls: bool) {
    let mut total = Stats::default();
    for seed in 0..seeds {
        let result = catch_unwind(AssertUnwindSafe(|| run_seed(seed, tls, false)))
            .unwrap_or_else(|p| Err(format!("panicked: {:?}", p.downcast_ref::<String>())));
        match result {
            Ok(s) => {
                total.requests += s.requests;
                total.answered += s.answered;
                total.pongs += s.pongs;
                total.keepalive_failures += s.keepalive_failures;
                total.connection_failures += s.connection_failures;
            }
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: SIM_SEED={seed}{} cargo test -p coap-engine{} --test stream_properties replay -- --nocapture",
                if tls { " SIM_TLS=1" } else { "" },
                if tls { " --features tls" } else { "" },
            ),
        }
    }
    eprintln!(
        "{seeds} seeds over {}: {} requests and pings, {} answered, {} pongs, {} keepalive and {} connection failures",
        if tls { "TLS" } else { "TCP" },
        total.requests,
        total.answered,
        total.pongs,
        total.keepalive_failures,
        total.connection_failures
    );
    // The worlds must exercise what they claim to.
    assert!(total.answered > total.requests / 2);
    assert!(total.pongs > 0 && total.keepalive_failures > 0 && total.connection_failures > 0);
}

#[test]
fn invariants_hold_over_tcp_for_thousands_of_seeds() {
    run_many(env_u64("STREAM_SEEDS").unwrap_or(DEFAULT_SEEDS), false);
}

#[cfg(feature = "tls")]
#[test]
fn invariants_hold_over_tls_for_thousands_of_seeds() {
    run_many(env_u64("TLS_SEEDS").unwrap_or(DEFAULT_TLS_SEEDS), true);
}

#[test]
fn replay() {
    // Seed 0 over TCP unless told otherwise, so that this also runs as a test of its own.
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let tls = std::env::var("SIM_TLS").is_ok();
    let trace = std::env::var("SIM_TRACE").is_ok();
    run_seed(seed, tls, trace).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}
