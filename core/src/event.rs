//! What the engine tells the application.

use core::fmt;
use core::net::SocketAddr;

use coap_lite::Packet;

use crate::observe::{ObserverRemoval, ResourceId};
use crate::security::SecurityError;
use crate::time::Duration;
use crate::transmit::{SendErrorKind, TransmitId};

/// Identifies a request this endpoint sent (or a ping), from
/// [`Endpoint::request`](crate::Endpoint::request) / [`Endpoint::ping`](crate::Endpoint::ping)
/// until its one terminal event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub(crate) u64);

/// Identifies a request this endpoint received, to be answered with
/// [`Endpoint::respond`](crate::Endpoint::respond).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncomingRequestId(pub(crate) u64);

impl RequestId {
    /// The raw number, for logging.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl IncomingRequestId {
    /// The raw number, for logging.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// Why a request (or ping) ended without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeError {
    /// No acknowledgement after MAX_RETRANSMIT retransmissions, or no response within
    /// [`Config::response_timeout`](crate::Config::response_timeout).
    Timeout,
    /// The peer answered with Reset: it could not process the message (RFC 7252 §4.2).
    Reset,
    /// The exchange timed out and its last transmission could not even be sent; or the message
    /// was too big for the path.
    SendFailed(SendErrorKind),
    /// The session failed (keepalive or send failures) while the exchange was pending.
    SessionFailed(FailureReason),
    /// The session was closed by the application or by the engine while the exchange was
    /// pending.
    SessionClosed,
    /// The application cancelled it.
    Cancelled,
    /// The response body, reassembled from Block2 blocks (RFC 7959), would exceed
    /// [`Blockwise::max_body_size`](crate::Blockwise::max_body_size), or the server announced
    /// (Size2) that it would.
    BodyTooLarge,
    /// The server answered a block-wise request with a block that was not the one asked for
    /// (wrong number or offset, or a non-final block of the wrong size, RFC 7959 §2.3): the
    /// body could not be put together safely.
    UnexpectedBlock,
    /// The resource changed (its ETag did) while its blocks were being fetched, again after
    /// the engine started over from the first block (RFC 7959 §2.4): no consistent body was
    /// obtained, and blocks of two representations are never mixed.
    RepresentationChanged,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Timeout => f.write_str("timed out waiting for the peer"),
            ExchangeError::Reset => f.write_str("the peer answered with Reset"),
            ExchangeError::SendFailed(kind) => write!(f, "send failed: {kind}"),
            ExchangeError::SessionFailed(reason) => write!(f, "session failed: {reason}"),
            ExchangeError::SessionClosed => f.write_str("session closed"),
            ExchangeError::Cancelled => f.write_str("cancelled"),
            ExchangeError::BodyTooLarge => {
                f.write_str("response body exceeds blockwise.max_body_size")
            }
            ExchangeError::UnexpectedBlock => {
                f.write_str("the peer answered with a block that was not asked for")
            }
            ExchangeError::RepresentationChanged => {
                f.write_str("the resource kept changing (ETag) during a block-wise transfer")
            }
        }
    }
}

/// Why a session failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// Nothing was heard from the peer for `keepalive.interval + keepalive.timeout`.
    KeepaliveTimeout {
        /// How long the peer had been silent when the failure was declared.
        silent_for: Duration,
    },
    /// [`Config::fail_after_unreachable`](crate::Config::fail_after_unreachable) consecutive
    /// sends failed as unreachable with nothing heard in between.
    Unreachable {
        /// Consecutive failed sends.
        failures: u32,
    },
    /// The security layer failed: the handshake did not complete or was refused, a
    /// certificate was not accepted, a fatal alert arrived (secure endpoints only).
    Security(SecurityError),
    /// A Confirmable message went unacknowledged through all its retransmissions with
    /// nothing heard from the peer meanwhile, on a secure session: the peer may have lost
    /// the association (a restarted server, RFC 6347 §4.2.8), so the session ends and the
    /// next request starts a new handshake instead of talking into a dead association.
    NoResponse,
    /// The connection of a CoAP-over-TCP session (RFC 8323) failed or was aborted.
    Connection(ConnectionFailure),
}

