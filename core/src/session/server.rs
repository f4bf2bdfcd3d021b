//! Requests from the peer (RFC 7252 §5): what the application is given, and how its answer
//! goes back (piggybacked, separate, or Non-confirmable), with the engine answering for it
//! where it must (unknown critical options, overload, block-wise continuations).

use coap_lite::{MessageType, Packet};

use super::*;
use crate::block::{self, ServerBlocks};
use crate::codec::MessageView;
use crate::error::Error;
use crate::event::{Event, IncomingRequestId};
use crate::observe::{self, ObserverRemoval, ResourceId};
use crate::outputs::Ctx;
use crate::time::Instant;

/// A request from the peer awaiting the application's response.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) id: IncomingRequestId,
    pub(super) mid: u16,
    pub(super) token: Token,
    pub(super) confirmable: bool,
    /// When the Empty ACK goes out if the application has not answered (CON only).
    pub(super) ack_at: Option<Instant>,
    pub(super) expires: Instant,
    /// The Observe option of a GET or FETCH: 0 registers, 1 deregisters (RFC 7641 §2).
    pub(super) observe: Option<u32>,
    /// What its response needs block-wise (RFC 7959).
    pub(super) block: ServerBlocks,
}

impl Session {
    /// Answers an incoming request: piggybacked if the Empty ACK has not gone out yet, else a
    /// separate CON response; a NON request gets a NON response (RFC 7252 §5.2). When
    /// `max_confirmables` separate responses already await their ACK, a further one goes as
    /// NON (which §5.2.2 allows), so a peer that never acknowledges cannot grow our state.
    pub(crate) fn respond(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: IncomingRequestId,
        response: &Packet,
        observe: Option<ResourceId>,
    ) -> Result<bool, Error> {
        let index = self
            .incoming
            .iter()
            .position(|i| i.id == id)
            .ok_or(Error::UnknownRequest)?;
        if self.write_backlog(ctx) {
            // The connection is not being written out: the answer can be tried again later.
            return Err(Error::QueueFull);
        }
        let inc = &self.incoming[index];
        // A registration is accepted only for a 2.xx answer and within the observer caps;
        // otherwise the response goes out without Observe, so the client knows (RFC 7641 §3.1).
        let register = observe.filter(|&resource| {
            if !cfg!(feature = "observe") {
                return false;
            }
            let known = self.observers.iter().any(|o| o.token == inc.token);
            let limits = &ctx.config.limits;
            inc.observe == Some(0)
                && u8::from(response.header.code) >> 5 == 2
                && (known || self.observers.len() < limits.max_observers)
                && (known || ctx.observe.count(resource) < limits.max_observers_per_resource)
        });
        let with_observe;
        let response = match register {
            Some(_) => {
                let mut p = response.clone();
                p.set_observe_value(ctx.observe.next_seq());
                with_observe = p;
                &with_observe
            }
            None => response,
        };
        let shaped = block::shape_response(
            ctx.config,
            ctx.max_message_size,
            ctx.path,
            &inc.block,
            inc.token.len as usize,
            response,
        );
        let whole = response;
        let response = shaped.as_ref().unwrap_or(response);
        let (mtype, mid) = self.answer_kind(ctx, inc);
        let bytes = ctx.out.encode_packet(
            response,
            mtype,
            mid,
            inc.token.as_slice(),
            ctx.max_message_size,
        )?;
        let inc = self.incoming.swap_remove(index);
        let expires = now + ctx.derived.exchange_lifetime;
        self.blocks
            .keep(ctx.config, &inc.block, shaped.as_ref(), whole, expires);
        self.last_activity = now;
        self.send_answer(now, ctx, inc.mid, mtype, bytes);
        if let Some(resource) = register {
            self.add_observer(now, ctx, resource, inc.token, mid);
        }
        Ok(register.is_some())
    }

