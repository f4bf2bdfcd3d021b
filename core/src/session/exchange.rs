//! Our requests (RFC 7252 §5): tokens, the NSTART queue, matching responses to requests,
//! response timeouts, cancellation; one terminal event per request.

use alloc::boxed::Box;
use alloc::vec::Vec;

use coap_lite::{MessageType, Packet};

use super::*;
use crate::block::{self, ClientTransfer};
use crate::codec::MessageView;
use crate::error::Error;
use crate::event::{Event, ExchangeError, RequestId};
use crate::observe::Observation;
use crate::outputs::{Ctx, Outputs};
use crate::time::Instant;
use crate::transmit::{Datagram, SendErrorKind, TransmitId};

/// One of our requests awaiting its response.
#[derive(Debug)]
pub(super) struct ClientExchange {
    pub(super) id: RequestId,
    pub(super) token: Token,
    pub(super) mid: u16,
    pub(super) confirmable: bool,
    /// For a CON: the ACK arrived (the response will be separate). NON requests never are.
    pub(super) acked: bool,
    /// Set once no retransmission is pending: from a NON's sending, from a CON's Empty ACK.
    pub(super) response_deadline: Option<Instant>,
    /// A NON request's send failure (a CON's is kept on its `PendingCon`).
    pub(super) last_error: Option<SendErrorKind>,
    pub(super) last_transmit: Option<TransmitId>,
    /// Set for an observation (RFC 7641): the exchange outlives its first response.
    pub(super) observe: Option<alloc::boxed::Box<Observation>>,
    /// The request's first transmission, from which further Block2 requests are derived.
    pub(super) request: Datagram,
    /// A block-wise transfer (RFC 7959) in progress.
    pub(super) block: Option<Box<ClientTransfer>>,
    /// The exchange's owner. `None`: the application, which gets its one terminal event.
    /// `Some`: the observation whose notification's further blocks it fetches (RFC 7959
    /// §2.6); its outcome feeds that observation, never the application, and no application
    /// call finds it (see [`ClientExchange::failed`] and [`Session::complete`]).
    pub(super) fetch: Option<Fetch>,
}

/// The notification a fetch completes: for which observation, its sequence number and when
/// its first block arrived.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fetch {
    pub(super) observation: RequestId,
    pub(super) seq: u32,
    pub(super) at: Instant,
    /// The first block's ETag: a body that ends with another one is a newer representation,
    /// whose own notification is on its way (RFC 7959 §2.6).
    pub(super) etag: Option<Token>,
}

impl ClientExchange {
    /// Tells the exchange's owner that it ended with `error`. The application gets its one
    /// terminal event; a block fetch belongs to its observation, which goes on without that
    /// notification (the application never knew the fetch's id, so no event may name it).
    pub(super) fn failed(&self, out: &mut Outputs, peer: SocketAddr, error: ExchangeError) {
        match self.fetch {
            None => out.event(Event::RequestFailed {
                id: self.id,
                peer,
                error,
            }),
            Some(f) => log::debug!(
                "{peer}: the blocks of notification {} could not be fetched: {error}",
                f.seq
            ),
        }
    }

    /// Outstanding in the sense of NSTART (RFC 7252 §4.7): a CON not yet acknowledged, or a
    /// request still expecting a response that is not a separate one after an ACK.
    pub(super) fn outstanding(&self) -> bool {
        !self.acked
    }
}

/// A request waiting for an NSTART slot, already encoded.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) id: RequestId,
    pub(super) token: Token,
    pub(super) mid: u16,
    pub(super) confirmable: bool,
    pub(super) bytes: Datagram,
    pub(super) observe: Option<alloc::boxed::Box<Observation>>,
    pub(super) block: Option<Box<ClientTransfer>>,
}

