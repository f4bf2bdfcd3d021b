//! Batched datagram I/O: `recvmmsg` and `sendmmsg` (through nix) on Linux and Android, one
//! datagram per system call elsewhere, or when batching is turned off.
//!
//! Why nix: it is the one well-kept crate with safe wrappers for both calls (quinn-udp
//! batches receives but sends one `sendmsg` per destination, relying on GSO, which only
//! helps equal-sized datagrams to one peer; rustix and socket2 have no `recvmmsg`). GSO and
//! GRO are not used: a CoAP server's datagrams go to and come from many peers, one small
//! datagram each, which is exactly what they cannot coalesce.

use std::io;
use std::net::SocketAddr;

use coap_engine::Transmit;
use mio::net::UdpSocket;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;

/// One receive slot holds the largest UDP payload, so no datagram is ever truncated. A
/// slot's pages are touched only as far as datagrams fill them, so the resident cost of
/// `BATCH` slots is a page or two each, not their full size.
const SLOT: usize = 65_535;

/// Receive slots and, on Linux, the preallocated message headers for both directions.
pub(crate) struct BatchIo {
    batched: bool,
    slots: Vec<u8>,
    /// Length and source of the datagram in each slot the last [`recv`](Self::recv) filled
    /// in; `None` for one dropped there (truncated, or from an address that is not IP).
    received: Vec<Option<(usize, SocketAddr)>>,
}

impl BatchIo {
    pub(crate) fn new() -> Self {
        BatchIo {
            batched: cfg!(any(target_os = "linux", target_os = "android")),
            slots: vec![0; BATCH * SLOT],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Turns batching off (one datagram per system call) or back on where the OS has it.
    pub(crate) fn set_batched(&mut self, on: bool) {
        self.batched = on && cfg!(any(target_os = "linux", target_os = "android"));
    }

    pub(crate) fn is_batched(&self) -> bool {
        self.batched
    }

    /// Reads what is queued on `socket`, up to [`BATCH`] datagrams, without blocking.
    /// Returns how many; read them with [`datagram`](Self::datagram). `WouldBlock` when none.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received.clear();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.batched {
            linux::recv(socket, &mut self.slots, &mut self.received)?;
            return Ok(self.received.len());
        }
        let (n, peer) = socket.recv_from(&mut self.slots[..SLOT])?;
        self.received.push(Some((n, peer)));
        Ok(1)
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its bytes and its source, `None` if
    /// that one was dropped.
    pub(crate) fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (len, peer) = self.received.get(i).copied().flatten()?;
        Some((&self.slots[i * SLOT..i * SLOT + len], peer))
    }

    /// Sends `batch[0]` and as many after it as the socket takes in one go. `Ok(n)`: the
    /// first `n` (at least one) were sent; `Err(e)`: `batch[0]` failed with `e`, and nothing
    /// after it was tried.
    pub(crate) fn send(&mut self, socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
        debug_assert!(!batch.is_empty());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.batched && batch.len() > 1 {
            return linux::send(socket, &batch[..batch.len().min(BATCH)]);
        }
        let t = &batch[0];
        socket.send_to(&t.payload, t.destination).map(|_| 1)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use coap_engine::Transmit;
    use mio::net::UdpSocket;
    use nix::sys::socket::{
        recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
    };

    use super::{BATCH, SLOT};

    // nix's `MultiHeaders` holds raw pointers, so it is not `Send`; one is made per call
    // (two allocations per batch, not per datagram) to keep the driver `Send`.

    pub(super) fn recv(
        socket: &UdpSocket,
        slots: &mut [u8],
        received: &mut Vec<Option<(usize, SocketAddr)>>,
    ) -> io::Result<()> {
        let mut chunks = slots.chunks_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            // A datagram cut short would reach the engine as a different message.
            if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                log::warn!("dropped a datagram larger than {SLOT} bytes");
                received.push(None);
                continue;
            }
            received.push(
                msg.address
                    .as_ref()
                    .and_then(to_std)
                    .map(|a| (msg.bytes, a)),
            );
        }
        Ok(())
    }

    pub(super) fn send(socket: &UdpSocket, batch: &[Transmit]) -> io::Result<usize> {
        let n = batch.len().min(BATCH);
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(batch.get(i).map_or(&[], |t| &t.payload))]);
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| batch.get(i).map(|t| SockaddrStorage::from(t.destination)));
        let none: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut MultiHeaders::<SockaddrStorage>::preallocate(n, None),
            iovs[..n].iter(),
            &addrs[..n],
            none,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?
        .count();
        Ok(sent)
    }

    fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }
}
