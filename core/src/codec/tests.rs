use super::*;
use alloc::vec;
use alloc::vec::Vec;
use coap_lite::{
    CoapOption, ContentFormat, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use proptest::prelude::*;

type OwnedOptions = Vec<(u16, Vec<u8>)>;

fn enc(
    mtype: MessageType,
    code: u8,
    mid: u16,
    token: &[u8],
    options: &[(u16, Vec<u8>)],
    payload: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(
        &mut out,
        mtype,
        code,
        mid,
        token,
        options.iter().map(|(n, v)| (*n, v.as_slice())),
        payload,
    )?;
    Ok(out)
}

fn owned_options(view: &MessageView<'_>) -> OwnedOptions {
    view.options().map(|(n, v)| (n, v.to_vec())).collect()
}

const GET: u8 = code(0, 1);
const CONTENT: u8 = code(2, 5);

// ---- header ----

#[test]
fn header_too_short() {
    for len in 0..4 {
        let bytes = [0x40u8; 3];
        assert_eq!(parse_header(&bytes[..len]), Err(HeaderError::TooShort));
        assert_eq!(
            parse(&bytes[..len]).unwrap_err(),
            FormatError::Header(HeaderError::TooShort)
        );
    }
}

#[test]
fn header_unsupported_version() {
    assert_eq!(
        parse_header(&[0x80, 0x01, 0, 1]),
        Err(HeaderError::UnsupportedVersion(2))
    );
    assert_eq!(
        parse(&[0x00, 0x01, 0, 1]).unwrap_err(),
        FormatError::Header(HeaderError::UnsupportedVersion(0))
    );
    assert_eq!(
        parse(&[0xC0, 0x01, 0, 1]).unwrap_err(),
        FormatError::Header(HeaderError::UnsupportedVersion(3))
    );
}

#[test]
fn header_fields_and_predicates() {
    let h = parse_header(&[0x62, 0x45, 0x12, 0x34, 0xFF]).unwrap();
    assert_eq!(h.mtype, MessageType::Acknowledgement);
    assert_eq!(h.token_length, 2);
    assert_eq!(h.code, CONTENT);
    assert_eq!(h.message_id, 0x1234);
    assert_eq!(h.code_class(), 2);
    assert!(h.is_response() && !h.is_request() && !h.is_empty());

    let with_code = |code| Header {
        mtype: MessageType::Confirmable,
        token_length: 0,
        code,
        message_id: 0,
    };
    assert!(with_code(0).is_empty());
    assert!(!with_code(0).is_request());
    assert!(with_code(GET).is_request());
    assert!(with_code(code(0, 31)).is_request());
    for class in 0..8 {
        let h = with_code(code(class, 1));
        assert_eq!(h.is_reserved_class(), matches!(class, 1 | 6 | 7));
        assert_eq!(h.is_response(), (2..=5).contains(&class));
    }
    // TKL is reported but not validated by parse_header.
    assert_eq!(parse_header(&[0x4F, 1, 0, 7]).unwrap().token_length, 15);
    let types = [
        MessageType::Confirmable,
        MessageType::NonConfirmable,
        MessageType::Acknowledgement,
        MessageType::Reset,
    ];
    for (bits, t) in types.into_iter().enumerate() {
        let b0 = 0x40 | ((bits as u8) << 4);
        assert_eq!(parse_header(&[b0, 1, 0, 0]).unwrap().mtype, t);
    }
}

#[test]
fn code_helper() {
    assert_eq!(code(0, 1), 0x01);
    assert_eq!(code(2, 5), 0x45);
    assert_eq!(code(4, 4), 0x84);
    assert_eq!(code(5, 3), 0xA3);
    assert_eq!(code(7, 31), 0xFF);
    // Masked, never overflowing.
    assert_eq!(code(9, 33), code(1, 1));
}

// ---- format errors ----

#[test]
fn token_length_reserved() {
    for tkl in 9..=15u8 {
        let mut bytes = vec![0x40 | tkl, 0x01, 0, 1];
        bytes.extend_from_slice(&[0xAA; 15]);
        assert_eq!(parse(&bytes).unwrap_err(), FormatError::TokenLength(tkl));
    }
    // Even for 0.00 the reserved TKL is the reported error.
    assert_eq!(
        parse(&[0x49, 0x00, 0, 1]).unwrap_err(),
        FormatError::TokenLength(9)
    );
}

#[test]
fn truncated_token() {
    assert_eq!(
        parse(&[0x44, 0x01, 0, 1, 1, 2, 3]).unwrap_err(),
        FormatError::TruncatedToken
    );
    assert_eq!(
        parse(&[0x48, 0x01, 0, 1]).unwrap_err(),
        FormatError::TruncatedToken
    );
    let v = parse(&[0x44, 0x01, 0, 1, 1, 2, 3, 4]).unwrap();
    assert_eq!(v.token, &[1, 2, 3, 4]);
}

#[test]
fn empty_message_not_empty() {
    assert_eq!(
        parse(&[0x60, 0x00, 0, 1, 0x00]).unwrap_err(),
        FormatError::EmptyMessageNotEmpty
    );
    assert_eq!(
        parse(&[0x41, 0x00, 0, 1, 0xAB]).unwrap_err(),
        FormatError::EmptyMessageNotEmpty
    );
    assert_eq!(
        parse(&[0x41, 0x00, 0, 1]).unwrap_err(),
        FormatError::EmptyMessageNotEmpty
    );
    assert_eq!(
        parse(&[0x70, 0x00, 0, 1, 0xFF, 1]).unwrap_err(),
        FormatError::EmptyMessageNotEmpty
    );
    let v = parse(&[0x70, 0x00, 0xBE, 0xEF]).unwrap();
    assert!(v.header.is_empty());
    assert_eq!(v.header.mtype, MessageType::Reset);
    assert_eq!(v.header.message_id, 0xBEEF);
    assert_eq!(v.options().count(), 0);
    assert!(v.token.is_empty() && v.payload.is_empty());
}

#[test]
fn option_delta_reserved() {
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0xF1, 0x00]).unwrap_err(),
        FormatError::OptionDeltaReserved
    );
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0x10, 0xF0]).unwrap_err(),
        FormatError::OptionDeltaReserved
    );
    // 0xFF in option position is the marker, not a reserved delta.
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0xFF, 0xF1]).unwrap().payload,
        &[0xF1]
    );
}

