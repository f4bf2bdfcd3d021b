//! RFC 8323 §3.2 framing on arbitrary byte streams, shared by the cargo-fuzz target
//! `stream_framing` (`core/fuzz`) and by `core/tests/stream_fuzz.rs`, which runs it under
//! proptest in every `cargo test`.
//!
//! [`run`] decodes the input into one of two runs:
//!
//! - **raw**: arbitrary bytes pushed into a [`Deframer`] in chunks whose sizes come from the
//!   input, with an arbitrary `max`;
//! - **round trip**: messages built from input-chosen code, token, options and payload (with
//!   bodies in all four length forms), each framed with [`frame`], concatenated and pushed in
//!   input-chosen chunks, with `max` at, above or just below the longest body.
//!
//! Every result the deframer gives is compared with a reference reading of all the bytes
//! pushed so far ([`expected`]), so the checks are exact:
//!
//! - nothing panics;
//! - a frame comes out exactly when the reference says one is complete, in RFC 7252's layout
//!   (Non-confirmable, Message ID 0, the frame's code, token, options and payload), accepted
//!   by [`codec::parse_header`], and framing it again gives back the very bytes it came from
//!   (the length encoding of RFC 8323 is unique);
//! - an error comes exactly when the bytes call for one: a reserved token length as soon as
//!   the first byte of a frame is in, a length over `max` as soon as the extended length is
//!   in (before the frame's body is waited for);
//! - `pending()` is always the bytes pushed and not yet returned, and never more than
//!   `max` + a header (6) + a token (8) + the last push;
//! - round trip: the messages come back identical but for Type and Message ID, whatever the
//!   chunking, up to the first one longer than `max`, which is refused with its length.

#![allow(dead_code)] // each includer uses a subset

use coap_engine::coap_lite::MessageType;
use coap_engine::codec;
use coap_engine::framing::{frame, Deframer, FramingError};

/// A frame's header (1 byte, up to 4 of extended length, the code) and token, beyond its
/// body: what the deframer may hold of an incomplete frame besides `max` bytes of body.
const HEADER_AND_TOKEN: usize = 6 + 8;

/// Reads fuzz bytes; past the end every read yields zeros.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

/// What a run reached, so tests can check the harness gets past the first bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Frames deframed, by the form of their length: inline, 1, 2 and 4 extended bytes.
    pub frames: [usize; 4],
    pub token_length_errors: usize,
    pub too_long_errors: usize,
    /// Round trips whose messages all came back.
    pub round_trips: usize,
}

impl Reached {
    pub fn add(&mut self, o: &Reached) {
        for (a, b) in self.frames.iter_mut().zip(o.frames) {
            *a += b;
        }
        self.token_length_errors += o.token_length_errors;
        self.too_long_errors += o.too_long_errors;
        self.round_trips += o.round_trips;
    }
}

/// What the bytes of the stream from the start of a frame call for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Not enough bytes to decide.
    Incomplete,
    /// A whole frame: header length (first byte, extended length, code), token length and
    /// body (options and payload) length.
    Frame {
        header: usize,
        tkl: usize,
        length: usize,
    },
    Error(FramingError),
}

/// The reference reading of RFC 8323 §3.2, written from the RFC rather than from the
/// deframer: `Len` 0–12 is the body length, 13/14/15 announce 1/2/4 bytes holding
/// `length - 13`, `length - 269`, `length - 65805`; a reserved TKL (9–15) is an error at
/// once, and so is a length over `max` once it is known.
pub fn expected(bytes: &[u8], max: usize) -> Expected {
    let Some(&b0) = bytes.first() else {
        return Expected::Incomplete;
    };
    let tkl = b0 & 0x0F;
    if tkl > 8 {
        return Expected::Error(FramingError::TokenLength(tkl));
    }
    let (ext, base) = match b0 >> 4 {
        13 => (1, 13u64),
        14 => (2, 269),
        15 => (4, 65805),
        len => (0, u64::from(len)),
    };
    let Some(extended) = bytes.get(1..1 + ext) else {
        return Expected::Incomplete;
    };
    let mut length = base;
    let mut value = 0u64;
    for &b in extended {
        value = value << 8 | u64::from(b);
    }
    length += value;
    let length = usize::try_from(length).expect("64-bit usize");
    if length > max {
        return Expected::Error(FramingError::TooLong { length, max });
    }
    let header = 1 + ext + 1;
    let tkl = usize::from(tkl);
    if bytes.len() < header + tkl + length {
        return Expected::Incomplete;
    }
    Expected::Frame {
        header,
        tkl,
        length,
    }
}

/// A deframer checked against [`expected`] over everything pushed into it.
struct Checked {
    deframer: Deframer,
    max: usize,
    /// Every byte pushed.
    stream: Vec<u8>,
    /// Where the next frame starts in `stream`.
    offset: usize,
    /// Frames returned, in RFC 7252's layout.
    frames: Vec<Vec<u8>>,
    /// The error that ended the stream.
    error: Option<FramingError>,
    reached: Reached,
}

