//! CoAP over TCP (RFC 8323) through the mio stream driver on real loopback sockets: requests
//! and responses, many in flight, corked writes, block-wise bodies byte-exact, several clients in one user
//! poll, a refused connect and one never answered, a server that closes, resets, goes away
//! or releases the connection, a client that releases it, a connection beyond the session
//! limit, a peer that never reads (backpressure) and one that floods Pings without reading,
//! and libcoap's client against our server.

mod stream_common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{MessageClass, RequestType, ResponseType};
use coap_engine::{
    CloseReason, Config, ConnectionFailure, Error, Event, ExchangeError, FailureReason, Limits,
    SendErrorKind, TransmissionParameters,
};
use coap_engine_mio::mio::{Events, Poll, Token};
use coap_engine_mio::StreamDriver;
use stream_common::*;

fn client() -> StreamDriver {
    StreamDriver::new(tcp()).unwrap()
}

fn session_failure(failure: ConnectionFailure) -> ExchangeError {
    ExchangeError::SessionFailed(FailureReason::Connection(failure))
}

#[test]
fn a_request_is_answered_over_tcp() {
    let (server, seen) = Server::start(tcp());
    let mut client = client();
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(client.connections(), 1, "connecting on the first request");
    let response = outcome(&mut client, id).unwrap();
    assert_eq!(
        response.header.code,
        MessageClass::Response(ResponseType::Content)
    );
    assert_eq!(response.payload, b"hello");
    wait_for(&seen, "a session", |e| {
        matches!(e, Event::SessionNew { .. })
    });
    // Everything the client wrote was reported written.
    assert_eq!(client.unwritten_bytes(server.addr), Some(0));
}

#[test]
fn corked_writes_wait_and_leave_together_on_uncork() {
    let (server, _) = Server::start(tcp());
    let mut client = client();
    let id = client.request(server.addr, &get("hello")).unwrap();
    outcome(&mut client, id).unwrap();
    assert_eq!(client.unwritten_bytes(server.addr), Some(0));
    client.cork();
    let ids: Vec<_> = (0..3)
        .map(|_| client.request(server.addr, &get("hello")).unwrap())
        .collect();
    client.drive();
    let held = client.unwritten_bytes(server.addr).unwrap();
    assert!(
        held > 3 * 3,
        "three requests held back, {held} bytes queued"
    );
    assert!(
        client.next_timeout() != Some(StdDuration::ZERO),
        "held writes are not work to wake up for"
    );
    client.uncork();
    assert_eq!(
        client.unwritten_bytes(server.addr),
        Some(0),
        "uncorked: written at once, in one send"
    );
    for id in ids {
        assert_eq!(outcome(&mut client, id).unwrap().payload, b"hello");
    }
}

#[test]
fn a_ping_is_answered_with_a_pong() {
    let (server, _) = Server::start(tcp());
    let mut client = client();
    let id = client.ping(server.addr).unwrap();
    run_until(&mut client, "pong", |_, e| {
        assert!(!matches!(e, Event::PingFailed { .. }), "{e:?}");
        matches!(e, Event::Pong { id: i, .. } if *i == id)
    });
}

#[test]
fn a_request_is_answered_over_ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("IPv6 loopback unavailable on this machine: test not applicable");
        return;
    }
    let (server, _) = Server::start_on("[::1]:0", tcp());
    let mut client = client();
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, b"hello");
}

