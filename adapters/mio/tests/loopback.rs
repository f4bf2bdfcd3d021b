//! The mio driver over real sockets: loopback request/response (IPv4, IPv6), WouldBlock-free
//! bulk traffic, an injected send failure and a route removed inside a network namespace the
//! test creates, each ending in a keepalive failure within the liveness bound; and, in another
//! namespace whose loopback is rate-limited, sends that hit WouldBlock and go out once the
//! socket is writable again.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::process::Command;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine::{
    Config, Duration, Endpoint, Event, ExchangeError, FailureReason, Keepalive, Limits,
    SendErrorKind, TransmissionParameters,
};
use coap_engine_mio::mio::{Events, Interest, Poll, Token};
use coap_engine_mio::{Driver, SendAction};

const SERVER: Token = Token(1);
const CLIENT: Token = Token(2);
/// Allowance for the OS timer and a loaded CI machine on top of the liveness bound.
const SLACK: Duration = Duration::from_millis(500);

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

/// Serves `/echo` (payload = path) on every request event.
fn serve(server: &mut Driver) {
    while let Some(event) = server.poll_event() {
        if let Event::Request { id, request, .. } = event {
            let mut r = Packet::new();
            r.header.code = MessageClass::Response(ResponseType::Content);
            r.payload = request
                .get_option(CoapOption::UriPath)
                .unwrap()
                .front()
                .unwrap()
                .clone();
            server.respond(id, &r).unwrap();
        }
    }
}