    /// A request from the peer, past the message layer's deduplication.
    pub(super) fn on_request(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        let h = msg.header;
        if !cfg!(feature = "server") {
            self.refuse(ctx, msg); // a stream's requests come this way; see `on_message`
            return;
        }
        let mid = h.message_id;
        self.last_activity = now;
        let confirmable = h.mtype == MessageType::Confirmable;
        let config = ctx.config;
        if msg
            .unrecognized_critical(|n| is_known_critical(n, config))
            .is_some()
        {
            // §5.4.1: 4.02 for a CON request; a NON request is rejected.
            if confirmable {
                // The diagnostic payload (§5.5.2) is dropped if it would exceed the size limit.
                let diagnostic: &[u8] = b"unrecognized critical option";
                let fits = 5 + msg.token.len() + diagnostic.len() <= ctx.max_message_size;
                let payload = if fits { diagnostic } else { b"" };
                self.reply(ctx, h, |out, mtype, mid| {
                    out.encode_simple(mtype, BAD_OPTION, mid, msg.token, payload)
                });
            } else {
                self.refuse(ctx, msg);
            }
            return;
        }
        let Some(token) = Token::from_slice(msg.token) else {
            return;
        };
        let Some((request, block)) = self.block_request(now, ctx, msg) else {
            return; // answered by the engine (2.31 Continue, or a block-wise error)
        };
        if self.incoming.len() >= ctx.config.limits.max_pending_requests {
            // The application is not keeping up: answer for it rather than grow.
            self.reply(ctx, h, |out, mtype, mid| {
                out.encode_simple(mtype, SERVICE_UNAVAILABLE, mid, msg.token, b"")
            });
            return;
        }
        let (ack_at, lifetime) = if confirmable {
            (
                Some(now + ctx.config.empty_ack_delay),
                ctx.derived.exchange_lifetime,
            )
        } else {
            (None, ctx.derived.non_lifetime)
        };
        // Observe means something on GET and FETCH only (RFC 7641 §2, RFC 8132 §2.4).
        // Without feature `observe` the option is ignored: the client gets a plain response,
        // which tells it no observation was made (§3.1).
        let observe = match h.code {
            1 | 5 if cfg!(feature = "observe") => {
                msg.option(observe::OBSERVE).and_then(observe::value)
            }
            _ => None,
        };
        if observe == Some(1) {
            self.remove_observer(ctx, token, ObserverRemoval::Deregistered);
        }
        let id = IncomingRequestId(new_id(ctx, self.key.slot));
        self.incoming.push(Incoming {
            id,
            mid,
            token,
            confirmable,
            ack_at,
            expires: now + lifetime,
            observe,
            block,
        });
        ctx.out.event(Event::Request {
            id,
            peer: self.peer,
            request: request.unwrap_or_else(|| msg.to_packet()),
        });
    }

    /// Sends Empty ACKs for requests the application is slow to answer (§5.2.2) and forgets
    /// requests it never answered.
    pub(super) fn serve_pending(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let mut i = 0;
        while i < self.incoming.len() {
            let inc = &mut self.incoming[i];
            if inc.expires <= now {
                log::debug!(
                    "{}: request {:?} never answered; forgotten",
                    self.peer,
                    inc.id
                );
                self.incoming.swap_remove(i);
                continue;
            }
            if inc.ack_at.is_some_and(|t| t <= now) {
                inc.ack_at = None;
                let mid = inc.mid;
                self.acknowledge(ctx, mid);
            }
            i += 1;
        }
    }

    /// The Block options of an incoming request (see `Reassembly::on_request`): the request
    /// to give the application (None: as received) and what its response needs, or None when
    /// the engine has answered it (2.31 Continue for a non-final Block1 block, or an error).
    pub(super) fn block_request(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        msg: &MessageView<'_>,
    ) -> Option<(Option<Packet>, ServerBlocks)> {
        let expires = now + ctx.derived.exchange_lifetime;
        match self.blocks.on_request(ctx.config, ctx.path, expires, msg) {
            block::Inbound::Deliver(request, info) => Some((request, info)),
            block::Inbound::Answer(answer) => {
                self.reply(ctx, msg.header, |out, mtype, mid| {
                    answer.encode(out, mtype, mid, msg.token)
                });
                None
            }
            block::Inbound::Reject => {
                self.refuse(ctx, msg);
                None
            }
            block::Inbound::Serve(info, response) => {
                let token = msg.token;
                let shaped = block::shape_response(
                    ctx.config,
                    ctx.max_message_size,
                    ctx.path,
                    &info,
                    token.len(),
                    &response,
                );
                let answer = shaped.as_ref().unwrap_or(&response);
                let max = ctx.max_message_size;
                // The answer stays kept after its last block too, until it expires: a client
                // may ask for a block again with a new message (§2.7).
                self.reply(ctx, msg.header, |out, mtype, mid| {
                    out.encode_packet(answer, mtype, mid, token, max)
                        .unwrap_or_else(|_| {
                            out.encode_simple(mtype, INTERNAL_ERROR, mid, token, b"")
                        })
                });
                None
            }
        }
    }
}
