//! Block-wise transfers (RFC 7959) on the deterministic simulator (`tests/sim`): scenarios that
//! read like the RFC's §3 examples, the error cases of §2.5 and §2.9, and a seeded property test
//! over a lossy, duplicating, reordering network.
//!
//! Replay one property seed: `SIM_SEED=1234 cargo test -p coap-engine --test blockwise replay
//! -- --nocapture` (add `SIM_TRACE=1` for a trace). More seeds: `BLOCK_SEEDS=20000`.
#![cfg(all(feature = "client", feature = "server", feature = "blockwise"))]

mod sim;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine::codec::{self, MessageView};
use coap_engine::{
    Blockwise, Config, Duration, Event, ExchangeError, Instant, Keepalive, Limits, RequestId,
    SessionFootprint, TransmissionParameters,
};
use sim::*;

/// One-way link delay of every scenario.
const D: Duration = Duration::from_millis(10);

const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;
const SIZE2: u16 = 28;
const SIZE1: u16 = 60;
const ETAG: u16 = 4;

// =============================================================================================
// Helpers

/// A body whose every byte depends on its position, so a misplaced block shows.
fn body(len: usize, tag: u8) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 24) as u8) ^ tag)
        .collect()
}

/// A Block option value (RFC 7959 §2.2) in the fewest bytes.
fn block(num: u32, more: bool, szx: u8) -> Vec<u8> {
    let v = (num << 4) | (u32::from(more) << 3) | u32::from(szx);
    let bytes = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    bytes[skip..].to_vec()
}

fn uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    bytes[(v.leading_zeros() / 8) as usize..].to_vec()
}

fn decode_uint(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

/// (NUM, M, SZX) of a Block option value.
fn decode_block(v: &[u8]) -> (u32, bool, u8) {
    let v = decode_uint(v);
    (v >> 4, v & 8 != 0, (v & 7) as u8)
}

fn view(bytes: &[u8]) -> MessageView<'_> {
    codec::parse(bytes).expect("the engine sends valid messages")
}

fn block_in(bytes: &[u8], number: u16) -> Option<(u32, bool, u8)> {
    view(bytes).option(number).map(decode_block)
}

fn packet_block(p: &Packet, o: CoapOption) -> Option<(u32, bool, u8)> {
    p.get_first_option(o).map(|v| decode_block(v))
}

fn has_option(p: &Packet, o: CoapOption) -> bool {
    p.get_first_option(o).is_some()
}

fn request(method: RequestType, mtype: MessageType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(mtype);
    p.header.code = MessageClass::Request(method);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.payload = payload.to_vec();
    p
}

fn response(code: ResponseType, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    p.payload = payload.to_vec();
    p
}

fn failure_of(l: &Logged) -> ExchangeError {
    match &l.event {
        Event::RequestFailed { error, .. } => *error,
        other => panic!("expected a RequestFailed, got {other:?}"),
    }
}

fn blockwise(block_size: usize) -> Config {
    Config {
        blockwise: Blockwise {
            block_size,
            ..Blockwise::default()
        },
        ..Config::default()
    }
}

fn just_before(t: Instant) -> Instant {
    Instant::from_micros(t.as_micros() - 1)
}

/// A client and a server over a clean link with delay `D`.
fn world(seed: u64) -> WorldBuilder {
    World::builder(seed).delay(D)
}

impl World {
    /// The server application answers every request at once with `answer(request)`.
    fn serve(&mut self, answer: impl Fn(&Packet) -> Packet + 'static) {
        self.sim.set_app(self.server, move |sim, node, event| {
            if let Event::Request { id, request, .. } = event {
                let r = answer(request);
                sim.respond(node, *id, &r).expect("respond");
            }
        });
    }

    /// The client's request transmissions (first copies and retransmissions).
    fn client_requests(&self) -> Vec<Vec<u8>> {
        self.sim
            .sent_to(self.client, self.sa)
            .iter()
            .filter(|s| s.header.is_some_and(|h| h.is_request()))
            .map(|s| s.bytes.to_vec())
            .collect()
    }

    /// The server's responses (piggybacked or separate).
    fn server_responses(&self) -> Vec<Vec<u8>> {
        self.sim
            .sent_to(self.server, self.ca)
            .iter()
            .filter(|s| s.header.is_some_and(|h| h.code >= codec::code(2, 0)))
            .map(|s| s.bytes.to_vec())
            .collect()
    }

    fn footprints_are_empty(&self) {
        for (node, peer) in [(self.client, self.sa), (self.server, self.ca)] {
            if let Some(info) = self.sim.endpoint(node).session_info(peer) {
                assert_eq!(
                    info.footprint,
                    SessionFootprint {
                        dedup_entries: info.footprint.dedup_entries,
                        ..SessionFootprint::default()
                    },
                    "node {node}: state left behind"
                );
            }
        }
    }
}

// =============================================================================================
// RFC 7959 §2.4, §3.1: Block2

#[test]
fn block2_response_of_10_kib_is_reassembled_byte_exact_into_one_response() {
    let mut w = world(1).build();
    let big = body(10 * 1024, 0);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    let done = w.sim.terminal(w.client, id);
    let r = response_of(done);
    assert_eq!(r.header.code, MessageClass::Response(ResponseType::Content));
    assert_eq!(r.payload, big, "byte-exact");
    assert!(
        !has_option(r, CoapOption::Block2),
        "Block2 is the engine's business"
    );
    // One request per 1024-byte block, each a new message (new Message ID) asking for the next
    // block; the first asks for nothing (late negotiation).
    let sent = w.client_requests();
    assert_eq!(sent.len(), 10);
    assert_eq!(block_in(&sent[0], BLOCK2), None);
    for (n, bytes) in sent.iter().enumerate().skip(1) {
        assert_eq!(block_in(bytes, BLOCK2), Some((n as u32, false, 6)));
        let v = view(bytes);
        assert_eq!(
            v.option(11),
            Some(&b"big"[..]),
            "the same options every time"
        );
        assert_eq!(v.token, view(&sent[0]).token, "one token for the transfer");
    }
    let mids: std::collections::BTreeSet<u16> =
        sent.iter().map(|b| view(b).header.message_id).collect();
    assert_eq!(mids.len(), 10, "a new Message ID per block");
    // The server cut each answer statelessly: Size2 on block 0, the same ETag on all.
    let answers = w.server_responses();
    assert_eq!(answers.len(), 10);
    let tag = view(&answers[0]).option(ETAG).expect("an ETag").to_vec();
    assert_eq!(
        view(&answers[0]).option(SIZE2).map(decode_uint),
        Some(10 * 1024)
    );
    for (n, bytes) in answers.iter().enumerate() {
        assert_eq!(block_in(bytes, BLOCK2), Some((n as u32, n < 9, 6)));
        assert_eq!(view(bytes).option(ETAG), Some(&tag[..]));
    }
    assert_eq!(w.sim.requests_seen(w.server).len(), 10);
    w.footprints_are_empty();
}