/// Runs a client and a server driver in one user-owned `mio::Poll` until `n` responses
/// arrived at the client, returning their payloads.
fn exchange(bind: &str, n: usize) -> Vec<Vec<u8>> {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(64);
    let mut server = Driver::bind(bind.parse().unwrap(), Config::default()).unwrap();
    let mut client = Driver::bind(bind.parse().unwrap(), Config::default()).unwrap();
    server.register(poll.registry(), SERVER).unwrap();
    client.register(poll.registry(), CLIENT).unwrap();
    let to = server.local_addr().unwrap();
    for i in 0..n {
        client.request(to, &get(&format!("r{i}"))).unwrap();
    }
    let mut got = Vec::new();
    let give_up = StdInstant::now() + StdDuration::from_secs(10);
    while got.len() < n {
        assert!(
            StdInstant::now() < give_up,
            "no answers after 10 s: {got:?}"
        );
        let timeout = match (server.next_timeout(), client.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        poll.poll(&mut events, timeout).unwrap();
        for event in events.iter() {
            match event.token() {
                SERVER => server.handle_event(event),
                CLIENT => client.handle_event(event),
                _ => unreachable!(),
            }
        }
        server.handle_timeout();
        client.handle_timeout();
        serve(&mut server);
        while let Some(event) = client.poll_event() {
            match event {
                Event::Response { response, .. } => got.push(response.payload),
                Event::RequestFailed { error, .. } => panic!("request failed: {error}"),
                _ => {}
            }
        }
    }
    got.sort();
    got
}

#[test]
fn request_response_over_ipv4_loopback_in_a_user_poll() {
    assert_eq!(exchange("127.0.0.1:0", 1), vec![b"r0".to_vec()]);
}

#[test]
fn many_requests_queue_under_nstart_and_all_complete() {
    let got = exchange("127.0.0.1:0", 20);
    let mut want: Vec<Vec<u8>> = (0..20).map(|i| format!("r{i}").into_bytes()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn request_response_over_ipv6_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("IPv6 loopback unavailable on this machine: test not applicable");
        return;
    }
    assert_eq!(exchange("[::1]:0", 1), vec![b"r0".to_vec()]);
}

#[test]
fn blocking_run_loop_serves_and_stops_on_handler_break() {
    let mut server = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let to = server.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut served = 0;
        server
            .run(&mut |d: &mut Driver, event: Event| {
                if let Event::Request { id, .. } = event {
                    let mut r = Packet::new();
                    r.header.code = MessageClass::Response(ResponseType::Content);
                    r.payload = b"pong".to_vec();
                    d.respond(id, &r).unwrap();
                    served += 1;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        served
    });
    let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let id = client.request(to, &get("x")).unwrap();
    let mut payload = None;
    client
        .run(&mut |_: &mut Driver, event: Event| match event {
            Event::Response {
                id: r, response, ..
            } if r == id => {
                payload = Some(response.payload);
                ControlFlow::Break(())
            }
            Event::RequestFailed { error, .. } => panic!("{error}"),
            _ => ControlFlow::Continue(()),
        })
        .unwrap();
    assert_eq!(payload.as_deref(), Some(&b"pong"[..]));
    assert_eq!(thread.join().unwrap(), 1);
}

/// Drives `client` (keepalive `k`, session open to `peer`) until its session fails; checks
/// every send failed as Unreachable and the failure came within the liveness bound.
fn expect_keepalive_failure(client: &mut Driver, peer: SocketAddr, k: Keepalive) {
    let now = client.now();
    client
        .endpoint_mut()
        .set_keepalive(now, peer, Some(k))
        .unwrap();
    client.drive();
    // Silence counts from the later of the last message heard and the keepalive's start.
    let last_heard = client
        .endpoint()
        .session_info(peer)
        .unwrap()
        .last_heard
        .max(now);
    let id = client.request(peer, &get("doomed")).unwrap();
    let (mut send_failures, mut request_failed) = (0, false);
    let give_up = StdInstant::now() + StdDuration::from_secs(10);
    let mut seen_failure = None;
    client
        .run(&mut |d: &mut Driver, event: Event| {
            assert!(
                StdInstant::now() < give_up,
                "no keepalive failure after 10 s"
            );
            match event {
                Event::SendFailed { kind, .. } => {
                    assert_eq!(kind, SendErrorKind::Unreachable);
                    send_failures += 1;
                }
                Event::RequestFailed { id: r, error, .. } if r == id => {
                    assert!(matches!(
                        error,
                        ExchangeError::SessionFailed(FailureReason::KeepaliveTimeout { .. })
                    ));
                    request_failed = true;
                }
                Event::SessionFailed { reason, .. } => {
                    seen_failure = Some((reason, d.now()));
                    return ControlFlow::Break(());
                }
                _ => {}
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let (reason, at) = seen_failure.unwrap();
    let FailureReason::KeepaliveTimeout { silent_for } = reason else {
        panic!("unexpected failure {reason:?}");
    };
    assert!(silent_for >= k.bound(), "failed early: {silent_for:?}");
    assert!(
        at - last_heard <= k.bound() + SLACK,
        "failed late: {:?} after last heard",
        at - last_heard
    );
    assert!(
        request_failed,
        "the pending request must end with the session"
    );
    assert!(
        send_failures >= 2,
        "the request and the ping failed to send"
    );
}

const FAST: Keepalive = Keepalive {
    interval: Duration::from_millis(300),
    timeout: Duration::from_millis(300),
};

#[test]
fn injected_unreachable_sends_end_in_keepalive_failure_within_bound() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // never answers
    let peer = server.local_addr().unwrap();
    let endpoint = Endpoint::new(Config::default(), 42).unwrap();
    let socket =
        coap_engine_mio::mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client = Driver::from_parts(socket, endpoint);
    client.set_send_filter(|_| SendAction::Fail(SendErrorKind::Unreachable));
    let now = client.now();
    client.endpoint_mut().open_session(now, peer).unwrap();
    expect_keepalive_failure(&mut client, peer, FAST);
}

const NETNS_ENV: &str = "COAP_MIO_TEST_NETNS";
const NETNS_ADDR: &str = "10.213.0.1";

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): install iproute2 (Debian package `iproute2`); this test needs it and root to create a network namespace"));
    assert!(
        out.status.success(),
        "`ip {}` failed (this test needs root and iproute2): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real ENETUNREACH: inside a namespace this test creates, a client talks to a server on
/// an address of `lo`; the address is then removed mid-session, every send fails with
/// "Network is unreachable", and keepalive reports the failure within its bound.
#[test]
fn route_removed_in_netns_ends_in_keepalive_failure_within_bound() {
    if std::env::var_os(NETNS_ENV).is_some() {
        return netns_child();
    }
    let name = format!("coapmio{}", std::process::id());
    ip(&["netns", "add", &name]);
    let _guard = Netns(name.clone());
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    ip(&[
        "-n",
        &name,
        "addr",
        "add",
        &format!("{NETNS_ADDR}/32"),
        "dev",
        "lo",
    ]);
    let out = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "route_removed_in_netns_ends_in_keepalive_failure_within_bound",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, &name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child in netns failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

fn netns_child() {
    let addr: SocketAddr = format!("{NETNS_ADDR}:0").parse().unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    let mut server = Driver::bind(addr, Config::default()).unwrap();
    let mut client = Driver::bind(addr, Config::default()).unwrap();
    server.register(poll.registry(), SERVER).unwrap();
    client.register(poll.registry(), CLIENT).unwrap();
    let peer = server.local_addr().unwrap();
    client.request(peer, &get("hello")).unwrap();
    let give_up = StdInstant::now() + StdDuration::from_secs(5);
    'answered: loop {
        assert!(
            StdInstant::now() < give_up,
            "no answer before the route was removed"
        );
        poll.poll(&mut events, Some(StdDuration::from_millis(100)))
            .unwrap();
        for event in events.iter() {
            match event.token() {
                SERVER => server.handle_event(event),
                _ => client.handle_event(event),
            }
        }
        server.handle_timeout();
        client.handle_timeout();
        serve(&mut server);
        while let Some(event) = client.poll_event() {
            if let Event::Response { .. } = event {
                break 'answered;
            }
        }
    }
    // The link goes away mid-session; the server is never driven again.
    client.deregister().unwrap();
    ip(&["addr", "del", &format!("{NETNS_ADDR}/32"), "dev", "lo"]);
    expect_keepalive_failure(&mut client, peer, FAST);
}

const WOULD_BLOCK_ENV: &str = "COAP_MIO_TEST_WOULD_BLOCK";
/// Requests sent in one burst: about 400 KB of datagrams, several times what the client
/// socket's default send buffer (212,992 bytes, kernel overhead included) holds.
const BURST: usize = 400;

/// The WouldBlock → WRITABLE path for real. In a network namespace this test creates, `lo`
/// gets a token-bucket qdisc (500 KB/s): datagrams wait in it, charged to the sending socket,
/// so a burst fills the client's send buffer and `send_to` returns WouldBlock. The driver
/// must keep the blocked transmit, ask mio for WRITABLE, and send it (then the rest) when
/// the queue drains, losing nothing and reporting no failure. The requests are
/// Non-confirmable, so a lost one would never be retransmitted: the receiver getting every
/// one of them, exactly once, proves nothing was dropped.
#[test]
fn would_block_sends_wait_for_writable_and_all_go_out() {
    if std::env::var_os(WOULD_BLOCK_ENV).is_some() {
        return would_block_child();
    }
    let name = format!("coapmiowb{}", std::process::id());
    ip(&["netns", "add", &name]);
    let _guard = Netns(name.clone());
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    let tbf = "tc qdisc add dev lo root tbf rate 4mbit burst 16kb limit 4mb";
    ip(&["netns", "exec", &name]
        .into_iter()
        .chain(tbf.split(' '))
        .collect::<Vec<_>>());
    let out = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "would_block_sends_wait_for_writable_and_all_go_out",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WOULD_BLOCK_ENV, &name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child in netns failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

fn would_block_child() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(64);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut receiver = coap_engine_mio::mio::net::UdpSocket::bind(any).unwrap();
    poll.registry()
        .register(&mut receiver, SERVER, Interest::READABLE)
        .unwrap();
    let config = Config {
        transmission: TransmissionParameters {
            nstart: BURST,
            ..TransmissionParameters::default()
        },
        limits: Limits {
            max_exchanges: BURST,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut client = Driver::bind(any, config).unwrap();
    client.register(poll.registry(), CLIENT).unwrap();
    let to = receiver.local_addr().unwrap();
    for i in 0..BURST {
        let mut post = get(&i.to_string());
        post.header.code = MessageClass::Request(RequestType::Post);
        post.header.set_type(MessageType::NonConfirmable);
        post.payload = vec![0x55; 1000];
        client.request(to, &post).unwrap();
    }
    // `drive` stops only at WouldBlock: requests still in the engine mean the socket refused.
    assert!(
        client.endpoint().has_transmits(),
        "the burst never hit WouldBlock, so this test exercised nothing"
    );

    let (mut seen, mut writable_events) = (BTreeSet::new(), 0);
    let mut buf = [0u8; 2048];
    let give_up = StdInstant::now() + StdDuration::from_secs(10);
    while seen.len() < BURST {
        assert!(
            StdInstant::now() < give_up,
            "{} of {BURST} requests arrived in 10 s",
            seen.len()
        );
        // No `handle_timeout`: nothing in the engine is due (a NON request waits 93 s for its
        // response), so only the driver's WRITABLE event can make it send again.
        poll.poll(&mut events, Some(StdDuration::from_millis(100)))
            .unwrap();
        for event in events.iter() {
            if event.token() == CLIENT {
                writable_events += usize::from(event.is_writable());
                client.handle_event(event);
                continue;
            }
            while let Ok((n, _)) = receiver.recv_from(&mut buf) {
                let request = Packet::from_bytes(&buf[..n]).unwrap();
                let path = request.get_option(CoapOption::UriPath).unwrap();
                let i: usize = String::from_utf8_lossy(path.front().unwrap())
                    .parse()
                    .unwrap();
                assert!(seen.insert(i), "request {i} arrived twice");
            }
        }
        while let Some(event) = client.poll_event() {
            assert!(
                !matches!(
                    event,
                    Event::SendFailed { .. } | Event::RequestFailed { .. }
                ),
                "a blocked send must be retried, not failed: {event:?}"
            );
        }
    }
    assert!(writable_events > 0, "sent without a WRITABLE event");
    assert!(!client.endpoint().has_transmits());
}