#[test]
fn option_length_reserved() {
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0x1F, 0, 0]).unwrap_err(),
        FormatError::OptionLengthReserved
    );
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0xDF, 0]).unwrap_err(),
        FormatError::OptionLengthReserved
    );
}

#[test]
fn option_truncated() {
    let cases: &[&[u8]] = &[
        &[0x40, 0x01, 0, 1, 0xD0],             // ext delta byte missing
        &[0x40, 0x01, 0, 1, 0xE0, 0x00],       // one of two ext delta bytes
        &[0x40, 0x01, 0, 1, 0x0D],             // ext length byte missing
        &[0x40, 0x01, 0, 1, 0x0E, 0x01],       // one of two ext length bytes
        &[0x40, 0x01, 0, 1, 0x13, 1, 2],       // value one byte short
        &[0x40, 0x01, 0, 1, 0x0D, 0x00, 1],    // 13-byte value, 1 present
        &[0x40, 0x01, 0, 1, 0x0E, 0x00, 0x00], // 269-byte value, none present
    ];
    for bytes in cases {
        assert_eq!(
            parse(bytes).unwrap_err(),
            FormatError::OptionTruncated,
            "{bytes:02x?}"
        );
    }
}

#[test]
fn option_number_overflow() {
    // 269 + 65266 = 65535 is the largest legal number.
    let ok = [0x40, 0x01, 0, 1, 0xE0, 0xFE, 0xF2];
    assert_eq!(parse(&ok).unwrap().options().next(), Some((65535, &[][..])));
    let bytes = [0x40, 0x01, 0, 1, 0xE0, 0xFE, 0xF3];
    assert_eq!(
        parse(&bytes).unwrap_err(),
        FormatError::OptionNumberOverflow
    );
    let bytes = [0x40, 0x01, 0, 1, 0xE0, 0xFF, 0xFF];
    assert_eq!(
        parse(&bytes).unwrap_err(),
        FormatError::OptionNumberOverflow
    );
    // Reaching 65535 and then adding 1 more.
    let bytes = [0x40, 0x01, 0, 1, 0xE0, 0xFE, 0xF2, 0x10];
    assert_eq!(
        parse(&bytes).unwrap_err(),
        FormatError::OptionNumberOverflow
    );
    // Repeating 65535 is fine.
    let bytes = [0x40, 0x01, 0, 1, 0xE0, 0xFE, 0xF2, 0x00];
    assert_eq!(parse(&bytes).unwrap().options().count(), 2);
}

