//! coap-engine-embassy on the host, in real time: two embassy-net stacks joined by an
//! in-memory link (the adapter tests' `Link`), a CoAP server on 10.0.0.2:5683 and a client on
//! 10.0.0.1, each runner in its own embassy task. The client GETs `/hello`, GETs `/slow`
//! (answered late, as a separate response), pings, then cuts the link and waits for its
//! keepalive to fail the session. Prints what happens and exits 0 (1 on a surprise).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant as StdInstant;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Duration, Endpoint, Event, Keepalive};
use coap_engine_embassy::{Client, CoapChannels, CoapRunner, Server};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, Stack, StackResources};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::Timer;

#[path = "../../../adapters/embassy/tests/common/link.rs"]
mod link;
use link::{stack, Link, Port};

type Channels = CoapChannels<NoopRawMutex, 4>;
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 5683);

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// A UDP socket on `stack` bound to `port`, with leaked buffers.
fn socket(stack: Stack<'static>, port: u16) -> UdpSocket<'static> {
    let mut s = UdpSocket::new(
        stack,
        leak([PacketMetadata::EMPTY; 8]),
        leak([0; 4096]),
        leak([PacketMetadata::EMPTY; 8]),
        leak([0; 4096]),
    );
    s.bind(port).expect("bind");
    s
}

#[embassy_executor::task(pool_size = 2)]
async fn net_task(mut runner: Runner<'static, Port>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = 2)]
async fn coap_task(mut runner: CoapRunner<'static, NoopRawMutex, 4>) -> ! {
    runner.run().await
}

/// The application side of the server: `/hello` at once, `/slow` after 1 s.
#[embassy_executor::task]
async fn server_task(server: Server<'static, NoopRawMutex, 4>) -> ! {
    loop {
        let incoming = server.next_request().await;
        let path = incoming
            .request
            .get_option(CoapOption::UriPath)
            .and_then(|l| l.front().cloned())
            .unwrap_or_default();
        let mut response = Packet::new();
        let (code, body): (_, &[u8]) = match path.as_slice() {
            b"hello" => (ResponseType::Content, b"Hello from embassy!"),
            b"slow" => {
                Timer::after_secs(1).await;
                (ResponseType::Content, b"sorry for the wait")
            }
            _ => (ResponseType::NotFound, b""),
        };
        response.header.code = MessageClass::Response(code);
        response.payload = body.to_vec();
        println!(
            "server: {} from {} -> {code:?}",
            String::from_utf8_lossy(&path),
            incoming.peer
        );
        server.respond(incoming.id, response).await;
    }
}

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

fn fail(what: &str) -> ! {
    eprintln!("embassy-hosted: {what}");
    std::process::exit(1)
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let link = Link::new();
    let (stack_c, net_c) = stack(
        link.port(0),
        Ipv4Addr::new(10, 0, 0, 1),
        leak(StackResources::<2>::new()),
        1,
    );
    let (stack_s, net_s) = stack(
        link.port(1),
        Ipv4Addr::new(10, 0, 0, 2),
        leak(StackResources::<2>::new()),
        2,
    );
    let (chan_c, chan_s): (&'static Channels, &'static Channels) =
        (leak(Channels::new()), leak(Channels::new()));
    let client_ep = Endpoint::new(Config::default(), 1).expect("valid config");
    let server_ep = Endpoint::new(Config::default(), 2).expect("valid config");
    spawner.spawn(net_task(net_c).expect("task"));
    spawner.spawn(net_task(net_s).expect("task"));
    spawner.spawn(
        coap_task(CoapRunner::new(client_ep, socket(stack_c, 40000), chan_c)).expect("task"),
    );
    spawner
        .spawn(coap_task(CoapRunner::new(server_ep, socket(stack_s, 5683), chan_s)).expect("task"));
    spawner.spawn(server_task(Server::new(chan_s)).expect("task"));

    let client = Client::new(chan_c);
    let start = StdInstant::now();
    for path in ["hello", "slow"] {
        match client.request(SERVER, get(path)).await {
            Ok(r) => println!(
                "client: GET /{path} -> {} {:?} after {:?}",
                r.header.code,
                String::from_utf8_lossy(&r.payload),
                start.elapsed()
            ),
            Err(e) => fail(&format!("GET /{path} failed: {e}")),
        }
    }
    match client.ping(SERVER).await {
        Ok(rtt) => println!("client: ping rtt {rtt:?}"),
        Err(e) => fail(&format!("ping failed: {e}")),
    }

    let keepalive = Keepalive {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    };
    client.open_session(SERVER, Some(keepalive)).await;
    link.set_cut(true);
    let cut = StdInstant::now();
    println!("client: link cut, keepalive {keepalive:?}");
    loop {
        match client.next_event().await {
            Event::SessionFailed { peer, reason } => {
                println!(
                    "client: session with {peer} failed after {:?}: {reason}",
                    cut.elapsed()
                );
                break;
            }
            other => println!("client: {other:?}"),
        }
    }
    std::process::exit(0);
}
