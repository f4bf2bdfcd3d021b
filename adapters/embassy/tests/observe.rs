//! Observing resources (RFC 7641) through the adapter: a `Client` observing a `Server`, both
//! `CoapRunner`s on two embassy-net stacks joined by an in-memory link, in virtual time.

#[allow(dead_code)] // the UDP socket buffers and the link cut are for other tests
mod common;

use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::{Config, ExchangeError, ObserverRemoval, ResourceId};
use coap_engine_embassy::{Client, IncomingRequest, Observation, Observed, RequestError, Server};
use embassy_futures::join::join;
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, Timer};

use common::link::Link;
use common::pair::{get, path, response, udp_pair, SERVER};
use common::run_virtual;

const COUNTER: ResourceId = ResourceId(7);

type TestClient = Client<'static, NoopRawMutex, 4>;
type TestServer = Server<'static, NoopRawMutex, 4>;

fn content(payload: &str) -> Packet {
    response(ResponseType::Content, payload.as_bytes())
}

fn observe_value(p: &Packet) -> Option<u32> {
    p.get_observe_value()
        .map(|v| v.expect("a valid Observe value"))
}

/// Registers an observation of `/counter` and has the server accept it with state "0";
/// returns the observation after its first notification.
async fn register(client: TestClient, server: TestServer) -> Observation<'static, NoopRawMutex, 4> {
    let mut observation = client.observe(SERVER, get("counter")).await.unwrap();
    let incoming: IncomingRequest = server.next_request().await;
    assert_eq!(path(&incoming.request), "counter");
    assert_eq!(observe_value(&incoming.request), Some(0), "a registration");
    let added = server
        .respond_observe(incoming.id, COUNTER, content("0"))
        .await
        .unwrap();
    assert!(added);
    assert_eq!(server.observers(COUNTER).await, 1);
    match observation.next().await {
        Ok(Observed::Notification(first)) => {
            assert_eq!(first.payload, b"0");
            assert!(
                observe_value(&first).is_some(),
                "the registration's answer has Observe"
            );
        }
        other => panic!("expected the first notification, got {other:?}"),
    }
    observation
}

/// The next notification's payload, or a panic naming what came instead.
async fn next_payload(observation: &mut Observation<'static, NoopRawMutex, 4>) -> String {
    match observation.next().await {
        Ok(Observed::Notification(n)) => String::from_utf8(n.payload).unwrap(),
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// What `observation` yields within `wait`, if anything.
async fn next_within(
    observation: &mut Observation<'static, NoopRawMutex, 4>,
    wait: Duration,
) -> Option<Result<Observed, RequestError>> {
    match select(observation.next(), Timer::after(wait)).await {
        Either::First(item) => Some(item),
        Either::Second(()) => None,
    }
}

#[test]
fn notifications_in_order_then_an_error_response_ends_it() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let mut observation = register(client, server).await;
            for i in 1..=3 {
                let sent = server
                    .notify(COUNTER, content(&i.to_string()), i == 2)
                    .await
                    .unwrap();
                assert_eq!(sent, 1);
                assert_eq!(next_payload(&mut observation).await, i.to_string());
            }
            assert!(!observation.is_ended());

            // A notification that is not 2.xx is the last (RFC 7641 §3.2).
            let gone = response(ResponseType::NotFound, b"");
            assert_eq!(server.notify(COUNTER, gone, false).await.unwrap(), 1);
            let end = observation.next().await;
            let Ok(Observed::Response(last)) = &end else {
                panic!("expected the terminal response, got {end:?}");
            };
            assert_eq!(
                last.header.code,
                MessageClass::Response(ResponseType::NotFound)
            );
            assert_eq!(observe_value(last), None);
            assert!(observation.is_ended());
            // After the end, the end again.
            assert_eq!(observation.next().await, end);

            let removed = server.next_observer_removed().await;
            assert_eq!(removed.resource, COUNTER);
            assert_eq!(removed.reason, ObserverRemoval::ErrorResponse);
            assert_eq!(removed.peer.ip(), std::net::Ipv4Addr::new(10, 0, 0, 1));
            assert_eq!(server.observers(COUNTER).await, 0);
        },
        tasks,
    );
}