#[test]
fn late_negotiation_asks_for_our_smaller_block_size_renumbered() {
    // §2.4: the server answers the first request with 1024-byte blocks; we prefer 256.
    let mut w = world(2).client(blockwise(256)).build();
    let big = body(5000, 1);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    let sent = w.client_requests();
    // Block 0 in 1024 bytes, then 1024/256 = block 4 of 256 bytes onwards.
    assert_eq!(block_in(&sent[1], BLOCK2), Some((4, false, 4)));
    assert_eq!(sent.len(), 1 + (5000 - 1024usize).div_ceil(256));
    let answers = w.server_responses();
    assert_eq!(block_in(&answers[0], BLOCK2), Some((0, true, 6)));
    assert_eq!(
        block_in(answers.last().unwrap(), BLOCK2),
        Some((19, false, 4))
    );
}

#[test]
fn early_negotiation_from_config_asks_for_the_size_in_the_first_request() {
    let client = Config {
        blockwise: Blockwise {
            block_size: 64,
            early_negotiation: true,
            ..Blockwise::default()
        },
        ..Config::default()
    };
    let mut w = world(3).client(client).build();
    let big = body(1000, 2);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    let sent = w.client_requests();
    assert_eq!(block_in(&sent[0], BLOCK2), Some((0, false, 2)));
    assert_eq!(sent.len(), 1000usize.div_ceil(64));
    for bytes in w.server_responses() {
        assert_eq!(block_in(&bytes, BLOCK2).map(|b| b.2), Some(2));
    }
}

#[test]
fn early_negotiation_from_the_applications_own_block2_option_is_honoured() {
    let mut w = world(4).build();
    let big = body(700, 3);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let mut get = con_get("big", b"");
    get.add_option(CoapOption::Block2, block(0, false, 1));
    let id = w.request(&get);
    w.sim.run_until(at_secs(60));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(r.payload, big);
    assert!(!has_option(r, CoapOption::Block2));
    let sent = w.client_requests();
    assert_eq!(sent.len(), 700usize.div_ceil(32));
    assert!(sent
        .iter()
        .all(|b| block_in(b, BLOCK2).is_some_and(|b| b.2 == 1)));
}

#[test]
fn a_block2_request_of_the_application_for_a_later_block_is_left_to_it() {
    // Block2 with NUM > 0 in the application's request: it is doing block-wise itself.
    let mut w = world(5).build();
    let big = body(3000, 4);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let mut get = con_get("big", b"");
    get.add_option(CoapOption::Block2, block(1, false, 6));
    let id = w.request(&get);
    w.sim.run_until(at_secs(60));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(r.payload, big[1024..2048]);
    assert_eq!(packet_block(r, CoapOption::Block2), Some((1, true, 6)));
    assert_eq!(w.client_requests().len(), 1);
}

#[test]
fn non_request_transfer_uses_non_block_requests() {
    let mut w = world(6).build();
    let big = body(3000, 5);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let id = w.request(&non_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    let sent = w.client_requests();
    assert_eq!(sent.len(), 3);
    assert!(sent
        .iter()
        .all(|b| view(b).header.mtype == MessageType::NonConfirmable));
    w.footprints_are_empty();
}

#[test]
fn separate_responses_carry_blocks_too() {
    // The server application answers after the Empty ACK went out: every block comes in a
    // separate CON response, which the client acknowledges.
    let mut w = world(7).build();
    let big = body(2500, 6);
    let b = big.clone();
    w.sim.set_app(w.server, move |sim, node, event| {
        if let Event::Request { id, .. } = event {
            let (id, r) = (*id, response(ResponseType::Content, &b));
            let t = sim.now() + secs(1) + millis(500);
            sim.at(t, move |sim| sim.respond(node, id, &r).expect("respond"));
        }
    });
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    let separate = w
        .server_responses()
        .iter()
        .filter(|b| view(b).header.mtype == MessageType::Confirmable)
        .count();
    assert_eq!(separate, 3);
    w.footprints_are_empty();
}

#[test]
fn a_block_past_the_end_is_answered_with_bad_option() {
    // §2.4 names no code; the critical Block2 option cannot be honoured (RFC 7252 §5.4.1).
    let mut w = world(8).build();
    w.serve(|_| response(ResponseType::Content, &body(100, 0)));
    let mut get = con_get("small", b"");
    get.add_option(CoapOption::Block2, block(3, false, 4));
    let id = w.request(&get);
    w.sim.run_until(at_secs(10));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::BadOption)
    );
}

#[test]
fn a_response_too_large_for_max_message_size_is_cut_into_fitting_blocks() {
    // The server's max_message_size is below its block size: blocks shrink until they fit.
    let server = Config {
        max_message_size: 300,
        ..Config::default()
    };
    let mut w = world(9).server(server).build();
    let big = body(1000, 7);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    for bytes in w.server_responses() {
        assert!(bytes.len() <= 300);
        assert_eq!(
            block_in(&bytes, BLOCK2).map(|b| b.2),
            Some(4),
            "256-byte blocks"
        );
    }
}

// =============================================================================================
// RFC 7959 §2.5, §3.2: Block1

#[test]
fn block1_request_of_10_kib_reaches_the_server_app_once_whole() {
    let mut w = world(10).build();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    w.serve(move |req| {
        s.borrow_mut().push(req.clone());
        response(ResponseType::Changed, b"stored")
    });
    let big = body(10 * 1024 + 100, 8);
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "file",
        &big,
    ));
    w.sim.run_until(at_secs(60));

    let seen = seen.borrow();
    assert_eq!(seen.len(), 1, "one Event::Request for the whole body");
    assert_eq!(seen[0].payload, big, "byte-exact");
    assert!(!has_option(&seen[0], CoapOption::Block1));
    assert!(!has_option(&seen[0], CoapOption::Size1));
    assert_eq!(
        seen[0]
            .get_first_option(CoapOption::UriPath)
            .map(Vec::as_slice),
        Some(&b"file"[..])
    );
    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(r.header.code, MessageClass::Response(ResponseType::Changed));
    assert_eq!(r.payload, b"stored");
    assert!(!has_option(r, CoapOption::Block1));

    let sent = w.client_requests();
    assert_eq!(sent.len(), 11);
    assert_eq!(
        view(&sent[0]).option(SIZE1).map(decode_uint),
        Some(big.len() as u32),
        "Size1 announces the body with the first block"
    );
    for (n, bytes) in sent.iter().enumerate() {
        assert_eq!(block_in(bytes, BLOCK1), Some((n as u32, n < 10, 6)));
    }
    let answers = w.server_responses();
    for (n, bytes) in answers.iter().enumerate().take(10) {
        let v = view(bytes);
        assert_eq!(v.header.code, codec::code(2, 31), "2.31 Continue");
        assert_eq!(block_in(bytes, BLOCK1), Some((n as u32, true, 6)));
        assert!(v.payload.is_empty());
    }
    assert_eq!(
        block_in(&answers[10], BLOCK1),
        Some((10, false, 6)),
        "the final response echoes the last block"
    );
    w.footprints_are_empty();
}

