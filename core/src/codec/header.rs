//! The fixed 4-byte header (RFC 7252 §3).

use core::fmt;

use coap_lite::MessageType;

use super::VERSION;

/// The fixed 4-byte header that starts every CoAP-over-UDP message
/// (RFC 7252 §3).
///
/// Kept separate from [`MessageView`](super::MessageView) because it can be read even when the
/// rest of a datagram is malformed, which the message layer needs in order to
/// answer a malformed Confirmable with a Reset (§4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// Confirmable, Non-confirmable, Acknowledgement or Reset (§3, "T").
    pub mtype: MessageType,
    /// The TKL field as received. [`parse_header`] does not validate it;
    /// [`parse`](super::parse) rejects 9..=15 (§3).
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

fn type_from_bits(bits: u8) -> MessageType {
    match bits & 0x03 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    }
}
