//! Block-wise transfers, RFC 7959: the Block1/Block2 option values (§2.2), the client's
//! transfer state machine (§2.4, §2.5, §2.7) and the server's reassembly table (§2.5).
//!
//! The session calls in here at a few points and stays ignorant of blocks otherwise:
//!
//! - [`first_request`] encodes the application's request; a body larger than the block size
//!   (or than `max` (the session's largest message)) becomes an upload, whose state rides on the exchange;
//! - [`on_response`] decides what a response to one of our requests means: deliver it, send
//!   the next block, end the request with an error, or ignore a stale block;
//! - [`Reassembly::on_request`] collects the Block1 blocks of incoming request bodies and
//!   answers the non-final ones itself (2.31 Continue), or rejects broken ones (4.00, 4.02,
//!   4.08, 4.13), so the application sees one request with the whole body;
//! - [`shape_response`] cuts the application's answer to the block the request asked for.
//!
//! # Decisions
//!
//! - **One token, one exchange slot.** Every block request of a transfer uses the request's
//!   token and a new Message ID; the transfer keeps its exchange (so it counts once against
//!   NSTART and `max_exchanges`) and a further block waits for a free NSTART slot like any
//!   request. Cancelling the request, its timing out and the session ending all end the
//!   transfer with the request's one terminal event.
//! - **Blocks are checked by offset.** A block is accepted only if it starts exactly where the
//!   body received so far ends (§2.2: `NUM × size`), so a server may answer with smaller blocks
//!   than asked (§2.3) and we may ask for smaller ones than it used (late negotiation, §2.4),
//!   renumbering as needed. A non-final block must be exactly its size (§2.3). Anything else
//!   in a piggybacked answer (which is certainly the answer to the block just asked for) ends
//!   the request with [`ExchangeError::UnexpectedBlock`]; in a separate response a block that
//!   was already received is taken for a late duplicate and ignored.
//! - **ETag change restarts, then fails (§2.4).** If a later block carries an ETag other than
//!   the first block's (or the first had none), the blocks came from two
//!   representations: the body so far is dropped and the transfer starts over from block 0,
//!   at most [`MAX_RESTARTS`] times, then ends with
//!   [`ExchangeError::RepresentationChanged`]. A body is never mixed from two versions. A
//!   later block without an ETag is accepted: §2.4 has the client compare ETags "if
//!   available", and libcoap 4.3.1 tags only block 0 when the request carried an ETag.
//! - **Bounded bodies.** A reassembled body never exceeds
//!   [`Blockwise::max_body_size`](crate::Blockwise::max_body_size); a Size2 announcing more
//!   ends the transfer before any further block is fetched (§4).
//! - **Only success bodies are reassembled.** An error response (4.xx, 5.xx) is delivered as
//!   received, and during an upload every response other than 2.31 Continue (or a 2.xx
//!   acknowledging the block with Block1) is the final answer: 4.08 Request Entity
//!   Incomplete, 4.13 without a smaller Block1 size, ... (§2.5, §2.9). A 4.13 carrying a
//!   smaller Block1 size restarts the upload with that size, once (§2.9.3).
//! - **The application can opt out.** A request that already carries Block1, or Block2 with a
//!   block number other than 0, is sent as it is and its response delivered as received: the
//!   application is doing block-wise itself.
//! - **Server: stateless Block2, stateful Block1.** Response blocks are cut from whatever the
//!   application answers to each block request (§2.4 allows the server to keep no state); an
//!   ETag derived from the whole body is added when the application set none, so a client can
//!   tell that the representation changed. Request bodies are reassembled atomically (§2.5):
//!   one entry per request target (method and every option but Block1, Block2, Size1, Size2),
//!   at most `max_block_transfers` per session, each dropped EXCHANGE_LIFETIME after its latest
//!   block (§2.5 lets a server discard it then), and all of them with the session.
//! - **Streams: messages by size, BERT (RFC 8323 §6).** On a connection, a request or
//!   response that fits the peer's Max-Message-Size goes whole, whatever the block size;
//!   larger ones go block-wise, in BERT blocks (SZX 7: as many 1024-byte units as fit, at most
//!   [`MAX_BERT_UNITS`], numbered in units) when the peer announced Block-Wise-Transfer in
//!   its CSM and our block size is 1024 bytes, else in ordinary blocks. SZX 7 from the peer
//!   is accepted on any connection (ours announce it); a non-final BERT block must be a
//!   non-zero multiple of 1024 bytes.
//! - **A block past the end** of the representation is answered with 4.02 Bad Option: RFC
//!   7959 names no code for it, and the critical Block2 option is one the server cannot
//!   honour (RFC 7252 §5.4.1). SZX 7 in a request over UDP gets 4.00 Bad Request (§2.2) and a Block
//!   option longer than 3 bytes is malformed, so treated as an unrecognized critical option
//!   (RFC 7252 §5.4.3): 4.02 Bad Option for a Confirmable request, a rejection otherwise; in
//!   a response it makes the response rejected (see [`well_formed`]).

