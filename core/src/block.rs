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
//! - **A block past the end** of the representation is answered with 4.02 Bad Option: RFC
//!   7959 names no code for it, and the critical Block2 option is one the server cannot
//!   honour (RFC 7252 §5.4.1). SZX 7 in a request gets 4.00 Bad Request (§2.2) and a Block
//!   option longer than 3 bytes is malformed, so treated as an unrecognized critical option
//!   (RFC 7252 §5.4.3): 4.02 Bad Option for a Confirmable request, a rejection otherwise; in
//!   a response it makes the response rejected (see [`well_formed`]).

use alloc::boxed::Box;
use alloc::vec::Vec;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use crate::codec::{self, MessageView};
use crate::config::Config;
use crate::error::Error;
use crate::event::ExchangeError;
use crate::outputs::Outputs;
use crate::time::Instant;
use crate::transmit::{Datagram, SendErrorKind};

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

const CONTINUE: u8 = codec::code(2, 31);
const BAD_REQUEST: u8 = codec::code(4, 0);
pub(crate) const BAD_OPTION: u8 = codec::code(4, 2);
const INCOMPLETE: u8 = codec::code(4, 8);
const TOO_LARGE: u8 = codec::code(4, 13);

/// The largest SZX: 1024-byte blocks. 7 is reserved (RFC 7959 §2.2).
pub(crate) const MAX_SZX: u8 = 6;

/// How often a download starts over because the representation changed (ETag) before the
/// request fails with [`ExchangeError::RepresentationChanged`].
pub(crate) const MAX_RESTARTS: u8 = 2;

/// Block numbers are at most 20 bits (a 3-byte option value, RFC 7959 §2.2).
const MAX_NUM: u64 = (1 << 20) - 1;

// =============================================================================================
// Option values

