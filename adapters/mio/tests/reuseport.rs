//! Several engines on one `SO_REUSEPORT` address: every peer's exchanges, retransmissions
//! included, stay on one engine, and the peers spread over more than one.
#![cfg(any(target_os = "linux", target_os = "android"))]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Duration, Event, TransmissionParameters, Transport};
use coap_engine_mio::mio::{Events, Poll, Token};
use coap_engine_mio::{Driver, SendAction, StreamDriver};

const ENGINES: usize = 4;
const PEERS: usize = 64;
const ROUNDS: usize = 5;
/// Every this many datagrams an engine sends, one is lost, so clients retransmit.
const LOSE_EVERY: usize = 7;

fn quick() -> Config {
    Config {
        transmission: TransmissionParameters {
            ack_timeout: Duration::from_millis(100),
            ..TransmissionParameters::default()
        },
        ..Config::default()
    }
}

fn request(round: usize) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Post);
    p.add_option(CoapOption::UriPath, b"which".to_vec());
    p.payload = vec![round as u8];
    p
}

#[test]
fn a_peers_exchanges_stay_on_one_engine() {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let lost = Arc::new(AtomicUsize::new(0));
    let mut servers: Vec<Driver> = Vec::new();
    let mut at: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for i in 0..ENGINES {
        let mut server = Driver::bind_reuseport(at, quick()).unwrap();
        at = server.local_addr().unwrap();
        let (lost, mut sent) = (lost.clone(), 0);
        server.set_send_filter(move |_| {
            sent += 1;
            if sent % LOSE_EVERY == 0 {
                lost.fetch_add(1, Ordering::Relaxed);
                SendAction::Drop
            } else {
                SendAction::Send
            }
        });
        server.register(poll.registry(), Token(i)).unwrap();
        servers.push(server);
    }
    let mut clients: Vec<Driver> = (0..PEERS)
        .map(|i| {
            let mut c = Driver::bind("127.0.0.1:0".parse().unwrap(), quick()).unwrap();
            c.register(poll.registry(), Token(ENGINES + i)).unwrap();
            c.request(at, &request(0)).unwrap();
            c
        })
        .collect();

    // Server side: the engines that saw a request of each peer, and requests seen per
    // (peer, round): a retransmission reaching another engine would be a second one.
    let mut engines_of: BTreeMap<SocketAddr, BTreeSet<usize>> = BTreeMap::new();
    let mut seen: BTreeMap<(SocketAddr, u8), usize> = BTreeMap::new();
    // Client side: the engine that answered each of its requests.
    let mut answered_by: Vec<Vec<u8>> = vec![Vec::new(); PEERS];
    let give_up = StdInstant::now() + StdDuration::from_secs(30);
    while answered_by.iter().any(|a| a.len() < ROUNDS) {
        assert!(StdInstant::now() < give_up, "not done after 30 s");
        let timeout = servers
            .iter()
            .chain(&clients)
            .filter_map(Driver::next_timeout)
            .min();
        poll.poll(&mut events, timeout).unwrap();
        for event in events.iter() {
            match event.token().0 {
                i if i < ENGINES => servers[i].handle_event(event),
                i => clients[i - ENGINES].handle_event(event),
            }
        }
        for (i, server) in servers.iter_mut().enumerate() {
            server.handle_timeout();
            while let Some(event) = server.poll_event() {
                if let Event::Request { id, peer, request } = event {
                    engines_of.entry(peer).or_default().insert(i);
                    *seen.entry((peer, request.payload[0])).or_default() += 1;
                    let mut r = Packet::new();
                    r.header.code = MessageClass::Response(ResponseType::Changed);
                    r.payload = vec![i as u8];
                    server.respond(id, &r).unwrap();
                }
            }
        }
        for (c, client) in clients.iter_mut().enumerate() {
            client.handle_timeout();
            while let Some(event) = client.poll_event() {
                match event {
                    Event::Response { response, .. } => {
                        answered_by[c].push(response.payload[0]);
                        let next = answered_by[c].len();
                        if next < ROUNDS {
                            client.request(at, &request(next)).unwrap();
                        }
                    }
                    Event::RequestFailed { error, .. } => panic!("peer {c}: {error}"),
                    _ => {}
                }
            }
        }
    }

    assert!(
        lost.load(Ordering::Relaxed) > 0,
        "no datagram was lost, so nothing was retransmitted"
    );
    assert_eq!(engines_of.len(), PEERS, "every peer reached an engine");
    for (peer, engines) in &engines_of {
        assert_eq!(engines.len(), 1, "{peer} reached engines {engines:?}");
    }
    for ((peer, round), n) in &seen {
        assert_eq!(*n, 1, "{peer}'s request {round} was handled {n} times");
    }
    assert_eq!(seen.len(), PEERS * ROUNDS);
    for (c, by) in answered_by.iter().enumerate() {
        assert!(
            by.iter().all(|e| *e == by[0]),
            "peer {c} was answered by engines {by:?}"
        );
    }
    let used: BTreeSet<usize> = engines_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "all {PEERS} peers landed on one engine: the test proves nothing"
    );
}

