//! Parsing and validating a whole datagram (RFC 7252 §3, §3.1, §4.1) into a zero-copy view.

use core::fmt;

use coap_lite::{CoapOption, MessageClass, Packet};

use super::header::{parse_header, Header, HeaderError};
use super::{PAYLOAD_MARKER, VERSION};

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
        self.packet_without(&[])
    }

    /// [`to_packet`](Self::to_packet) without the options numbered in `skip` (block-wise
    /// takes its own options off what it gives the application).
    pub(crate) fn packet_without(&self, skip: &[u16]) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_version(VERSION);
        packet.header.set_type(self.header.mtype);
        packet.header.code = MessageClass::from(self.header.code);
        packet.header.message_id = self.header.message_id;
        packet.set_token(self.token.to_vec());
        for (number, value) in self.options().filter(|(n, _)| !skip.contains(n)) {
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