#[test]
fn server_reduces_the_block_size_in_its_2_31_and_the_client_renumbers() {
    // §2.5 / Figure 4 of §3.2: the client starts with 1024, the server prefers 256.
    let mut w = world(11).server(blockwise(256)).build();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    w.serve(move |req| {
        s.borrow_mut().push(req.payload.clone());
        response(ResponseType::Changed, b"")
    });
    let big = body(3000, 9);
    let id = w.request(&request(
        RequestType::Post,
        MessageType::Confirmable,
        "up",
        &big,
    ));
    w.sim.run_until(at_secs(60));

    assert_eq!(*seen.borrow(), vec![big.clone()]);
    assert_eq!(
        response_of(w.sim.terminal(w.client, id)).header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    let sent = w.client_requests();
    assert_eq!(block_in(&sent[0], BLOCK1), Some((0, true, 6)));
    assert_eq!(view(&sent[0]).payload.len(), 1024);
    assert_eq!(block_in(&sent[1], BLOCK1), Some((4, true, 4)));
    assert_eq!(view(&sent[1]).payload.len(), 256);
    assert_eq!(sent.len(), 1 + (3000 - 1024usize).div_ceil(256));
    assert_eq!(
        block_in(&w.server_responses()[0], BLOCK1),
        Some((0, true, 4)),
        "2.31 carries the server's preferred size"
    );
}

#[test]
fn a_body_too_large_for_max_message_size_goes_in_smaller_blocks() {
    let client = Config {
        max_message_size: 200,
        ..Config::default()
    };
    let mut w = world(12).client(client).build();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    w.serve(move |req| {
        s.borrow_mut().push(req.payload.clone());
        response(ResponseType::Changed, b"")
    });
    // Within the block size, but not within one 200-byte message.
    let big = body(900, 10);
    w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "p",
        &big,
    ));
    w.sim.run_until(at_secs(60));

    assert_eq!(*seen.borrow(), vec![big]);
    for bytes in w.client_requests() {
        assert!(bytes.len() <= 200);
        assert_eq!(
            block_in(&bytes, BLOCK1).map(|b| b.2),
            Some(3),
            "128-byte blocks"
        );
    }
}

#[test]
fn block1_then_block2_post_gets_the_whole_response_body() {
    // §2.7 / Figure 9 of §3.3: the request body goes in Block1 blocks, the response comes back
    // in Block2 blocks, asked for without Block1 and without the request body.
    let mut w = world(13)
        .client(blockwise(128))
        .server(blockwise(128))
        .build();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (s, s_all) = (seen.clone(), seen.clone());
    let answer = body(1000, 11);
    let a = answer.clone();
    w.serve(move |req| {
        s.borrow_mut().push(req.clone());
        response(ResponseType::Changed, &a)
    });
    let big = body(500, 12);
    let id = w.request(&request(
        RequestType::Post,
        MessageType::Confirmable,
        "soap",
        &big,
    ));
    w.sim.run_until(at_secs(60));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(r.header.code, MessageClass::Response(ResponseType::Changed));
    assert_eq!(r.payload, answer);
    let seen = seen.borrow();
    assert_eq!(seen[0].payload, big, "the whole request body");
    // A POST must not run again for each further response block (§2.6): the engine serves
    // them from the response it kept, and the application saw the request once.
    assert_eq!(seen.len(), 1);
    let block_requests: Vec<_> = w
        .client_requests()
        .iter()
        .filter_map(|r| block_in(r, BLOCK2))
        .collect();
    assert_eq!(
        block_requests,
        (1..1000u32.div_ceil(128))
            .map(|n| (n, false, 3))
            .collect::<Vec<_>>()
    );
    let answers = w.server_responses();
    let last_upload = answers
        .iter()
        .find(|b| view(b).header.code == codec::code(2, 4))
        .expect("the final response to the upload");
    assert_eq!(block_in(last_upload, BLOCK1), Some((3, false, 3)));
    assert_eq!(block_in(last_upload, BLOCK2), Some((0, true, 3)));
    drop(seen);

    // The answer stays kept for EXCHANGE_LIFETIME (§2.7): a block asked for again in a new
    // message (a new Message ID) is served from it, and the POST still ran once.
    let mut again = w
        .client_requests()
        .into_iter()
        .find(|r| block_in(r, BLOCK2).is_some_and(|(n, _, _)| n == 2))
        .expect("block 2 was asked for");
    again[2] ^= 0x55;
    let (ca, sa) = (w.ca, w.sa);
    w.sim.inject(ca, sa, &again, millis(1));
    w.sim.run_until(at_secs(61));
    let served = w.server_responses().pop().unwrap();
    assert_eq!(block_in(&served, BLOCK2), Some((2, true, 3)));
    assert_eq!(view(&served).payload, &answer[256..384]);
    assert_eq!(seen_count(&s_all), 1, "served from the kept answer");

    // Past EXCHANGE_LIFETIME it is gone. Asked for again, the engine answers 4.08 Request
    // Entity Incomplete: running the POST again without its body would repeat its effect.
    w.sim.run_until(at_secs(400));
    w.footprints_are_empty();
    again[2] ^= 0x0f;
    w.sim.inject(ca, sa, &again, millis(1));
    w.sim.run_until(at_secs(401));
    let refused = w.server_responses().pop().unwrap();
    assert_eq!(view(&refused).header.code, codec::code(4, 8));
    assert_eq!(seen_count(&s_all), 1, "the POST never ran again");
}

fn seen_count(seen: &Rc<RefCell<Vec<Packet>>>) -> usize {
    seen.borrow().len()
}

#[test]
fn request_body_over_the_servers_maximum_is_answered_4_13_with_size1() {
    let server = Config {
        blockwise: Blockwise {
            max_body_size: 4000,
            ..Blockwise::default()
        },
        ..Config::default()
    };
    let mut w = world(14).server(server).build();
    w.serve(|_| response(ResponseType::Changed, b""));
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "big",
        &body(10_000, 0),
    ));
    w.sim.run_until(at_secs(60));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    assert_eq!(
        r.get_first_option(CoapOption::Size1)
            .map(|v| decode_uint(v)),
        Some(4000)
    );
    // Size1 announced 10,000 bytes with the first block: refused at once.
    assert_eq!(w.client_requests().len(), 1);
    assert!(w.sim.requests_seen(w.server).is_empty());
    w.footprints_are_empty();
}

#[test]
fn response_body_over_max_body_size_fails_the_request() {
    let client = Config {
        blockwise: Blockwise {
            max_body_size: 4000,
            ..Blockwise::default()
        },
        ..Config::default()
    };
    let mut w = world(15).client(client).build();
    w.serve(|_| response(ResponseType::Content, &body(10_000, 0)));
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::BodyTooLarge
    );
    // Size2 in block 0 said 10,000: no further block was asked for.
    assert_eq!(w.client_requests().len(), 1);
    w.footprints_are_empty();
}