#[test]
fn deregister_ends_with_the_servers_answer() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let mut observation = register(client, server).await;
            server.notify(COUNTER, content("1"), false).await.unwrap();
            assert_eq!(next_payload(&mut observation).await, "1");

            let answer_it = async {
                let incoming = server.next_request().await;
                assert_eq!(path(&incoming.request), "counter");
                assert_eq!(
                    observe_value(&incoming.request),
                    Some(1),
                    "a deregistration"
                );
                server.respond(incoming.id, content("bye")).await;
            };
            let (answer, ()) = join(observation.deregister(), answer_it).await;
            let answer = answer.unwrap();
            assert_eq!(answer.payload, b"bye");
            assert_eq!(observe_value(&answer), None);

            let removed = server.next_observer_removed().await;
            assert_eq!(removed.reason, ObserverRemoval::Deregistered);
            assert_eq!(server.observers(COUNTER).await, 0);
        },
        tasks,
    );
}

#[test]
fn cancel_ends_with_cancelled_and_the_server_learns_by_reset() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let observation = register(client, server).await;
            assert_eq!(
                observation.cancel().await,
                Err(RequestError::Exchange(ExchangeError::Cancelled))
            );
            // Nothing was sent: the server still counts the client until its next
            // notification is answered with Reset (RFC 7641 §3.6).
            assert_eq!(server.observers(COUNTER).await, 1);
            assert_eq!(server.notify(COUNTER, content("1"), true).await.unwrap(), 1);
            let removed = server.next_observer_removed().await;
            assert_eq!(removed.reason, ObserverRemoval::Reset);
            assert_eq!(server.observers(COUNTER).await, 0);
        },
        tasks,
    );
}

#[test]
fn dropping_an_observation_deregisters_it() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let observation = register(client, server).await;
            drop(observation);
            // The server hears a GET with Observe = 1 (RFC 7641 §3.6), not a Reset later.
            let removed = server.next_observer_removed().await;
            assert_eq!(removed.reason, ObserverRemoval::Deregistered);
            assert_eq!(server.observers(COUNTER).await, 0);
            assert_eq!(
                server.notify(COUNTER, content("1"), false).await.unwrap(),
                0
            );
        },
        tasks,
    );
}

#[test]
fn dropping_an_observation_with_the_command_queue_full_ends_it_at_its_next_notification() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let observation = register(client, server).await;
            // Fill the command channel (4 deep) while the runner cannot run: sessions with
            // peers that have none, harmless to close.
            let nobody = "10.0.0.9:5683".parse().unwrap();
            for _ in 0..4 {
                let queued = embassy_futures::poll_once(client.close_session(nobody));
                assert!(queued.is_ready(), "the command channel filled up early");
            }
            let stuck = embassy_futures::poll_once(client.close_session(nobody));
            assert!(stuck.is_pending(), "the command channel is not full");
            // Its deregistration does not fit: the runner finds the handle gone at the next
            // notification and deregisters then.
            drop(observation);
            Timer::after_millis(100).await;
            assert_eq!(server.observers(COUNTER).await, 1, "nothing was sent yet");
            assert_eq!(
                server.notify(COUNTER, content("1"), false).await.unwrap(),
                1
            );
            let removed = server.next_observer_removed().await;
            assert_eq!(removed.reason, ObserverRemoval::Deregistered);
            assert_eq!(server.observers(COUNTER).await, 0);
        },
        tasks,
    );
}

#[test]
fn a_slow_reader_gets_the_freshest_notification() {
    let link = Link::new();
    let (client, server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(60),
        async {
            let mut observation = register(client, server).await;
            // Five states while nobody reads; each has time to arrive.
            for i in 1..=5 {
                server
                    .notify(COUNTER, content(&i.to_string()), false)
                    .await
                    .unwrap();
                Timer::after_millis(200).await;
            }
            assert_eq!(next_payload(&mut observation).await, "5");
            // The older ones are gone, not queued.
            let more = next_within(&mut observation, Duration::from_secs(2)).await;
            assert!(more.is_none(), "expected nothing more, got {more:?}");
            // And it goes on.
            server.notify(COUNTER, content("6"), false).await.unwrap();
            assert_eq!(next_payload(&mut observation).await, "6");
        },
        tasks,
    );
}

#[test]
fn a_registration_refused_by_the_engine_is_rejected() {
    let link = Link::new();
    let (client, _server, tasks) = udp_pair(&link, Config::default());
    run_virtual(
        Duration::from_secs(10),
        async {
            let mut post = get("counter");
            post.header.code = MessageClass::Request(coap_engine::coap_lite::RequestType::Post);
            let refused = client.observe(SERVER, post).await.err();
            assert_eq!(
                refused,
                Some(RequestError::Rejected(coap_engine::Error::NotObservable))
            );
        },
        tasks,
    );
}
