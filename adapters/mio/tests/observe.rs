//! Observe (RFC 7641) through the mio drivers on real loopback sockets: a client driver
//! observing a server driver in one user-owned `mio::Poll`, over UDP ([`Driver`]) and TCP
//! ([`StreamDriver`]): notifications in order, the final response, deregistering,
//! cancelling, and closing the session under an observation; and a client driver
//! observing libcoap's `coap-server-notls`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    Config, Error, Event, ExchangeError, IncomingRequestId, ObserverRemoval, RequestId, ResourceId,
    Transport,
};
use coap_engine_mio::mio::{event, Events, Poll, Token};
use coap_engine_mio::{Driver, StreamDriver};

// The smol tests' libcoap process guard; this file uses only part of it.
#[allow(dead_code)]
#[path = "../../smol/tests/libcoap/mod.rs"]
mod libcoap;

const CLOCK: ResourceId = ResourceId(1);
/// Bound on waiting for any one thing (a hang guard, not a performance check).
const LIMIT: StdDuration = StdDuration::from_secs(15);

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

/// What the test needs of either driver.
trait Side {
    fn owns_token(&self, token: Token) -> bool;
    fn on_ready(&mut self, event: &event::Event);
    fn on_timeout(&mut self);
    fn wait(&self) -> Option<StdDuration>;
    fn take_event(&mut self) -> Option<Event>;
}

impl Side for (Driver, Token) {
    fn owns_token(&self, token: Token) -> bool {
        token == self.1
    }
    fn on_ready(&mut self, event: &event::Event) {
        self.0.handle_event(event)
    }
    fn on_timeout(&mut self) {
        self.0.handle_timeout()
    }
    fn wait(&self) -> Option<StdDuration> {
        self.0.next_timeout()
    }
    fn take_event(&mut self) -> Option<Event> {
        self.0.poll_event()
    }
}

impl Side for (StreamDriver, Token) {
    fn owns_token(&self, token: Token) -> bool {
        self.0.owns(token)
    }
    fn on_ready(&mut self, event: &event::Event) {
        self.0.handle_event(event)
    }
    fn on_timeout(&mut self) {
        self.0.handle_timeout()
    }
    fn wait(&self) -> Option<StdDuration> {
        self.0.next_timeout()
    }
    fn take_event(&mut self) -> Option<Event> {
        self.0.poll_event()
    }
}

/// A server and a client driver in one `mio::Poll`, with the events each has reported and
/// the test has not taken yet.
struct Pair<D> {
    poll: Poll,
    events: Events,
    server: (D, Token),
    client: (D, Token),
    at_server: VecDeque<Event>,
    at_client: VecDeque<Event>,
}

impl<D> Pair<D>
where
    (D, Token): Side,
{
    /// One turn of the poll loop: I/O, deadlines, then every event into its queue.
    fn turn(&mut self) {
        let timeout = [self.server.wait(), self.client.wait()]
            .into_iter()
            .flatten()
            .min()
            .map_or(StdDuration::from_millis(100), |t| {
                t.min(StdDuration::from_millis(100))
            });
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        for e in self.events.iter() {
            if self.server.owns_token(e.token()) {
                self.server.on_ready(e);
            } else if self.client.owns_token(e.token()) {
                self.client.on_ready(e);
            }
        }
        self.server.on_timeout();
        self.client.on_timeout();
        while let Some(e) = self.server.take_event() {
            self.at_server.push_back(e);
        }
        while let Some(e) = self.client.take_event() {
            self.at_client.push_back(e);
        }
    }

    /// Turns until the server reports an event `pick` takes (earlier ones it does not take
    /// stay queued), and returns what `pick` made of it.
    fn server_event<T>(&mut self, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
        self.wait_for(true, what, pick)
    }

    /// As [`server_event`](Self::server_event), for the client.
    fn client_event<T>(&mut self, what: &str, pick: impl FnMut(&Event) -> Option<T>) -> T {
        self.wait_for(false, what, pick)
    }

    fn wait_for<T>(
        &mut self,
        server: bool,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let give_up = StdInstant::now() + LIMIT;
        loop {
            let queue = if server {
                &mut self.at_server
            } else {
                &mut self.at_client
            };
            if let Some((i, v)) = queue
                .iter()
                .enumerate()
                .find_map(|(i, e)| pick(e).map(|v| (i, v)))
            {
                queue.remove(i);
                return v;
            }
            assert!(
                StdInstant::now() < give_up,
                "no {what} within {LIMIT:?}; server saw {:?}, client saw {:?}",
                self.at_server,
                self.at_client
            );
            self.turn();
        }
    }

    /// The next request the server gets: its id and the request.
    fn request(&mut self) -> (IncomingRequestId, Packet) {
        self.server_event("request at the server", |e| match e {
            Event::Request { id, request, .. } => Some((*id, request.clone())),
            _ => None,
        })
    }

    /// The next notification of observation `id` at the client.
    fn notification(&mut self, id: RequestId) -> Packet {
        self.client_event("notification", |e| match e {
            Event::Notification {
                id: n, response, ..
            } if *n == id => Some(response.clone()),
            _ => None,
        })
    }

    /// The terminal event of `id` at the client: the final response, or why it failed.
    fn outcome(&mut self, id: RequestId) -> Result<Packet, ExchangeError> {
        self.client_event("terminal event", |e| match e {
            Event::Response {
                id: r, response, ..
            } if *r == id => Some(Ok(response.clone())),
            Event::RequestFailed { id: r, error, .. } if *r == id => Some(Err(*error)),
            _ => None,
        })
    }

    fn observer_removed(&mut self) -> (ResourceId, ObserverRemoval) {
        self.server_event("observer removal", |e| match e {
            Event::ObserverRemoved {
                resource, reason, ..
            } => Some((*resource, *reason)),
            _ => None,
        })
    }
}