/// A Block1 or Block2 option value (RFC 7959 §2.2): block number, more flag, size exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) num: u32,
    pub(crate) more: bool,
    /// 0..=6: blocks of `2^(szx + 4)` bytes.
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
            szx: szx.min(MAX_SZX),
        }
    }

    /// The block of `szx` starting at byte `offset`, if `offset` is a multiple of the block
    /// size and its number fits in 20 bits.
    pub(crate) fn at(offset: u64, more: bool, szx: u8) -> Option<Block> {
        let szx = szx.min(MAX_SZX);
        let num = offset >> (szx + 4);
        (num <= MAX_NUM && num << (szx + 4) == offset).then(|| Block::new(num as u32, more, szx))
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Block, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong);
        }
        let v = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let szx = (v & 7) as u8;
        if szx == 7 {
            return Err(BlockError::ReservedSize);
        }
        Ok(Block {
            num: v >> 4,
            more: v & 8 != 0,
            szx,
        })
    }

    /// The option value, in as few bytes as possible (0 is the empty value).
    pub(crate) fn encode(self) -> Uint {
        Uint::new((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }

    pub(crate) fn size(self) -> usize {
        size_of(self.szx)
    }

    /// The position of the block's first byte in the body: `NUM × size`.
    pub(crate) fn offset(self) -> u64 {
        u64::from(self.num) << (self.szx + 4)
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
pub(crate) fn well_formed(msg: &MessageView<'_>) -> bool {
    msg.options()
        .take_while(|&(n, _)| n <= BLOCK1)
        .filter(|&(n, _)| n == BLOCK1 || n == BLOCK2)
        .all(|(_, v)| Block::decode(v).is_ok())
}

fn is_block_option(number: u16) -> bool {
    matches!(number, BLOCK1 | BLOCK2 | SIZE1 | SIZE2)
}

fn is_success(code: u8) -> bool {
    code >> 5 == 2
}

/// The message as a coap-lite packet without the options in `skip`.
fn packet_without(msg: &MessageView<'_>, skip: &[u16]) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(msg.header.mtype);
    packet.header.code = MessageClass::from(msg.header.code);
    packet.header.message_id = msg.header.message_id;
    packet.set_token(msg.token.to_vec());
    for (number, value) in msg.options().filter(|(n, _)| !skip.contains(n)) {
        packet.add_option(CoapOption::from(number), value.to_vec());
    }
    packet.payload = msg.payload.to_vec();
    packet
}

/// A response as the application gets it after a transfer: without Block1 and Block2.
fn final_response(msg: &MessageView<'_>) -> Packet {
    packet_without(msg, &[BLOCK1, BLOCK2])
}

/// The ETag of a representation the application gave none: a 64-bit hash of the body, taken
/// 8 bytes at a time (cheap on microcontrollers, and every response block hashes the whole
/// body). Each step is a bijection of the running state, so a body that differs in any one
/// 8-byte word (or in length) always gets another tag; other changes collide with a chance of
/// about 2^-64.
fn body_etag(body: &[u8]) -> [u8; 8] {
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
fn option_header_len(delta: u32, len: usize) -> usize {
    let ext = |x: usize| match x {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    };
    1 + ext(delta as usize) + ext(len)
}

/// The size `packet` would have on the wire with a token of `token_len` bytes.
fn encoded_len(packet: &Packet, token_len: usize) -> usize {
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

// =============================================================================================
// Client

/// The parts of the application's request every block request repeats ("the same options as
/// the initial request", RFC 7959 §2.4).
#[derive(Debug)]
struct Template {
    mtype: MessageType,
    code: u8,
    /// Options other than Block1, Block2, Size1 and Size2, in wire order.
    options: Vec<(u16, Vec<u8>)>,
    /// While uploading: the whole request body. While downloading: the payload each block
    /// request repeats (none after an upload, §2.7).
    payload: Vec<u8>,
}

impl Template {
    fn from_packet(packet: &Packet, mtype: MessageType) -> Template {
        let options = packet
            .options()
            .filter(|(n, _)| !is_block_option(**n))
            .flat_map(|(&n, vs)| vs.iter().map(move |v| (n, v.clone())))
            .collect();
        Template {
            mtype,
            code: u8::from(packet.header.code),
            options,
            payload: packet.payload.clone(),
        }
    }

    /// The template of a request answered by a first block. Observe is left out: the further
    /// blocks of a registration's (or deregistration's) answer are plain GETs (RFC 7959
    /// §2.6), which must not register again.
    fn from_view(view: &MessageView<'_>) -> Template {
        Template {
            mtype: view.header.mtype,
            code: view.header.code,
            options: view
                .options()
                .filter(|(n, _)| !is_block_option(*n) && *n != crate::observe::OBSERVE)
                .map(|(n, v)| (n, v.to_vec()))
                .collect(),
            payload: view.payload.to_vec(),
        }
    }

    /// Encodes a block request: the template's options with `extra` (ascending, none of them
    /// a template option) merged in order, and `payload`.
    fn encode(
        &self,
        out: &mut Outputs,
        mid: u16,
        token: &[u8],
        extra: &[(u16, Uint)],
        payload: &[u8],
        max: usize,
    ) -> Result<Datagram, Error> {
        let mut ours = self
            .options
            .iter()
            .map(|(n, v)| (*n, v.as_slice()))
            .peekable();
        let mut more = extra.iter().map(|(n, v)| (*n, v.as_slice())).peekable();
        // A merge rather than a sort: no sorting code in the firmware.
        let options = core::iter::from_fn(move || match (ours.peek(), more.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => more.next(),
            (Some(_), _) => ours.next(),
            (None, _) => more.next(),
        });
        out.encode_parts(self.mtype, self.code, mid, token, options, payload, max)
    }
}

/// Where a client transfer stands.
#[derive(Debug)]
enum Phase {
    /// Sending the request body in Block1 blocks (RFC 7959 §2.5); `block` is the one in flight.
    Upload { block: Block, restarted: bool },
    /// Reassembling the response body from Block2 blocks (§2.4); `block` is the one asked for.
    Download {
        block: Block,
        body: Vec<u8>,
        /// The ETag of the first block (None: it had none).
        etag: Option<Vec<u8>>,
        restarts: u8,
    },
}

/// A block-wise transfer of one of our requests, kept on its exchange.
#[derive(Debug)]
pub(crate) struct ClientTransfer {
    template: Template,
    phase: Phase,
    /// The block size (SZX) to ask the server for: ours, or the one the application's own
    /// Block2 option asked for.
    preferred: u8,
    /// Ask for `preferred` from the first request on (early negotiation, §2.4): with the
    /// request itself, or with the last block of an upload (§2.7).
    early: bool,
    /// The next block request, encoded but waiting for an NSTART slot: (Message ID, bytes).
    pub(crate) parked: Option<(u16, Datagram)>,
}

/// What a response to one of our requests means.
#[derive(Debug)]
pub(crate) enum Step {
    /// The (whole) response: deliver it, the request is over.
    Deliver(Packet),
    /// The transfer goes on: send [`ClientTransfer::encode_next`].
    Next,
    /// The transfer broke off: the request fails.
    Fail(ExchangeError),
    /// A late duplicate of a block already received: nothing to do.
    Ignore,
}

/// Encodes the application's request for its first transmission. Returns the bytes and, if
/// the request became a block-wise transfer, its state: the body goes in Block1 blocks when it
/// is larger than the block size or the message would exceed `max` (the session's largest message), and Block2 is
/// added for early negotiation if configured.
pub(crate) fn first_request(
    out: &mut Outputs,
    config: &Config,
    max: usize,
    packet: &Packet,
    mtype: MessageType,
    mid: u16,
    token: &[u8],
) -> Result<(Datagram, Option<Box<ClientTransfer>>), Error> {
    let bw = &config.blockwise;
    let app_block2 = packet
        .get_first_option(CoapOption::Block2)
        .map(|v| Block::decode(v));
    let manual = packet.get_first_option(CoapOption::Block1).is_some()
        || app_block2.is_some_and(|b| b.map_or(true, |b| b.num != 0));
    let early = app_block2.is_some() || bw.early_negotiation;
    if manual || (!early && packet.payload.len() <= bw.block_size) {
        match out.encode_packet(packet, mtype, mid, token, max) {
            Err(Error::MessageTooLarge(_)) if !manual => {}
            result => return result.map(|bytes| (bytes, None)),
        }
    }
    let preferred = match app_block2 {
        Some(Ok(b)) => b.szx,
        _ => szx_of(bw.block_size),
    };
    let mut transfer = Box::new(ClientTransfer {
        template: Template::from_packet(packet, mtype),
        phase: Phase::Download {
            block: Block::new(0, false, preferred),
            body: Vec::new(),
            etag: None,
            restarts: 0,
        },
        preferred,
        early,
        parked: None,
    });
    if early && packet.payload.len() <= bw.block_size {
        match transfer.encode_next(out, max, mid, token) {
            Err(Error::MessageTooLarge(_)) => {}
            result => return result.map(|bytes| (bytes, Some(transfer))),
        }
    }
    let szx = szx_of(bw.block_size);
    let len = packet.payload.len();
    if len as u64 > (MAX_NUM + 1) << (szx + 4) {
        return Err(Error::MessageTooLarge(len));
    }
    transfer.phase = Phase::Upload {
        block: Block::new(0, true, szx),
        restarted: false,
    };
    let bytes = transfer.encode_next(out, max, mid, token)?;
    Ok((bytes, Some(transfer)))
}

/// What the response `msg` to our request means for its transfer (created here when a plain
/// request is answered with the first of several blocks). `request` is the request's first
/// transmission; `piggybacked` says whether `msg` came on the ACK of the block request just
/// sent (and so certainly answers it).
pub(crate) fn on_response(
    transfer: &mut Option<Box<ClientTransfer>>,
    config: &Config,
    request: &[u8],
    msg: &MessageView<'_>,
    piggybacked: bool,
) -> Step {
    let Some(t) = transfer else {
        // A plain request so far: the common case costs one look at the options.
        let Some(value) = msg.option(BLOCK2) else {
            return Step::Deliver(msg.to_packet());
        };
        let Ok(block2) = Block::decode(value) else {
            return Step::Fail(ExchangeError::UnexpectedBlock);
        };
        let Ok(req) = codec::parse(request) else {
            return Step::Deliver(msg.to_packet());
        };
        if !is_success(msg.header.code)
            || req.option(BLOCK1).is_some()
            || req.option(BLOCK2).is_some()
        {
            // An error's diagnostic, or the application doing block-wise itself.
            return Step::Deliver(msg.to_packet());
        }
        let preferred = szx_of(config.blockwise.block_size);
        let mut new = Box::new(ClientTransfer {
            template: Template::from_view(&req),
            phase: Phase::Download {
                block: Block::new(0, false, preferred),
                body: Vec::new(),
                etag: None,
                restarts: 0,
            },
            preferred,
            early: false,
            parked: None,
        });
        let step = new.download(config, msg, Some(block2), piggybacked);
        if matches!(step, Step::Next) {
            *transfer = Some(new);
        }
        return step;
    };
    if t.parked.is_some() {
        // The next block has not even been asked for: whatever this is, it is late.
        return Step::Ignore;
    }
    match t.phase {
        Phase::Upload { .. } => t.upload(config, msg, piggybacked),
        Phase::Download { .. } => {
            let block2 = match msg.option(BLOCK2).map(Block::decode) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(_)) => return Step::Fail(ExchangeError::UnexpectedBlock),
            };
            t.download(config, msg, block2, piggybacked)
        }
    }
}

impl ClientTransfer {
    /// Encodes the request for the current block. An upload block that does not fit in
    /// `max` (the session's largest message) is made smaller (and renumbered) until it does.
    pub(crate) fn encode_next(
        &mut self,
        out: &mut Outputs,
        max: usize,
        mid: u16,
        token: &[u8],
    ) -> Result<Datagram, Error> {
        match &mut self.phase {
            Phase::Upload { block, .. } => loop {
                let len = self.template.payload.len();
                let start = usize::try_from(block.offset())
                    .unwrap_or(usize::MAX)
                    .min(len);
                let end = start.saturating_add(block.size()).min(len);
                block.more = end < len;
                // In option number order: Block2 (23), Block1 (27), Size1 (60).
                let mut extra = [(0, Uint::new(0)); 3];
                let mut n = 0;
                if !block.more && self.early {
                    // Early negotiation of the response's block size, with the last block (§2.7).
                    extra[n] = (BLOCK2, Block::new(0, false, self.preferred).encode());
                    n += 1;
                }
                extra[n] = (BLOCK1, block.encode());
                n += 1;
                if block.num == 0 {
                    // The size indication (§4), with the first block.
                    extra[n] = (SIZE1, Uint::new(u32::try_from(len).unwrap_or(u32::MAX)));
                    n += 1;
                }
                let payload = &self.template.payload[start..end];
                match self
                    .template
                    .encode(out, mid, token, &extra[..n], payload, max)
                {
                    Err(Error::MessageTooLarge(_)) if block.szx > 0 => {
                        let offset = block.offset();
                        *block = Block::at(offset, true, block.szx - 1)
                            .ok_or(Error::MessageTooLarge(len))?;
                    }
                    result => return result,
                }
            },
            Phase::Download { block, .. } => {
                let extra = [(BLOCK2, block.encode())];
                self.template
                    .encode(out, mid, token, &extra, &self.template.payload, max)
            }
        }
    }

    /// A response while downloading block `block` (§2.4).
    fn download(
        &mut self,
        config: &Config,
        msg: &MessageView<'_>,
        block2: Option<Block>,
        piggybacked: bool,
    ) -> Step {
        let preferred = self.preferred;
        let Phase::Download {
            block,
            body,
            etag,
            restarts,
        } = &mut self.phase
        else {
            return Step::Fail(ExchangeError::UnexpectedBlock);
        };
        if !is_success(msg.header.code) {
            // An error answers the request: delivered as received.
            return Step::Deliver(msg.to_packet());
        }
        let Some(got) = block2 else {
            // A success without blocks: a complete representation after all.
            return Step::Deliver(final_response(msg));
        };
        let expected = body.len() as u64;
        let offset = got.offset();
        if offset != expected {
            return if offset < expected && !piggybacked {
                Step::Ignore
            } else {
                Step::Fail(ExchangeError::UnexpectedBlock)
            };
        }
        if got.more && msg.payload.len() != got.size() {
            return Step::Fail(ExchangeError::UnexpectedBlock);
        }
        let tag = msg.option(ETAG);
        if expected == 0 {
            *etag = tag.map(<[u8]>::to_vec);
        } else if tag.is_some_and(|t| Some(t) != etag.as_deref()) {
            // Another representation: never mix it with the blocks of the first (§2.4).
            if *restarts >= MAX_RESTARTS {
                return Step::Fail(ExchangeError::RepresentationChanged);
            }
            *restarts += 1;
            body.clear();
            *etag = None;
            *block = Block::new(0, false, block.szx);
            return Step::Next;
        }
        let max = config.blockwise.max_body_size;
        if let Some(size2) = msg.option(SIZE2).and_then(decode_uint) {
            if size2 as usize > max {
                return Step::Fail(ExchangeError::BodyTooLarge);
            }
            if expected == 0 {
                body.reserve(size2 as usize);
            }
        }
        if body.len() + msg.payload.len() > max {
            return Step::Fail(ExchangeError::BodyTooLarge);
        }
        body.extend_from_slice(msg.payload);
        if !got.more {
            let mut response = final_response(msg);
            response.payload = core::mem::take(body);
            return Step::Deliver(response);
        }
        match Block::at(body.len() as u64, false, got.szx.min(preferred)) {
            Some(next) => {
                *block = next;
                Step::Next
            }
            None => Step::Fail(ExchangeError::BodyTooLarge),
        }
    }

    /// A response while uploading block `block` (§2.5).
    fn upload(&mut self, config: &Config, msg: &MessageView<'_>, piggybacked: bool) -> Step {
        let Phase::Upload { block, restarted } = &mut self.phase else {
            return Step::Fail(ExchangeError::UnexpectedBlock);
        };
        let code = msg.header.code;
        let block1 = match msg.option(BLOCK1).map(Block::decode) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(_)) => return Step::Fail(ExchangeError::UnexpectedBlock),
        };
        if code == TOO_LARGE {
            // A smaller size in Block1 is a hint to try it (§2.9.3): start over, once.
            if let Some(b1) = block1.filter(|b| b.szx < block.szx && !*restarted) {
                *restarted = true;
                *block = Block::new(0, true, b1.szx);
                return Step::Next;
            }
            return Step::Deliver(final_response(msg));
        }
        if !is_success(code) {
            // 4.08 Request Entity Incomplete, 4.xx, 5.xx: the final answer (§2.9).
            return Step::Deliver(final_response(msg));
        }
        if let Some(b1) = block1 {
            // The block acknowledged, numbered as we sent it (§2.3).
            if b1.num != block.num {
                return if b1.num < block.num && !piggybacked {
                    Step::Ignore
                } else {
                    Step::Fail(ExchangeError::UnexpectedBlock)
                };
            }
        }
        let acknowledged = code == CONTINUE || block1.is_some();
        if block.more && acknowledged {
            // The next block, in the server's preferred size if it is smaller (§2.5).
            let next = block.offset() + block.size() as u64;
            let szx = block1.map_or(block.szx, |b| b.szx.min(block.szx));
            return match Block::at(next, true, szx) {
                Some(b) => {
                    *block = b;
                    Step::Next
                }
                None => Step::Fail(ExchangeError::SendFailed(SendErrorKind::TooBig)),
            };
        }
        if !block.more && msg.option(BLOCK2).is_some() {
            // The response body follows in blocks, asked for without Block1 and without the
            // request body (§2.7).
            let block2 = match msg.option(BLOCK2).map(Block::decode) {
                Some(Ok(b)) => b,
                _ => return Step::Fail(ExchangeError::UnexpectedBlock),
            };
            self.template.payload = Vec::new();
            self.phase = Phase::Download {
                block: Block::new(0, false, self.preferred),
                body: Vec::new(),
                etag: None,
                restarts: 0,
            };
            return self.download(config, msg, Some(block2), piggybacked);
        }
        // The final answer to the last block (or a success without Block1 to an earlier one:
        // the server did not take the body block-wise).
        Step::Deliver(final_response(msg))
    }
}

// =============================================================================================
// Server

/// What the engine keeps about an incoming request to shape its response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerBlocks {
    /// The request's Block2 option (control usage, §2.3): the block of the response to send.
    block2: Option<Block>,
    /// The request carried Size2 (a size request, §4).
    size2: bool,
    /// The last Block1 block of a reassembled request body, echoed in the response (§2.5).
    block1: Option<Block>,
}

