//! CoAP over TCP (RFC 8323) through `TcpRunner`: two embassy-net stacks joined by an in-memory
//! link in virtual time (embassy-time's mock driver), the client a `TcpRunner`, the server
//! either a `TcpRunner` too or a hand-written RFC 8323 peer on a bare `TcpSocket`.

#[allow(dead_code)] // the UDP sockets' buffers are for the UDP tests
mod common;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    Config, ConnectionFailure, Duration, Endpoint, Error, Event, ExchangeError, FailureReason,
    Keepalive, Limits, SendErrorKind, Transport,
};
use coap_engine_embassy::tcp::TcpRunnerError;
use coap_engine_embassy::{now, Client, CoapChannels, RequestError, Server, TcpRunner};
use embassy_futures::join::{join, join_array};
use embassy_net::tcp::{State, TcpSocket};
use embassy_net::{Stack, StackResources};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::Timer;

use common::link::{stack, Link};
use common::{run_virtual, task, Task, STEP};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(SERVER_IP), 5683);

type Channels = CoapChannels<NoopRawMutex, 4>;

/// Test objects live as long as the test process: the runners, sockets and their stacks
/// borrow each other, and leaking spares every test the lifetimes' bookkeeping.
fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

/// A TCP socket with `rx` and `tx` bytes of buffer.
fn socket(stack: Stack<'static>, rx: usize, tx: usize) -> TcpSocket<'static> {
    let rx = Box::leak(vec![0; rx].into_boxed_slice());
    let tx = Box::leak(vec![0; tx].into_boxed_slice());
    TcpSocket::new(stack, rx, tx)
}

fn tcp(limits: Limits) -> Config {
    Config {
        transport: Transport::Tcp,
        limits,
        ..Config::default()
    }
}

/// Both stacks over `link`, with their embassy-net runners as tasks.
fn stacks(link: &Link) -> (Stack<'static>, Stack<'static>, Vec<Task<'static>>) {
    let (stack_c, mut net_c) = stack(link.port(0), CLIENT_IP, leak(StackResources::<4>::new()), 1);
    let (stack_s, mut net_s) = stack(link.port(1), SERVER_IP, leak(StackResources::<4>::new()), 2);
    let tasks = vec![
        task(async move { net_c.run().await }),
        task(async move { net_s.run().await }),
    ];
    (stack_c, stack_s, tasks)
}

/// The client: a `TcpRunner` with one socket (small buffers, so that a 1 KiB block does not
/// fit in one write), as a task, and its handle.
fn tcp_client(
    stack: Stack<'static>,
    config: Config,
    setup: impl FnOnce(&mut TcpRunner<'static, NoopRawMutex, 4>),
) -> (Client<'static, NoopRawMutex, 4>, Task<'static>) {
    let channels: &'static Channels = leak(Channels::new());
    let endpoint = Endpoint::new(config, 11).unwrap();
    let mut runner = TcpRunner::new(endpoint, [socket(stack, 1024, 1024)], channels).unwrap();
    setup(&mut runner);
    let runner = leak(runner);
    (Client::new(channels), task(runner.run()))
}

/// A `TcpRunner` server on 5683 with two sockets, answering with [`serve`].
fn tcp_server(stack: Stack<'static>) -> Vec<Task<'static>> {
    let channels: &'static Channels = leak(Channels::new());
    let endpoint = Endpoint::new(tcp(Limits::default()), 12).unwrap();
    let sockets = [socket(stack, 2048, 2048), socket(stack, 2048, 2048)];
    let runner = leak(TcpRunner::new(endpoint, sockets, channels).unwrap());
    runner.listen(5683).unwrap();
    vec![task(runner.run()), task(serve(Server::new(channels)))]
}

fn request(code: RequestType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(code);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.payload = payload.to_vec();
    p
}

fn get(path: &str) -> Packet {
    request(RequestType::Get, path, b"")
}

fn path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .and_then(|l| l.front())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

/// A body whose every byte depends on its position, so that a block lost, repeated or out
/// of place shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 1024) as u8).collect()
}

const BIG: usize = 20_000;

/// `/hello` → "world", `/slow` → "late" after 3 s (its request waits meanwhile), `/big` →
/// [`BIG`] bytes of [`body`], `/echo` → the request's own body, anything else 4.04.
async fn serve(server: Server<'static, NoopRawMutex, 4>) {
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
            "big" => {
                response.payload = body(BIG);
                ResponseType::Content
            }
            "echo" => {
                response.payload = incoming.request.payload.clone();
                ResponseType::Changed
            }
            _ => ResponseType::NotFound,
        };
        response.header.code = MessageClass::Response(code);
        server.respond(incoming.id, response).await;
    }
}

