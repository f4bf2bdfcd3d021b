//! A CoAP client and server in one process on the smol adapter (`coap-engine-smol`).
//!
//! ```text
//! cargo run -p coap-engine-examples --bin smol-demo
//! ```
//! Starts a server on 127.0.0.1 (an ephemeral port) with `/hello` (answered at once) and
//! `/slow` (answered after 1.5 s, so the engine sends an Empty ACK and the answer goes out as a
//! separate response), then a client pings it, sends a CON GET, a NON GET, the slow GET and a
//! GET for a missing resource, prints each result and exits 0.

use std::time::{Duration, Instant};

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine_smol::Driver;

fn get(path: &str, mtype: MessageType) -> Packet {
    let mut request = Packet::new();
    request.header.code = MessageClass::Request(RequestType::Get);
    request.header.set_type(mtype);
    request.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    request
}

async fn handle(request: Packet) -> Packet {
    let path = request
        .get_option(CoapOption::UriPath)
        .and_then(|segments| segments.front())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    let mut response = Packet::new();
    let (code, body): (_, &[u8]) = match path.as_str() {
        "hello" => (ResponseType::Content, b"Hello from smol!"),
        "slow" => {
            smol::Timer::after(Duration::from_millis(1500)).await;
            (ResponseType::Content, b"sorry for the wait")
        }
        _ => (ResponseType::NotFound, b""),
    };
    response.header.code = MessageClass::Response(code);
    response.payload = body.to_vec();
    response
}

fn main() {
    let result = smol::block_on(async {
        let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
        let server_addr = server.local_addr()?;
        smol::spawn(server.incoming().serve(|_peer, request| handle(request))).detach();
        let _server = server.spawn();
        println!("server listening on coap://{server_addr}/ (/hello, /slow)");

        let client_driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
        let (client, events) = (client_driver.client(), client_driver.events());
        let _client = client_driver.spawn();

        let rtt = client.ping(server_addr).await?;
        println!("ping: pong after {rtt:?}");
        for (path, mtype) in [
            ("hello", MessageType::Confirmable),
            ("hello", MessageType::NonConfirmable),
            ("slow", MessageType::Confirmable),
            ("missing", MessageType::Confirmable),
        ] {
            let started = Instant::now();
            let response = client.request(server_addr, get(path, mtype)).await?;
            println!(
                "GET /{path} ({mtype:?}) -> {} {:?} as {:?} after {:?}",
                response.header.code,
                String::from_utf8_lossy(&response.payload),
                response.header.get_type(),
                started.elapsed(),
            );
        }
        while let Ok(Some(event)) = smol::future::or(async { Ok(events.recv().await) }, async {
            smol::Timer::after(Duration::from_millis(10)).await;
            Err(())
        })
        .await
        {
            println!("client event: {event:?}");
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    if let Err(e) = result {
        eprintln!("smol-demo: {e}");
        std::process::exit(1);
    }
}
