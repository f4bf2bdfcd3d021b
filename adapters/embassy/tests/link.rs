//! Two embassy-net stacks joined by an in-memory link, a coap-engine-embassy client on one and
//! a server on the other, in virtual time (embassy-time's mock driver).

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    Config, Duration, Endpoint, Event, ExchangeError, FailureReason, Keepalive, SendErrorKind,
};
use coap_engine_embassy::{now, Client, CoapChannels, CoapRunner, RequestError, Server};
use embassy_net::StackResources;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::Timer;

use common::link::{stack, Link};
use common::{run_virtual, task, SocketBuffers, STEP};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(SERVER_IP), 5683);

type Channels = CoapChannels<NoopRawMutex, 4>;

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

fn path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .and_then(|l| l.front())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

/// Answers `/hello` at once, `/slow` after 3 s (a separate response), the rest 4.04.
async fn serve(server: Server<'_, NoopRawMutex, 4>) -> ! {
    loop {
        let incoming = server.next_request().await;
        let mut response = Packet::new();
        let code = match path(&incoming.request).as_str() {
            "hello" => {
                response.payload = b"world".to_vec();
                ResponseType::Content
            }
            "slow" => {
                Timer::after_secs(3).await;
                response.payload = b"late".to_vec();
                ResponseType::Content
            }
            _ => ResponseType::NotFound,
        };
        response.header.code = MessageClass::Response(code);
        server.respond(incoming.id, response).await;
    }
}

/// Builds both stacks and endpoints and runs `scenario(client, link)` against the server.
macro_rules! with_pair {
    ($client_config:expr, |$client:ident, $link:ident| $scenario:expr) => {{
        let $link = Link::new();
        let (mut res_c, mut res_s) = (StackResources::<2>::new(), StackResources::<2>::new());
        let (stack_c, mut net_c) = stack($link.port(0), CLIENT_IP, &mut res_c, 1);
        let (stack_s, mut net_s) = stack($link.port(1), SERVER_IP, &mut res_s, 2);
        let (mut bufs_c, mut bufs_s) = (SocketBuffers::new(), SocketBuffers::new());
        let (chan_c, chan_s) = (Channels::new(), Channels::new());
        let client_ep = Endpoint::new($client_config, 11).unwrap();
        let server_ep = Endpoint::new(Config::default(), 12).unwrap();
        let mut coap_c = CoapRunner::new(client_ep, bufs_c.socket(stack_c, 40000), &chan_c);
        let mut coap_s = CoapRunner::new(server_ep, bufs_s.socket(stack_s, 5683), &chan_s);
        let $client = Client::new(&chan_c);
        let server = Server::new(&chan_s);
        let tasks = vec![
            task(net_c.run()),
            task(net_s.run()),
            task(coap_c.run()),
            task(coap_s.run()),
            task(serve(server)),
        ];
        run_virtual(
            embassy_time::Duration::from_secs(120),
            async { $scenario },
            tasks,
        )
    }};
}

#[test]
fn client_and_server_exchange_requests() {
    with_pair!(Config::default(), |client, link| {
        let _ = &link;
        let response = client.request(SERVER, get("hello")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        assert_eq!(response.payload, b"world");

        let missing = client.request(SERVER, get("nothing")).await.unwrap();
        assert_eq!(
            missing.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );

        // Answered after 3 s: an Empty ACK first, then a separate CON response.
        let start = now();
        let late = client.request(SERVER, get("slow")).await.unwrap();
        assert_eq!(late.payload, b"late");
        assert!(now() - start >= Duration::from_secs(3));

        // Several requests in flight at once.
        let (a, b) = embassy_futures::join::join(
            client.request(SERVER, get("hello")),
            client.request(SERVER, get("hello")),
        )
        .await;
        assert_eq!(
            (a.unwrap().payload, b.unwrap().payload),
            (b"world".to_vec(), b"world".to_vec())
        );

        client.ping(SERVER).await.expect("pong");

        // A request the engine refuses comes back as a typed error, nothing sent.
        let mut bad = get("hello");
        bad.header.code = MessageClass::Response(ResponseType::Content);
        assert!(matches!(
            client.request(SERVER, bad).await,
            Err(RequestError::Rejected(coap_engine::Error::NotARequest))
        ));

        // The session was announced to the client's event stream.
        assert!(matches!(client.next_event().await, Event::SessionNew { peer } if peer == SERVER));
        assert!(matches!(
            client.next_event().await,
            Event::SessionEstablished { .. }
        ));
    });
}

#[test]
fn keepalive_fails_the_session_when_the_link_is_cut() {
    let keepalive = Keepalive {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(3),
    };
    with_pair!(Config::default(), |client, link| {
        client.open_session(SERVER, Some(keepalive)).await;
        // Exchanges keep the session alive well past the bound while the link is up.
        for _ in 0..4 {
            assert_eq!(
                client.request(SERVER, get("hello")).await.unwrap().payload,
                b"world"
            );
            Timer::after_secs(4).await;
        }
        assert_eq!(
            client.request(SERVER, get("hello")).await.unwrap().payload,
            b"world"
        );
        let last_heard = now();
        link.set_cut(true);

        // A request pending on the dead link ends with the session's failure ...
        let failed = client.request(SERVER, get("hello"));
        // ... and the event stream reports it, within interval + timeout of the last answer.
        let event = async {
            loop {
                if let Event::SessionFailed { peer, reason } = client.next_event().await {
                    return (peer, reason, now());
                }
            }
        };
        let (result, (peer, reason, failed_at)) = embassy_futures::join::join(failed, event).await;
        assert_eq!(peer, SERVER);
        assert!(
            matches!(reason, FailureReason::KeepaliveTimeout { .. }),
            "{reason:?}"
        );
        assert!(
            matches!(
                result,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(
                    FailureReason::KeepaliveTimeout { .. }
                )))
            ),
            "{result:?}"
        );
        let silent = failed_at - last_heard;
        let bound =
            keepalive.interval + keepalive.timeout + Duration::from_micros(STEP.as_micros());
        assert!(silent <= bound, "failed after {silent:?}, bound {bound:?}");
        assert!(silent >= keepalive.interval, "failed too early: {silent:?}");
    });
}

#[test]
fn send_failure_is_reported_to_the_engine() {
    // 0.0.0.0 is unaddressable: embassy-net refuses the send with `SendError::NoRoute`, which
    // the runner reports as unreachable; with `fail_after_unreachable` the session fails at once.
    let config = Config {
        fail_after_unreachable: Some(1),
        ..Config::default()
    };
    with_pair!(config, |client, link| {
        let _ = &link;
        let nowhere = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5683);
        let result = client.request(nowhere, get("hello")).await;
        assert!(
            matches!(
                result,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(
                    FailureReason::Unreachable { .. }
                )))
            ),
            "{result:?}"
        );
        let mut saw_send_failed = false;
        loop {
            match client.next_event().await {
                Event::SendFailed { kind, .. } => {
                    assert_eq!(kind, SendErrorKind::Unreachable);
                    saw_send_failed = true;
                }
                Event::SessionFailed { .. } => break,
                _ => {}
            }
        }
        assert!(saw_send_failed);
    });
}
