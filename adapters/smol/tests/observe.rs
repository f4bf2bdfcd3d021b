//! Observe (RFC 7641) through the smol adapter on real loopback sockets: our client against
//! our server over UDP and TCP (notifications in order, the final response, deregistering,
//! dropping, cancelling, a slow reader), our client against libcoap's `coap-server-notls`,
//! and libcoap's `coap-client-notls -s` against our server.

mod libcoap;

use std::io;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Event, ObserverRemoval, ResourceId};
use coap_engine_smol::{
    Client, Driver, Error, Events, Incoming, StreamDriver, NOTIFICATION_CAPACITY,
};
use smol::channel::Receiver;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;
use smol::Timer;

use libcoap::Libcoap;

const CLOCK: ResourceId = ResourceId(1);

/// Fails the test if `fut` takes longer than `secs` (a hang guard, not a performance check).
async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    fut.or(async {
        Timer::after(StdDuration::from_secs(secs)).await;
        panic!("timed out after {secs} s")
    })
    .await
}

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

fn response(code: ResponseType, payload: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    p.payload = payload.as_bytes().to_vec();
    p
}

fn content(payload: &str) -> Packet {
    response(ResponseType::Content, payload)
}

fn observe_of(p: &Packet) -> Option<u32> {
    p.get_observe_value().and_then(Result::ok)
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

type Task = smol::Task<io::Result<()>>;

/// Our server's side of a test: where it listens, its handles and its task.
struct Server {
    addr: SocketAddr,
    incoming: Incoming,
    events: Events,
    /// One item per registration: whether `respond_observe` added the observer.
    registered: Receiver<bool>,
    _task: Task,
}

/// Serves `incoming`: a registration (Observe = 0) gets "0" through `respond_observe` for
/// [`CLOCK`], anything else (a deregistration included) a plain "bye".
fn serve_clock(addr: SocketAddr, incoming: Incoming, events: Events, task: Task) -> Server {
    let (tx, registered) = smol::channel::unbounded();
    let serving = incoming.clone();
    smol::spawn(async move {
        while let Some(req) = serving.next().await {
            if observe_of(&req.request) == Some(0) {
                let added = req.responder.respond_observe(CLOCK, content("0")).await;
                let _ = tx.send(added.unwrap()).await;
            } else {
                req.responder.respond(content("bye")).await.unwrap();
            }
        }
    })
    .detach();
    Server {
        addr,
        incoming,
        events,
        registered,
        _task: task,
    }
}

fn udp_server() -> Server {
    let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let (addr, incoming, events) = (
        driver.local_addr().unwrap(),
        driver.incoming(),
        driver.events(),
    );
    serve_clock(addr, incoming, events, driver.spawn())
}

fn tcp_server() -> Server {
    let driver = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let (addr, incoming, events) = (
        driver.local_addr().unwrap(),
        driver.incoming(),
        driver.events(),
    );
    serve_clock(addr, incoming, events, driver.spawn())
}

fn udp_client() -> (Client, Task) {
    let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    (driver.client(), driver.spawn())
}

fn tcp_client() -> (Client, Task) {
    let driver = StreamDriver::client_only(Config::default()).unwrap();
    (driver.client(), driver.spawn())
}

/// The next observer removal the server reports.
async fn observer_removed(events: &Events) -> (SocketAddr, ResourceId, ObserverRemoval) {
    loop {
        match events.recv().await.expect("the server's driver stopped") {
            Event::ObserverRemoved {
                peer,
                resource,
                reason,
            } => return (peer, resource, reason),
            _ => continue,
        }
    }
}

/// The next item of an observation that has not ended: a notification or the final
/// response (`Ok`).
async fn next_ok(observation: &mut coap_engine_smol::Observation) -> Packet {
    match observation.next().await {
        Some(Ok(p)) => p,
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[test]
fn udp_notifications_arrive_in_order_and_an_error_notification_ends_the_observation() {
    smol::block_on(within(30, async {
        let server = udp_server();
        let (client, _client) = udp_client();
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(
            server.registered.recv().await.unwrap(),
            "observer not added"
        );
        let first = next_ok(&mut observation).await;
        assert_eq!(text(&first), "0");
        let mut seq = observe_of(&first).expect("the registration's answer has Observe");
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 1);

        // One at a time, Confirmable and Non-confirmable alternately.
        for i in 1..=5 {
            let notified = server
                .incoming
                .notify(CLOCK, content(&i.to_string()), i % 2 == 0)
                .await
                .unwrap();
            assert_eq!(notified, 1, "notification {i} reached one observer");
            let n = next_ok(&mut observation).await;
            assert_eq!(text(&n), i.to_string(), "notifications in order");
            let next = observe_of(&n).expect("a notification has Observe");
            assert!(next > seq, "sequence numbers increase: {seq} then {next}");
            seq = next;
            assert!(!observation.is_ended());
        }

        // A 4.04 is the last notification (RFC 7641 §3.2): the observation's final response.
        let notified = server
            .incoming
            .notify(CLOCK, response(ResponseType::NotFound, ""), true)
            .await
            .unwrap();
        assert_eq!(notified, 1);
        let last = next_ok(&mut observation).await;
        assert_eq!(
            last.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
        assert!(observation.is_ended());
        assert!(
            observation.next().await.is_none(),
            "the stream ends after the final response"
        );
        assert_eq!(observation.missed(), 0);

        let (_, resource, reason) = observer_removed(&server.events).await;
        assert_eq!((resource, reason), (CLOCK, ObserverRemoval::ErrorResponse));
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 0);
    }));
}

#[test]
fn dropping_an_observation_deregisters_it() {
    smol::block_on(within(30, async {
        let server = udp_server();
        let (client, _client) = udp_client();
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        assert_eq!(text(&next_ok(&mut observation).await), "0");
        drop(observation);

        // The client's GET with Observe = 1 removes it at once, without another notification.
        let (_, resource, reason) = observer_removed(&server.events).await;
        assert_eq!((resource, reason), (CLOCK, ObserverRemoval::Deregistered));
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 0);
        let notified = server.incoming.notify(CLOCK, content("1"), true).await;
        assert_eq!(notified, Ok(0));
    }));
}

#[test]
fn deregister_resolves_to_the_servers_answer() {
    smol::block_on(within(30, async {
        let server = udp_server();
        let (client, _client) = udp_client();
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        assert_eq!(text(&next_ok(&mut observation).await), "0");
        assert_eq!(
            server.incoming.notify(CLOCK, content("1"), false).await,
            Ok(1)
        );
        assert_eq!(text(&next_ok(&mut observation).await), "1");

        let answer = observation.deregister().await.unwrap();
        assert_eq!(text(&answer), "bye");
        assert_eq!(observe_of(&answer), None);
        let (_, resource, reason) = observer_removed(&server.events).await;
        assert_eq!((resource, reason), (CLOCK, ObserverRemoval::Deregistered));
    }));
}

#[test]
fn cancel_forgets_and_the_next_confirmable_notification_is_reset() {
    smol::block_on(within(30, async {
        let server = udp_server();
        let (client, _client) = udp_client();
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        assert_eq!(text(&next_ok(&mut observation).await), "0");
        observation.cancel().await.unwrap();

        // The server is not told, until its next notification is answered with Reset.
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 1);
        assert_eq!(
            server.incoming.notify(CLOCK, content("1"), true).await,
            Ok(1)
        );
        let (_, resource, reason) = observer_removed(&server.events).await;
        assert_eq!((resource, reason), (CLOCK, ObserverRemoval::Reset));
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 0);
    }));
}

