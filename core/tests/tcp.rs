//! CoAP over TCP (RFC 8323) on the simulator's stream links, and the wire format against
//! hand-made frames: CSM, Ping/Pong, Release, Abort, framing errors, connections that
//! fail, reset or stall, and the liveness contract over streams.
#![cfg(feature = "tcp")]
// Each test needs the roles and parts it exercises; the helpers are shared, so in a build
// without some of them a few helpers serve no test there.
#![cfg_attr(
    not(all(
        feature = "client",
        feature = "server",
        feature = "observe",
        feature = "blockwise"
    )),
    allow(dead_code, unused_imports)
)]

mod sim;

use std::net::SocketAddr;

use coap_engine::coap_lite::{MessageClass, MessageType, RequestType};
use coap_engine::{
    CloseReason, Config, ConnectionFailure, Duration, Endpoint, Error, Event, ExchangeError,
    FailureReason, Instant, Keepalive, Limits, ObserverRemoval, SendErrorKind, StreamClosed,
    StreamCommand, Transport,
};
use sim::*;

const D: Duration = Duration::from_millis(10);

fn tcp() -> Config {
    Config {
        transport: Transport::Tcp,
        ..Config::default()
    }
}

/// A client at 40000 and a server at 5683 over a stream link with delay `D`; the server
/// application is `hello`.
#[cfg(all(feature = "client", feature = "server"))]
impl World {
    fn new(seed: u64, client: Config, server: Config) -> Self {
        World::builder(seed)
            .delay(D)
            .client(client)
            .server(server)
            .server_app(hello)
            .build()
    }

    fn default(seed: u64) -> Self {
        World::new(seed, tcp(), tcp())
    }
}

/// One frame of RFC 8323 (for hand-made input): code, token, options (in order), payload.
fn frame(code: u8, token: &[u8], options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut previous = 0;
    for &(number, value) in options {
        let delta = number - previous;
        previous = number;
        assert!(delta < 13 && value.len() < 13, "small options only");
        body.push((delta as u8) << 4 | value.len() as u8);
        body.extend_from_slice(value);
    }
    if !payload.is_empty() {
        body.push(0xFF);
        body.extend_from_slice(payload);
    }
    let len = body.len();
    let mut f = Vec::new();
    if len < 13 {
        f.push((len as u8) << 4 | token.len() as u8);
    } else {
        assert!(len < 269);
        f.push(13 << 4 | token.len() as u8);
        f.push((len - 13) as u8);
    }
    f.push(code);
    f.extend_from_slice(token);
    f.extend_from_slice(&body);
    f
}

/// A frame with a body of any size (all four length forms, RFC 8323 §3.2).
fn frame_long(code: u8, token: &[u8], options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut previous = 0;
    for &(number, value) in options {
        let delta = number - previous;
        previous = number;
        assert!(value.len() < 13, "short option values only");
        if delta < 13 {
            body.push((delta as u8) << 4 | value.len() as u8);
        } else {
            body.push(13 << 4 | value.len() as u8);
            body.push((delta - 13) as u8);
        }
        body.extend_from_slice(value);
    }
    if !payload.is_empty() {
        body.push(0xFF);
        body.extend_from_slice(payload);
    }
    let len = body.len();
    let mut f = Vec::new();
    let tkl = token.len() as u8;
    match len {
        0..=12 => f.push((len as u8) << 4 | tkl),
        13..=268 => f.extend_from_slice(&[13 << 4 | tkl, (len - 13) as u8]),
        269..=65_804 => {
            f.push(14 << 4 | tkl);
            f.extend_from_slice(&((len - 269) as u16).to_be_bytes());
        }
        _ => {
            f.push(15 << 4 | tkl);
            f.extend_from_slice(&((len - 65_805) as u32).to_be_bytes());
        }
    }
    f.push(code);
    f.extend_from_slice(token);
    f.extend_from_slice(&body);
    f
}

const fn code(class: u8, detail: u8) -> u8 {
    class << 5 | detail
}

const CSM: u8 = code(7, 1);
const PING: u8 = code(7, 2);
const PONG: u8 = code(7, 3);
const RELEASE: u8 = code(7, 4);
const ABORT: u8 = code(7, 5);

/// Reads frames back (small ones): (code, token, options, payload).
/// A frame read back: (code, token, options, payload).
type Frame = (u8, Vec<u8>, Vec<(u16, Vec<u8>)>, Vec<u8>);

fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let tkl = usize::from(bytes[0] & 0x0F);
        let (len, ext) = match bytes[0] >> 4 {
            13 => (usize::from(bytes[1]) + 13, 1),
            14 => (
                usize::from(u16::from_be_bytes([bytes[1], bytes[2]])) + 269,
                2,
            ),
            15 => panic!("huge frame"),
            l => (usize::from(l), 0),
        };
        let code = bytes[1 + ext];
        let token = bytes[2 + ext..2 + ext + tkl].to_vec();
        let mut rest = &bytes[2 + ext + tkl..2 + ext + tkl + len];
        bytes = &bytes[2 + ext + tkl + len..];
        let mut options = Vec::new();
        let mut number = 0;
        let mut payload = Vec::new();
        while let Some(&b) = rest.first() {
            if b == 0xFF {
                payload = rest[1..].to_vec();
                break;
            }
            let (mut delta, mut l) = (u16::from(b >> 4), usize::from(b & 0x0F));
            rest = &rest[1..];
            if delta == 13 {
                delta = u16::from(rest[0]) + 13;
                rest = &rest[1..];
            }
            if l == 13 {
                l = usize::from(rest[0]) + 13;
                rest = &rest[1..];
            }
            number += delta;
            options.push((number, rest[..l].to_vec()));
            rest = &rest[l..];
        }
        out.push((code, token, options, payload));
    }
    out
}

