//! Wire codec for CoAP over UDP (RFC 7252 §3).
//!
//! coap-lite's own parser is lenient (it accepts version 2, a payload marker
//! with no payload, TKL 9..15 in some paths) and its encoder builds many
//! small intermediate `Vec`s. The engine's hot path needs the opposite: a
//! parser that validates exactly what RFC 7252 §3, §3.1 and §4.1 require
//! without allocating, and an encoder that writes straight into a caller's
//! buffer. [`MessageView::to_packet`] and [`encode_packet`] bridge to
//! coap-lite where the richer [`Packet`](coap_lite::Packet) type is wanted.

mod encode;
mod header;
mod parse;

pub(crate) use encode::{begin, encode_packet_as, push_option, push_payload};
pub use encode::{encode, encode_empty, encode_packet, EncodeError};
pub use header::{parse_header, Header, HeaderError};
pub use parse::{parse, FormatError, MessageView, Options};

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

#[cfg(test)]
mod tests;
