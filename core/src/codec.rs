//! Wire codec for CoAP over UDP (RFC 7252 §3).
//!
//! coap-lite's own parser is lenient (it accepts version 2, a payload marker
//! with no payload, TKL 9..15 in some paths) and its encoder builds many
//! small intermediate `Vec`s. The engine's hot path needs the opposite: a
//! parser that validates exactly what RFC 7252 §3, §3.1 and §4.1 require
//! without allocating, and an encoder that writes straight into a caller's
//! buffer. [`MessageView::to_packet`] and [`encode_packet`] bridge to
//! coap-lite where the richer [`Packet`] type is wanted.

use alloc::vec::Vec;
use core::fmt;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

/// Largest option value length the wire format can express: extended length
/// nibble 14 carries `length - 269` in two bytes (RFC 7252 §3.1).
pub const MAX_OPTION_LEN: usize = 65535 + 269;

/// The only protocol version RFC 7252 defines (§3, "Version (Ver)").
const VERSION: u8 = 1;

/// The byte that ends the options and starts a non-empty payload (§3).
const PAYLOAD_MARKER: u8 = 0xFF;

/// Builds a raw 8-bit Code `c.dd` from its 3-bit class and 5-bit detail
/// (RFC 7252 §3, "Code"; §12.1 registry).
///
/// Out-of-range bits are masked off rather than rejected so the function can
/// never panic or fail const evaluation.
pub const fn code(class: u8, detail: u8) -> u8 {
    ((class & 0x07) << 5) | (detail & 0x1F)
}

/// The fixed 4-byte header that starts every CoAP-over-UDP message
/// (RFC 7252 §3).
///
/// Kept separate from [`MessageView`] because it can be read even when the
/// rest of a datagram is malformed, which the message layer needs in order to
/// answer a malformed Confirmable with a Reset (§4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// Confirmable, Non-confirmable, Acknowledgement or Reset (§3, "T").
    pub mtype: MessageType,
    /// The TKL field as received. [`parse_header`] does not validate it;
    /// [`parse`] rejects 9..=15 (§3).
    pub token_length: u8,
    /// Raw 8-bit Code `c.dd` = `class << 5 | detail` (§3).
    pub code: u8,
    /// Used for deduplication and to match ACK/RST to CON (§4.4).
    pub message_id: u16,
}

// `MessageType` only derives `PartialEq`, but it is a fieldless enum so its
// equality is total, so asserting `Eq` is sound and lets headers be used
// wherever `Eq` is required.
impl Eq for Header {}

impl Header {
    /// The 3-bit class of the Code: 0 request/empty, 2..=5 response
    /// (RFC 7252 §3, §12.1).
    pub fn code_class(&self) -> u8 {
        self.code >> 5
    }

    /// Whether this is an Empty message, Code 0.00 (RFC 7252 §4.1), i.e. a
    /// bare ACK, RST or CON ping.
    pub fn is_empty(&self) -> bool {
        self.code == 0
    }

    /// Whether the Code is a request method: class 0 with a non-zero detail
    /// (RFC 7252 §5.8, §12.1.1).
    pub fn is_request(&self) -> bool {
        self.code_class() == 0 && self.code != 0
    }

    /// Whether the Code is a response: classes 2, 4 and 5 are defined, and
    /// class 3 is reserved for signaling responses (RFC 7252 §5.9, §12.1.2;
    /// RFC 8323 §5). Treating 3 as a response keeps such messages out of the
    /// request path.
    pub fn is_response(&self) -> bool {
        matches!(self.code_class(), 2..=5)
    }

    /// Whether the Code uses a reserved class 1, 6 or 7 (RFC 7252 §12.1).
    /// Such messages must be rejected (§4.2, §4.3).
    pub fn is_reserved_class(&self) -> bool {
        matches!(self.code_class(), 1 | 6 | 7)
    }
}