use coap_lite::Packet;

use crate::codec::{self, MessageView};

mod client;
mod server;

pub(crate) use client::*;
pub(crate) use server::*;

/// ETag (RFC 7252 §5.10.6).
pub(crate) const ETAG: u16 = 4;
/// Block2 (RFC 7959 §2.1).
pub(crate) const BLOCK2: u16 = 23;
/// Block1 (RFC 7959 §2.1).
pub(crate) const BLOCK1: u16 = 27;
/// Size2 (RFC 7959 §4).
pub(crate) const SIZE2: u16 = 28;
/// Size1 (RFC 7252 §5.10.9, RFC 7959 §4).
pub(crate) const SIZE1: u16 = 60;

pub(super) const CONTINUE: u8 = codec::code(2, 31);
pub(super) const BAD_REQUEST: u8 = codec::code(4, 0);
pub(crate) const BAD_OPTION: u8 = codec::code(4, 2);
pub(super) const INCOMPLETE: u8 = codec::code(4, 8);
pub(super) const TOO_LARGE: u8 = codec::code(4, 13);

/// The largest SZX: 1024-byte blocks. 7 is reserved (RFC 7959 §2.2), except on streams.
pub(crate) const MAX_SZX: u8 = 6;

/// SZX 7 on a stream: BERT (RFC 8323 §6), blocks of any number of 1024-byte units, numbered
/// in units.
pub(crate) const BERT: u8 = 7;

/// The most 1024-byte units a BERT block of ours carries: 64 KiB, so that one block message
/// stays well within `Limits::max_unwritten_bytes` however large the peer allows.
pub(crate) const MAX_BERT_UNITS: usize = 64;

/// What a session's transport means for block-wise transfers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Path {
    /// A stream (RFC 8323), on which we announce Block-Wise-Transfer: a message is limited by
    /// the peer's Max-Message-Size rather than cut at the block size, and SZX 7 (BERT) is
    /// valid input.
    pub(crate) stream: bool,
    /// The peer announced Block-Wise-Transfer too: we may send BERT blocks (§6).
    pub(crate) bert: bool,
}

impl Path {
    /// Whether the path is a stream; never without feature `tcp`, so that the compiler drops
    /// what only streams need (BERT).
    #[inline(always)]
    pub(crate) fn stream(self) -> bool {
        cfg!(feature = "tcp") && self.stream
    }

    #[inline(always)]
    fn bert(self) -> bool {
        cfg!(feature = "tcp") && self.bert
    }

    /// The block size to ask for or use when the exponents `requested` (a peer's) and `ours`
    /// meet: the smaller one, BERT only if both want it and the path allows it.
    pub(crate) fn negotiate(self, requested: u8, ours: u8) -> u8 {
        if requested == BERT {
            if self.stream() && ours >= MAX_SZX {
                BERT
            } else {
                ours.min(MAX_SZX)
            }
        } else {
            requested.min(ours).min(MAX_SZX)
        }
    }

    /// Our own block size exponent for this path: BERT where the peer announced it and our
    /// block size is 1024 bytes.
    pub(crate) fn ours(self, block_size: usize) -> u8 {
        let szx = szx_of(block_size);
        if self.bert() && szx == MAX_SZX {
            BERT
        } else {
            szx
        }
    }
}

/// How often a download starts over because the representation changed (ETag) before the
/// request fails with [`ExchangeError::RepresentationChanged`].
pub(crate) const MAX_RESTARTS: u8 = 2;