#[test]
fn server_reassembly_is_capped_per_session_with_4_13() {
    let server = Config {
        limits: Limits {
            max_block_transfers: 1,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut w = world(16).raw_client().server(server).build();
    let first_block = |path: &str, mid: u16| {
        message(
            MessageType::Confirmable,
            codec::code(0, 3),
            mid,
            &[mid as u8],
            &[(11, path.as_bytes().to_vec()), (BLOCK1, block(0, true, 0))],
            &[0; 16],
        )
    };
    let a = raw_exchange(&mut w, &first_block("a", 1));
    let b = raw_exchange(&mut w, &first_block("b", 2));
    assert_eq!(view(&a[0]).header.code, codec::code(2, 31));
    assert_eq!(view(&b[0]).header.code, codec::code(4, 13));
    let info = w.sim.endpoint(w.server).session_info(w.ca).unwrap();
    assert_eq!(info.footprint.block_transfers, 1);
}

// =============================================================================================
// A scripted server: the cases a well-behaved engine never produces

/// Encodes a message.
fn message(
    mtype: MessageType,
    code: u8,
    mid: u16,
    token: &[u8],
    options: &[(u16, Vec<u8>)],
    payload: &[u8],
) -> Vec<u8> {
    let mut sorted: Vec<(u16, &[u8])> = options.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    sorted.sort_by_key(|o| o.0);
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
    .expect("encodable");
    out
}

/// A client engine and a raw server at `sa` whose answers `script` writes: it gets each request
/// (parsed) and the count of requests so far, and returns (code, options, payload) for a
/// piggybacked answer, or None to stay silent.
type Script = Box<dyn FnMut(&MessageView<'_>, usize) -> Option<Reply>>;

/// A scripted answer: code, options, payload.
type Reply = (u8, Vec<(u16, Vec<u8>)>, Vec<u8>);

fn scripted(seed: u64, client: Config, mut script: Script) -> World {
    let mut w = world(seed).client(client).raw_server().build();
    let count = Rc::new(Cell::new(0));
    w.sim.set_raw_hook(w.sa, move |sim, me, from, bytes| {
        let Ok(v) = codec::parse(bytes) else { return };
        if !v.header.is_request() {
            return;
        }
        count.set(count.get() + 1);
        if let Some((code, options, payload)) = script(&v, count.get()) {
            let ack = message(
                MessageType::Acknowledgement,
                code,
                v.header.message_id,
                v.token,
                &options,
                &payload,
            );
            sim.inject(me, from, &ack, D);
        }
    });
    w
}

fn client_requests_raw(w: &World) -> Vec<Vec<u8>> {
    w.sim
        .sent_to(w.client, w.sa)
        .iter()
        .map(|s| s.bytes.to_vec())
        .collect()
}

/// The representation `version` cut in 64-byte blocks with ETag `version` (block `num`).
fn versioned_block(num: u32, version: u8) -> Reply {
    let full = body(256, version);
    let start = num as usize * 64;
    let more = start + 64 < full.len();
    (
        codec::code(2, 5),
        vec![(BLOCK2, block(num, more, 2)), (ETAG, vec![version])],
        full[start..(start + 64).min(full.len())].to_vec(),
    )
}

fn requested_block(v: &MessageView<'_>) -> u32 {
    v.option(BLOCK2).map_or(0, |b| decode_block(b).0)
}

#[test]
fn etag_change_mid_transfer_restarts_and_never_mixes_representations() {
    // Version 1 for the first request, version 2 afterwards: block 1 arrives with another
    // ETag, so the engine starts over and assembles version 2 only.
    let script: Script = Box::new(|v, n| {
        let version = if n <= 1 { 1 } else { 2 };
        Some(versioned_block(requested_block(v), version))
    });
    let mut w = scripted(20, Config::default(), script);
    let id = w.request(&con_get("r", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(
        response_of(w.sim.terminal(w.client, id)).payload,
        body(256, 2)
    );
    let asked: Vec<u32> = client_requests_raw(&w)
        .iter()
        .map(|b| requested_block(&view(b)))
        .collect();
    assert_eq!(asked, vec![0, 1, 0, 1, 2, 3], "restarted from block 0");
}

#[test]
fn a_resource_that_keeps_changing_fails_with_representation_changed() {
    let script: Script = Box::new(|v, n| Some(versioned_block(requested_block(v), n as u8)));
    let mut w = scripted(21, Config::default(), script);
    let id = w.request(&con_get("r", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::RepresentationChanged
    );
    // Block 0, block 1 (changed), twice more from block 0: then it gives up.
    assert_eq!(client_requests_raw(&w).len(), 6);
}

#[test]
fn a_block_that_was_not_asked_for_ends_the_transfer() {
    // Asked for block 1, the server answers with block 2.
    let script: Script = Box::new(|v, _| {
        let asked = requested_block(v);
        Some(versioned_block(if asked == 0 { 0 } else { asked + 1 }, 1))
    });
    let mut w = scripted(22, Config::default(), script);
    let id = w.request(&con_get("r", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::UnexpectedBlock
    );
    assert_eq!(client_requests_raw(&w).len(), 2);
    assert_eq!(
        w.sim
            .endpoint(w.client)
            .session_info(w.sa)
            .unwrap()
            .footprint
            .exchanges,
        0
    );
}

#[test]
fn a_non_final_block_of_the_wrong_size_ends_the_transfer() {
    let script: Script = Box::new(|_, _| {
        Some((
            codec::code(2, 5),
            vec![(BLOCK2, block(0, true, 2))],
            vec![0; 50],
        ))
    });
    let mut w = scripted(23, Config::default(), script);
    let id = w.request(&con_get("r", b""));
    w.sim.run_until(at_secs(60));
    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::UnexpectedBlock
    );
}

#[test]
fn a_response_with_a_malformed_block_option_is_rejected() {
    // RFC 7252 §5.4.1, §5.4.3: a Block option longer than 3 bytes is an unrecognized critical
    // option: a piggybacked response carrying it is ignored (the request retransmits).
    let script: Script = Box::new(|_, n| {
        if n == 1 {
            Some((
                codec::code(2, 5),
                vec![(BLOCK2, vec![0, 0, 0, 0x0e])],
                vec![1; 64],
            ))
        } else {
            Some((codec::code(2, 5), vec![], b"fine".to_vec()))
        }
    });
    let mut w = scripted(24, Config::default(), script);
    let id = w.request(&con_get("r", b""));
    w.sim.run_until(at_secs(60));
    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, b"fine");
    assert_eq!(client_requests_raw(&w).len(), 2, "retransmitted once");
}

#[test]
fn a_4_13_with_a_smaller_block1_size_restarts_the_upload_once() {
    // §2.9.3: "a 4.13 response with a smaller SZX in its Block1 Option than requested is a
    // hint to try a smaller SZX". The second such hint is the final answer.
    let script: Script = Box::new(|v, n| {
        let (num, more, szx) = decode_block(v.option(BLOCK1).expect("Block1"));
        match n {
            1 => Some((
                codec::code(4, 13),
                vec![(BLOCK1, block(num, more, 4))],
                vec![],
            )),
            _ if szx == 4 && num == 2 => Some((
                codec::code(4, 13),
                vec![(BLOCK1, block(num, more, 2))],
                vec![],
            )),
            _ => Some((
                codec::code(2, 31),
                vec![(BLOCK1, block(num, more, szx))],
                vec![],
            )),
        }
    });
    let mut w = scripted(25, Config::default(), script);
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "p",
        &body(2000, 0),
    ));
    w.sim.run_until(at_secs(60));

    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    let blocks: Vec<(u32, bool, u8)> = client_requests_raw(&w)
        .iter()
        .map(|b| block_in(b, BLOCK1).unwrap())
        .collect();
    assert_eq!(
        blocks,
        vec![(0, true, 6), (0, true, 4), (1, true, 4), (2, true, 4)]
    );
    assert_eq!(
        view(&client_requests_raw(&w)[1])
            .option(SIZE1)
            .map(decode_uint),
        Some(2000),
        "the restart announces the size again"
    );
}

#[test]
fn a_4_08_ends_the_upload_as_its_final_response() {
    let script: Script = Box::new(|v, n| {
        let (num, more, szx) = decode_block(v.option(BLOCK1).expect("Block1"));
        if n == 2 {
            Some((codec::code(4, 8), vec![], vec![]))
        } else {
            Some((
                codec::code(2, 31),
                vec![(BLOCK1, block(num, more, szx))],
                vec![],
            ))
        }
    });
    let mut w = scripted(26, Config::default(), script);
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "p",
        &body(5000, 0),
    ));
    w.sim.run_until(at_secs(60));
    assert_eq!(
        response_of(w.sim.terminal(w.client, id)).header.code,
        MessageClass::Response(ResponseType::RequestEntityIncomplete)
    );
    assert_eq!(client_requests_raw(&w).len(), 2);
}

#[test]
fn a_4_13_without_block1_is_the_final_response() {
    let script: Script =
        Box::new(|_, _| Some((codec::code(4, 13), vec![(SIZE1, uint(100))], vec![])));
    let mut w = scripted(27, Config::default(), script);
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "p",
        &body(3000, 0),
    ));
    w.sim.run_until(at_secs(60));
    let r = response_of(w.sim.terminal(w.client, id));
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    assert_eq!(client_requests_raw(&w).len(), 1);
}