/// The next [`Event::SessionFailed`] for `peer`, and when it came.
async fn session_failure(client: Client<'_, NoopRawMutex, 4>) -> (FailureReason, Duration) {
    let start = now();
    loop {
        if let Event::SessionFailed { peer, reason } = client.next_event().await {
            assert_eq!(peer, SERVER);
            return (reason, now() - start);
        }
    }
}

fn connection_failed(failure: ConnectionFailure) -> FailureReason {
    FailureReason::Connection(failure)
}

#[test]
fn requests_and_responses_over_a_connection() {
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    tasks.extend(tcp_server(stack_s));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            // The first request opens the connection (CSMs both ways, RFC 8323 §5.3).
            let response = client.request(SERVER, get("hello")).await.unwrap();
            assert_eq!(
                response.header.code,
                MessageClass::Response(ResponseType::Content)
            );
            assert_eq!(response.payload, b"world");
            assert!(
                matches!(client.next_event().await, Event::SessionNew { peer } if peer == SERVER)
            );
            assert!(matches!(
                client.next_event().await,
                Event::SessionEstablished { peer } if peer == SERVER
            ));

            let missing = client.request(SERVER, get("nothing")).await.unwrap();
            assert_eq!(
                missing.header.code,
                MessageClass::Response(ResponseType::NotFound)
            );

            // A late answer, while another request is answered at once on the same connection.
            let start = now();
            let (late, quick) = join(
                client.request(SERVER, get("slow")),
                client.request(SERVER, get("hello")),
            )
            .await;
            assert_eq!(late.unwrap().payload, b"late");
            assert_eq!(quick.unwrap().payload, b"world");
            assert!(now() - start >= Duration::from_secs(3));

            // 7.02 Ping, answered by the server's engine with 7.03 Pong.
            client.ping(SERVER).await.expect("pong");

            // Closed (7.04 Release, FIN); the next request opens a new connection on the
            // client's one socket.
            client.close_session(SERVER).await;
            loop {
                if let Event::SessionClosed { peer, .. } = client.next_event().await {
                    assert_eq!(peer, SERVER);
                    break;
                }
            }
            let again = client.request(SERVER, get("hello")).await.unwrap();
            assert_eq!(again.payload, b"world");
            assert!(
                matches!(client.next_event().await, Event::SessionNew { peer } if peer == SERVER)
            );
        },
        tasks,
    );
}

#[test]
fn large_bodies_go_block_wise_and_arrive_byte_exact() {
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    tasks.extend(tcp_server(stack_s));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            // 20 blocks of 1 KiB (Block2), each frame larger than the client's socket buffers.
            let big = client.request(SERVER, get("big")).await.unwrap();
            assert_eq!(big.payload.len(), BIG);
            assert!(big.payload == body(BIG), "the body arrived altered");

            // Up in Block1 blocks, reassembled by the server's engine, and back down in Block2.
            let sent = body(12_345);
            let echo = request(RequestType::Put, "echo", &sent);
            let echoed = client.request(SERVER, echo).await.unwrap();
            assert_eq!(
                echoed.header.code,
                MessageClass::Response(ResponseType::Changed)
            );
            assert_eq!(echoed.payload.len(), sent.len());
            assert!(echoed.payload == sent, "the body came back altered");
        },
        tasks,
    );
}