/// An answer the engine gives for the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) code: u8,
    block1: Option<Block>,
    size1: Option<u32>,
}

impl Answer {
    fn code(code: u8) -> Answer {
        Answer {
            code,
            block1: None,
            size1: None,
        }
    }

    pub(crate) fn encode(
        &self,
        out: &mut Outputs,
        mtype: MessageType,
        mid: u16,
        token: &[u8],
    ) -> Datagram {
        let block1 = self.block1.map(Block::encode);
        let size1 = self.size1.map(Uint::new);
        let options = block1
            .iter()
            .map(|v| (BLOCK1, v.as_slice()))
            .chain(size1.iter().map(|v| (SIZE1, v.as_slice())));
        out.encode_parts(mtype, self.code, mid, token, options, &[], usize::MAX)
            .unwrap_or_else(|_| out.encode_simple(mtype, self.code, mid, token, &[]))
    }
}

/// What an incoming request means block-wise.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Give the application the request: `None` is the message as received, `Some` the
    /// request with its reassembled body.
    Deliver(Option<Packet>, ServerBlocks),
    /// The engine answers at once (2.31 Continue, 4.00, 4.02, 4.08, 4.13).
    Answer(Answer),
    /// A malformed Block option in a Non-confirmable request: reject it (RFC 7252 §5.4.1).
    Reject,
}

