//! Scenarios that read like RFC 7252, run on the deterministic simulator (`tests/sim`).
//!
//! All times are virtual. Links have a fixed one-way delay `D` unless a test says otherwise,
//! so every instant below can be computed by hand; where the engine draws a random initial
//! retransmission timeout, the test reads it off the first retransmission and checks the rest
//! of the schedule against it.
#![cfg(all(feature = "client", feature = "server"))]

mod sim;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

use coap_engine::coap_lite::{MessageClass, MessageType, ResponseType};
use coap_engine::codec;
use coap_engine::{
    CloseReason, Config, Duration, Error, Event, ExchangeError, FailureReason, Instant, Keepalive,
    Limits, SendErrorKind, SessionFootprint, TransmissionParameters,
};
use sim::*;

/// One-way link delay of every scenario.
const D: Duration = Duration::from_millis(10);

fn params() -> TransmissionParameters {
    TransmissionParameters::default()
}

fn ack_timeout() -> Duration {
    params().ack_timeout
}

fn max_initial_timeout() -> Duration {
    params().max_initial_timeout()
}

/// How the server application answers requests.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Now,
    After(Duration),
    Never,
}

/// A client and a server over a clean link with delay `D`.
fn world(seed: u64) -> WorldBuilder {
    World::builder(seed).delay(D)
}

impl World {
    /// The server application answers every request with 2.05 echoing its payload.
    fn serve(&mut self, answer: Answer) {
        serve(&mut self.sim, self.server, answer);
    }
}

fn serve(sim: &mut Sim, node: NodeId, answer: Answer) {
    sim.set_app(node, move |sim, node, event| {
        let Event::Request { id, request, .. } = event else {
            return;
        };
        let response = content(&request.payload);
        let id = *id;
        match answer {
            Answer::Now => sim.respond(node, id, &response).expect("respond"),
            Answer::After(d) => {
                let t = sim.now() + d;
                sim.at(t, move |sim| {
                    sim.respond(node, id, &response).expect("late respond")
                });
            }
            Answer::Never => {}
        }
    });
}