#[test]
fn many_requests_in_flight_on_one_connection_all_complete() {
    // A stream has no NSTART (RFC 8323: no acknowledgements), so all 200 are in flight at
    // once: the server must be willing to hold them all.
    let server_config = Config {
        limits: Limits {
            max_pending_requests: 256,
            ..Limits::default()
        },
        ..tcp()
    };
    let (server, _) = Server::start(server_config);
    let config = Config {
        limits: Limits {
            // They wait for the connection to open in the session's queue.
            max_queued_requests: 256,
            max_exchanges: 256,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut client = StreamDriver::new(config).unwrap();
    let mut pending = std::collections::HashMap::new();
    for i in 0..200 {
        let body = format!("request {i}").into_bytes();
        let id = client
            .request(server.addr, &request(RequestType::Post, "echo", &body))
            .unwrap();
        pending.insert(id, body);
    }
    run_until(&mut client, "200 responses", |_, e| {
        match e {
            Event::Response { id, response, .. } => {
                let body = pending.remove(id).expect("one response per request");
                assert_eq!(response.payload, body);
            }
            Event::RequestFailed { error, .. } => panic!("a request failed: {error}"),
            _ => {}
        }
        pending.is_empty()
    });
    let events = server.stop();
    let sessions = events
        .iter()
        .filter(|e| matches!(e, Event::SessionNew { .. }))
        .count();
    assert_eq!(sessions, 1, "all on one connection");
}

#[test]
fn large_bodies_go_block_wise_and_arrive_byte_exact() {
    let (server, _) = Server::start(tcp());
    let mut client = client();
    // Down: a 60000-byte representation in Block2 blocks.
    let id = client.request(server.addr, &get("big/60000")).unwrap();
    let response = outcome(&mut client, id).unwrap();
    assert_eq!(response.payload.len(), 60_000);
    assert!(response.payload == pattern(60_000), "the body differs");
    // Up: 40000 bytes in Block1 blocks, reassembled by the server.
    let body = pattern(40_000);
    let id = client
        .request(server.addr, &request(RequestType::Put, "sum", &body))
        .unwrap();
    let response = outcome(&mut client, id).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&response.payload),
        String::from_utf8_lossy(&summary(&body))
    );
}

#[test]
fn a_server_serves_several_clients_in_one_user_poll() {
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 5;
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let mut server = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp()).unwrap();
    let to = server.local_addr().unwrap();
    server
        .register(poll.registry(), Token(1000)..Token(2000))
        .unwrap();
    let mut clients: Vec<StreamDriver> = (0..CLIENTS).map(|_| client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let first = 2000 + 100 * i;
        c.register(poll.registry(), Token(first)..Token(first + 100))
            .unwrap();
        for r in 0..REQUESTS {
            let body = format!("client {i} request {r}").into_bytes();
            c.request(to, &request(RequestType::Post, "echo", &body))
                .unwrap();
        }
    }
    let mut answers: Vec<Vec<Vec<u8>>> = vec![Vec::new(); CLIENTS];
    let mut server_sessions = 0;
    let give_up = StdInstant::now() + GIVE_UP;
    while answers.iter().map(Vec::len).sum::<usize>() < CLIENTS * REQUESTS {
        assert!(StdInstant::now() < give_up, "answers so far: {answers:?}");
        let timeout = clients
            .iter()
            .chain([&server])
            .filter_map(StreamDriver::next_timeout)
            .min()
            .unwrap_or(StdDuration::from_millis(100));
        poll.poll(&mut events, Some(timeout)).unwrap();
        for event in events.iter() {
            for d in clients.iter_mut().chain([&mut server]) {
                if d.owns(event.token()) {
                    d.handle_event(event);
                }
            }
        }
        server.handle_timeout();
        while let Some(event) = server.poll_event() {
            server_sessions += usize::from(matches!(event, Event::SessionNew { .. }));
            resources(&mut server, &event);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            c.handle_timeout();
            while let Some(event) = c.poll_event() {
                match event {
                    Event::Response { response, .. } => answers[i].push(response.payload),
                    Event::RequestFailed { error, .. } => panic!("client {i}: {error}"),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(server_sessions, CLIENTS);
    assert_eq!(server.connections(), CLIENTS);
    for (i, mut got) in answers.into_iter().enumerate() {
        got.sort();
        let mut want: Vec<Vec<u8>> = (0..REQUESTS)
            .map(|r| format!("client {i} request {r}").into_bytes())
            .collect();
        want.sort();
        assert_eq!(got, want, "client {i} got its own answers");
    }
}

#[test]
fn a_refused_connection_fails_the_request_with_the_reason() {
    let closed: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut client = client();
    let id = client.request(closed, &get("hello")).unwrap();
    let refused = session_failure(ConnectionFailure::ConnectFailed(SendErrorKind::Refused));
    assert_eq!(outcome(&mut client, id).unwrap_err(), refused);
    assert_eq!(client.connections(), 0, "nothing left behind");
}

/// A peer that accepts one connection and reads from it until it has seen `until` in what
/// the client wrote (or only waits for the first bytes, reading nothing, if `read` is false),
/// then drops the connection.
fn peer_that_drops(read: bool, until: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(GIVE_UP)).unwrap();
        if !read {
            // Unread bytes in the receive queue make the kernel answer the close with RST.
            let mut one = [0; 1];
            stream.peek(&mut one).unwrap();
            return;
        }
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        while !seen.windows(until.len()).any(|w| w == until) {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed first");
            seen.extend_from_slice(&buf[..n]);
        }
    });
    (addr, thread)
}

