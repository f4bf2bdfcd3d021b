//! Outgoing datagrams and the send results the adapter reports back.

use alloc::sync::Arc;
use alloc::vec::Vec;
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

/// Datagrams the engine no longer needs, kept to hold the next ones of the same length, so
/// that in a steady exchange of messages (a server answering the same resource, a client
/// polling one) sending allocates nothing: an answer's bytes live until its deduplication
/// entry goes, a request's until its exchange ends, and then they hold a later message.
/// Only datagrams nobody else holds (the adapter dropped its transmit) are kept, at most
/// [`Limits::recycled_datagrams`](crate::Limits::recycled_datagrams).
#[derive(Debug)]
pub(crate) struct DatagramPool {
    free: Vec<Datagram>,
    cap: usize,
}

impl DatagramPool {
    pub(crate) fn new(cap: usize) -> Self {
        DatagramPool {
            free: Vec::new(),
            cap,
        }
    }

    /// A datagram holding `bytes`: a recycled one of that length if there is one.
    #[inline]
    pub(crate) fn make(&mut self, bytes: &[u8]) -> Datagram {
        if self.free.is_empty() {
            return Datagram::from_slice(bytes);
        }
        if let Some(i) = self.free.iter().rposition(|d| d.0.len() == bytes.len()) {
            let mut d = self.free.swap_remove(i);
            if let Some(buf) = Arc::get_mut(&mut d.0) {
                buf.copy_from_slice(bytes);
                return d;
            }
        }
        Datagram::from_slice(bytes)
    }

    /// Takes back a datagram the engine is done with; kept if nobody else holds it. When
    /// full, the oldest kept one goes, so the lengths kept follow the traffic.
    #[inline]
    pub(crate) fn recycle(&mut self, d: Datagram) {
        // No `Weak` is ever made of a datagram, so one strong count means nobody else holds
        // it (and a plain load is cheaper than `Arc::get_mut`'s check).
        if self.cap == 0 || Arc::strong_count(&d.0) != 1 {
            return;
        }
        if self.free.len() == self.cap {
            self.free.remove(0);
        }
        self.free.push(d);
    }

    /// Datagrams kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.len()
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

/// A datagram that [`Endpoint::poll_transmit_into`](crate::Endpoint::poll_transmit_into)
/// wrote into the caller's buffer: where it goes, and the id to report a failed send with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransmitInfo {
    /// Identifies this transmit in a later send result.
    pub id: TransmitId,
    /// Where to send it.
    pub destination: SocketAddr,
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

#[cfg(test)]
mod pool_tests {
    use super::{Datagram, DatagramPool};

    #[test]
    fn a_datagram_nobody_holds_carries_the_next_one_of_its_length() {
        let mut pool = DatagramPool::new(2);
        let a = pool.make(b"abcd");
        let held = a.clone();
        pool.recycle(a);
        assert_eq!(pool.len(), 0, "still held elsewhere: not kept");
        pool.recycle(held);
        assert_eq!(pool.len(), 1);
        // Another length allocates; the same length reuses the kept one, with the new bytes.
        let other = pool.make(b"xyz");
        assert_eq!(&*other, b"xyz");
        assert_eq!(pool.len(), 1);
        let b = pool.make(b"wxyz");
        assert_eq!(&*b, b"wxyz");
        assert_eq!(pool.len(), 0);
        // Full: the oldest goes.
        for bytes in [&b"1"[..], b"22", b"333"] {
            pool.recycle(Datagram::from_slice(bytes));
        }
        assert_eq!(pool.len(), 2);
        assert_eq!(&*pool.make(b"xx"), b"xx");
        assert_eq!(pool.len(), 1, "the 2-byte one was kept and reused");
        assert_eq!(&*pool.make(b"x"), b"x");
        assert_eq!(pool.len(), 1, "the 1-byte one was the oldest, gone");
        // A pool of 0 keeps nothing.
        let mut none = DatagramPool::new(0);
        none.recycle(Datagram::from_slice(b"a"));
        assert_eq!(none.len(), 0);
    }
}