#[test]
fn empty_payload() {
    assert_eq!(
        parse(&[0x40, 0x01, 0, 1, 0xFF]).unwrap_err(),
        FormatError::EmptyPayload
    );
    assert_eq!(
        parse(&[0x41, 0x01, 0, 1, 7, 0xB1, b'a', 0xFF]).unwrap_err(),
        FormatError::EmptyPayload
    );
    let v = parse(&[0x41, 0x01, 0, 1, 7, 0xB1, b'a', 0xFF, b'x']).unwrap();
    assert_eq!(v.payload, b"x");
    assert_eq!(v.option(11), Some(&b"a"[..]));
}

#[test]
fn error_display_and_from() {
    let e: FormatError = HeaderError::UnsupportedVersion(2).into();
    assert_eq!(e, FormatError::Header(HeaderError::UnsupportedVersion(2)));
    let all = [
        e,
        FormatError::Header(HeaderError::TooShort),
        FormatError::TokenLength(9),
        FormatError::TruncatedToken,
        FormatError::EmptyMessageNotEmpty,
        FormatError::OptionDeltaReserved,
        FormatError::OptionLengthReserved,
        FormatError::OptionTruncated,
        FormatError::OptionNumberOverflow,
        FormatError::EmptyPayload,
    ];
    for e in all {
        let s = alloc::format!("{e}");
        assert!(!s.is_empty() && !s.contains('\n'));
    }
    let s = alloc::format!(
        "{}",
        EncodeError::OptionTooLong {
            number: 11,
            len: 70000
        }
    );
    assert!(s.contains("11") && s.contains("70000"));
}

// ---- encoder ----

