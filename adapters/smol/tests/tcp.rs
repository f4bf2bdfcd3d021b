//! CoAP over TCP (RFC 8323) through the smol `StreamDriver` on real loopback sockets: round
//! trips, concurrency, block-wise bodies, several clients, connections that cannot be opened,
//! that the peer closes, resets or aborts, an orderly Release, keepalive, write backpressure
//! against a peer that never reads, and libcoap's server.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    CloseReason, Config, ConnectionFailure, Duration, Event, ExchangeError, FailureReason,
    Keepalive, Limits, SendErrorKind,
};
use coap_engine_smol::{Client, Error, Events, StreamDriver};
use smol::future::{self, FutureExt as _};
use smol::Timer;

/// Fails the test if `fut` takes longer than `secs` (a hang guard, not a performance check).
async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    fut.or(async {
        Timer::after(StdDuration::from_secs(secs)).await;
        panic!("timed out after {secs} s")
    })
    .await
}

fn request(method: RequestType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.payload = payload.to_vec();
    p
}

fn get(path: &str) -> Packet {
    request(RequestType::Get, path, b"")
}

fn path_of(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .and_then(|l| l.front())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

/// A server on `addr` answering with the request's payload, or "hello <path>" when it has
/// none.
fn server(addr: &str, config: Config) -> (SocketAddr, Events, smol::Task<io::Result<()>>) {
    let driver = StreamDriver::bind(addr.parse().unwrap(), config).unwrap();
    let local = driver.local_addr().unwrap();
    let events = driver.events();
    smol::spawn(driver.incoming().serve(|_peer, request| async move {
        let mut response = Packet::new();
        response.header.code = MessageClass::Response(ResponseType::Content);
        response.payload = if request.payload.is_empty() {
            format!("hello {}", path_of(&request)).into_bytes()
        } else {
            request.payload
        };
        response
    }))
    .detach();
    (local, events, driver.spawn())
}

fn client(config: Config) -> (Client, Events, smol::Task<io::Result<()>>) {
    let driver = StreamDriver::client_only(config).unwrap();
    (driver.client(), driver.events(), driver.spawn())
}

/// The next event `pick` accepts, skipping others.
async fn next_event<T>(events: &Events, pick: impl Fn(Event) -> Option<T>) -> T {
    loop {
        let event = events.recv().await.expect("the driver stopped");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

fn connection_failure(failure: ConnectionFailure) -> Result<Packet, Error> {
    Err(Error::Exchange(ExchangeError::SessionFailed(
        FailureReason::Connection(failure),
    )))
}

/// A port nothing listens on (bound and released again).
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// RFC 8323 §3.3: where the frame at the start of `buf` ends, and its code; `None` until
/// its header is complete.
fn frame_at(buf: &[u8]) -> Option<(usize, u8)> {
    let first = *buf.first()?;
    let tkl = usize::from(first & 0x0F);
    let ext = match first >> 4 {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    let head = buf.get(1..1 + ext)?;
    let len = match first >> 4 {
        13 => usize::from(head[0]) + 13,
        14 => usize::from(u16::from_be_bytes([head[0], head[1]])) + 269,
        15 => u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize + 65_805,
        l => usize::from(l),
    };
    let code = *buf.get(1 + ext)?;
    Some((2 + ext + tkl + len, code))
}

/// The codes of the complete frames in `bytes`.
fn frame_codes(mut bytes: &[u8]) -> Vec<u8> {
    let mut codes = Vec::new();
    while let Some((len, code)) = frame_at(bytes).filter(|(len, _)| *len <= bytes.len()) {
        codes.push(code);
        bytes = &bytes[len..];
    }
    codes
}

const CSM: u8 = 0xE1; // 7.01
const ABORT: u8 = 0xE5; // 7.05
const PUT: u8 = 0x03; // 0.03
/// An empty CSM: what a peer must send first (RFC 8323 §5.3).
const EMPTY_CSM: [u8; 2] = [0x00, CSM];

// ---------------------------------------------------------------------------------------------
// Exchanges

fn round_trip(local: &str) {
    smol::block_on(within(20, async {
        let (server_addr, server_events, _server) = server(local, Config::default());
        let (client, events, _client) = client(Config::default());
        let response = client.request(server_addr, get("there")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        assert_eq!(response.payload, b"hello there");
        assert!(
            matches!(events.recv().await, Some(Event::SessionNew { peer }) if peer == server_addr)
        );
        assert!(matches!(
            events.recv().await,
            Some(Event::SessionEstablished { peer }) if peer == server_addr
        ));
        let peer = next_event(&server_events, |e| match e {
            Event::SessionNew { peer } => Some(peer),
            _ => None,
        })
        .await;
        assert_eq!(peer.ip(), server_addr.ip());
        // A ping is a 7.02 Ping answered by a 7.03 Pong on the same connection.
        client.ping(server_addr).await.unwrap();
    }));
}

#[test]
fn request_response_over_tcp_ipv4() {
    round_trip("127.0.0.1:0");
}

#[test]
fn request_response_over_tcp_ipv6() {
    round_trip("[::1]:0");
}

#[test]
fn a_server_without_an_incoming_handle_answers_not_found() {
    smol::block_on(within(20, async {
        let driver = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        let server_addr = driver.local_addr().unwrap();
        // A client handle keeps the driver running; no Incoming is ever taken.
        let (_server_client, _server) = (driver.client(), driver.spawn());
        let (client, _events, _client) = client(Config::default());
        let response = client.request(server_addr, get("x")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
    }));
}

#[test]
fn many_concurrent_requests_share_one_connection_and_each_gets_its_answer() {
    smol::block_on(within(60, async {
        // Room for all of them at once on both sides (by default a client queues 64 requests
        // while its connection opens and has 64 in flight, and a server lets 32 wait for the
        // application).
        let server_config = Config {
            limits: Limits {
                max_pending_requests: 256,
                ..Limits::default()
            },
            ..Config::default()
        };
        let client_config = Config {
            limits: Limits {
                max_exchanges: 256,
                max_queued_requests: 256,
                ..Limits::default()
            },
            ..Config::default()
        };
        let (server_addr, server_events, _server) = server("127.0.0.1:0", server_config);
        let (client, _events, _client) = client(client_config);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let client = client.clone();
                smol::spawn(async move {
                    let body = format!("request {i}").into_bytes();
                    let put = request(RequestType::Put, "echo", &body);
                    (body, client.request(server_addr, put).await)
                })
            })
            .collect();
        for task in tasks {
            let (body, response) = task.await;
            assert_eq!(response.unwrap().payload, body);
        }
        // One connection carried them all: the server saw one session, and no second one
        // by the time a further request is answered.
        client.request(server_addr, get("last")).await.unwrap();
        let mut sessions = 0;
        while let Some(Some(event)) = future::poll_once(server_events.recv()).await {
            sessions += usize::from(matches!(event, Event::SessionNew { .. }));
        }
        assert_eq!(sessions, 1);
    }));
}

#[test]
fn a_large_body_goes_both_ways_block_wise_and_arrives_byte_exact() {
    smol::block_on(within(60, async {
        // A server that stores what is PUT to it and returns it on GET.
        let driver = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        let server_addr = driver.local_addr().unwrap();
        let stored = Arc::new(Mutex::new(Vec::new()));
        smol::spawn(driver.incoming().serve(move |_peer, request| {
            let stored = stored.clone();
            async move {
                let mut response = Packet::new();
                let code = match request.header.code {
                    MessageClass::Request(RequestType::Put) => {
                        *stored.lock().unwrap() = request.payload;
                        ResponseType::Changed
                    }
                    _ => {
                        response.payload = stored.lock().unwrap().clone();
                        ResponseType::Content
                    }
                };
                response.header.code = MessageClass::Response(code);
                response
            }
        }))
        .detach();
        let _server = driver.spawn();
        let (client, _events, _client) = client(Config::default());
        // Larger than a message (1152 bytes by default): Block1 up, Block2 back (RFC 7959).
        let body: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let put = request(RequestType::Put, "store", &body);
        let response = client.request(server_addr, put).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
        let response = client.request(server_addr, get("store")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        assert_eq!(response.payload.len(), body.len());
        assert!(response.payload == body, "the body came back changed");
    }));
}

#[test]
fn several_clients_are_served_each_on_its_own_connection() {
    smol::block_on(within(60, async {
        let (server_addr, server_events, _server) = server("127.0.0.1:0", Config::default());
        let clients: Vec<_> = (0..5).map(|_| client(Config::default())).collect();
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .flat_map(|(c, (client, _, _))| {
                (0..10).map(move |i| {
                    let client = client.clone();
                    smol::spawn(async move {
                        let body = format!("client {c} request {i}").into_bytes();
                        let response = client
                            .request(server_addr, request(RequestType::Post, "x", &body))
                            .await;
                        assert_eq!(response.unwrap().payload, body);
                    })
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let mut peers = std::collections::HashSet::new();
        while peers.len() < 5 {
            peers.insert(
                next_event(&server_events, |e| match e {
                    Event::SessionNew { peer } => Some(peer),
                    _ => None,
                })
                .await,
            );
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// Connections that fail

#[test]
fn a_refused_connection_fails_the_request_with_connect_failed_refused() {
    smol::block_on(within(20, async {
        let (client, events, _client) = client(Config::default());
        let nobody = closed_port();
        let result = client.request(nobody, get("x")).await;
        assert_eq!(
            result,
            connection_failure(ConnectionFailure::ConnectFailed(SendErrorKind::Refused))
        );
        let (peer, reason) = next_event(&events, |e| match e {
            Event::SessionFailed { peer, reason } => Some((peer, reason)),
            _ => None,
        })
        .await;
        assert_eq!(peer, nobody);
        assert_eq!(
            reason,
            FailureReason::Connection(ConnectionFailure::ConnectFailed(SendErrorKind::Refused))
        );
    }));
}

#[test]
fn a_connect_that_gets_no_answer_times_out_as_unreachable() {
    // A listener whose accept queue is full: the kernel drops further connection requests
    // unanswered, as a host that is gone would.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let addr = listener.local_addr().unwrap();
    let _queued: Vec<TcpStream> = (0..2)
        .filter_map(|_| TcpStream::connect_timeout(&addr, StdDuration::from_millis(300)).ok())
        .collect();
    smol::block_on(within(30, async {
        let mut driver = StreamDriver::client_only(Config::default()).unwrap();
        driver.set_connect_timeout(StdDuration::from_millis(500));
        let (client, _task) = (driver.client(), driver.spawn());
        let result = client.request(addr, get("x")).await;
        assert_eq!(
            result,
            connection_failure(ConnectionFailure::ConnectFailed(SendErrorKind::TimedOut))
        );
    }));
}

/// A TCP server that is not CoAP: takes one connection, waits until bytes arrived on it,
/// then does `then` with it, and keeps it until the test ends.
fn raw_server(then: impl FnOnce(&mut TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(StdDuration::from_secs(20)))
            .unwrap();
        let mut probe = [0u8; 1];
        stream.peek(&mut probe).unwrap();
        then(&mut stream);
        std::thread::sleep(StdDuration::from_secs(30));
    });
    addr
}

#[test]
fn a_peer_that_closes_its_end_fails_the_pending_request_as_closed() {
    let addr = raw_server(|s| {
        // Reads what came (the client's CSM and request), then ends its side in order.
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    });
    smol::block_on(within(20, async {
        let (client, _events, _client) = client(Config::default());
        let result = client.request(addr, get("x")).await;
        assert_eq!(result, connection_failure(ConnectionFailure::Closed));
    }));
}

#[test]
fn a_peer_that_resets_the_connection_fails_the_pending_request_as_reset() {
    // Closing a socket with unread bytes in it makes the kernel send a reset (RFC 2525 §2.17).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(StdDuration::from_secs(20)))
            .unwrap();
        stream.peek(&mut [0u8; 1]).unwrap();
        drop(stream);
    });
    smol::block_on(within(20, async {
        let (client, _events, _client) = client(Config::default());
        let result = client.request(addr, get("x")).await;
        assert_eq!(result, connection_failure(ConnectionFailure::Reset));
    }));
}

#[test]
fn a_server_reports_a_client_that_resets_its_connection() {
    smol::block_on(within(20, async {
        let (server_addr, server_events, _server) = server("127.0.0.1:0", Config::default());
        let peer = smol::unblock(move || {
            let mut s = TcpStream::connect(server_addr).unwrap();
            s.write_all(&EMPTY_CSM).unwrap();
            // Wait for the server's CSM, leave it unread, and close: a reset.
            s.set_read_timeout(Some(StdDuration::from_secs(20)))
                .unwrap();
            s.peek(&mut [0u8; 1]).unwrap();
            let local = s.local_addr().unwrap();
            drop(s);
            local
        })
        .await;
        let (failed, reason) = next_event(&server_events, |e| match e {
            Event::SessionFailed { peer, reason } => Some((peer, reason)),
            _ => None,
        })
        .await;
        assert_eq!(failed, peer);
        assert_eq!(reason, FailureReason::Connection(ConnectionFailure::Reset));
    }));
}

#[test]
fn broken_framing_is_answered_with_an_abort_that_arrives_before_the_orderly_close() {
    smol::block_on(within(20, async {
        let (server_addr, server_events, _server) = server("127.0.0.1:0", Config::default());
        let received = smol::unblock(move || {
            let mut s = TcpStream::connect(server_addr).unwrap();
            s.set_read_timeout(Some(StdDuration::from_secs(20)))
                .unwrap();
            // A CSM, then a frame with token length 9, which RFC 8323 reserves.
            s.write_all(&EMPTY_CSM).unwrap();
            s.write_all(&[0x09, 0x01]).unwrap();
            // Everything the server sends, up to its end of stream (an error if it resets).
            let mut received = Vec::new();
            s.read_to_end(&mut received).unwrap();
            received
        })
        .await;
        assert_eq!(frame_codes(&received), vec![CSM, ABORT]);
        let reason = next_event(&server_events, |e| match e {
            Event::SessionFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
        assert_eq!(
            reason,
            FailureReason::Connection(ConnectionFailure::Aborted {
                bad_csm_option: None
            })
        );
    }));
}

#[test]
fn closing_a_session_sends_a_release_the_server_sees() {
    smol::block_on(within(20, async {
        let (server_addr, server_events, _server) = server("127.0.0.1:0", Config::default());
        let (client, events, _client) = client(Config::default());
        client.request(server_addr, get("x")).await.unwrap();
        client.close_session(server_addr).await.unwrap();
        let closed = next_event(&events, |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
        assert_eq!(closed, CloseReason::Local);
        let released = next_event(&server_events, |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason),
            Event::SessionFailed { reason, .. } => panic!("the server saw {reason:?}"),
            _ => None,
        })
        .await;
        assert_eq!(released, CloseReason::Released);
        // A new request opens a new connection.
        let response = client.request(server_addr, get("again")).await.unwrap();
        assert_eq!(response.payload, b"hello again");
    }));
}

#[test]
fn a_server_at_its_session_limit_closes_further_connections_at_once() {
    smol::block_on(within(20, async {
        let config = Config {
            limits: Limits {
                max_sessions: 1,
                ..Limits::default()
            },
            ..Config::default()
        };
        let (server_addr, _server_events, _server) = server("127.0.0.1:0", config);
        let (first, _events, _first) = client(Config::default());
        first.request(server_addr, get("1")).await.unwrap();
        let (second, _events2, _second) = client(Config::default());
        match second.request(server_addr, get("2")).await {
            Err(Error::Exchange(ExchangeError::SessionFailed(FailureReason::Connection(
                ConnectionFailure::Closed | ConnectionFailure::Reset,
            )))) => {}
            other => panic!("the second client got {other:?}"),
        }
        // The first connection is untouched.
        let response = first.request(server_addr, get("3")).await.unwrap();
        assert_eq!(response.payload, b"hello 3");
    }));
}

#[test]
fn keepalive_fails_a_connection_whose_peer_stays_silent() {
    // A peer that accepts and never answers: no CSM, no Pong.
    let addr = raw_server(|s| {
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink), Ok(1..)) {}
    });
    smol::block_on(within(20, async {
        let keepalive = Keepalive {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(300),
        };
        let config = Config {
            keepalive: Some(keepalive),
            ..Config::default()
        };
        let (client, events, _client) = client(config);
        client.open_session(addr).await.unwrap();
        let reason = next_event(&events, |e| match e {
            Event::SessionFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .await;
        assert!(
            matches!(reason, FailureReason::KeepaliveTimeout { .. }),
            "{reason:?}"
        );
    }));
}

// ---------------------------------------------------------------------------------------------
// Backpressure

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Packet, Error>> + 'a>>;

/// Sends `n` PUT requests of `body` to `addr`: those the engine took (still pending), and
/// how many it refused with `QueueFull`.
async fn offer<'a>(
    client: &'a Client,
    addr: SocketAddr,
    body: &[u8],
    n: usize,
) -> (Vec<Pending<'a>>, usize) {
    let batch: Vec<Pending<'a>> = (0..n)
        .map(|_| {
            let put = request(RequestType::Put, "p", body);
            Box::pin(client.request(addr, put)) as Pending<'a>
        })
        .collect();
    let mut taken = Vec::new();
    let mut refused = 0;
    let mut outcome = |result: Option<Result<Packet, Error>>| match result {
        None => false,
        Some(Err(Error::Rejected(coap_engine::Error::QueueFull))) => {
            refused += 1;
            true
        }
        Some(other) => panic!("a request ended with {other:?}"),
    };
    let mut started = Vec::new();
    for mut fut in batch {
        if !outcome(future::poll_once(&mut fut).await) {
            started.push(fut);
        }
    }
    // The driver handles calls in order: once this one returns, so have the requests.
    let _ = client.set_keepalive(addr, None).await;
    for mut fut in started {
        if !outcome(future::poll_once(&mut fut).await) {
            taken.push(fut);
        }
    }
    (taken, refused)
}

#[test]
fn a_peer_that_never_reads_makes_requests_queue_full_and_gets_only_what_was_accepted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (read_now, read_rx) = std::sync::mpsc::channel::<usize>();
    // Holds the connection without reading until told how many requests to expect, then
    // reads until it has them all, and reports how many it read.
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let expected = read_rx.recv().unwrap();
        s.set_read_timeout(Some(StdDuration::from_secs(30)))
            .unwrap();
        let (mut buf, mut chunk, mut puts) = (Vec::new(), vec![0u8; 64 * 1024], 0);
        while puts < expected {
            let n = s.read(&mut chunk).expect("reading the backlog");
            assert!(n > 0, "end of stream after {puts} requests");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((len, code)) = frame_at(&buf).filter(|(len, _)| *len <= buf.len()) {
                puts += usize::from(code == PUT);
                buf.drain(..len);
            }
        }
        // Nothing more follows: a request written now would be one the client refused.
        s.set_read_timeout(Some(StdDuration::from_millis(500)))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(n) => puts += frame_codes(&chunk[..n]).len(),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
        puts
    });

    const UNWRITTEN: usize = 16 * 1024;
    let config = Config {
        limits: Limits {
            max_unwritten_bytes: UNWRITTEN,
            max_exchanges: 100_000,
            max_queued_requests: 100_000,
            ..Limits::default()
        },
        response_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let driver = StreamDriver::client_only(config).unwrap();
    let (client, _task) = (driver.client(), driver.spawn());
    let body = vec![0x5A; 1000];
    let accepted = smol::block_on(within(120, async {
        let mut pending = Vec::new();
        // Until the kernel's buffers are full and the engine refuses every request: while
        // they still take bytes, a write in progress may hold the backlog over the limit for
        // a moment only.
        loop {
            assert!(pending.len() < 20_000, "requests still taken after 20 MB");
            let (taken, refused) = offer(&client, addr, &body, 100).await;
            pending.extend(taken);
            if refused == 100 {
                break;
            }
            Timer::after(StdDuration::from_millis(20)).await;
        }
        let before = pending.len();
        // 2 MB more offered: nearly all refused, the backlog stays bounded.
        for _ in 0..20 {
            let (taken, _) = offer(&client, addr, &body, 100).await;
            pending.extend(taken);
            Timer::after(StdDuration::from_millis(20)).await;
        }
        let late = pending.len() - before;
        assert!(
            late * body.len() <= 256 * 1024,
            "{late} more requests taken while the peer read nothing"
        );
        pending
    }));
    read_now.send(accepted.len()).unwrap();
    let read = peer.join().unwrap();
    // Every request the engine took was written, and none it refused.
    assert_eq!(read, accepted.len());
    drop(accepted);
}

// ---------------------------------------------------------------------------------------------
// Against libcoap

/// libcoap's example server on a free loopback port, killed when dropped.
struct Libcoap(Child);

impl Drop for Libcoap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn libcoap_server() -> (Libcoap, SocketAddr) {
    let addr = closed_port();
    let child = Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &addr.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test needs libcoap's coap-server-notls (Debian: libcoap3-bin): {e}")
        });
    let server = Libcoap(child);
    // Ready once it accepts connections.
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return (server, addr);
        }
        std::thread::sleep(StdDuration::from_millis(100));
    }
    panic!("coap-server-notls did not listen on {addr} within 10 s");
}

#[test]
fn libcoap_server_over_tcp_answers_and_stores_a_block_wise_body() {
    let (_server, addr) = libcoap_server();
    smol::block_on(within(30, async {
        let (client, _events, _client) = client(Config::default());
        let mut root = get("");
        root.clear_option(CoapOption::UriPath);
        let response = client.request(addr, root).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        let text = String::from_utf8_lossy(&response.payload);
        assert!(text.contains("libcoap"), "{text}");
        // A body of 5000 bytes up (Block1) and back (Block2).
        let body: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let put = request(RequestType::Put, "example_data", &body);
        let stored = client.request(addr, put).await.unwrap();
        assert!(
            matches!(
                stored.header.code,
                MessageClass::Response(ResponseType::Changed | ResponseType::Created)
            ),
            "{:?}",
            stored.header.code
        );
        let back = client.request(addr, get("example_data")).await.unwrap();
        assert!(back.payload == body, "{} bytes back", back.payload.len());
    }));
}
