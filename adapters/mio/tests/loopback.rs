//! The mio driver over real sockets: loopback request/response (IPv4, IPv6), WouldBlock-free
//! bulk traffic, an injected send failure and a route removed inside a network namespace the
//! test creates, each ending in a keepalive failure within the liveness bound.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::process::Command;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    Config, Duration, Endpoint, Event, ExchangeError, FailureReason, Keepalive, SendErrorKind,
};
use coap_engine_mio::mio::{Events, Poll, Token};
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
