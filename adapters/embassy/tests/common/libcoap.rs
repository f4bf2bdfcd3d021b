//! libcoap's `coap-server-notls` on 127.0.0.1, and a bridge that lets an embassy-net stack
//! reach it without privileges: the stack's driver takes IPv4/UDP packets from the stack and
//! sends their payload from a std `UdpSocket` to the server, and wraps the server's replies
//! in IPv4/UDP packets for the stack, as if the server were at [`BRIDGED_SERVER`].
#![allow(dead_code)] // each test binary uses its own part

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_net::{Config, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};

use super::{task, Task};

/// Where the embassy stack sees the server.
pub const BRIDGED_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5683);
/// The embassy stack's own address.
pub const BRIDGED_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

const PROGRAM: &str = "coap-server-notls";

/// A running `coap-server-notls`, killed when dropped.
pub struct LibcoapServer {
    child: Child,
    /// Its UDP address on the loopback.
    pub addr: SocketAddr,
}

impl LibcoapServer {
    /// Starts `coap-server-notls -A 127.0.0.1 -p PORT` on the first of `ports` where it
    /// answers a CoAP ping. Panics, naming the program, if it is not installed or never
    /// becomes ready.
    pub fn start(ports: impl IntoIterator<Item = u16>) -> LibcoapServer {
        for port in ports {
            let child = Command::new(PROGRAM)
                .args(["-A", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {PROGRAM} (libcoap 4.3's example server): {e}")
                });
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut server = LibcoapServer { child, addr };
            if server.answers_ping() {
                return server;
            }
            // Dropped: killed; the port may be someone else's, try the next.
        }
        panic!("{PROGRAM} never answered a CoAP ping on any of its ports");
    }

    /// Whether it answers a CoAP ping (an Empty CON) with Reset within 5 s, while it runs.
    fn answers_ping(&mut self) -> bool {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut mid: u16 = 0x1234;
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // it exited: the port was taken
            }
            mid = mid.wrapping_add(1);
            let [hi, lo] = mid.to_be_bytes();
            let _ = socket.send_to(&[0x40, 0x00, hi, lo], self.addr);
            let mut buf = [0; 64];
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                // Reset (type 3), Empty, our Message ID.
                if from == self.addr && n >= 4 && buf[0] >> 4 == 0x7 && buf[2..4] == [hi, lo] {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for LibcoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct State {
    /// Packets for the stack.
    inbox: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
    socket: UdpSocket,
    server: SocketAddr,
    /// The stack's address and port, learnt from its first packet to the server.
    client: Option<SocketAddrV4>,
}

/// The embassy-net driver of the bridge, and its pump.
#[derive(Clone)]
pub struct Bridge(Rc<RefCell<State>>);

impl Bridge {
    /// A bridge to `server` (a UDP address on the loopback).
    pub fn new(server: SocketAddr) -> Bridge {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback socket");
        socket.set_nonblocking(true).unwrap();
        Bridge(Rc::new(RefCell::new(State {
            inbox: VecDeque::new(),
            waker: None,
            socket,
            server,
            client: None,
        })))
    }

    /// The stack's packet to the bridged server goes to the real one; anything else is
    /// dropped.
    fn outgoing(&self, packet: &[u8]) {
        let Some((src, dst, payload)) = parse_udp(packet) else {
            return;
        };
        if dst != BRIDGED_SERVER {
            return;
        }
        let mut state = self.0.borrow_mut();
        state.client = Some(src);
        let _ = state.socket.send_to(payload, state.server);
    }

    /// Moves the server's datagrams to the stack, wrapped as if from [`BRIDGED_SERVER`].
    fn pump(&self) {
        let mut state = self.0.borrow_mut();
        let mut buf = [0; 2048];
        while let Ok((n, from)) = state.socket.recv_from(&mut buf) {
            let Some(client) = state.client else { continue };
            if from != state.server {
                continue;
            }
            let packet = udp_packet(BRIDGED_SERVER, client, &buf[..n]);
            state.inbox.push_back(packet);
        }
        if !state.inbox.is_empty() {
            if let Some(w) = state.waker.take() {
                w.wake();
            }
        }
    }

    /// A task that polls the loopback socket every millisecond (it cannot wake a task).
    pub fn pump_task(&self) -> Task<'static> {
        let bridge = self.clone();
        task(async move {
            loop {
                bridge.pump();
                embassy_time::Timer::after_millis(1).await;
            }
        })
    }

    /// An embassy-net stack at [`BRIDGED_CLIENT_IP`]/24 on this bridge.
    pub fn stack(
        &self,
        resources: &'static mut StackResources<4>,
    ) -> (Stack<'static>, Runner<'static, Bridge>) {
        let config = Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(BRIDGED_CLIENT_IP, 24),
            gateway: None,
            dns_servers: Default::default(),
        });
        embassy_net::new(self.clone(), config, resources, 3)
    }
}

/// A packet for the stack.
pub struct Rx(Vec<u8>);

/// Room for a packet from the stack.
pub struct Tx(Bridge);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.outgoing(&packet);
        r
    }
}

impl Driver for Bridge {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx)> {
        let mut state = self.0.borrow_mut();
        match state.inbox.pop_front() {
            Some(packet) => Some((Rx(packet), Tx(self.clone()))),
            None => {
                state.waker = Some(cx.waker().clone());
                None
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx> {
        Some(Tx(self.clone()))
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1280;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ip
    }
}

/// Source, destination and payload of an IPv4/UDP packet (no options beyond the header
/// length, no fragments).
pub fn parse_udp(packet: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, &[u8])> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = (packet[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if ihl < 20 || total > packet.len() || total < ihl + 8 {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    let udp = &packet[ihl..total];
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    let len = port(4) as usize;
    if len < 8 || len > udp.len() {
        return None;
    }
    let src = SocketAddrV4::new(ip(12), port(0));
    let dst = SocketAddrV4::new(ip(16), port(2));
    Some((src, dst, &udp[8..len]))
}

/// An IPv4/UDP packet from `src` to `dst` carrying `payload`, with both checksums.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]); // IPv4, 20-byte header, no DSCP
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, Don't Fragment
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let header_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&header_sum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // The pseudo-header of RFC 768: addresses, zero, protocol, UDP length.
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let udp_sum = match checksum(&[&pseudo, &p[20..]]) {
        0 => 0xffff, // 0 means "no checksum" in UDP over IPv4
        sum => sum,
    };
    p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts` (each of even length
/// but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = match pair {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from_be_bytes([*a, 0]),
                _ => 0,
            };
            sum += word as u32;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