#[test]
fn refused_connection_fails_the_request_with_its_reason() {
    // The server's stack has no socket listening: it answers the SYN with RST.
    let link = Link::new();
    let (stack_c, _stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            let refused =
                connection_failed(ConnectionFailure::ConnectFailed(SendErrorKind::Refused));
            for _ in 0..2 {
                let start = now();
                let (result, (reason, _)) = join(
                    client.request(SERVER, get("hello")),
                    session_failure(client),
                )
                .await;
                assert_eq!(
                    result,
                    Err(RequestError::Exchange(ExchangeError::SessionFailed(
                        refused
                    )))
                );
                assert_eq!(reason, refused);
                // From the RST, not from a timeout.
                assert!(
                    now() - start < Duration::from_millis(100),
                    "{:?}",
                    now() - start
                );
            }
        },
        tasks,
    );
}

#[test]
fn unanswered_connect_fails_after_the_connect_timeout() {
    let link = Link::new();
    link.set_cut(true);
    let (stack_c, _stack_s, mut tasks) = stacks(&link);
    let timeout = embassy_time::Duration::from_secs(2);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |r| {
        r.set_connect_timeout(timeout)
    });
    tasks.push(runner);
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            let start = now();
            let result = client.request(SERVER, get("hello")).await;
            let timed_out =
                connection_failed(ConnectionFailure::ConnectFailed(SendErrorKind::TimedOut));
            assert_eq!(
                result,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(
                    timed_out
                )))
            );
            let took = now() - start;
            let timeout = Duration::from_micros(timeout.as_micros());
            let step = Duration::from_micros(STEP.as_micros());
            assert!(took >= timeout && took <= timeout + step, "{took:?}");
        },
        tasks,
    );
}

#[test]
fn keepalive_fails_a_peer_gone_silent_after_the_link_is_cut() {
    let keepalive = Keepalive {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(3),
    };
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    tasks.extend(tcp_server(stack_s));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            client.open_session(SERVER, Some(keepalive)).await;
            // Answers (and Pongs) keep the session alive well past the bound.
            for _ in 0..3 {
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
            let (result, (reason, _)) = join(
                client.request(SERVER, get("hello")),
                session_failure(client),
            )
            .await;
            let silent = now() - last_heard;
            assert!(
                matches!(reason, FailureReason::KeepaliveTimeout { .. }),
                "{reason:?}"
            );
            assert_eq!(
                result,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(reason)))
            );
            let bound = keepalive.bound() + Duration::from_micros(STEP.as_micros());
            assert!(silent <= bound, "failed after {silent:?}, bound {bound:?}");
            assert!(silent >= keepalive.interval, "failed too early: {silent:?}");
        },
        tasks,
    );
}

/// An RFC 8323 peer that accepts one connection on 5683, sends its CSM (7.01, no options),
/// notes when, and then never reads nor writes again: its receive window closes, and with it
/// the client's writes.
async fn silent_peer(
    mut socket: TcpSocket<'static>,
    csm_at: Rc<Cell<Option<coap_engine::Instant>>>,
) {
    socket.accept(5683).await.unwrap();
    assert_eq!(socket.write(&[0x00, 0xE1]).await, Ok(2));
    csm_at.set(Some(now()));
    core::future::pending::<()>().await;
}

