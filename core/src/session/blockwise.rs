//! Block-wise transfers (RFC 7959) of our requests on one session: sending the next block,
//! parking it while NSTART is full, and ending a transfer that breaks off.

use coap_lite::{MessageType, Packet};

use super::*;
use crate::block::{self};
use crate::codec::MessageView;
use crate::event::ExchangeError;
use crate::outputs::Ctx;
use crate::time::Instant;
use crate::transmit::SendErrorKind;

impl Session {
    /// What a response to exchange `index` means block-wise (see `block::on_response`): the
    /// response to deliver, or None when the transfer goes on (the next block is sent, or
    /// waits for an NSTART slot), broke off (the request has failed), or the block was stale.
    pub(super) fn block_response(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        msg: &MessageView<'_>,
    ) -> Option<Packet> {
        let piggybacked = msg.header.mtype == MessageType::Acknowledgement;
        let e = &mut self.exchanges[index];
        match block::on_response(
            &mut e.block,
            ctx.config,
            ctx.path,
            &e.request,
            msg,
            piggybacked,
        ) {
            block::Step::Deliver(response) => Some(response),
            block::Step::Ignore => None,
            block::Step::Next => {
                self.next_block(now, ctx, index);
                None
            }
            block::Step::Fail(error) => {
                self.fail_transfer(now, ctx, index, error);
                None
            }
        }
    }

    /// Encodes the next block request of exchange `index` and parks it; `pump` sends it as
    /// soon as NSTART allows (at once, unless other requests took the slot meanwhile).
    pub(super) fn next_block(&mut self, now: Instant, ctx: &mut Ctx<'_>, index: usize) {
        let e = &mut self.exchanges[index];
        let id = e.id;
        // The answered block's CON (if its ACK was lost) needs no more retransmissions.
        self.forget_requests(&[id]);
        let mid = self.peek_mid();
        let e = &mut self.exchanges[index];
        let Some(transfer) = e.block.as_mut() else {
            return;
        };
        match transfer.encode_next(ctx.out, ctx.max_message_size, mid, e.token.as_slice()) {
            Ok(bytes) => {
                transfer.parked = Some((mid, bytes));
                // Not outstanding and no deadline while parked.
                e.acked = true;
                e.response_deadline = None;
                self.alloc_mid();
                self.last_activity = now;
                self.pump(now, ctx);
            }
            Err(_) => {
                let error = ExchangeError::SendFailed(SendErrorKind::TooBig);
                self.fail_transfer(now, ctx, index, error);
            }
        }
    }

    /// Sends parked block requests while NSTART allows: a transfer's next block goes before
    /// queued requests, which are younger.
    pub(super) fn unpark(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        while let Some(i) = self
            .exchanges
            .iter()
            .position(|e| e.block.as_ref().is_some_and(|t| t.parked.is_some()))
        {
            let outstanding = self.exchanges.iter().filter(|e| e.outstanding()).count();
            if outstanding >= ctx.config.transmission.nstart || self.write_backlog(ctx) {
                return;
            }
            let e = &mut self.exchanges[i];
            let Some((mid, bytes)) = e.block.as_mut().and_then(|t| t.parked.take()) else {
                return;
            };
            e.mid = mid;
            e.acked = false;
            e.last_error = None;
            e.last_transmit = None;
            e.response_deadline = None;
            let (id, confirmable) = (e.id, e.confirmable);
            let transmit = self.send_request(now, ctx, id, mid, bytes, confirmable);
            let reliable = self.reliable();
            let e = &mut self.exchanges[i];
            e.last_transmit = transmit;
            e.acked = reliable;
            if !confirmable || reliable {
                e.response_deadline = Some(now + ctx.config.response_timeout);
            }
        }
    }

    /// Ends exchange `index` mid-transfer with `error`.
    pub(super) fn fail_transfer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        error: ExchangeError,
    ) {
        let e = self.exchanges.swap_remove(index);
        self.forget_requests(&[e.id]);
        self.last_activity = now;
        e.failed(ctx.out, self.peer, error);
        self.pump(now, ctx);
    }
}
