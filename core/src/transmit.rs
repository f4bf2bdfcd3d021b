//! Outgoing datagrams and the send results the adapter reports back.

use alloc::sync::Arc;
use core::fmt;
use core::net::SocketAddr;
use core::ops::Deref;

/// Identifies one transmit so that its send result can be reported with
/// [`Endpoint::handle_send_result`](crate::Endpoint::handle_send_result).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransmitId(pub(crate) u64);

impl TransmitId {
    /// The raw number, for logging.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// The bytes of one datagram. Cheap to clone: the engine keeps the same bytes for
/// retransmission and for answering duplicates, so it shares rather than copies them.
#[derive(Clone, PartialEq, Eq)]
pub struct Datagram(Arc<[u8]>);

impl Datagram {
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        Datagram(Arc::from(bytes))
    }
}

impl Deref for Datagram {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Datagram({} bytes)", self.0.len())
    }
}

/// A datagram the adapter must send: `payload` to `destination`. Report a failed send with
/// [`Endpoint::handle_send_result`](crate::Endpoint::handle_send_result) and this `id`; a
/// success needs no report.
#[derive(Clone, Debug)]
pub struct Transmit {
    /// Identifies this transmit in a later send result.
    pub id: TransmitId,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub payload: Datagram,
}

/// Why a send failed, as the adapter classifies its socket error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// No route to the peer (ENETUNREACH, EHOSTUNREACH, ENETDOWN): the interface or radio may be
    /// down. Counts toward [`Config::fail_after_unreachable`](crate::Config::fail_after_unreachable).
    Unreachable,
    /// The peer's host refused (ECONNREFUSED, from an earlier ICMP port unreachable).
    Refused,
    /// The datagram is too large for the path (EMSGSIZE); retrying cannot help, so a request
    /// whose message hits this ends at once.
    TooBig,
    /// Any other error.
    Other,
}

impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendErrorKind::Unreachable => "network unreachable",
            SendErrorKind::Refused => "connection refused",
            SendErrorKind::TooBig => "message too big for the path",
            SendErrorKind::Other => "send failed",
        })
    }
}
