//! What the CoAP-over-TCP and -TLS tests share: a server driver on its own thread with a
//! small set of resources, and a client loop that gives up after a generous time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Event, ExchangeError, PeerIdentity, RequestId, Transport};
use coap_engine_mio::{StreamDriver, StreamHandler};

/// Long enough for a loaded machine; only there so that a broken test fails instead of
/// hanging.
pub const GIVE_UP: StdDuration = StdDuration::from_secs(30);

pub fn tcp() -> Config {
    Config {
        transport: Transport::Tcp,
        ..Config::default()
    }
}

pub fn request(method: RequestType, path: &str, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for segment in path.split('/') {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

pub fn get(path: &str) -> Packet {
    request(RequestType::Get, path, &[])
}

pub fn content(payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.payload = payload.to_vec();
    p
}

/// `n` bytes that do not repeat with any short period, so that a block lost, doubled or
/// reordered shows.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

/// FNV-1a, 64 bits: enough to tell a body that lost, doubled or moved a block.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `sum` answers for `body`.
pub fn summary(body: &[u8]) -> Vec<u8> {
    format!("{} {:016x}", body.len(), digest(body)).into_bytes()
}

fn path_of(request: &Packet) -> String {
    request
        .get_option(CoapOption::UriPath)
        .map(|segments| {
            segments
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// The test server's resources:
/// - `hello`: "hello";
/// - `echo`: the request's body (small ones: a Block2 request for a further block of a
///   large answer carries no body to echo, and the engine asks the application for the
///   whole representation again);
/// - `sum`: the length and [`digest`] of the request's body (block-wise when large);
/// - `big/N`: N bytes of [`pattern`];
/// - `whoami`: the client's certificate (DER), or "anonymous";
/// - `bye`: "bye", then the server closes the session (a 7.04 Release);
/// - `silent`, and anything else: never answered.
pub fn resources(driver: &mut StreamDriver, event: &Event) {
    let Event::Request { id, peer, request } = event else {
        return;
    };
    let path = path_of(request);
    let response = match path.as_str() {
        "hello" => content(b"hello"),
        "echo" => content(&request.payload),
        "sum" => content(&summary(&request.payload)),
        "whoami" => match driver.endpoint().peer_identity(*peer) {
            Some(PeerIdentity::Certificate(der)) => content(&der),
            _ => content(b"anonymous"),
        },
        "bye" => content(b"bye"),
        p if p.starts_with("big/") => content(&pattern(p[4..].parse().unwrap())),
        _ => return,
    };
    driver.respond(*id, &response).expect("respond");
    if path == "bye" {
        let now = driver.now();
        driver.endpoint_mut().close_session(now, *peer).unwrap();
        driver.drive();
    }
}

/// A [`StreamDriver`] serving [`resources`] on its own thread until stopped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Event>>>,
}

struct Serve {
    stop: Arc<AtomicBool>,
    events: Vec<Event>,
    seen: mpsc::Sender<Event>,
}

impl StreamHandler for Serve {
    fn on_event(&mut self, driver: &mut StreamDriver, event: Event) -> ControlFlow<()> {
        resources(driver, &event);
        let _ = self.seen.send(event.clone());
        self.events.push(event);
        ControlFlow::Continue(())
    }

    fn on_tick(&mut self, _: &mut StreamDriver) -> ControlFlow<(), Option<StdInstant>> {
        if self.stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(StdInstant::now() + StdDuration::from_millis(20)))
    }
}

impl Server {
    /// Listens on `bind` (port 0) with `config`.
    pub fn start_on(bind: &str, config: Config) -> (Server, mpsc::Receiver<Event>) {
        let mut driver = StreamDriver::bind(bind.parse().unwrap(), config).unwrap();
        let addr = driver.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, events) = mpsc::channel();
        let mut serve = Serve {
            stop: stop.clone(),
            events: Vec::new(),
            seen,
        };
        let thread = std::thread::spawn(move || {
            driver.run(&mut serve).unwrap();
            serve.events
        });
        let server = Server {
            addr,
            stop,
            thread: Some(thread),
        };
        (server, events)
    }

    pub fn start(config: Config) -> (Server, mpsc::Receiver<Event>) {
        Self::start_on("127.0.0.1:0", config)
    }

    /// Stops the loop and drops the driver (closing its sockets); returns every event.
    pub fn stop(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits for the server to report an event `pred` accepts; panics after [`GIVE_UP`].
pub fn wait_for(events: &mpsc::Receiver<Event>, what: &str, pred: impl Fn(&Event) -> bool) {
    let give_up = StdInstant::now() + GIVE_UP;
    loop {
        let left = give_up.saturating_duration_since(StdInstant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return,
            Ok(_) => {}
            Err(_) => panic!("the server never saw {what}"),
        }
    }
}

struct Until<F> {
    f: F,
    give_up: StdInstant,
    done: bool,
    events: Vec<Event>,
}

impl<F: FnMut(&mut StreamDriver, &Event) -> bool> StreamHandler for Until<F> {
    fn on_event(&mut self, driver: &mut StreamDriver, event: Event) -> ControlFlow<()> {
        let done = (self.f)(driver, &event);
        self.events.push(event);
        if done {
            self.done = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn on_tick(&mut self, _: &mut StreamDriver) -> ControlFlow<(), Option<StdInstant>> {
        if StdInstant::now() >= self.give_up {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(self.give_up))
    }
}

/// Runs `driver`'s blocking loop until `f` returns true for an event; returns every event
/// seen. Panics, listing them, after [`GIVE_UP`].
pub fn run_until(
    driver: &mut StreamDriver,
    what: &str,
    f: impl FnMut(&mut StreamDriver, &Event) -> bool,
) -> Vec<Event> {
    let mut until = Until {
        f,
        give_up: StdInstant::now() + GIVE_UP,
        done: false,
        events: Vec::new(),
    };
    driver.run(&mut until).unwrap();
    assert!(
        until.done,
        "no {what} after {GIVE_UP:?}: {:#?}",
        until.events
    );
    until.events
}

/// How request `id` ended: its response, or its error.
pub fn outcome(driver: &mut StreamDriver, id: RequestId) -> Result<Packet, ExchangeError> {
    let events = run_until(
        driver,
        "end of the request",
        |_, e| matches!(e, Event::Response { id: i, .. } | Event::RequestFailed { id: i, .. } if *i == id),
    );
    match events.into_iter().last() {
        Some(Event::Response { response, .. }) => Ok(response),
        Some(Event::RequestFailed { error, .. }) => Err(error),
        other => unreachable!("{other:?}"),
    }
}