impl Checked {
    fn new(max: usize) -> Self {
        Checked {
            deframer: Deframer::default(),
            max,
            stream: Vec::new(),
            offset: 0,
            frames: Vec::new(),
            error: None,
            reached: Reached::default(),
        }
    }

    /// Pushes `chunk` and reads every frame it completes. False once the stream is in error
    /// (the connection would be aborted: nothing more is pushed).
    fn push(&mut self, chunk: &[u8]) -> bool {
        if self.error.is_some() {
            return false;
        }
        self.deframer.push(chunk);
        self.stream.extend_from_slice(chunk);
        self.check_pending(chunk.len());
        let mut out = Vec::new();
        loop {
            let want = expected(&self.stream[self.offset..], self.max);
            let got = self.deframer.next(self.max, &mut out);
            match (want, got) {
                (Expected::Incomplete, Ok(false)) => break,
                (
                    Expected::Frame {
                        header,
                        tkl,
                        length,
                    },
                    Ok(true),
                ) => {
                    let wire = &self.stream[self.offset..self.offset + header + tkl + length];
                    check_frame(&out, wire, header, tkl, length);
                    let form = match header {
                        2 => 0,
                        3 => 1,
                        4 => 2,
                        _ => 3,
                    };
                    self.reached.frames[form] += 1;
                    self.frames.push(out.clone());
                    self.offset += wire.len();
                }
                (Expected::Error(e), Err(got)) => {
                    assert_eq!(got, e, "wrong error at offset {}", self.offset);
                    match got {
                        FramingError::TokenLength(_) => self.reached.token_length_errors += 1,
                        FramingError::TooLong { .. } => self.reached.too_long_errors += 1,
                    }
                    self.error = Some(got);
                    return false;
                }
                (want, got) => panic!(
                    "deframer gave {got:?} where the bytes call for {want:?} (offset {}, max {}, \
                     unread {:02x?})",
                    self.offset,
                    self.max,
                    &self.stream[self.offset..self.stream.len().min(self.offset + 16)]
                ),
            }
            self.check_pending(chunk.len());
        }
        true
    }

    fn check_pending(&self, last_push: usize) {
        let pending = self.deframer.pending();
        assert_eq!(
            pending,
            self.stream.len() - self.offset,
            "pending() is not the bytes pushed and not yet returned"
        );
        let bound = self
            .max
            .saturating_add(HEADER_AND_TOKEN)
            .saturating_add(last_push);
        assert!(
            pending <= bound,
            "{pending} bytes pending, more than max {} + {HEADER_AND_TOKEN} + the last push of \
             {last_push}",
            self.max
        );
    }
}

/// One frame the deframer returned (`out`) against the bytes it came from (`wire`).
fn check_frame(out: &[u8], wire: &[u8], header: usize, tkl: usize, length: usize) {
    assert_eq!(out.len(), 4 + tkl + length, "frame of the wrong size");
    assert_eq!(
        out[0],
        0x50 | tkl as u8,
        "not version 1, NON, the frame's TKL"
    );
    assert_eq!(out[1], wire[header - 1], "code changed");
    assert_eq!(&out[2..4], &[0, 0], "Message ID not 0");
    assert_eq!(
        &out[4..],
        &wire[header..],
        "token, options or payload changed"
    );
    let h = codec::parse_header(out).expect("a deframed message has a valid header");
    assert_eq!(h.mtype, MessageType::NonConfirmable);
    assert_eq!(h.message_id, 0);
    assert_eq!(usize::from(h.token_length), tkl);
    assert_eq!(h.code, wire[header - 1]);
    if let Ok(view) = codec::parse(out) {
        assert_eq!(view.token.len(), tkl);
    }
    // Every length has exactly one encoding, so framing the message again restores the wire.
    let mut again = Vec::new();
    assert!(frame(&mut again, out), "frame() refused a deframed message");
    assert_eq!(again, wire, "frame(deframe(bytes)) changed the bytes");
}

/// A `max` for the deframer: the usual ones, the edges of the length forms, arbitrary.
fn max_from(input: &mut Bytes<'_>) -> usize {
    match input.u8() % 8 {
        0 => usize::MAX,
        1 => 1152,
        2 => input.pick(&[0, 1, 12, 13, 14, 268, 269, 270, 65804, 65805, 65806]),
        3 => usize::from(input.u8()),
        4 => usize::from(input.u16()),
        5 => 65805 + usize::from(input.u16()),
        // The largest a 4-byte extended length can say, and one less.
        6 => 65805 + u32::MAX as usize - usize::from(input.u8() % 2),
        _ => 1 << (input.u8() % 40),
    }
}

/// A chunk size: mostly small (down to zero-length pushes), sometimes large.
fn chunk_len(input: &mut Bytes<'_>) -> usize {
    match input.u8() {
        b @ 0..=191 => usize::from(b % 48),
        b => usize::from(b - 191) * 1024,
    }
}

/// Runs one input; panics if a property does not hold.
pub fn run(data: &[u8]) -> Reached {
    let mut input = Bytes::new(data);
    if input.u8() % 2 == 0 {
        raw(&mut input)
    } else {
        round_trip(&mut input)
    }
}