#[test]
fn keepalive_fails_a_silent_peer_while_writes_are_blocked() {
    let keepalive = Keepalive {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(3),
    };
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let limits = Limits {
        max_unwritten_bytes: 4096,
        ..Limits::default()
    };
    let (client, runner) = tcp_client(stack_c, tcp(limits), |_| {});
    tasks.push(runner);
    let csm_at = Rc::new(Cell::new(None));
    tasks.push(task(silent_peer(socket(stack_s, 256, 256), csm_at.clone())));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            client.open_session(SERVER, Some(keepalive)).await;
            loop {
                if let Event::SessionEstablished { .. } = client.next_event().await {
                    break;
                }
            }
            // The peer's CSM is the last thing heard from it.
            let last_heard = csm_at.get().expect("the peer sent its CSM");
            // 8 KB of requests against 256 bytes of window and 1 KiB of socket buffer: the
            // runner's queue fills, and beyond 4 KiB unwritten the engine refuses more.
            let requests: [_; 8] = core::array::from_fn(|_| {
                client.request(SERVER, request(RequestType::Put, "x", &[7; 1000]))
            });
            let watch = async {
                let (reason, _) = session_failure(client).await;
                let failed_at = now();
                // Writes the socket never took, reported when the close gave up on them.
                let mut unwritten = 0;
                while now() - failed_at < Duration::from_secs(6) {
                    let next = embassy_futures::select::select(
                        client.next_event(),
                        Timer::after_millis(100),
                    );
                    if let embassy_futures::select::Either::First(Event::SendFailed {
                        peer,
                        kind,
                        ..
                    }) = next.await
                    {
                        assert_eq!((peer, kind), (SERVER, SendErrorKind::Other));
                        unwritten += 1;
                    }
                }
                (reason, failed_at, unwritten)
            };
            let (results, (reason, failed_at, unwritten)) = join(join_array(requests), watch).await;

            assert!(
                matches!(reason, FailureReason::KeepaliveTimeout { .. }),
                "{reason:?}"
            );
            let silent = failed_at - last_heard;
            let bound = keepalive.bound() + Duration::from_micros(STEP.as_micros());
            assert!(silent <= bound, "failed after {silent:?}, bound {bound:?}");
            assert!(silent >= keepalive.interval, "failed too early: {silent:?}");

            let refused = results
                .iter()
                .filter(|r| **r == Err(RequestError::Rejected(Error::QueueFull)))
                .count();
            let failed = results
                .iter()
                .filter(|r| {
                    **r == Err(RequestError::Exchange(ExchangeError::SessionFailed(reason)))
                })
                .count();
            assert!(refused > 0, "the writes never backed up: {results:?}");
            assert_eq!(refused + failed, results.len(), "{results:?}");
            assert!(unwritten > 0, "no write was left blocked at the failure");
        },
        tasks,
    );
}

/// How [`closing_peer`] ends its connection.
#[derive(Clone, Copy, Debug)]
enum End {
    Close,
    Abort,
}

/// An RFC 8323 peer that accepts a connection, sends its CSM, and ends the connection as
/// told, for every signal.
async fn closing_peer(mut socket: TcpSocket<'static>, end: &'static Signal<NoopRawMutex, End>) {
    loop {
        socket.accept(5683).await.unwrap();
        assert_eq!(socket.write(&[0x00, 0xE1]).await, Ok(2));
        match end.wait().await {
            End::Close => socket.close(),
            End::Abort => socket.abort(),
        }
        let _ = socket.flush().await;
        while !matches!(socket.state(), State::Closed | State::TimeWait) {
            let mut sink = [0; 64];
            if let Ok(0) | Err(_) = socket.read(&mut sink).await {
                Timer::after_millis(10).await;
            }
        }
    }
}

#[test]
fn end_of_stream_and_reset_fail_the_session_with_their_reason() {
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    let end: &'static Signal<NoopRawMutex, End> = leak(Signal::new());
    tasks.push(task(closing_peer(socket(stack_s, 1024, 1024), end)));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            for (how, failure) in [
                (End::Close, ConnectionFailure::Closed),
                (End::Abort, ConnectionFailure::Reset),
            ] {
                let ended = async {
                    Timer::after_secs(1).await;
                    end.signal(how);
                };
                let (result, ((reason, _), ())) = join(
                    client.request(SERVER, get("hello")),
                    join(session_failure(client), ended),
                )
                .await;
                assert_eq!(reason, connection_failed(failure), "{how:?}");
                assert_eq!(
                    result,
                    Err(RequestError::Exchange(ExchangeError::SessionFailed(reason))),
                    "{how:?}"
                );
                Timer::after_secs(1).await;
            }
        },
        tasks,
    );
}

