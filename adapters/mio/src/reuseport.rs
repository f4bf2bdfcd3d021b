//! Sockets for a group of endpoints sharing one address with `SO_REUSEPORT`, one endpoint
//! per thread, to serve from every core.
//!
//! Each call binds one more socket of the group. On Linux and Android the kernel hashes
//! every datagram's (and every new connection's) source and destination address and port
//! to one socket of the group, so a peer's messages keep going to the same socket, and
//! thus the same [`Endpoint`](coap_engine::Endpoint) with its session, deduplication cache
//! and observations, for as long as the group's set of sockets stays the same. A socket
//! that closes or joins moves some peers to another socket, where they look new.
//!
//! Every socket of a group must be bound by the same user, and all with `SO_REUSEPORT` (a
//! socket bound without it keeps the others out, and the other way round). Port 0 binds a
//! new port, not the group's: bind the first socket, read its port from
//! [`local_addr`](crate::Driver::local_addr), and bind the others with that port.
//!
//! Elsewhere these functions fail with
//! [`ErrorKind::Unsupported`](std::io::ErrorKind::Unsupported): other systems have no
//! `SO_REUSEPORT`, or one that does not spread peers over the sockets (FreeBSD's
//! `SO_REUSEPORT_LB` would, and is not used here).
//!
//! ```
//! use coap_engine::Config;
//! use coap_engine_mio::Driver;
//! # if !cfg!(any(target_os = "linux", target_os = "android")) { return Ok(()) }
//! let first = Driver::bind_reuseport("127.0.0.1:0".parse().unwrap(), Config::default())?;
//! let at = first.local_addr()?;
//! let second = Driver::bind_reuseport(at, Config::default())?;
//! assert_eq!(second.local_addr()?, at);
//! // Each driver goes to a thread of its own, e.g. `std::thread::spawn(move || ...)`.
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use std::io::ErrorKind;
use std::net::SocketAddr;

use mio::net::{TcpListener, UdpSocket};

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT`: one more member of the
/// group of sockets on that address. See the [module docs](self).
///
/// ```
/// # if !cfg!(any(target_os = "linux", target_os = "android")) { return Ok(()) }
/// let a = coap_engine_mio::reuseport::udp_socket("127.0.0.1:0".parse().unwrap())?;
/// let b = coap_engine_mio::reuseport::udp_socket(a.local_addr()?)?;
/// assert_eq!(a.local_addr()?, b.local_addr()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let fd = linux::bound(addr, nix::sys::socket::SockType::Datagram)?;
        Ok(UdpSocket::from_std(std::net::UdpSocket::from(fd)))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = addr;
        Err(unsupported())
    }
}

/// A non-blocking TCP listener on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`, as
/// [`TcpListener::bind`] sets): one more member of the group of listeners on that
/// address; the kernel hands each new connection to one of them. See the
/// [module docs](self).
///
/// ```
/// # if !cfg!(any(target_os = "linux", target_os = "android")) { return Ok(()) }
/// let a = coap_engine_mio::reuseport::tcp_listener("127.0.0.1:0".parse().unwrap())?;
/// let b = coap_engine_mio::reuseport::tcp_listener(a.local_addr()?)?;
/// assert_eq!(a.local_addr()?, b.local_addr()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::socket::{listen, Backlog, SockType};
        let fd = linux::bound(addr, SockType::Stream)?;
        // mio's own listeners' backlog.
        listen(&fd, Backlog::new(1024)?)?;
        Ok(TcpListener::from_std(std::net::TcpListener::from(fd)))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = addr;
        Err(unsupported())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unsupported() -> io::Error {
    io::Error::new(
        ErrorKind::Unsupported,
        "SO_REUSEPORT groups that spread peers over sockets are supported on Linux and \
         Android only",
    )
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };

    /// A non-blocking socket of `kind` bound to `addr` with `SO_REUSEPORT`.
    pub(super) fn bound(addr: SocketAddr, kind: SockType) -> io::Result<OwnedFd> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = socket(family, kind, flags, None)?;
        if kind == SockType::Stream {
            // As std and mio do for listeners: a restarted server rebinds at once, past
            // the previous one's connections in TIME_WAIT.
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        }
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
        Ok(fd)
    }
}
