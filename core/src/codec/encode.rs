//! Encoding messages into a caller's buffer (RFC 7252 §3, §3.1).

use alloc::vec::Vec;
use core::fmt;

use coap_lite::{MessageType, Packet};

use super::{MAX_OPTION_LEN, PAYLOAD_MARKER, VERSION};

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
    // The generic part is just this loop: the rest is shared by every kind of option
    // source, so each one adds a few instructions rather than a copy of the encoder.
    let start = begin(out, mtype, code, message_id, token, payload.len())?;
    let mut previous = 0u16;
    for (number, value) in options {
        if let Err(e) = push_option(out, &mut previous, number, value) {
            out.truncate(start);
            return Err(e);
        }
    }
    push_payload(out, payload);
    Ok(())
}

/// The payload, after its marker if there is one (§3: an empty payload has none).
pub(crate) fn push_payload(out: &mut Vec<u8>, payload: &[u8]) {
    if !payload.is_empty() {
        out.push(PAYLOAD_MARKER);
        out.extend_from_slice(payload);
    }
}

/// Header and token; returns where the message starts in `out`.
pub(crate) fn begin(
    out: &mut Vec<u8>,
    mtype: MessageType,
    code: u8,
    message_id: u16,
    token: &[u8],
    payload_len: usize,
) -> Result<usize, EncodeError> {
    let tkl = match u8::try_from(token.len()) {
        Ok(n) if n <= 8 => n,
        _ => return Err(EncodeError::TokenTooLong(token.len())),
    };
    let start = out.len();
    // The options' size is unknown up front; reserving the fixed parts avoids
    // most regrowth for typical small messages.
    out.reserve(4 + token.len() + 1 + payload_len);
    push_header(out, mtype, tkl, code, message_id);
    out.extend_from_slice(token);
    Ok(start)
}

/// One option after the one numbered `previous` (§3.1: a delta from it).
pub(crate) fn push_option(
    out: &mut Vec<u8>,
    previous: &mut u16,
    number: u16,
    value: &[u8],
) -> Result<(), EncodeError> {
    let Some(delta) = number.checked_sub(*previous) else {
        let previous = *previous;
        return Err(EncodeError::OptionOutOfOrder { number, previous });
    };
    let len = value.len();
    // Bounded by MAX_OPTION_LEN, so it fits in u32 below.
    let Some(len32) = u32::try_from(len).ok().filter(|_| len <= MAX_OPTION_LEN) else {
        return Err(EncodeError::OptionTooLong { number, len });
    };
    let delta = u32::from(delta);
    out.push((extended_nibble(delta) << 4) | extended_nibble(len32));
    push_extended(out, delta);
    push_extended(out, len32);
    out.extend_from_slice(value);
    *previous = number;
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
    encode_packet_as(out, packet, mtype, message_id, packet.get_token())
}

/// [`encode_packet`] with `token` in place of the packet's own (the engine's exchanges own
/// tokens). Nested loops rather than [`encode`] over a `flat_map`: the application's packets
/// take this path on every message, and their options' map is walked most cheaply, in time
/// and in code, this way.
pub(crate) fn encode_packet_as(
    out: &mut Vec<u8>,
    packet: &Packet,
    mtype: MessageType,
    message_id: u16,
    token: &[u8],
) -> Result<(), EncodeError> {
    let start = begin(
        out,
        mtype,
        u8::from(packet.header.code),
        message_id,
        token,
        packet.payload.len(),
    )?;
    let mut previous = 0;
    // coap-lite keeps options in a BTreeMap, so they already come ascending.
    for (&number, values) in packet.options() {
        for value in values {
            if let Err(e) = push_option(out, &mut previous, number, value) {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    push_payload(out, &packet.payload);
    Ok(())
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
