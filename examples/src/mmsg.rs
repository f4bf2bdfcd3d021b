//! Batched UDP I/O for `coap-bench` on Linux (included with `#[path]`): one IPv4 socket that
//! stands in for many clients, each with its own loopback address. Every datagram is sent
//! with an `IP_PKTINFO` control message naming its source address (all of 127.0.0.0/8 is
//! local on Linux), and `IP_PKTINFO` on receive says which of those addresses a reply was
//! sent to. `sendmmsg`/`recvmmsg` move up to [`BATCH`] datagrams per system call.
//!
//! Socket options and `recvmmsg` go through nix. The one piece of `unsafe` left is the
//! sending side: nix's `sendmmsg` gives every datagram of a batch the same control
//! messages, and each of ours needs its own source address, so it fills the message headers
//! itself with plain libc calls on buffers this module owns.

use std::io::{self, IoSliceMut};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn,
};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram received; CoAP over UDP stays far below it here.
const MTU: usize = 1536;
/// Room for one outgoing `in_pktinfo` control message (`CMSG_SPACE(12)` is 32 bytes on
/// 64-bit).
const CONTROL: usize = 64;

/// A control-message buffer with the alignment `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL]);

/// One UDP socket on `0.0.0.0:port` that sends from and receives for many local addresses.
pub struct MultiSocket {
    socket: UdpSocket,
}

impl MultiSocket {
    /// Binds `0.0.0.0:0` with `IP_PKTINFO` on, a receive buffer of up to `rcvbuf` bytes (the
    /// kernel caps it at `net.core.rmem_max`) and reads that give up after `read_timeout`.
    pub fn bind(rcvbuf: usize, read_timeout: Duration) -> io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(read_timeout))?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
        setsockopt(&socket, sockopt::RcvBuf, &rcvbuf)?;
        Ok(MultiSocket { socket })
    }

    /// Waits for at least one datagram (or the read timeout), then takes every one already
    /// queued, up to [`BATCH`]. Returns how many; 0 after a timeout.
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.received.clear();
        let mut slots = batch.bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots.next().map_or(&mut [][..], |b| &mut b[..]),
            )]
        });
        let results = match recvmmsg(
            self.socket.as_raw_fd(),
            &mut batch.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(results) => results,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        for msg in results {
            let from = msg.address.map(|a: SockaddrIn| SocketAddrV4::from(a));
            let local = msg.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)))
                    }
                    _ => None,
                })
            });
            let from = from.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            batch.received.push((local, from, msg.bytes));
        }
        Ok(batch.received.len())
    }

    /// Sends every queued datagram, each from its own source address, then empties the
    /// batch. Returns how many the kernel refused; those are dropped (the engine's
    /// retransmission covers them, as it would a loss on the wire).
    pub fn send<B: AsRef<[u8]>>(&self, batch: &mut SendBatch<B>) -> usize {
        let mut failed = 0;
        for chunk in batch.items.chunks(BATCH) {
            // SAFETY: plain C structs for which all-zero is valid.
            let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut names: [libc::sockaddr_in; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let mut control = [Control([0; CONTROL]); BATCH];
            let (iov_base, names_base) = (iov.as_mut_ptr(), names.as_mut_ptr());
            let control_base = control.as_mut_ptr();
            for (i, (source, destination, bytes)) in chunk.iter().enumerate() {
                let h = &mut hdrs[i].msg_hdr;
                // SAFETY: `i < chunk.len() <= BATCH`, the length of the buffers indexed; the
                // control buffer is aligned for `cmsghdr` and has room for one `in_pktinfo`
                // (CMSG_SPACE(12) <= CONTROL), so CMSG_FIRSTHDR is non-null and in bounds.
                unsafe {
                    let bytes = bytes.as_ref();
                    *iov_base.add(i) = libc::iovec {
                        iov_base: bytes.as_ptr() as *mut libc::c_void,
                        iov_len: bytes.len(),
                    };
                    *names_base.add(i) = sockaddr(*destination);
                    h.msg_name = names_base.add(i).cast();
                    h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    h.msg_iov = iov_base.add(i);
                    h.msg_iovlen = 1;
                    h.msg_control = control_base.add(i).cast();
                    h.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _) as _;
                    let cmsg = libc::CMSG_FIRSTHDR(h);
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as _) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(*source).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                }
            }
            let mut done = 0;
            while done < chunk.len() {
                // SAFETY: `hdrs[done..chunk.len()]` point into `iov`, `names`, `control` and
                // the datagrams in `batch`, all alive for the call; the kernel only reads them.
                let n = unsafe {
                    libc::sendmmsg(
                        self.socket.as_raw_fd(),
                        hdrs.as_mut_ptr().add(done),
                        (chunk.len() - done) as libc::c_uint,
                        0,
                    )
                };
                if n >= 0 {
                    done += n as usize;
                } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    // The first datagram left failed: skip it, keep the rest.
                    failed += 1;
                    done += 1;
                }
            }
        }
        batch.items.clear();
        failed
    }
}

