//! The message layer of CoAP over TCP and TLS (RFC 8323): one connection per session, no
//! message types, Message IDs, retransmission or deduplication (the stream is reliable and
//! ordered), length-framed messages (§3.2), and signaling (§5): the Capabilities and
//! Settings Message sent first by both sides, Ping/Pong, Release and Abort.
//!
//! The exchange layer above is the datagram one: it encodes messages in RFC 7252's layout,
//! which this layer frames; received frames come back in that layout (Non-confirmable,
//! Message ID 0) for the same validating parser and the same request and response paths.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use coap_lite::MessageType;

use super::*;
use crate::codec::{self, MessageView};
use crate::event::{ConnectionFailure, Event, ExchangeError, FailureReason, RequestId};
use crate::framing::{self, Deframer};
use crate::outputs::{Ctx, TransmitRecord};
use crate::time::{Duration, Instant};
use crate::transmit::{SendErrorKind, TransmitId};

/// Signaling codes (RFC 8323 §5, class 7).
pub(crate) const CSM: u8 = codec::code(7, 1);
pub(crate) const PING: u8 = codec::code(7, 2);
pub(crate) const PONG: u8 = codec::code(7, 3);
pub(crate) const RELEASE: u8 = codec::code(7, 4);
pub(crate) const ABORT: u8 = codec::code(7, 5);

/// Signaling options (RFC 8323 §5.3–§5.6): their numbers depend on the signal.
const MAX_MESSAGE_SIZE: u16 = 2;
const BLOCK_WISE_TRANSFER: u16 = 4;
const CUSTODY: u16 = 2;
const ALTERNATIVE_ADDRESS: u16 = 2;
const HOLD_OFF: u16 = 4;
const BAD_CSM_OPTION: u16 = 2;

/// What one write counts for in `Limits::max_unwritten_bytes` besides its bytes: roughly its
/// transmit, record and buffer headers.
pub(crate) const WRITE_COST: usize = 64;

/// What the peer may send until its CSM says otherwise (RFC 8323 §5.3.1).
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 1152;

/// What the peer announced in its Capabilities and Settings Message (RFC 8323 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// The largest message it accepts (options, payload, token and header).
    pub(crate) max_message_size: usize,
    /// It does block-wise transfers, BERT included (§6).
    pub(crate) block_wise: bool,
}

/// One of our 7.02 Pings awaiting its Pong.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ping {
    token: Token,
    /// The application's ping, or None for a keepalive probe.
    id: Option<RequestId>,
    sent: Instant,
}

/// A session's connection (RFC 8323).
#[derive(Debug)]
pub(crate) struct Stream {
    /// The adapter reported the connection open (a client's; an accepted one is open at once).
    connected: bool,
    deframer: Deframer,
    /// The frame being handled, in RFC 7252's layout; kept to reuse its buffer.
    frame: Vec<u8>,
    /// The peer's CSM, once it came (it must be the first thing that does).
    peer: Option<Capabilities>,
    pings: Vec<Ping>,
    /// Writes handed to the adapter whose completion it has not reported: (id, bytes).
    writes: VecDeque<(TransmitId, usize)>,
    unwritten: usize,
    /// Frames made before the connection (and its security layer) opened: an application
    /// ping, a server's CSM; written after our CSM once it does. Requests wait in the
    /// exchange queue instead. A Ping's frame carries its token, and goes with the ping if
    /// it ends first (times out, is cancelled).
    early: Vec<(Option<Token>, Vec<u8>)>,
}

impl Stream {
    /// Drops the early frames of Pings no longer awaited.
    fn forget_early_pings(&mut self) {
        let pings = &self.pings;
        self.early.retain(|(ping, _)| {
            ping.as_ref()
                .is_none_or(|t| pings.iter().any(|p| &p.token == t))
        });
    }

    pub(crate) fn new(connected: bool) -> Self {
        Stream {
            connected,
            deframer: Deframer::default(),
            frame: Vec::new(),
            peer: None,
            pings: Vec::new(),
            writes: VecDeque::new(),
            unwritten: 0,
            early: Vec::new(),
        }
    }

    /// The peer's limits (RFC 8323 defaults until its CSM).
    pub(crate) fn capabilities(&self) -> Capabilities {
        self.peer.unwrap_or(Capabilities {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            block_wise: false,
        })
    }