/// Why the 4-byte header could not be read (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 4 bytes: there is no Message ID to answer, so the datagram
    /// can only be dropped.
    TooShort,
    /// The Version field is not 1. RFC 7252 §3 says such messages "MUST be
    /// silently ignored", so no Reset may be sent.
    UnsupportedVersion(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort => f.write_str("datagram shorter than the 4-byte CoAP header"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported CoAP version {v}"),
        }
    }
}

impl core::error::Error for HeaderError {}

/// Reads only the 4-byte header (RFC 7252 §3).
///
/// Cheap, and deliberately does not look past byte 3, so the Message ID is
/// available even when the rest of the message is malformed (a malformed CON
/// is answered with RST, §4.2). The TKL field is returned unvalidated.
pub fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let Some(&[b0, code, id_hi, id_lo]) = bytes.first_chunk::<4>() else {
        return Err(HeaderError::TooShort);
    };
    let version = b0 >> 6;
    if version != VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(Header {
        mtype: type_from_bits(b0 >> 4),
        token_length: b0 & 0x0F,
        code,
        message_id: u16::from_be_bytes([id_hi, id_lo]),
    })
}

/// Why a datagram is not a well-formed CoAP message (RFC 7252 §3, §3.1,
/// §4.1). Every variant is a "message format error": a CON is answered with
/// RST, anything else is silently dropped (§4.2, §4.3), except
/// [`HeaderError::UnsupportedVersion`] which is always ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The 4-byte header itself was unusable.
    Header(HeaderError),
    /// TKL 9..=15: "Lengths 9-15 are reserved, MUST NOT be sent, and MUST be
    /// processed as a message format error" (§3).
    TokenLength(u8),
    /// The datagram ends before the TKL token bytes do (§3).
    TruncatedToken,
    /// Code 0.00 with a token or any byte after the Message ID (§4.1).
    EmptyMessageNotEmpty,
    /// Option delta nibble 15 in a byte other than the payload marker 0xFF
    /// (§3.1).
    OptionDeltaReserved,
    /// Option length nibble 15 (§3.1).
    OptionLengthReserved,
    /// Extended delta/length bytes or the option value run past the end of
    /// the datagram (§3.1).
    OptionTruncated,
    /// The running option number exceeds 65535 (§3.1; option numbers are
    /// 16-bit, §12.2).
    OptionNumberOverflow,
    /// Payload marker followed by zero bytes: "processed as a message format
    /// error" (§3).
    EmptyPayload,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Header(e) => fmt::Display::fmt(e, f),
            FormatError::TokenLength(n) => write!(f, "reserved token length {n}"),
            FormatError::TruncatedToken => f.write_str("token runs past end of datagram"),
            FormatError::EmptyMessageNotEmpty => {
                f.write_str("empty message (0.00) carries a token or trailing bytes")
            }
            FormatError::OptionDeltaReserved => f.write_str("reserved option delta nibble 15"),
            FormatError::OptionLengthReserved => f.write_str("reserved option length nibble 15"),
            FormatError::OptionTruncated => f.write_str("option runs past end of datagram"),
            FormatError::OptionNumberOverflow => f.write_str("option number exceeds 65535"),
            FormatError::EmptyPayload => f.write_str("payload marker followed by empty payload"),
        }
    }
}

impl core::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            FormatError::Header(e) => Some(e),
            _ => None,
        }
    }
}

impl From<HeaderError> for FormatError {
    fn from(e: HeaderError) -> Self {
        FormatError::Header(e)
    }
}