fn udp_pair() -> (Pair<Driver>, SocketAddr) {
    let poll = Poll::new().unwrap();
    let mut server = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    server.register(poll.registry(), Token(1)).unwrap();
    client.register(poll.registry(), Token(2)).unwrap();
    let addr = server.local_addr().unwrap();
    let pair = Pair {
        poll,
        events: Events::with_capacity(64),
        server: (server, Token(1)),
        client: (client, Token(2)),
        at_server: VecDeque::new(),
        at_client: VecDeque::new(),
    };
    (pair, addr)
}

fn tcp() -> Config {
    Config {
        transport: Transport::Tcp,
        ..Config::default()
    }
}

fn tcp_pair() -> (Pair<StreamDriver>, SocketAddr) {
    let poll = Poll::new().unwrap();
    let mut server = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp()).unwrap();
    let mut client = StreamDriver::new(tcp()).unwrap();
    server
        .register(poll.registry(), Token(1)..Token(100))
        .unwrap();
    client
        .register(poll.registry(), Token(100)..Token(200))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let pair = Pair {
        poll,
        events: Events::with_capacity(64),
        server: (server, Token(1)),
        client: (client, Token(100)),
        at_server: VecDeque::new(),
        at_client: VecDeque::new(),
    };
    (pair, addr)
}

#[test]
fn udp_observation_notifies_in_order_and_ends_with_the_final_response() {
    let (mut p, addr) = udp_pair();
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, registration) = p.request();
    assert_eq!(observe_of(&registration), Some(0), "a registration");
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    assert_eq!(p.server.0.observers(CLOCK), 1);
    let first = p.notification(id);
    assert_eq!(text(&first), "0");
    let mut seq = observe_of(&first).expect("the registration's answer has Observe");

    for i in 1..=3 {
        let n = p.server.0.notify(CLOCK, &content(&i.to_string()), i == 2);
        assert_eq!(n, Ok(1));
        let got = p.notification(id);
        assert_eq!(text(&got), i.to_string());
        let next = observe_of(&got).unwrap();
        assert!(next > seq, "sequence numbers increase: {seq} then {next}");
        seq = next;
    }

    let last = response(ResponseType::NotFound, "");
    assert_eq!(p.server.0.notify(CLOCK, &last, true), Ok(1));
    let end = p.outcome(id).unwrap();
    assert_eq!(
        end.header.code,
        MessageClass::Response(ResponseType::NotFound)
    );
    assert_eq!(
        p.observer_removed(),
        (CLOCK, ObserverRemoval::ErrorResponse)
    );
    assert_eq!(p.server.0.observers(CLOCK), 0);
    assert!(
        !p.at_client
            .iter()
            .any(|e| matches!(e, Event::Notification { .. })),
        "nothing after the final response"
    );
}

#[test]
fn udp_deregister_cancel_and_close_session_end_observations() {
    let (mut p, addr) = udp_pair();

    // Deregistering: the server sees the GET with Observe = 1 and answers it.
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, _) = p.request();
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    p.notification(id);
    p.client.0.deregister_observation(id).unwrap();
    let (req, deregistration) = p.request();
    assert_eq!(observe_of(&deregistration), Some(1));
    // A plain request is no registration: nobody is added.
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("bye")),
        Ok(false)
    );
    assert_eq!(p.observer_removed(), (CLOCK, ObserverRemoval::Deregistered));
    assert_eq!(text(&p.outcome(id).unwrap()), "bye");
    assert_eq!(
        p.client.0.deregister_observation(id),
        Err(Error::UnknownRequest)
    );

    // Cancelling: the server learns at its next Confirmable notification, answered by Reset.
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, _) = p.request();
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    p.notification(id);
    p.client.0.cancel(id).unwrap();
    assert_eq!(p.outcome(id), Err(ExchangeError::Cancelled));
    assert_eq!(p.server.0.notify(CLOCK, &content("1"), true), Ok(1));
    assert_eq!(p.observer_removed(), (CLOCK, ObserverRemoval::Reset));
    assert_eq!(p.server.0.observers(CLOCK), 0);

    // Closing the client's session ends the observation on it.
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, _) = p.request();
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    p.notification(id);
    p.client.0.close_session(addr).unwrap();
    assert_eq!(p.outcome(id), Err(ExchangeError::SessionClosed));
    assert_eq!(p.client.0.close_session(addr), Err(Error::UnknownSession));
    p.client.0.open_session(addr).unwrap();
    p.client.0.set_keepalive(addr, None).unwrap();
}

