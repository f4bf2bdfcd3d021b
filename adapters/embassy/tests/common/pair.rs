//! Two embassy-net stacks on one in-memory link, and UDP CoAP runners or hand-written UDP
//! peers on them. Everything is leaked: runners, sockets and stacks borrow each other for the
//! test's whole life, and leaking spares the lifetimes' bookkeeping.
#![allow(dead_code)] // each test binary uses its own part

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Endpoint};
use coap_engine_embassy::{Client, CoapChannels, CoapRunner, Server};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Stack, StackResources};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;

use super::link::{stack, Link};
use super::{task, Task};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(SERVER_IP), 5683);

pub type Channels = CoapChannels<NoopRawMutex, 4>;

pub fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// Both stacks over `link` (client side 0 at [`CLIENT_IP`], server side 1 at [`SERVER_IP`]),
/// with their embassy-net runners as tasks.
pub fn stacks(link: &Link) -> (Stack<'static>, Stack<'static>, Vec<Task<'static>>) {
    let (stack_c, net_c) = stack(link.port(0), CLIENT_IP, leak(StackResources::<4>::new()), 1);
    let (stack_s, net_s) = stack(link.port(1), SERVER_IP, leak(StackResources::<4>::new()), 2);
    let (net_c, net_s) = (leak(net_c), leak(net_s));
    (stack_c, stack_s, vec![task(net_c.run()), task(net_s.run())])
}

/// A UDP socket on `stack` bound to `port`, with 4 KiB buffers each way.
pub fn udp_socket(stack: Stack<'static>, port: u16) -> UdpSocket<'static> {
    let mut socket = UdpSocket::new(
        stack,
        leak([PacketMetadata::EMPTY; 8]),
        leak([0; 4096]),
        leak([PacketMetadata::EMPTY; 8]),
        leak([0; 4096]),
    );
    socket.bind(port).expect("bind");
    socket
}

/// A `CoapRunner` for `config` on `port` of `stack`, as a task, and its channels.
pub fn udp_runner(
    stack: Stack<'static>,
    port: u16,
    config: Config,
    seed: u64,
) -> (&'static Channels, Task<'static>) {
    let channels: &'static Channels = leak(Channels::new());
    let endpoint = Endpoint::new(config, seed).unwrap();
    let runner = leak(CoapRunner::new(endpoint, udp_socket(stack, port), channels));
    (channels, task(runner.run()))
}

/// A client (`client_config`, port 40000) and a server (`Config::default()`, port 5683) on
/// the two ends of `link`, with every task they need.
pub fn udp_pair(
    link: &Link,
    client_config: Config,
) -> (
    Client<'static, NoopRawMutex, 4>,
    Server<'static, NoopRawMutex, 4>,
    Vec<Task<'static>>,
) {
    let (stack_c, stack_s, mut tasks) = stacks(link);
    let (chan_c, runner_c) = udp_runner(stack_c, 40000, client_config, 11);
    let (chan_s, runner_s) = udp_runner(stack_s, 5683, Config::default(), 12);
    tasks.push(runner_c);
    tasks.push(runner_s);
    (Client::new(chan_c), Server::new(chan_s), tasks)
}

/// A hand-written UDP peer on `port` of `stack`: every datagram that parses as CoAP goes to
/// `answer`, and what it returns is sent back to the sender.
pub fn raw_server(
    stack: Stack<'static>,
    port: u16,
    mut answer: impl FnMut(&Packet) -> Option<Packet> + 'static,
) -> Task<'static> {
    let socket = udp_socket(stack, port);
    task(async move {
        let mut buf = [0; 2048];
        loop {
            let (n, meta) = socket.recv_from(&mut buf).await.expect("recv");
            let Ok(packet) = Packet::from_bytes(&buf[..n]) else {
                continue;
            };
            if let Some(reply) = answer(&packet) {
                let bytes = reply.to_bytes().expect("encodable reply");
                socket.send_to(&bytes, meta.endpoint).await.expect("send");
            }
        }
    })
}

pub fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    for segment in path.split('/') {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

pub fn path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// A response with `code` and `payload`.
pub fn response(code: ResponseType, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    p.payload = payload.to_vec();
    p
}

pub fn code(p: &Packet) -> MessageClass {
    p.header.code
}