/// A validated, zero-copy view of one datagram (RFC 7252 §3).
///
/// Only [`parse`] constructs it, so holding one proves the option region is
/// well formed; that is why [`MessageView::options`] cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// The fixed header; `header.token_length == token.len()`.
    pub header: Header,
    /// 0..=8 bytes correlating requests and responses (§5.3.1).
    pub token: &'a [u8],
    /// The raw, already validated option bytes (without payload marker).
    options: &'a [u8],
    /// Bytes after the payload marker; empty when there is no marker.
    pub payload: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// Iterates `(number, value)` pairs in wire order, i.e. ascending number
    /// with repeats kept in sequence (RFC 7252 §3.1, §5.4.5). Decodes lazily
    /// so parsing never needs somewhere to store options.
    pub fn options(&self) -> Options<'a> {
        Options {
            rest: self.options,
            number: 0,
        }
    }

    /// The first value of option `number`, if present. For repeatable
    /// options use [`MessageView::options`] (§5.4.5).
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        // Wire order is ascending, so stop as soon as the number is passed.
        self.options()
            .take_while(|&(n, _)| n <= number)
            .find(|&(n, _)| n == number)
            .map(|(_, v)| v)
    }

    /// The first critical (odd-numbered, RFC 7252 §5.4.1) option number for
    /// which `known(number)` is false.
    ///
    /// An unrecognized critical option in a CON request must produce 4.02
    /// Bad Option, in a CON response a Reset, and otherwise the message must
    /// be rejected (§5.4.1); elective (even) options are silently ignored.
    pub fn unrecognized_critical(&self, known: impl Fn(u16) -> bool) -> Option<u16> {
        self.options()
            .map(|(n, _)| n)
            .find(|&n| n & 1 == 1 && !known(n))
    }

    /// Builds a coap-lite [`Packet`] (allocates) whose type, code, Message
    /// ID, token, options and payload are identical to the wire, for code
    /// that wants coap-lite's typed accessors off the hot path.
    pub fn to_packet(&self) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_version(VERSION);
        packet.header.set_type(self.header.mtype);
        packet.header.code = MessageClass::from(self.header.code);
        packet.header.message_id = self.header.message_id;
        packet.set_token(self.token.to_vec());
        for (number, value) in self.options() {
            packet.add_option(CoapOption::from(number), value.to_vec());
        }
        packet.payload = self.payload.to_vec();
        packet
    }
}

/// Iterator over the options of a [`MessageView`], yielding
/// `(option number, value)` in wire order (RFC 7252 §3.1).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    number: u16,
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // `parse` already validated this region, so the error arm is
        // unreachable in practice; ending iteration keeps it panic-free.
        match decode_option(self.rest, self.number) {
            Ok(Some((number, value, rest))) => {
                self.number = number;
                self.rest = rest;
                Some((number, value))
            }
            Ok(None) | Err(_) => {
                self.rest = &[];
                None
            }
        }
    }
}

impl core::iter::FusedIterator for Options<'_> {}

/// Validates a whole datagram exactly per RFC 7252 §3, §3.1 and §4.1 without
/// allocating, returning a view that borrows from `bytes`.
///
/// Any `Err` other than `Header(_)` still leaves [`parse_header`] usable for
/// the Message ID needed to send a Reset (§4.2).
pub fn parse(bytes: &[u8]) -> Result<MessageView<'_>, FormatError> {
    let header = parse_header(bytes)?;
    let tkl = header.token_length;
    if tkl > 8 {
        return Err(FormatError::TokenLength(tkl));
    }
    // `parse_header` succeeded, so there are at least 4 bytes.
    let after_header = bytes.get(4..).unwrap_or_default();
    if header.is_empty() {
        if tkl != 0 || !after_header.is_empty() {
            return Err(FormatError::EmptyMessageNotEmpty);
        }
        return Ok(MessageView {
            header,
            token: &[],
            options: &[],
            payload: &[],
        });
    }
    let (token, after_token) = after_header
        .split_at_checked(usize::from(tkl))
        .ok_or(FormatError::TruncatedToken)?;

    let mut rest = after_token;
    let mut number = 0u16;
    while let Some((n, _, next)) = decode_option(rest, number)? {
        number = n;
        rest = next;
    }
    // `rest` is a suffix of `after_token`, so this split cannot fail.
    let consumed = after_token.len().saturating_sub(rest.len());
    let (options, tail) = after_token
        .split_at_checked(consumed)
        .unwrap_or((after_token, &[]));
    let payload = match tail.split_first() {
        None => &[][..],
        Some((_, [])) => return Err(FormatError::EmptyPayload),
        Some((_, payload)) => payload,
    };
    Ok(MessageView {
        header,
        token,
        options,
        payload,
    })
}

