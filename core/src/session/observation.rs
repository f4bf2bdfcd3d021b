//! Observe (RFC 7641) on one session: the server's observers of our resources and their
//! notifications; the client's observations, their freshness, re-registration and
//! deregistration, and the blocks of a large notification (RFC 7959 §2.6).

use alloc::vec::Vec;

use coap_lite::{MessageType, Packet};

use super::*;
use crate::block::{self};
use crate::codec::MessageView;
use crate::error::Error;
use crate::event::{Event, RequestId};
use crate::observe::{self, Observer, ObserverRemoval, RecentMids, ResourceId};
use crate::outputs::Ctx;
use crate::time::Instant;

impl Session {
    /// Adds (or refreshes) the observer with `token`: one entry per endpoint and token
    /// (RFC 7641 §4.1); the same token registered for another resource replaces the old entry.
    pub(super) fn add_observer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        resource: ResourceId,
        token: Token,
        mid: u16,
    ) {
        if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
            if o.resource == resource {
                o.confirmed = now;
                o.recent.push(mid);
                return;
            }
            self.remove_observer(ctx, token, ObserverRemoval::Replaced);
        }
        let mut recent = RecentMids::default();
        recent.push(mid);
        self.observers.push(Observer {
            resource,
            token,
            confirmed: now,
            recent,
        });
        ctx.observe.add(resource, self.key);
    }

    /// Removes the observer with `token`, if any, and tells the application.
    pub(super) fn remove_observer(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: Token,
        reason: ObserverRemoval,
    ) {
        if !cfg!(feature = "observe") {
            return; // no observers
        }
        if matches!(
            reason,
            ObserverRemoval::Deregistered | ObserverRemoval::Replaced
        ) {
            // The client said it no longer wants these notifications: stop retransmitting one
            // still in flight. (A final error notification, by contrast, must still arrive.)
            self.drop_notification(token);
        }
        if let Some(i) = self.observers.iter().position(|o| o.token == token) {
            let o = self.observers.swap_remove(i);
            ctx.observe.remove(o.resource, self.key);
            ctx.out.event(Event::ObserverRemoved {
                peer: self.peer,
                resource: o.resource,
                reason,
            });
        }
    }

    /// Sends `notification` (its Observe option already set, or absent for a final non-2.xx
    /// one) to every observer of `resource` on this session. Non-confirmable unless
    /// `confirmable`, a Confirmable one is still in flight (RFC 7641 §4.5.2 replaces it), or the
    /// observer has not confirmed its interest for 24 hours (§4.5). A final notification ends
    /// the observations. Returns how many observers were notified.
    pub(crate) fn notify(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        resource: ResourceId,
        notification: &Packet,
        confirmable: bool,
    ) -> usize {
        let last = u8::from(notification.header.code) >> 5 != 2;
        let mut sent = 0;
        let tokens: Vec<Token> = self
            .observers
            .iter()
            .filter(|o| o.resource == resource)
            .map(|o| o.token)
            .collect();
        if self.write_backlog(ctx) {
            log::debug!("{}: connection backlogged; notification skipped", self.peer);
            return 0;
        }
        for token in tokens {
            let in_flight = self.notification_in_flight(token);
            let Some(o) = self.observers.iter().find(|o| o.token == token) else {
                continue;
            };
            let con = confirmable || in_flight || now >= o.confirmed + observe::CON_INTERVAL;
            let mtype = if con {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let mid = self.peek_mid();
            // A large representation goes as its first block; the client fetches the rest
            // with ordinary GETs, which the application answers in full (RFC 7959 §2.6).
            let shaped = block::shape_response(
                ctx.config,
                ctx.max_message_size,
                ctx.path,
                &block::ServerBlocks::default(),
                token.len as usize,
                notification,
            );
            let bytes = match ctx.out.encode_packet(
                shaped.as_ref().unwrap_or(notification),
                mtype,
                mid,
                token.as_slice(),
                ctx.max_message_size,
            ) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::debug!("{}: notification not sent: {e}", self.peer);
                    continue;
                }
            };
            self.send_notification(now, ctx, token, mid, bytes, con);
            if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
                o.recent.push(mid);
            }
            sent += 1;
            if last {
                self.remove_observer(ctx, token, ObserverRemoval::ErrorResponse);
            }
        }
        if sent > 0 {
            self.last_activity = now;
        }
        sent
    }

    /// The whole body of a notification that came in blocks has arrived: deliver it, if its
    /// observation still wants it and nothing newer was delivered meanwhile.
    pub(super) fn fetched(&mut self, ctx: &mut Ctx<'_>, fetch: Fetch, mut response: Packet) {
        let peer = self.peer;
        let etag = response
            .get_first_option(coap_lite::CoapOption::ETag)
            .and_then(|v| Token::from_slice(v));
        if etag != fetch.etag {
            return;
        }
        let Some(obs) = self
            .exchanges
            .iter_mut()
            .find(|e| e.id == fetch.observation)
            .and_then(|e| e.observe.as_mut())
            .filter(|o| !o.deregistering)
        else {
            return;
        };
        if obs
            .last
            .is_some_and(|(v1, t1)| !observe::fresh(v1, t1, fetch.seq, fetch.at))
        {
            return;
        }
        obs.last = Some((fetch.seq, fetch.at));
        // The blocks were fetched without Observe; the notification's number goes back on.
        response.set_observe_value(fetch.seq);
        ctx.out.event(Event::Notification {
            id: fetch.observation,
            peer,
            response,
        });
    }

    /// Starts fetching the rest of a notification whose first block is `msg` (RFC 7959
    /// §2.6): GET requests for the further blocks, without Observe and under a token of their
    /// own (the observation's token stays the registration's). A newer notification replaces
    /// a fetch still running; without room for another exchange the notification is dropped,
    /// and the next one is fetched.
    pub(super) fn start_fetch(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        observation: RequestId,
        seq: u32,
        msg: &MessageView<'_>,
    ) {
        self.drop_fetches(observation);
        let peer = self.peer;
        if self.exchanges.len() >= ctx.config.limits.max_exchanges || ctx.config.token_length == 0 {
            log::debug!("{peer}: no room to fetch a notification's blocks; dropped");
            return;
        }
        let Ok(token) = self.fresh_token(ctx) else {
            return;
        };
        let Some(e) = self.exchanges.iter().find(|e| e.id == observation) else {
            return;
        };
        let Some(obs) = e.observe.as_ref() else {
            return;
        };
        let mut request = obs.request.clone();
        request.clear_option(coap_lite::CoapOption::Observe);
        let mtype = if e.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        // Only the template of the block requests: never sent as such.
        let Ok(template) = ctx
            .out
            .encode_packet(&request, mtype, 0, token.as_slice(), usize::MAX)
        else {
            return;
        };
        let mut fetcher = ClientExchange {
            id: RequestId(new_id(ctx, self.key.slot)),
            token,
            mid: 0,
            confirmable: e.confirmable,
            acked: true,
            response_deadline: None,
            last_error: None,
            last_transmit: None,
            observe: None,
            request: template,
            block: None,
            fetch: Some(Fetch {
                observation,
                seq,
                at: now,
                etag: msg.option(block::ETAG).and_then(Token::from_slice),
            }),
        };
        if let block::Step::Next = block::on_response(
            &mut fetcher.block,
            ctx.config,
            ctx.path,
            &fetcher.request,
            msg,
            false,
        ) {
            self.exchanges.push(fetcher);
            self.next_block(now, ctx, self.exchanges.len() - 1);
        }
    }

    /// Ends the fetches running for `observation` (their outcome is no longer wanted).
    pub(super) fn drop_fetches(&mut self, observation: RequestId) {
        let mut dropped = Vec::new();
        self.exchanges.retain(|e| {
            let mine = e.fetch.is_some_and(|f| f.observation == observation);
            if mine {
                dropped.push(e.id);
            }
            !mine
        });
        self.forget_requests(&dropped);
    }

    /// A response to observation `index`. A 2.xx with an Observe option is a notification:
    /// delivered if fresh (RFC 7641 §3.4), and the observation goes on (returns true).
    /// Anything else ends it and is delivered as the final response (returns false).
    pub(super) fn notification(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        msg: &MessageView<'_>,
    ) -> bool {
        let seq = msg.option(observe::OBSERVE).and_then(observe::value);
        let success = msg.header.code_class() == 2;
        let peer = self.peer;
        let e = &mut self.exchanges[index];
        let id = e.id;
        let Some(obs) = e.observe.as_mut() else {
            return false;
        };
        let Some(seq) = seq.filter(|_| success) else {
            return false;
        };
        if obs.deregistering {
            // Notifications still in flight when we deregistered are acknowledged but no
            // longer delivered; the answer to the deregistration (without Observe) ends it.
            return true;
        }
        e.acked = true;
        e.response_deadline = None;
        // Newer than what was delivered, and than a notification whose blocks are being
        // fetched (RFC 7641 §3.4).
        let fetching = self
            .exchanges
            .iter()
            .find_map(|e| e.fetch.filter(|f| f.observation == id));
        let fresh = |last: Option<(u32, Instant)>| {
            last.is_none_or(|(v1, t1)| observe::fresh(v1, t1, seq, now))
        };
        let Some(obs) = self.exchanges[index].observe.as_mut() else {
            return false;
        };
        let mut fetch = false;
        if fresh(obs.last) && fresh(fetching.map(|f| (f.seq, f.at))) {
            let max_age = observe::max_age(msg.option(observe::MAX_AGE));
            obs.reregister_at = Some(now + max_age + observe::REREGISTER_MARGIN);
            let block2 = msg
                .option(block::BLOCK2)
                .map(|v| block::Block::decode_on(v, ctx.path));
            if block2.is_some_and(|b| b.is_ok_and(|b| b.more)) {
                // Only the first block of a larger body: fetch the rest (RFC 7959 §2.6).
                fetch = true;
            } else {
                obs.last = Some((seq, now));
                ctx.out.event(Event::Notification {
                    id,
                    peer,
                    response: msg.to_packet(),
                });
            }
        }
        // The (re-)registration is answered, piggybacked or not.
        self.forget_requests(&[id]);
        if fetch {
            self.start_fetch(now, ctx, id, seq, msg);
        }
        self.last_activity = now;
        self.pump(now, ctx);
        true
    }

    /// Re-sends observation `index`'s request with Observe = `value` (0 re-registers, 1
    /// deregisters) and a new Message ID, under the same token (RFC 7641 §3.3.1, §3.6).
    pub(super) fn resend_observe(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        value: u32,
    ) -> Result<(), Error> {
        let e = &self.exchanges[index];
        let Some(obs) = e.observe.as_ref() else {
            return Err(Error::UnknownRequest);
        };
        let mut request = obs.request.clone();
        request.set_observe_value(value);
        let mtype = if e.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let mid = self.peek_mid();
        let bytes = ctx.out.encode_packet(
            &request,
            mtype,
            mid,
            e.token.as_slice(),
            ctx.max_message_size,
        )?;
        let (id, confirmable) = (e.id, e.confirmable);
        self.alloc_mid();
        self.forget_requests(&[id]);
        let transmit = self.send_request(now, ctx, id, mid, bytes, confirmable);
        let reliable = self.reliable();
        let e = &mut self.exchanges[index];
        e.mid = mid;
        e.last_error = None;
        e.last_transmit = transmit;
        // A CON is bounded by its retransmissions (its Empty ACK starts the response timeout);
        // a NON by the response timeout.
        e.response_deadline = (!confirmable || reliable).then(|| now + ctx.config.response_timeout);
        self.last_activity = now;
        Ok(())
    }

    /// Re-registers observations whose Max-Age lapsed without a fresh notification. While
    /// the connection's writes are backlogged a re-registration waits, tried again
    /// `REREGISTER_MARGIN` later, as the application's requests are refused meanwhile.
    pub(super) fn reregister(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        for i in 0..self.exchanges.len() {
            let backlog = self.write_backlog(ctx);
            let Some(obs) = self.exchanges[i].observe.as_mut() else {
                continue;
            };
            if obs.reregister_at.is_none_or(|t| t > now) {
                continue;
            }
            if backlog {
                obs.reregister_at = Some(now + observe::REREGISTER_MARGIN);
                continue;
            }
            obs.reregister_at = None;
            // The answer starts a new baseline: the server may have restarted its numbering.
            obs.last = None;
            if let Err(e) = self.resend_observe(now, ctx, i, 0) {
                log::debug!("{}: re-registration not sent: {e}", self.peer);
            }
        }
    }

    /// Deregisters observation `id` with a GET carrying Observe = 1 (RFC 7641 §3.6); the
    /// answer to it is the observation's final [`Event::Response`].
    pub(crate) fn deregister(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: RequestId,
    ) -> Result<(), Error> {
        if self.queue.iter().any(|q| q.id == id && q.observe.is_some()) {
            // Never sent: there is nothing to deregister at the server.
            self.cancel(ctx, id, now);
            return Ok(());
        }
        let index = self
            .exchanges
            .iter()
            .position(|e| e.id == id && e.observe.as_ref().is_some_and(|o| !o.deregistering))
            .ok_or(Error::UnknownRequest)?;
        if self.write_backlog(ctx) {
            // A deregistration is a request like any other: it waits for the writes.
            return Err(Error::QueueFull);
        }
        self.resend_observe(now, ctx, index, 1)?;
        if let Some(obs) = self.exchanges[index].observe.as_mut() {
            obs.deregistering = true;
            obs.reregister_at = None;
        }
        Ok(())
    }
}
