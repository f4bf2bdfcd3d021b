//! Errors returned to the application for API misuse or exhausted limits.

use core::fmt;

/// An application call could not be carried out. Nothing was sent and no state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The packet's code is not a request method (0.01–0.31).
    NotARequest,
    /// The packet's code is not a response code (2.00–5.31).
    NotAResponse,
    /// Requests must be Confirmable or Non-confirmable.
    InvalidMessageType,
    /// The packet's token is longer than 8 bytes.
    TokenTooLong,
    /// Another request to the same peer is using this token.
    TokenInUse,
    /// The encoded message would exceed `Config::max_message_size` (size in bytes). A large
    /// request body goes block-wise instead (RFC 7959), so for a request this means that its
    /// options leave no room even for 16-byte blocks.
    MessageTooLarge(usize),
    /// An option value is too long to encode.
    OptionTooLong,
    /// `Limits::max_sessions` sessions exist; close one first.
    SessionLimit,
    /// The peer's NSTART queue is full (`Limits::max_queued_requests`); wait for responses.
    QueueFull,
    /// No such incoming request: it was answered already, expired, or its session ended.
    UnknownRequest,
    /// No such session.
    UnknownSession,
    /// Only GET and FETCH requests can observe a resource (RFC 7641 §2).
    NotObservable,
    /// The security layer could not start an association with the peer (e.g. this secure
    /// endpoint has no client credentials).
    Security(crate::security::SecurityError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotARequest => f.write_str("packet code is not a request method (use 0.01-0.31, e.g. GET)"),
            Error::NotAResponse => f.write_str("packet code is not a response code (use 2.00-5.31)"),
            Error::InvalidMessageType => f.write_str("a request must be Confirmable or Non-confirmable"),
            Error::TokenTooLong => f.write_str("token longer than 8 bytes (RFC 7252 §3)"),
            Error::TokenInUse => f.write_str("another request to this peer uses that token; leave the token empty to get a random one"),
            Error::MessageTooLarge(n) => write!(f, "message of {n} bytes exceeds max_message_size; shorten it or raise the limit"),
            Error::OptionTooLong => f.write_str("an option value is longer than 65804 bytes"),
            Error::SessionLimit => f.write_str("session limit reached; close an idle session or raise limits.max_sessions"),
            Error::QueueFull => f.write_str("request queue for this peer is full; wait for responses or raise limits.max_queued_requests"),
            Error::UnknownRequest => f.write_str("unknown incoming request: already answered, expired, or its session ended"),
            Error::UnknownSession => f.write_str("no session with that peer"),
            Error::NotObservable => f.write_str("only GET and FETCH requests can observe a resource (RFC 7641)"),
            Error::Security(e) => write!(f, "cannot start a secure association: {e}"),
        }
    }
}

impl core::error::Error for Error {}
