//! The message layer of CoAP over datagrams (RFC 7252 §4): Message IDs, Confirmable
//! messages and their retransmission, Acknowledgement and Reset, deduplication, and what
//! each message type means on arrival. Everything above it (exchanges, observe, block-wise)
//! deals in requests and responses.

use coap_lite::MessageType;

use super::*;
use crate::block::{self};
use crate::codec::MessageView;
use crate::error::Error;
use crate::event::{Event, ExchangeError, FailureReason, RequestId};
use crate::observe::ObserverRemoval;
use crate::outputs::Ctx;
use crate::time::{Duration, Instant};
use crate::transmit::{Datagram, SendErrorKind, TransmitId};

/// Why a Confirmable message of ours awaits its ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConPurpose {
    Request(RequestId),
    /// A separate response (RFC 7252 §5.2.2).
    Response,
    /// A ping: the application's (with its id) or a keepalive probe (None).
    Ping(Option<RequestId>),
    /// A notification to the observer with this token (RFC 7641 §4.5).
    Notification(Token),
}

/// A Confirmable message in retransmission (RFC 7252 §4.2).
#[derive(Debug)]
pub(super) struct PendingCon {
    pub(super) mid: u16,
    pub(super) bytes: Datagram,
    pub(super) purpose: ConPurpose,
    pub(super) first_sent: Instant,
    pub(super) retransmissions: u8,
    pub(super) timeout: Duration,
    pub(super) next_at: Instant,
    pub(super) last_transmit: TransmitId,
    pub(super) last_error: Option<SendErrorKind>,
}

impl Session {
    // ------------------------------------------------------------ what exchanges ask of it
    //
    // Exchanges encode their messages in RFC 7252's layout (the transport frames them) with
    // the Message ID the message layer gives, and hand them over with what they are.

    /// The Message ID the next message will carry; it is used up by [`Self::alloc_mid`]
    /// once the message is encoded.
    pub(super) fn peek_mid(&self) -> u16 {
        self.next_mid
    }

    /// Uses up a Message ID.
    pub(super) fn alloc_mid(&mut self) -> u16 {
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        mid
    }

