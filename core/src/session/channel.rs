//! A session's secure association (RFC 7252 §9, feature `security`): sealing every
//! message into it, feeding it datagrams and timers, and what its state means for the
//! session (requests wait for the handshake; the completed handshake is the first
//! authenticated word from the peer; a failure or a close ends the session).

use alloc::boxed::Box;

use coap_lite::MessageType;

use super::{Ending, Session};
use crate::event::{CloseReason, FailureReason};
use crate::outputs::{ChannelSink, Ctx, TransmitRecord};
use crate::security::{ChannelState, PeerIdentity, SecurityError};
use crate::time::Instant;
use crate::transmit::TransmitId;

impl Session {
    pub(super) fn doom(&mut self, ending: Ending) {
        self.doomed.get_or_insert_with(|| Box::new(ending));
    }

    pub(super) fn channel_open(&self) -> bool {
        self.channel
            .as_ref()
            .is_none_or(|c| c.state() == ChannelState::Open)
    }

    /// Seals a message into the association. Sealed afresh every time: a retransmission is
    /// a new record with a new sequence number, or the peer's replay protection would drop it
    /// (RFC 6347 §4.1.2.6).
    pub(super) fn seal(
        &mut self,
        ctx: &mut Ctx<'_>,
        record: TransmitRecord,
        bytes: &[u8],
    ) -> TransmitId {
        let Some(channel) = self.channel.as_mut() else {
            return ctx.out.reserve_id();
        };
        let mut sink = ChannelSink::new(ctx.out, record);
        let sealed = channel.seal(bytes, &mut sink);
        let id = sink.last;
        if let Err(e) = sealed {
            self.doom(Ending::Failed(FailureReason::Security(e)));
        }
        id.unwrap_or_else(|| ctx.out.reserve_id())
    }

    pub(crate) fn peer_identity(&self) -> Option<PeerIdentity> {
        self.channel.as_ref().and_then(|c| c.peer_identity())
    }

    /// A datagram for this session's secure association. Opened messages are left in
    /// `ctx.out.inbox` for the endpoint to process. Returns how the session ends, if the
    /// association failed or the peer closed it.
    pub(crate) fn channel_input(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        datagram: &[u8],
    ) -> Option<Ending> {
        let channel = self.channel.as_mut()?;
        let was_open = channel.state() == ChannelState::Open;
        let record = TransmitRecord {
            peer: self.peer,
            session: Some(self.key),
            message_id: None,
        };
        let result = channel.handle_datagram(now, datagram, &mut ChannelSink::new(ctx.out, record));
        self.after_channel(now, ctx, was_open, result)
    }

    /// What an association's input or timer led to.
    fn after_channel(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        was_open: bool,
        result: Result<(), SecurityError>,
    ) -> Option<Ending> {
        if let Err(e) = result {
            return Some(Ending::Failed(FailureReason::Security(e)));
        }
        match self.channel.as_ref().map(|c| c.state()) {
            Some(ChannelState::Closed) => Some(Ending::Closed(CloseReason::PeerClosed)),
            Some(ChannelState::Open) if !was_open => {
                self.opened(now, ctx);
                None
            }
            _ => None,
        }
    }

    /// The association's handshake completed: the first authenticated word from the peer,
    /// and the queued requests can go.
    pub(crate) fn opened(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.heard(now, ctx);
        if self.reliable() {
            if self.stream_ready() {
                self.stream_open(now, ctx);
            }
        } else {
            self.pump(now, ctx);
        }
    }

    /// Bytes from a secure connection: opened by its security layer, then deframed. What
    /// arrived before an alert or a close is still handled.
    pub(crate) fn secure_stream_input(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        bytes: &[u8],
    ) -> Option<Ending> {
        let ending = self.channel_input(now, ctx, bytes);
        self.stream_inbox(now, ctx).or(ending)
    }

    /// Deframes the plaintext the connection's security layer opened into the inbox.
    pub(crate) fn stream_inbox(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Ending> {
        ctx.out.inbox_lens.clear();
        if ctx.out.inbox.is_empty() {
            return None;
        }
        let plaintext = core::mem::take(&mut ctx.out.inbox);
        let ended = self.stream_input(now, ctx, &plaintext);
        // Keep the buffer's capacity for the next read.
        ctx.out.inbox = plaintext;
        ctx.out.inbox.clear();
        ended
    }

    /// Runs the association's timer if it is due (or at once with `force`, to send the
    /// first flight of a new association).
    pub(super) fn channel_timer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        force: bool,
    ) -> Option<Ending> {
        let channel = self
            .channel
            .as_mut()
            .filter(|c| force || c.poll_timeout().is_some_and(|t| t <= now))?;
        let was_open = channel.state() == ChannelState::Open;
        let record = TransmitRecord {
            peer: self.peer,
            session: Some(self.key),
            message_id: None,
        };
        let result = channel.handle_timeout(now, &mut ChannelSink::new(ctx.out, record));
        self.after_channel(now, ctx, was_open, result)
    }

    /// Starts a new association's handshake.
    pub(crate) fn start_channel(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Ending> {
        self.channel_timer(now, ctx, true)
    }

    /// Sends the association's `close_notify` (a session closed on purpose).
    pub(crate) fn close_channel(&mut self, ctx: &mut Ctx<'_>) {
        let record = TransmitRecord {
            peer: self.peer,
            session: None,
            message_id: None,
        };
        if let Some(channel) = self.channel.as_mut() {
            channel.close(&mut ChannelSink::new(ctx.out, record));
        }
    }

    /// Answers a malformed Confirmable message inside the association with Reset (§4.2).
    pub(crate) fn reset(&mut self, ctx: &mut Ctx<'_>, mid: u16) {
        let rst = ctx.out.encode_empty(MessageType::Reset, mid);
        self.send(ctx, mid, rst);
    }
}