/// Block numbers are at most 20 bits (a 3-byte option value, RFC 7959 §2.2).
pub(super) const MAX_NUM: u64 = (1 << 20) - 1;

// =============================================================================================
// Option values

/// A Block1 or Block2 option value (RFC 7959 §2.2): block number, more flag, size exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) num: u32,
    pub(crate) more: bool,
    /// 0..=6: blocks of `2^(szx + 4)` bytes; 7 ([`BERT`]): 1024-byte units.
    pub(crate) szx: u8,
}

/// Why a Block option value could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockError {
    /// Longer than 3 bytes: malformed (RFC 7252 §5.4.3).
    TooLong,
    /// SZX 7, reserved (RFC 7959 §2.2: 4.00 Bad Request in a request).
    ReservedSize,
}

impl Block {
    pub(crate) fn new(num: u32, more: bool, szx: u8) -> Block {
        Block {
            num: num & MAX_NUM as u32,
            more,
            szx: szx.min(BERT),
        }
    }

    /// The block of `szx` starting at byte `offset`, if `offset` is a multiple of the block
    /// size (of 1024 for BERT) and its number fits in 20 bits.
    pub(crate) fn at(offset: u64, more: bool, szx: u8) -> Option<Block> {
        let shift = szx.min(MAX_SZX) + 4;
        let num = offset >> shift;
        (num <= MAX_NUM && num << shift == offset).then(|| Block::new(num as u32, more, szx))
    }

    /// Decodes an option value; SZX 7 is reserved (RFC 7959 §2.2).
    #[cfg(test)]
    pub(crate) fn decode(value: &[u8]) -> Result<Block, BlockError> {
        Block::decode_on(value, Path::default())
    }

    /// Decodes an option value received on `path`: SZX 7 is BERT on a stream (RFC 8323 §6).
    pub(crate) fn decode_on(value: &[u8], path: Path) -> Result<Block, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong);
        }
        let v = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let szx = (v & 7) as u8;
        if szx == BERT && !path.stream() {
            return Err(BlockError::ReservedSize);
        }
        Ok(Block {
            num: v >> 4,
            more: v & 8 != 0,
            szx,
        })
    }

    pub(crate) fn is_bert(self) -> bool {
        cfg!(feature = "tcp") && self.szx == BERT
    }

    /// Whether `len` bytes are a valid payload for this block: a non-final block is exactly
    /// its size (RFC 7959 §2.3), or for BERT a non-zero multiple of 1024 (RFC 8323 §6).
    pub(crate) fn holds(self, len: usize) -> bool {
        if !self.more {
            true
        } else if self.is_bert() {
            len > 0 && len % 1024 == 0
        } else {
            len == self.size()
        }
    }

    /// The option value, in as few bytes as possible (0 is the empty value).
    pub(crate) fn encode(self) -> Uint {
        Uint::new((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }

    pub(crate) fn size(self) -> usize {
        size_of(self.szx)
    }

    /// The position of the block's first byte in the body: `NUM × size` (× 1024 for BERT).
    pub(crate) fn offset(self) -> u64 {
        u64::from(self.num) << (self.szx.min(MAX_SZX) + 4)
    }
}

/// Block size in bytes of a size exponent.
pub(crate) fn size_of(szx: u8) -> usize {
    16 << szx.min(MAX_SZX)
}

/// The size exponent of a block size (a power of two from 16 to 1024, see `Config::validate`).
pub(crate) fn szx_of(block_size: usize) -> u8 {
    (block_size.clamp(16, 1024).ilog2() - 4) as u8
}

/// A uint option value (RFC 7252 §3.2) stored inline: at most 4 bytes, no leading zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Uint {
    bytes: [u8; 4],
    len: u8,
}

impl Uint {
    pub(crate) fn new(v: u32) -> Uint {
        let len = 4 - (v.leading_zeros() / 8) as u8;
        Uint {
            bytes: v.to_be_bytes(),
            len,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[4 - self.len as usize..]
    }
}

/// A uint option value of at most 4 bytes; longer is malformed (an elective Size option that
/// is malformed is ignored, RFC 7252 §5.4.3).
pub(crate) fn decode_uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
}