/// Receive buffers for one `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<[u8; MTU]>,
    headers: MultiHeaders<SockaddrIn>,
    /// Per datagram of the last receive: the local address it was sent to, its sender and
    /// its length.
    received: Vec<(Option<Ipv4Addr>, SocketAddrV4, usize)>,
}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams.
    pub fn new() -> Self {
        RecvBatch {
            bufs: vec![[0; MTU]; BATCH],
            headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(libc::in_pktinfo))),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Datagram `i` of the last receive: the local address it was sent to, its sender, bytes.
    pub fn get(&self, i: usize) -> (Option<Ipv4Addr>, SocketAddrV4, &[u8]) {
        let (local, from, len) = self.received[i];
        (local, from, &self.bufs[i][..len])
    }
}

/// Datagrams queued for one `sendmmsg` round: (source address, destination, bytes). The
/// engine's transmits are queued as they are, without copying their bytes.
pub struct SendBatch<B = coap_engine::Datagram> {
    items: Vec<(Ipv4Addr, SocketAddrV4, B)>,
}

impl<B> Default for SendBatch<B> {
    fn default() -> Self {
        SendBatch { items: Vec::new() }
    }
}

impl<B> SendBatch<B> {
    /// Queues `bytes` for `destination`, sent from `source`.
    pub fn push(&mut self, source: Ipv4Addr, destination: SocketAddrV4, bytes: B) {
        self.items.push((source, destination, bytes));
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: `sockaddr_in` is a plain C struct; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*addr.ip()).to_be(),
    };
    sa
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A datagram leaves from the address its `IP_PKTINFO` names, and the reply comes back
    /// labelled with that address: the two facts the load generator's routing rests on.
    #[test]
    fn sends_from_the_chosen_loopback_address_and_reports_where_replies_went() {
        let multi = MultiSocket::bind(1 << 20, Duration::from_secs(5)).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let SocketAddr::V4(peer_addr) = peer.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let sources = [Ipv4Addr::new(127, 10, 0, 7), Ipv4Addr::new(127, 10, 1, 9)];
        let mut batch = SendBatch::default();
        for (i, source) in sources.iter().enumerate() {
            batch.push(*source, peer_addr, vec![i as u8]);
        }
        assert_eq!(multi.send(&mut batch), 0);

        let mut buf = [0u8; 16];
        let mut replies = Vec::new();
        for _ in &sources {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            let SocketAddr::V4(from) = from else {
                unreachable!("IPv4 only")
            };
            assert_eq!(n, 1);
            assert_eq!(*from.ip(), sources[usize::from(buf[0])]);
            peer.send_to(&[buf[0] + 100], from).unwrap();
            replies.push(from);
        }

        let mut got = Vec::new();
        let mut recv = RecvBatch::new();
        while got.len() < sources.len() {
            let n = multi.recv(&mut recv).unwrap();
            assert!(n > 0, "no reply within 5 s");
            for k in 0..n {
                let (local, from, bytes) = recv.get(k);
                assert_eq!(from, peer_addr);
                got.push((local.unwrap(), bytes.to_vec()));
            }
        }
        got.sort();
        assert_eq!(
            got,
            vec![(sources[0], vec![100]), (sources[1], vec![101])],
            "replies to {replies:?}"
        );
    }
}
