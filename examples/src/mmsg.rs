//! Batched UDP I/O for `coap-bench` on Linux (included with `#[path]`): one IPv4 socket that
//! stands in for many clients, each with its own loopback address (all of 127.0.0.0/8 is
//! local on Linux). `IP_PKTINFO` on receive says which of those addresses a reply was sent
//! to, and `recvmmsg` takes up to [`BATCH`] replies per system call.
//!
//! Sending from many source addresses in one `sendmmsg` is what the socket API cannot say
//! (nix's `sendmmsg`, like the system call's users in general, gives a whole batch one set
//! of control messages, and the source address of a UDP datagram is one). So datagrams
//! leave through a raw IPv4 socket (`IPPROTO_RAW`, which implies `IP_HDRINCL`): each carries
//! an IPv4 and UDP header written here with its client's address and the UDP socket's port,
//! so replies come back to the UDP socket. The kernel fills in the IPv4 checksum, length and
//! identification; the UDP checksum is left zero (optional over IPv4). A raw socket needs
//! `CAP_NET_RAW`; without it every datagram goes out in a `sendmsg` of its own with an
//! `IP_PKTINFO` naming its source. Everything goes through nix: no `unsafe` here.

#![forbid(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, MultiHeaders, SockFlag, SockProtocol, SockType, SockaddrIn,
};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram received; CoAP over UDP stays far below it here.
pub const MTU: usize = 1536;
/// An IPv4 header without options and a UDP header.
const HEADERS: usize = 20 + 8;

/// The loopback addresses of a range of simulated peers: peer `i` is `base + 1 + i`.
#[derive(Clone, Copy)]
pub struct AddressBlock(u32);

impl AddressBlock {
    /// Peers from `a.b.c.d + 1` on.
    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Self {
        AddressBlock(u32::from_be_bytes([a, b, c, d]))
    }

    /// Peer `i`'s address.
    pub fn address(self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(self.0 + 1 + i as u32)
    }

    /// Which peer `addr` is, if it is in the block's range (bounds are the caller's).
    pub fn index(self, addr: Ipv4Addr) -> Option<usize> {
        u32::from(addr).checked_sub(self.0 + 1).map(|i| i as usize)
    }
}

/// One UDP socket on `0.0.0.0:port` that sends from and receives for many local addresses.
pub struct MultiSocket {
    socket: UdpSocket,
    port: u16,
    /// The raw socket datagrams leave through, when this process may open one.
    raw: Option<OwnedFd>,
    send_headers: MultiHeaders<SockaddrIn>,
}

impl MultiSocket {
    /// Binds `0.0.0.0:0` with `IP_PKTINFO` on, a receive buffer of `rcvbuf` bytes (beyond
    /// `net.core.rmem_max` only with `CAP_NET_ADMIN`) and reads that give up after
    /// `read_timeout`, and opens the raw socket it sends through if it may.
    pub fn bind(rcvbuf: usize, read_timeout: Duration) -> io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(read_timeout))?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
        if setsockopt(&socket, sockopt::RcvBufForce, &rcvbuf).is_err() {
            setsockopt(&socket, sockopt::RcvBuf, &rcvbuf)?;
        }
        let port = socket.local_addr()?.port();
        let raw = socket_raw().ok();
        Ok(MultiSocket {
            socket,
            port,
            raw,
            send_headers: MultiHeaders::preallocate(BATCH, None),
        })
    }

    /// Whether datagrams leave [`BATCH`] per system call (a raw socket could be opened).
    pub fn batched_sends(&self) -> bool {
        self.raw.is_some()
    }

    /// Takes every datagram already queued, up to [`BATCH`]; with `wait`, first waits for
    /// one (or the read timeout). Returns how many; 0 when none came.
    pub fn recv(&self, batch: &mut RecvBatch, wait: bool) -> io::Result<usize> {
        batch.received.clear();
        let mut slots = batch.bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots.next().map_or(&mut [][..], |b| &mut b[..]),
            )]
        });
        let flags = if wait {
            MsgFlags::MSG_WAITFORONE
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        let results = match recvmmsg(
            self.socket.as_raw_fd(),
            &mut batch.headers,
            iovs.iter_mut(),
            flags,
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
    /// batch. Returns how many the kernel refused; those are dropped (retransmission covers
    /// them, as it would a loss on the wire).
    pub fn send<B: AsRef<[u8]>>(&mut self, batch: &mut SendBatch<B>) -> usize {
        let failed = match &self.raw {
            Some(raw) => send_raw(
                raw,
                &mut self.send_headers,
                self.port,
                &batch.items,
                &mut batch.headers,
            ),
            None => self.send_each(&batch.items),
        };
        batch.items.clear();
        failed
    }

    /// One `sendmsg` per datagram, its source address in an `IP_PKTINFO`.
    fn send_each<B: AsRef<[u8]>>(&self, items: &[(Ipv4Addr, SocketAddrV4, B)]) -> usize {
        let mut failed = 0;
        for (source, destination, bytes) in items {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(*source).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let to = SockaddrIn::from(*destination);
            let sent = loop {
                match sendmsg(
                    self.socket.as_raw_fd(),
                    &[IoSlice::new(bytes.as_ref())],
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                ) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            failed += usize::from(sent.is_err());
        }
        failed
    }
}

/// A raw IPv4 socket whose datagrams carry their own IPv4 header.
fn socket_raw() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    )
}