fn failure_of(l: &Logged) -> ExchangeError {
    match &l.event {
        Event::RequestFailed { error, .. } | Event::PingFailed { error, .. } => *error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn session_failures(sim: &Sim, node: NodeId) -> Vec<(Instant, SocketAddr, FailureReason)> {
    sim.events(node)
        .iter()
        .filter_map(|l| match l.event {
            Event::SessionFailed { peer, reason } => Some((l.at, peer, reason)),
            _ => None,
        })
        .collect()
}

/// Transmissions of one Confirmable message (by Message ID) from `node` to `peer`.
fn transmissions_of(sim: &Sim, node: NodeId, peer: SocketAddr, mid: u16) -> Vec<Instant> {
    sim.sent_to(node, peer)
        .iter()
        .filter(|s| s.mtype() == MessageType::Confirmable && s.mid() == mid)
        .map(|s| s.at)
        .collect()
}

/// The RFC 7252 §4.2 schedule: the k-th retransmission follows the previous one after
/// `T × 2^(k-1)`, with T the randomized initial timeout in [ACK_TIMEOUT, ACK_TIMEOUT × 1.5].
/// Returns T.
fn assert_backoff(times: &[Instant]) -> Duration {
    assert!(
        times.len() >= 2,
        "need a retransmission to read T from: {times:?}"
    );
    let t = times[1] - times[0];
    assert!(
        ack_timeout() <= t && t <= max_initial_timeout(),
        "initial timeout {t:?} outside [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR]"
    );
    for k in 1..times.len() {
        assert_eq!(
            times[k] - times[k - 1],
            t * (1 << (k - 1)),
            "retransmission {k} off schedule: {times:?}"
        );
    }
    t
}

/// How many transmissions one Confirmable message can make within `window` of its first:
/// those k (0..=MAX_RETRANSMIT) with ACK_TIMEOUT × (2^k − 1) ≤ window, since the initial
/// timeout is at least ACK_TIMEOUT and doubles.
fn max_con_transmissions_within(window: Duration) -> usize {
    let p = params();
    (0..=p.max_retransmit as u32)
        .filter(|&k| p.ack_timeout * ((1u64 << k) - 1) <= window)
        .count()
}

fn just_before(t: Instant) -> Instant {
    Instant::from_micros(t.as_micros() - 1)
}

fn zero_footprint() -> SessionFootprint {
    SessionFootprint::default()
}

// =============================================================================================
// RFC 7252 §4.2: reliable transmission

#[test]
fn con_request_lost_twice_is_answered_on_the_third_try_and_the_server_app_sees_it_once() {
    let mut initial_timeouts = Vec::new();
    for seed in 0..64 {
        let mut w = world(seed).build();
        w.serve(Answer::Now);
        let lost = Rc::new(Cell::new(0));
        let (l, sa) = (lost.clone(), w.sa);
        w.sim.set_filter(move |d| {
            if d.to == sa && d.is_request() && l.get() < 2 {
                l.set(l.get() + 1);
                Verdict::Drop
            } else {
                Verdict::Pass
            }
        });
        let t0 = at_secs(1);
        w.sim.run_until(t0);
        let id = w.request(&con_get("sensor", b"reading-1"));
        w.sim.run_until(at_secs(400));

        let tries = w.sim.sent_to(w.client, w.sa);
        assert_eq!(
            tries.len(),
            3,
            "seed {seed}: two losses, one success, nothing more"
        );
        let mid = tries[0].mid();
        assert!(tries
            .iter()
            .all(|s| s.mid() == mid && s.mtype() == MessageType::Confirmable));
        assert_eq!(tries[0].fate, Fate::Filtered);
        assert_eq!(tries[1].fate, Fate::Filtered);
        assert_eq!(tries[2].fate, Fate::Sent { copies: 1 });
        let times: Vec<_> = tries.iter().map(|s| s.at).collect();
        assert_eq!(times[0], t0, "the request goes out at once");
        initial_timeouts.push(assert_backoff(&times));

        let seen = w.sim.requests_seen(w.server);
        assert_eq!(
            seen.len(),
            1,
            "seed {seed}: the server application sees the request once"
        );
        assert_eq!(seen[0].2.payload, b"reading-1");
        assert_eq!(seen[0].0, times[2] + D);

        let done = w.sim.terminal(w.client, id);
        assert_eq!(
            done.at,
            times[2] + D + D,
            "answered one round trip after the third try"
        );
        assert_eq!(response_of(done).payload, b"reading-1");
        assert_eq!(
            response_of(done).header.get_type(),
            MessageType::Acknowledgement
        );
    }
    // The initial timeout is drawn at random (RFC 7252 §4.2), not a constant.
    let (lo, hi) = (
        initial_timeouts.iter().min().unwrap(),
        initial_timeouts.iter().max().unwrap(),
    );
    assert!(hi > lo, "initial timeouts never vary: {initial_timeouts:?}");
}

#[test]
fn con_request_with_no_answer_fails_with_timeout_after_max_retransmit_within_max_transmit_wait() {
    for seed in 0..32 {
        let mut w = world(seed).build();
        let silent = addr(6000); // nobody lives there
        let id = w
            .sim
            .request(w.client, silent, &con_get("void", b""))
            .unwrap();
        w.sim.run_until(at_secs(400));

        let times: Vec<_> = w
            .sim
            .sent_to(w.client, silent)
            .iter()
            .map(|s| s.at)
            .collect();
        assert_eq!(
            times.len(),
            1 + params().max_retransmit as usize,
            "seed {seed}: MAX_RETRANSMIT retransmissions"
        );
        let t = assert_backoff(&times);
        let done = w.sim.terminal(w.client, id);
        assert_eq!(failure_of(done), ExchangeError::Timeout);
        // Given up when the last retransmission's timeout (T × 2^MAX_RETRANSMIT) expires:
        // T × (2^(MAX_RETRANSMIT+1) − 1) after the first transmission, at most MAX_TRANSMIT_WAIT.
        assert_eq!(done.at, Instant::ZERO + t * 31);
        assert!(done.at <= Instant::ZERO + params().max_transmit_wait());
        assert_eq!(
            w.sim
                .endpoint(w.client)
                .session_info(silent)
                .unwrap()
                .footprint,
            zero_footprint()
        );
    }
}

#[test]
fn con_request_acknowledged_but_never_answered_fails_response_timeout_after_the_empty_ack() {
    let client = Config {
        response_timeout: secs(30),
        ..Config::default()
    };
    let mut w = world(1).client(client).build();
    w.serve(Answer::Never);
    let id = w.request(&con_get("slow", b""));
    w.sim.run_until(at_secs(400));

    let empty_ack_at = D + Config::default().empty_ack_delay; // at the server
    let ack = &w.sim.sent_to(w.server, w.ca)[0];
    assert_eq!(
        (ack.at, ack.mtype(), ack.code()),
        (
            Instant::ZERO + empty_ack_at,
            MessageType::Acknowledgement,
            0
        )
    );
    let done = w.sim.terminal(w.client, id);
    assert_eq!(failure_of(done), ExchangeError::Timeout);
    assert_eq!(done.at, Instant::ZERO + empty_ack_at + D + secs(30));
    assert_eq!(
        w.sim.sent_to(w.client, w.sa).len(),
        1,
        "acknowledged: never retransmitted"
    );
}

#[test]
fn non_request_with_no_answer_fails_with_timeout_at_response_timeout() {
    for response_timeout in [secs(20), Config::default().response_timeout] {
        let client = Config {
            response_timeout,
            ..Config::default()
        };
        let mut w = world(2).client(client).build();
        let silent = addr(6000);
        w.sim.run_until(at_secs(3));
        let id = w
            .sim
            .request(w.client, silent, &non_get("void", b""))
            .unwrap();
        w.sim.run_until(at_secs(400));
        assert_eq!(
            w.sim.sent_to(w.client, silent).len(),
            1,
            "a NON is never retransmitted"
        );
        let done = w.sim.terminal(w.client, id);
        assert_eq!(failure_of(done), ExchangeError::Timeout);
        assert_eq!(done.at, at_secs(3) + response_timeout);
    }
}

#[test]
fn reset_to_a_con_request_fails_it_with_reset() {
    let mut w = world(3).build();
    // A peer that cannot process the request rejects it with a Reset (RFC 7252 §4.2).
    let rejecting = addr(7000);
    w.sim.add_raw(rejecting);
    w.sim.set_raw_hook(rejecting, |sim, me, from, bytes| {
        let h = codec::parse_header(bytes).unwrap();
        if h.mtype == MessageType::Confirmable {
            let mut rst = Vec::new();
            codec::encode_empty(&mut rst, MessageType::Reset, h.message_id);
            sim.inject(me, from, &rst, D);
        }
    });
    let id = w
        .sim
        .request(w.client, rejecting, &con_get("x", b""))
        .unwrap();
    w.sim.run_until(at_secs(400));

    let done = w.sim.terminal(w.client, id);
    assert_eq!(failure_of(done), ExchangeError::Reset);
    assert_eq!(done.at, Instant::ZERO + D + D);
    assert_eq!(
        w.sim.sent_to(w.client, rejecting).len(),
        1,
        "a Reset stops retransmission"
    );
    assert_eq!(
        w.sim
            .endpoint(w.client)
            .session_info(rejecting)
            .unwrap()
            .footprint,
        zero_footprint()
    );
}

// =============================================================================================
// RFC 7252 §5.2: piggybacked, separate and non-confirmable responses

#[test]
fn piggybacked_response_travels_in_the_ack() {
    let mut w = world(4).build();
    w.serve(Answer::Now);
    let id = w.request(&con_get("temp", b"q"));
    w.sim.run_until(at_secs(10));

    let req = &w.sim.sent_to(w.client, w.sa)[0];
    let server_sent = w.sim.sent_to(w.server, w.ca);
    assert_eq!(
        server_sent.len(),
        1,
        "one datagram answers: the ACK carrying the response"
    );
    let ack = server_sent[0];
    assert_eq!(ack.mtype(), MessageType::Acknowledgement);
    assert_eq!(
        ack.mid(),
        req.mid(),
        "the ACK echoes the request's Message ID"
    );
    assert_eq!(
        MessageClass::from(ack.code()),
        MessageClass::Response(ResponseType::Content)
    );
    assert_eq!(ack.at, Instant::ZERO + D);

    let done = w.sim.terminal(w.client, id);
    assert_eq!(done.at, Instant::ZERO + D + D);
    let response = response_of(done);
    assert_eq!(response.payload, b"q");
    assert_eq!(
        response.get_token(),
        codec::parse(&req.bytes).unwrap().token,
        "same token"
    );
    assert_eq!(
        w.sim.sent_to(w.client, w.sa).len(),
        1,
        "no retransmission, nothing to acknowledge"
    );
}

#[test]
fn separate_response_after_empty_ack_delay_is_confirmable_and_acknowledged() {
    let late = millis(1500); // > empty_ack_delay (1 s), < ACK_TIMEOUT (2 s)
    let mut w = world(5).build();
    w.serve(Answer::After(late));
    let id = w.request(&con_get("slow", b"s"));
    w.sim.run_until(at_secs(400));

    let req = w.sim.sent_to(w.client, w.sa)[0].clone();
    let server_sent = w.sim.sent_to(w.server, w.ca);
    assert_eq!(
        server_sent.len(),
        2,
        "an Empty ACK, then the response: {server_sent:#?}"
    );
    let (empty_ack, response) = (server_sent[0], server_sent[1]);
    assert_eq!(
        (empty_ack.mtype(), empty_ack.code(), empty_ack.mid()),
        (MessageType::Acknowledgement, 0, req.mid())
    );
    assert_eq!(
        empty_ack.at,
        Instant::ZERO + D + Config::default().empty_ack_delay
    );
    assert_eq!(response.mtype(), MessageType::Confirmable);
    assert_ne!(
        response.mid(),
        req.mid(),
        "a separate response has its own Message ID"
    );
    assert_eq!(response.at, Instant::ZERO + D + late);

    let client_sent = w.sim.sent_to(w.client, w.sa);
    assert_eq!(
        client_sent.len(),
        2,
        "the request once, then the ACK of the response"
    );
    let ack = client_sent[1];
    assert_eq!(
        (ack.mtype(), ack.code(), ack.mid()),
        (MessageType::Acknowledgement, 0, response.mid())
    );
    assert_eq!(ack.at, response.at + D);

    let done = w.sim.terminal(w.client, id);
    assert_eq!(done.at, response.at + D);
    assert_eq!(response_of(done).payload, b"s");
    assert_eq!(
        response_of(done).header.get_type(),
        MessageType::Confirmable
    );
    assert_eq!(w.sim.requests_seen(w.server).len(), 1);
}

#[test]
fn non_request_is_answered_with_a_non_response() {
    let mut w = world(6).build();
    w.serve(Answer::Now);
    let id = w.request(&non_get("temp", b"n"));
    w.sim.run_until(at_secs(400));

    let req = &w.sim.sent_to(w.client, w.sa)[0];
    assert_eq!(req.mtype(), MessageType::NonConfirmable);
    let server_sent = w.sim.sent_to(w.server, w.ca);
    assert_eq!(server_sent.len(), 1);
    assert_eq!(server_sent[0].mtype(), MessageType::NonConfirmable);
    assert_ne!(server_sent[0].mid(), req.mid());
    let done = w.sim.terminal(w.client, id);
    assert_eq!(done.at, Instant::ZERO + D + D);
    assert_eq!(
        response_of(done).header.get_type(),
        MessageType::NonConfirmable
    );
    assert_eq!(response_of(done).payload, b"n");
    assert_eq!(
        w.sim.sent_to(w.client, w.sa).len(),
        1,
        "nothing to acknowledge"
    );
}

// =============================================================================================
// RFC 7252 §4.5: deduplication

#[test]
fn duplicated_con_request_reaches_the_app_once_and_the_cached_ack_is_resent() {
    let mut w = world(7).build();
    w.serve(Answer::Now);
    // The network delivers every client datagram twice.
    w.sim.set_link(
        w.ca,
        w.sa,
        Link {
            delay: D,
            duplicate: 1.0,
            ..Link::default()
        },
    );
    let id = w.request(&con_get("dup", b"once"));
    w.sim.run_until(at_secs(400));

    assert_eq!(
        w.sim.received(w.server).len(),
        2,
        "the network duplicated the request"
    );
    assert_eq!(
        w.sim.requests_seen(w.server).len(),
        1,
        "the application sees it once"
    );
    let acks = w.sim.sent_to(w.server, w.ca);
    assert_eq!(acks.len(), 2, "the duplicate is answered with the same ACK");
    assert_eq!(&*acks[0].bytes, &*acks[1].bytes);
    assert_eq!(acks[0].mtype(), MessageType::Acknowledgement);
    assert_eq!(
        w.sim.terminals(w.client, id).len(),
        1,
        "the duplicate ACK ends nothing twice"
    );
}

#[test]
fn lost_piggybacked_ack_is_replayed_from_the_cache_on_retransmission() {
    let mut w = world(8).build();
    w.serve(Answer::Now);
    let first = Rc::new(Cell::new(true));
    let (f, ca) = (first.clone(), w.ca);
    w.sim.set_filter(move |d| {
        if d.to == ca && d.mtype() == Some(MessageType::Acknowledgement) && f.replace(false) {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    let id = w.request(&con_get("dup", b"x"));
    w.sim.run_until(at_secs(400));

    let tries: Vec<_> = w.sim.sent_to(w.client, w.sa).iter().map(|s| s.at).collect();
    assert_eq!(tries.len(), 2, "one retransmission");
    assert_eq!(
        w.sim.requests_seen(w.server).len(),
        1,
        "the retransmission is a duplicate"
    );
    let acks = w.sim.sent_to(w.server, w.ca);
    assert_eq!(acks.len(), 2);
    assert_eq!(
        &*acks[0].bytes, &*acks[1].bytes,
        "the very same piggybacked response"
    );
    let done = w.sim.terminal(w.client, id);
    assert_eq!(done.at, tries[1] + D + D);
    assert_eq!(response_of(done).payload, b"x");
}

// =============================================================================================
// RFC 7252 §4.7: congestion control (NSTART) and the queue cap

#[test]
fn nstart_1_holds_the_second_request_until_the_first_is_answered() {
    let mut w = world(9).build();
    w.serve(Answer::Now);
    let a = w.request(&con_get("a", b"a"));
    let b = w.request(&con_get("b", b"b"));
    assert_eq!(
        w.sim.sent_to(w.client, w.sa).len(),
        1,
        "only one outstanding interaction"
    );
    let fp = w
        .sim
        .endpoint(w.client)
        .session_info(w.sa)
        .unwrap()
        .footprint;
    assert_eq!((fp.exchanges, fp.queued_requests), (1, 1));
    w.sim.run_until(at_secs(10));

    let sent = w.sim.sent_to(w.client, w.sa);
    assert_eq!(sent.len(), 2);
    let (ta, tb) = (
        w.sim.terminal(w.client, a).at,
        w.sim.terminal(w.client, b).at,
    );
    assert_eq!(ta, Instant::ZERO + D + D);
    assert_eq!(
        sent[1].at, ta,
        "the second request leaves when the first is answered"
    );
    assert_eq!(tb, ta + D + D);
}

#[test]
fn nstart_counts_an_acknowledged_request_as_no_longer_outstanding() {
    // §4.7: a request whose Empty ACK arrived is not outstanding, even if its separate
    // response has not come yet.
    let mut w = world(10).build();
    w.serve(Answer::After(millis(1500)));
    let a = w.request(&con_get("a", b"a"));
    let b = w.request(&con_get("b", b"b"));
    w.sim.run_until(at_secs(10));
    let b_sent = w
        .sim
        .sent_to(w.client, w.sa)
        .into_iter()
        .find(|s| s.code() != 0 && s.at > Instant::ZERO)
        .unwrap()
        .at;
    let empty_ack_arrives = Instant::ZERO + D + Config::default().empty_ack_delay + D;
    assert_eq!(b_sent, empty_ack_arrives);
    assert!(b_sent < w.sim.terminal(w.client, a).at);
    assert_eq!(response_of(w.sim.terminal(w.client, b)).payload, b"b");
}

#[test]
fn full_request_queue_is_refused_with_queue_full_and_changes_nothing() {
    let client = Config {
        limits: Limits {
            max_queued_requests: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut w = world(11).client(client).build();
    w.serve(Answer::Now);
    let ids: Vec<_> = (0..3)
        .map(|i| w.request(&con_get("q", format!("{i}").as_bytes())))
        .collect();
    let events_before = w.sim.events(w.client).len();
    let sent_before = w.sim.sent(w.client).len();
    assert_eq!(
        w.sim.request(w.client, w.sa, &con_get("q", b"3")),
        Err(Error::QueueFull)
    );
    assert_eq!(w.sim.events(w.client).len(), events_before);
    assert_eq!(w.sim.sent(w.client).len(), sent_before);
    let fp = w
        .sim
        .endpoint(w.client)
        .session_info(w.sa)
        .unwrap()
        .footprint;
    assert_eq!((fp.exchanges, fp.queued_requests), (1, 2));

    w.sim.run_until(at_secs(10));
    let mut last = Instant::ZERO;
    for (i, id) in ids.iter().enumerate() {
        let done = w.sim.terminal(w.client, *id);
        assert_eq!(response_of(done).payload, format!("{i}").as_bytes());
        assert!(done.at > last, "answered in order");
        last = done.at;
    }
    assert_eq!(
        w.sim.requests_seen(w.server).len(),
        3,
        "the refused request never left"
    );
    // Room again once the queue drained.
    let again = w.request(&con_get("q", b"4"));
    w.sim.run_until(at_secs(20));
    assert_eq!(response_of(w.sim.terminal(w.client, again)).payload, b"4");
}

// =============================================================================================
// RFC 7252 §4.3: ping

#[test]
fn ping_is_answered_by_reset_and_reported_as_pong_without_server_state() {
    let mut w = world(12).build();
    let id = w.sim.ping(w.client, w.sa).unwrap();
    w.sim.run_until(at_secs(10));

    let ping = &w.sim.sent_to(w.client, w.sa)[0];
    assert!(ping.is_empty_con());
    let rst = &w.sim.sent_to(w.server, w.ca)[0];
    assert_eq!(
        (rst.mtype(), rst.code(), rst.mid()),
        (MessageType::Reset, 0, ping.mid())
    );
    let done = w.sim.terminal(w.client, id);
    assert_eq!(done.at, Instant::ZERO + D + D);
    let Event::Pong { rtt, .. } = done.event else {
        panic!("expected Pong: {done:?}")
    };
    assert_eq!(rtt, D + D);
    assert!(
        w.sim.events(w.server).is_empty(),
        "a ping is not an application event"
    );
    assert_eq!(
        w.sim.endpoint(w.server).session_count(),
        0,
        "a stranger's ping creates no state"
    );
}

#[test]
fn ping_to_a_silent_peer_fails_with_timeout() {
    let mut w = world(13).build();
    let silent = addr(6000);
    let id = w.sim.ping(w.client, silent).unwrap();
    w.sim.run_until(at_secs(400));
    let times: Vec<_> = w
        .sim
        .sent_to(w.client, silent)
        .iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(times.len(), 5);
    let t = assert_backoff(&times);
    let done = w.sim.terminal(w.client, id);
    assert_eq!(failure_of(done), ExchangeError::Timeout);
    assert!(matches!(done.event, Event::PingFailed { .. }));
    assert_eq!(done.at, Instant::ZERO + t * 31);
}

// =============================================================================================
// Sessions: lifecycle, reaping, lifetimes and caps

#[test]
fn session_lifecycle_events_on_both_sides() {
    let mut w = world(14).build();
    w.serve(Answer::Now);
    let id = w.request(&con_get("hello", b""));
    w.sim.run_until(at_secs(10));

    let kinds = |node| -> Vec<(Instant, &'static str)> {
        w.sim
            .events(node)
            .iter()
            .map(|l| {
                let k = match l.event {
                    Event::SessionNew { .. } => "new",
                    Event::SessionEstablished { .. } => "established",
                    Event::Request { .. } => "request",
                    Event::Response { .. } => "response",
                    _ => "other",
                };
                (l.at, k)
            })
            .collect()
    };
    let t = |n: u64| Instant::ZERO + D * n;
    assert_eq!(
        kinds(w.client),
        vec![(t(0), "new"), (t(2), "established"), (t(2), "response")]
    );
    assert_eq!(
        kinds(w.server),
        vec![(t(1), "new"), (t(1), "established"), (t(1), "request")]
    );
    assert_eq!(w.sim.terminal(w.client, id).at, t(2));

    let ci = w.sim.endpoint(w.client).session_info(w.sa).unwrap();
    let si = w.sim.endpoint(w.server).session_info(w.ca).unwrap();
    assert!(ci.established && !ci.opened_by_peer);
    assert!(si.established && si.opened_by_peer);
    assert_eq!(ci.last_heard, t(2));
    assert_eq!(si.last_heard, t(1));
}

#[test]
fn idle_server_session_is_reaped_and_dedup_state_freed_after_exchange_and_non_lifetimes() {
    let mut w = world(15).build();
    w.serve(Answer::Now);
    w.request(&con_get("a", b""));
    w.sim.run_until(at_secs(10));
    w.request(&non_get("b", b""));
    w.sim.run_until(at_secs(20));

    let p = params();
    let con_seen = Instant::ZERO + D; // CON request's Message ID remembered at the server
    let non_seen = at_secs(10) + D; // NON request's, and the last activity (answered at once)
    let idle = Config::default().idle_timeout;
    let server_fp = |w: &World| {
        w.sim
            .endpoint(w.server)
            .session_info(w.ca)
            .map(|i| i.footprint)
    };
    let with_dedup = |n| SessionFootprint {
        dedup_entries: n,
        ..zero_footprint()
    };
    assert_eq!(server_fp(&w), Some(with_dedup(2)));

    w.sim.run_until(just_before(non_seen + p.non_lifetime()));
    assert_eq!(server_fp(&w), Some(with_dedup(2)));
    w.sim.run_until(non_seen + p.non_lifetime());
    assert_eq!(
        server_fp(&w),
        Some(with_dedup(1)),
        "NON entry forgotten after NON_LIFETIME"
    );
    w.sim
        .run_until(just_before(con_seen + p.exchange_lifetime()));
    assert_eq!(server_fp(&w), Some(with_dedup(1)));
    w.sim.run_until(con_seen + p.exchange_lifetime());
    assert_eq!(
        server_fp(&w),
        Some(zero_footprint()),
        "CON entry forgotten after EXCHANGE_LIFETIME"
    );

    w.sim.run_until(just_before(non_seen + idle));
    assert!(server_fp(&w).is_some());
    w.sim.run_until(non_seen + idle);
    assert_eq!(server_fp(&w), None, "reaped after idle_timeout");
    let closed = w
        .sim
        .events_where(w.server, |e| matches!(e, Event::SessionClosed { .. }));
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].at, non_seen + idle);
    assert!(matches!(
        closed[0].event,
        Event::SessionClosed {
            reason: CloseReason::Idle,
            ..
        }
    ));
    // The ended session's memory (dedup cache, Message ID counter) outlives it by
    // EXCHANGE_LIFETIME, so a returning peer can neither replay a request nor meet a re-used
    // Message ID (RFC 7252 §4.4, §4.5); then it is gone too.
    let forgotten = non_seen + idle + p.exchange_lifetime();
    assert_eq!(w.sim.endpoint(w.server).remembered_peers(), 1);
    assert_eq!(w.sim.endpoint(w.server).poll_timeout(), Some(forgotten));
    w.sim.run_until(forgotten);
    assert_eq!(w.sim.endpoint(w.server).remembered_peers(), 0);
    assert_eq!(
        w.sim.endpoint(w.server).poll_timeout(),
        None,
        "nothing left to do"
    );

    // Nothing is due anywhere any more: the simulation is quiet for good.
    let quiet_at = w.sim.run_until_quiet(secs(3600), at_secs(100_000));
    assert_eq!(quiet_at, forgotten);
    assert_eq!(w.sim.next_time(), None);

    // The client opened its session: never reaped, but its dedup state (the NON response's
    // Message ID) is gone after NON_LIFETIME too.
    let info = w.sim.endpoint(w.client).session_info(w.sa).unwrap();
    assert_eq!(info.footprint, zero_footprint());
}

#[test]
fn session_cap_rejects_new_peers_statelessly_until_a_session_is_freed() {
    let server = Config {
        limits: Limits {
            max_sessions: 1,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut w = world(16).server(server).build();
    w.serve(Answer::Now);
    let other_addr = addr(40_001);
    let other = w.sim.add_endpoint(other_addr, Config::default());

    let first = w.request(&con_get("a", b""));
    w.sim.run_until(at_secs(1));
    assert!(matches!(
        w.sim.terminal(w.client, first).event,
        Event::Response { .. }
    ));

    // A CON from a new peer beyond the cap gets a Reset and leaves no state.
    let con = w.sim.request(other, w.sa, &con_get("b", b"")).unwrap();
    // A NON from a new peer beyond the cap is dropped.
    w.sim.run_until(at_secs(2));
    let non = w.sim.request(other, w.sa, &non_get("b", b"")).unwrap();
    w.sim.run_until(at_secs(200));
    assert_eq!(failure_of(w.sim.terminal(other, con)), ExchangeError::Reset);
    let non_done = w.sim.terminal(other, non);
    assert_eq!(failure_of(non_done), ExchangeError::Timeout);
    assert_eq!(non_done.at, at_secs(2) + Config::default().response_timeout);
    assert_eq!(
        w.sim.sent_to(w.server, other_addr).len(),
        1,
        "one stateless Reset, nothing for the NON"
    );
    assert!(w
        .sim
        .requests_seen(w.server)
        .iter()
        .all(|r| r.2.payload.is_empty()));
    assert_eq!(w.sim.requests_seen(w.server).len(), 1);
    assert_eq!(w.sim.endpoint(w.server).session_count(), 1);
    assert!(w.sim.endpoint(w.server).session_info(other_addr).is_none());
    assert!(w
        .sim
        .events(w.server)
        .iter()
        .all(|l| !matches!(l.event, Event::SessionNew { peer } if peer == other_addr)));

    // Once the first session is reaped (idle), the new peer gets in.
    w.sim.run_until(at_secs(400));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
    let late = w.sim.request(other, w.sa, &con_get("c", b"late")).unwrap();
    w.sim.run_until(at_secs(410));
    assert_eq!(response_of(w.sim.terminal(other, late)).payload, b"late");
}

#[test]
fn session_cap_refuses_local_calls_to_new_peers_with_session_limit() {
    let client = Config {
        limits: Limits {
            max_sessions: 1,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut w = world(17).client(client).build();
    w.serve(Answer::Now);
    w.request(&con_get("a", b""));
    w.sim.run_until(at_secs(1));
    let sent = w.sim.sent(w.client).len();
    let events = w.sim.events(w.client).len();
    let elsewhere = addr(5684);
    assert_eq!(
        w.sim.request(w.client, elsewhere, &con_get("b", b"")),
        Err(Error::SessionLimit)
    );
    assert_eq!(w.sim.ping(w.client, elsewhere), Err(Error::SessionLimit));
    assert_eq!(
        w.sim.open_session(w.client, elsewhere),
        Err(Error::SessionLimit)
    );
    assert_eq!(
        (w.sim.sent(w.client).len(), w.sim.events(w.client).len()),
        (sent, events)
    );
    assert_eq!(w.sim.endpoint(w.client).session_count(), 1);
    // Closing the session makes room.
    w.sim.close_session(w.client, w.sa).unwrap();
    assert!(w.sim.ping(w.client, elsewhere).is_ok());
}

#[test]
fn pending_request_cap_is_answered_503_by_the_engine() {
    let server = Config {
        limits: Limits {
            max_pending_requests: 2,
            ..Limits::default()
        },
        ..Config::default()
    };
    let client = Config {
        transmission: TransmissionParameters {
            nstart: 3,
            ..params()
        },
        ..Config::default()
    };
    let mut w = world(18).client(client).server(server).build();
    w.serve(Answer::Never);
    let ids: Vec<_> = (0..3)
        .map(|i| w.request(&con_get("p", format!("{i}").as_bytes())))
        .collect();
    w.sim.run_until(at_secs(5));
    assert_eq!(
        w.sim.requests_seen(w.server).len(),
        2,
        "the application holds two"
    );
    let busy = w.sim.terminal(w.client, ids[2]);
    assert_eq!(
        busy.at,
        Instant::ZERO + D + D,
        "answered by the engine at once, piggybacked"
    );
    let r = response_of(busy);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(r.header.get_type(), MessageType::Acknowledgement);
    assert!(
        w.sim.terminals(w.client, ids[0]).is_empty()
            && w.sim.terminals(w.client, ids[1]).is_empty()
    );

    // A NON request over the cap gets a NON 5.03.
    let non = w.request(&non_get("p", b"n"));
    w.sim.run_until(at_secs(6));
    let r = response_of(w.sim.terminal(w.client, non));
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(r.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(w.sim.requests_seen(w.server).len(), 2);
}

// =============================================================================================
// Liveness: the contract this engine exists for (crate docs, DESIGN.md §2)

const INTERVAL: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(10);

fn ka() -> Keepalive {
    keepalive(INTERVAL, TIMEOUT)
}

fn with_keepalive(c: Config) -> Config {
    Config {
        keepalive: Some(ka()),
        ..c
    }
}

/// Client with keepalive (20 s, 10 s), server answering at once; one request at t = 0, then
/// the keepalive keeps the session established (pings answered by Reset) up to `until`.
fn established_keepalive_world(seed: u64, client: Config, until: Instant) -> World {
    let mut w = world(seed).client(with_keepalive(client)).build();
    w.serve(Answer::Now);
    let id = w.request(&con_get("hello", b""));
    w.sim.run_until(until);
    assert!(matches!(
        w.sim.terminal(w.client, id).event,
        Event::Response { .. }
    ));
    let info = w.sim.endpoint(w.client).session_info(w.sa).unwrap();
    assert!(info.established);
    // Keepalive probes went out and were answered while the link was up.
    let probes = w
        .sim
        .sent_to(w.client, w.sa)
        .iter()
        .filter(|s| s.is_empty_con())
        .count();
    assert!(
        probes >= 2,
        "keepalive pinged the idle peer ({probes} probes)"
    );
    assert!(w
        .sim
        .events(w.client)
        .iter()
        .all(|l| !matches!(l.event, Event::SessionFailed { .. })));
    w
}

/// The client's one SessionFailed: asserts it is a keepalive failure within the bound measured
/// from what the client actually received, and not earlier than the bound either (without
/// `fail_after_unreachable`, failed sends alone never fail a session). Returns (failed_at,
/// last_heard).
fn assert_keepalive_failure_within_bound(
    sim: &Sim,
    node: NodeId,
    peer: SocketAddr,
) -> (Instant, Instant) {
    let failures = session_failures(sim, node);
    assert_eq!(
        failures.len(),
        1,
        "exactly one session failure: {:#?}",
        sim.events(node)
    );
    let (failed_at, p, reason) = failures[0];
    assert_eq!(p, peer);
    let last_heard = sim
        .last_heard(node, peer)
        .expect("the peer was heard before");
    let deadline = last_heard + INTERVAL + TIMEOUT;
    assert!(
        failed_at <= deadline,
        "failure at {failed_at:?} later than last_heard {last_heard:?} + interval + timeout"
    );
    assert!(
        failed_at >= deadline,
        "failure at {failed_at:?} before the bound {deadline:?}: premature"
    );
    let FailureReason::KeepaliveTimeout { silent_for } = reason else {
        panic!("{reason:?}")
    };
    assert_eq!(silent_for, failed_at - last_heard);
    assert!(
        sim.endpoint(node).session_info(peer).is_none(),
        "the failed session's state is freed"
    );
    (failed_at, last_heard)
}

/// No busy loop on a dead link: the transmits to `peer` after `cut` (the probe and its
/// retransmissions, plus `extra_cons` other Confirmables) fit the §4.2 schedule, consecutive
/// transmissions of one message are at least ACK_TIMEOUT apart, and nothing is sent once the
/// session has failed.
fn assert_no_busy_loop(
    sim: &Sim,
    node: NodeId,
    peer: SocketAddr,
    cut: Instant,
    failed_at: Instant,
    extra_cons: usize,
) {
    let after: Vec<_> = sim
        .sent_to(node, peer)
        .into_iter()
        .filter(|s| s.at >= cut)
        .collect();
    let allowed = (1 + extra_cons) * max_con_transmissions_within(failed_at - cut);
    assert!(!after.is_empty(), "the engine kept probing the dead link");
    assert!(
        after.len() <= allowed,
        "{} transmits after the cut, at most {allowed} allowed: {after:#?}",
        after.len()
    );
    assert!(
        after.iter().all(|s| s.at <= failed_at),
        "nothing is sent after the failure"
    );
    let mut by_mid: std::collections::BTreeMap<u16, Vec<Instant>> = Default::default();
    for s in &after {
        by_mid.entry(s.mid()).or_default().push(s.at);
    }
    for times in by_mid.values() {
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= ack_timeout()),
            "retried early: {times:?}"
        );
    }
    assert_eq!(
        sim.endpoint(node).poll_timeout(),
        None,
        "no timer left for a failed session"
    );
}

#[test]
fn keepalive_detects_unreachable_sends_within_bound() {
    for seed in 0..16 {
        let cut = at_secs(50) + millis(seed * 1_700); // anywhere in the ping cycle
        let mut w = established_keepalive_world(seed, Config::default(), cut);
        w.sim
            .fail_sends(w.ca, None, Window::from(cut), SendErrorKind::Unreachable);
        w.sim.run_until(cut + secs(300));

        let (failed_at, last_heard) = assert_keepalive_failure_within_bound(&w.sim, w.client, w.sa);
        assert!(last_heard < cut);
        // Every failed transmit was reported back as exactly one SendFailed event.
        let failed: Vec<_> = w
            .sim
            .sent(w.client)
            .iter()
            .filter(|s| matches!(s.fate, Fate::Failed(_)))
            .collect();
        let reported: Vec<_> = w
            .sim
            .events(w.client)
            .iter()
            .filter_map(|l| match l.event {
                Event::SendFailed {
                    transmit,
                    peer,
                    kind,
                } => Some((l.at, transmit, peer, kind)),
                _ => None,
            })
            .collect();
        assert!(!failed.is_empty());
        assert_eq!(
            reported,
            failed
                .iter()
                .map(|s| (s.at, s.id, s.to, SendErrorKind::Unreachable))
                .collect::<Vec<_>>(),
            "seed {seed}: one SendFailed per failed transmit, at once"
        );
        assert_no_busy_loop(&w.sim, w.client, w.sa, cut, failed_at, 0);
    }
}

#[test]
fn keepalive_detects_silent_loss_within_bound() {
    for seed in 0..16 {
        let cut = at_secs(50) + millis(seed * 1_700);
        let mut w = established_keepalive_world(seed, Config::default(), cut);
        w.sim.isolate(w.ca, Window::from(cut));
        w.sim.run_until(cut + secs(300));

        let (failed_at, last_heard) = assert_keepalive_failure_within_bound(&w.sim, w.client, w.sa);
        assert!(last_heard < cut);
        assert!(w
            .sim
            .events(w.client)
            .iter()
            .all(|l| !matches!(l.event, Event::SendFailed { .. })));
        assert_no_busy_loop(&w.sim, w.client, w.sa, cut, failed_at, 0);
    }
}

#[test]
fn keepalive_bound_holds_while_con_is_retransmitting() {
    for seed in 0..16 {
        let mut w = established_keepalive_world(seed, Config::default(), at_secs(45));
        // From now on every request is lost; from t = 50 s the link is dead both ways.
        let sa = w.sa;
        w.sim.set_filter(move |d| {
            if d.to == sa && d.is_request() {
                Verdict::Drop
            } else {
                Verdict::Pass
            }
        });
        let id = w.request(&con_get("doomed", b""));
        let cut = at_secs(50);
        w.sim.partition(w.ca, w.sa, Window::from(cut));
        w.sim.run_until(cut);
        let req_mid = w.sim.sent_to(w.client, w.sa).last().unwrap().mid();
        assert!(
            transmissions_of(&w.sim, w.client, w.sa, req_mid).len() >= 2,
            "the request is retransmitting when the link dies"
        );
        w.sim.run_until(at_secs(400));

        let (failed_at, last_heard) = assert_keepalive_failure_within_bound(&w.sim, w.client, w.sa);
        let done = w.sim.terminal(w.client, id);
        assert_eq!(done.at, failed_at, "the request ends with its session");
        assert!(
            matches!(
                failure_of(done),
                ExchangeError::SessionFailed(FailureReason::KeepaliveTimeout { .. })
            ),
            "{done:?}"
        );
        // The ping was not held back by the outstanding CON (NSTART is full).
        let probe_due = last_heard + INTERVAL;
        assert!(
            w.sim
                .sent_to(w.client, w.sa)
                .iter()
                .any(|s| s.is_empty_con() && s.at == probe_due),
            "seed {seed}: keepalive probe at {probe_due:?} despite the outstanding request"
        );
        assert_no_busy_loop(&w.sim, w.client, w.sa, cut, failed_at, 1);
    }
}

#[test]
fn server_keepalive_detects_vanished_client() {
    for seed in 0..16 {
        let mut w = world(seed)
            .server(with_keepalive(Config::default()))
            .build();
        w.serve(Answer::Now);
        w.request(&con_get("a", b""));
        w.sim.run_until(at_secs(15));
        w.request(&con_get("b", b""));
        let vanish = at_secs(16) + millis(seed * 2_300);
        w.sim.isolate(w.ca, Window::from(vanish));
        w.sim.run_until(at_secs(400));

        let (failed_at, _) = assert_keepalive_failure_within_bound(&w.sim, w.server, w.ca);
        assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
        assert!(w.sim.endpoint(w.server).session_info(w.ca).is_none());
        assert_no_busy_loop(&w.sim, w.server, w.ca, vanish, failed_at, 0);
        assert!(
            w.sim
                .events(w.server)
                .iter()
                .all(|l| !matches!(l.event, Event::SessionClosed { .. })),
            "failed, not reaped as idle"
        );
    }
}

#[test]
fn fail_after_unreachable_fails_the_session_before_the_keepalive_bound() {
    for n in [1u32, 2, 3] {
        let client = Config {
            fail_after_unreachable: Some(n),
            ..Config::default()
        };
        let cut = at_secs(50);
        let mut w = established_keepalive_world(u64::from(n), client, cut);
        w.sim
            .fail_sends(w.ca, None, Window::from(cut), SendErrorKind::Unreachable);
        let id = w.request(&con_get("x", b""));
        w.sim.run_until(at_secs(400));

        let failures = session_failures(&w.sim, w.client);
        assert_eq!(failures.len(), 1);
        let (failed_at, _, reason) = failures[0];
        assert_eq!(reason, FailureReason::Unreachable { failures: n });
        let nth_failed_send = w
            .sim
            .sent(w.client)
            .iter()
            .filter(|s| matches!(s.fate, Fate::Failed(_)))
            .nth(n as usize - 1)
            .unwrap()
            .at;
        assert_eq!(
            failed_at, nth_failed_send,
            "fails on the n-th consecutive unreachable send"
        );
        let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
        assert!(
            failed_at < last_heard + INTERVAL + TIMEOUT,
            "earlier than the keepalive bound"
        );
        assert_eq!(
            failure_of(w.sim.terminal(w.client, id)),
            ExchangeError::SessionFailed(FailureReason::Unreachable { failures: n })
        );
        assert!(w.sim.endpoint(w.client).session_info(w.sa).is_none());
    }
}

#[test]
fn unreachable_count_restarts_when_the_peer_is_heard() {
    // Two failed sends, then the link recovers and the peer is heard: the count starts over,
    // so a third failure much later does not fail the session with fail_after_unreachable = 3.
    let client = Config {
        fail_after_unreachable: Some(3),
        ..Config::default()
    };
    let mut w = world(19).client(client).build();
    w.serve(Answer::Now);
    // Transmissions at 0 and 0+T fail; 0+3T goes through.
    w.sim.fail_sends(
        w.ca,
        None,
        Window::new(Instant::ZERO, at_secs(5)),
        SendErrorKind::Unreachable,
    );
    let first = w.request(&con_get("a", b""));
    w.sim.run_until(at_secs(20));
    assert!(matches!(
        w.sim.terminal(w.client, first).event,
        Event::Response { .. }
    ));
    w.sim.fail_sends(
        w.ca,
        None,
        Window::new(at_secs(20), at_secs(21)),
        SendErrorKind::Unreachable,
    );
    let second = w.request(&con_get("b", b""));
    w.sim.run_until(at_secs(40));
    assert!(matches!(
        w.sim.terminal(w.client, second).event,
        Event::Response { .. }
    ));
    assert!(session_failures(&w.sim, w.client).is_empty());
    assert_eq!(
        w.sim
            .events_where(w.client, |e| matches!(e, Event::SendFailed { .. }))
            .len(),
        3
    );
}

#[test]
fn open_session_with_keepalive_fails_a_peer_that_is_never_heard() {
    let mut w = world(20).build();
    let silent = addr(6000);
    w.sim.run_until(at_secs(7));
    w.sim.open_session(w.client, silent).unwrap();
    w.sim.set_keepalive(w.client, silent, Some(ka())).unwrap();
    assert!(
        w.sim.sent(w.client).is_empty(),
        "opening a session sends nothing"
    );
    w.sim.run_until(at_secs(400));
    let failures = session_failures(&w.sim, w.client);
    assert_eq!(failures.len(), 1);
    // Never heard: silence counts from the opening.
    assert_eq!(failures[0].0, at_secs(7) + INTERVAL + TIMEOUT);
    let probes = w.sim.sent_to(w.client, silent);
    assert_eq!(
        probes[0].at,
        at_secs(7) + INTERVAL,
        "first probe after interval of silence"
    );
    assert!(probes.iter().all(|s| s.is_empty_con()));
}

#[test]
fn keepalive_probe_send_failures_of_every_kind_never_busy_loop_or_postpone_failure() {
    let kinds = [
        SendErrorKind::Unreachable,
        SendErrorKind::Refused,
        SendErrorKind::TooBig,
        SendErrorKind::Other,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let cut = at_secs(50);
        let mut w = established_keepalive_world(100 + i as u64, Config::default(), cut);
        w.sim.fail_sends(w.ca, None, Window::from(cut), kind);
        w.sim.run_until(cut + secs(300));
        let (failed_at, _) = assert_keepalive_failure_within_bound(&w.sim, w.client, w.sa);
        assert_no_busy_loop(&w.sim, w.client, w.sa, cut, failed_at, 0);
    }
}

#[test]
fn pings_are_answered_while_nstart_queue_is_full() {
    // The application's ping is not queued behind outstanding requests.
    let mut w = world(21).build();
    w.serve(Answer::Never);
    let sa = w.sa;
    w.sim.set_filter(move |d| {
        if d.to == sa && d.is_request() {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    let _a = w.request(&con_get("a", b""));
    let _b = w.request(&con_get("b", b""));
    w.sim.run_until(at_secs(1));
    let ping = w.sim.ping(w.client, w.sa).unwrap();
    w.sim.run_until(at_secs(2));
    let done = w.sim.terminal(w.client, ping);
    assert!(matches!(done.event, Event::Pong { .. }));
    assert_eq!(done.at, at_secs(1) + D + D);
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut w = world(seed).build();
        w.sim.set_default_link(Link {
            delay: D,
            jitter: millis(50),
            loss: 0.3,
            duplicate: 0.2,
        });
        w.serve(Answer::After(millis(700)));
        let log = Rc::new(RefCell::new(Vec::new()));
        for i in 0..5u64 {
            let (c, sa, log) = (w.client, w.sa, log.clone());
            w.sim.at(at_secs(i * 3), move |sim| {
                let id = sim.request(c, sa, &con_get("r", &i.to_be_bytes())).unwrap();
                log.borrow_mut().push(id);
            });
        }
        w.sim.run_until(at_secs(400));
        let trace: Vec<String> = w
            .sim
            .sent(w.client)
            .iter()
            .chain(w.sim.sent(w.server))
            .map(|s| format!("{:?} {:?} {:?}", s.at, &*s.bytes, s.fate))
            .collect();
        trace
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn tightening_keepalive_on_a_quiet_live_session_probes_it_before_failing_it() {
    // The session's keepalive (60 s, 30 s) had no reason to probe the quiet peer yet; a new,
    // shorter keepalive measures silence from when it is set (Endpoint::set_keepalive), so the
    // live peer is probed, answers, and stays.
    let client = Config {
        keepalive: Some(keepalive(secs(60), secs(30))),
        ..Config::default()
    };
    let mut w = world(22).client(client).build();
    w.serve(Answer::Now);
    w.request(&con_get("a", b""));
    w.sim.run_until(at_secs(25));
    w.sim.set_keepalive(w.client, w.sa, Some(ka())).unwrap();
    w.sim.run_until(at_secs(100));
    assert!(
        session_failures(&w.sim, w.client).is_empty(),
        "{:#?}",
        w.sim.events(w.client)
    );
    let first_probe = w
        .sim
        .sent_to(w.client, w.sa)
        .into_iter()
        .find(|s| s.is_empty_con())
        .unwrap()
        .at;
    assert_eq!(first_probe, at_secs(25) + INTERVAL);

    // And the new bound is the one enforced once the peer goes away.
    w.sim.isolate(w.ca, Window::from(at_secs(100)));
    w.sim.run_until(at_secs(300));
    assert_keepalive_failure_within_bound(&w.sim, w.client, w.sa);
}

#[test]
fn keepalive_switched_off_stops_probing_and_never_fails_the_session() {
    let mut w = established_keepalive_world(23, Config::default(), at_secs(45));
    w.sim.set_keepalive(w.client, w.sa, None).unwrap();
    let sent = w.sim.sent(w.client).len();
    w.sim.isolate(w.ca, Window::from(at_secs(46)));
    w.sim.run_until(at_secs(1000));
    // A probe already in flight may finish its retransmissions; nothing new starts.
    let later: Vec<_> = w.sim.sent(w.client)[sent..]
        .iter()
        .map(|s| s.mid())
        .collect();
    assert!(
        later.iter().all(|&m| m == later[0]),
        "only the probe in flight: {later:?}"
    );
    assert!(session_failures(&w.sim, w.client).is_empty());
    assert_eq!(
        w.sim
            .endpoint(w.client)
            .session_info(w.sa)
            .unwrap()
            .keepalive,
        None
    );
    assert_eq!(w.sim.endpoint(w.client).poll_timeout(), None);
}