#[test]
fn a_server_that_closes_without_release_fails_the_request_with_closed() {
    let (addr, peer) = peer_that_drops(true, b"never-answered");
    let mut client = client();
    let id = client.request(addr, &get("never-answered")).unwrap();
    let (mut request_failed, mut session_failed) = (None, None);
    run_until(
        &mut client,
        "the request's and the session's end",
        |_, e| {
            match e {
                Event::RequestFailed { id: i, error, .. } if *i == id => {
                    request_failed = Some(*error)
                }
                Event::SessionFailed { reason, .. } => session_failed = Some(*reason),
                _ => {}
            }
            request_failed.is_some() && session_failed.is_some()
        },
    );
    peer.join().unwrap();
    assert_eq!(
        session_failed,
        Some(FailureReason::Connection(ConnectionFailure::Closed))
    );
    assert_eq!(
        request_failed,
        Some(session_failure(ConnectionFailure::Closed))
    );
}

#[test]
fn a_server_that_resets_the_connection_fails_the_request_with_reset() {
    let (addr, peer) = peer_that_drops(false, b"");
    let mut client = client();
    let id = client.request(addr, &get("never-answered")).unwrap();
    assert_eq!(
        outcome(&mut client, id).unwrap_err(),
        session_failure(ConnectionFailure::Reset)
    );
    peer.join().unwrap();
    assert_eq!(client.connections(), 0);
}

#[test]
fn a_server_driver_that_goes_away_fails_the_pending_request() {
    let (server, seen) = Server::start(tcp());
    let mut client = client();
    let addr = server.addr;
    let id = client.request(addr, &get("silent")).unwrap();
    let server_stopped = std::thread::spawn(move || {
        wait_for(&seen, "the request", |e| matches!(e, Event::Request { .. }));
        server.stop(); // drops the driver, and with it the connection
    });
    assert_eq!(
        outcome(&mut client, id).unwrap_err(),
        session_failure(ConnectionFailure::Closed)
    );
    server_stopped.join().unwrap();
}

#[test]
fn a_session_the_server_releases_ends_in_order_and_the_next_request_reconnects() {
    let (server, seen) = Server::start(tcp());
    let mut client = client();
    let id = client.request(server.addr, &get("bye")).unwrap();
    let events = run_until(&mut client, "the session's close", |_, e| {
        matches!(e, Event::SessionClosed { .. })
    });
    let response = events.iter().find_map(|e| match e {
        Event::Response {
            id: i, response, ..
        } if *i == id => Some(response.payload.clone()),
        _ => None,
    });
    assert_eq!(response.as_deref(), Some(&b"bye"[..]));
    assert!(events.iter().any(|e| matches!(e, Event::Released { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::SessionClosed {
            reason: CloseReason::Released,
            ..
        })
    ));
    assert_eq!(client.connections(), 0);
    // A new request opens a new connection.
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, b"hello");
    let mut sessions = 0;
    let give_up = StdInstant::now() + GIVE_UP;
    while sessions < 2 {
        let left = give_up.saturating_duration_since(StdInstant::now());
        match seen.recv_timeout(left) {
            Ok(Event::SessionNew { .. }) => sessions += 1,
            Ok(_) => {}
            Err(_) => panic!("the server saw {sessions} sessions, not 2"),
        }
    }
}

