//! RFC 8323 §3.2 message framing for CoAP over TCP and TLS: a message is
//! `Len|TKL, Extended Length, Code, Token, Options and Payload`, with no Version, Type or
//! Message ID, and a length field that counts the options and payload.
//!
//! The engine builds every message in RFC 7252's layout (the exchange layer does not know
//! the transport), so framing is a conversion: [`frame`] turns a UDP-layout message into a
//! frame for the stream, and [`Deframer`] cuts the received byte stream into frames and
//! gives each back in UDP layout (Type Non-confirmable, Message ID 0), for the same
//! validating parser as datagrams.
//!
//! The endpoint does this itself; the module is public for tools and tests that handle
//! RFC 8323 byte streams directly.
//!
//! ```
//! use coap_engine::framing::{frame, Deframer};
//!
//! // A GET in RFC 7252's layout (CON, Message ID 0x1234, token 0x7f, Uri-Path "a").
//! let get = [0x41, 0x01, 0x12, 0x34, 0x7f, 0xb1, b'a'];
//! let mut stream = Vec::new();
//! assert!(frame(&mut stream, &get));
//! assert_eq!(stream, [0x21, 0x01, 0x7f, 0xb1, b'a']);
//!
//! let mut deframer = Deframer::default();
//! deframer.push(&stream[..2]);
//! let mut message = Vec::new();
//! assert_eq!(deframer.next(1152, &mut message), Ok(false)); // not all there yet
//! deframer.push(&stream[2..]);
//! assert_eq!(deframer.next(1152, &mut message), Ok(true));
//! assert_eq!(message, [0x51, 0x01, 0, 0, 0x7f, 0xb1, b'a']); // NON, Message ID 0
//! ```

use alloc::vec::Vec;
use core::fmt;

/// `Len` values 13, 14 and 15 announce 1, 2 and 4 extra length bytes holding
/// `length - 13`, `length - 269` and `length - 65805` (RFC 8323 §3.2).
const EXT1: usize = 13;
const EXT2: usize = 269;
const EXT4: usize = 65805;

/// Why the byte stream cannot be read as CoAP frames; the connection is aborted (RFC 8323
/// §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// A token length of 9 to 15 (reserved).
    TokenLength(u8),
    /// A frame longer than we accept (our Max-Message-Size).
    TooLong {
        /// Its length (options and payload).
        length: usize,
        /// What we accept.
        max: usize,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::TokenLength(t) => write!(f, "reserved token length {t}"),
            FramingError::TooLong { length, max } => {
                write!(
                    f,
                    "a message of {length} bytes exceeds our Max-Message-Size of {max}"
                )
            }
        }
    }
}

/// Appends to `out` the frame of `message`, a message in RFC 7252's layout (4-byte header,
/// token, options and payload). Returns false, appending nothing, if `message` is shorter
/// than its header and token (never the case for what the engine encodes).
pub fn frame(out: &mut Vec<u8>, message: &[u8]) -> bool {
    let Some(&[b0, code, _, _]) = message.first_chunk::<4>() else {
        return false;
    };
    let tkl = usize::from(b0 & 0x0F);
    let Some(token) = message.get(4..4 + tkl) else {
        return false;
    };
    let rest = &message[4 + tkl..];
    let len = rest.len();
    let tkl = tkl as u8;
    if len < EXT1 {
        out.push((len as u8) << 4 | tkl);
    } else if len < EXT2 {
        out.push(13 << 4 | tkl);
        out.push((len - EXT1) as u8);
    } else if len < EXT4 {
        out.push(14 << 4 | tkl);
        out.extend_from_slice(&((len - EXT2) as u16).to_be_bytes());
    } else {
        out.push(15 << 4 | tkl);
        out.extend_from_slice(&((len - EXT4) as u32).to_be_bytes());
    }
    out.push(code);
    out.extend_from_slice(token);
    out.extend_from_slice(rest);
    true
}

/// The size of the frame [`frame`] makes of a message of `udp_len` bytes with a `tkl`-byte
/// token.
#[cfg(test)]
fn framed_len(udp_len: usize, tkl: usize) -> usize {
    let len = udp_len.saturating_sub(4 + tkl);
    let ext = match len {
        l if l < EXT1 => 0,
        l if l < EXT2 => 1,
        l if l < EXT4 => 2,
        _ => 4,
    };
    1 + ext + 1 + tkl + len
}

/// Cuts a received byte stream into frames. Between calls, what has arrived of an
/// incomplete frame waits in a buffer of at most one frame of the largest size accepted (plus
/// its header) and the bytes of one `push`: a peer can never make it grow beyond that, and a
/// frame too long is refused from its header, before its body is waited for.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start: frames are read in place and the buffer is
    /// compacted once per `push`, not once per frame.
    start: usize,
}