    pub(super) fn is_idle(&self) -> bool {
        self.pings.is_empty()
    }

    pub(super) fn pings_in_flight(&self) -> usize {
        self.pings.len()
    }

    /// When an application ping times out.
    pub(super) fn deadline(&self, ctx_timeout: Duration) -> Option<Instant> {
        self.pings
            .iter()
            .filter(|p| p.id.is_some())
            .map(|p| p.sent + ctx_timeout)
            .min()
    }

    pub(super) fn probe_outstanding(&self) -> bool {
        self.pings.iter().any(|p| p.id.is_none())
    }
}

impl Session {
    /// The largest message (in RFC 7252's layout) this session may send: ours, or less on a
    /// connection whose peer accepts less (its Max-Message-Size counts the frame, whose
    /// header can be 2 bytes longer than the datagram header, RFC 8323 §5.3.1).
    pub(crate) fn send_limit(&self, config: &crate::config::Config) -> usize {
        match self.stream_ref() {
            Some(s) => config
                .max_message_size
                .min(s.capabilities().max_message_size.saturating_sub(2)),
            None => config.max_message_size,
        }
    }

    /// Block-wise on this session: BERT is valid input on any stream (we announce
    /// Block-Wise-Transfer in our CSM) and ours to send once the peer announced it too, when
    /// messages may carry at least two 1024-byte units: with room for one only, an ordinary
    /// SZX 6 block is the same on the wire and every implementation knows it (libcoap 4.3.1
    /// takes a one-unit BERT block for the whole body).
    pub(crate) fn block_path(&self, config: &crate::config::Config) -> crate::block::Path {
        match self.stream_ref() {
            Some(s) => crate::block::Path {
                stream: true,
                bert: s.capabilities().block_wise && self.send_limit(config) >= 2 * 1024 + 128,
            },
            None => crate::block::Path::default(),
        }
    }

    /// The connection, if the session has one; never without feature `tcp`, which makes
    /// every path behind it dead code for the compiler to drop.
    #[inline(always)]
    pub(super) fn stream_ref(&self) -> Option<&Stream> {
        #[cfg(feature = "tcp")]
        return self.stream.as_deref();
        #[cfg(not(feature = "tcp"))]
        None
    }

    #[inline(always)]
    fn stream_mut(&mut self) -> Option<&mut Stream> {
        #[cfg(feature = "tcp")]
        return self.stream.as_deref_mut();
        #[cfg(not(feature = "tcp"))]
        None
    }

    /// Writes a message (in RFC 7252's layout) as a frame. Returns the write's id.
    pub(super) fn stream_send(&mut self, ctx: &mut Ctx<'_>, message: &[u8]) -> TransmitId {
        self.stream_send_tagged(ctx, message, None)
    }

    /// [`stream_send`](Self::stream_send), `ping` the token of the Ping it is, if one.
    fn stream_send_tagged(
        &mut self,
        ctx: &mut Ctx<'_>,
        message: &[u8],
        ping: Option<Token>,
    ) -> TransmitId {
        let mut frame = Vec::with_capacity(message.len() + 2);
        framing::frame(&mut frame, message);
        if !self.ready() {
            if let Some(s) = self.stream_mut() {
                s.early.push((ping, frame));
            }
            return ctx.out.reserve_id();
        }
        self.write_frame(ctx, frame)
    }

    /// Hands one frame to the adapter (sealed first on a secure connection).
    fn write_frame(&mut self, ctx: &mut Ctx<'_>, frame: Vec<u8>) -> TransmitId {
        let record = TransmitRecord {
            peer: self.peer,
            session: Some(self.key),
            message_id: None,
        };
        // A write costs its bytes and the bookkeeping that comes with it here and in the
        // adapter, so that many tiny writes (Pongs) are bounded as surely as a few large ones.
        let len = frame.len() + WRITE_COST;
        #[cfg(feature = "security")]
        let id = if self.is_secure() {
            self.seal(ctx, record, &frame)
        } else {
            let frame = ctx.out.pool.make(&frame);
            ctx.out.send(record, frame)
        };
        #[cfg(not(feature = "security"))]
        let id = {
            let frame = ctx.out.pool.make(&frame);
            ctx.out.send(record, frame)
        };
        if let Some(s) = self.stream_mut() {
            s.writes.push_back((id, len));
            s.unwritten += len;
        }
        id
    }