/// An endpoint driven by hand: a server that accepted a connection from PEER.
struct Hand {
    ep: Endpoint,
    written: Vec<u8>,
    commands: Vec<StreamCommand>,
    events: Vec<Event>,
    now: Instant,
}

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 41_000);

impl Hand {
    fn server(config: Config) -> Self {
        let mut h = Hand {
            ep: Endpoint::new(config, 3).unwrap(),
            written: Vec::new(),
            commands: Vec::new(),
            events: Vec::new(),
            now: Instant::ZERO,
        };
        h.ep.handle_accepted(h.now, PEER).unwrap();
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.written.extend_from_slice(&t.payload);
            self.ep.handle_send_result(self.now, t.id, Ok(()));
        }
        while let Some(c) = self.ep.poll_stream_command() {
            self.commands.push(c);
        }
        while let Some(e) = self.ep.poll_event() {
            self.events.push(e);
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.ep.handle_datagram(self.now, PEER, bytes);
        self.drain();
    }

    fn take(&mut self) -> Vec<Frame> {
        frames(&std::mem::take(&mut self.written))
    }
}

fn csm(max: u32) -> Vec<u8> {
    let max = max.to_be_bytes();
    let first = max.iter().position(|&b| b != 0).unwrap_or(4);
    frame(CSM, &[], &[(2, &max[first..]), (4, &[])], &[])
}

// ---------------------------------------------------------------------------------------------
// The wire

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn both_sides_send_a_csm_first_with_their_limits() {
    let mut w = World::new(
        1,
        tcp(),
        Config {
            max_message_size: 2048,
            ..tcp()
        },
    );
    let id = w.get(b"a");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello a".to_vec()));
    for (node, max) in [(w.client, 1152u32), (w.server, 2048)] {
        let first = frames(&w.sim.sent(node)[0].bytes);
        let (code, token, options, payload) = &first[0];
        assert_eq!(*code, CSM, "the first frame from node {node}");
        assert!(token.is_empty() && payload.is_empty());
        let max_opt = options
            .iter()
            .find(|(n, _)| *n == 2)
            .expect("Max-Message-Size");
        assert_eq!(
            max_opt.1.iter().fold(0u32, |a, &b| a << 8 | u32::from(b)),
            max
        );
        assert!(
            options.iter().any(|(n, v)| *n == 4 && v.is_empty()),
            "Block-Wise-Transfer"
        );
    }
    // No Message IDs or types on a stream: the request frame is code, token, options.
    let request = frames(&w.sim.sent(w.client)[1].bytes);
    assert_eq!(request[0].0, code(0, 1));
}

#[test]
fn a_peer_that_does_not_send_a_csm_first_is_aborted() {
    let mut h = Hand::server(tcp());
    let ours = h.take();
    assert_eq!(ours[0].0, CSM);
    h.feed(&frame(code(0, 1), &[1], &[(11, b"x")], &[]));
    let abort = h.take();
    assert_eq!(abort.len(), 1);
    assert_eq!(abort[0].0, ABORT);
    assert!(!abort[0].3.is_empty(), "with a diagnostic payload");
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::SessionFailed {
            reason: FailureReason::Connection(ConnectionFailure::Aborted {
                bad_csm_option: None
            }),
            ..
        }
    )));
    assert_eq!(h.ep.session_count(), 0);
}

#[test]
fn an_unknown_critical_csm_option_is_aborted_naming_it() {
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&frame(CSM, &[], &[(2, &[4, 0]), (9, &[1])], &[]));
    let abort = h.take();
    assert_eq!(abort[0].0, ABORT);
    assert_eq!(abort[0].2, vec![(2u16, vec![9u8])], "Bad-CSM-Option: 9");
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
}

#[test]
fn a_ping_is_answered_with_a_pong_echoing_token_and_custody() {
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    h.feed(&frame(PING, &[7, 7], &[(2, &[])], &[]));
    h.feed(&frame(PING, &[8], &[], &[]));
    let pongs = h.take();
    assert_eq!(pongs.len(), 2);
    assert_eq!((pongs[0].0, pongs[0].1.clone()), (PONG, vec![7, 7]));
    assert_eq!(pongs[0].2, vec![(2u16, vec![])], "Custody echoed");
    assert_eq!(
        (pongs[1].0, pongs[1].1.clone(), pongs[1].2.len()),
        (PONG, vec![8], 0)
    );
}

