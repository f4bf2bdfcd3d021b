//! The server side of block-wise transfers (RFC 7959 §2.3–§2.5): request bodies
//! reassembled from Block1 blocks, responses cut to the Block2 block asked for.

use alloc::sync::Arc;
use alloc::vec::Vec;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};

use super::*;
use crate::codec::MessageView;
use crate::config::Config;
use crate::outputs::Outputs;
use crate::slim::SlimVec;
use crate::time::Instant;
use crate::transmit::Datagram;

/// What the engine keeps about an incoming request to shape its response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerBlocks {
    /// The request's Block2 option (control usage, §2.3): the block of the response to send.
    block2: Option<Block>,
    /// The request carried Size2 (a size request, §4).
    size2: bool,
    /// The last Block1 block of a reassembled request body, echoed in the response (§2.5).
    block1: Option<Block>,
    /// For a request that must not run twice (not GET or FETCH): its target's key, under
    /// which a response cut into blocks is kept for the requests of its further blocks.
    cache: Option<u64>,
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
        let answer = out.encode_with(usize::MAX, |buf| {
            codec::begin(buf, mtype, self.code, mid, token, 0)?;
            let mut previous = 0;
            if let Some(b) = self.block1 {
                codec::push_option(buf, &mut previous, BLOCK1, b.encode().as_slice())?;
            }
            if let Some(size) = self.size1 {
                codec::push_option(buf, &mut previous, SIZE1, Uint::new(size).as_slice())?;
            }
            Ok(())
        });
        answer.unwrap_or_else(|_| out.encode_simple(mtype, self.code, mid, token, &[]))
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
    /// A further block of a response kept for a request that must not run again: answer with
    /// this response, cut as `ServerBlocks` says (RFC 7959 §2.6).
    Serve(ServerBlocks, Arc<Packet>),
}

/// Whether `response` is a block with more to come (its Block2 option's M bit).
pub(crate) fn more_blocks(response: &Packet) -> bool {
    response
        .get_first_option(CoapOption::Block2)
        .and_then(|v| {
            Block::decode_on(
                v,
                Path {
                    stream: true,
                    bert: false,
                },
            )
            .ok()
        })
        .is_some_and(|b| b.more)
}

/// A response cut into blocks, kept for the requests of its further blocks.
#[derive(Debug)]
struct Kept {
    key: u64,
    response: Arc<Packet>,
    expires: Instant,
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
    partials: SlimVec<Partial>,
    /// Responses to POST, PUT, ... cut into blocks (oldest first): their further blocks are
    /// served from here rather than by running the request again, which would repeat its
    /// effect (RFC 7959 §2.6). They share `max_block_transfers` with `partials`, which take
    /// precedence.
    kept: SlimVec<Kept>,
}

impl Reassembly {
    /// Frees the memory of whichever of its lists are empty; true if there was any.
    pub(crate) fn release_if_empty(&mut self) -> bool {
        // Without feature `blockwise` it stays empty (`on_request` files nothing), and the
        // `cfg!`s here and below let the compiler see that.
        cfg!(feature = "blockwise")
            && (self.partials.release_if_empty() | self.kept.release_if_empty())
    }
}

