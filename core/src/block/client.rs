//! The client side of block-wise transfers (RFC 7959 §2.4, §2.5, §2.7): a request whose
//! body goes in Block1 blocks, a response reassembled from Block2 blocks, on one exchange.

use alloc::boxed::Box;
use alloc::vec::Vec;

use coap_lite::{CoapOption, MessageType, Packet};

use super::*;
use crate::codec::{self, MessageView};
use crate::config::Config;
use crate::error::Error;
use crate::event::ExchangeError;
use crate::outputs::{Ctx, Outputs};
use crate::transmit::{Datagram, SendErrorKind};

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

    /// What the template's options take on the wire, at most (each with a 5-byte header).
    fn options_len(&self) -> usize {
        self.options.iter().map(|(_, v)| v.len() + 5).sum()
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
        out.encode_with(max, |buf| {
            codec::begin(buf, self.mtype, self.code, mid, token, payload.len())?;
            let mut previous = 0;
            // A merge rather than a sort: no sorting code in the firmware.
            let mut extra = extra.iter().peekable();
            for (number, value) in &self.options {
                while let Some((n, v)) = extra.next_if(|(n, _)| n < number) {
                    codec::push_option(buf, &mut previous, *n, v.as_slice())?;
                }
                codec::push_option(buf, &mut previous, *number, value)?;
            }
            for (n, v) in extra {
                codec::push_option(buf, &mut previous, *n, v.as_slice())?;
            }
            codec::push_payload(buf, payload);
            Ok(())
        })
    }
}

/// Where a client transfer stands.
#[derive(Debug)]
enum Phase {
    /// Sending the request body in Block1 blocks (RFC 7959 §2.5); `block` is the one in flight,
    /// `len` its payload length (a BERT block's is any number of 1024-byte units).
    Upload {
        block: Block,
        restarted: bool,
        len: usize,
    },
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
    /// The session's transport: a stream allows BERT.
    path: Path,
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
/// is larger than the block size (on a datagram path) or the message would exceed the
/// session's largest message, and Block2 is added for early negotiation if configured.
pub(crate) fn first_request(
    ctx: &mut Ctx<'_>,
    packet: &Packet,
    mtype: MessageType,
    mid: u16,
    token: &[u8],
) -> Result<(Datagram, Option<Box<ClientTransfer>>), Error> {
    let (out, config, max, path) = (&mut *ctx.out, ctx.config, ctx.max_message_size, ctx.path);
    if !cfg!(feature = "blockwise") {
        // The application does block-wise itself, if at all: a body must fit one message.
        return out
            .encode_packet(packet, mtype, mid, token, max)
            .map(|bytes| (bytes, None));
    }
    let bw = &config.blockwise;
    let app_block2 = packet
        .get_first_option(CoapOption::Block2)
        .map(|v| Block::decode_on(v, path));
    let manual = packet.get_first_option(CoapOption::Block1).is_some()
        || app_block2.is_some_and(|b| b.map_or(true, |b| b.num != 0));
    let early = app_block2.is_some() || bw.early_negotiation;
    // On a stream a message is limited by its size, not cut at the block size (RFC 8323).
    let whole = packet.payload.len() <= bw.block_size || path.stream();
    if manual || (!early && whole) {
        match out.encode_packet(packet, mtype, mid, token, max) {
            Err(Error::MessageTooLarge(_)) if !manual => {}
            result => return result.map(|bytes| (bytes, None)),
        }
    }
    let ours = path.ours(bw.block_size);
    let preferred = match app_block2 {
        Some(Ok(b)) => b.szx,
        _ => ours,
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
        path,
    });
    if early && whole {
        match transfer.encode_next(out, max, mid, token) {
            Err(Error::MessageTooLarge(_)) => {}
            result => return result.map(|bytes| (bytes, Some(transfer))),
        }
    }
    let len = packet.payload.len();
    if len as u64 > (MAX_NUM + 1) << (ours.min(MAX_SZX) + 4) {
        return Err(Error::MessageTooLarge(len));
    }
    transfer.phase = Phase::Upload {
        block: Block::new(0, true, ours),
        restarted: false,
        len: 0,
    };
    let bytes = transfer.encode_next(out, max, mid, token)?;
    Ok((bytes, Some(transfer)))
}

/// The key of an encoded request's target (method and every option but the block ones): two
/// requests with the same key would share the server's block-wise state for it.
pub(crate) fn target_key(request: &[u8]) -> Option<u64> {
    let msg = codec::parse(request).ok()?;
    let mut key = Vec::with_capacity(64);
    key.push(msg.header.code);
    for (n, v) in msg.options().filter(|(n, _)| !is_block_option(*n)) {
        push_option(&mut key, n, v);
    }
    Some(u64::from_be_bytes(body_etag(&key)))
}

fn push_option(key: &mut Vec<u8>, number: u16, value: &[u8]) {
    key.extend_from_slice(&number.to_be_bytes());
    key.extend_from_slice(&(value.len() as u32).to_be_bytes());
    key.extend_from_slice(value);
}