/// Runs `driver` in `poll` for up to `timeout`, returning its events.
fn pump(
    driver: &mut StreamDriver,
    poll: &mut Poll,
    events: &mut Events,
    timeout: StdDuration,
) -> Vec<Event> {
    let timeout = driver.next_timeout().map_or(timeout, |t| t.min(timeout));
    poll.poll(events, Some(timeout)).unwrap();
    for event in events.iter() {
        driver.handle_event(event);
    }
    driver.handle_timeout();
    std::iter::from_fn(|| driver.poll_event()).collect()
}

#[test]
fn a_peer_that_never_reads_gets_queue_full_and_nothing_grows_without_bound() {
    const MAX_UNWRITTEN: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        transmission: TransmissionParameters {
            nstart: 1_000_000,
            ..TransmissionParameters::default()
        },
        limits: Limits {
            max_exchanges: 1_000_000,
            max_unwritten_bytes: MAX_UNWRITTEN,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut client = StreamDriver::new(config).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    client
        .register(poll.registry(), Token(0)..Token(10))
        .unwrap();
    let body = vec![0x55; 1000];
    let post = request(RequestType::Post, "sink", &body);
    client.request(addr, &post).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    // Until the connection is open the requests wait in a short queue: wait for the first
    // bytes.
    let give_up = StdInstant::now() + GIVE_UP;
    peer.set_nonblocking(true).unwrap();
    while peer.peek(&mut [0; 1]).is_err() {
        assert!(StdInstant::now() < give_up, "the client never wrote");
        pump(
            &mut client,
            &mut poll,
            &mut events,
            StdDuration::from_millis(10),
        );
    }
    peer.set_nonblocking(false).unwrap();
    let (mut sent, mut refused) = (1usize, false);
    while !refused {
        assert!(
            sent < 1_000_000,
            "a billion bytes in and no QueueFull: writes are not limited"
        );
        assert!(
            StdInstant::now() < give_up,
            "no QueueFull after {sent} requests"
        );
        match client.request(addr, &post) {
            Ok(_) => sent += 1,
            Err(Error::QueueFull) => refused = true,
            Err(e) => panic!("unexpected error {e}"),
        }
        if sent % 64 == 0 {
            for e in pump(&mut client, &mut poll, &mut events, StdDuration::ZERO) {
                assert!(!matches!(e, Event::RequestFailed { .. }), "{e:?}");
            }
        }
    }
    // The kernel buffers took megabytes; the driver holds no more than the engine's limit
    // (plus the message that crossed it), however long the application keeps trying.
    let bound = MAX_UNWRITTEN + 2 * 1024;
    let queued = client.unwritten_bytes(addr).unwrap();
    assert!(queued > 0 && queued <= bound, "{queued} bytes queued");
    for _ in 0..1000 {
        assert_eq!(client.request(addr, &post), Err(Error::QueueFull));
        pump(&mut client, &mut poll, &mut events, StdDuration::ZERO);
    }
    let still = client.unwritten_bytes(addr).unwrap();
    assert!(still <= bound, "{still} bytes queued");
    // Once the peer reads, the writes complete and requests are accepted again.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    });
    let give_up = StdInstant::now() + GIVE_UP;
    loop {
        assert!(
            StdInstant::now() < give_up,
            "still refused once the peer reads"
        );
        pump(
            &mut client,
            &mut poll,
            &mut events,
            StdDuration::from_millis(50),
        );
        if client.request(addr, &post).is_ok() {
            sent += 1;
            break;
        }
    }
    while client.unwritten_bytes(addr) != Some(0) {
        assert!(StdInstant::now() < give_up, "the last writes never went");
        pump(
            &mut client,
            &mut poll,
            &mut events,
            StdDuration::from_millis(50),
        );
    }
    drop(client); // closes the connection, which ends the reader
                  // Through all the partial writes the stream stayed whole: our CSM, then every request,
                  // each frame intact.
    let frames = frames(&reader.join().unwrap());
    assert_eq!(frames.len(), 1 + sent);
    assert_eq!(frames[0].0, 0xE1, "a CSM first");
    let mut tail = vec![0xFF];
    tail.extend_from_slice(&body);
    for (code, body) in &frames[1..] {
        assert_eq!(*code, 0x02, "a POST");
        assert!(body.ends_with(&tail), "a request's payload differs");
    }
}

/// Splits an RFC 8323 byte stream into frames: (code, options and payload). Panics on a
/// stream that does not end at a frame's end.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let tkl = usize::from(bytes[0] & 0x0F);
        let (len, ext) = match bytes[0] >> 4 {
            13 => (usize::from(bytes[1]) + 13, 1),
            14 => (
                usize::from(u16::from_be_bytes([bytes[1], bytes[2]])) + 269,
                2,
            ),
            15 => (
                u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize + 65805,
                4,
            ),
            l => (usize::from(l), 0),
        };
        let start = 2 + ext + tkl;
        assert!(bytes.len() >= start + len, "a frame cut short");
        out.push((bytes[1 + ext], bytes[start..start + len].to_vec()));
        bytes = &bytes[start + len..];
    }
    out
}