// =============================================================================================
// A raw client against the engine's server: §2.5 error cases and malformed options

/// Sends `bytes` from a raw client to the server engine and returns what came back.
fn raw_exchange(w: &mut World, bytes: &[u8]) -> Vec<Vec<u8>> {
    let before = w.sim.raw_inbox(w.ca).len();
    w.sim.inject(w.ca, w.sa, bytes, D);
    w.sim.run_for(millis(100));
    w.sim.raw_inbox(w.ca)[before..]
        .iter()
        .map(|r| r.bytes.to_vec())
        .collect()
}

#[test]
fn out_of_order_or_missing_blocks_get_4_08() {
    let mut w = world(30).raw_client().build();
    let put = |mid: u16, b: Vec<u8>, payload: &[u8]| {
        message(
            MessageType::Confirmable,
            codec::code(0, 3),
            mid,
            &[9],
            &[(11, b"x".to_vec()), (BLOCK1, b)],
            payload,
        )
    };
    // Block 1 with no block 0.
    let got = raw_exchange(&mut w, &put(1, block(1, true, 0), &[0; 16]));
    assert_eq!(view(&got[0]).header.code, codec::code(4, 8));
    // Block 0, then block 2.
    let got = raw_exchange(&mut w, &put(2, block(0, true, 0), &[0; 16]));
    assert_eq!(view(&got[0]).header.code, codec::code(2, 31));
    let got = raw_exchange(&mut w, &put(3, block(2, false, 0), &[0; 3]));
    assert_eq!(view(&got[0]).header.code, codec::code(4, 8));
    assert!(w.sim.requests_seen(w.server).is_empty());
    let fp = w
        .sim
        .endpoint(w.server)
        .session_info(w.ca)
        .unwrap()
        .footprint;
    assert_eq!(fp.block_transfers, 0, "the broken transfer is dropped");
}

#[test]
fn a_duplicated_block_is_answered_from_the_dedup_cache_and_appended_once() {
    let mut w = world(31).raw_client().build();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    w.sim.set_app(w.server, move |sim, node, event| {
        if let Event::Request { id, request, .. } = event {
            s.borrow_mut().push(request.payload.clone());
            sim.respond(node, *id, &response(ResponseType::Changed, b""))
                .unwrap();
        }
    });
    let put = |mid: u16, b: Vec<u8>, payload: &[u8]| {
        message(
            MessageType::Confirmable,
            codec::code(0, 3),
            mid,
            &[9],
            &[(11, b"x".to_vec()), (BLOCK1, b)],
            payload,
        )
    };
    let first = put(1, block(0, true, 0), &[1; 16]);
    let a = raw_exchange(&mut w, &first);
    let b = raw_exchange(&mut w, &first);
    assert_eq!(a, b, "the cached 2.31");
    raw_exchange(&mut w, &put(2, block(1, false, 0), &[2; 4]));
    let mut expected = vec![1; 16];
    expected.extend([2; 4]);
    assert_eq!(*seen.borrow(), vec![expected]);
}

#[test]
fn malformed_block_options_in_requests_get_the_rfc_answers() {
    let mut w = world(32).raw_client().build();
    w.sim.set_app(w.server, |sim, node, event| {
        if let Event::Request { id, .. } = event {
            sim.respond(node, *id, &response(ResponseType::Content, b"x"))
                .unwrap();
        }
    });
    let get = |mtype, mid: u16, options: &[(u16, Vec<u8>)]| {
        message(mtype, codec::code(0, 1), mid, &[1], options, &[])
    };
    let cases = [
        // SZX 7 is reserved: 4.00 Bad Request (RFC 7959 §2.2).
        (
            get(MessageType::Confirmable, 1, &[(BLOCK2, vec![0x07])]),
            codec::code(4, 0),
        ),
        (
            get(MessageType::Confirmable, 2, &[(BLOCK1, vec![0x1f])]),
            codec::code(4, 0),
        ),
        // Longer than 3 bytes: malformed critical option, 4.02 Bad Option (RFC 7252 §5.4.3).
        (
            get(MessageType::Confirmable, 3, &[(BLOCK2, vec![0, 0, 0, 6])]),
            codec::code(4, 2),
        ),
        (
            get(MessageType::Confirmable, 4, &[(BLOCK1, vec![1; 5])]),
            codec::code(4, 2),
        ),
        // A Size option is elective: a malformed one is ignored.
        (
            get(MessageType::Confirmable, 5, &[(SIZE2, vec![1; 5])]),
            codec::code(2, 5),
        ),
    ];
    for (bytes, code) in cases {
        let got = raw_exchange(&mut w, &bytes);
        assert_eq!(view(&got[0]).header.code, code, "{bytes:02x?}");
    }
    // Non-confirmable with a malformed critical option: rejected with Reset (§5.4.1).
    let got = raw_exchange(
        &mut w,
        &get(MessageType::NonConfirmable, 6, &[(BLOCK2, vec![1; 4])]),
    );
    assert_eq!(view(&got[0]).header.mtype, MessageType::Reset);
    assert_eq!(w.sim.requests_seen(w.server).len(), 1);
}

