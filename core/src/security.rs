//! The security seam (RFC 7252 §9): a sans-IO record layer between a session's message layer
//! and the wire.
//!
//! An endpoint is either plain (CoAP over UDP, `coap://`) or secure (`coaps://`), as a socket
//! is either the CoAP port or the CoAPS port (RFC 7252 §6.2: 5683 and 5684). A secure endpoint
//! is one whose [`Config::security`](crate::Config) holds a [`Security`]: every
//! session it has is then an association of that layer with one peer, and every CoAP message
//! of the session is sealed into records before it leaves and opened from records when it
//! arrives. The application API does not change: requests, observe, block-wise and every
//! event work the same; what is added is a typed reason when the security layer fails
//! ([`FailureReason::Security`](crate::FailureReason::Security), [`Event::HandshakeFailed`](crate::Event::HandshakeFailed)).
//!
//! The layer is a pair of traits, so that DTLS (feature `dtls`, on the pure-Rust `dimpl`
//! crate) is one implementation and an embedded DTLS can be plugged in later without
//! touching the engine:
//!
//! - [`SecurityLayer`], one per endpoint: opens client associations ([`connect`](SecurityLayer::connect))
//!   and answers the first datagrams of peers that want one ([`accept`](SecurityLayer::accept)),
//!   statelessly until the peer has proven it receives at its address (a cookie round trip);
//! - [`SecureChannel`], one per association: handshake, record protection, timers.
//!
//! Both are sans-IO like the engine: everything they emit goes through a [`RecordSink`], time
//! arrives as an [`Instant`], and randomness comes from what the engine hands them.
//!
//! ## How the engine uses a channel
//!
//! - A client session starts its handshake when it is created (the first request or ping to
//!   a peer). Requests wait in the session's queue ([`Limits::max_queued_requests`](crate::Limits::max_queued_requests))
//!   until the handshake completes; keepalive probes wait too (the handshake's own
//!   retransmissions are the probe). A Confirmable message sealed before then is lost on
//!   purpose and retransmitted on its normal schedule.
//! - A server keeps a peer's handshake outside the session table until it completes (at most
//!   [`Limits::max_handshakes`](crate::Limits::max_handshakes) of them); then the session is created
//!   ([`Event::SessionNew`](crate::Event::SessionNew)).
//! - Liveness: only authenticated input is *heard* — the completed handshake and every
//!   record that opens. Nothing sent moves `last_heard`, handshake flights included, so the
//!   keepalive bound holds over a secure session exactly as over UDP.
//! - Send results of records are inputs like those of plain datagrams: a failed handshake
//!   flight is reported as [`Event::SendFailed`](crate::Event::SendFailed), counts toward
//!   [`Config::fail_after_unreachable`](crate::Config::fail_after_unreachable), and waits for the
//!   layer's own retransmission timer.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::time::Instant;

/// Where a security layer puts what it produces while handling an input.
pub trait RecordSink {
    /// A datagram for the peer (over TLS: bytes for the connection): a handshake flight,
    /// protected records, an alert.
    fn transmit(&mut self, datagram: &[u8]);
    /// Plaintext that arrived from the peer: one CoAP message over DTLS (RFC 7252 §9.1: one
    /// record carries one message); over TLS, the next bytes of the stream.
    fn deliver(&mut self, message: &[u8]);
}

/// Where an association stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// The handshake is in progress: nothing can be sent yet.
    Handshaking,
    /// The handshake completed: messages can be sealed and opened.
    Open,
    /// The association ended (the peer closed it, or it failed).
    Closed,
}

/// Who the peer proved to be during the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdentity {
    /// The PSK identity the client used (RFC 4279).
    PreSharedKey(Vec<u8>),
    /// The peer's certificate (DER), verified against the configured trust anchors unless
    /// verification was turned off.
    Certificate(Vec<u8>),
}

/// One association with one peer (a DTLS connection): the handshake, then sealing and
/// opening records. Every error it returns is fatal for the association.
pub trait SecureChannel: Send {
    /// A datagram arrived from the peer: handshake progress, protected records, alerts.
    /// Opened messages go to [`RecordSink::deliver`], answers to [`RecordSink::transmit`].
    fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &[u8],
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError>;

    /// Time passed: retransmit a handshake flight, give up on a stalled handshake.
    fn handle_timeout(
        &mut self,
        now: Instant,
        sink: &mut dyn RecordSink,
    ) -> Result<(), SecurityError>;

    /// Protects one CoAP message and transmits it. Before the handshake completes the
    /// message is dropped (the engine never relies on it: a Confirmable message is
    /// retransmitted on its schedule).
    fn seal(&mut self, message: &[u8], sink: &mut dyn RecordSink) -> Result<(), SecurityError>;