#[test]
fn libcoap_client_gets_a_resource_from_our_server_over_coap_tcp() {
    let (server, _) = Server::start(tcp());
    let uri = format!("coap+tcp://127.0.0.1:{}/hello", server.addr.port());
    let output = Command::new("coap-client-notls")
        .args(["-m", "get", "-B", "20", &uri])
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs libcoap's coap-client-notls (package libcoap3-bin): {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end() == "hello",
        "coap-client-notls: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // A body in blocks, too.
    let uri = format!("coap+tcp://127.0.0.1:{}/big/5000", server.addr.port());
    let output = Command::new("coap-client-notls")
        .args(["-m", "get", "-B", "20", &uri])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // It ends what it prints with a newline.
    assert!(
        output.stdout.strip_suffix(b"\n") == Some(&pattern(5000)[..]),
        "coap-client-notls printed {} bytes, stderr: {}",
        output.stdout.len(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_connect_that_gets_no_answer_fails_after_the_connect_timeout() {
    // A listener that never accepts and whose accept queue is full: the kernel drops
    // further SYNs, so a connect to it is never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4096 {
        match std::net::TcpStream::connect_timeout(&addr, StdDuration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break, // the queue is full
        }
    }
    assert!(fillers.len() < 4096, "the accept queue never filled");
    let mut client = client();
    client.set_connect_timeout(StdDuration::from_millis(500));
    let started = StdInstant::now();
    let id = client.request(addr, &get("hello")).unwrap();
    let timed_out = session_failure(ConnectionFailure::ConnectFailed(SendErrorKind::TimedOut));
    assert_eq!(outcome(&mut client, id).unwrap_err(), timed_out);
    // Not an error the kernel reported at once: the driver's timeout ended it.
    assert!(started.elapsed() >= StdDuration::from_millis(500));
    assert_eq!(client.connections(), 0);
}

#[test]
fn a_session_the_client_closes_is_released_to_the_server_before_the_connection_ends() {
    let (server, seen) = Server::start(tcp());
    let mut client = client();
    let id = client.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut client, id).unwrap().payload, b"hello");
    let now = client.now();
    client
        .endpoint_mut()
        .close_session(now, server.addr)
        .unwrap();
    client.drive();
    assert_eq!(client.connections(), 0, "the engine has forgotten it");
    // The 7.04 Release is flushed before the FIN: the server hears it, and closes in order.
    wait_for(&seen, "the Release", |e| {
        matches!(e, Event::Released { .. })
    });
    wait_for(&seen, "the session's close", |e| {
        assert!(!matches!(e, Event::SessionFailed { .. }), "{e:?}");
        matches!(
            e,
            Event::SessionClosed {
                reason: CloseReason::Released,
                ..
            }
        )
    });
}