/// Whether the Block options of a message can be decoded at all. A response carrying one that
/// cannot (longer than 3 bytes, or SZX 7) must be rejected like one with an unrecognized
/// critical option (RFC 7252 §5.4.1, §5.4.3).
pub(crate) fn well_formed(msg: &MessageView<'_>, path: Path) -> bool {
    // Without feature `blockwise` they are the application's to judge.
    !cfg!(feature = "blockwise")
        || msg
            .options()
            .take_while(|&(n, _)| n <= BLOCK1)
            .filter(|&(n, _)| n == BLOCK1 || n == BLOCK2)
            .all(|(_, v)| Block::decode_on(v, path).is_ok())
}

pub(super) fn is_block_option(number: u16) -> bool {
    matches!(number, BLOCK1 | BLOCK2 | SIZE1 | SIZE2)
}

pub(super) fn is_success(code: u8) -> bool {
    code >> 5 == 2
}

/// A response as the application gets it after a transfer: without Block1 and Block2.
pub(super) fn final_response(msg: &MessageView<'_>) -> Packet {
    msg.packet_without(&[BLOCK1, BLOCK2])
}

/// The ETag of a representation the application gave none: a 64-bit hash of the body, taken
/// 8 bytes at a time (cheap on microcontrollers, and every response block hashes the whole
/// body). Each step is a bijection of the running state, so a body that differs in any one
/// 8-byte word (or in length) always gets another tag; other changes collide with a chance of
/// about 2^-64.
pub(super) fn body_etag(body: &[u8]) -> [u8; 8] {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let step = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut h = step(0xcbf2_9ce4_8422_2325, body.len() as u64);
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        h = step(
            h,
            u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        );
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    step(h, tail).to_be_bytes()
}

/// The encoded size of an option header for `delta` and `len` (RFC 7252 §3.1).
pub(super) fn option_header_len(delta: u32, len: usize) -> usize {
    let ext = |x: usize| match x {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    };
    1 + ext(delta as usize) + ext(len)
}