/// What the response `msg` to our request means for its transfer (created here when a plain
/// request is answered with the first of several blocks). `request` is the request's first
/// transmission; `piggybacked` says whether `msg` came on the ACK of the block request just
/// sent (and so certainly answers it).
pub(crate) fn on_response(
    transfer: &mut Option<Box<ClientTransfer>>,
    config: &Config,
    path: Path,
    request: &[u8],
    msg: &MessageView<'_>,
    piggybacked: bool,
) -> Step {
    if !cfg!(feature = "blockwise") {
        return Step::Deliver(msg.to_packet());
    }
    let Some(t) = transfer else {
        // A plain request so far: the common case costs one look at the options.
        let Some(value) = msg.option(BLOCK2) else {
            return Step::Deliver(msg.to_packet());
        };
        let Ok(block2) = Block::decode_on(value, path) else {
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
        let preferred = path.ours(config.blockwise.block_size);
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
            path,
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
            let block2 = match msg.option(BLOCK2).map(|v| Block::decode_on(v, path)) {
                None => None,
                Some(Ok(b)) => Some(b),
                Some(Err(_)) => return Step::Fail(ExchangeError::UnexpectedBlock),
            };
            t.download(config, msg, block2, piggybacked)
        }
    }
}

impl ClientTransfer {
    /// Whether the transfer needs the server's state for its request target to itself: a
    /// body going up in Block1 blocks (the server reassembles one per target, §2.5), or the
    /// answer to a request that must not run twice coming down in Block2 blocks (the server
    /// keeps one such answer per target, §2.6). Another request to the target must wait.
    pub(crate) fn holds_target(&self) -> bool {
        match self.phase {
            Phase::Upload { .. } => true,
            Phase::Download { .. } => !matches!(self.template.code, 1 | 5),
        }
    }

    /// The key of the transfer's request target (method and every option but the block
    /// ones), as [`target_key`] computes it.
    pub(crate) fn target(&self) -> u64 {
        let mut key = Vec::with_capacity(64);
        key.push(self.template.code);
        for (n, v) in &self.template.options {
            push_option(&mut key, *n, v);
        }
        u64::from_be_bytes(body_etag(&key))
    }

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
            Phase::Upload {
                block, len: sent, ..
            } => {
                let len = self.template.payload.len();
                // A BERT block takes as many 1024-byte units as the message allows (RFC 8323
                // §6): a first guess from the options' size, one unit less until it fits.
                let mut units = if block.is_bert() {
                    let overhead = 4 + token.len() + 32 + self.template.options_len();
                    (max.saturating_sub(overhead) / 1024).clamp(1, MAX_BERT_UNITS)
                } else {
                    1
                };
                loop {
                    let start = usize::try_from(block.offset())
                        .unwrap_or(usize::MAX)
                        .min(len);
                    let size = if block.is_bert() {
                        units * 1024
                    } else {
                        block.size()
                    };
                    let end = start.saturating_add(size).min(len);
                    block.more = end < len;
                    // In option number order: Block2 (23), Block1 (27), Size1 (60).
                    let mut extra = [(0, Uint::new(0)); 3];
                    let mut n = 0;
                    if !block.more && self.early {
                        // Early negotiation of the response's block size, with the last block
                        // (§2.7).
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
                        Err(Error::MessageTooLarge(_)) if block.is_bert() && units > 1 => {
                            units -= 1;
                        }
                        Err(Error::MessageTooLarge(_)) if block.szx > 0 => {
                            let offset = block.offset();
                            let smaller = block.szx.min(MAX_SZX + 1) - 1;
                            *block = Block::at(offset, true, smaller)
                                .ok_or(Error::MessageTooLarge(len))?;
                        }
                        Ok(bytes) => {
                            *sent = end - start;
                            return Ok(bytes);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
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
        if !got.holds(msg.payload.len()) {
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
        match Block::at(
            body.len() as u64,
            false,
            self.path.negotiate(got.szx, preferred),
        ) {
            Some(next) => {
                *block = next;
                Step::Next
            }
            None => Step::Fail(ExchangeError::BodyTooLarge),
        }
    }

    /// A response while uploading block `block` (§2.5).
    fn upload(&mut self, config: &Config, msg: &MessageView<'_>, piggybacked: bool) -> Step {
        let path = self.path;
        let Phase::Upload {
            block,
            restarted,
            len: sent,
        } = &mut self.phase
        else {
            return Step::Fail(ExchangeError::UnexpectedBlock);
        };
        let code = msg.header.code;
        let block1 = match msg.option(BLOCK1).map(|v| Block::decode_on(v, path)) {
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
            let next = block.offset() + *sent as u64;
            let szx = block1.map_or(block.szx, |b| path.negotiate(b.szx, block.szx));
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
            let block2 = match msg.option(BLOCK2).map(|v| Block::decode_on(v, path)) {
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