/// How the connection of a CoAP-over-TCP or -TLS session (RFC 8323) ended against our will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionFailure {
    /// It could not be opened (as the adapter classified its error).
    ConnectFailed(SendErrorKind),
    /// The peer reset it.
    Reset,
    /// The peer closed it without a Release (end of stream).
    Closed,
    /// A write failed (as the adapter classified the error).
    WriteFailed(SendErrorKind),
    /// We aborted it (RFC 8323 §5.6): the peer broke the protocol (malformed framing, a
    /// message too large, no CSM first), or sent a CSM with a critical option we do not know
    /// (`bad_csm_option`).
    Aborted {
        /// The CSM option we could not accept, if that was the reason.
        bad_csm_option: Option<u16>,
    },
    /// The peer aborted it with a 7.05 Abort, naming the CSM option of ours it could not
    /// accept, if that was the reason.
    AbortedByPeer {
        /// Our CSM option it could not accept.
        bad_csm_option: Option<u16>,
    },
}

impl fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionFailure::ConnectFailed(kind) => write!(f, "cannot connect: {kind}"),
            ConnectionFailure::Reset => f.write_str("the peer reset the connection"),
            ConnectionFailure::Closed => {
                f.write_str("the peer closed the connection without a Release")
            }
            ConnectionFailure::WriteFailed(kind) => write!(f, "write failed: {kind}"),
            ConnectionFailure::Aborted {
                bad_csm_option: Some(n),
            } => write!(
                f,
                "aborted: the peer's CSM has critical option {n}, which we do not support"
            ),
            ConnectionFailure::Aborted {
                bad_csm_option: None,
            } => f.write_str("aborted: the peer broke RFC 8323 (framing, size or no CSM first)"),
            ConnectionFailure::AbortedByPeer {
                bad_csm_option: Some(n),
            } => write!(
                f,
                "the peer aborted the connection: it does not support our CSM option {n}"
            ),
            ConnectionFailure::AbortedByPeer {
                bad_csm_option: None,
            } => f.write_str("the peer aborted the connection"),
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::KeepaliveTimeout { silent_for } => {
                write!(f, "keepalive failure: peer silent for {silent_for:?}")
            }
            FailureReason::Unreachable { failures } => {
                write!(f, "peer unreachable ({failures} consecutive failed sends)")
            }
            FailureReason::Security(e) => write!(f, "{e}"),
            FailureReason::NoResponse => f.write_str(
                "no answer from the peer through all retransmissions; its security association may be gone",
            ),
            FailureReason::Connection(e) => write!(f, "{e}"),
        }
    }
}

/// Why a session was closed (as opposed to failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A peer-opened session was idle for [`Config::idle_timeout`](crate::Config::idle_timeout).
    Idle,
    /// The application called [`Endpoint::close_session`](crate::Endpoint::close_session).
    Local,
    /// The peer closed the secure association (a DTLS `close_notify` alert).
    PeerClosed,
    /// The peer started a new secure association from the same address (it restarted,
    /// RFC 6347 §4.2.8); the new one replaces this session.
    Replaced,
    /// The peer ended the connection in order with a 7.04 Release (RFC 8323 §5.5), reported
    /// just before as [`Event::Released`].
    Released,
}