/// A request body being reassembled.
#[derive(Debug)]
struct Partial {
    /// Method and every option but the block ones, serialized: the request target (§2.5).
    key: Vec<u8>,
    body: Vec<u8>,
    expires: Instant,
}

/// The request bodies being reassembled from Block1 blocks on one session (§2.5).
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partials: Vec<Partial>,
}

fn request_key(msg: &MessageView<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.push(msg.header.code);
    for (n, v) in msg.options().filter(|(n, _)| !is_block_option(*n)) {
        key.extend_from_slice(&n.to_be_bytes());
        key.extend_from_slice(&(v.len() as u32).to_be_bytes());
        key.extend_from_slice(v);
    }
    key
}

impl Reassembly {
    pub(crate) fn len(&self) -> usize {
        self.partials.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.partials.iter().map(|p| p.expires).min()
    }

    /// Drops the partial bodies whose time is up (§2.5: EXCHANGE_LIFETIME after their latest
    /// block).
    pub(crate) fn expire(&mut self, now: Instant) {
        self.partials.retain(|p| p.expires > now);
    }

    /// Handles the Block options of a new (deduplicated) request; `expires` is when a partial
    /// body it leaves behind is dropped.
    pub(crate) fn on_request(
        &mut self,
        config: &Config,
        expires: Instant,
        msg: &MessageView<'_>,
    ) -> Inbound {
        let confirmable = msg.header.mtype == MessageType::Confirmable;
        let decode = |number| match msg.option(number).map(Block::decode) {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(BlockError::ReservedSize)) => Err(Inbound::Answer(Answer::code(BAD_REQUEST))),
            Some(Err(BlockError::TooLong)) if confirmable => {
                Err(Inbound::Answer(Answer::code(BAD_OPTION)))
            }
            Some(Err(BlockError::TooLong)) => Err(Inbound::Reject),
        };
        let block2 = match decode(BLOCK2) {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let block1 = match decode(BLOCK1) {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let mut blocks = ServerBlocks {
            block2: block2.map(|b| Block { more: false, ..b }),
            size2: msg.option(SIZE2).is_some(),
            block1: None,
        };
        let Some(b1) = block1 else {
            return Inbound::Deliver(None, blocks);
        };
        let max = config.blockwise.max_body_size;
        let key = request_key(msg);
        let index = self.partials.iter().position(|p| p.key == key);
        let too_large = Answer {
            code: TOO_LARGE,
            block1: None,
            size1: Some(u32::try_from(max).unwrap_or(u32::MAX)),
        };
        let announced = msg.option(SIZE1).and_then(decode_uint);
        let end = b1.offset() + msg.payload.len() as u64;
        let drop_partial = |partials: &mut Vec<Partial>| {
            if let Some(i) = index {
                partials.swap_remove(i);
            }
        };
        if b1.more && msg.payload.len() != b1.size() {
            // A non-final block must be exactly its size (§2.3).
            drop_partial(&mut self.partials);
            return Inbound::Answer(Answer::code(BAD_REQUEST));
        }
        if end > max as u64 || announced.is_some_and(|s| s as usize > max) {
            drop_partial(&mut self.partials);
            return Inbound::Answer(too_large);
        }
        blocks.block1 = Some(Block { more: false, ..b1 });
        if b1.num == 0 && !b1.more {
            // The whole body in one block: nothing to keep.
            drop_partial(&mut self.partials);
            return Inbound::Deliver(Some(packet_without(msg, &[BLOCK1, SIZE1])), blocks);
        }
        let i = if b1.num == 0 {
            // A new transfer, replacing an unfinished one to the same target (§2.5).
            let body = msg.payload.to_vec();
            match index {
                Some(i) => {
                    self.partials[i].body = body;
                    i
                }
                None if self.partials.len() >= config.limits.max_block_transfers => {
                    // No room to store another body now (§2.9.3).
                    return Inbound::Answer(Answer::code(TOO_LARGE));
                }
                None => {
                    self.partials.push(Partial { key, body, expires });
                    self.partials.len() - 1
                }
            }
        } else {
            match index {
                Some(i) if self.partials[i].body.len() as u64 == b1.offset() => {
                    self.partials[i].body.extend_from_slice(msg.payload);
                    i
                }
                _ => {
                    // Missing or out of order (§2.5, §2.9.2).
                    drop_partial(&mut self.partials);
                    return Inbound::Answer(Answer::code(INCOMPLETE));
                }
            }
        };
        self.partials[i].expires = expires;
        if b1.more {
            let ours = szx_of(config.blockwise.block_size);
            return Inbound::Answer(Answer {
                code: CONTINUE,
                block1: Some(Block::new(b1.num, true, b1.szx.min(ours))),
                size1: None,
            });
        }
        let partial = self.partials.swap_remove(i);
        let mut request = packet_without(msg, &[BLOCK1, SIZE1]);
        request.payload = partial.body;
        Inbound::Deliver(Some(request), blocks)
    }
}

/// Cuts the application's response to the block the request asked for, echoing Block1 for a
/// reassembled request body (§2.5). `None`: send the response as it is.
///
/// The response is sliced when the request carried Block2, or the body is larger than the
/// block size (the request's or ours, whichever is smaller), or the whole message would exceed
/// `max` (the session's largest message) (the block is then made smaller until it fits). Block 0 carries Size2
/// (and any block whose request asked for it, §4); a success sliced into several blocks
/// carries an ETag, the application's or one derived from the body. A block past the end is
/// answered with 4.02 Bad Option.
pub(crate) fn shape_response(
    config: &Config,
    max: usize,
    blocks: &ServerBlocks,
    token_len: usize,
    response: &Packet,
) -> Option<Packet> {
    let ours = szx_of(config.blockwise.block_size);
    let preferred = blocks.block2.map_or(ours, |b| b.szx.min(ours));
    let has = |o| response.get_first_option(o).is_some();
    let echo = blocks.block1.filter(|_| !has(CoapOption::Block1));
    // The response with Block1 echoed, if a request body was reassembled.
    let echoed = echo.map(|b| {
        let mut p = response.clone();
        p.add_option(CoapOption::Block1, b.encode().as_slice().to_vec());
        p
    });
    let base = echoed.as_ref().unwrap_or(response);
    let len = response.payload.len();
    let fits = |p: &Packet| encoded_len(p, token_len) <= max;
    let success = is_success(u8::from(response.header.code));
    let small = len <= size_of(preferred) && fits(base);
    if has(CoapOption::Block2) || (small && (blocks.block2.is_none() || !success)) {
        // Nothing to cut (or the application cut it itself).
        return echoed;
    }
    let offset = blocks.block2.map_or(0, |b| b.offset());
    if offset > 0 && offset >= len as u64 {
        let mut past = Packet::new();
        past.header.code = MessageClass::from(BAD_OPTION);
        return Some(past);
    }
    let etag = (success && !has(CoapOption::ETag)).then(|| body_etag(&response.payload));
    // Header and options only: each block copies just its slice of the body.
    let mut head = Packet::new();
    head.header = response.header.clone();
    for (&number, values) in response.options() {
        for v in values {
            head.add_option(CoapOption::from(number), v.clone());
        }
    }
    if let Some(b) = echo {
        head.add_option(CoapOption::Block1, b.encode().as_slice().to_vec());
    }
    let mut szx = preferred;
    loop {
        let block = Block::at(offset, false, szx)?;
        let start = offset as usize;
        let end = start.saturating_add(block.size()).min(len);
        let block = Block {
            more: end < len,
            ..block
        };
        let mut p = head.clone();
        p.add_option(CoapOption::Block2, block.encode().as_slice().to_vec());
        if (block.num == 0 || blocks.size2) && !has(CoapOption::Size2) {
            let total = Uint::new(u32::try_from(len).unwrap_or(u32::MAX));
            p.add_option(CoapOption::Size2, total.as_slice().to_vec());
        }
        if let Some(tag) = etag.filter(|_| block.more || block.num > 0) {
            p.add_option(CoapOption::ETag, tag.to_vec());
        }
        p.payload = response.payload[start..end].to_vec();
        if fits(&p) || szx == 0 {
            return Some(p);
        }
        szx -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn view_of(bytes: &[u8]) -> MessageView<'_> {
        codec::parse(bytes).expect("valid test message")
    }

    fn message(options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
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

    #[test]
    fn well_formed_block_options() {
        assert!(well_formed(&view_of(&message(&[], b""))));
        assert!(well_formed(&view_of(&message(&[(BLOCK2, &[0x16])], b""))));
        assert!(!well_formed(&view_of(&message(&[(BLOCK2, &[0x17])], b""))));
        assert!(!well_formed(&view_of(&message(
            &[(BLOCK1, &[0, 0, 0, 1])],
            b""
        ))));
        // Size options are elective: their shape does not matter here.
        assert!(well_formed(&view_of(&message(
            &[(SIZE1, &[1, 2, 3, 4, 5])],
            b""
        ))));
    }

    #[test]
    fn server_rejects_malformed_block_options_as_the_rfcs_say() {
        let config = Config::default();
        let mut table = Reassembly::default();
        let expires = Instant::from_secs(1);
        for (options, code) in [
            (&[(BLOCK1, &[0x0f][..])][..], BAD_REQUEST),
            (&[(BLOCK2, &[0x07][..])][..], BAD_REQUEST),
            (&[(BLOCK1, &[0, 0, 0, 0][..])][..], BAD_OPTION),
            (&[(BLOCK2, &[1, 2, 3, 4][..])][..], BAD_OPTION),
        ] {
            let bytes = message(options, b"x");
            match table.on_request(&config, expires, &view_of(&bytes)) {
                Inbound::Answer(a) => assert_eq!(a.code, code, "{options:?}"),
                other => panic!("{options:?}: {other:?}"),
            }
        }
        assert!(table.is_empty());
    }

    #[test]
    fn server_reassembles_in_order_and_refuses_gaps() {
        let config = Config::default();
        let mut table = Reassembly::default();
        let t = Instant::from_secs(1);
        let block = |num, more| Block::new(num, more, 0).encode();
        let b0 = block(0, true);
        let first = message(&[(BLOCK1, b0.as_slice())], &[1; 16]);
        match table.on_request(&config, t, &view_of(&first)) {
            Inbound::Answer(a) => {
                assert_eq!(a.code, CONTINUE);
                assert_eq!(a.block1, Some(Block::new(0, true, 0)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(table.len(), 1);
        // Block 2 before block 1: 4.08, and the partial body is gone.
        let b2 = block(2, false);
        let gap = message(&[(BLOCK1, b2.as_slice())], &[3; 5]);
        match table.on_request(&config, t, &view_of(&gap)) {
            Inbound::Answer(a) => assert_eq!(a.code, INCOMPLETE),
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
        // Again, in order.
        let _ = table.on_request(&config, t, &view_of(&first));
        let b1 = block(1, false);
        let last = message(&[(BLOCK1, b1.as_slice())], &[2; 5]);
        match table.on_request(&config, t, &view_of(&last)) {
            Inbound::Deliver(Some(p), blocks) => {
                assert_eq!(p.payload.len(), 21);
                assert!(p.get_option(CoapOption::Block1).is_none());
                assert_eq!(blocks.block1, Some(Block::new(1, false, 0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
    }

    #[test]
    fn server_slices_and_tags_large_responses() {
        let config = Config::default();
        let mut response = Packet::new();
        response.header.code = MessageClass::from(codec::code(2, 5));
        response.payload = (0..3000u32).map(|i| i as u8).collect();
        let first = shape_response(
            &config,
            config.max_message_size,
            &ServerBlocks::default(),
            4,
            &response,
        )
        .unwrap();
        let b2 = Block::decode(first.get_first_option(CoapOption::Block2).unwrap()).unwrap();
        assert_eq!(b2, Block::new(0, true, 6));
        assert_eq!(first.payload, response.payload[..1024]);
        assert_eq!(
            first
                .get_first_option(CoapOption::Size2)
                .map(|v| decode_uint(v)),
            Some(Some(3000))
        );
        let tag = first.get_first_option(CoapOption::ETag).cloned().unwrap();
        // The last block, asked for in 256-byte blocks.
        let asked = ServerBlocks {
            block2: Some(Block::new(11, false, 4)),
            ..ServerBlocks::default()
        };
        let last = shape_response(&config, config.max_message_size, &asked, 4, &response).unwrap();
        let b2 = Block::decode(last.get_first_option(CoapOption::Block2).unwrap()).unwrap();
        assert_eq!(b2, Block::new(11, false, 4));
        assert_eq!(last.payload, response.payload[2816..]);
        assert_eq!(last.get_first_option(CoapOption::ETag), Some(&tag));
        assert!(last.get_first_option(CoapOption::Size2).is_none());
        // Past the end.
        let past = ServerBlocks {
            block2: Some(Block::new(12, false, 4)),
            ..ServerBlocks::default()
        };
        let answer = shape_response(&config, config.max_message_size, &past, 4, &response).unwrap();
        assert_eq!(u8::from(answer.header.code), BAD_OPTION);
        // Small and not asked for: untouched.
        response.payload.truncate(10);
        assert!(shape_response(
            &config,
            config.max_message_size,
            &ServerBlocks::default(),
            4,
            &response
        )
        .is_none());
    }
}
