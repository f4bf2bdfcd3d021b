//! Connections of a CoAP-over-TCP endpoint (RFC 8323), in sans-IO: the engine never opens a
//! socket. A request to a peer without a connection asks the adapter to open one
//! ([`StreamCommand::Connect`]); the adapter reports what happens to connections (opened,
//! failed, accepted, bytes, closed) and what it wrote, and closes them when asked
//! ([`StreamCommand::Close`]).

use core::net::SocketAddr;

use super::Endpoint;
use crate::config::Transport;
use crate::error::Error;
use crate::event::{ConnectionFailure, Event, FailureReason};
use crate::outputs::StreamCommand;
use crate::session::{Ending, Origin};
use crate::time::Instant;
use crate::transmit::SendErrorKind;

/// How a connection ended, as the adapter saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamClosed {
    /// The peer closed its side (end of stream).
    Eof,
    /// The peer reset it, or the network did.
    Reset,
}

impl Endpoint {
    /// What a CoAP-over-TCP endpoint asks of its adapter: to open a connection to a peer
    /// (report the outcome with [`handle_connected`](Self::handle_connected) or
    /// [`handle_connect_failed`](Self::handle_connect_failed)), or to close one once the
    /// writes polled so far are done. Drain it, like transmits, after every input. Always
    /// `None` on a datagram endpoint.
    pub fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        self.out.poll_command()
    }

    /// Whether stream commands are waiting to be polled (like
    /// [`has_transmits`](Self::has_transmits)).
    pub fn has_stream_commands(&self) -> bool {
        self.out.has_commands()
    }

    #[cfg(feature = "tcp")]
    /// The connection the engine asked for with [`StreamCommand::Connect`] is open: the
    /// engine sends its Capabilities and Settings Message (RFC 8323 §5.3), then the requests
    /// that waited for the connection. Ignored for a connection already open.
    pub fn handle_connected(&mut self, now: Instant, peer: SocketAddr) {
        let now = self.advance(now);
        let Some(slot) = self.lookup(peer) else {
            return;
        };
        let (session, mut ctx) = self.split(slot);
        match session.and_then(|s| s.stream_connected(now, &mut ctx)) {
            Some(ending) => self.end_session(slot, ending),
            None => self.rearm(slot),
        }
    }

    #[cfg(feature = "tcp")]
    /// The connection to `peer` could not be opened: its session fails with
    /// [`ConnectionFailure::ConnectFailed`], and its requests with it.
    pub fn handle_connect_failed(&mut self, now: Instant, peer: SocketAddr, kind: SendErrorKind) {
        self.advance(now);
        if let Some(slot) = self.lookup(peer) {
            let reason = FailureReason::Connection(ConnectionFailure::ConnectFailed(kind));
            self.end_session(slot, Ending::Failed(reason));
        }
    }

    #[cfg(feature = "tcp")]
    /// The adapter accepted a connection from `peer` (server role). On a plain endpoint a
    /// session starts ([`Event::SessionNew`]) and the engine's CSM goes first; on a TLS
    /// endpoint the handshake starts, and the session with it once it completes (or
    /// [`Event::HandshakeFailed`], and the connection is closed).
    ///
    /// Refused (close the connection) with [`Error::SessionLimit`] when
    /// [`Limits::max_sessions`](crate::Limits::max_sessions) connections are open or
    /// [`Limits::max_handshakes`](crate::Limits::max_handshakes) handshakes are in progress,
    /// [`Error::Security`] when the security layer cannot serve it, or
    /// [`Error::UnknownSession`] on a datagram endpoint.
    pub fn handle_accepted(&mut self, now: Instant, peer: SocketAddr) -> Result<(), Error> {
        let now = self.advance(now);
        if self.config.transport != Transport::Tcp {
            return Err(Error::UnknownSession);
        }
        if let Some(old) = self.lookup(peer) {
            // The adapter lost track of a connection from the same address: the new one wins.
            let reason = FailureReason::Connection(ConnectionFailure::Reset);
            self.end_session(old, Ending::Failed(reason));
        }
        #[cfg(feature = "security")]
        if self.config.security.is_some() {
            return self.accept_secure_stream(now, peer);
        }
        let slot = self.create_session(now, peer, Origin::Remote, None)?;
        self.out.event(Event::SessionNew { peer });
        let (session, mut ctx) = self.split(slot);
        if let Some(s) = session {
            s.stream_open(now, &mut ctx);
        }
        self.rearm(slot);
        Ok(())
    }

    #[cfg(feature = "tcp")]
    /// The connection with `peer` ended: its session fails with
    /// [`ConnectionFailure::Closed`] or [`ConnectionFailure::Reset`], every pending exchange
    /// with it. (A connection the engine asked to close is already forgotten.)
    pub fn handle_closed(&mut self, now: Instant, peer: SocketAddr, how: StreamClosed) {
        self.advance(now);
        #[cfg(feature = "security")]
        if self.abandon_handshake(peer) {
            return;
        }
        if let Some(slot) = self.lookup(peer) {
            let failure = match how {
                StreamClosed::Eof => ConnectionFailure::Closed,
                StreamClosed::Reset => ConnectionFailure::Reset,
            };
            self.end_session(slot, Ending::Failed(FailureReason::Connection(failure)));
        }
    }

    /// Bytes that arrived on the connection with `peer` (a TCP endpoint's
    /// [`handle_datagram`](Self::handle_datagram)).
    pub(super) fn stream_data(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        #[cfg(feature = "security")]
        if self.config.security.is_some() {
            self.secure_stream_data(now, peer, bytes);
            return;
        }
        let Some(slot) = self.lookup(peer) else {
            log::debug!("{peer}: bytes for no connection the engine knows; dropped");
            return;
        };
        let (session, mut ctx) = self.split(slot);
        let Some(s) = session else {
            return;
        };
        match s.stream_input(now, &mut ctx, bytes) {
            Some(ending) => self.end_session(slot, ending),
            None => self.rearm(slot),
        }
    }

    /// A stream session ends: unless the connection is gone already, the adapter is asked to
    /// close it.
    pub(super) fn close_connection(&mut self, peer: SocketAddr, ending: Ending) {
        let gone = matches!(
            ending,
            Ending::Failed(FailureReason::Connection(
                ConnectionFailure::Closed
                    | ConnectionFailure::Reset
                    | ConnectionFailure::ConnectFailed(_)
            ))
        );
        if !gone {
            self.out.command(StreamCommand::Close(peer));
        }
    }
}