/// `sendmmsg` through the raw socket, [`BATCH`] datagrams per call, each behind the IPv4
/// and UDP headers that name its source.
fn send_raw<B: AsRef<[u8]>>(
    raw: &OwnedFd,
    mmsg: &mut MultiHeaders<SockaddrIn>,
    port: u16,
    items: &[(Ipv4Addr, SocketAddrV4, B)],
    headers: &mut Vec<[u8; HEADERS]>,
) -> usize {
    let mut failed = 0;
    for chunk in items.chunks(BATCH) {
        headers.clear();
        headers.extend(chunk.iter().map(|(source, destination, bytes)| {
            ip_udp_header(*source, port, *destination, bytes.as_ref().len())
        }));
        let mut done = 0;
        while done < chunk.len() {
            let slices: Vec<[IoSlice<'_>; 2]> = chunk[done..]
                .iter()
                .zip(&headers[done..])
                .map(|((_, _, bytes), h)| [IoSlice::new(h), IoSlice::new(bytes.as_ref())])
                .collect();
            // The kernel routes a raw datagram by this address; the port is in our header.
            let addrs: Vec<Option<SockaddrIn>> = chunk[done..]
                .iter()
                .map(|(_, d, _)| Some(SockaddrIn::from(SocketAddrV4::new(*d.ip(), 0))))
                .collect();
            let none: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                raw.as_raw_fd(),
                mmsg,
                &slices,
                &addrs,
                none,
                MsgFlags::empty(),
            ) {
                Ok(results) => done += results.count().max(1),
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // The first datagram left failed: skip it, keep the rest.
                    failed += 1;
                    done += 1;
                }
            }
        }
    }
    failed
}

/// The IPv4 header (no options; length, identification and checksum are the kernel's) and
/// UDP header (checksum zero: none) of a datagram of `len` bytes.
fn ip_udp_header(
    source: Ipv4Addr,
    source_port: u16,
    destination: SocketAddrV4,
    len: usize,
) -> [u8; HEADERS] {
    let mut h = [0u8; HEADERS];
    h[0] = 0x45; // version 4, 5 words
    h[6] = 0x40; // don't fragment
    h[8] = 64; // time to live
    h[9] = 17; // UDP
    h[12..16].copy_from_slice(&source.octets());
    h[16..20].copy_from_slice(&destination.ip().octets());
    h[20..22].copy_from_slice(&source_port.to_be_bytes());
    h[22..24].copy_from_slice(&destination.port().to_be_bytes());
    h[24..26].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    h
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
    /// The raw datagrams' IPv4 and UDP headers, one batch at a time.
    headers: Vec<[u8; HEADERS]>,
}

impl<B> Default for SendBatch<B> {
    fn default() -> Self {
        SendBatch {
            items: Vec::new(),
            headers: Vec::with_capacity(BATCH),
        }
    }
}

impl<B> SendBatch<B> {
    /// Queues `bytes` for `destination`, sent from `source`.
    pub fn push(&mut self, source: Ipv4Addr, destination: SocketAddrV4, bytes: B) {
        self.items.push((source, destination, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Whether this process runs as root (and so may open a raw socket), per /proc.
    fn root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
    }

    /// A datagram leaves from the address chosen for it, and the reply comes back labelled
    /// with that address: the two facts the load generator's routing rests on. Both ways of
    /// sending: the raw socket's batches and one `sendmsg` per datagram.
    #[test]
    fn sends_from_the_chosen_loopback_address_and_reports_where_replies_went() {
        let mut multi = MultiSocket::bind(1 << 20, Duration::from_secs(5)).unwrap();
        assert_eq!(
            multi.batched_sends(),
            root(),
            "a raw socket opens exactly when running as root"
        );
        check_round_trip(&mut multi, 3);
        multi.raw = None;
        check_round_trip(&mut multi, 5);
    }

    fn check_round_trip(multi: &mut MultiSocket, third: u8) {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let SocketAddr::V4(peer_addr) = peer.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let sources = [
            Ipv4Addr::new(127, 10, 0, third),
            Ipv4Addr::new(127, 10, 1, third),
        ];
        let mut batch = SendBatch::default();
        for (i, source) in sources.iter().enumerate() {
            batch.push(*source, peer_addr, vec![i as u8, 0xc0, 0xa9]);
        }
        assert_eq!(multi.send(&mut batch), 0);

        let mut buf = [0u8; 16];
        let mut replies = Vec::new();
        for _ in &sources {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            let SocketAddr::V4(from) = from else {
                unreachable!("IPv4 only")
            };
            assert_eq!(&buf[1..n], [0xc0, 0xa9], "the bytes arrive whole");
            assert_eq!(*from.ip(), sources[usize::from(buf[0])]);
            peer.send_to(&[buf[0] + 100], from).unwrap();
            replies.push(from);
        }

        let mut got = Vec::new();
        let mut recv = RecvBatch::new();
        while got.len() < sources.len() {
            let n = multi.recv(&mut recv, true).unwrap();
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