#[test]
fn server_closes_connections_beyond_its_session_limit() {
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (first, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    let (second, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    // One session at most, on two sockets: the second connection is accepted by a socket
    // and refused by the engine.
    let channels: &'static Channels = leak(Channels::new());
    let limits = Limits {
        max_sessions: 1,
        ..Limits::default()
    };
    let endpoint = Endpoint::new(tcp(limits), 12).unwrap();
    let sockets = [socket(stack_s, 2048, 2048), socket(stack_s, 2048, 2048)];
    let runner = leak(TcpRunner::new(endpoint, sockets, channels).unwrap());
    runner.listen(5683).unwrap();
    tasks.push(task(runner.run()));
    tasks.push(task(serve(Server::new(channels))));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            assert_eq!(
                first.request(SERVER, get("hello")).await.unwrap().payload,
                b"world"
            );
            let refused = second.request(SERVER, get("hello")).await;
            let closed = connection_failed(ConnectionFailure::Closed);
            assert_eq!(
                refused,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(closed)))
            );
            // The first session is untouched.
            assert_eq!(
                first.request(SERVER, get("hello")).await.unwrap().payload,
                b"world"
            );
        },
        tasks,
    );
}

#[test]
fn runner_refuses_what_it_cannot_run() {
    let link = Link::new();
    let (stack_c, _stack_s, _tasks) = stacks(&link);
    let channels: &'static Channels = leak(Channels::new());
    let udp = Endpoint::new(Config::default(), 1).unwrap();
    let refused = TcpRunner::new(udp, [socket(stack_c, 64, 64)], channels).err();
    assert_eq!(refused, Some(TcpRunnerError::NotTcp));
    let endpoint = Endpoint::new(tcp(Limits::default()), 1).unwrap();
    let refused = TcpRunner::new(endpoint, Vec::<TcpSocket>::new(), channels).err();
    assert_eq!(refused, Some(TcpRunnerError::NoSockets));
    let endpoint = Endpoint::new(tcp(Limits::default()), 1).unwrap();
    let mut runner = TcpRunner::new(endpoint, [socket(stack_c, 64, 64)], channels).unwrap();
    assert_eq!(runner.listen(0), Err(TcpRunnerError::InvalidPort));
    assert_eq!(runner.listen(5683), Ok(()));
}

#[test]
fn a_connect_finding_no_free_socket_fails_at_once() {
    let link = Link::new();
    let (stack_c, stack_s, mut tasks) = stacks(&link);
    let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
    tasks.push(runner);
    tasks.extend(tcp_server(stack_s));
    run_virtual(
        embassy_time::Duration::from_secs(60),
        async {
            assert_eq!(
                client.request(SERVER, get("hello")).await.unwrap().payload,
                b"world"
            );
            // The client's one socket carries the session with SERVER: another peer gets none.
            let other = SocketAddr::new(IpAddr::V4(SERVER_IP), 5684);
            let start = now();
            let result = client.request(other, get("hello")).await;
            let no_socket =
                connection_failed(ConnectionFailure::ConnectFailed(SendErrorKind::Other));
            assert_eq!(
                result,
                Err(RequestError::Exchange(ExchangeError::SessionFailed(
                    no_socket
                )))
            );
            assert_eq!(now(), start);
            // The open session is untouched.
            assert_eq!(
                client.request(SERVER, get("hello")).await.unwrap().payload,
                b"world"
            );
        },
        tasks,
    );
}

/// Observe over CoAP over TCP (feature `observe`).
#[cfg(feature = "observe")]
mod observe {
    use super::*;