/// Connections to a group of TCP listeners spread over them, and each connection's requests
/// are all handled where it was accepted.
#[test]
fn tcp_connections_spread_over_the_group() {
    const CONNECTIONS: usize = 32;
    let tcp = Config {
        transport: Transport::Tcp,
        ..Config::default()
    };
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    // Driver `i` (servers first, then clients) owns the tokens `i << 16` and up.
    let register = |driver: &mut StreamDriver, i: usize| {
        let first = i << 16;
        let tokens = Token(first)..Token(first + (1 << 16));
        driver.register(poll.registry(), tokens).unwrap();
    };
    let mut drivers: Vec<StreamDriver> = Vec::new();
    let mut at: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for i in 0..ENGINES {
        let mut server = StreamDriver::bind_reuseport(at, tcp.clone()).unwrap();
        at = server.local_addr().unwrap();
        register(&mut server, i);
        drivers.push(server);
    }
    // A client engine has one connection per server address: one client per connection.
    for c in 0..CONNECTIONS {
        let mut client = StreamDriver::new(tcp.clone()).unwrap();
        register(&mut client, ENGINES + c);
        for round in 0..ROUNDS {
            client.request(at, &request(round)).unwrap();
        }
        drivers.push(client);
    }
    let mut pending = CONNECTIONS * ROUNDS;
    let mut engines_of: BTreeMap<SocketAddr, BTreeSet<usize>> = BTreeMap::new();
    let give_up = StdInstant::now() + StdDuration::from_secs(30);
    while pending > 0 {
        assert!(StdInstant::now() < give_up, "not done after 30 s");
        let timeout = drivers.iter().filter_map(StreamDriver::next_timeout).min();
        poll.poll(&mut events, timeout).unwrap();
        for event in events.iter() {
            drivers[event.token().0 >> 16].handle_event(event);
        }
        for (i, driver) in drivers.iter_mut().enumerate() {
            driver.handle_timeout();
            while let Some(event) = driver.poll_event() {
                match event {
                    Event::Request { id, peer, .. } => {
                        engines_of.entry(peer).or_default().insert(i);
                        let mut r = Packet::new();
                        r.header.code = MessageClass::Response(ResponseType::Changed);
                        driver.respond(id, &r).unwrap();
                    }
                    Event::Response { .. } => pending -= 1,
                    Event::RequestFailed { error, .. } => panic!("client {i}: {error}"),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        engines_of.len(),
        CONNECTIONS,
        "every connection reached an engine"
    );
    for (peer, engines) in &engines_of {
        assert_eq!(engines.len(), 1, "{peer} reached engines {engines:?}");
    }
    let used: BTreeSet<usize> = engines_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "all {CONNECTIONS} connections landed on one listener: the test proves nothing"
    );
}