#[test]
fn pings_from_a_peer_that_does_not_read_stop_being_answered_at_the_write_cap() {
    let config = Config {
        limits: Limits {
            max_unwritten_bytes: 300,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 3).unwrap();
    let now = Instant::ZERO;
    ep.handle_accepted(now, PEER).unwrap();
    ep.handle_datagram(now, PEER, &csm(1152));
    // The adapter takes every write and never says it is done: the peer is not reading.
    let mut written = 0;
    for i in 0..1000u32 {
        ep.handle_datagram(now, PEER, &frame(PING, &i.to_be_bytes(), &[], &[]));
        while let Some(t) = ep.poll_transmit() {
            written += t.payload.len();
        }
    }
    assert!(
        written <= 300 + 64,
        "{written} bytes queued for a peer that reads nothing"
    );
    assert_eq!(ep.session_count(), 1);
}

/// `handle_connected` for a connection already open (the adapter reports it twice, or for a
/// connection it accepted) changes nothing: each used to write one more CSM, whatever the
/// write backlog (found by the `stream_inputs` fuzz target).
#[test]
fn a_connection_reported_open_again_writes_no_second_csm() {
    let now = Instant::ZERO;
    let csms = |ep: &mut Endpoint| -> Vec<u8> {
        let written: Vec<u8> = std::iter::from_fn(|| ep.poll_transmit())
            .flat_map(|t| t.payload.to_vec())
            .collect();
        frames(&written).iter().map(|f| f.0).collect()
    };
    // A connection the engine asked for.
    let mut client = Endpoint::new(tcp(), 1).unwrap();
    let peer = addr(5683);
    client.open_session(now, peer).unwrap();
    assert_eq!(
        client.poll_stream_command(),
        Some(StreamCommand::Connect(peer))
    );
    client.handle_connected(now, peer);
    assert_eq!(csms(&mut client), vec![CSM]);
    for _ in 0..100 {
        client.handle_connected(now, peer);
    }
    assert_eq!(csms(&mut client), Vec::<u8>::new());
    // A connection the engine accepted.
    let mut server = Endpoint::new(tcp(), 2).unwrap();
    server.handle_accepted(now, PEER).unwrap();
    assert_eq!(csms(&mut server), vec![CSM]);
    for _ in 0..100 {
        server.handle_connected(now, PEER);
    }
    assert_eq!(csms(&mut server), Vec::<u8>::new());
}

/// An observation whose Max-Age lapses while the connection's writes are backlogged: the
/// re-registration (the whole registration again) waits until the adapter catches up,
/// rather than going past `max_unwritten_bytes` once per Max-Age (found by the
/// `stream_inputs` fuzz target).
#[cfg(all(feature = "client", feature = "observe"))]
#[test]
fn a_reregistration_waits_for_the_write_backlog() {
    let config = Config {
        limits: Limits {
            max_unwritten_bytes: 64,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    let peer = addr(5683);
    let mut now = Instant::ZERO;
    let id = ep.observe(now, peer, &con_get("obs", b"")).unwrap();
    assert_eq!(ep.poll_stream_command(), Some(StreamCommand::Connect(peer)));
    ep.handle_connected(now, peer);
    let csm_write = ep.poll_transmit().expect("the CSM");
    ep.handle_send_result(now, csm_write.id, Ok(()));
    // The registration goes out; the adapter never reports it written.
    let registration = ep.poll_transmit().expect("the registration");
    let token = frames(&registration.payload)[0].1.clone();
    // A notification with Max-Age 1 s.
    ep.handle_datagram(now, peer, &csm(1152));
    ep.handle_datagram(
        now,
        peer,
        &frame(code(2, 5), &token, &[(6, &[1]), (14, &[1])], b"22"),
    );
    assert!(std::iter::from_fn(|| ep.poll_event())
        .any(|e| matches!(e, Event::Notification { id: n, .. } if n == id)));
    for _ in 0..10 {
        now = ep.poll_timeout().expect("a deadline");
        ep.handle_timeout(now);
        assert!(
            ep.poll_transmit().is_none(),
            "a re-registration went past the write backlog at {now:?}"
        );
        assert!(ep.poll_timeout().is_some_and(|t| t > now), "busy loop");
    }
    // Once the adapter has written the registration, the re-registration goes.
    ep.handle_send_result(now, registration.id, Ok(()));
    now = ep.poll_timeout().expect("a deadline");
    ep.handle_timeout(now);
    let again = ep.poll_transmit().expect("the re-registration");
    let f = &frames(&again.payload)[0];
    assert_eq!((f.0, &f.1), (code(0, 1), &token));
}

/// Pings made while the connection is not open yet wait to be written once it opens; one
/// that times out or is cancelled meanwhile is not written then (found by the
/// `stream_inputs` fuzz target: every such Ping's frame used to stay, so a connection that
/// took long to open got them all at once, past `max_unwritten_bytes`).
#[test]
fn pings_that_ended_before_the_connection_opened_are_not_written() {
    let config = Config {
        limits: Limits {
            max_confirmables: 2,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    let peer = addr(5683);
    let mut now = Instant::ZERO;
    ep.ping(now, peer).unwrap();
    assert_eq!(ep.poll_stream_command(), Some(StreamCommand::Connect(peer)));
    // Each ping times out before the connection opens, and another takes its place.
    let mut failed = 0;
    for _ in 0..10 {
        now = ep.poll_timeout().expect("the ping's deadline");
        ep.handle_timeout(now);
        failed += std::iter::from_fn(|| ep.poll_event())
            .filter(|e| matches!(e, Event::PingFailed { .. }))
            .count();
        ep.ping(now, peer).unwrap();
    }
    assert_eq!(failed, 10);
    let cancelled = ep.ping(now, peer).unwrap();
    ep.cancel(now, cancelled).unwrap();
    ep.handle_connected(now, peer);
    let written: Vec<u8> = std::iter::from_fn(|| ep.poll_transmit())
        .flat_map(|t| t.payload.to_vec())
        .collect();
    let codes: Vec<u8> = frames(&written).iter().map(|f| f.0).collect();
    assert_eq!(
        codes,
        vec![CSM, PING],
        "only the ping still awaited is written"
    );
}

/// A server whose peer sent its CSM and, from then on, reads nothing: the adapter never
/// reports a write done. Feeds `frames(i)` for i in 0..1000 and returns the bytes written.
fn written_to_a_peer_that_does_not_read(
    ep: &mut Endpoint,
    mut frames: impl FnMut(u32) -> Vec<u8>,
) -> usize {
    let now = Instant::ZERO;
    let mut written = 0;
    for i in 0..1000u32 {
        ep.handle_datagram(now, PEER, &frames(i));
        while let Some(t) = ep.poll_transmit() {
            written += t.payload.len();
        }
    }
    written
}

fn server_capped_at(max_unwritten_bytes: usize) -> Endpoint {
    let config = Config {
        limits: Limits {
            max_unwritten_bytes,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 3).unwrap();
    let now = Instant::ZERO;
    ep.handle_accepted(now, PEER).unwrap();
    while let Some(t) = ep.poll_transmit() {
        ep.handle_send_result(now, t.id, Ok(()));
    }
    ep.handle_datagram(now, PEER, &csm(1152));
    ep
}

/// `Limits::max_unwritten_bytes`: "a connection holds at most this much plus one message and
/// those signals (CSM, Release, Abort)". That holds for the engine's own answers to requests
/// too (here 5.03 beyond `max_pending_requests`): while backlogged they are not written, or a
/// peer that sent requests and read nothing would grow the adapter's write queue without end.
#[cfg(feature = "server")]
#[test]
fn service_unavailable_answers_stop_at_the_write_cap() {
    let mut ep = server_capped_at(300);
    let written = written_to_a_peer_that_does_not_read(&mut ep, |i| {
        frame(code(0, 1), &i.to_be_bytes(), &[(11, b"x")], &[])
    });
    assert!(
        written <= 300 + 1152,
        "{written} bytes of 5.03 queued for a peer that reads nothing"
    );
}

/// As above, with 4.02 Bad Option for an unrecognized critical option (9).
#[cfg(feature = "server")]
#[test]
fn bad_option_answers_stop_at_the_write_cap() {
    let mut ep = server_capped_at(300);
    let written = written_to_a_peer_that_does_not_read(&mut ep, |i| {
        frame(code(0, 1), &i.to_be_bytes(), &[(9, b"x")], &[])
    });
    assert!(
        written <= 300 + 1152,
        "{written} bytes of 4.02 queued for a peer that reads nothing"
    );
}

/// The worst case of the above: a POST answered with 4000 bytes is cut into blocks and the
/// response kept (RFC 7959 §2.6); each request for a further block of it (a 10-byte frame
/// here) is answered from the cache (`Inbound::Serve`) with a 1045-byte block, whatever the
/// backlog, and since only the last block releases the cache, a peer asking for block 1 again
/// and again while reading nothing makes the engine queue ~100 times what it sends, without
/// end (1,045,000 bytes for 1000 requests).
#[cfg(all(feature = "server", feature = "blockwise"))]
#[test]
fn kept_response_blocks_stop_at_the_write_cap() {
    let mut ep = server_capped_at(300);
    let now = Instant::ZERO;
    ep.handle_datagram(now, PEER, &frame(code(0, 2), &[1], &[(11, b"x")], &[]));
    let id = std::iter::from_fn(|| ep.poll_event())
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(id),
            _ => None,
        })
        .expect("the POST is delivered");
    ep.respond(now, id, &content(&[7; 4000])).unwrap();
    let first: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
    assert_eq!(first.len(), 1, "block 0 is written");
    // Block2 num 1, SZX 6 (1024 bytes).
    let written = written_to_a_peer_that_does_not_read(&mut ep, |i| {
        frame(
            code(0, 2),
            &i.to_be_bytes(),
            &[(11, b"x"), (23, &[0x16])],
            &[],
        )
    });
    assert!(
        written <= 300 + 1152,
        "{written} bytes of kept blocks queued for a peer that reads nothing"
    );
}

#[test]
fn malformed_framing_or_an_oversized_frame_is_aborted_before_it_is_buffered() {
    // Token length 9 (reserved).
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    h.feed(&[0x09, 0x01]);
    assert_eq!(h.take()[0].0, ABORT);
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);
    // A frame announcing 1 MB to an endpoint that accepts 1152 bytes: aborted at the header,
    // nothing of the body waited for.
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    h.feed(&[0xF0, 0x01, 0x00, 0x0F, 0x00, 0x00]);
    assert_eq!(h.take()[0].0, ABORT);
    assert_eq!(h.ep.session_count(), 0);
}

#[test]
fn release_and_abort_from_the_peer_end_the_session_with_their_reasons() {
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    h.feed(&frame(
        RELEASE,
        &[],
        &[(2, b"alt.example"), (4, &[30])],
        &[],
    ));
    let released = h.events.iter().find_map(|e| match e {
        Event::Released {
            alternative_address,
            hold_off,
            ..
        } => Some((alternative_address.clone(), *hold_off)),
        _ => None,
    });
    assert_eq!(
        released,
        Some((
            Some("alt.example".to_string()),
            Some(Duration::from_secs(30))
        ))
    );
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::Released,
            ..
        }
    )));
    assert_eq!(h.commands, vec![StreamCommand::Close(PEER)]);

    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    h.feed(&frame(ABORT, &[], &[(2, &[4])], b"no"));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::SessionFailed {
            reason: FailureReason::Connection(ConnectionFailure::AbortedByPeer {
                bad_csm_option: Some(4)
            }),
            ..
        }
    )));
}

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn closing_a_session_releases_the_connection() {
    let mut w = World::default(10);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    let sa = w.sa;
    w.sim.close_session(w.client, sa).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    let last = frames(&w.sim.sent(w.client).last().unwrap().bytes);
    assert_eq!(last[0].0, RELEASE);
    assert!(w.sim.events(w.server).iter().any(|l| matches!(
        l.event,
        Event::SessionClosed {
            reason: CloseReason::Released,
            ..
        }
    )));
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Exchanges over a stream

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn requests_made_before_the_connection_opens_wait_for_it_and_go_in_order() {
    let mut w = World::default(20);
    let ids: Vec<_> = (0..5u8).map(|i| w.get(&[b'0' + i])).collect();
    w.sim.run_for(Duration::from_secs(1));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(w.response(*id), Ok(format!("hello {i}").into_bytes()));
    }
    let seen: Vec<Vec<u8>> = w
        .sim
        .requests_seen(w.server)
        .iter()
        .map(|(_, _, r)| r.payload.clone())
        .collect();
    assert_eq!(seen, (0..5u8).map(|i| vec![b'0' + i]).collect::<Vec<_>>());
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn nothing_larger_than_the_peers_max_message_size_is_sent() {
    // The server accepts 300-byte messages: a 5 kB request body goes in blocks that fit.
    let server = Config {
        max_message_size: 300,
        ..tcp()
    };
    let mut w = World::new(21, tcp(), server);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut put = con_get("x", &body);
    put.header.code = MessageClass::Request(RequestType::Put);
    let id = w.sim.request(w.client, w.sa, &put).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(b"got 5000 bytes".to_vec()));
    // The first block went with the client's CSM, under RFC 8323's default limit (1152),
    // before the server's CSM arrived; every later one fits the server's 300 bytes.
    let writes = w.sim.sent(w.client);
    assert!(writes.len() > 5, "{} writes", writes.len());
    assert!(writes.iter().all(|s| s.bytes.len() <= 1152));
    for s in writes.iter().filter(|s| s.at > Instant::ZERO + D * 2) {
        assert!(
            s.bytes.len() <= 300,
            "a {}-byte frame at {:?}",
            s.bytes.len(),
            s.at
        );
    }
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn two_uploads_to_the_same_target_go_one_after_the_other() {
    // The server keeps one partial body per target (RFC 7959 §2.5): interleaved, the second
    // upload's first block would replace the first's.
    let mut w = World::default(27);
    let ids: Vec<_> = [5000usize, 7000]
        .iter()
        .map(|&len| {
            let mut put = con_get("x", &vec![b'u'; len]);
            put.header.code = MessageClass::Request(RequestType::Put);
            w.sim.request(w.client, w.sa, &put).unwrap()
        })
        .collect();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(ids[0]), Ok(b"got 5000 bytes".to_vec()));
    assert_eq!(w.response(ids[1]), Ok(b"got 7000 bytes".to_vec()));
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn a_post_echoing_a_large_body_runs_once_and_its_answer_comes_back_whole() {
    // Block1 up, Block2 down (RFC 7959 §2.6): the further blocks of the answer come from the
    // response the server engine kept, not from running the POST again without its body.
    for (seed, max) in [(28, 1152), (29, 16 * 1024)] {
        let config = Config {
            max_message_size: max,
            ..tcp()
        };
        let mut w = World::new(seed, config.clone(), config);
        let posts = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = posts.clone();
        w.sim.set_app(w.server, move |sim, node, event| {
            if let Event::Request { id, request, .. } = event {
                seen.set(seen.get() + 1);
                let echo: Vec<u8> = request.payload.iter().rev().copied().collect();
                sim.respond(node, *id, &content(&echo)).unwrap();
            }
        });
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let mut post = con_get("x", &sent);
        post.header.code = MessageClass::Request(RequestType::Post);
        let id = w.sim.request(w.client, w.sa, &post).unwrap();
        w.sim.run_for(Duration::from_secs(10));
        let got = w.response(id).expect("answered");
        assert!(
            got.iter().rev().eq(sent.iter()),
            "max {max}: {} bytes back",
            got.len()
        );
        assert_eq!(
            posts.get(),
            1,
            "max {max}: the POST ran {} times",
            posts.get()
        );
    }
}

#[cfg(all(feature = "client", feature = "server", feature = "observe"))]
#[test]
fn observe_over_a_stream_delivers_every_notification_in_order() {
    let mut w = World::default(22);
    let mut get = con_get("obs", b"");
    get.header.set_type(MessageType::NonConfirmable);
    let id = w.observe(&get);
    w.sim.run_for(Duration::from_secs(1));
    for n in 1..=5u8 {
        w.sim
            .input(w.server, |ep, now| {
                ep.notify(now, TIME, &content(&[n]), false)
            })
            .unwrap();
        w.sim.run_for(Duration::from_millis(5)); // faster than the link: several in flight
    }
    w.sim.run_for(Duration::from_secs(1));
    let got: Vec<Vec<u8>> = w
        .sim
        .events(w.client)
        .iter()
        .filter_map(|l| match &l.event {
            Event::Notification {
                id: i, response, ..
            } if *i == id => Some(response.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            b"hello ".to_vec(),
            vec![1],
            vec![2],
            vec![3],
            vec![4],
            vec![5]
        ]
    );
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn a_large_response_comes_back_in_blocks_and_is_delivered_whole() {
    let mut w = World::default(23);
    w.sim.set_app(w.server, |sim, node, event| {
        if let Event::Request { id, .. } = event {
            let body: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
            sim.respond(node, *id, &content(&body)).unwrap();
        }
    });
    let id = w.get(b"");
    w.sim.run_for(Duration::from_secs(5));
    let body = w.response(id).unwrap();
    assert_eq!(
        body,
        (0..10_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// BERT (RFC 8323 §6)

/// Both sides accept 64 KiB messages and announce Block-Wise-Transfer; bodies up to 1 MB.
fn bert() -> Config {
    Config {
        max_message_size: 64 * 1024 + 256,
        blockwise: coap_engine::Blockwise {
            max_body_size: 1 << 20,
            ..coap_engine::Blockwise::default()
        },
        ..tcp()
    }
}

/// The Block1 or Block2 values (number, more, szx) and payload lengths of the frames in
/// `writes`.
fn blocks_on_wire(writes: &[Sent], option: u16) -> Vec<(u32, bool, u8, usize)> {
    writes
        .iter()
        .flat_map(|s| frames(&s.bytes))
        .filter_map(|(_, _, options, payload)| {
            let v = &options.iter().find(|(n, _)| *n == option)?.1;
            let v = v.iter().fold(0u32, |a, &b| a << 8 | u32::from(b));
            Some((v >> 4, v & 8 != 0, (v & 7) as u8, payload.len()))
        })
        .collect()
}

fn body(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn a_large_response_comes_in_bert_blocks_of_many_units() {
    let mut w = World::new(24, bert(), bert());
    w.sim.set_app(w.server, |sim, node, event| {
        if let Event::Request { id, .. } = event {
            sim.respond(node, *id, &content(&body(200_000))).unwrap();
        }
    });
    // The first exchange brings the server's CSM; the second can use it.
    let id = w.get(b"");
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(body(200_000)));
    let blocks = blocks_on_wire(w.sim.sent(w.server), 23);
    // SZX 7, numbered in 1024-byte units, each block a whole number of units but the last.
    assert!(blocks.len() >= 4 && blocks.len() <= 5, "{blocks:?}");
    let mut offset = 0;
    for &(num, more, szx, len) in &blocks {
        assert_eq!(szx, 7, "{blocks:?}");
        assert_eq!(num as usize * 1024, offset, "{blocks:?}");
        assert!(!more || (len % 1024 == 0 && len > 16 * 1024), "{blocks:?}");
        offset += len;
    }
    assert_eq!(offset, 200_000);
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn a_large_request_body_goes_up_in_bert_blocks() {
    let mut w = World::new(25, bert(), bert());
    let hello = w.get(b"");
    w.sim.run_for(Duration::from_secs(1));
    assert!(w.response(hello).is_ok());
    let mut put = con_get("x", &body(300_000));
    put.header.code = MessageClass::Request(RequestType::Put);
    let id = w.sim.request(w.client, w.sa, &put).unwrap();
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.response(id), Ok(b"got 300000 bytes".to_vec()));
    let blocks = blocks_on_wire(w.sim.sent(w.client), 27);
    assert!(blocks.len() >= 5 && blocks.len() <= 6, "{blocks:?}");
    assert!(blocks.iter().all(|b| b.2 == 7), "{blocks:?}");
    // The server acknowledged each with 2.31 Continue in BERT too.
    let acks = blocks_on_wire(w.sim.sent(w.server), 27);
    assert!(acks.iter().all(|b| b.2 == 7), "{acks:?}");
}

#[cfg(all(feature = "client", feature = "server", feature = "blockwise"))]
#[test]
fn a_response_that_fits_the_peers_limit_goes_whole_on_a_stream() {
    let mut w = World::new(26, bert(), bert());
    w.sim.set_app(w.server, |sim, node, event| {
        if let Event::Request { id, .. } = event {
            sim.respond(node, *id, &content(&body(5000))).unwrap();
        }
    });
    let hello = w.get(b"");
    w.sim.run_for(Duration::from_secs(1));
    assert!(w.response(hello).is_ok());
    let mark = w.sim.sent(w.server).len();
    let id = w.get(b"");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(body(5000)));
    // One frame, no Block2: a message limited by size, not by the block size.
    let later = &w.sim.sent(w.server)[mark..];
    assert!(blocks_on_wire(later, 23).is_empty());
    assert!(later.iter().any(|s| s.bytes.len() > 5000));
}

#[cfg(all(feature = "server", feature = "blockwise"))]
#[test]
fn no_bert_towards_a_peer_that_did_not_announce_block_wise_transfer() {
    let mut h = Hand::server(Config {
        blockwise: coap_engine::Blockwise {
            max_body_size: 1 << 20,
            ..coap_engine::Blockwise::default()
        },
        ..tcp()
    });
    h.take();
    // A CSM with Max-Message-Size 1152 only.
    h.feed(&frame(CSM, &[], &[(2, &[0x04, 0x80])], &[]));
    h.feed(&frame(code(0, 1), &[1], &[(11, b"x")], &[]));
    let id = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .expect("request delivered");
    h.ep.respond(h.now, id, &content(&body(3000))).unwrap();
    h.drain();
    let out = h.take();
    let (_, _, options, payload) = out.last().expect("a response");
    let b2 = &options.iter().find(|(n, _)| *n == 23).expect("Block2").1;
    assert_eq!(b2.last().unwrap() & 7, 6, "SZX 6, not BERT");
    assert_eq!(payload.len(), 1024);
}

#[cfg(all(feature = "server", feature = "blockwise"))]
#[test]
fn a_bert_block_that_is_not_a_whole_number_of_units_is_a_bad_request() {
    let mut h = Hand::server(tcp());
    h.take();
    h.feed(&csm(1152));
    // Block1 NUM 0, M 1, SZX 7 with 1000 bytes.
    let payload = vec![7u8; 1000];
    let block1 = [0x0F];
    let f = frame_long(code(0, 3), &[2], &[(11, b"x"), (27, &block1)], &payload);
    h.feed(&f);
    let out = h.take();
    assert_eq!(out.last().map(|f| f.0), Some(code(4, 0)), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// Connections that fail

#[cfg(feature = "client")]
#[test]
fn a_connection_that_cannot_be_opened_fails_its_requests() {
    let mut sim = Sim::new(30);
    let c = sim.add_endpoint(addr(40_000), tcp());
    let id = sim.request(c, addr(5999), &con_get("x", b"")).unwrap(); // nobody there
    sim.run_for(Duration::from_secs(1));
    assert!(matches!(
        sim.terminal(c, id).event,
        Event::RequestFailed {
            error: ExchangeError::SessionFailed(FailureReason::Connection(
                ConnectionFailure::ConnectFailed(SendErrorKind::Refused)
            )),
            ..
        }
    ));
}

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn a_reset_or_a_close_ends_every_pending_exchange_once_with_its_reason() {
    for (seed, how, want) in [
        (31, StreamClosed::Reset, ConnectionFailure::Reset),
        (32, StreamClosed::Eof, ConnectionFailure::Closed),
    ] {
        let mut w = World::default(seed);
        w.sim.set_app(w.server, |_, _, _| {}); // never answers
        let ids: Vec<_> = (0..3u8).map(|i| w.get(&[i])).collect();
        w.sim.run_for(Duration::from_secs(1));
        let (ca, sa) = (w.ca, w.sa);
        match how {
            StreamClosed::Reset => w.sim.reset_connection(ca, sa),
            _ => w.sim.input(w.client, |ep, now| {
                ep.handle_closed(now, sa, StreamClosed::Eof)
            }),
        }
        w.sim.run_for(Duration::from_secs(1));
        for id in ids {
            assert_eq!(
                w.response(id),
                Err(ExchangeError::SessionFailed(FailureReason::Connection(
                    want
                )))
            );
        }
    }
}

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn a_failed_write_ends_the_session() {
    let mut w = World::default(33);
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    w.sim.fail_sends(
        w.ca,
        None,
        Window::from(w.sim.now()),
        SendErrorKind::Unreachable,
    );
    let id = w.get(b"2");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.response(id),
        Err(ExchangeError::SessionFailed(FailureReason::Connection(
            ConnectionFailure::WriteFailed(SendErrorKind::Unreachable)
        )))
    );
}

#[cfg(feature = "client")]
#[test]
fn a_refused_request_to_a_new_peer_asks_for_no_connection() {
    let config = Config {
        limits: Limits {
            max_queued_requests: 0,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    let peer = addr(5683);
    assert_eq!(
        ep.request(Instant::ZERO, peer, &con_get("x", b"")),
        Err(Error::QueueFull)
    );
    assert_eq!(ep.poll_stream_command(), None);
    assert_eq!(ep.session_count(), 0);
}

#[cfg(feature = "client")]
#[test]
fn requests_queued_before_the_connection_opened_wait_for_the_write_backlog() {
    let client = Config {
        limits: Limits {
            max_unwritten_bytes: 64,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(client, 1).unwrap();
    let peer = addr(5683);
    let now = Instant::ZERO;
    for _ in 0..3 {
        ep.request(now, peer, &con_get("x", &[7; 500])).unwrap();
    }
    assert_eq!(ep.poll_stream_command(), Some(StreamCommand::Connect(peer)));
    ep.handle_connected(now, peer);
    // Only as much as the limit allows plus one message goes out at once...
    let first: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
    let bytes: usize = first.iter().map(|t| t.payload.len()).sum();
    assert!(bytes <= 64 + 520, "{bytes} bytes written at once");
    // ...and the rest follows as the adapter reports its writes done.
    let mut total = bytes;
    let mut pending = first;
    for _ in 0..10 {
        for t in pending.drain(..) {
            ep.handle_send_result(now, t.id, Ok(()));
        }
        pending = std::iter::from_fn(|| ep.poll_transmit()).collect();
        total += pending.iter().map(|t| t.payload.len()).sum::<usize>();
    }
    assert!(
        total >= 3 * 500,
        "{total} bytes: a queued request never left"
    );
}

#[test]
fn a_full_transmit_queue_never_drops_a_write_from_a_stream() {
    let config = Config {
        limits: Limits {
            max_queued_transmits: 1,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    let peer = addr(5683);
    let now = Instant::ZERO;
    ep.ping(now, peer).unwrap();
    ep.handle_connected(now, peer);
    // The CSM and the Ping, in order: nothing cut out of the stream.
    let written: Vec<u8> = std::iter::from_fn(|| ep.poll_transmit())
        .flat_map(|t| t.payload.to_vec())
        .collect();
    let codes: Vec<u8> = frames(&written).iter().map(|f| f.0).collect();
    assert_eq!(codes, vec![CSM, PING]);
}

#[cfg(feature = "client")]
#[test]
fn writes_the_adapter_never_confirms_are_capped() {
    let client = Config {
        limits: Limits {
            max_unwritten_bytes: 200,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut ep = Endpoint::new(client, 1).unwrap();
    let peer = addr(5683);
    let now = Instant::ZERO;
    ep.request(now, peer, &con_get("x", b"")).unwrap();
    assert_eq!(ep.poll_stream_command(), Some(StreamCommand::Connect(peer)));
    ep.handle_connected(now, peer);
    // The adapter takes the writes and never says they are done.
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..100 {
        while ep.poll_transmit().is_some() {}
        match ep.request(now, peer, &con_get("x", &[i; 20])) {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(Error::QueueFull));
    assert!(
        accepted < 10,
        "{accepted} requests accepted over a 200-byte backlog"
    );
}

// ---------------------------------------------------------------------------------------------
// Liveness over streams

const K: Keepalive = Keepalive {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(3),
};

fn with_keepalive() -> Config {
    Config {
        keepalive: Some(K),
        ..tcp()
    }
}

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn keepalive_probes_with_7_02_ping_and_a_frozen_peer_fails_within_the_bound() {
    let mut w = World::new(40, with_keepalive(), tcp());
    let id = w.get(b"1");
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.response(id), Ok(b"hello 1".to_vec()));
    // Idle: Pings go after `interval` of silence and Pongs keep the session alive.
    w.sim.run_for(Duration::from_secs(10));
    let pings = w
        .sim
        .sent(w.client)
        .iter()
        .filter(|s| frames(&s.bytes).iter().any(|f| f.0 == PING))
        .count();
    assert!(pings >= 4, "{pings} pings in 10 s of silence");
    assert!(w.session_failure(w.client).is_none());
    // The server freezes (nothing it could send arrives any more).
    let last_heard = w.sim.last_heard(w.client, w.sa).unwrap();
    w.sim.cut(Some(w.sa), Some(w.ca), Window::from(w.sim.now()));
    let pending = w.get(b"2");
    w.sim.run_for(Duration::from_secs(30));
    let (at, reason) = w.session_failure(w.client).expect("noticed");
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "{reason:?}"
    );
    assert_eq!(at, last_heard + K.bound());
    assert!(matches!(
        w.response(pending),
        Err(ExchangeError::SessionFailed(
            FailureReason::KeepaliveTimeout { .. }
        ))
    ));
    // The client's adapter was told to close the dead connection: the server sees it end.
    assert!(matches!(
        w.session_failure(w.server),
        Some((t, FailureReason::Connection(ConnectionFailure::Closed))) if t >= at
    ));
}

#[cfg(all(feature = "client", feature = "server", feature = "observe"))]
#[test]
fn a_server_with_keepalive_drops_a_silent_client_and_its_observers() {
    let mut w = World::new(41, tcp(), with_keepalive());
    let get = con_get("obs", b"");
    w.observe(&get);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.endpoint(w.server).observers(TIME), 1);
    let last_heard = w.sim.last_heard(w.server, w.ca).unwrap();
    w.sim.cut(Some(w.ca), Some(w.sa), Window::from(w.sim.now()));
    w.sim.run_for(Duration::from_secs(30));
    let removed = w.sim.events(w.server).iter().find_map(|l| match l.event {
        Event::ObserverRemoved { reason, .. } => Some((l.at, reason)),
        _ => None,
    });
    assert_eq!(
        removed,
        Some((last_heard + K.bound(), ObserverRemoval::SessionEnded))
    );
    assert_eq!(w.sim.endpoint(w.server).session_count(), 0);
}

#[cfg(all(feature = "client", feature = "server"))]
#[test]
fn an_application_ping_gets_a_pong() {
    let mut w = World::default(42);
    let sa = w.sa;
    let id = w.sim.ping(w.client, sa).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    match &w.sim.terminal(w.client, id).event {
        Event::Pong { rtt, .. } => assert_eq!(*rtt, D * 2 + D * 2), // connect, then the ping
        other => panic!("{other:?}"),
    }
}

#[test]
fn pongs_without_a_token_answer_application_pings_in_order() {
    // libcoap's Pongs carry no token: on a stream they come in the order of the Pings, so
    // each answers the oldest outstanding one. A Pong with a token nobody sent answers none.
    let mut h = Hand::server(tcp());
    h.feed(&csm(1152));
    let first = h.ep.ping(h.now, PEER).unwrap();
    let second = h.ep.ping(h.now, PEER).unwrap();
    h.drain();
    assert_eq!(h.take().iter().filter(|f| f.0 == PING).count(), 2);
    let pongs = |h: &Hand| -> Vec<coap_engine::RequestId> {
        h.events
            .iter()
            .filter_map(|e| match e {
                Event::Pong { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    h.feed(&frame(PONG, b"zz", &[], &[]));
    assert_eq!(pongs(&h), vec![], "a stranger's token");
    h.feed(&frame(PONG, &[], &[], &[]));
    assert_eq!(pongs(&h), vec![first]);
    h.feed(&frame(PONG, &[], &[], &[]));
    assert_eq!(pongs(&h), vec![first, second]);
    h.feed(&frame(PONG, &[], &[], &[]));
    assert_eq!(pongs(&h), vec![first, second], "nothing left to answer");
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::PingFailed { .. } | Event::SessionFailed { .. })),
        "{:?}",
        h.events
    );
}

#[test]
fn keepalive_goes_on_when_pongs_carry_no_token() {
    // libcoap 4.3.1 answers every Ping with a Pong whose token is empty (RFC 8323 §5.4 asks
    // for the Ping's token). The peer is alive all the same: the probe must not stay
    // outstanding for good, or no Ping would ever go again and the session would fail
    // `interval + timeout` after that first Pong although every Ping would be answered.
    let mut h = Hand::server(with_keepalive());
    h.take();
    h.feed(&csm(1152));
    let mut pings = 0;
    for second in 1..=20u64 {
        h.now = Instant::ZERO + Duration::from_secs(second);
        h.ep.handle_timeout(h.now);
        h.drain();
        for f in h.take() {
            if f.0 == PING {
                pings += 1;
                h.feed(&frame(PONG, &[], &[(2, &[])], &[]));
            }
        }
    }
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::SessionFailed { .. })),
        "{:?}",
        h.events
    );
    assert!(pings >= 9, "{pings} Pings in 20 s with a 2 s interval");
}