/// `(option number, value, bytes after the option)`.
type DecodedOption<'a> = (u16, &'a [u8], &'a [u8]);

/// Decodes one option starting at `bytes`, given the previous option number.
///
/// Returns `Ok(None)` at the end of the options (end of datagram or payload
/// marker), otherwise the new option number, its value and the remaining
/// bytes. Shared by [`parse`] and [`Options`] so both agree on the format.
#[inline]
fn decode_option(bytes: &[u8], prev: u16) -> Result<Option<DecodedOption<'_>>, FormatError> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Ok(None);
    };
    if first == PAYLOAD_MARKER {
        return Ok(None);
    }
    let delta_nibble = first >> 4;
    let length_nibble = first & 0x0F;
    // Both nibbles are checked before reading extended bytes so the error
    // depends only on the option's first byte.
    if delta_nibble == 15 {
        return Err(FormatError::OptionDeltaReserved);
    }
    if length_nibble == 15 {
        return Err(FormatError::OptionLengthReserved);
    }
    let (delta, rest) = read_extended(delta_nibble, rest)?;
    let (length, rest) = read_extended(length_nibble, rest)?;
    let number =
        u16::try_from(u32::from(prev) + delta).map_err(|_| FormatError::OptionNumberOverflow)?;
    // `length` ≤ 65804, which fits in usize on every target alloc supports.
    let length = usize::try_from(length).map_err(|_| FormatError::OptionTruncated)?;
    let (value, rest) = rest
        .split_at_checked(length)
        .ok_or(FormatError::OptionTruncated)?;
    Ok(Some((number, value, rest)))
}