/// Arbitrary bytes in arbitrary chunks: each chunk size is read from the input, then that
/// many bytes.
pub fn raw(input: &mut Bytes<'_>) -> Reached {
    let mut checked = Checked::new(max_from(input));
    while !input.is_empty() {
        let len = chunk_len(input);
        if !checked.push(input.take(len)) {
            break;
        }
    }
    checked.reached
}

/// A message whose body (options and payload) falls in one of the four length forms.
fn message(input: &mut Bytes<'_>) -> Option<Vec<u8>> {
    let mtype = input.pick(&[
        MessageType::Confirmable,
        MessageType::NonConfirmable,
        MessageType::Acknowledgement,
        MessageType::Reset,
    ]);
    let code = input.u8();
    let mid = input.u16();
    let tkl = usize::from(input.u8() % 9);
    let token = input.take(tkl).to_vec();
    let mut options: Vec<(u16, Vec<u8>)> = (0..input.u8() % 4)
        .map(|_| {
            let number = match input.u8() % 4 {
                0 => input.u16(),
                _ => u16::from(input.u8() % 64),
            };
            let len = match input.u8() % 8 {
                0 => 13 + usize::from(input.u8()),
                1 => 269 + usize::from(input.u8()),
                n => usize::from(n),
            };
            (number, vec![input.u8(); len])
        })
        .collect();
    options.sort_by_key(|o| o.0);
    // Payloads reaching each length form, the 4-byte one (65805 and more) rarely: it is
    // large for a fuzz execution.
    let payload_len = match input.u8() % 16 {
        0..=4 => usize::from(input.u8() % 13),
        5..=9 => 13 + usize::from(input.u8()),
        10..=14 => 269 + usize::from(input.u16()) % 4000,
        _ => 65805 + usize::from(input.u8()),
    };
    let seed = input.u8();
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut out = Vec::new();
    codec::encode(
        &mut out,
        mtype,
        code,
        mid,
        &token,
        options.iter().map(|(n, v)| (*n, v.as_slice())),
        &payload,
    )
    .ok()?;
    Some(out)
}

/// Framed messages, concatenated, deframed in arbitrary chunks: they come back as they were
/// (but for Type and Message ID), up to the first whose body exceeds `max`.
pub fn round_trip(input: &mut Bytes<'_>) -> Reached {
    let count = 1 + usize::from(input.u8() % 6);
    let messages: Vec<Vec<u8>> = (0..count).filter_map(|_| message(input)).collect();
    let mut stream = Vec::new();
    for m in &messages {
        let before = stream.len();
        assert!(frame(&mut stream, m), "frame() refused an encoded message");
        assert!(stream.len() > before);
        // A message cut inside its header or token cannot be framed, and nothing is written.
        let tkl = usize::from(m[0] & 0x0F);
        let cut = usize::from(input.u8()) % (4 + tkl);
        let mut untouched = vec![0xAA];
        assert!(!frame(&mut untouched, &m[..cut]), "framed a cut message");
        assert_eq!(untouched, [0xAA], "a refused frame() wrote something");
    }
    let body = |m: &Vec<u8>| m.len() - 4 - usize::from(m[0] & 0x0F);
    let longest = messages.iter().map(body).max().unwrap_or(0);
    let max = match input.u8() % 4 {
        0 => usize::MAX,
        1 => longest,
        2 => longest.saturating_sub(1),
        _ => longest.saturating_sub(usize::from(input.u8())),
    };
    let mut checked = Checked::new(max);
    let mut at = 0;
    while at < stream.len() {
        // Once the input is used up, the rest goes in one push.
        let len = if input.is_empty() {
            stream.len() - at
        } else {
            chunk_len(input).min(stream.len() - at)
        };
        if !checked.push(&stream[at..at + len]) {
            break;
        }
        at += len;
    }
    // Every message that fits came back, in order; the first that does not was refused.
    let fits = messages.iter().take_while(|m| body(m) <= max).count();
    assert_eq!(checked.frames.len(), fits, "messages lost or invented");
    for (got, sent) in checked.frames.iter().zip(&messages) {
        let tkl = sent[0] & 0x0F;
        assert_eq!(got[0], 0x50 | tkl);
        assert_eq!(got[1], sent[1], "code changed");
        assert_eq!(&got[2..4], &[0, 0]);
        assert_eq!(&got[4..], &sent[4..], "token, options or payload changed");
        assert_eq!(
            codec::parse(got).is_ok(),
            codec::parse(sent).is_ok(),
            "framing changed whether the message parses"
        );
    }
    match messages.get(fits) {
        Some(too_long) => assert_eq!(
            checked.error,
            Some(FramingError::TooLong {
                length: body(too_long),
                max
            })
        ),
        None => {
            assert_eq!(checked.error, None);
            assert_eq!(
                checked.deframer.pending(),
                0,
                "bytes left after the last frame"
            );
            checked.reached.round_trips += 1;
        }
    }
    checked.reached
}