    const COUNTER: coap_engine::ResourceId = coap_engine::ResourceId(3);

    fn content(payload: &str) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Response(ResponseType::Content);
        p.payload = payload.as_bytes().to_vec();
        p
    }

    /// A client `TcpRunner` and a server `TcpRunner` on 5683 whose handle the test drives.
    fn observe_pair() -> (
        Client<'static, NoopRawMutex, 4>,
        Server<'static, NoopRawMutex, 4>,
        Vec<Task<'static>>,
    ) {
        let link = Link::new();
        let (stack_c, stack_s, mut tasks) = stacks(&link);
        let (client, runner) = tcp_client(stack_c, tcp(Limits::default()), |_| {});
        tasks.push(runner);
        let channels: &'static Channels = leak(Channels::new());
        let endpoint = Endpoint::new(tcp(Limits::default()), 12).unwrap();
        let sockets = [socket(stack_s, 2048, 2048)];
        let server_runner = leak(TcpRunner::new(endpoint, sockets, channels).unwrap());
        server_runner.listen(5683).unwrap();
        tasks.push(task(server_runner.run()));
        (client, Server::new(channels), tasks)
    }

    /// Registers `/counter` and has the server accept it with state "0".
    async fn register(
        client: Client<'static, NoopRawMutex, 4>,
        server: Server<'static, NoopRawMutex, 4>,
    ) -> coap_engine_embassy::Observation<'static, NoopRawMutex, 4> {
        let observation = client.observe(SERVER, get("counter")).await.unwrap();
        let incoming = server.next_request().await;
        assert_eq!(incoming.request.get_observe_value(), Some(Ok(0)));
        let added = server
            .respond_observe(incoming.id, COUNTER, content("0"))
            .await;
        assert_eq!(added, Ok(true));
        observation
    }

    #[test]
    fn dropping_an_observation_over_a_connection_deregisters_it() {
        use coap_engine::ObserverRemoval;

        let (client, server, tasks) = observe_pair();
        run_virtual(
            embassy_time::Duration::from_secs(60),
            async {
                let observation = register(client, server).await;
                drop(observation);
                // TCP has no Reset to reject the next notification with: the runner deregisters.
                let incoming = server.next_request().await;
                assert_eq!(incoming.request.get_observe_value(), Some(Ok(1)));
                server.respond(incoming.id, content("bye")).await;
                let removed = server.next_observer_removed().await;
                assert_eq!(removed.reason, ObserverRemoval::Deregistered);
                assert_eq!(server.observers(COUNTER).await, 0);
            },
            tasks,
        );
    }

    #[test]
    fn observe_over_a_connection() {
        use coap_engine::ObserverRemoval;
        use coap_engine_embassy::Observed;

        let (client, server, tasks) = observe_pair();
        run_virtual(
            embassy_time::Duration::from_secs(60),
            async {
                let mut observation = register(client, server).await;
                for i in 0..4 {
                    if i > 0 {
                        let sent = server.notify(COUNTER, content(&i.to_string()), false).await;
                        assert_eq!(sent, Ok(1));
                    }
                    match observation.next().await {
                        Ok(Observed::Notification(n)) => {
                            assert_eq!(n.payload, i.to_string().as_bytes())
                        }
                        other => panic!("expected notification {i}, got {other:?}"),
                    }
                }
                let answer_it = async {
                    let incoming = server.next_request().await;
                    assert_eq!(incoming.request.get_observe_value(), Some(Ok(1)));
                    server.respond(incoming.id, content("bye")).await;
                };
                let (answer, ()) = join(observation.deregister(), answer_it).await;
                let answer = answer.unwrap();
                assert_eq!(answer.payload, b"bye");
                assert_eq!(answer.get_observe_value(), None);
                let removed = server.next_observer_removed().await;
                assert_eq!(removed.reason, ObserverRemoval::Deregistered);
                assert_eq!(server.observers(COUNTER).await, 0);
            },
            tasks,
        );
    }
}