#[test]
fn a_partial_request_body_is_dropped_after_exchange_lifetime() {
    let mut w = world(33).raw_client().build();
    let b0 = message(
        MessageType::Confirmable,
        codec::code(0, 3),
        1,
        &[1],
        &[(BLOCK1, block(0, true, 0))],
        &[0; 16],
    );
    let arrived = w.sim.now() + D;
    raw_exchange(&mut w, &b0);
    let fp = |w: &World| {
        w.sim
            .endpoint(w.server)
            .session_info(w.ca)
            .map(|i| i.footprint.block_transfers)
    };
    assert_eq!(fp(&w), Some(1));
    let lifetime = TransmissionParameters::default().exchange_lifetime();
    // The session's deadline covers the expiry: stepping from deadline to deadline frees it.
    w.sim.run_until(just_before(arrived + lifetime));
    assert_eq!(fp(&w), Some(1));
    w.sim.run_until(arrived + lifetime);
    assert_eq!(fp(&w), Some(0));
    // A late block 1 finds nothing to add to.
    let b1 = message(
        MessageType::Confirmable,
        codec::code(0, 3),
        2,
        &[1],
        &[(BLOCK1, block(1, false, 0))],
        &[0; 3],
    );
    let got = raw_exchange(&mut w, &b1);
    assert_eq!(view(&got[0]).header.code, codec::code(4, 8));
}

// =============================================================================================
// One terminal event, whatever happens mid-transfer

#[test]
fn cancel_mid_transfer_ends_it_once_and_sends_nothing_more() {
    let mut w = world(40).build();
    w.serve(|_| response(ResponseType::Content, &body(20_000, 0)));
    let id = w.request(&con_get("big", b""));
    // Each block takes one round trip (2 D): cancel during the fourth.
    w.sim.run_until(Instant::ZERO + D * 7);
    w.sim.cancel(w.client, id).expect("pending");
    let sent = w.client_requests().len();
    w.sim.run_until(at_secs(300));

    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::Cancelled
    );
    assert_eq!(sent, 4);
    assert_eq!(
        w.client_requests().len(),
        4,
        "no block asked for after the cancel"
    );
    w.footprints_are_empty();
}

#[test]
fn cancel_of_an_upload_mid_transfer_leaves_the_server_to_expire_its_partial_body() {
    let mut w = world(41).build();
    w.serve(|_| response(ResponseType::Changed, b""));
    let id = w.request(&request(
        RequestType::Put,
        MessageType::Confirmable,
        "p",
        &body(20_000, 0),
    ));
    w.sim.run_until(Instant::ZERO + D * 5);
    w.sim.cancel(w.client, id).expect("pending");
    w.sim.run_for(secs(1));
    assert_eq!(
        w.sim
            .endpoint(w.server)
            .session_info(w.ca)
            .unwrap()
            .footprint
            .block_transfers,
        1
    );
    w.sim.run_until(at_secs(600));
    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::Cancelled
    );
    assert!(w.sim.requests_seen(w.server).is_empty());
    // The server session was idle-reaped after its partial body expired.
    assert!(w.sim.endpoint(w.server).session_info(w.ca).is_none());
}

#[test]
fn session_failure_mid_transfer_ends_the_request_once() {
    let client = Config {
        keepalive: Some(Keepalive {
            interval: secs(5),
            timeout: secs(5),
        }),
        ..Config::default()
    };
    let mut w = world(42).client(client).build();
    w.serve(|_| response(ResponseType::Content, &body(20_000, 0)));
    let id = w.request(&con_get("big", b""));
    // The link dies during the third block.
    w.sim
        .partition(w.ca, w.sa, Window::from(Instant::ZERO + D * 5));
    w.sim.run_until(at_secs(300));

    assert!(matches!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::SessionFailed(_)
    ));
    assert!(w.sim.endpoint(w.client).session_info(w.sa).is_none());
}

#[test]
fn closing_the_session_mid_upload_ends_the_request_once() {
    let mut w = world(43).build();
    w.serve(|_| response(ResponseType::Changed, b""));
    let id = w.request(&request(
        RequestType::Post,
        MessageType::Confirmable,
        "p",
        &body(20_000, 0),
    ));
    w.sim.run_until(Instant::ZERO + D * 5);
    w.sim.close_session(w.client, w.sa).unwrap();
    w.sim.run_until(at_secs(600));
    assert_eq!(
        failure_of(w.sim.terminal(w.client, id)),
        ExchangeError::SessionClosed
    );
}