/// The size `packet` would have on the wire with a token of `token_len` bytes.
pub(super) fn encoded_len(packet: &Packet, token_len: usize) -> usize {
    let mut len = 4 + token_len;
    let mut previous = 0u16;
    for (&number, values) in packet.options() {
        for v in values {
            len += option_header_len(u32::from(number.saturating_sub(previous)), v.len()) + v.len();
            previous = number;
        }
    }
    if !packet.payload.is_empty() {
        len += 1 + packet.payload.len();
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use coap_lite::MessageType;

    #[test]
    fn block_values_round_trip_for_every_size() {
        for szx in 0..=MAX_SZX {
            for num in [0u32, 1, 15, 16, 4095, 4096, MAX_NUM as u32] {
                for more in [false, true] {
                    let b = Block::new(num, more, szx);
                    let v = b.encode();
                    assert_eq!(Block::decode(v.as_slice()), Ok(b), "{b:?}");
                    assert_eq!(b.size(), 16 << szx);
                    assert_eq!(b.offset(), u64::from(num) * (16 << szx));
                }
            }
        }
    }

    #[test]
    fn block_values_use_the_fewest_bytes() {
        // NUM 0, M 0, SZX 0 is the empty value (RFC 7252 §3.2 uint).
        assert_eq!(Block::new(0, false, 0).encode().as_slice(), &[] as &[u8]);
        assert_eq!(Block::new(0, false, 6).encode().as_slice(), &[0x06]);
        assert_eq!(Block::new(0, true, 2).encode().as_slice(), &[0x0a]);
        assert_eq!(Block::new(15, false, 6).encode().as_slice(), &[0xf6]);
        assert_eq!(Block::new(16, false, 6).encode().as_slice(), &[0x01, 0x06]);
        assert_eq!(Block::new(4095, true, 1).encode().as_slice(), &[0xff, 0xf9]);
        assert_eq!(
            Block::new(4096, true, 1).encode().as_slice(),
            &[0x01, 0x00, 0x09]
        );
        assert_eq!(
            Block::new(MAX_NUM as u32, true, 6).encode().as_slice(),
            &[0xff, 0xff, 0xfe]
        );
    }

    #[test]
    fn block_value_decode_edge_cases() {
        // The empty value is block 0 of 16 bytes, last.
        assert_eq!(Block::decode(&[]), Ok(Block::new(0, false, 0)));
        // Leading zeros are tolerated.
        assert_eq!(Block::decode(&[0, 0, 0x16]), Ok(Block::new(1, false, 6)));
        assert_eq!(Block::decode(&[0x1e]), Ok(Block::new(1, true, 6)));
        // SZX 7 is reserved, in any block.
        assert_eq!(Block::decode(&[0x07]), Err(BlockError::ReservedSize));
        assert_eq!(
            Block::decode(&[0xff, 0xff, 0xff]),
            Err(BlockError::ReservedSize)
        );
        // More than 3 bytes is malformed, even with leading zeros.
        assert_eq!(Block::decode(&[0, 0, 0, 0]), Err(BlockError::TooLong));
        assert_eq!(Block::decode(&[1, 2, 3, 4, 5]), Err(BlockError::TooLong));
    }

    #[test]
    fn blocks_are_placed_by_offset() {
        assert_eq!(Block::at(0, true, 6), Some(Block::new(0, true, 6)));
        assert_eq!(Block::at(1024, false, 4), Some(Block::new(4, false, 4)));
        // Not a multiple of the size.
        assert_eq!(Block::at(1000, false, 4), None);
        // Beyond 20 bits of block number.
        assert_eq!(Block::at((MAX_NUM + 1) * 16, false, 0), None);
        assert_eq!(
            Block::at(MAX_NUM * 16, false, 0),
            Some(Block::new(MAX_NUM as u32, false, 0))
        );
    }

    #[test]
    fn size_exponents() {
        for szx in 0..=MAX_SZX {
            assert_eq!(szx_of(size_of(szx)), szx);
        }
        assert_eq!(size_of(0), 16);
        assert_eq!(size_of(6), 1024);
        // Out of range is clamped, never a panic.
        assert_eq!(size_of(7), 1024);
        assert_eq!(szx_of(4096), 6);
        assert_eq!(szx_of(0), 0);
    }

    #[test]
    fn derived_etags_tell_bodies_apart() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let tag = body_etag(&a);
        assert_eq!(body_etag(&a), tag, "deterministic");
        for i in [0, 7, 8, 500, 999] {
            let mut b = a.clone();
            b[i] ^= 1;
            assert_ne!(body_etag(&b), tag, "byte {i} changed");
        }
        assert_ne!(body_etag(&a[..999]), tag, "shorter");
        let mut longer = a.clone();
        longer.push(0);
        assert_ne!(body_etag(&longer), tag, "longer by a zero byte");
        assert_ne!(body_etag(&[]), body_etag(&[0]));
    }

    #[test]
    fn uint_values() {
        assert_eq!(Uint::new(0).as_slice(), &[] as &[u8]);
        assert_eq!(Uint::new(255).as_slice(), &[255]);
        assert_eq!(Uint::new(256).as_slice(), &[1, 0]);
        assert_eq!(Uint::new(u32::MAX).as_slice(), &[255; 4]);
        assert_eq!(decode_uint(&[]), Some(0));
        assert_eq!(decode_uint(&[1, 0]), Some(256));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    pub(super) fn view_of(bytes: &[u8]) -> MessageView<'_> {
        codec::parse(bytes).expect("valid test message")
    }

    pub(super) fn message(options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode(
            &mut out,
            MessageType::Confirmable,
            codec::code(0, 3),
            1,
            &[7],
            options.iter().copied(),
            payload,
        )
        .unwrap();
        out
    }

    fn well_formed_udp(msg: &MessageView<'_>) -> bool {
        well_formed(msg, Path::default())
    }

    #[cfg(feature = "blockwise")]
    #[test]
    fn well_formed_block_options() {
        assert!(well_formed_udp(&view_of(&message(&[], b""))));
        assert!(well_formed_udp(&view_of(&message(
            &[(BLOCK2, &[0x16])],
            b""
        ))));
        assert!(!well_formed_udp(&view_of(&message(
            &[(BLOCK2, &[0x17])],
            b""
        ))));
        assert!(!well_formed_udp(&view_of(&message(
            &[(BLOCK1, &[0, 0, 0, 1])],
            b""
        ))));
        // Size options are elective: their shape does not matter here.
        assert!(well_formed_udp(&view_of(&message(
            &[(SIZE1, &[1, 2, 3, 4, 5])],
            b""
        ))));
    }
}