impl Session {
    /// Queues or sends a request. The packet's code and type were validated by the endpoint.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        packet: &Packet,
        observe: Option<alloc::boxed::Box<Observation>>,
    ) -> Result<RequestId, Error> {
        let limits = &ctx.config.limits;
        if self.queue.len() >= limits.max_queued_requests || self.write_backlog(ctx) {
            return Err(Error::QueueFull);
        }
        let token = if packet.get_token().is_empty() {
            self.fresh_token(ctx)?
        } else {
            let t = Token::from_slice(packet.get_token()).ok_or(Error::TokenTooLong)?;
            if self.token_in_use(&t) {
                return Err(Error::TokenInUse);
            }
            t
        };
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let mtype = if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let mid = self.peek_mid();
        let (bytes, block) = block::first_request(ctx, packet, mtype, mid, token.as_slice())?;
        self.alloc_mid();
        let id = RequestId(new_id(ctx, self.key.slot));
        self.queue.push(Queued {
            id,
            token,
            mid,
            confirmable,
            bytes,
            observe,
            block,
        });
        self.last_activity = now;
        self.pump(now, ctx);
        Ok(id)
    }

    pub(super) fn token_in_use(&self, t: &Token) -> bool {
        self.exchanges.iter().any(|e| e.token == *t) || self.queue.iter().any(|q| q.token == *t)
    }

    pub(super) fn fresh_token(&mut self, ctx: &mut Ctx<'_>) -> Result<Token, Error> {
        let len = ctx.config.token_length;
        if len == 0 {
            // Empty tokens are told apart by sending only one such request at a time.
            return Ok(Token {
                len: 0,
                bytes: [0; 8],
            });
        }
        for _ in 0..16 {
            let t = Token::random(ctx, len);
            if !self.token_in_use(&t) {
                return Ok(t);
            }
        }
        Err(Error::TokenInUse)
    }

    /// Sends queued requests while NSTART and the exchange cap allow.
    pub(super) fn pump(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if !cfg!(feature = "client") || !self.ready() {
            return; // requests wait for the handshake (bounded by max_queued_requests)
        }
        // Requests and further blocks wait while the adapter has not written what it was
        // given (`on_send_ok` pumps again).
        if self.write_backlog(ctx) {
            return;
        }
        if cfg!(feature = "blockwise") {
            self.unpark(now, ctx);
        }
        loop {
            if self.write_backlog(ctx) {
                return;
            }
            let outstanding = self.exchanges.iter().filter(|e| e.outstanding()).count();
            if outstanding >= ctx.config.transmission.nstart
                || self.exchanges.len() >= ctx.config.limits.max_exchanges
            {
                return;
            }
            let Some(head) = self.queue.first() else {
                return;
            };
            if head.token.len == 0 && self.exchanges.iter().any(|e| e.token.len == 0) {
                return;
            }
            // A server keeps one request body being reassembled (RFC 7959 §2.5) and one
            // answer of a request that must not run twice (§2.6) per target: a request to a
            // target a transfer holds would replace that state, so it waits.
            let mut head_key = None;
            for e in self
                .exchanges
                .iter()
                .filter(|_| cfg!(feature = "blockwise"))
            {
                if let Some(t) = e.block.as_deref().filter(|t| t.holds_target()) {
                    let key = *head_key.get_or_insert_with(|| block::target_key(&head.bytes));
                    if key == Some(t.target()) {
                        return;
                    }
                }
            }
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            let mut exchange = ClientExchange {
                id: q.id,
                token: q.token,
                mid: q.mid,
                confirmable: q.confirmable,
                acked: false,
                response_deadline: None,
                last_error: None,
                last_transmit: None,
                observe: q.observe,
                request: q.bytes.clone(),
                block: q.block,
                fetch: None,
            };
            exchange.last_transmit =
                self.send_request(now, ctx, q.id, q.mid, q.bytes, q.confirmable);
            // On a stream nothing is acknowledged (NSTART does not apply, RFC 8323 §2): the
            // response is awaited from the start.
            exchange.acked = self.reliable();
            if !q.confirmable || self.reliable() {
                exchange.response_deadline = Some(now + ctx.config.response_timeout);
            }
            self.exchanges.push(exchange);
        }
    }

    /// Ends one of our requests or pings early. Returns false if it is not pending here.
    pub(crate) fn cancel(&mut self, ctx: &mut Ctx<'_>, id: RequestId, now: Instant) -> bool {
        let peer = self.peer;
        if let Some(i) = self.queue.iter().position(|q| q.id == id) {
            self.queue.remove(i);
        } else if let Some(i) = self
            .exchanges
            .iter()
            .position(|e| e.id == id && e.fetch.is_none())
        {
            self.exchanges.swap_remove(i);
            self.forget_requests(&[id]);
            if cfg!(all(feature = "observe", feature = "blockwise")) {
                self.drop_fetches(id);
            }
        } else if self.cancel_ping(id) {
            ctx.out.event(Event::PingFailed {
                id,
                peer,
                error: ExchangeError::Cancelled,
            });
            return true;
        } else {
            return false;
        }
        ctx.out.event(Event::RequestFailed {
            id,
            peer,
            error: ExchangeError::Cancelled,
        });
        self.pump(now, ctx);
        true
    }

    /// The exchange a response belongs to (by token, RFC 7252 §5.3.2), if it is one we can
    /// take: None for no such exchange, or an unknown critical option or malformed Block
    /// option, which the message layer rejects (§5.4.1).
    pub(super) fn match_response(&self, ctx: &Ctx<'_>, msg: &MessageView<'_>) -> Option<usize> {
        if !cfg!(feature = "client") {
            return None; // no requests of ours: every response is unexpected
        }
        let config = ctx.config;
        let index = self
            .exchanges
            .iter()
            .position(|e| e.token.as_slice() == msg.token)?;
        let acceptable = msg
            .unrecognized_critical(|n| is_known_critical(n, config))
            .is_none()
            && block::well_formed(msg, ctx.path);
        acceptable.then_some(index)
    }

    /// Delivers a response to exchange `index` and frees its slot (unless it is a notification
    /// that keeps an observation going).
    pub(super) fn complete(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        msg: &MessageView<'_>,
    ) {
        if cfg!(feature = "observe")
            && self.exchanges[index].observe.is_some()
            && self.notification(now, ctx, index, msg)
        {
            return;
        }
        let Some(response) = self.block_response(now, ctx, index, msg) else {
            return; // a block-wise transfer goes on, broke off, or this block was stale
        };
        let e = self.exchanges.swap_remove(index);
        // A response also acknowledges a CON request whose ACK was lost (§5.2.2).
        self.forget_requests(&[e.id]);
        // Nothing holds the request's bytes now but the adapter, if it still does.
        ctx.out.pool.recycle(e.request);
        self.last_activity = now;
        // Only an observation's block fetch has an owner other than the application.
        match e
            .fetch
            .filter(|_| cfg!(all(feature = "observe", feature = "blockwise")))
        {
            Some(fetch) => self.fetched(ctx, fetch, response),
            None => ctx.out.event(Event::Response {
                id: e.id,
                peer: self.peer,
                response,
            }),
        }
        self.pump(now, ctx);
    }

    /// Ends exchange `id`, whose CON was given up or reset, and tells its owner.
    pub(super) fn end_exchange(&mut self, ctx: &mut Ctx<'_>, id: RequestId, error: ExchangeError) {
        let peer = self.peer;
        // `remove`, not `swap_remove`: the exchanges keep their order, as with `retain`.
        match self.exchanges.iter().position(|e| e.id == id) {
            Some(i) => self.exchanges.remove(i).failed(ctx.out, peer, error),
            None => ctx.out.event(Event::RequestFailed { id, peer, error }),
        }
    }

    pub(super) fn expire_exchanges(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let peer = self.peer;
        let mut ended = Vec::new();
        self.exchanges.retain(|e| {
            if e.response_deadline.is_some_and(|t| t <= now) {
                let error = e
                    .last_error
                    .map_or(ExchangeError::Timeout, ExchangeError::SendFailed);
                e.failed(ctx.out, peer, error);
                ended.push(e.id);
                false
            } else {
                true
            }
        });
        if !ended.is_empty() {
            // Nothing of an ended exchange may go on (a CON of it could fail again later).
            self.forget_requests(&ended);
            self.pump(now, ctx);
        }
    }
}
