//! RFC 7252's treatment of malformed and unprocessable input (§3, §4.2, §4.3, §5.4.1), and
//! typed errors for API misuse. Each test feeds raw bytes to a fresh endpoint and checks
//! exactly what goes out, what the application sees, and that no state is kept.

#[cfg(any(feature = "client", feature = "server"))]
use coap_engine::Error;
use coap_engine::{Config, Endpoint, Event, Instant, Transmit};
#[cfg(feature = "client")]
use coap_lite::CoapOption;
use coap_lite::MessageType;
#[cfg(any(feature = "client", feature = "server"))]
use coap_lite::{MessageClass, Packet, RequestType, ResponseType};
use std::net::SocketAddr;

const NOW: Instant = Instant::ZERO;

fn peer() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

fn server() -> Endpoint {
    Endpoint::new(Config::default(), 7).unwrap()
}

fn drain(ep: &mut Endpoint) -> (Vec<Transmit>, Vec<Event>) {
    let mut t = Vec::new();
    while let Some(x) = ep.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = ep.poll_event() {
        e.push(x);
    }
    (t, e)
}

/// Feeds one datagram to a fresh endpoint and returns what came out.
fn feed(bytes: &[u8]) -> (Endpoint, Vec<Transmit>, Vec<Event>) {
    let mut ep = server();
    ep.handle_datagram(NOW, peer(), bytes);
    let (t, e) = drain(&mut ep);
    (ep, t, e)
}

fn assert_reset_for(t: &[Transmit], mid: u16) {
    assert_eq!(t.len(), 1, "exactly one reply expected, got {t:?}");
    let rst = coap_engine::codec::parse(&t[0].payload).expect("reply parses");
    assert_eq!(rst.header.mtype, MessageType::Reset);
    assert_eq!(rst.header.message_id, mid);
    assert!(rst.header.is_empty() && rst.token.is_empty());
    assert_eq!(t[0].destination, peer());
}

fn assert_silent(ep: &Endpoint, t: &[Transmit], e: &[Event]) {
    assert!(t.is_empty(), "nothing may be sent, got {t:?}");
    assert!(e.is_empty(), "no event expected, got {e:?}");
    assert_eq!(ep.session_count(), 0, "no state may be kept for bad input");
}

// ------------------------------------------------------------------ header-level

#[test]
fn datagram_shorter_than_a_header_is_ignored() {
    for len in 0..4 {
        let (ep, t, e) = feed(&[0x40, 0x01, 0x12, 0x34][..len]);
        assert_silent(&ep, &t, &e);
    }
}

#[test]
fn version_other_than_1_is_silently_ignored_even_for_con() {
    for version in [0u8, 2, 3] {
        let (ep, t, e) = feed(&[version << 6, 0x01, 0x12, 0x34]);
        assert_silent(&ep, &t, &e);
    }
}

// ------------------------------------------------------------------ format errors

#[test]
fn con_with_token_length_9_to_15_gets_reset() {
    for tkl in 9u8..=15 {
        let mut bytes = vec![0x40 | tkl, 0x01, 0xAB, 0xCD];
        bytes.extend(std::iter::repeat_n(0x11, tkl as usize));
        let (ep, t, e) = feed(&bytes);
        assert_reset_for(&t, 0xABCD);
        assert!(e.is_empty());
        assert_eq!(ep.session_count(), 0);
    }
}