/// GET and FETCH can be asked again for each block (RFC 7959 §2.4); other methods cannot.
fn is_safe(code: u8) -> bool {
    matches!(code, 1 | 5)
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
        if !cfg!(feature = "blockwise") {
            return 0;
        }
        self.partials.len() + self.kept.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        !cfg!(feature = "blockwise") || (self.partials.is_empty() && self.kept.is_empty())
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        if !cfg!(feature = "blockwise") {
            return None;
        }
        let partials = self.partials.iter().map(|p| p.expires);
        partials.chain(self.kept.iter().map(|k| k.expires)).min()
    }

    /// Keeps `response` if it was cut into blocks (`first` is what went out: with Block2 and
    /// more to come) for a request that must not run twice, until `expires`.
    pub(crate) fn keep(
        &mut self,
        config: &Config,
        blocks: &ServerBlocks,
        first: Option<&Packet>,
        response: &Packet,
        expires: Instant,
    ) {
        let Some(key) = blocks.cache.filter(|_| cfg!(feature = "blockwise")) else {
            return;
        };
        self.kept.retain(|k| k.key != key);
        if !first.is_some_and(more_blocks) {
            return;
        }
        while self.len() >= config.limits.max_block_transfers && !self.kept.is_empty() {
            self.kept.remove(0);
        }
        if self.len() < config.limits.max_block_transfers {
            self.kept.push(Kept {
                key,
                response: Arc::new(response.clone()),
                expires,
            });
        }
    }

    /// Drops the partial bodies whose time is up (§2.5: EXCHANGE_LIFETIME after their latest
    /// block).
    pub(crate) fn expire(&mut self, now: Instant) {
        if !cfg!(feature = "blockwise") {
            return;
        }
        self.partials.retain(|p| p.expires > now);
        self.kept.retain(|k| k.expires > now);
    }

    /// Handles the Block options of a new (deduplicated) request; `expires` is when a partial
    /// body it leaves behind is dropped.
    pub(crate) fn on_request(
        &mut self,
        config: &Config,
        path: Path,
        expires: Instant,
        msg: &MessageView<'_>,
    ) -> Inbound {
        if !cfg!(feature = "blockwise") {
            // Block options are the application's business, like any other.
            return Inbound::Deliver(None, ServerBlocks::default());
        }
        let confirmable = msg.header.mtype == MessageType::Confirmable;
        let decode = |number| match msg.option(number).map(|v| Block::decode_on(v, path)) {
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
        let key = request_key(msg);
        let mut blocks = ServerBlocks {
            block2: block2.map(|b| Block { more: false, ..b }),
            size2: msg.option(SIZE2).is_some(),
            block1: None,
            cache: (!is_safe(msg.header.code)).then(|| u64::from_be_bytes(body_etag(&key))),
        };
        if let Some(cache) = blocks.cache {
            match block2 {
                // A further block of a response we kept: never run the request again.
                Some(b2) if b2.num > 0 && block1.is_none() => {
                    if let Some(k) = self.kept.iter().find(|k| k.key == cache) {
                        return Inbound::Serve(blocks, k.response.clone());
                    }
                    if msg.payload.is_empty() {
                        // A further block of an answer no longer kept (expired, evicted, or
                        // never cut into blocks): running the request again would repeat its
                        // effect with an empty body. What the server lacks is the request
                        // body, as 4.08 says (§2.9.2); the client may start over.
                        return Inbound::Answer(Answer::code(INCOMPLETE));
                    }
                }
                // A new request to the target: its answer replaces the one kept.
                _ => self.kept.retain(|k| k.key != cache),
            }
        }
        let Some(b1) = block1 else {
            return Inbound::Deliver(None, blocks);
        };
        let max = config.blockwise.max_body_size;
        let index = self.partials.iter().position(|p| p.key == key);
        let too_large = Answer {
            code: TOO_LARGE,
            block1: None,
            size1: Some(u32::try_from(max).unwrap_or(u32::MAX)),
        };
        let announced = msg.option(SIZE1).and_then(decode_uint);
        let end = b1.offset() + msg.payload.len() as u64;
        let drop_partial = |partials: &mut SlimVec<Partial>| {
            if let Some(i) = index {
                partials.swap_remove(i);
            }
        };
        if !b1.holds(msg.payload.len()) {
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
            return Inbound::Deliver(Some(msg.packet_without(&[BLOCK1, SIZE1])), blocks);
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
                None if self.len() >= config.limits.max_block_transfers => {
                    // A body being received matters more than a response kept.
                    self.kept.remove(0);
                    self.partials.push(Partial { key, body, expires });
                    self.partials.len() - 1
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
                block1: Some(Block::new(b1.num, true, path.negotiate(b1.szx, ours))),
                size1: None,
            });
        }
        let partial = self.partials.swap_remove(i);
        let mut request = msg.packet_without(&[BLOCK1, SIZE1]);
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
    path: Path,
    blocks: &ServerBlocks,
    token_len: usize,
    response: &Packet,
) -> Option<Packet> {
    if !cfg!(feature = "blockwise") {
        return None; // sent as it is, if it fits one message
    }
    let ours = path.ours(config.blockwise.block_size);
    let preferred = blocks.block2.map_or(ours, |b| path.negotiate(b.szx, ours));
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
    // On a stream a message is limited by its size, not cut at the block size (RFC 8323).
    let small = (len <= size_of(preferred) || path.stream()) && fits(base);
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
    // A BERT block takes as many 1024-byte units as the message allows (RFC 8323 §6): a
    // first guess from the options' size, one unit less until it fits.
    let mut units =
        (max.saturating_sub(encoded_len(&head, token_len) + 32) / 1024).clamp(1, MAX_BERT_UNITS);
    loop {
        let block = Block::at(offset, false, szx)?;
        let start = offset as usize;
        let size = if block.is_bert() {
            units * 1024
        } else {
            block.size()
        };
        let end = start.saturating_add(size).min(len);
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
        if block.is_bert() && units > 1 {
            units -= 1;
        } else {
            szx = szx.min(MAX_SZX + 1) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{message, view_of};

    #[cfg(feature = "blockwise")]
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
            match table.on_request(&config, Path::default(), expires, &view_of(&bytes)) {
                Inbound::Answer(a) => assert_eq!(a.code, code, "{options:?}"),
                other => panic!("{options:?}: {other:?}"),
            }
        }
        assert!(table.is_empty());
    }

    #[cfg(feature = "blockwise")]
    #[test]
    fn server_reassembles_in_order_and_refuses_gaps() {
        let config = Config::default();
        let mut table = Reassembly::default();
        let t = Instant::from_secs(1);
        let block = |num, more| Block::new(num, more, 0).encode();
        let b0 = block(0, true);
        let first = message(&[(BLOCK1, b0.as_slice())], &[1; 16]);
        match table.on_request(&config, Path::default(), t, &view_of(&first)) {
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
        match table.on_request(&config, Path::default(), t, &view_of(&gap)) {
            Inbound::Answer(a) => assert_eq!(a.code, INCOMPLETE),
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
        // Again, in order.
        let _ = table.on_request(&config, Path::default(), t, &view_of(&first));
        let b1 = block(1, false);
        let last = message(&[(BLOCK1, b1.as_slice())], &[2; 5]);
        match table.on_request(&config, Path::default(), t, &view_of(&last)) {
            Inbound::Deliver(Some(p), blocks) => {
                assert_eq!(p.payload.len(), 21);
                assert!(p.get_option(CoapOption::Block1).is_none());
                assert_eq!(blocks.block1, Some(Block::new(1, false, 0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(table.is_empty());
    }

    #[cfg(feature = "blockwise")]
    #[test]
    fn server_slices_and_tags_large_responses() {
        let config = Config::default();
        let mut response = Packet::new();
        response.header.code = MessageClass::from(codec::code(2, 5));
        response.payload = (0..3000u32).map(|i| i as u8).collect();
        let first = shape_response(
            &config,
            config.max_message_size,
            Path::default(),
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
        let last = shape_response(
            &config,
            config.max_message_size,
            Path::default(),
            &asked,
            4,
            &response,
        )
        .unwrap();
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
        let answer = shape_response(
            &config,
            config.max_message_size,
            Path::default(),
            &past,
            4,
            &response,
        )
        .unwrap();
        assert_eq!(u8::from(answer.header.code), BAD_OPTION);
        // Small and not asked for: untouched.
        response.payload.truncate(10);
        assert!(shape_response(
            &config,
            config.max_message_size,
            Path::default(),
            &ServerBlocks::default(),
            4,
            &response
        )
        .is_none());
    }
}