    /// Ends the association, telling the peer if it can (a `close_notify` alert).
    fn close(&mut self, sink: &mut dyn RecordSink);

    /// Where the association stands.
    fn state(&self) -> ChannelState;

    /// When [`handle_timeout`](Self::handle_timeout) is next needed, if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Who the peer proved to be, once the handshake completed.
    fn peer_identity(&self) -> Option<PeerIdentity>;
}

/// What the engine gives a new association besides the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelParams {
    /// A fresh value from the endpoint's seeded generator: layers derive their per-association
    /// randomness from it (mixed with their own secret entropy), so a simulation replays
    /// exactly from its seed.
    pub nonce: u64,
    /// Unix time (seconds) at [`Instant::ZERO`], if the adapter gave one
    /// ([`Endpoint::set_unix_time`](crate::Endpoint::set_unix_time)): certificates' validity
    /// periods are checked against it.
    pub unix_epoch: Option<u64>,
}

impl ChannelParams {
    /// Parameters for a layer driven by hand (tests, other engines).
    pub fn new(nonce: u64, unix_epoch: Option<u64>) -> Self {
        ChannelParams { nonce, unix_epoch }
    }
}

/// The answer of [`SecurityLayer::accept`] to a datagram from a peer without an association.
#[non_exhaustive]
pub enum Accept {
    /// Not the start of a handshake, or not one this endpoint serves: dropped, no state kept.
    Ignore,
    /// Answered statelessly (a cookie challenge, RFC 6347 §4.2.1); no state kept.
    Replied,
    /// The peer proved it receives at its address: a new association, which has consumed
    /// the datagram (its answer is in the sink) and is in its handshake.
    Open(Box<dyn SecureChannel>),
    /// The peer proved it receives at its address, but its handshake cannot go on (no mode
    /// or cipher suite in common): refused, with an alert in the sink if one applies; the
    /// engine reports it as [`Event::HandshakeFailed`](crate::Event::HandshakeFailed).
    Refused(SecurityError),
}

/// A security layer for a whole endpoint: the factory of its associations. Implemented by
/// `coap_engine::dtls::Dtls` (feature `dtls`); implement it to plug in another record layer.
pub trait SecurityLayer: Send + Sync {
    /// Client role: starts an association with `peer`. `server_name` is the host the
    /// application meant (the request's Uri-Host), checked against a server certificate;
    /// without it the peer's IP address is checked.
    fn connect(
        &self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<&str>,
        params: ChannelParams,
    ) -> Result<Box<dyn SecureChannel>, SecurityError>;

    /// Server role: a datagram from a peer without an association, or one that
    /// [`opens_association`](Self::opens_association). Must keep no state unless it returns
    /// [`Accept::Open`], and must not answer with more bytes than it received.
    fn accept(
        &self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        params: ChannelParams,
        sink: &mut dyn RecordSink,
    ) -> Accept;

    /// Whether `datagram` starts a new association (a ClientHello) rather than continuing
    /// one: a peer that restarted (RFC 6347 §4.2.8).
    fn opens_association(&self, datagram: &[u8]) -> bool;

    /// Server role of a stream transport (TLS over TCP): the adapter accepted a connection
    /// from `peer`; the association starts with it, and the peer's bytes go to its
    /// [`handle_datagram`](SecureChannel::handle_datagram) in order as they arrive. (No
    /// stateless stage: the connection's own handshake proved the address.) Layers for
    /// datagrams only keep the default, which refuses.
    fn accept_stream(
        &self,
        now: Instant,
        peer: SocketAddr,
        params: ChannelParams,
    ) -> Result<Box<dyn SecureChannel>, SecurityError> {
        let _ = (now, peer, params);
        Err(SecurityError::NoCredentials)
    }

    /// A short name for logs, e.g. "DTLS 1.2".
    fn name(&self) -> &'static str;
}

/// The security layer of an endpoint, for [`Config::security`](crate::Config).
/// Cheap to clone (shared); two configurations are equal when they share the same layer.
#[derive(Clone)]
pub struct Security(pub(crate) Arc<dyn SecurityLayer>);

impl Security {
    /// Wraps a layer.
    pub fn new(layer: impl SecurityLayer + 'static) -> Self {
        Security(Arc::new(layer))
    }

    /// Wraps a shared layer.
    pub fn from_arc(layer: Arc<dyn SecurityLayer>) -> Self {
        Security(layer)
    }

    /// The layer.
    pub fn layer(&self) -> &dyn SecurityLayer {
        &*self.0
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Security({})", self.0.name())
    }
}

