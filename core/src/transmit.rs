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
    /// The peer did not answer in time (ETIMEDOUT, or the adapter's own connect timeout on a
    /// stream).
    TimedOut,
    /// Any other error.
    Other,
}

impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendErrorKind::Unreachable => "network unreachable",
            SendErrorKind::Refused => "connection refused",
            SendErrorKind::TooBig => "message too big for the path",
            SendErrorKind::TimedOut => "timed out",
            SendErrorKind::Other => "send failed",
        })
    }
}

#[cfg(feature = "std")]
impl SendErrorKind {
    /// Classifies a socket's `send_to` error, for std adapters (feature `std`):
    /// ENETUNREACH / EHOSTUNREACH / ENETDOWN → `Unreachable`, ECONNREFUSED → `Refused`,
    /// EMSGSIZE → `TooBig`, ETIMEDOUT → `TimedOut`, anything else → `Other`. `None` for WouldBlock, which is not a
    /// failure: keep the datagram and send it when the socket is writable.
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use coap_engine::SendErrorKind;
    /// let unreachable = Error::from(ErrorKind::NetworkUnreachable);
    /// assert_eq!(SendErrorKind::from_io_error(&unreachable), Some(SendErrorKind::Unreachable));
    /// assert_eq!(SendErrorKind::from_io_error(&Error::from(ErrorKind::WouldBlock)), None);
    /// ```
    pub fn from_io_error(error: &std::io::Error) -> Option<SendErrorKind> {
        use std::io::ErrorKind;
        Some(match error.kind() {
            ErrorKind::WouldBlock => return None,
            ErrorKind::ConnectionRefused => SendErrorKind::Refused,
            ErrorKind::TimedOut => SendErrorKind::TimedOut,
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable | ErrorKind::NetworkDown => {
                SendErrorKind::Unreachable
            }
            // std has no stable ErrorKind for EMSGSIZE yet.
            _ if error.raw_os_error() == Some(EMSGSIZE) => SendErrorKind::TooBig,
            _ => SendErrorKind::Other,
        })
    }
}

#[cfg(all(feature = "std", any(target_os = "linux", target_os = "android")))]
const EMSGSIZE: i32 = 90;
#[cfg(all(feature = "std", windows))]
const EMSGSIZE: i32 = 10040; // WSAEMSGSIZE
#[cfg(all(
    feature = "std",
    not(any(target_os = "linux", target_os = "android", windows))
))]
const EMSGSIZE: i32 = 40; // BSDs, macOS

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::SendErrorKind;
    use std::io::Error;

    #[test]
    fn linux_errno_values_map_to_the_engine_kinds() {
        let kind = |errno| SendErrorKind::from_io_error(&Error::from_raw_os_error(errno));
        assert_eq!(kind(101), Some(SendErrorKind::Unreachable)); // ENETUNREACH
        assert_eq!(kind(113), Some(SendErrorKind::Unreachable)); // EHOSTUNREACH
        assert_eq!(kind(100), Some(SendErrorKind::Unreachable)); // ENETDOWN
        assert_eq!(kind(111), Some(SendErrorKind::Refused)); // ECONNREFUSED
        assert_eq!(kind(90), Some(SendErrorKind::TooBig)); // EMSGSIZE
        assert_eq!(kind(110), Some(SendErrorKind::TimedOut)); // ETIMEDOUT
        assert_eq!(kind(11), None); // EAGAIN
        assert_eq!(kind(1), Some(SendErrorKind::Other)); // EPERM
    }
}