#[test]
fn a_connection_beyond_the_session_limit_is_closed_at_once() {
    let server_config = Config {
        limits: Limits {
            max_sessions: 1,
            ..Limits::default()
        },
        ..tcp()
    };
    let (server, _) = Server::start(server_config);
    let mut first = client();
    let id = first.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut first, id).unwrap().payload, b"hello");
    let mut second = client();
    let id = second.request(server.addr, &get("hello")).unwrap();
    // Closed at once: a FIN, or a reset if the request had already arrived unread.
    let error = outcome(&mut second, id).unwrap_err();
    assert!(
        error == session_failure(ConnectionFailure::Closed)
            || error == session_failure(ConnectionFailure::Reset),
        "{error}"
    );
    // The first client's session is untouched.
    let id = first.request(server.addr, &get("hello")).unwrap();
    assert_eq!(outcome(&mut first, id).unwrap().payload, b"hello");
}

#[test]
fn a_peer_that_floods_pings_and_never_reads_costs_bounded_memory() {
    const MAX_UNWRITTEN: usize = 16 * 1024;
    // What the peer sends: far more Pings than the Pongs the engine queues for it.
    const FLOOD: usize = 4 << 20;
    let config = Config {
        limits: Limits {
            max_unwritten_bytes: MAX_UNWRITTEN,
            ..Limits::default()
        },
        ..tcp()
    };
    let mut server = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    server
        .register(poll.registry(), Token(0)..Token(10))
        .unwrap();
    let mut peer = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let me = peer.local_addr().unwrap();
    peer.set_nonblocking(true).unwrap();
    // A CSM, then 7.02 Pings with 8-byte tokens, 64 KiB of them per write.
    let mut flood = vec![0x00, 0xE1];
    let ping = [0x08u8, 0xE2, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut chunk = Vec::new();
    while chunk.len() + ping.len() <= 64 * 1024 {
        chunk.extend_from_slice(&ping);
    }
    let (mut written, mut stalled) = (0usize, 0);
    let give_up = StdInstant::now() + GIVE_UP;
    // Until the flood is sent, or the peer's writes stop going anywhere for a while.
    while stalled < 20 && written < FLOOD {
        assert!(
            StdInstant::now() < give_up,
            "still reading after {written} bytes of pings"
        );
        let mut progressed = false;
        loop {
            let bytes = if flood.is_empty() { &chunk } else { &flood };
            match std::io::Write::write(&mut peer, bytes) {
                Ok(n) if !flood.is_empty() => {
                    flood.drain(..n);
                    progressed = true;
                }
                Ok(n) => {
                    written += n;
                    progressed = true;
                    if n < bytes.len() {
                        // Keep frames whole: finish this one before the next chunk.
                        let rest = n % ping.len();
                        if rest != 0 {
                            flood = ping[rest..].to_vec();
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        for e in pump(
            &mut server,
            &mut poll,
            &mut events,
            StdDuration::from_millis(20),
        ) {
            assert!(!matches!(e, Event::SessionFailed { .. }), "{e:?}");
        }
        stalled = if progressed { 0 } else { stalled + 1 };
    }
    // The engine stops answering Pings once the connection is backlogged: what waits for
    // the peer stays within its limit plus one message, however much it sent.
    let queued = server.unwritten_bytes(me).unwrap();
    assert!(
        queued <= MAX_UNWRITTEN + 64,
        "{queued} bytes of Pongs queued after {written} bytes of Pings"
    );
    assert!(written >= 1 << 20, "only {written} bytes of Pings went out");
}