impl PartialEq for Security {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Why a security association failed or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityError {
    /// The handshake did not complete within the configured time.
    HandshakeTimeout,
    /// The peer did not accept our credentials: it answered our Finished message with a
    /// `decrypt_error` (or `bad_record_mac`, `unknown_psk_identity`) alert, or never answered
    /// it, which is how some servers refuse a pre-shared key (or certificate) they do not
    /// accept.
    CredentialsRejected,
    /// The client's PSK identity is not one we know (server role).
    UnknownPskIdentity,
    /// The client's Finished message did not verify: its pre-shared key is not ours
    /// (server role).
    PskMismatch,
    /// The peer's Finished message did not verify (the keys do not match).
    FinishedMismatch,
    /// The peer's certificate was refused.
    Certificate(CertificateError),
    /// The peer sent a fatal alert (RFC 5246 §7.2 description code).
    Alert(u8),
    /// No cipher suite or mode both sides support (e.g. a PSK-only server and a certificate
    /// client).
    NoCommonCipherSuite,
    /// No protocol version both sides support (e.g. a TLS 1.3-only client and a TLS 1.2-only
    /// server).
    NoCommonVersion,
    /// This endpoint has no credentials for the role or mode asked of it.
    NoCredentials,
    /// The peer broke the protocol (unexpected or malformed handshake message).
    Protocol,
    /// The peer tried to renegotiate, which is not supported.
    Renegotiation,
    /// A cryptographic operation or the security layer itself failed.
    Internal,
    /// The connection carrying the handshake closed before it completed (TLS over TCP).
    ConnectionClosed,
}

impl fmt::Display for SecurityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecurityError::HandshakeTimeout => f.write_str("handshake timed out: no answer from the peer"),
            SecurityError::CredentialsRejected => f.write_str(
                "handshake failed: the peer did not accept our pre-shared key (wrong key or unknown identity) or our certificate",
            ),
            SecurityError::UnknownPskIdentity => f.write_str("handshake failed: unknown PSK identity"),
            SecurityError::PskMismatch => f.write_str("handshake failed: the client's pre-shared key does not match ours (wrong key)"),
            SecurityError::FinishedMismatch => f.write_str("handshake failed: the peer's Finished message did not verify (keys differ)"),
            SecurityError::Certificate(e) => write!(f, "peer certificate refused: {e}"),
            SecurityError::Alert(code) => write!(f, "the peer sent fatal alert {code} ({})", alert_name(*code)),
            SecurityError::NoCommonCipherSuite => f.write_str("handshake failed: no cipher suite in common with the peer"),
            SecurityError::NoCommonVersion => f.write_str("handshake failed: no protocol version in common with the peer"),
            SecurityError::NoCredentials => f.write_str("no credentials configured for this role or mode"),
            SecurityError::Protocol => f.write_str("the peer violated the (D)TLS protocol"),
            SecurityError::Renegotiation => f.write_str("the peer attempted a renegotiation, which is not supported"),
            SecurityError::Internal => f.write_str("internal error in the security layer"),
            SecurityError::ConnectionClosed => f.write_str("the connection closed during the handshake"),
        }
    }
}

impl core::error::Error for SecurityError {}

/// RFC 5246 §7.2 / RFC 8446 §6 alert names, for messages.
fn alert_name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown alert",
    }
}

/// Why a peer's certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateError {
    /// The peer sent no certificate where one is required.
    Missing,
    /// It could not be parsed.
    Malformed,
    /// It was not issued by any of the trust anchors (unknown CA).
    UnknownIssuer,
    /// It is not valid for the name or address we connected to.
    NameMismatch,
    /// Its validity period has ended.
    Expired,
    /// Its validity period has not begun.
    NotYetValid,
    /// Its signature (or its issuer's) does not verify.
    BadSignature,
    /// It uses an algorithm we do not support.
    UnsupportedAlgorithm,
    /// It is not meant for this use (extended key usage: server or client authentication).
    WrongUsage,
    /// No wall-clock time was given ([`Endpoint::set_unix_time`](crate::Endpoint::set_unix_time)),
    /// so its validity period could not be checked.
    NoClock,
    /// Refused for another reason.
    Other,
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateError::Missing => "no certificate was sent",
            CertificateError::Malformed => "the certificate is malformed",
            CertificateError::UnknownIssuer => "unknown CA: not issued by a trusted root",
            CertificateError::NameMismatch => {
                "name mismatch: not valid for the host we connected to"
            }
            CertificateError::Expired => "the certificate has expired",
            CertificateError::NotYetValid => "the certificate is not valid yet",
            CertificateError::BadSignature => "bad signature",
            CertificateError::UnsupportedAlgorithm => "unsupported signature algorithm",
            CertificateError::WrongUsage => "not valid for this purpose (extended key usage)",
            CertificateError::NoClock => "no wall-clock time to check its validity against",
            CertificateError::Other => "refused",
        })
    }
}