/// Something the application should know or act on. Drain with
/// [`Endpoint::poll_event`](crate::Endpoint::poll_event) after every input.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A request arrived; answer it with [`Endpoint::respond`](crate::Endpoint::respond).
    /// The engine has already deduplicated it, so each request is seen once, and reassembled
    /// a body sent in Block1 blocks (RFC 7959), so `request` carries the whole body (without
    /// Block1 and Size1). A GET or FETCH for a further block of a response (Block2 with a
    /// block number above 0) is delivered like any other: answer it with the whole
    /// representation. For other methods (PUT, POST, ...) the engine serves further blocks of
    /// the answer itself, from the answer it keeps for EXCHANGE_LIFETIME (RFC 7959 §2.7), so
    /// such a request never runs twice; one whose answer is no longer kept is refused with
    /// 4.08 Request Entity Incomplete. See
    /// [`Limits::max_block_transfers`](crate::Limits::max_block_transfers).
    Request {
        /// Handle for the answer.
        id: IncomingRequestId,
        /// Who sent it.
        peer: SocketAddr,
        /// The request as received (type, Message ID and token included).
        request: Packet,
    },
    /// The response to one of our requests (terminal for `id`). A success body sent in Block2
    /// blocks (RFC 7959) has been reassembled: `response` is the last block's message with
    /// the whole body, without Block1 and Block2 options.
    Response {
        /// The request it answers.
        id: RequestId,
        /// Who answered.
        peer: SocketAddr,
        /// The response as received.
        response: Packet,
    },
    /// A notification of one of our observations (from
    /// [`Endpoint::observe`](crate::Endpoint::observe)): the registration's first 2.xx
    /// response and every later one that is fresh by RFC 7641 §3.4 (reordered, older
    /// notifications are dropped). Not terminal: the observation ends with one
    /// [`Event::Response`] (a response without Observe, e.g. a 4.04 or the answer to
    /// [`Endpoint::deregister`](crate::Endpoint::deregister)) or [`Event::RequestFailed`]
    /// (timeout, reset, cancel, session failure).
    Notification {
        /// The observation.
        id: RequestId,
        /// Who sent it.
        peer: SocketAddr,
        /// The notification as received (its Observe option holds the sequence number).
        response: Packet,
    },
    /// A client stopped observing one of our resources (registered with
    /// [`Endpoint::respond_observe`](crate::Endpoint::respond_observe)).
    ObserverRemoved {
        /// The client.
        peer: SocketAddr,
        /// The resource it observed.
        resource: ResourceId,
        /// Why.
        reason: ObserverRemoval,
    },
    /// One of our requests ended without a response (terminal for `id`).
    RequestFailed {
        /// The request.
        id: RequestId,
        /// Its destination.
        peer: SocketAddr,
        /// Why.
        error: ExchangeError,
    },
    /// A ping was answered (terminal for `id`).
    Pong {
        /// The ping.
        id: RequestId,
        /// Who answered.
        peer: SocketAddr,
        /// Time from the ping's first transmission to the answer.
        rtt: Duration,
    },
    /// A ping got no answer (terminal for `id`).
    PingFailed {
        /// The ping.
        id: RequestId,
        /// Its destination.
        peer: SocketAddr,
        /// Why.
        error: ExchangeError,
    },
    /// The adapter reported that a transmit could not be sent. The engine treats the message
    /// as lost: it is retried on its normal backoff, never at once.
    SendFailed {
        /// The failed transmit.
        transmit: TransmitId,
        /// Its destination.
        peer: SocketAddr,
        /// How it failed.
        kind: SendErrorKind,
    },
    /// A peer's handshake failed before it had a session (server role of a secure endpoint):
    /// wrong key, unknown identity, refused certificate, timeout. A client's failed
    /// handshake ends its session with [`FailureReason::Security`] instead.
    HandshakeFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        error: SecurityError,
    },
    /// The peer of a CoAP-over-TCP session sent a 7.04 Release (RFC 8323 §5.5): it will
    /// close the connection; the session ends next, with [`CloseReason::Released`].
    Released {
        /// The peer.
        peer: SocketAddr,
        /// Where it suggests connecting instead (its Alternative-Address option), if anywhere.
        alternative_address: Option<alloc::string::String>,
        /// How long to wait before connecting again (its Hold-Off option), if it said.
        hold_off: Option<Duration>,
    },
    /// A session was created (first contact either way).
    SessionNew {
        /// The peer.
        peer: SocketAddr,
    },
    /// The first valid message was heard from the peer of a session.
    SessionEstablished {
        /// The peer.
        peer: SocketAddr,
    },
    /// The session failed; its pending exchanges have ended with
    /// [`ExchangeError::SessionFailed`] and its state is gone.
    SessionFailed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: FailureReason,
    },
    /// The session was closed; its pending exchanges have ended with
    /// [`ExchangeError::SessionClosed`] and its state is gone.
    SessionClosed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
}