#[test]
fn malformed_non_ack_and_rst_are_silently_dropped() {
    for mtype in [1u8, 2, 3] {
        // TKL 9: a format error whatever the type.
        let (ep, t, e) = feed(&[0x40 | mtype << 4 | 9, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_silent(&ep, &t, &e);
        // Payload marker with nothing after it.
        let (ep, t, e) = feed(&[0x40 | mtype << 4, 0x45, 0, 2, 0xFF]);
        assert_silent(&ep, &t, &e);
    }
}

#[test]
fn con_with_payload_marker_and_empty_payload_gets_reset() {
    let (ep, t, e) = feed(&[0x40, 0x01, 0x00, 0x07, 0xFF]);
    assert_reset_for(&t, 7);
    assert!(e.is_empty());
    assert_eq!(ep.session_count(), 0);
}

#[test]
fn con_with_reserved_option_nibbles_or_truncated_options_gets_reset() {
    let cases: [&[u8]; 4] = [
        &[0x40, 0x01, 0, 9, 0xF1, 0x00], // delta nibble 15 that is not a payload marker
        &[0x40, 0x01, 0, 9, 0xBF],       // length nibble 15
        &[0x40, 0x01, 0, 9, 0xB5, b'a', b'b'], // Uri-Path claims 5 bytes, 2 present
        &[0x40, 0x01, 0, 9, 0xD0],       // extended delta byte missing
    ];
    for bytes in cases {
        let (ep, t, e) = feed(bytes);
        assert_reset_for(&t, 9);
        assert!(e.is_empty(), "{bytes:?}");
        assert_eq!(ep.session_count(), 0);
    }
}

#[test]
fn empty_con_with_trailing_bytes_is_a_format_error() {
    // §4.1: an Empty message has TKL 0 and nothing after the Message ID.
    let (_, t, e) = feed(&[0x40, 0x00, 0, 5, 0x00]);
    assert_reset_for(&t, 5);
    assert!(e.is_empty());
    let (_, t, _) = feed(&[0x41, 0x00, 0, 6, 0xAA]);
    assert_reset_for(&t, 6);
}

#[test]
fn huge_random_datagrams_never_panic_and_keep_bounded_state() {
    let mut x: u64 = 0x1234_5678;
    let mut ep = server();
    for round in 0..200u64 {
        let len = (round as usize * 331) % 65_000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        ep.handle_datagram(NOW, peer(), &bytes);
        let (t, _) = drain(&mut ep);
        assert!(t.len() <= 1, "at most one reply per datagram");
    }
    assert!(ep.session_count() <= 1);
}

// ------------------------------------------------------------------ message-level rejection

#[test]
fn ping_from_a_stranger_gets_reset_and_no_session() {
    let (ep, t, e) = feed(&[0x40, 0x00, 0x22, 0x33]);
    assert_reset_for(&t, 0x2233);
    assert!(e.is_empty());
    assert_eq!(ep.session_count(), 0);
}

#[test]
fn empty_non_is_ignored() {
    let (ep, t, e) = feed(&[0x50, 0x00, 0, 1]);
    assert_silent(&ep, &t, &e);
}

#[test]
fn reset_that_is_not_empty_and_ack_carrying_a_request_are_ignored() {
    let (ep, t, e) = feed(&[0x70, 0x45, 0, 1]);
    assert_silent(&ep, &t, &e);
    let (ep, t, e) = feed(&[0x60, 0x01, 0, 1]);
    assert_silent(&ep, &t, &e);
}

#[test]
fn con_with_reserved_code_class_gets_reset() {
    for code in [
        0x20u8, /* 1.00 */
        0xC0,   /* 6.00 */
        0xE1,   /* 7.01 */
    ] {
        let (ep, t, e) = feed(&[0x40, code, 0, 3]);
        assert_reset_for(&t, 3);
        assert!(e.is_empty());
        assert_eq!(ep.session_count(), 0);
    }
}

#[test]
fn con_response_matching_no_exchange_gets_reset() {
    // 2.05 with a token nobody asked for (RFC 7252 §5.3.2).
    let (ep, t, e) = feed(&[0x41, 0x45, 0, 4, 0x99]);
    assert_reset_for(&t, 4);
    assert!(e.is_empty());
    assert_eq!(ep.session_count(), 0);
}

/// A GET with token 0x7A and one one-byte option numbered `number` (≥ 269, two-byte
/// extended delta form).
#[cfg(feature = "server")]
fn request_with_option(mtype: u8, mid: u16, number: u16) -> Vec<u8> {
    let ext = (number - 269).to_be_bytes();
    let [hi, lo] = mid.to_be_bytes();
    vec![
        0x41 | mtype << 4,
        0x01,
        hi,
        lo,
        0x7A,
        0xE1,
        ext[0],
        ext[1],
        b'x',
    ]
}

#[cfg(feature = "server")]
#[test]
fn con_request_with_unrecognized_critical_option_gets_4_02_piggybacked() {
    let bytes = request_with_option(0, 0x1001, 2051); // odd: critical, and unknown
    let (mut ep, t, e) = feed(&bytes);
    assert!(
        e.iter().all(|e| !matches!(e, Event::Request { .. })),
        "the application never sees it: {e:?}"
    );
    assert_eq!(t.len(), 1);
    let ack = coap_engine::codec::parse(&t[0].payload).unwrap();
    assert_eq!(ack.header.mtype, MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 0x1001);
    assert_eq!(ack.header.code, coap_engine::codec::code(4, 2));
    assert_eq!(ack.token, [0x7A]);
    // A duplicate gets the very same 4.02 from the deduplication cache.
    ep.handle_datagram(NOW, peer(), &bytes);
    let (t2, e2) = drain(&mut ep);
    assert!(e2.is_empty());
    assert_eq!(t2.len(), 1);
    assert_eq!(&*t2[0].payload, &*t[0].payload);
}

#[cfg(feature = "server")]
#[test]
fn non_request_with_unrecognized_critical_option_is_rejected_with_reset() {
    let (_, t, e) = feed(&request_with_option(1, 0x1002, 2051));
    assert!(e.iter().all(|e| !matches!(e, Event::Request { .. })));
    assert_reset_for(&t, 0x1002);
}

#[cfg(feature = "server")]
#[test]
fn unknown_elective_option_is_passed_to_the_application() {
    let (_, t, e) = feed(&request_with_option(0, 0x1003, 2048)); // even: elective
    assert!(t.is_empty(), "no immediate reply: the application answers");
    assert!(
        matches!(
            e.as_slice(),
            [
                Event::SessionNew { .. },
                Event::SessionEstablished { .. },
                Event::Request { .. }
            ]
        ),
        "{e:?}"
    );
}

#[cfg(feature = "server")]
#[test]
fn unknown_method_code_reaches_the_application_to_answer_4_05() {
    // 0.31 is a request code no RFC assigns; the application decides (RFC 7252 §5.8).
    let (_, t, e) = feed(&[0x40, 0x1F, 0, 8]);
    assert!(t.is_empty());
    assert!(e.iter().any(
        |e| matches!(e, Event::Request { request, .. } if u8::from(request.header.code) == 0x1F)
    ));
}

// ------------------------------------------------------------------ API misuse

#[cfg(feature = "client")]
#[test]
fn request_with_a_response_code_is_refused_with_a_typed_error() {
    let mut ep = server();
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(ResponseType::Content);
    let err = ep.request(NOW, peer(), &p).unwrap_err();
    assert_eq!(err, Error::NotARequest);
    assert!(
        err.to_string().contains("0.01-0.31"),
        "message says what to do: {err}"
    );
    assert_eq!(
        ep.session_count(),
        0,
        "a failed call leaves no session behind"
    );
    assert!(ep.poll_event().is_none());
}

#[cfg(feature = "client")]
#[test]
fn request_as_ack_or_with_long_token_is_refused() {
    let mut ep = server();
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.set_type(MessageType::Acknowledgement);
    assert_eq!(
        ep.request(NOW, peer(), &p).unwrap_err(),
        Error::InvalidMessageType
    );
    p.header.set_type(MessageType::Confirmable);
    p.set_token(vec![1; 9]);
    assert_eq!(
        ep.request(NOW, peer(), &p).unwrap_err(),
        Error::TokenTooLong
    );
}

#[cfg(feature = "client")]
#[test]
fn oversized_request_is_refused_not_truncated() {
    let mut ep = server();
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Put);
    // A large body alone goes block-wise (RFC 7959); options that leave no room even for
    // 16-byte blocks within max_message_size (1152) cannot be sent at all.
    p.add_option(CoapOption::UriPath, vec![b'a'; 1200]);
    p.payload = vec![0; 5000];
    assert!(matches!(ep.request(NOW, peer(), &p), Err(Error::MessageTooLarge(n)) if n > 1152));
    assert_eq!(ep.session_count(), 0);
}

#[cfg(feature = "server")]
#[test]
fn respond_to_unknown_request_or_with_request_code_is_refused() {
    let mut ep = server();
    ep.handle_datagram(NOW, peer(), &[0x41, 0x01, 0x10, 0x05, 0x7A]);
    let (_, events) = drain(&mut ep);
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::Request { id, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    let mut wrong = Packet::new();
    wrong.header.code = MessageClass::Request(RequestType::Get);
    assert_eq!(
        ep.respond(NOW, id, &wrong).unwrap_err(),
        Error::NotAResponse
    );
    let mut ok = Packet::new();
    ok.header.code = MessageClass::Response(ResponseType::Content);
    ep.respond(NOW, id, &ok).unwrap();
    assert_eq!(
        ep.respond(NOW, id, &ok).unwrap_err(),
        Error::UnknownRequest,
        "answered once only"
    );
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let config = Config {
        token_length: 9,
        ..Config::default()
    };
    let err = Endpoint::new(config, 0).err().unwrap();
    assert_eq!(err.field(), "token_length");
    assert!(err.to_string().contains("between 0 and 8"));
}

/// Found by fuzzing: with a zero response timeout a NON request expired the instant it was
/// sent and made the next queued one due at once, so a deadline never lay ahead.
#[test]
fn zero_response_timeout_is_refused() {
    let config = Config {
        response_timeout: coap_engine::Duration::ZERO,
        ..Config::default()
    };
    let err = Endpoint::new(config, 0).err().unwrap();
    assert_eq!(err.field(), "response_timeout");
}
