//! The endpoint's side of secure associations (RFC 7252 §9, feature `security`): routing a
//! datagram to the peer's handshake in progress, to its session's association, or to the
//! layer's stateless answer; handshakes peers opened, kept apart from the session table
//! until they complete; starting a client's handshake.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::Endpoint;
use crate::config::Transport;
use crate::error::Error;
use crate::event::{CloseReason, Event};
use crate::outputs::{ChannelSink, StreamCommand, TransmitRecord};
use crate::security::{Accept, ChannelParams, ChannelState, SecureChannel};
use crate::session::{Ending, Origin};
use crate::time::Instant;

impl Endpoint {
    /// A datagram on a secure endpoint: to the peer's handshake in progress, to its session's
    /// association, or to the layer's stateless answer for a peer that wants a new one.
    pub(super) fn secure_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(security) = self.config.security.clone() else {
            return;
        };
        let layer = security.layer();
        if self.handshake_of(peer).is_some() {
            self.feed_handshake(now, peer, bytes);
            return;
        }
        let slot = self.lookup(peer);
        match slot {
            // A ClientHello from a peer with a session: it restarted, or an off-path sender
            // pretends so. The old association stays until the new handshake completes
            // (RFC 6347 §4.2.8), which needs the cookie round trip first.
            Some(slot) if !layer.opens_association(bytes) => {
                self.feed_session(now, peer, slot, bytes)
            }
            _ => {
                if self.handshakes.len() >= self.config.limits.max_handshakes {
                    log::debug!("{peer}: handshake limit reached; ClientHello dropped");
                    return;
                }
                if slot.is_none() && self.by_peer.len() >= self.config.limits.max_sessions {
                    log::debug!("{peer}: session limit reached; ClientHello dropped");
                    return;
                }
                let params = self.channel_params();
                let record = TransmitRecord {
                    peer,
                    session: None,
                    message_id: None,
                };
                let mut sink = ChannelSink::new(&mut self.out, record);
                match layer.accept(now, peer, bytes, params, &mut sink) {
                    Accept::Open(channel) => self.after_handshake(now, peer, channel, Ok(())),
                    Accept::Refused(error) => {
                        log::debug!("{peer}: handshake refused: {error}");
                        self.out.event(Event::HandshakeFailed { peer, error });
                    }
                    _ => {}
                }
                self.clear_inbox();
            }
        }
    }

    fn channel_params(&mut self) -> ChannelParams {
        ChannelParams::new(self.rng.next_u64(), self.unix_epoch)
    }

    fn clear_inbox(&mut self) {
        self.out.inbox.clear();
        self.out.inbox_lens.clear();
    }

    fn feed_handshake(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(mut channel) = self.take_handshake(peer) else {
            return;
        };
        let record = TransmitRecord {
            peer,
            session: None,
            message_id: None,
        };
        let result =
            channel.handle_datagram(now, bytes, &mut ChannelSink::new(&mut self.out, record));
        self.after_handshake(now, peer, channel, result);
    }

    /// A peer's handshake moved: it goes on, failed, or completed and becomes a session.
    fn after_handshake(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        channel: Box<dyn SecureChannel>,
        result: Result<(), crate::security::SecurityError>,
    ) {
        let stream = self.config.transport == Transport::Tcp;
        if let Err(error) = result {
            self.clear_inbox();
            log::debug!("{peer}: handshake failed: {error}");
            self.out.event(Event::HandshakeFailed { peer, error });
            if stream {
                self.out.command(StreamCommand::Close(peer));
            }
            return;
        }
        match channel.state() {
            ChannelState::Handshaking => self.handshakes.push((peer, channel)),
            ChannelState::Closed => {
                self.clear_inbox();
                if stream {
                    self.out.command(StreamCommand::Close(peer));
                }
            }
            ChannelState::Open => {
                if let Some(old) = self.by_peer.get(&peer, &self.sessions) {
                    // The peer restarted: its old association is gone at its end.
                    self.end_session(old, Ending::Closed(CloseReason::Replaced));
                }
                match self.create_session(now, peer, Origin::Remote, Some(channel)) {
                    Ok(slot) => {
                        self.out.event(Event::SessionNew { peer });
                        let (session, mut ctx) = self.split(slot);
                        if let Some(s) = session {
                            s.opened(now, &mut ctx);
                            if stream {
                                // Bytes that came with the peer's last flight.
                                if let Some(ending) = s.stream_inbox(now, &mut ctx) {
                                    self.end_session(slot, ending);
                                    return;
                                }
                            }
                        }
                        self.drain_inbox(now, peer, slot);
                        // Its keepalive and idle timers start now, whatever arrived.
                        self.rearm(slot);
                    }
                    Err(_) => {
                        // Only a race with the cap (checked at the cookie): close it cleanly.
                        log::debug!("{peer}: session limit reached; association closed");
                        self.clear_inbox();
                        if stream {
                            self.out.command(StreamCommand::Close(peer));
                        }
                    }
                }
            }
        }
    }

    /// A datagram for the secure association of session `slot`.
    fn feed_session(&mut self, now: Instant, peer: SocketAddr, slot: u32, bytes: &[u8]) {
        let (session, mut ctx) = self.split(slot);
        let Some(s) = session else {
            return;
        };
        if s.reliable() {
            match s.secure_stream_input(now, &mut ctx, bytes) {
                Some(ending) => self.end_session(slot, ending),
                None => self.rearm(slot),
            }
            return;
        }
        let ending = s.channel_input(now, &mut ctx, bytes);
        // What arrived authenticated before an alert or a close is still delivered.
        self.drain_inbox(now, peer, slot);
        match ending {
            Some(ending) if self.is_live(slot, peer) => self.end_session(slot, ending),
            _ => self.rearm(slot),
        }
    }

    fn is_live(&self, slot: u32, peer: SocketAddr) -> bool {
        self.by_peer.get(&peer, &self.sessions) == Some(slot)
    }

    /// Processes the messages a secure association opened, in order.
    fn drain_inbox(&mut self, now: Instant, peer: SocketAddr, slot: u32) {
        if self.out.inbox_lens.is_empty() {
            return;
        }
        let inbox = core::mem::take(&mut self.out.inbox);
        let lens = core::mem::take(&mut self.out.inbox_lens);
        let mut at = 0;
        for &len in &lens {
            if !self.is_live(slot, peer) {
                break;
            }
            let end = at + len;
            self.message(now, peer, Some(slot), &inbox[at..end]);
            at = end;
        }
        // Keep the buffers' capacity for the next datagram.
        self.out.inbox = inbox;
        self.out.inbox_lens = lens;
        self.clear_inbox();
    }

    fn handshake_of(&self, peer: SocketAddr) -> Option<usize> {
        self.handshakes.iter().position(|(p, _)| *p == peer)
    }

    fn take_handshake(&mut self, peer: SocketAddr) -> Option<Box<dyn SecureChannel>> {
        let i = self.handshake_of(peer)?;
        Some(self.handshakes.swap_remove(i).1)
    }

    /// The earliest deadline of the handshakes in progress (at most `max_handshakes` of
    /// them: a scan costs less than keeping them sorted).
    pub(super) fn handshake_deadline(&self) -> Option<Instant> {
        self.handshakes
            .iter()
            .filter_map(|(_, c)| c.poll_timeout())
            .min()
    }

    /// Runs the timers of handshakes in progress that are due.
    pub(super) fn run_handshake_timers(&mut self, now: Instant) {
        if !self
            .handshakes
            .iter()
            .any(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
        {
            return;
        }
        let peers: Vec<SocketAddr> = self
            .handshakes
            .iter()
            .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            let Some(mut channel) = self.take_handshake(peer) else {
                continue;
            };
            let record = TransmitRecord {
                peer,
                session: None,
                message_id: None,
            };
            let result = channel.handle_timeout(now, &mut ChannelSink::new(&mut self.out, record));
            self.after_handshake(now, peer, channel, result);
        }
    }

    /// Bytes on a connection of a TLS endpoint: to the peer's handshake in progress (server
    /// role), or to its session.
    pub(super) fn secure_stream_data(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        if self.handshake_of(peer).is_some() {
            self.feed_handshake(now, peer, bytes);
            return;
        }
        match self.lookup(peer) {
            Some(slot) => self.feed_session(now, peer, slot, bytes),
            None => log::debug!("{peer}: bytes for no connection the engine knows; dropped"),
        }
    }

    /// Server role of a TLS endpoint: a connection was accepted; its handshake starts,
    /// kept apart from the sessions until it completes.
    pub(super) fn accept_secure_stream(
        &mut self,
        now: Instant,
        peer: SocketAddr,
    ) -> Result<(), Error> {
        let Some(security) = self.config.security.clone() else {
            return Err(Error::UnknownSession);
        };
        // A handshake from the same address the adapter lost track of: the new one wins.
        drop(self.take_handshake(peer));
        if self.handshakes.len() >= self.config.limits.max_handshakes
            || self.by_peer.len() >= self.config.limits.max_sessions
        {
            log::debug!("{peer}: session or handshake limit reached; connection refused");
            return Err(Error::SessionLimit);
        }
        let params = self.channel_params();
        let channel = security
            .layer()
            .accept_stream(now, peer, params)
            .map_err(Error::Security)?;
        self.handshakes.push((peer, channel));
        Ok(())
    }

    /// The connection of a handshake in progress closed: the handshake failed. False if
    /// `peer` had none.
    pub(super) fn abandon_handshake(&mut self, peer: SocketAddr) -> bool {
        if self.take_handshake(peer).is_none() {
            return false;
        }
        let error = crate::security::SecurityError::ConnectionClosed;
        log::debug!("{peer}: handshake failed: {error}");
        self.out.event(Event::HandshakeFailed { peer, error });
        true
    }

    /// Client role: the association for a new session with `peer`, checking the server's
    /// certificate against `server_name` (or else the peer's address). None on a plain
    /// endpoint.
    pub(super) fn connect(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<&str>,
    ) -> Result<Option<Box<dyn SecureChannel>>, Error> {
        let Some(security) = self.config.security.clone() else {
            return Ok(None);
        };
        if self.by_peer.len() >= self.config.limits.max_sessions {
            return Err(Error::SessionLimit);
        }
        let params = self.channel_params();
        let channel = security
            .layer()
            .connect(now, peer, server_name, params)
            .map_err(Error::Security)?;
        Ok(Some(channel))
    }

    /// Sends the first flight (ClientHello) of the new session in `slot`.
    pub(super) fn start_handshake(&mut self, now: Instant, slot: u32) {
        let (session, mut ctx) = self.split(slot);
        if let Some(s) = session {
            if let Some(ending) = s.start_channel(now, &mut ctx) {
                s.doomed = Some(Box::new(ending));
            }
        }
    }
}