    /// Whether the adapter is behind on writing: more than `limits.max_unwritten_bytes`
    /// handed to it unconfirmed. Application messages are refused until it catches up.
    pub(crate) fn write_backlog(&self, ctx: &Ctx<'_>) -> bool {
        self.stream_ref()
            .is_some_and(|s| s.unwritten > ctx.config.limits.max_unwritten_bytes)
    }

    /// The adapter reported write `id` done (or failed).
    pub(super) fn stream_written(&mut self, id: TransmitId) {
        let Some(s) = self.stream_mut() else { return };
        while let Some(&(w, len)) = s.writes.front() {
            if w > id {
                break;
            }
            s.writes.pop_front();
            s.unwritten = s.unwritten.saturating_sub(len);
        }
    }

    /// The connection is open (a client's, as the adapter reports): a secure one starts
    /// its handshake; a plain one can carry messages at once. A report for a connection
    /// already open (again, or one we accepted) changes nothing.
    pub(crate) fn stream_connected(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Ending> {
        let s = self.stream_mut()?;
        if core::mem::replace(&mut s.connected, true) {
            return None;
        }
        #[cfg(feature = "security")]
        if !self.channel_open() {
            return self.start_channel(now, ctx);
        }
        self.stream_open(now, ctx);
        None
    }

    /// Messages can flow (the connection is open, and so is its security layer if it has
    /// one): our CSM goes first (RFC 8323 §5.3), then what was waiting for it.
    pub(crate) fn stream_open(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let Some(s) = self.stream_mut() else { return };
        let early = core::mem::take(&mut s.early);
        self.send_csm(ctx);
        for (_, frame) in early {
            self.write_frame(ctx, frame);
        }
        self.pump(now, ctx);
    }

    /// The connection is open (always true of a datagram session).
    pub(super) fn stream_ready(&self) -> bool {
        self.stream_ref().is_none_or(|s| s.connected)
    }

    /// Our Capabilities and Settings Message: the largest message we accept, and that we do
    /// block-wise transfers.
    pub(crate) fn send_csm(&mut self, ctx: &mut Ctx<'_>) {
        let max = (ctx.config.max_message_size as u32).to_be_bytes();
        let max = strip(&max);
        let options = [(MAX_MESSAGE_SIZE, max), (BLOCK_WISE_TRANSFER, &[][..])];
        let bytes = ctx.out.encode_parts(
            MessageType::NonConfirmable,
            CSM,
            0,
            &[],
            options.into_iter(),
            &[],
            usize::MAX,
        );
        if let Ok(bytes) = bytes {
            self.stream_send(ctx, &bytes);
        }
    }

    /// A 7.02 Ping (the application's with its id, or a keepalive probe).
    pub(super) fn stream_ping(&mut self, now: Instant, ctx: &mut Ctx<'_>, id: Option<RequestId>) {
        let token = Token::random(ctx, 4);
        let bytes =
            ctx.out
                .encode_simple(MessageType::NonConfirmable, PING, 0, token.as_slice(), &[]);
        self.stream_send_tagged(ctx, &bytes, Some(token));
        if let Some(s) = self.stream_mut() {
            s.pings.push(Ping {
                token,
                id,
                sent: now,
            });
        }
    }

    pub(super) fn stream_cancel_ping(&mut self, id: RequestId) -> bool {
        let Some(s) = self.stream_mut() else {
            return false;
        };
        let before = s.pings.len();
        s.pings.retain(|p| p.id != Some(id));
        s.forget_early_pings();
        s.pings.len() != before
    }

    /// Application pings without a Pong within the response timeout fail.
    pub(super) fn stream_expire_pings(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let timeout = ctx.config.response_timeout;
        let peer = self.peer;
        let Some(s) = self.stream_mut() else { return };
        s.pings.retain(|p| match p.id {
            Some(id) if p.sent + timeout <= now => {
                ctx.out.event(Event::PingFailed {
                    id,
                    peer,
                    error: ExchangeError::Timeout,
                });
                false
            }
            _ => true,
        });
        s.forget_early_pings();
    }

    /// Ends the application's pings with `error` (the session ends).
    pub(super) fn stream_end_pings(&mut self, ctx: &mut Ctx<'_>, error: ExchangeError) {
        let peer = self.peer;
        let Some(s) = self.stream_mut() else { return };
        for p in s.pings.drain(..) {
            if let Some(id) = p.id {
                ctx.out.event(Event::PingFailed { id, peer, error });
            }
        }
    }

    /// Bytes that arrived on the connection (after the security layer, if any).
    pub(crate) fn stream_input(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
    ) -> Option<Ending> {
        // A peer may send up to RFC 8323's default before our CSM reaches it (§5.3.1), so
        // that much is always accepted, whatever we announce.
        let max = ctx.config.max_message_size.max(DEFAULT_MAX_MESSAGE_SIZE);
        let s = self.stream_mut()?;
        s.deframer.push(bytes);
        let mut frame = core::mem::take(&mut s.frame);
        let mut ending = None;
        while let Some(s) = self.stream_mut() {
            match s.deframer.next(max, &mut frame) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    log::debug!("{}: {e}; connection aborted", self.peer);
                    let bad = matches!(e, framing::FramingError::TooLong { .. });
                    ending = Some(self.abort(
                        ctx,
                        None,
                        if bad {
                            "message too large"
                        } else {
                            "bad framing"
                        },
                    ));
                    break;
                }
            }
            let Ok(msg) = codec::parse(&frame) else {
                ending = Some(self.abort(ctx, None, "malformed message"));
                break;
            };
            if let Some(e) = self.on_frame(now, ctx, &msg) {
                ending = Some(e);
                break;
            }
        }
        if let Some(s) = self.stream_mut() {
            s.frame = frame;
        }
        ending
    }

    /// One frame from the peer.
    fn on_frame(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        msg: &MessageView<'_>,
    ) -> Option<Ending> {
        let code = msg.header.code;
        let csm_known = self.stream_ref().is_some_and(|s| s.peer.is_some());
        if !csm_known && code != CSM {
            // §5.3: "Each endpoint MUST send a CSM as its first message."
            return Some(self.abort(ctx, None, "the first message was not a CSM"));
        }
        self.heard(now, ctx);
        // Anything heard answers a keepalive probe: the peer is alive. A probe left waiting
        // for a Pong with its token would block every later probe for good, and a peer that
        // answers with another token (libcoap 4.3.1's Pongs have an empty one) would then
        // see its session fail `interval + timeout` after the first Pong.
        if let Some(s) = self.stream_mut() {
            s.pings.retain(|p| p.id.is_some());
        }
        if msg.header.code_class() == 7 {
            return self.on_signal(now, ctx, msg);
        }
        if msg.header.is_empty() {
            return None; // §3.4: an empty message can always be sent, and is ignored
        }
        if msg.header.is_request() {
            self.on_request(now, ctx, msg);
        } else if msg.header.is_response() {
            if let Some(index) = self.match_response(ctx, msg) {
                self.complete(now, ctx, index, msg);
            }
            // An unexpected response is dropped: there is no Reset on a stream.
        }
        None
    }

    fn on_signal(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        msg: &MessageView<'_>,
    ) -> Option<Ending> {
        let code = msg.header.code;
        match code {
            CSM => {
                let mut caps =
                    self.stream_ref()
                        .map(|s| s.capabilities())
                        .unwrap_or(Capabilities {
                            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                            block_wise: false,
                        });
                for (number, value) in msg.options() {
                    match number {
                        MAX_MESSAGE_SIZE if value.len() <= 4 => {
                            caps.max_message_size = uint(value) as usize;
                        }
                        BLOCK_WISE_TRANSFER if value.is_empty() => caps.block_wise = true,
                        n if n % 2 == 1 => {
                            // §5.3: an unknown critical CSM option ends the connection.
                            return Some(self.abort(
                                ctx,
                                Some(n),
                                "unsupported critical CSM option",
                            ));
                        }
                        _ => {}
                    }
                }
                if let Some(s) = self.stream_mut() {
                    s.peer = Some(caps);
                }
                None
            }
            PING => {
                if self.write_backlog(ctx) {
                    // A peer that pings without reading what we write would make us queue
                    // Pongs without end: unanswered, its Ping only times out at its end.
                    log::debug!("{}: Ping left unanswered: writes backlogged", self.peer);
                    return None;
                }
                let custody = msg.option(CUSTODY).is_some();
                let options = [(CUSTODY, &[][..])];
                let n = usize::from(custody);
                let bytes = ctx.out.encode_parts(
                    MessageType::NonConfirmable,
                    PONG,
                    0,
                    msg.token,
                    options[..n].iter().copied(),
                    &[],
                    usize::MAX,
                );
                if let Ok(bytes) = bytes {
                    self.stream_send(ctx, &bytes);
                }
                None
            }
            PONG => {
                let peer = self.peer;
                let s = self.stream_mut()?;
                // libcoap (4.3.1) answers every Ping with an empty token rather than the
                // Ping's (RFC 8323 §5.4); a stream keeps order, so such a Pong answers the
                // oldest Ping outstanding. `pings` is in the order they were written.
                let i = s
                    .pings
                    .iter()
                    .position(|p| p.token.as_slice() == msg.token)
                    .or_else(|| (msg.token.is_empty() && !s.pings.is_empty()).then_some(0))?;
                let p = s.pings.remove(i);
                if let Some(id) = p.id {
                    ctx.out.event(Event::Pong {
                        id,
                        peer,
                        rtt: now - p.sent,
                    });
                }
                None
            }
            RELEASE => {
                let alternative_address = msg
                    .option(ALTERNATIVE_ADDRESS)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                let hold_off = msg
                    .option(HOLD_OFF)
                    .filter(|v| v.len() <= 3)
                    .map(|v| Duration::from_secs(u64::from(uint(v))));
                ctx.out.event(Event::Released {
                    peer: self.peer,
                    alternative_address,
                    hold_off,
                });
                Some(Ending::Closed(crate::event::CloseReason::Released))
            }
            ABORT => {
                let bad_csm_option = msg
                    .option(BAD_CSM_OPTION)
                    .filter(|v| v.len() <= 2)
                    .map(|v| uint(v) as u16);
                Some(Ending::Failed(FailureReason::Connection(
                    ConnectionFailure::AbortedByPeer { bad_csm_option },
                )))
            }
            // Unknown signals are ignored, as unknown elective options are.
            _ => None,
        }
    }

    /// Aborts the connection (RFC 8323 §5.6): a 7.05 Abort saying why, then the adapter is
    /// asked to close it.
    pub(super) fn abort(
        &mut self,
        ctx: &mut Ctx<'_>,
        bad_csm_option: Option<u16>,
        diagnostic: &str,
    ) -> Ending {
        let number = bad_csm_option.map(|n| n.to_be_bytes());
        let options = number
            .as_ref()
            .map(|n| (BAD_CSM_OPTION, strip(n)))
            .into_iter();
        if let Ok(bytes) = ctx.out.encode_parts(
            MessageType::NonConfirmable,
            ABORT,
            0,
            &[],
            options,
            diagnostic.as_bytes(),
            usize::MAX,
        ) {
            self.stream_send(ctx, &bytes);
        }
        Ending::Failed(FailureReason::Connection(ConnectionFailure::Aborted {
            bad_csm_option,
        }))
    }

    /// Ends the connection in order (RFC 8323 §5.5): a 7.04 Release before it is closed.
    pub(crate) fn release(&mut self, ctx: &mut Ctx<'_>) {
        let bytes = ctx
            .out
            .encode_simple(MessageType::NonConfirmable, RELEASE, 0, &[], &[]);
        self.stream_send(ctx, &bytes);
    }

    /// A write failed: the connection is broken.
    pub(super) fn stream_send_failed(&mut self, kind: SendErrorKind) -> Ending {
        Ending::Failed(FailureReason::Connection(ConnectionFailure::WriteFailed(
            kind,
        )))
    }
}

/// An unsigned option value (RFC 7252 §3.2), big-endian without leading zero bytes.
fn uint(value: &[u8]) -> u32 {
    value.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
}

/// `bytes` without leading zeros: the shortest encoding of an unsigned option value.
fn strip(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}