#[test]
fn a_lost_block_is_retransmitted_like_any_confirmable_request() {
    let mut w = world(44).build();
    let big = body(4000, 1);
    let b = big.clone();
    w.serve(move |_| response(ResponseType::Content, &b));
    // Drop the first transmission of the request for block 2.
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let sa = w.sa;
    w.sim.set_filter(move |info| {
        if info.to == sa
            && !d.get()
            && codec::parse(info.bytes)
                .ok()
                .and_then(|v| v.option(BLOCK2).map(decode_block))
                .is_some_and(|b| b.0 == 2)
        {
            d.set(true);
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    });
    let id = w.request(&con_get("big", b""));
    w.sim.run_until(at_secs(60));
    assert!(dropped.get());
    assert_eq!(response_of(w.sim.terminal(w.client, id)).payload, big);
    assert_eq!(w.client_requests().len(), 5, "4 blocks, one retransmission");
    assert_eq!(w.sim.requests_seen(w.server).len(), 4);
}

#[test]
fn nstart_holds_the_next_block_while_another_request_is_outstanding() {
    // NSTART 1: A is acknowledged (its answer comes later, separately), so B may go; when A's
    // first block arrives B is still outstanding, and A's next block waits until B's Empty ACK.
    let mut w = world(45).build();
    let big = body(2048, 2);
    let b = big.clone();
    w.sim.set_app(w.server, move |sim, node, event| {
        let Event::Request { id, request, .. } = event else {
            return;
        };
        let id = *id;
        let path = request.get_first_option(CoapOption::UriPath).cloned();
        let (delay, r) = if path.as_deref() == Some(&b"a"[..]) {
            (secs(3), response(ResponseType::Content, &b))
        } else {
            (secs(4), response(ResponseType::Content, b"b"))
        };
        let t = sim.now() + delay;
        sim.at(t, move |sim| sim.respond(node, id, &r).unwrap());
    });
    let a = w.request(&con_get("a", b""));
    w.sim.run_until(at_millis(2_900));
    let b_id = w.request(&con_get("b", b""));
    w.sim.run_until(at_secs(60));

    assert_eq!(response_of(w.sim.terminal(w.client, a)).payload, big);
    assert_eq!(response_of(w.sim.terminal(w.client, b_id)).payload, b"b");
    // A's first block arrives at 0 + D + 3 s + D; B's Empty ACK at 2.9 s + D + 1 s + D.
    let b_acked = at_millis(2_900) + D + secs(1) + D;
    let block1_sent = w
        .sim
        .sent_to(w.client, w.sa)
        .iter()
        .find(|s| block_in(&s.bytes, BLOCK2).is_some_and(|b| b.0 == 1))
        .expect("block 1 asked for")
        .at;
    assert_eq!(
        block1_sent, b_acked,
        "block 1 is asked for as soon as B stops being outstanding"
    );
}

// =============================================================================================
// The property: large bodies under loss, duplication and reordering

const DEFAULT_SEEDS: u64 = 2_000;

#[derive(Clone, Debug)]
struct Issued {
    path: String,
}

#[derive(Default)]
struct Journal {
    issued: BTreeMap<(NodeId, RequestId), Issued>,
    refused: Vec<String>,
    /// Request bodies the server applications saw, by path.
    seen: Vec<(String, Vec<u8>, bool)>,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    requests: u64,
    responses: u64,
    failures: BTreeMap<String, u64>,
    body_bytes: u64,
}

/// The representation of `path`: its length and tag are encoded in the path.
fn representation(path: &str) -> Vec<u8> {
    let mut parts = path.split('-');
    let _ = parts.next();
    let len: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let tag: u8 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    body(len, tag)
}

fn upload_of(path: &str) -> Vec<u8> {
    let mut parts = path.split('-');
    let _ = parts.next();
    let _ = parts.next();
    let _ = parts.next();
    let len: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    body(len, 0x5a)
}

fn path_of(p: &Packet) -> String {
    p.get_first_option(CoapOption::UriPath)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

struct PropWorld {
    sim: Sim,
    clients: Vec<NodeId>,
    servers: Vec<NodeId>,
    journal: Rc<RefCell<Journal>>,
    description: String,
}

fn build(seed: u64) -> PropWorld {
    let mut r = SplitMix64::new(derive_seed(seed, 0xB10C));
    let mut sim = Sim::new(seed);
    let mut description = String::new();
    let ack_timeout = millis(r.pick(&[500, 1_000, 2_000]));
    let transmission = TransmissionParameters {
        ack_timeout,
        ack_random_factor_milli: r.pick(&[1_000, 1_500]),
        max_retransmit: r.range(2, 4) as u8,
        nstart: r.pick(&[1, 1, 2]),
        max_latency: secs(r.pick(&[2, 10])),
        processing_delay: ack_timeout,
    };
    let mut configs = Vec::new();
    let n_servers = 1 + r.below(2) as usize;
    let n_clients = 1 + r.below(2) as usize;
    for _ in 0..n_servers + n_clients {
        let c = Config {
            transmission: transmission.clone(),
            // Long enough tokens that a late answer is never taken for another request's (see
            // `Config::token_length`).
            token_length: r.pick(&[4, 8]),
            empty_ack_delay: millis(r.pick(&[200, 1_000])),
            max_message_size: r.pick(&[1152, 1152, 600, 300]),
            blockwise: Blockwise {
                // With bodies up to 10 KiB: at most 160 blocks per transfer.
                block_size: r.pick(&[64, 256, 1024, 1024]),
                early_negotiation: r.chance(0.3),
                max_body_size: r.pick(&[64 * 1024, 64 * 1024, 6_000]),
            },
            limits: Limits {
                max_block_transfers: r.pick(&[1, 2, 4]),
                max_pending_requests: r.pick(&[2, 32]),
                ..Limits::default()
            },
            ..Config::default()
        };
        configs.push(c);
    }
    let _ = write!(description, "{transmission:?}");
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let (server, a) = mesh_node(i, n_servers);
        let _ = write!(
            description,
            "\n  {} {a}: mms {} {:?} {:?}",
            if server { "server" } else { "client" },
            c.max_message_size,
            c.blockwise,
            c.limits.max_block_transfers
        );
        let node = sim.add_endpoint(a, c.clone());
        if server {
            servers.push(node);
        } else {
            clients.push(node);
        }
    }
    let link = Link {
        delay: millis(r.range(1, 30)),
        jitter: millis(r.pick(&[0, 5, 50])),
        loss: r.pick(&[0.0, 0.02, 0.1, 0.2]),
        duplicate: r.pick(&[0.0, 0.05, 0.2]),
    };
    let _ = write!(description, "\n  network {link:?}");
    sim.set_default_link(link);

    let journal = Rc::new(RefCell::new(Journal::default()));
    for &s in &servers {
        let mut app_rng = SplitMix64::new(derive_seed(seed, 7_000 + s as u64));
        let j = journal.clone();
        // Every block request is answered with the whole representation: build each once.
        let mut representations: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        sim.set_app(s, move |sim, node, event| {
            let Event::Request { id, request, .. } = event else {
                return;
            };
            let path = path_of(request);
            let continuation = has_option(request, CoapOption::Block2)
                && packet_block(request, CoapOption::Block2).is_some_and(|b| b.0 > 0);
            j.borrow_mut()
                .seen
                .push((path.clone(), request.payload.clone(), continuation));
            let code = if request.header.code == MessageClass::Request(RequestType::Get) {
                ResponseType::Content
            } else {
                ResponseType::Changed
            };
            let body = representations
                .entry(path.clone())
                .or_insert_with(|| representation(&path));
            let answer = response(code, body);
            let id = *id;
            if app_rng.chance(0.7) {
                sim.respond(node, id, &answer).expect("respond");
            } else {
                let t = sim.now() + millis(app_rng.range(50, 3_000));
                sim.at(t, move |sim| {
                    // The request may have expired with its session meanwhile.
                    let _ = sim.respond(node, id, &answer);
                });
            }
        });
    }
    let server_addrs: Vec<SocketAddr> = servers.iter().map(|&s| sim.addr(s)).collect();
    for &c in &clients {
        for n in 0..r.range(1, 4) {
            let t = at_millis(r.range(0, 20_000));
            let peer = r.pick(&server_addrs);
            let response_len = r.pick(&[0, 10, 1_000, 3_000, 10_240]);
            let upload_len = if r.chance(0.4) {
                r.pick(&[0, 100, 2_000, 10_240])
            } else {
                0
            };
            let confirmable = r.chance(0.8);
            let cancel_after = r.chance(0.1).then(|| millis(r.range(0, 2_000)));
            let path = format!("c{c}n{n}-{response_len}-{}-{upload_len}", n % 200);
            let _ = write!(
                description,
                "\n  {t:?} client {c} -> {peer} {path} con {confirmable} cancel {cancel_after:?}"
            );
            let j = journal.clone();
            sim.at(t, move |sim| {
                let upload = upload_of(&path);
                let method = if upload.is_empty() {
                    RequestType::Get
                } else {
                    RequestType::Put
                };
                let mtype = if confirmable {
                    MessageType::Confirmable
                } else {
                    MessageType::NonConfirmable
                };
                match sim.request(c, peer, &request(method, mtype, &path, &upload)) {
                    Ok(id) => {
                        j.borrow_mut().issued.insert((c, id), Issued { path });
                        if let Some(d) = cancel_after {
                            let t = sim.now() + d;
                            sim.at(t, move |sim| {
                                let _ = sim.cancel(c, id);
                            });
                        }
                    }
                    Err(e) => j.borrow_mut().refused.push(format!("{e:?}")),
                }
            });
        }
    }
    PropWorld {
        sim,
        clients,
        servers,
        journal,
        description,
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn check(w: &PropWorld, stats: &mut Stats) -> Result<(), String> {
    let j = w.journal.borrow();
    ensure!(j.refused.is_empty(), "requests refused: {:?}", j.refused);
    let mut ended: BTreeMap<(NodeId, RequestId), &Event> = BTreeMap::new();
    for &c in &w.clients {
        for l in w.sim.events(c) {
            let Some(id) = terminal_of(&l.event) else {
                continue;
            };
            ensure!(
                ended.insert((c, id), &l.event).is_none(),
                "{id:?} ended twice"
            );
            let Some(issued) = j.issued.get(&(c, id)) else {
                return Err(format!("terminal event for an unknown request: {l:?}"));
            };
            match &l.event {
                Event::Response { response, .. } => {
                    let code = response.header.code;
                    let ok = matches!(
                        code,
                        MessageClass::Response(ResponseType::Content | ResponseType::Changed)
                    );
                    if ok {
                        let expected = representation(&issued.path);
                        ensure!(
                            response.payload == expected,
                            "{id:?} {}: body of {} bytes differs from the {} expected",
                            issued.path,
                            response.payload.len(),
                            expected.len()
                        );
                        ensure!(
                            !has_option(response, CoapOption::Block2)
                                && !has_option(response, CoapOption::Block1),
                            "{id:?}: block options leaked to the application"
                        );
                        stats.body_bytes += expected.len() as u64;
                    } else {
                        // What the engines may answer on their own: a server that lost a
                        // partial body (4.08), has no room or a smaller limit (4.13), or whose
                        // application is not keeping up (5.03).
                        ensure!(
                            matches!(
                                code,
                                MessageClass::Response(
                                    ResponseType::RequestEntityIncomplete
                                        | ResponseType::RequestEntityTooLarge
                                        | ResponseType::ServiceUnavailable
                                )
                            ),
                            "{id:?} {}: unexpected response {code:?}",
                            issued.path
                        );
                    }
                    stats.responses += 1;
                }
                Event::RequestFailed { error, .. } => {
                    let acceptable = matches!(
                        error,
                        ExchangeError::Timeout
                            | ExchangeError::Cancelled
                            | ExchangeError::BodyTooLarge
                    );
                    ensure!(acceptable, "{id:?} {}: failed with {error:?}", issued.path);
                    *stats.failures.entry(format!("{error:?}")).or_default() += 1;
                }
                other => return Err(format!("{id:?}: unexpected terminal {other:?}")),
            }
        }
    }
    for (key, issued) in &j.issued {
        ensure!(
            ended.contains_key(key),
            "{:?} {} never ended",
            key.1,
            issued.path
        );
        stats.requests += 1;
    }
    // Every request body a server application saw is whole and byte-exact; continuation
    // requests of a Block2 transfer carry none.
    let mut uploads: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (path, payload, continuation) in &j.seen {
        let expected = &*uploads.entry(path).or_insert_with(|| upload_of(path));
        if *continuation && !expected.is_empty() {
            ensure!(
                payload.is_empty() || payload == expected,
                "{path}: continuation with a partial body of {} bytes",
                payload.len()
            );
        } else {
            ensure!(
                payload == expected,
                "{path}: the server application got {} bytes, not the {} sent",
                payload.len(),
                expected.len()
            );
        }
    }
    // State is freed.
    for node in w.clients.iter().chain(&w.servers) {
        let ep = w.sim.endpoint(*node);
        for peer in ep.peers() {
            let info = ep.session_info(peer).unwrap();
            ensure!(
                info.footprint
                    == SessionFootprint {
                        dedup_entries: info.footprint.dedup_entries,
                        ..SessionFootprint::default()
                    },
                "node {node}: state left with {peer}: {:?}",
                info.footprint
            );
        }
    }
    for &s in &w.servers {
        ensure!(
            w.sim.endpoint(s).session_count() == 0,
            "server {s}: sessions left"
        );
    }
    Ok(())
}

fn run_seed(seed: u64, trace: bool) -> Result<Stats, String> {
    let mut w = build(seed);
    w.sim.trace = trace;
    // Past the longest transfer (160 blocks, each retransmitted up to 4 times), every lifetime
    // (EXCHANGE_LIFETIME ≤ 96 s here) and the idle timeout (300 s). Virtual time is free.
    w.sim.run_until(at_secs(3_000));
    let mut stats = Stats::default();
    check(&w, &mut stats).map_err(|e| format!("seed {seed}: {e}\n{}", w.description))?;
    Ok(stats)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn large_bodies_survive_loss_duplication_and_reordering_over_2_000_seeds() {
    let seeds = env_u64("BLOCK_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    let results: Vec<(Stats, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut stats = Stats::default();
                    let mut failures = Vec::new();
                    let mut seed = t;
                    while seed < seeds {
                        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, false))) {
                            Ok(Ok(s)) => {
                                stats.requests += s.requests;
                                stats.responses += s.responses;
                                stats.body_bytes += s.body_bytes;
                                for (k, v) in s.failures {
                                    *stats.failures.entry(k).or_default() += v;
                                }
                            }
                            Ok(Err(e)) => failures.push(e),
                            Err(_) => failures.push(format!("seed {seed}: panicked")),
                        }
                        seed += threads;
                    }
                    (stats, failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for (s, f) in results {
        total.requests += s.requests;
        total.responses += s.responses;
        total.body_bytes += s.body_bytes;
        for (k, v) in s.failures {
            *total.failures.entry(k).or_default() += v;
        }
        failures.extend(f);
    }
    println!(
        "block-wise seeds run: {seeds}; {} requests, {} responses ({} body bytes byte-exact), failures {:?}",
        total.requests, total.responses, total.body_bytes, total.failures
    );
    if !failures.is_empty() {
        failures.sort();
        let report: Vec<_> = failures.iter().take(3).cloned().collect();
        panic!(
            "{} of {seeds} seeds failed; first ones:\n{}",
            failures.len(),
            report.join("\n\n")
        );
    }
    assert!(total.responses > seeds && total.body_bytes > seeds * 1_000);
}

#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let trace = std::env::var("SIM_TRACE").is_ok();
    match run_seed(seed, trace) {
        Ok(stats) => println!("seed {seed}: ok {stats:?}"),
        Err(e) => panic!("{e}"),
    }
}