#[test]
fn a_slow_reader_keeps_the_freshest_notifications_and_the_final_response() {
    const SENT: usize = 20;
    smol::block_on(within(30, async {
        let server = udp_server();
        let (client, _client) = udp_client();
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        // Nothing is read until the burst and the final 4.04 are all in.
        for i in 1..=SENT {
            let notified = server
                .incoming
                .notify(CLOCK, content(&i.to_string()), false);
            assert_eq!(notified.await, Ok(1));
        }
        let last = response(ResponseType::NotFound, "");
        assert_eq!(server.incoming.notify(CLOCK, last, true).await, Ok(1));
        // Datagrams on loopback arrive in order, and the client's driver handles them in
        // order: once this answer is in, so is everything sent before it.
        let answer = client.request(server.addr, get("other")).await.unwrap();
        assert_eq!(text(&answer), "bye");

        let mut got = Vec::new();
        while let Some(item) = observation.next().await {
            got.push(item.unwrap());
        }
        // The registration's answer and SENT notifications, then the final response: the
        // queue held the freshest notifications, one of them giving way to the final one.
        let (final_response, notifications) = got.split_last().unwrap();
        assert_eq!(
            final_response.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
        let kept: Vec<String> = notifications.iter().map(text).collect();
        let expected: Vec<String> = (SENT + 2 - NOTIFICATION_CAPACITY..=SENT)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(kept, expected);
        assert_eq!(observation.missed(), (SENT + 1 - kept.len()) as u64);
    }));
}

#[test]
fn tcp_observation_notifies_ends_and_deregisters() {
    smol::block_on(within(30, async {
        let server = tcp_server();
        let (client, _client) = tcp_client();

        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        assert_eq!(text(&next_ok(&mut observation).await), "0");
        assert_eq!(
            server.incoming.notify(CLOCK, content("1"), false).await,
            Ok(1)
        );
        let n = next_ok(&mut observation).await;
        assert_eq!(text(&n), "1");
        assert!(observe_of(&n).is_some());
        let last = response(ResponseType::ServiceUnavailable, "");
        assert_eq!(server.incoming.notify(CLOCK, last, false).await, Ok(1));
        let last = next_ok(&mut observation).await;
        assert_eq!(
            last.header.code,
            MessageClass::Response(ResponseType::ServiceUnavailable)
        );
        assert!(observation.is_ended());
        assert!(observation.next().await.is_none());
        let (_, _, reason) = observer_removed(&server.events).await;
        assert_eq!(reason, ObserverRemoval::ErrorResponse);

        // A second observation on the same connection, ended by deregistering.
        let mut observation = client.observe(server.addr, get("clock")).await.unwrap();
        assert!(server.registered.recv().await.unwrap());
        assert_eq!(text(&next_ok(&mut observation).await), "0");
        assert_eq!(
            server.incoming.notify(CLOCK, content("2"), false).await,
            Ok(1)
        );
        assert_eq!(text(&next_ok(&mut observation).await), "2");
        let answer = observation.deregister().await.unwrap();
        assert_eq!(text(&answer), "bye");
        let (_, _, reason) = observer_removed(&server.events).await;
        assert_eq!(reason, ObserverRemoval::Deregistered);
        assert_eq!(server.incoming.observers(CLOCK).await.unwrap(), 0);
    }));
}

#[test]
fn rejected_observe_is_typed() {
    smol::block_on(within(10, async {
        let (client, _client) = udp_client();
        let mut post = get("clock");
        post.header.code = MessageClass::Request(RequestType::Post);
        let result = client.observe("127.0.0.1:9".parse().unwrap(), post).await;
        assert_eq!(
            result.err(),
            Some(Error::Rejected(coap_engine::Error::NotObservable))
        );
    }));
}

/// Ports this crate's tests may give libcoap's servers.
const LIBCOAP_PORTS: std::ops::Range<u16> = 47100..47200;

/// `coap-server-notls` on a free port of [`LIBCOAP_PORTS`], once it answers a ping.
async fn libcoap_server(client: &Client) -> (Libcoap, SocketAddr) {
    for attempt in 0..5 {
        let port = libcoap::free_udp_port(LIBCOAP_PORTS, attempt)
            .expect("no free port in 47100..47200 for coap-server-notls");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Libcoap::spawn(
            "coap-server-notls",
            &["-A", "127.0.0.1", "-p", &port.to_string()],
        );
        // Up once it answers a CoAP ping; each try bounded, so a lost one is retried.
        for _ in 0..50 {
            if server.exited() {
                break; // lost the port to someone else: try another
            }
            let ping = async { client.ping(addr).await.is_ok() };
            let answered = ping
                .or(async {
                    Timer::after(StdDuration::from_millis(200)).await;
                    false
                })
                .await;
            if answered {
                return (server, addr);
            }
        }
    }
    panic!("coap-server-notls did not come up on 127.0.0.1 (ports 47100..47200)");
}

#[test]
fn observing_libcoaps_time_resource_then_deregistering() {
    smol::block_on(within(60, async {
        let (client, _client) = udp_client();
        let (_server, addr) = libcoap_server(&client).await;
        let mut observation = client.observe(addr, get("time")).await.unwrap();
        // The registration's answer and two notifications (libcoap notifies every second).
        let mut seqs = Vec::new();
        for _ in 0..3 {
            let n = next_ok(&mut observation).await;
            assert_eq!(n.header.code, MessageClass::Response(ResponseType::Content));
            assert!(!n.payload.is_empty(), "the time is in the payload");
            seqs.push(observe_of(&n).expect("a notification has Observe"));
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        assert!(!observation.is_ended());
        let answer = observation.deregister().await.unwrap();
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Content)
        );
    }));
}

#[test]
fn libcoaps_client_observes_our_server() {
    smol::block_on(within(60, async {
        let server = udp_server();
        // A new state every 100 ms while the test runs (the task ends when dropped).
        let incoming = server.incoming.clone();
        let _notifier = smol::spawn(async move {
            for tick in 1.. {
                Timer::after(StdDuration::from_millis(100)).await;
                let _ = incoming
                    .notify(CLOCK, content(&format!("tick {tick}")), false)
                    .await;
            }
        });
        let uri = format!("coap://127.0.0.1:{}/clock", server.addr.port());
        let libcoap_client =
            Libcoap::spawn("coap-client-notls", &["-w", "-B", "20", "-s", "3", &uri]);
        let out = smol::unblock(move || libcoap_client.finish(StdDuration::from_secs(30))).await;
        assert!(
            server.registered.recv().await.unwrap(),
            "observer not added"
        );
        let notifications = out.lines().filter(|l| l.starts_with("tick ")).count();
        assert!(
            notifications > 1,
            "coap-client-notls -s 3 printed {notifications} notifications:\n{out}"
        );
    }));
}