/// One frame's fields (borrowed from the deframer's buffer until the next call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    header: usize,
    tkl: usize,
    length: usize,
}

impl Deframer {
    /// Bytes received and not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes in bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, rewritten in RFC 7252's layout into `out` (cleared first):
    /// `Ok(true)`; `Ok(false)` if no frame is complete yet; an error if the stream cannot be
    /// CoAP or the frame is longer than `max` (its options and payload). After an error the
    /// stream cannot be read further: the connection is to be aborted.
    pub fn next(&mut self, max: usize, out: &mut Vec<u8>) -> Result<bool, FramingError> {
        let unread = &self.buf[self.start..];
        let Some(f) = fields(unread, max)? else {
            return Ok(false);
        };
        let total = f.header + f.tkl + f.length;
        if unread.len() < total {
            return Ok(false);
        }
        out.clear();
        // Version 1, Non-confirmable (there are no types on a stream), the token length, the
        // code, Message ID 0.
        out.push(0x50 | f.tkl as u8);
        out.push(unread[f.header - 1]);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&unread[f.header..total]);
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(true)
    }
}

/// Reads a frame header from the start of `buf`: None if it has not fully arrived.
fn fields(buf: &[u8], max: usize) -> Result<Option<Fields>, FramingError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let tkl = b0 & 0x0F;
    if tkl > 8 {
        return Err(FramingError::TokenLength(tkl));
    }
    let (ext, base) = match b0 >> 4 {
        13 => (1, EXT1),
        14 => (2, EXT2),
        15 => (4, EXT4),
        l => (0, usize::from(l)),
    };
    let Some(extended) = buf.get(1..1 + ext) else {
        return Ok(None);
    };
    let length = extended
        .iter()
        .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        .saturating_add(base);
    if length > max {
        return Err(FramingError::TooLong { length, max });
    }
    if buf.len() < 2 + ext {
        return Ok(None); // the code has not arrived
    }
    Ok(Some(Fields {
        header: 2 + ext,
        tkl: usize::from(tkl),
        length,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A UDP-layout message with a token and `len` bytes of options/payload.
    fn message(tkl: usize, len: usize) -> Vec<u8> {
        let mut m = vec![0x40 | tkl as u8, 0x45, 0x12, 0x34];
        m.extend((0..tkl).map(|i| i as u8 + 1));
        m.extend((0..len).map(|i| (i % 251) as u8));
        m
    }

    #[test]
    fn every_length_form_frames_and_deframes_back() {
        // 0-12 inline; 13-268 one byte; 269-65804 two bytes; from 65805 four bytes.
        for len in [0, 1, 12, 13, 14, 268, 269, 270, 65804, 65805, 70000] {
            for tkl in [0, 1, 8] {
                let m = message(tkl, len);
                let mut framed = Vec::new();
                assert!(frame(&mut framed, &m));
                assert_eq!(framed.len(), framed_len(m.len(), tkl), "len {len}");
                // Delivered one byte at a time, the frame completes exactly at its end.
                let mut d = Deframer::default();
                let mut out = Vec::new();
                for (i, b) in framed.iter().enumerate() {
                    d.push(&[*b]);
                    let done = d.next(usize::MAX, &mut out).unwrap();
                    assert_eq!(done, i + 1 == framed.len(), "len {len} byte {i}");
                }
                // Back in UDP layout: NON, Message ID 0, same code, token, options/payload.
                assert_eq!(out[0], 0x50 | tkl as u8);
                assert_eq!(&out[1..4], &[0x45, 0, 0]);
                assert_eq!(&out[4..], &m[4..]);
                assert_eq!(d.pending(), 0);
            }
        }
    }

    #[test]
    fn frames_back_to_back_come_out_in_order() {
        let mut stream = Vec::new();
        for len in [3, 300, 0] {
            frame(&mut stream, &message(2, len));
        }
        let mut d = Deframer::default();
        d.push(&stream);
        let mut out = Vec::new();
        for len in [3, 300, 0] {
            assert!(d.next(1000, &mut out).unwrap());
            assert_eq!(out.len(), 4 + 2 + len);
        }
        assert!(!d.next(1000, &mut out).unwrap());
    }

    #[test]
    fn a_reserved_token_length_or_an_oversized_frame_is_refused_before_it_is_buffered() {
        let mut d = Deframer::default();
        d.push(&[0x09]);
        assert_eq!(
            d.next(1000, &mut Vec::new()),
            Err(FramingError::TokenLength(9))
        );
        // A 4-byte length announcing 1 MB, against a 1152-byte limit: refused at once.
        let mut d = Deframer::default();
        d.push(&[0xF0, 0x00, 0x0F, 0x00, 0x00]);
        assert!(matches!(
            d.next(1152, &mut Vec::new()),
            Err(FramingError::TooLong { max: 1152, .. })
        ));
    }
}