#[test]
fn tcp_observation_notifies_ends_and_deregisters() {
    let (mut p, addr) = tcp_pair();
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, _) = p.request();
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    assert_eq!(text(&p.notification(id)), "0");
    assert_eq!(p.server.0.notify(CLOCK, &content("1"), false), Ok(1));
    let n = p.notification(id);
    assert_eq!(text(&n), "1");
    assert!(observe_of(&n).is_some());
    let last = response(ResponseType::ServiceUnavailable, "");
    assert_eq!(p.server.0.notify(CLOCK, &last, false), Ok(1));
    let end = p.outcome(id).unwrap();
    assert_eq!(
        end.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(
        p.observer_removed(),
        (CLOCK, ObserverRemoval::ErrorResponse)
    );

    // A second observation on the same connection, ended by deregistering.
    let id = p.client.0.observe(addr, &get("clock")).unwrap();
    let (req, _) = p.request();
    assert_eq!(
        p.server.0.respond_observe(req, CLOCK, &content("0")),
        Ok(true)
    );
    p.notification(id);
    p.client.0.deregister_observation(id).unwrap();
    let (req, deregistration) = p.request();
    assert_eq!(observe_of(&deregistration), Some(1));
    p.server.0.respond(req, &content("bye")).unwrap();
    assert_eq!(p.observer_removed(), (CLOCK, ObserverRemoval::Deregistered));
    assert_eq!(text(&p.outcome(id).unwrap()), "bye");
    assert_eq!(p.server.0.observers(CLOCK), 0);
}

/// Ports this test may give libcoap's server.
const LIBCOAP_PORTS: std::ops::Range<u16> = 47150..47200;

#[test]
fn observing_libcoaps_time_resource_then_deregistering() {
    // A port can be lost to another process between the check and libcoap's bind: then
    // libcoap exits before answering, and another port is tried.
    for attempt in 0..5 {
        let port = libcoap::free_udp_port(LIBCOAP_PORTS, attempt)
            .expect("no free port in 47150..47200 for coap-server-notls");
        let mut server = libcoap::Libcoap::spawn(
            "coap-server-notls",
            &["-A", "127.0.0.1", "-p", &port.to_string()],
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(64);
        let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        client.register(poll.registry(), Token(0)).unwrap();
        // Confirmable: should libcoap not be listening yet, the request is retransmitted.
        let id = client.observe(addr, &get("time")).unwrap();
        let give_up = StdInstant::now() + StdDuration::from_secs(30);
        let (mut seqs, mut outcome, mut deregistered) = (Vec::new(), None, false);
        while outcome.is_none() {
            if seqs.is_empty() && server.exited() {
                break;
            }
            assert!(
                StdInstant::now() < give_up,
                "no end of the observation within 30 s; notifications {seqs:?}"
            );
            let wait = client
                .next_timeout()
                .map_or(StdDuration::from_millis(100), |t| {
                    t.min(StdDuration::from_millis(100))
                });
            poll.poll(&mut events, Some(wait)).unwrap();
            for e in events.iter() {
                client.handle_event(e);
            }
            client.handle_timeout();
            while let Some(e) = client.poll_event() {
                match e {
                    Event::Notification {
                        id: n, response, ..
                    } if n == id => {
                        assert_eq!(
                            response.header.code,
                            MessageClass::Response(ResponseType::Content)
                        );
                        assert!(!response.payload.is_empty(), "the time is in the payload");
                        seqs.push(observe_of(&response).expect("a notification has Observe"));
                    }
                    Event::Response {
                        id: n, response, ..
                    } if n == id => outcome = Some(Ok(response)),
                    Event::RequestFailed { id: n, error, .. } if n == id => {
                        outcome = Some(Err(error))
                    }
                    _ => {}
                }
            }
            // The registration's answer and two notifications (libcoap notifies every
            // second), then deregister.
            if seqs.len() == 3 && !deregistered {
                client.deregister_observation(id).unwrap();
                deregistered = true;
            }
        }
        let Some(outcome) = outcome else {
            continue; // libcoap exited before answering: its port was taken
        };
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        assert_eq!(seqs.len(), 3, "nothing delivered after deregistering");
        let answer = outcome.expect("the deregistration is answered");
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        assert_eq!(observe_of(&answer), None, "the final answer has no Observe");
        return;
    }
    panic!("coap-server-notls did not come up on 127.0.0.1 (ports 47150..47200)");
}