/// Applies the §3.1 extended encoding for a delta or length nibble 0..=14:
/// 13 adds one byte (+13), 14 adds two big-endian bytes (+269).
#[inline]
fn read_extended(nibble: u8, bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    match nibble {
        13 => bytes
            .split_first()
            .map(|(&b, rest)| (u32::from(b) + 13, rest))
            .ok_or(FormatError::OptionTruncated),
        14 => bytes
            .split_first_chunk::<2>()
            .map(|(&b, rest)| (u32::from(u16::from_be_bytes(b)) + 269, rest))
            .ok_or(FormatError::OptionTruncated),
        _ => Ok((u32::from(nibble), bytes)),
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// Tokens are 0..=8 bytes (RFC 7252 §3, §5.3.1); carries the given
    /// length.
    TokenTooLong(usize),
    /// Option values cannot exceed [`MAX_OPTION_LEN`] (65535 + 269) bytes,
    /// the most the extended length can express (§3.1).
    OptionTooLong {
        /// The option's number.
        number: u16,
        /// The rejected value length.
        len: usize,
    },
    /// Options must be given in ascending number order because the wire
    /// carries only non-negative deltas (§3.1).
    OptionOutOfOrder {
        /// The option that came after a larger number.
        number: u16,
        /// The preceding, larger option number.
        previous: u16,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TokenTooLong(n) => write!(f, "token of {n} bytes exceeds 8"),
            EncodeError::OptionTooLong { number, len } => {
                write!(
                    f,
                    "option {number} value of {len} bytes exceeds {MAX_OPTION_LEN}"
                )
            }
            EncodeError::OptionOutOfOrder { number, previous } => {
                write!(f, "option {number} given after option {previous}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Appends one encoded message to `out` (RFC 7252 §3, §3.1) without
/// clearing it, so several messages or a reused buffer can be built without
/// extra allocation.
///
/// Options must be given in ascending number order (equal numbers repeat, in
/// the order given); values may be up to [`MAX_OPTION_LEN`] bytes. An empty
/// payload is written with no payload marker, as §3 requires. On error `out`
/// is restored to its original length, so no partial message leaks out.
pub fn encode<'o>(
    out: &mut Vec<u8>,
    mtype: MessageType,
    code: u8,
    message_id: u16,
    token: &[u8],
    options: impl Iterator<Item = (u16, &'o [u8])>,
    payload: &[u8],
) -> Result<(), EncodeError> {
    let tkl = match u8::try_from(token.len()) {
        Ok(n) if n <= 8 => n,
        _ => return Err(EncodeError::TokenTooLong(token.len())),
    };
    let start = out.len();
    // The options' size is unknown up front; reserving the fixed parts avoids
    // most regrowth for typical small messages.
    out.reserve(4 + token.len() + 1 + payload.len());
    push_header(out, mtype, tkl, code, message_id);
    out.extend_from_slice(token);

    let mut previous = 0u16;
    for (number, value) in options {
        let Some(delta) = number.checked_sub(previous) else {
            out.truncate(start);
            return Err(EncodeError::OptionOutOfOrder { number, previous });
        };
        let len = value.len();
        // Bounded by MAX_OPTION_LEN, so it fits in u32 below.
        let Some(len32) = u32::try_from(len).ok().filter(|_| len <= MAX_OPTION_LEN) else {
            out.truncate(start);
            return Err(EncodeError::OptionTooLong { number, len });
        };
        let delta = u32::from(delta);
        out.push((extended_nibble(delta) << 4) | extended_nibble(len32));
        push_extended(out, delta);
        push_extended(out, len32);
        out.extend_from_slice(value);
        previous = number;
    }

    if !payload.is_empty() {
        out.push(PAYLOAD_MARKER);
        out.extend_from_slice(payload);
    }
    Ok(())
}

/// Appends `packet` using the given type and Message ID (overriding
/// `packet.header`'s, since the message layer owns those per RFC 7252 §4),
/// with the packet's token, options, payload and code.
///
/// For valid packets the bytes equal coap-lite's `to_bytes_unlimited`, but
/// without its intermediate allocations.
pub fn encode_packet(
    out: &mut Vec<u8>,
    packet: &Packet,
    mtype: MessageType,
    message_id: u16,
) -> Result<(), EncodeError> {
    // coap-lite keeps options in a BTreeMap, so they already come ascending.
    let options = packet
        .options()
        .flat_map(|(&number, values)| values.iter().map(move |v| (number, v.as_slice())));
    encode(
        out,
        mtype,
        u8::from(packet.header.code),
        message_id,
        packet.get_token(),
        options,
        &packet.payload,
    )
}

/// Appends a 4-byte Empty message (Code 0.00, TKL 0; RFC 7252 §4.1): an ACK,
/// a RST, or a CON used as a ping (§4.3).
pub fn encode_empty(out: &mut Vec<u8>, mtype: MessageType, message_id: u16) {
    push_header(out, mtype, 0, 0, message_id);
}

fn push_header(out: &mut Vec<u8>, mtype: MessageType, tkl: u8, code: u8, message_id: u16) {
    let [id_hi, id_lo] = message_id.to_be_bytes();
    out.extend_from_slice(&[
        (VERSION << 6) | (type_bits(mtype) << 4) | tkl,
        code,
        id_hi,
        id_lo,
    ]);
}

/// The 4-bit nibble for a delta or length (RFC 7252 §3.1). Caller guarantees
/// `value <= 65535 + 269`.
#[inline]
fn extended_nibble(value: u32) -> u8 {
    match value {
        0..=12 => value as u8,
        13..=268 => 13,
        _ => 14,
    }
}

/// The extended bytes matching [`extended_nibble`]. Caller guarantees
/// `value <= 65535 + 269`, so the truncating casts are exact.
#[inline]
fn push_extended(out: &mut Vec<u8>, value: u32) {
    match value {
        0..=12 => {}
        13..=268 => out.push((value - 13) as u8),
        _ => out.extend_from_slice(&((value - 269) as u16).to_be_bytes()),
    }
}

/// Message type numbers (RFC 7252 §3, "Type (T)").
fn type_bits(mtype: MessageType) -> u8 {
    match mtype {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    }
}

fn type_from_bits(bits: u8) -> MessageType {
    match bits & 0x03 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use coap_lite::{ContentFormat, RequestType, ResponseType};
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
}
