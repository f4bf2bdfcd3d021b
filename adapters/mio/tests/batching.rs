//! Batched datagram I/O (`recvmmsg`/`sendmmsg` on Linux) and the one-datagram-per-call path
//! other systems use, over loopback: bursts larger than a batch all get answered, and a
//! batch in which some sends fail reports each failure against its own transmit while the
//! rest go out.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Event, Limits, SendErrorKind, TransmissionParameters};
use coap_engine_mio::{Driver, Handler};

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

/// A config that lets `n` requests between two peers be in flight, or waiting for the
/// server's answer, at once.
fn parallel(n: usize) -> Config {
    Config {
        transmission: TransmissionParameters {
            nstart: n,
            ..TransmissionParameters::default()
        },
        limits: Limits {
            max_queued_requests: n,
            max_exchanges: n,
            max_pending_requests: n,
            ..Limits::default()
        },
        ..Config::default()
    }
}

/// A server thread answering every request with its Uri-Path until `stop` is set; returns
/// how many it answered (more than were asked if answers were lost and asked for again).
struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl EchoServer {
    fn start(batching: bool, n: usize) -> Self {
        let mut server = Driver::bind("127.0.0.1:0".parse().unwrap(), parallel(n)).unwrap();
        server.set_batching(batching);
        assert_eq!(server.batching(), batching && cfg!(target_os = "linux"));
        let addr = server.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut handler = Echo {
                served: 0,
                stop: flag,
            };
            server.run(&mut handler).unwrap();
            handler.served
        });
        EchoServer { addr, stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

struct Echo {
    served: usize,
    stop: Arc<AtomicBool>,
}

impl Handler for Echo {
    fn on_event(&mut self, d: &mut Driver, event: Event) -> ControlFlow<()> {
        if let Event::Request { id, request, .. } = event {
            let mut r = Packet::new();
            r.header.code = MessageClass::Response(ResponseType::Content);
            let path = request.get_option(CoapOption::UriPath).unwrap();
            r.payload = path.front().unwrap().clone();
            d.respond(id, &r).unwrap();
            self.served += 1;
        }
        ControlFlow::Continue(())
    }

    fn on_tick(&mut self, _: &mut Driver) -> ControlFlow<(), Option<StdInstant>> {
        if self.stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(StdInstant::now() + StdDuration::from_millis(10)))
    }
}

/// `n` requests queued at once (several batches' worth), every answer checked.
fn burst(batching: bool, n: usize) {
    let server = EchoServer::start(batching, n);
    let to = server.addr;
    let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), parallel(n)).unwrap();
    client.set_batching(batching);
    let now = client.now();
    for i in 0..n {
        client
            .endpoint_mut()
            .request(now, to, &get(&format!("r{i}")))
            .unwrap();
    }
    client.drive();
    let mut got = BTreeSet::new();
    let give_up = StdInstant::now() + StdDuration::from_secs(20);
    client
        .run(&mut |_: &mut Driver, event: Event| {
            assert!(StdInstant::now() < give_up, "{} of {n} answers", got.len());
            match event {
                Event::Response { response, .. } => {
                    let code = response.header.code;
                    assert_eq!(code, MessageClass::Response(ResponseType::Content));
                    got.insert(String::from_utf8(response.payload).unwrap());
                }
                Event::RequestFailed { error, .. } => panic!("request failed: {error}"),
                _ => {}
            }
            if got.len() == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    let want: BTreeSet<String> = (0..n).map(|i| format!("r{i}")).collect();
    assert_eq!(got, want);
    assert!(server.stop() >= n);
}

#[test]
fn a_burst_of_many_batches_is_answered_in_full_batched() {
    burst(true, 500);
}

#[test]
fn a_burst_of_many_batches_is_answered_in_full_one_datagram_per_call() {
    burst(false, 500);
}

/// Requests to a live IPv4 server interleaved with requests to IPv6 peers, which an IPv4
/// socket cannot send to (EAFNOSUPPORT): each failed datagram is reported against its own
/// transmit and peer, and every datagram around it still goes out in the same batch.
fn mixed_failures(batching: bool) {
    const N: usize = 40;
    let server = EchoServer::start(batching, N);
    let to = server.addr;
    let mut client = Driver::bind("127.0.0.1:0".parse().unwrap(), parallel(N)).unwrap();
    client.set_batching(batching);
    let doomed: Vec<SocketAddr> = (0..N)
        .map(|i| format!("[::1]:{}", 40_000 + i).parse().unwrap())
        .collect();
    let now = client.now();
    for (i, peer) in doomed.iter().enumerate() {
        client
            .endpoint_mut()
            .request(now, to, &get(&format!("r{i}")))
            .unwrap();
        client
            .endpoint_mut()
            .request(now, *peer, &get("x"))
            .unwrap();
    }
    client.drive();
    let (mut answers, mut failed) = (BTreeSet::new(), BTreeSet::new());
    let give_up = StdInstant::now() + StdDuration::from_secs(20);
    client
        .run(&mut |_: &mut Driver, event: Event| {
            assert!(StdInstant::now() < give_up, "{answers:?} {failed:?}");
            match event {
                Event::Response { response, .. } => {
                    let code = response.header.code;
                    assert_eq!(code, MessageClass::Response(ResponseType::Content));
                    answers.insert(String::from_utf8(response.payload).unwrap());
                }
                Event::SendFailed { peer, kind, .. } => {
                    assert_eq!(kind, SendErrorKind::Other, "to {peer}");
                    assert!(doomed.contains(&peer), "a send to {peer} failed");
                    failed.insert(peer);
                }
                Event::RequestFailed { peer, error, .. } if peer == to => panic!("{error}"),
                _ => {}
            }
            if answers.len() == N && failed.len() == N {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(failed, doomed.iter().copied().collect());
    assert!(server.stop() >= N);
}

#[test]
fn failed_sends_in_a_batch_are_reported_one_by_one_batched() {
    mixed_failures(true);
}

#[test]
fn failed_sends_are_reported_one_by_one_without_batching() {
    mixed_failures(false);
}
