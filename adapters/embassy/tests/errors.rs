//! Every way an exchange can fail reaches the application as the engine's own
//! [`ExchangeError`], inside [`RequestError::Exchange`]: each one produced end to end over the
//! in-memory link, against a `CoapRunner` server or a hand-written UDP peer that sends the
//! crafted datagrams the engine would never send. (`SessionFailed` is produced in `link.rs`,
//! keepalive on a cut link and unreachable sends, and in `tcp.rs`; `Cancelled` in
//! `observe.rs`, by cancelling and by dropping an observation.)

#[allow(dead_code)] // the UDP socket buffers are for other tests
mod common;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use coap_engine::{Blockwise, Config, ExchangeError, SendErrorKind};
use coap_engine_embassy::{now, Client, RequestError, Server};
use embassy_futures::join::join;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, Timer};

use common::link::Link;
use common::pair::{get, path, raw_server, response, stacks, udp_runner, SERVER};
use common::{run_virtual, Task};

type TestClient = Client<'static, NoopRawMutex, 4>;

fn exchange(e: ExchangeError) -> Result<Packet, RequestError> {
    Err(RequestError::Exchange(e))
}

/// A client on one end of `link` and `server` (the tasks of whatever serves) on the other.
fn client_against(
    link: &Link,
    client_config: Config,
    server: impl FnOnce(embassy_net::Stack<'static>) -> Vec<Task<'static>>,
) -> (TestClient, Vec<Task<'static>>) {
    let (stack_c, stack_s, mut tasks) = stacks(link);
    let (chan_c, runner_c) = udp_runner(stack_c, 40000, client_config, 11);
    tasks.push(runner_c);
    tasks.extend(server(stack_s));
    (Client::new(chan_c), tasks)
}

/// A `CoapRunner` server on 5683 whose application answers with `answer`.
fn coap_server(
    answer: impl Fn(&Packet) -> Packet + 'static,
) -> impl FnOnce(embassy_net::Stack<'static>) -> Vec<Task<'static>> {
    move |stack| {
        let (channels, runner) = udp_runner(stack, 5683, Config::default(), 12);
        let server = Server::new(channels);
        let app = common::task(async move {
            loop {
                let incoming = server.next_request().await;
                server.respond(incoming.id, answer(&incoming.request)).await;
            }
        });
        vec![runner, app]
    }
}

/// A hand-written peer on 5683.
fn raw(
    answer: impl FnMut(&Packet) -> Option<Packet> + 'static,
) -> impl FnOnce(embassy_net::Stack<'static>) -> Vec<Task<'static>> {
    move |stack| vec![raw_server(stack, 5683, answer)]
}

/// A piggybacked answer to `request`: an ACK with its Message ID and token.
fn ack(request: &Packet, code: ResponseType, payload: &[u8]) -> Packet {
    let mut p = response(code, payload);
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = request.header.message_id;
    p.set_token(request.get_token().to_vec());
    p
}

/// A Block2 option value (RFC 7959 §2.2): block `num`, `more` to come, size 2^(szx+4).
fn block2(num: u32, more: bool, szx: u8) -> Vec<u8> {
    let v = (num << 4) | ((more as u32) << 3) | szx as u32;
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// The block number a request asks for (0 without Block2).
fn asked_block(request: &Packet) -> u32 {
    request
        .get_first_option(CoapOption::Block2)
        .map(|v| v.iter().fold(0u32, |n, b| (n << 8) | *b as u32) >> 4)
        .unwrap_or(0)
}

#[test]
fn timeout_when_the_link_is_cut() {
    let link = Link::new();
    let (client, tasks) = client_against(
        &link,
        Config::default(),
        coap_server(|_| response(ResponseType::Content, b"hi")),
    );
    run_virtual(
        Duration::from_secs(200),
        async {
            assert_eq!(
                client.request(SERVER, get("x")).await.unwrap().payload,
                b"hi"
            );
            link.set_cut(true);
            let start = now();
            assert_eq!(
                client.request(SERVER, get("x")).await,
                exchange(ExchangeError::Timeout)
            );
            // Through all retransmissions (MAX_TRANSMIT_WAIT is 93 s with the defaults).
            assert!(now() - start >= coap_engine::Duration::from_secs(45));
        },
        tasks,
    );
}

#[test]
fn reset_when_the_server_answers_with_rst() {
    let link = Link::new();
    let (client, tasks) = client_against(
        &link,
        Config::default(),
        raw(|request| {
            let mut rst = Packet::new();
            rst.header.set_type(MessageType::Reset);
            rst.header.code = MessageClass::Empty;
            rst.header.message_id = request.header.message_id;
            Some(rst)
        }),
    );
    run_virtual(
        Duration::from_secs(10),
        async {
            assert_eq!(
                client.request(SERVER, get("x")).await,
                exchange(ExchangeError::Reset)
            );
        },
        tasks,
    );
}

#[test]
fn send_failed_when_no_transmission_can_be_sent() {
    // 0.0.0.0 is unaddressable: embassy-net refuses every send with `NoRoute`. Without
    // `fail_after_unreachable` the session lives on and the exchange ends on its last attempt.
    let link = Link::new();
    let (client, tasks) = client_against(&link, Config::default(), raw(|_| None));
    run_virtual(
        Duration::from_secs(200),
        async {
            let nowhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5683);
            assert_eq!(
                client.request(nowhere, get("x")).await,
                exchange(ExchangeError::SendFailed(SendErrorKind::Unreachable))
            );
        },
        tasks,
    );
}

#[test]
fn session_closed_while_a_request_is_pending() {
    let link = Link::new();
    let (client, tasks) = client_against(&link, Config::default(), raw(|_| None));
    run_virtual(
        Duration::from_secs(10),
        async {
            let close = async {
                Timer::after_millis(500).await;
                client.close_session(SERVER).await;
            };
            let (result, ()) = join(client.request(SERVER, get("x")), close).await;
            assert_eq!(result, exchange(ExchangeError::SessionClosed));
        },
        tasks,
    );
}

#[test]
fn body_too_large_for_blockwise_max_body_size() {
    let config = Config {
        blockwise: Blockwise {
            max_body_size: 2048,
            ..Blockwise::default()
        },
        ..Config::default()
    };
    let link = Link::new();
    let (client, tasks) = client_against(
        &link,
        config,
        coap_server(|request| match path(request).as_str() {
            "big" => response(ResponseType::Content, &[7; 5000]),
            _ => response(ResponseType::Content, &[7; 2000]),
        }),
    );
    run_virtual(
        Duration::from_secs(10),
        async {
            // Just under the bound: reassembled.
            let fits = client.request(SERVER, get("fits")).await.unwrap();
            assert_eq!(fits.payload.len(), 2000);
            assert_eq!(
                client.request(SERVER, get("big")).await,
                exchange(ExchangeError::BodyTooLarge)
            );
        },
        tasks,
    );
}

#[test]
fn unexpected_block_when_the_server_skips_ahead() {
    // Block 0 of 64 bytes as asked, then block 3 when block 1 is asked for.
    let link = Link::new();
    let (client, tasks) = client_against(
        &link,
        Config::default(),
        raw(|request| {
            let asked = asked_block(request);
            let num = if asked == 0 { 0 } else { asked + 2 };
            let mut answer = ack(request, ResponseType::Content, &[b'a' + num as u8; 64]);
            answer.add_option(CoapOption::Block2, block2(num, true, 2));
            Some(answer)
        }),
    );
    run_virtual(
        Duration::from_secs(10),
        async {
            assert_eq!(
                client.request(SERVER, get("x")).await,
                exchange(ExchangeError::UnexpectedBlock)
            );
        },
        tasks,
    );
}

#[test]
fn representation_changed_when_the_etag_keeps_changing() {
    // A 3000-byte representation served block-wise by the engine (1024-byte blocks) whose
    // ETag changes with every request, so no two blocks match, even after a restart.
    let version = Rc::new(Cell::new(0u8));
    let counter = version.clone();
    let link = Link::new();
    let (client, tasks) = client_against(
        &link,
        Config::default(),
        coap_server(move |request| {
            let mut answer = response(ResponseType::Content, &[1; 3000]);
            if path(request) == "changing" {
                counter.set(counter.get() + 1);
                answer.add_option(CoapOption::ETag, vec![counter.get()]);
            } else {
                answer.add_option(CoapOption::ETag, vec![0]);
            }
            answer
        }),
    );
    run_virtual(
        Duration::from_secs(10),
        async {
            // A stable ETag: reassembled whole.
            let stable = client.request(SERVER, get("stable")).await.unwrap();
            assert_eq!(stable.payload, vec![1; 3000]);
            assert_eq!(
                client.request(SERVER, get("changing")).await,
                exchange(ExchangeError::RepresentationChanged)
            );
            // It did start over (§2.4): block 0 was asked for more than once.
            assert!(version.get() >= 4, "only {} requests", version.get());
        },
        tasks,
    );
}