    /// Sends one of our requests (a first block, a next block, a re-registration or a
    /// deregistration), encoded with Message ID `mid`: a CON is retransmitted until it is
    /// acknowledged or answered (the exchange `id` hears how it ended), a NON goes once and
    /// its transmit is returned, so that a failed send can be charged to the exchange.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        mid: u16,
        bytes: Datagram,
        confirmable: bool,
    ) -> Option<TransmitId> {
        if confirmable && !self.reliable() {
            self.send_con(now, ctx, mid, bytes, ConPurpose::Request(id));
            None
        } else {
            Some(self.send(ctx, mid, bytes))
        }
    }

    /// Stops whatever is still being done for requests `ids` (answered, ended, abandoned):
    /// their CONs are retransmitted no more.
    pub(super) fn forget_requests(&mut self, ids: &[RequestId]) {
        self.cons
            .retain(|c| !matches!(c.purpose, ConPurpose::Request(id) if ids.contains(&id)));
    }

    /// Ends the application's ping `id` if it is pending; whether it was.
    pub(super) fn cancel_ping(&mut self, id: RequestId) -> bool {
        if self.reliable() {
            return self.stream_cancel_ping(id);
        }
        let Some(i) = self
            .cons
            .iter()
            .position(|c| c.purpose == ConPurpose::Ping(Some(id)))
        else {
            return false;
        };
        self.cons.swap_remove(i);
        true
    }

    /// How the answer to a request goes (RFC 7252 §5.2): piggybacked on the ACK of a CON
    /// request whose Empty ACK has not gone out (with the request's Message ID), else as a
    /// separate CON while `max_confirmables` allows (a peer that never acknowledges cannot
    /// grow our state; §5.2.2 allows NON), else NON; a NON request gets a NON answer.
    pub(super) fn answer_kind(&self, ctx: &Ctx<'_>, inc: &Incoming) -> (MessageType, u16) {
        if inc.confirmable && inc.ack_at.is_some() {
            (MessageType::Acknowledgement, inc.mid)
        } else if inc.confirmable && self.other_confirmables() < ctx.config.limits.max_confirmables
        {
            (MessageType::Confirmable, self.next_mid)
        } else {
            (MessageType::NonConfirmable, self.next_mid)
        }
    }

    /// Sends an answer encoded as [`Self::answer_kind`] said to request `request_mid`.
    pub(super) fn send_answer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        request_mid: u16,
        mtype: MessageType,
        bytes: Datagram,
    ) {
        match mtype {
            MessageType::Acknowledgement => {
                self.dedup.set_reply(request_mid, bytes.clone());
                self.send(ctx, request_mid, bytes);
            }
            MessageType::Confirmable => {
                let mid = self.alloc_mid();
                self.send_con(now, ctx, mid, bytes, ConPurpose::Response);
            }
            _ => {
                let mid = self.alloc_mid();
                self.send(ctx, mid, bytes);
            }
        }
    }

    /// Answers a request on the application's behalf (an error, 2.31 Continue, a further
    /// block of a kept response): piggybacked on the ACK of a CON request, and kept for its
    /// duplicates; a NON request gets a NON of its own. `encode` builds the answer as the
    /// given type with the given Message ID. False when nothing was written: on a connection
    /// whose writes are backlogged (`Limits::max_unwritten_bytes`) the request goes
    /// unanswered, as a Ping does, or a peer that sends requests and reads nothing would
    /// have the engine queue answers without end.
    pub(super) fn reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: codec::Header,
        encode: impl FnOnce(&mut crate::outputs::Outputs, MessageType, u16) -> Datagram,
    ) -> bool {
        if self.reliable() && self.write_backlog(ctx) {
            log::debug!(
                "{}: writes backlogged; a request left unanswered",
                self.peer
            );
            return false;
        }
        if request.mtype == MessageType::Confirmable {
            let mid = request.message_id;
            let ack = encode(ctx.out, MessageType::Acknowledgement, mid);
            self.reply_cached(ctx, mid, ack);
        } else {
            let own = self.alloc_mid();
            let non = encode(ctx.out, MessageType::NonConfirmable, own);
            self.send(ctx, own, non);
        }
        true
    }

    /// Rejects a request that cannot be processed at all: Reset (RFC 7252 §4.2, §4.3), or
    /// on a stream, which has no Reset, 4.02 Bad Option.
    pub(super) fn refuse(&mut self, ctx: &mut Ctx<'_>, request: &MessageView<'_>) {
        if self.reliable() {
            let token = request.token;
            self.reply(ctx, request.header, |out, mtype, mid| {
                out.encode_simple(mtype, codec::code(4, 2), mid, token, b"")
            });
            return;
        }
        self.reject(ctx, request.header.mtype, request.header.message_id);
    }

    /// The Empty ACK of a CON request the application is slow to answer (§5.2.2): its answer
    /// becomes a separate response.
    pub(super) fn acknowledge(&mut self, ctx: &mut Ctx<'_>, mid: u16) {
        let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
        self.reply_cached(ctx, mid, ack);
    }

    /// Whether a CON notification to the observer with `token` still awaits its ACK.
    pub(super) fn notification_in_flight(&self, token: Token) -> bool {
        self.cons
            .iter()
            .any(|c| c.purpose == ConPurpose::Notification(token))
    }

    /// Sends a notification encoded with Message ID `mid`: a CON one takes the place of one
    /// still in flight to the same observer, carrying on with its retransmission counter and
    /// timeout (RFC 7641 §4.5.2).
    pub(super) fn send_notification(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        token: Token,
        mid: u16,
        bytes: Datagram,
        confirmable: bool,
    ) {
        self.alloc_mid();
        if self.reliable() {
            self.send(ctx, mid, bytes);
            return;
        }
        let in_flight = self
            .cons
            .iter()
            .position(|c| c.purpose == ConPurpose::Notification(token));
        match in_flight {
            Some(ci) => {
                let transmit = self.send(ctx, mid, bytes.clone());
                let c = &mut self.cons[ci];
                c.mid = mid;
                c.bytes = bytes;
                c.next_at = now + c.timeout;
                c.last_transmit = transmit;
                c.last_error = None;
            }
            None if confirmable => {
                self.send_con(now, ctx, mid, bytes, ConPurpose::Notification(token));
            }
            None => {
                self.send(ctx, mid, bytes);
            }
        }
    }

    /// Stops retransmitting a notification to the observer with `token` (it deregistered).
    pub(super) fn drop_notification(&mut self, token: Token) {
        self.cons
            .retain(|c| c.purpose != ConPurpose::Notification(token));
    }

    // ------------------------------------------------------------ RFC 7252 §4 itself

    /// Sends a new CON and starts its retransmission timer with the randomized initial timeout
    /// of RFC 7252 §4.2.
    pub(super) fn send_con(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        mid: u16,
        bytes: Datagram,
        purpose: ConPurpose,
    ) {
        let base = ctx.config.transmission.ack_timeout;
        let spread = ctx.derived.initial_spread;
        let timeout = base + Duration::from_micros(ctx.rng.up_to(spread.as_micros()));
        let last_transmit = self.send(ctx, mid, bytes.clone());
        self.cons.push(PendingCon {
            mid,
            bytes,
            purpose,
            first_sent: now,
            retransmissions: 0,
            timeout,
            next_at: now + timeout,
            last_transmit,
            last_error: None,
        });
    }

    /// Confirmables of ours other than requests (which `max_exchanges` bounds): pings and
    /// separate responses.
    pub(super) fn other_confirmables(&self) -> usize {
        self.cons
            .iter()
            .filter(|c| !matches!(c.purpose, ConPurpose::Request(_)))
            .count()
    }

    pub(super) fn probe_outstanding(&self) -> bool {
        if let Some(s) = self.stream_ref() {
            return s.probe_outstanding();
        }
        self.cons
            .iter()
            .any(|c| c.purpose == ConPurpose::Ping(None))
    }

    pub(crate) fn ping(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Result<RequestId, Error> {
        // On a stream the Pings in flight take the place of Confirmable messages.
        let in_flight = match self.stream_ref() {
            Some(s) => s.pings_in_flight(),
            None => self.other_confirmables(),
        };
        if in_flight >= ctx.config.limits.max_confirmables || self.write_backlog(ctx) {
            return Err(Error::QueueFull);
        }
        let id = RequestId(new_id(ctx, self.key.slot));
        if self.reliable() {
            self.stream_ping(now, ctx, Some(id)); // RFC 8323 §5.4: 7.02 Ping
            return Ok(id);
        }
        let mid = self.alloc_mid();
        let bytes = ctx.out.encode_empty(MessageType::Confirmable, mid);
        self.send_con(now, ctx, mid, bytes, ConPurpose::Ping(Some(id)));
        Ok(id)
    }

    /// Handles a validated datagram from this session's peer.
    pub(crate) fn on_message(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        self.heard(now, ctx);
        let h = msg.header;
        match h.mtype {
            MessageType::Confirmable | MessageType::NonConfirmable if h.is_reserved_class() => {
                self.reject(ctx, h.mtype, h.message_id);
            }
            MessageType::Confirmable if h.is_empty() => {
                // CoAP ping (RFC 7252 §4.3): answered with Reset.
                let rst = ctx.out.encode_empty(MessageType::Reset, h.message_id);
                self.send(ctx, h.message_id, rst);
            }
            MessageType::NonConfirmable if h.is_empty() => {} // §4.3: NON must not be empty
            // An endpoint that is no server (without feature `server`) cannot process a
            // request at all: it rejects it (§4.2, §4.3).
            MessageType::Confirmable | MessageType::NonConfirmable
                if h.is_request() && !cfg!(feature = "server") =>
            {
                self.reject(ctx, h.mtype, h.message_id);
            }
            MessageType::Confirmable | MessageType::NonConfirmable if h.is_request() => {
                if self.duplicate(ctx, h.mtype, h.message_id) {
                    return;
                }
                self.remember(now, ctx, h.mtype, h.message_id);
                self.on_request(now, ctx, msg);
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let mid = h.message_id;
                if self.duplicate(ctx, h.mtype, mid) {
                    return;
                }
                self.remember(now, ctx, h.mtype, mid);
                let Some(index) = self.match_response(ctx, msg) else {
                    // No matching exchange, or a critical option we cannot honour: reject
                    // (§4.2, §5.3.2, §5.4.1), remembering the Reset for duplicates.
                    let rst = ctx.out.encode_empty(MessageType::Reset, mid);
                    self.reply_cached(ctx, mid, rst);
                    return;
                };
                if h.mtype == MessageType::Confirmable {
                    let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
                    self.reply_cached(ctx, mid, ack);
                }
                self.complete(now, ctx, index, msg);
            }
            // §4.2: an ACK carrying a request or a reserved class is rejected by ignoring it.
            MessageType::Acknowledgement if h.is_request() || h.is_reserved_class() => {}
            MessageType::Acknowledgement => self.on_ack(now, ctx, msg),
            // §4.2: a Reset must be empty; anything else is silently ignored.
            MessageType::Reset if !h.is_empty() => {}
            MessageType::Reset => self.on_reset(now, ctx, h.message_id),
        }
    }

    /// Rejects a message (§4.2/§4.3): Reset for a CON, and for a NON too (allowed, and it
    /// tells the sender at once), nothing otherwise.
    pub(super) fn reject(&mut self, ctx: &mut Ctx<'_>, mtype: MessageType, mid: u16) {
        if matches!(
            mtype,
            MessageType::Confirmable | MessageType::NonConfirmable
        ) {
            let rst = ctx.out.encode_empty(MessageType::Reset, mid);
            self.send(ctx, mid, rst);
        }
    }

    /// Returns true if `mid` was seen before (and re-sends the cached reply to a duplicate CON).
    pub(super) fn duplicate(&mut self, ctx: &mut Ctx<'_>, mtype: MessageType, mid: u16) -> bool {
        let Some(entry) = self.dedup.get(mid) else {
            return false;
        };
        if mtype == MessageType::Confirmable {
            if let Some(reply) = entry.reply.clone() {
                self.send(ctx, mid, reply);
            } else if let Some(inc) = self
                .incoming
                .iter_mut()
                .find(|i| i.mid == mid && i.ack_at.is_some())
            {
                // The peer retransmitted while the application is still working on it: each
                // duplicate CON should be acknowledged (§4.5), so the Empty ACK goes out now and
                // the answer becomes a separate response, which stops the retransmissions.
                inc.ack_at = None;
                let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
                self.reply_cached(ctx, mid, ack);
            }
        }
        true
    }

    pub(super) fn remember(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        mtype: MessageType,
        mid: u16,
    ) {
        let confirmable = mtype == MessageType::Confirmable;
        let lifetime = if confirmable {
            ctx.derived.exchange_lifetime
        } else {
            ctx.derived.non_lifetime
        };
        self.dedup.insert(
            mid,
            confirmable,
            now + lifetime,
            ctx.config.limits.max_dedup_entries,
            &mut ctx.out.pool,
        );
    }

    /// Sends a reply to a CON and caches it for duplicates.
    pub(super) fn reply_cached(&mut self, ctx: &mut Ctx<'_>, mid: u16, bytes: Datagram) {
        self.dedup.set_reply(mid, bytes.clone());
        self.send(ctx, mid, bytes);
    }

    pub(super) fn on_ack(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        let mid = msg.header.message_id;
        let Some(ci) = self.cons.iter().position(|c| c.mid == mid) else {
            return;
        };
        match self.cons[ci].purpose {
            // Without feature `client` there are no requests of ours.
            ConPurpose::Request(_) if !cfg!(feature = "client") => {}
            ConPurpose::Request(id) => {
                let Some(ei) = self.exchanges.iter().position(|e| e.id == id) else {
                    self.cons.swap_remove(ci);
                    return;
                };
                if msg.header.is_empty() {
                    self.cons.swap_remove(ci);
                    let e = &mut self.exchanges[ei];
                    e.acked = true;
                    e.response_deadline = Some(now + ctx.config.response_timeout);
                    self.pump(now, ctx);
                } else {
                    let config = ctx.config;
                    let token_ok = self.exchanges[ei].token.as_slice() == msg.token;
                    // A piggybacked response with the wrong token or an unknown critical option
                    // is rejected by ignoring it (§4.2, §5.4.1); the CON keeps retransmitting.
                    if token_ok
                        && msg
                            .unrecognized_critical(|n| is_known_critical(n, config))
                            .is_none()
                        && block::well_formed(msg, ctx.path)
                    {
                        self.complete(now, ctx, ei, msg);
                    }
                }
            }
            ConPurpose::Response => {
                self.cons.swap_remove(ci);
            }
            ConPurpose::Notification(token) => {
                self.cons.swap_remove(ci);
                let mut observers = self.observers.iter_mut();
                if let Some(o) = observers.find(|o| cfg!(feature = "observe") && o.token == token) {
                    o.confirmed = now;
                }
            }
            ConPurpose::Ping(id) => {
                // Some peers answer a ping with an Empty ACK instead of Reset; both prove life.
                let c = self.cons.swap_remove(ci);
                if let Some(id) = id {
                    ctx.out.event(Event::Pong {
                        id,
                        peer: self.peer,
                        rtt: now - c.first_sent,
                    });
                }
            }
        }
    }

    pub(super) fn on_reset(&mut self, now: Instant, ctx: &mut Ctx<'_>, mid: u16) {
        let peer = self.peer;
        if let Some(ci) = self.cons.iter().position(|c| c.mid == mid) {
            let c = self.cons.swap_remove(ci);
            match c.purpose {
                ConPurpose::Request(id) => {
                    self.end_exchange(ctx, id, ExchangeError::Reset);
                    self.pump(now, ctx);
                }
                ConPurpose::Response => {
                    log::debug!("{peer}: separate response rejected with Reset")
                }
                ConPurpose::Ping(Some(id)) => {
                    ctx.out.event(Event::Pong {
                        id,
                        peer,
                        rtt: now - c.first_sent,
                    });
                }
                ConPurpose::Ping(None) => {}
                ConPurpose::Notification(token) => {
                    self.remove_observer(ctx, token, ObserverRemoval::Reset);
                }
            }
        } else if let Some(token) = self
            .observers
            .iter()
            .find(|o| cfg!(feature = "observe") && o.recent.contains(mid))
            .map(|o| o.token)
        {
            // A Reset to a Non-confirmable notification (or to the registration's response).
            self.remove_observer(ctx, token, ObserverRemoval::Reset);
        } else if let Some(ei) = self
            .exchanges
            .iter()
            .position(|e| !e.confirmable && e.mid == mid)
        {
            let e = self.exchanges.swap_remove(ei);
            e.failed(ctx.out, peer, ExchangeError::Reset);
            self.pump(now, ctx);
        }
    }

    /// The adapter could not send transmit `id` (message `mid`). The message counts as lost:
    /// its normal retransmission schedule stands, so a dead link never causes a busy loop.
    pub(crate) fn on_send_failed(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: TransmitId,
        mid: Option<u16>,
        kind: SendErrorKind,
    ) -> Option<Ending> {
        if self.reliable() {
            // Nothing written after a failed write can be trusted to arrive in order.
            self.stream_written(id);
            return Some(self.stream_send_failed(kind));
        }
        let peer = self.peer;
        if let Some(ci) = self
            .cons
            .iter()
            .position(|c| Some(c.mid) == mid && c.last_transmit == id)
        {
            self.cons[ci].last_error = Some(kind);
            // A keepalive probe is never ended early: the next one would be due at once and
            // fail at once again (a busy loop on a path that rejects every send). It stays on
            // its backoff like any lost message; the keepalive deadline decides.
            if kind == SendErrorKind::TooBig && self.cons[ci].purpose != ConPurpose::Ping(None) {
                // Retransmitting the same bytes cannot succeed.
                let c = self.cons.swap_remove(ci);
                self.end_con(now, ctx, c.purpose, ExchangeError::SendFailed(kind));
            }
        } else if let Some(ei) = self
            .exchanges
            .iter()
            .position(|e| e.last_transmit == Some(id))
        {
            self.exchanges[ei].last_error = Some(kind);
            if kind == SendErrorKind::TooBig {
                let e = self.exchanges.swap_remove(ei);
                e.failed(ctx.out, peer, ExchangeError::SendFailed(kind));
                self.pump(now, ctx);
            }
        }
        if kind == SendErrorKind::Unreachable {
            self.unreachable_in_row += 1;
            if let Some(n) = ctx.config.fail_after_unreachable {
                if self.unreachable_in_row >= n {
                    return Some(Ending::Failed(FailureReason::Unreachable {
                        failures: self.unreachable_in_row,
                    }));
                }
            }
        }
        None
    }

    /// A CON of ours is given up: tell whoever waited for it.
    pub(super) fn end_con(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        purpose: ConPurpose,
        error: ExchangeError,
    ) {
        let peer = self.peer;
        match purpose {
            ConPurpose::Request(id) => {
                self.end_exchange(ctx, id, error);
                self.pump(now, ctx);
            }
            ConPurpose::Ping(Some(id)) => ctx.out.event(Event::PingFailed { id, peer, error }),
            ConPurpose::Ping(None) => {} // the keepalive deadline decides, not the probe
            ConPurpose::Response => log::debug!("{peer}: separate response never acknowledged"),
            ConPurpose::Notification(token) => {
                self.remove_observer(ctx, token, ObserverRemoval::NotAcknowledged);
            }
        }
    }

    pub(super) fn retransmit(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let max = ctx.config.transmission.max_retransmit;
        let mut i = 0;
        while i < self.cons.len() {
            if self.cons[i].next_at > now {
                i += 1;
                continue;
            }
            if self.cons[i].retransmissions < max {
                let (mid, bytes) = (self.cons[i].mid, self.cons[i].bytes.clone());
                let id = self.send(ctx, mid, bytes);
                let c = &mut self.cons[i];
                c.retransmissions += 1;
                c.timeout = c.timeout * 2;
                c.next_at = now + c.timeout;
                c.last_transmit = id;
                c.last_error = None;
                i += 1;
            } else {
                let c = self.cons.swap_remove(i);
                let error = c
                    .last_error
                    .map_or(ExchangeError::Timeout, ExchangeError::SendFailed);
                // Over a secure association, silence through every retransmission may mean
                // the peer no longer has the association (it restarted, RFC 6347 §4.2.8):
                // end the session so the next request starts a new handshake. Keepalive
                // probes are left to the keepalive deadline.
                #[cfg(feature = "security")]
                if self.channel.is_some()
                    && c.purpose != ConPurpose::Ping(None)
                    && self.liveness.last_heard() <= c.first_sent
                {
                    self.doom(Ending::Failed(FailureReason::NoResponse));
                }
                self.end_con(now, ctx, c.purpose, error);
            }
        }
    }
}
