//! A CoAP server on a real UDP socket, driven by the sans-IO engine with nothing but std:
//! the whole adapter is the loop in `main` (read the clock, move datagrams, report send
//! failures, sleep until the engine's deadline).
//!
//! ```text
//! cargo run -p coap-engine --example udp_server            # listens on 127.0.0.1:5683
//! cargo run -p coap-engine --example udp_server -- [::1]:5684
//! coap-client-notls coap://127.0.0.1/hello                 # libcoap's client, or any other
//! ```
//! Resources: `/` and `/hello` (text), `/.well-known/core` (RFC 6690 link format).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant as StdInstant;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Endpoint, Event, Instant, SendErrorKind};

fn main() {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:5683")
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "udp_server: bad listen address: {e} (expected e.g. 127.0.0.1:5683 or [::1]:5683)"
            );
            std::process::exit(2);
        }
    };
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| {
        eprintln!("udp_server: cannot bind {addr}: {e}");
        std::process::exit(1);
    });
    let epoch = StdInstant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut endpoint = Endpoint::new(Config::default(), seed).expect("default config is valid");
    println!("coap-engine example server listening on coap://{addr}/ (resources: /, /hello, /.well-known/core)");

    let mut buf = vec![0u8; 65_535];
    loop {
        // Drain: transmits, then events, then sleep until the deadline or the next datagram.
        while let Some(t) = endpoint.poll_transmit() {
            if let Err(e) = socket.send_to(&t.payload, t.destination) {
                let kind = match e.kind() {
                    ErrorKind::ConnectionRefused => SendErrorKind::Refused,
                    ErrorKind::NetworkUnreachable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkDown => SendErrorKind::Unreachable,
                    _ if e.raw_os_error() == Some(90) => SendErrorKind::TooBig, // EMSGSIZE
                    _ => SendErrorKind::Other,
                };
                endpoint.handle_send_result(now(), t.id, Err(kind));
            }
        }
        while let Some(event) = endpoint.poll_event() {
            if let Event::Request { id, peer, request } = event {
                let response = answer(&request);
                println!(
                    "{peer} {} /{} -> {}",
                    request.header.code,
                    path(&request),
                    response.header.code
                );
                if let Err(e) = endpoint.respond(now(), id, &response) {
                    eprintln!("udp_server: cannot respond: {e}");
                }
            }
        }
        if endpoint.has_transmits() {
            continue;
        }
        let wait = endpoint.poll_timeout().map(|t| {
            std::time::Duration::from_micros(t.as_micros().saturating_sub(now().as_micros()).max(1))
        });
        socket.set_read_timeout(wait).expect("non-zero timeout");
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => endpoint.handle_datagram(now(), peer, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                endpoint.handle_timeout(now())
            }
            Err(e) => eprintln!("udp_server: receive failed: {e}"),
        }
    }
}

fn path(request: &Packet) -> String {
    let segments = request.get_option(CoapOption::UriPath).map(|l| {
        l.iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
    });
    segments.unwrap_or_default().join("/")
}

fn answer(request: &Packet) -> Packet {
    let mut response = Packet::new();
    let (code, body): (ResponseType, &[u8]) = match (request.header.code, path(request).as_str()) {
        (MessageClass::Request(RequestType::Get), "") => {
            (ResponseType::Content, b"coap-engine example server")
        }
        (MessageClass::Request(RequestType::Get), "hello") => {
            (ResponseType::Content, b"Hello, CoAP!")
        }
        (MessageClass::Request(RequestType::Get), ".well-known/core") => {
            response.add_option(CoapOption::ContentFormat, vec![40]);
            (
                ResponseType::Content,
                b"</>;title=\"General Info\",</hello>;rt=\"greeting\"",
            )
        }
        (MessageClass::Request(_), "" | "hello" | ".well-known/core") => {
            (ResponseType::MethodNotAllowed, b"")
        }
        _ => (ResponseType::NotFound, b""),
    };
    response.header.code = MessageClass::Response(code);
    response.payload = body.to_vec();
    response
}