#[test]
fn encode_simple_request() {
    let bytes = enc(
        MessageType::Confirmable,
        GET,
        0x1234,
        &[0xAB, 0xCD],
        &[
            (11, b"temp".to_vec()),
            (11, b"x".to_vec()),
            (15, b"a=1".to_vec()),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(
        bytes,
        [
            0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD, 0xB4, b't', b'e', b'm', b'p', 0x01, b'x', 0x43,
            b'a', b'=', b'1'
        ]
    );
    let v = parse(&bytes).unwrap();
    assert!(v.payload.is_empty());
    assert_eq!(v.option(11), Some(&b"temp"[..]));
    assert_eq!(v.option(15), Some(&b"a=1"[..]));
    assert_eq!(v.option(12), None);
    assert_eq!(v.option(65535), None);
}

#[test]
fn encode_appends_and_empty() {
    let mut out = vec![9, 9];
    encode_empty(&mut out, MessageType::Acknowledgement, 0xA1B2);
    assert_eq!(out, [9, 9, 0x60, 0x00, 0xA1, 0xB2]);
    let mut out = Vec::new();
    encode_empty(&mut out, MessageType::Reset, 7);
    encode_empty(&mut out, MessageType::Confirmable, 8);
    assert_eq!(out, [0x70, 0, 0, 7, 0x40, 0, 0, 8]);
    assert!(parse(&out[..4]).unwrap().header.is_empty());
}

#[test]
fn encode_errors_leave_buffer_untouched() {
    let mut out = vec![1, 2, 3];
    let r = encode(
        &mut out,
        MessageType::Confirmable,
        GET,
        1,
        &[0; 9],
        core::iter::empty(),
        b"",
    );
    assert_eq!(r, Err(EncodeError::TokenTooLong(9)));
    assert_eq!(out, [1, 2, 3]);

    let long = vec![0u8; MAX_OPTION_LEN + 1];
    let opts = [(11u16, &b"ok"[..]), (12, &long[..])];
    let r = encode(
        &mut out,
        MessageType::Confirmable,
        GET,
        1,
        &[],
        opts.into_iter(),
        b"",
    );
    assert_eq!(
        r,
        Err(EncodeError::OptionTooLong {
            number: 12,
            len: MAX_OPTION_LEN + 1
        })
    );
    assert_eq!(out, [1, 2, 3]);

    let opts = [(12u16, &b"a"[..]), (11, &b"b"[..])];
    let r = encode(
        &mut out,
        MessageType::Confirmable,
        GET,
        1,
        &[],
        opts.into_iter(),
        b"p",
    );
    assert_eq!(
        r,
        Err(EncodeError::OptionOutOfOrder {
            number: 11,
            previous: 12
        })
    );
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn max_option_length_round_trips() {
    let long = vec![0x5Au8; MAX_OPTION_LEN];
    let bytes = enc(
        MessageType::NonConfirmable,
        CONTENT,
        3,
        &[],
        &[(65535, long.clone())],
        b"!",
    )
    .unwrap();
    assert_eq!(&bytes[4..7], &[0xEE, 0xFE, 0xF2]);
    assert_eq!(&bytes[7..9], &[0xFF, 0xFF]);
    let v = parse(&bytes).unwrap();
    assert_eq!(owned_options(&v), vec![(65535, long)]);
    assert_eq!(v.payload, b"!");
}

#[test]
fn extended_boundaries_round_trip() {
    // (value, expected nibble, expected extended bytes)
    let cases: &[(u32, u8, &[u8])] = &[
        (0, 0, &[]),
        (12, 12, &[]),
        (13, 13, &[0]),
        (268, 13, &[255]),
        (269, 14, &[0, 0]),
        (1000, 14, &[0x02, 0xDB]),
    ];
    for &(value, nibble, ext) in cases {
        // As a length.
        let v = vec![0x33u8; value as usize];
        let bytes = enc(
            MessageType::Confirmable,
            GET,
            1,
            &[],
            &[(1, v.clone())],
            b"",
        )
        .unwrap();
        assert_eq!(bytes[4], 0x10 | nibble, "length {value}");
        assert_eq!(&bytes[5..5 + ext.len()], ext, "length {value}");
        assert_eq!(bytes.len(), 5 + ext.len() + v.len());
        assert_eq!(owned_options(&parse(&bytes).unwrap()), vec![(1, v)]);

        // As a delta (second option, after option 1).
        let number = 1 + value as u16;
        let opts = vec![(1, vec![]), (number, vec![7])];
        let bytes = enc(MessageType::Confirmable, GET, 1, &[], &opts, b"").unwrap();
        assert_eq!(bytes[5], (nibble << 4) | 1, "delta {value}");
        assert_eq!(&bytes[6..6 + ext.len()], ext, "delta {value}");
        assert_eq!(owned_options(&parse(&bytes).unwrap()), opts);

        // Both at once, with the delta from zero.
        let opts = vec![(value as u16, vec![0x44u8; value as usize])];
        let bytes = enc(MessageType::Confirmable, GET, 1, &[], &opts, b"pl").unwrap();
        assert_eq!(bytes[4], (nibble << 4) | nibble);
        let v = parse(&bytes).unwrap();
        assert_eq!(owned_options(&v), opts);
        assert_eq!(v.payload, b"pl");
    }
}

#[test]
fn unrecognized_critical_options() {
    let opts = vec![
        (4, vec![1]),
        (11, b"a".to_vec()),
        (12, vec![0]),
        (2049, vec![]),
        (2051, vec![]),
    ];
    let bytes = enc(MessageType::Confirmable, GET, 1, &[], &opts, b"").unwrap();
    let v = parse(&bytes).unwrap();
    assert_eq!(
        v.unrecognized_critical(|n| matches!(n, 11 | 12)),
        Some(2049)
    );
    assert_eq!(v.unrecognized_critical(|n| n != 2051), Some(2051));
    assert_eq!(v.unrecognized_critical(|_| true), None);
    // Elective (even) options never count.
    assert_eq!(
        v.unrecognized_critical(|n| n % 2 == 0 || n < 2000),
        Some(2049)
    );
}

// ---- coap-lite interop ----

fn sample_packets() -> Vec<Packet> {
    let mut packets = Vec::new();

    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 0x0102;
    p.set_token(vec![1, 2, 3, 4]);
    p.add_option(CoapOption::UriPath, b"sensors".to_vec());
    p.add_option(CoapOption::UriPath, b"temp".to_vec());
    p.add_option(CoapOption::UriPath, b"".to_vec());
    p.add_option(CoapOption::UriQuery, b"unit=c".to_vec());
    packets.push(p);

    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.header.message_id = 0xFFFF;
    p.set_token(vec![0xAA; 8]);
    p.set_content_format(ContentFormat::ApplicationJSON);
    p.add_option(CoapOption::ETag, vec![0; 8]);
    p.add_option(CoapOption::Unknown(300), vec![0x11; 269]);
    p.add_option(CoapOption::Unknown(300), vec![0x22; 268]);
    p.add_option(CoapOption::Unknown(2000), vec![0x33; 1000]);
    p.add_option(CoapOption::Unknown(65535), vec![0x44; 13]);
    p.payload = b"{\"t\":21.5}".to_vec();
    packets.push(p);

    let mut p = Packet::new();
    p.header.set_type(MessageType::NonConfirmable);
    p.header.code = MessageClass::Response(ResponseType::NotFound);
    p.header.message_id = 7;
    p.payload = vec![0xFF; 300];
    packets.push(p);

    let mut p = Packet::new();
    p.header.set_type(MessageType::Reset);
    p.header.code = MessageClass::Empty;
    p.header.message_id = 9;
    packets.push(p);

    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Post);
    p.set_observe_value(0);
    p.add_option(CoapOption::Block2, vec![0x06]);
    p.add_option(CoapOption::Size2, vec![0x01, 0x00]);
    p.add_option(CoapOption::ProxyUri, vec![b'x'; 1034]);
    packets.push(p);
    packets
}

#[test]
fn encode_packet_matches_coap_lite() {
    for p in sample_packets() {
        let expected = p.to_bytes_unlimited().unwrap();
        let mut out = Vec::new();
        encode_packet(&mut out, &p, p.header.get_type(), p.header.message_id).unwrap();
        assert_eq!(out, expected);

        let v = parse(&out).unwrap();
        assert_eq!(v.to_packet(), Packet::from_bytes(&out).unwrap());
        assert_eq!(v.to_packet(), p);
    }
}

#[test]
fn encode_packet_overrides_type_and_mid() {
    let p = &sample_packets()[0];
    let mut out = Vec::new();
    encode_packet(&mut out, p, MessageType::NonConfirmable, 0xBEEF).unwrap();
    let h = parse_header(&out).unwrap();
    assert_eq!(h.mtype, MessageType::NonConfirmable);
    assert_eq!(h.message_id, 0xBEEF);
    assert_eq!(h.token_length, 4);
}

#[test]
fn to_packet_matches_from_bytes() {
    let cases: &[&[u8]] = &[
        &[
            0x44, 0x01, 0x84, 0x9e, 0x51, 0x55, 0x77, 0xe8, 0xb2, 0x48, 0x69, 0x04, 0x54, 0x65,
            0x73, 0x74, 0x43, 0x61, 0x3d, 0x31,
        ],
        &[0x60, 0x00, 0x00, 0x01],
        &[
            0x52, 0x45, 0x00, 0x02, 0xAA, 0xBB, 0xC1, 0x32, 0xFF, b'h', b'i',
        ],
        &[0x40, 0x01, 0x00, 0x03, 0xE0, 0xFE, 0xF2],
        &[0x40, 0xE0, 0x00, 0x04, 0xFF, 0x00],
    ];
    for bytes in cases {
        let v = parse(bytes).unwrap();
        assert_eq!(
            v.to_packet(),
            Packet::from_bytes(bytes).unwrap(),
            "{bytes:02x?}"
        );
    }
}

// ---- property tests ----

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Confirmable),
        Just(MessageType::NonConfirmable),
        Just(MessageType::Acknowledgement),
        Just(MessageType::Reset),
    ]
}

