//! `coap-server -W 2`: two threads, each with its own endpoints on the same ports. Observers
//! that the kernel spread over both threads all hear a change made through either thread.
#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Event};
use coap_engine_mio::mio::{Events, Poll, Token};
use coap_engine_mio::Driver;

const SERVER: &str = env!("CARGO_BIN_EXE_coap-server");
/// Enough that the kernel leaves neither thread without one (all on one: 2^-39).
const OBSERVERS: usize = 40;

mod common;

/// The server process (killed with the guard) and its log file (removed).
struct Server {
    process: common::Server,
    log: PathBuf,
    at: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start(args: &[&str]) -> Server {
    let log = std::env::temp_dir().join(format!("coap-server-threads-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let process = common::start_logging(SERVER, args, Some(&file));
    let at = SocketAddr::from(([127, 0, 0, 1], process.port));
    Server { process, log, at }
}

fn request(method: RequestType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    if method == RequestType::Put {
        p.add_option(CoapOption::ContentFormat, vec![]); // text/plain
    }
    p.payload = payload.to_vec();
    p
}

/// Clients in one poll: driver `i` has token `i`.
struct Clients {
    poll: Poll,
    events: Events,
    drivers: Vec<Driver>,
    /// Events no handler took yet, in order: (driver, event).
    backlog: VecDeque<(usize, Event)>,
}

impl Clients {
    fn new() -> Clients {
        Clients {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            drivers: Vec::new(),
            backlog: VecDeque::new(),
        }
    }

    /// A new client on its own port: a peer of its own for the server.
    fn add(&mut self) -> usize {
        let i = self.drivers.len();
        let mut d = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        d.register(self.poll.registry(), Token(i)).unwrap();
        self.drivers.push(d);
        i
    }

    /// Runs until `done` holds for the events seen so far, or panics after 10 seconds.
    /// `on` returns the events it does not take, for the next call.
    fn until(
        &mut self,
        what: &str,
        mut on: impl FnMut(usize, Event) -> Option<Event>,
        mut done: impl FnMut() -> bool,
    ) {
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut left = VecDeque::new();
        loop {
            while let Some((i, event)) = self.backlog.pop_front() {
                if let Some(event) = on(i, event) {
                    left.push_back((i, event));
                }
            }
            if done() {
                break;
            }
            assert!(Instant::now() < give_up, "{what}: not after 10 s");
            let timeout = self
                .drivers
                .iter()
                .filter_map(Driver::next_timeout)
                .chain([Duration::from_millis(100)])
                .min();
            self.poll.poll(&mut self.events, timeout).unwrap();
            for event in self.events.iter() {
                self.drivers[event.token().0].handle_event(event);
            }
            for (i, d) in self.drivers.iter_mut().enumerate() {
                d.handle_timeout();
                while let Some(event) = d.poll_event() {
                    self.backlog.push_back((i, event));
                }
            }
        }
        left.append(&mut self.backlog);
        self.backlog = left;
    }

    /// One request from a new client; its response.
    fn exchange(&mut self, at: SocketAddr, request: &Packet) -> Packet {
        let c = self.add();
        self.drivers[c].request(at, request).unwrap();
        let got = RefCell::new(None);
        self.until(
            "response",
            |i, event| match event {
                Event::Response { response, .. } if i == c => {
                    *got.borrow_mut() = Some(response);
                    None
                }
                Event::RequestFailed { error, .. } if i == c => panic!("{error}"),
                other => Some(other),
            },
            || got.borrow().is_some(),
        );
        got.into_inner().unwrap()
    }
}

/// The threads (`[thread N]` in the log) that added an observer.
fn threads_with_observers(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("observer added"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect()
}

#[test]
fn observers_on_every_thread_hear_a_change_made_on_any() {
    let server = start(&["-W", "2", "-d", "4", "-v", "6"]);
    let mut clients = Clients::new();
    let created = clients.exchange(server.at, &request(RequestType::Put, "shared", b"v1"));
    assert_eq!(
        created.header.code,
        MessageClass::Response(ResponseType::Created)
    );

    let observers: Vec<usize> = (0..OBSERVERS).map(|_| clients.add()).collect();
    for &o in &observers {
        let d = &mut clients.drivers[o];
        let now = d.now();
        let get = request(RequestType::Get, "shared", b"");
        d.endpoint_mut().observe(now, server.at, &get).unwrap();
        d.drive();
    }
    // Each observer's payloads, in order, and the code of the final response once it came.
    let heard = RefCell::new(vec![Vec::<Vec<u8>>::new(); OBSERVERS]);
    let ended = RefCell::new(vec![None::<ResponseType>; OBSERVERS]);
    let on = |i: usize, event: Event| {
        let Some(o) = observers.iter().position(|&x| x == i) else {
            return Some(event);
        };
        match event {
            Event::Notification { response, .. } => heard.borrow_mut()[o].push(response.payload),
            Event::Response { response, .. } => {
                if let MessageClass::Response(code) = response.header.code {
                    ended.borrow_mut()[o] = Some(code);
                }
            }
            Event::RequestFailed { error, .. } => panic!("observer {o}: {error}"),
            _ => {}
        }
        None
    };
    let mut log = String::new();
    clients.until("every observer registered", on, || {
        log = server.log();
        log.matches("observer added").count() == OBSERVERS
    });
    let threads = threads_with_observers(&log);
    assert_eq!(
        threads.len(),
        2,
        "observers on threads {threads:?} only:\n{log}"
    );

    // The change comes from a client of its own, on one thread; some observers are on the
    // other.
    let changed = clients.exchange(server.at, &request(RequestType::Put, "shared", b"v2"));
    assert_eq!(
        changed.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    clients.until("every observer notified", on, || {
        heard
            .borrow()
            .iter()
            .all(|h| h.last().is_some_and(|p| p == b"v2"))
    });
    for h in heard.borrow().iter() {
        assert_eq!(h, &[b"v1".to_vec(), b"v2".to_vec()]);
    }

    let deleted = clients.exchange(server.at, &request(RequestType::Delete, "shared", b""));
    assert_eq!(
        deleted.header.code,
        MessageClass::Response(ResponseType::Deleted)
    );
    clients.until("every observation ended", on, || {
        ended.borrow().iter().all(Option::is_some)
    });
    let ended = ended.into_inner();
    assert!(
        ended.iter().all(|e| *e == Some(ResponseType::NotFound)),
        "{ended:?}"
    );
}