fn sorted_options() -> impl Strategy<Value = OwnedOptions> {
    prop::collection::vec(
        (0u16..2000, prop::collection::vec(any::<u8>(), 0..400)),
        0..8,
    )
    .prop_map(|mut opts| {
        opts.sort_by_key(|(n, _)| *n);
        opts
    })
}

/// Bytes biased towards a valid header so that the options/payload
/// logic, not just the header checks, gets exercised.
fn plausible_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..4,
        0u8..=8,
        any::<u8>(),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..60),
    )
        .prop_map(|(t, tkl, code, mid, tail)| {
            let mut b = vec![0x40 | (t << 4) | tkl, code];
            b.extend_from_slice(&mid.to_be_bytes());
            b.extend_from_slice(&tail);
            b
        })
}

/// A valid encoding with a few bytes overwritten and possibly cut short,
/// so that near-miss inputs around every boundary get exercised.
fn mutated_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        message_type(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..=8),
        prop::collection::vec((0u16..300, prop::collection::vec(any::<u8>(), 0..20)), 0..5),
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(
            |(mtype, code, token, mut options, payload, edits, cut, do_cut)| {
                options.sort_by_key(|(n, _)| *n);
                let mut b = enc(mtype, code, 1, &token, &options, &payload).unwrap_or_default();
                for (at, byte) in edits {
                    if !b.is_empty() {
                        let i = at.index(b.len());
                        b[i] = byte;
                    }
                }
                if do_cut && !b.is_empty() {
                    b.truncate(cut.index(b.len()));
                }
                b
            },
        )
}

fn any_datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        plausible_datagram(),
        mutated_datagram(),
    ]
}

fn reencode(v: &MessageView<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(
        &mut out,
        v.header.mtype,
        v.header.code,
        v.header.message_id,
        v.token,
        v.options(),
        v.payload,
    )
    .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(v) = parse(&bytes) {
            // Walk everything the view exposes too.
            let _ = v.options().count();
            let _ = v.option(11);
            let _ = v.unrecognized_critical(|_| false);
        }
        let _ = parse_header(&bytes);
    }

    #[test]
    fn valid_messages_round_trip(
        mtype in message_type(),
        code in 1u8..=255,
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        options in sorted_options(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let bytes = enc(mtype, code, mid, &token, &options, &payload).unwrap();
        let v = parse(&bytes).unwrap();
        prop_assert_eq!(v.header.mtype, mtype);
        prop_assert_eq!(v.header.code, code);
        prop_assert_eq!(v.header.message_id, mid);
        prop_assert_eq!(usize::from(v.header.token_length), token.len());
        prop_assert_eq!(v.token, &token[..]);
        prop_assert_eq!(owned_options(&v), options);
        prop_assert_eq!(v.payload, &payload[..]);
        // The same message via coap-lite's parser.
        prop_assert_eq!(v.to_packet(), Packet::from_bytes(&bytes).unwrap());
    }

    #[test]
    fn accepted_bytes_are_canonical(bytes in any_datagram()) {
        if let Ok(v) = parse(&bytes) {
            // The §3.1 extended ranges are disjoint and the marker is only
            // valid before a non-empty payload, so each valid message has
            // exactly one encoding.
            prop_assert_eq!(reencode(&v), bytes.clone());
            prop_assert_eq!(v.to_packet(), Packet::from_bytes(&bytes).unwrap());
        }
    }

    #[test]
    fn encode_packet_matches_coap_lite_prop(
        mtype in message_type(),
        code in 1u8..=255,
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        options in sorted_options(),
        payload in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut p = Packet::new();
        p.header.set_type(mtype);
        p.header.code = MessageClass::from(code);
        p.header.message_id = mid;
        p.set_token(token);
        for (n, v) in options {
            p.add_option(CoapOption::from(n), v);
        }
        p.payload = payload;
        let mut out = Vec::new();
        encode_packet(&mut out, &p, mtype, mid).unwrap();
        prop_assert_eq!(&out, &p.to_bytes_unlimited().unwrap());
        prop_assert_eq!(parse(&out).unwrap().to_packet(), p);
    }
}
