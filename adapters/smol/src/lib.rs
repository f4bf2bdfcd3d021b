#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # coap-engine-smol
//!
//! An async CoAP client and server on [smol](https://docs.rs/smol), driven by the sans-IO
//! [`coap_engine::Endpoint`]. One driver task owns the endpoint and an
//! `Async<std::net::UdpSocket>`; it moves datagrams, reads the clock, arms one
//! `async_io::Timer` for the engine's deadline and reports every send's outcome back to the
//! engine. All protocol logic (retransmission, deduplication, separate responses, keepalive)
//! lives in the engine; the handles here are channels to the driver, cheap to clone.
//!
//! - [`Client`]: [`request`](Client::request) resolves to the response or a typed [`Error`]:
//!   the engine's own [`ExchangeError`] (timeout, reset, session/keepalive failure, send
//!   failure, ...), a refused call, or a stopped driver; dropping the future cancels the
//!   request. [`ping`](Client::ping) resolves to the round-trip time.
//! - [`Incoming`]: the server side, a stream of [`IncomingRequest`]s each with a
//!   [`Responder`] that may answer at any time: if the application is slow the engine sends the
//!   Empty ACK itself and the answer goes out as a separate response. [`Incoming::serve`] runs
//!   an async handler per request.
//! - [`Events`]: session lifecycle and send failures ([`Event::SessionNew`],
//!   [`Event::SessionEstablished`], [`Event::SessionFailed`], [`Event::SessionClosed`],
//!   [`Event::SendFailed`], and on a secure server [`Event::HandshakeFailed`]).
//!
//! ```
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::Config;
//! use coap_engine_smol::Driver;
//!
//! smol::block_on(async {
//!     // A server on an ephemeral loopback port, answering every request with "hi".
//!     let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
//!     let server_addr = server.local_addr().unwrap();
//!     let incoming = server.incoming();
//!     let _server_task = server.spawn();
//!     smol::spawn(incoming.serve(|_peer, _request| async {
//!         let mut response = Packet::new();
//!         response.header.code = MessageClass::Response(ResponseType::Content);
//!         response.payload = b"hi".to_vec();
//!         response
//!     }))
//!     .detach();
//!
//!     // A client on another socket.
//!     let client_driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
//!     let client = client_driver.client();
//!     let _client_task = client_driver.spawn();
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request(server_addr, get).await.unwrap();
//!     assert_eq!(response.payload, b"hi");
//! });
//! ```
//!
//! ## `coaps://` (feature `dtls`)
//!
//! A secure endpoint is a driver whose [`Config::security`] holds the engine's DTLS layer,
//! seeded with `dtls_entropy()`; [`Client`], [`Incoming`] and [`Events`] work as on a plain
//! one, and the socket is the CoAPS port (5684). A handshake the server refuses (a wrong key,
//! an untrusted certificate) fails the request with
//! [`ExchangeError::SessionFailed`]`(`[`FailureReason::Security`](coap_engine::FailureReason::Security)`)`.
//! The driver gives the engine the wall-clock time when it starts
//! ([`Driver::from_parts`]), so certificate validity periods are checked without further
//! setup. A pre-shared-key server and a client of it:
//!
//! ```no_run
//! # #[cfg(feature = "dtls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
//! use coap_engine::{Config, Security};
//! use coap_engine_smol::{dtls_entropy, Driver};
//!
//! smol::block_on(async {
//!     // Server: the key of every PSK identity it accepts.
//!     let mut keys = BTreeMap::new();
//!     keys.insert(b"sensor-1".to_vec(), b"secret-key".to_vec());
//!     let dtls = DtlsConfig { psk_store: Some(Arc::new(keys)), ..DtlsConfig::default() };
//!     let security = Security::new(Dtls::new(dtls, dtls_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let server = Driver::bind("127.0.0.1:5684".parse()?, config)?;
//!     let incoming = server.incoming();
//!     server.spawn().detach();
//!     smol::spawn(incoming.serve(|_peer, _request| async {
//!         let mut response = Packet::new();
//!         response.header.code = MessageClass::Response(ResponseType::Content);
//!         response.payload = b"hello".to_vec();
//!         response
//!     }))
//!     .detach();
//!
//!     // Client: its identity and key; the handshake starts with the first request.
//!     let psk = PskCredentials { identity: b"sensor-1".to_vec(), key: b"secret-key".to_vec() };
//!     let dtls = DtlsConfig { psk: Some(psk), ..DtlsConfig::default() };
//!     let security = Security::new(Dtls::new(dtls, dtls_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let driver = Driver::bind("127.0.0.1:0".parse()?, config)?;
//!     let (client, _task) = (driver.client(), driver.spawn());
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request("127.0.0.1:5684".parse()?, get).await?;
//!     println!("{}", String::from_utf8_lossy(&response.payload));
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "dtls"))]
//! # fn main() {}
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration as StdDuration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

pub use coap_engine;
use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::{
    Config, Endpoint, Event, ExchangeError, IncomingRequestId, Instant, Keepalive, RequestId,
    SendErrorKind,
};
use smol::channel::{self, Receiver, Sender, WeakSender};
use smol::future::FutureExt as _;
use smol::stream::Stream;
use smol::{Async, Timer};

/// Capacity of the [`Events`] channel; when full, further events are dropped (logged), so an
/// application that never reads events cannot stall the driver or grow its memory.
pub const EVENT_CAPACITY: usize = 1024;

/// Why a request, ping or other call through this adapter failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request or ping ended without an answer, as the engine reports it:
    /// [`ExchangeError::Timeout`], [`Reset`](ExchangeError::Reset),
    /// [`SessionFailed`](ExchangeError::SessionFailed) (keepalive failure, consecutive
    /// unreachable sends, or a failed DTLS handshake), [`SendFailed`](ExchangeError::SendFailed),
    /// [`SessionClosed`](ExchangeError::SessionClosed) or
    /// [`Cancelled`](ExchangeError::Cancelled).
    Exchange(ExchangeError),
    /// The engine refused the call (not a request, queue full, unknown session, ...); nothing
    /// was sent.
    Rejected(coap_engine::Error),
    /// The driver task has stopped.
    DriverStopped,
}

impl From<ExchangeError> for Error {
    fn from(e: ExchangeError) -> Self {
        Error::Exchange(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Exchange(e) => e.fmt(f),
            Error::Rejected(e) => write!(f, "rejected: {e}"),
            Error::DriverStopped => f.write_str("the CoAP driver task has stopped"),
        }
    }
}

impl std::error::Error for Error {}

type SendFilter = Box<dyn FnMut(SocketAddr, &[u8]) -> io::Result<()> + Send>;
/// Work for the driver task: a closure run on its state. Every handle call is one.
type Cmd = Box<dyn FnOnce(&mut State, Instant) + Send>;

/// 32 bytes from the operating system's random number generator, for
/// [`Dtls::new`](coap_engine::dtls::Dtls::new): every key, random and cookie of the DTLS
/// layer derives from them, so call this once per layer and never reuse the value.
///
/// # Panics
///
/// If the operating system has no random number generator to offer (`getrandom` fails):
/// without one no DTLS key can be made, and there is nothing safe to fall back to.
///
/// ```
/// let entropy = coap_engine_smol::dtls_entropy();
/// assert_ne!(entropy, coap_engine_smol::dtls_entropy());
/// ```
#[cfg(feature = "dtls")]
pub fn dtls_entropy() -> [u8; 32] {
    let mut bytes = [0; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    bytes
}

/// Seconds since 1970 by the system clock; `None` for a clock set before 1970, which would
/// only make every certificate look not yet valid.
fn unix_time() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Owns the socket and the engine. Take the handles you need ([`client`](Self::client),
/// [`incoming`](Self::incoming), [`events`](Self::events)), then run it with
/// [`run`](Self::run) or [`spawn`](Self::spawn). It stops when every [`Client`], [`Incoming`]
/// and [`Responder`] has been dropped (or when its task is dropped).
pub struct Driver {
    state: State,
    cmd_rx: Receiver<Cmd>,
    client: Client,
    incoming: Incoming,
    events: Events,
}

impl Driver {
    /// Binds a UDP socket on `addr` (port 0 picks a free one) with an engine configured by
    /// `config` and randomly seeded. The driver does nothing until [`run`](Self::run) or
    /// [`spawn`](Self::spawn). The engine is told the wall-clock time, as by
    /// [`from_parts`](Self::from_parts).
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Driver> {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let endpoint = Endpoint::new(config, seed)
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Self::from_parts(Async::<UdpSocket>::bind(addr)?, endpoint))
    }

    /// Wraps an existing socket and engine: a fixed seed for a reproducible run, or a socket
    /// set up beforehand (buffer sizes, ...).
    ///
    /// Tells the endpoint the wall-clock time ([`Endpoint::set_unix_time`]), which a secure
    /// endpoint needs to check certificates' validity periods and a plain one ignores.
    ///
    /// A request to a peer that never answers ends in the engine's own [`ExchangeError`]:
    /// ```
    /// use std::net::UdpSocket;
    /// use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// use coap_engine::{Config, Duration, Endpoint, ExchangeError, TransmissionParameters};
    /// use coap_engine_smol::{Driver, Error};
    ///
    /// let transmission = TransmissionParameters {
    ///     ack_timeout: Duration::from_millis(50),
    ///     max_retransmit: 1,
    ///     ..Default::default()
    /// };
    /// let config = Config { transmission, ..Config::default() };
    /// let endpoint = Endpoint::new(config, 7).unwrap(); // fixed seed
    /// let socket = smol::Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
    /// let driver = Driver::from_parts(socket, endpoint);
    /// let (client, _task) = (driver.client(), driver.spawn());
    /// let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// let result = smol::block_on(client.request(silent.local_addr().unwrap(), get));
    /// assert_eq!(result, Err(Error::Exchange(ExchangeError::Timeout)));
    /// ```
    pub fn from_parts(socket: Async<UdpSocket>, mut endpoint: Endpoint) -> Driver {
        let epoch = StdInstant::now();
        if let Some(secs) = unix_time() {
            endpoint.set_unix_time(Instant::ZERO, secs);
        }
        let (cmds, cmd_rx) = channel::unbounded();
        let (incoming_tx, incoming_rx) = channel::unbounded();
        let (events_tx, events_rx) = channel::bounded(EVENT_CAPACITY);
        let state = State {
            socket,
            endpoint,
            epoch,
            filter: None,
            responders: cmds.downgrade(),
            incoming_tx,
            events_tx,
            pending: HashMap::new(),
        };
        Driver {
            state,
            cmd_rx,
            incoming: Incoming {
                rx: incoming_rx,
                _cmds: cmds.clone(),
            },
            events: Events(Box::pin(events_rx)),
            client: Client { cmds },
        }
    }

    /// Installs a hook run before every send: returning `Err(e)` makes that send fail with `e`
    /// instead of reaching the socket (classified by [`SendErrorKind::from_io_error`] and
    /// reported to the engine like a real failure). For tests and fault injection, e.g.
    /// flipping an `AtomicBool` to return `ErrorKind::NetworkUnreachable`.
    pub fn set_send_filter(
        &mut self,
        filter: impl FnMut(SocketAddr, &[u8]) -> io::Result<()> + Send + 'static,
    ) {
        self.state.filter = Some(Box::new(filter));
    }

    /// The socket's local address (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.state.socket.get_ref().local_addr()
    }

    /// A client handle.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The incoming-request stream (server side). While no clone of it is alive, incoming
    /// requests are answered 4.04 Not Found.
    pub fn incoming(&self) -> Incoming {
        self.incoming.clone()
    }

    /// The session event stream. Events go to one of the clones that are alive; if none is
    /// taken before the driver runs, they are discarded.
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Spawns [`run`](Self::run) on smol's global executor. Dropping the returned task stops
    /// the driver; `.detach()` it to let it run on its own.
    pub fn spawn(self) -> smol::Task<io::Result<()>> {
        smol::spawn(self.run())
    }

    /// Drives the engine until every handle is gone. Returns an error only if the socket
    /// fails to receive in a way that cannot be retried.
    pub async fn run(self) -> io::Result<()> {
        let Driver {
            mut state,
            cmd_rx,
            client,
            incoming,
            events,
        } = self;
        drop((client, incoming, events)); // only the application's handles keep it running
        let mut buf = vec![0u8; 65_535];
        loop {
            state.drain().await;
            let timer = match state.endpoint.poll_timeout() {
                Some(t) => Timer::at(state.epoch + StdDuration::from_micros(t.as_micros())),
                None => Timer::never(),
            };
            let wake = async { Wake::Cmd(cmd_rx.recv().await.ok()) }
                .or(async { Wake::Datagram(state.socket.recv_from(&mut buf).await) })
                .or(async {
                    timer.await;
                    Wake::Timeout
                })
                .await;
            let now = state.now();
            match wake {
                Wake::Cmd(None) => return Ok(()),
                Wake::Cmd(Some(cmd)) => cmd(&mut state, now),
                Wake::Datagram(Ok((n, peer))) => {
                    state.endpoint.handle_datagram(now, peer, &buf[..n])
                }
                // ICMP errors from earlier sends surface here (e.g. ECONNREFUSED); harmless.
                Wake::Datagram(Err(e)) if is_transient(&e) => log::debug!("receive: {e}"),
                Wake::Datagram(Err(e)) => return Err(e),
                Wake::Timeout => state.endpoint.handle_timeout(now),
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::InvalidInput | ErrorKind::PermissionDenied | ErrorKind::Unsupported
    ) && e.raw_os_error() != Some(9) // EBADF
}

enum Wake {
    Cmd(Option<Cmd>),
    Datagram(io::Result<(usize, SocketAddr)>),
    Timeout,
}

/// Everything the driver task owns.
struct State {
    socket: Async<UdpSocket>,
    endpoint: Endpoint,
    epoch: StdInstant,
    filter: Option<SendFilter>,
    /// For the [`Responder`]s it hands out; weak, or the driver would keep itself running.
    responders: WeakSender<Cmd>,
    incoming_tx: Sender<IncomingRequest>,
    events_tx: Sender<Event>,
    /// Requests and pings whose future is waiting for their terminal event.
    pending: HashMap<RequestId, Sender<Result<Event, Error>>>,
}

impl State {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The drain rule: transmits (reporting failures), then events, until both are empty.
    async fn drain(&mut self) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                let mut sent = match &mut self.filter {
                    Some(filter) => filter(t.destination, &t.payload),
                    None => Ok(()),
                };
                if sent.is_ok() {
                    // `Async::send_to` waits until the socket is writable (no WouldBlock).
                    sent = self
                        .socket
                        .send_to(&t.payload, t.destination)
                        .await
                        .map(drop);
                }
                if let Err(e) = sent {
                    let kind = SendErrorKind::from_io_error(&e).unwrap_or(SendErrorKind::Other);
                    log::debug!("send to {} failed: {e} ({kind:?})", t.destination);
                    self.endpoint
                        .handle_send_result(self.now(), t.id, Err(kind));
                }
            }
            while let Some(event) = self.endpoint.poll_event() {
                self.route(event);
            }
            if !self.endpoint.has_transmits() {
                return;
            }
        }
    }

    /// Hands an event to the future waiting for it, to [`Incoming`] or to [`Events`].
    fn route(&mut self, event: Event) {
        let (id, outcome) = match event {
            Event::Request { id, peer, request } => return self.incoming(id, peer, request),
            Event::Response { id, .. } | Event::Pong { id, .. } => (id, Ok(event)),
            Event::RequestFailed { id, error, .. } | Event::PingFailed { id, error, .. } => {
                (id, Err(Error::Exchange(error)))
            }
            other => {
                if let Err(e) = self.events_tx.try_send(other) {
                    if e.is_full() {
                        log::warn!("event stream full; dropping {:?}", e.into_inner());
                    }
                }
                return;
            }
        };
        // Absent when its future was dropped (cancelled): nobody is waiting.
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.try_send(outcome);
        }
    }

    fn incoming(&mut self, id: IncomingRequestId, peer: SocketAddr, request: Packet) {
        match self.responders.upgrade() {
            Some(cmds) if self.incoming_tx.receiver_count() > 0 => {
                let responder = Responder {
                    id,
                    cmds,
                    answered: false,
                };
                let _ = self.incoming_tx.try_send(IncomingRequest {
                    peer,
                    request,
                    responder,
                });
            }
            _ => drop(
                self.endpoint
                    .respond(self.now(), id, &code(ResponseType::NotFound)),
            ),
        }
    }
}

fn code(code: ResponseType) -> Packet {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Response(code);
    packet
}

/// A handle for sending requests and pings and managing sessions. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmds: Sender<Cmd>,
}

impl Client {
    /// Sends `request` to `peer` (Confirmable unless the packet says Non-confirmable) and
    /// resolves to the response. Dropping the future cancels the request in the engine.
    pub async fn request(&self, peer: SocketAddr, request: Packet) -> Result<Packet, Error> {
        let event = self.exchange(move |e, now| e.request(now, peer, &request));
        match event.await? {
            Event::Response { response, .. } => Ok(response),
            other => unreachable!("a request ended with {other:?}"),
        }
    }

    /// Sends a CoAP ping (Empty CON) to `peer` and resolves to the round-trip time.
    pub async fn ping(&self, peer: SocketAddr) -> Result<StdDuration, Error> {
        match self.exchange(move |e, now| e.ping(now, peer)).await? {
            Event::Pong { rtt, .. } => Ok(rtt.into()),
            other => unreachable!("a ping ended with {other:?}"),
        }
    }

    /// Opens a session with `peer` without sending anything, so that keepalive watches it.
    pub async fn open_session(&self, peer: SocketAddr) -> Result<(), Error> {
        call(&self.cmds, move |e, now| e.open_session(now, peer)).await
    }

    /// Closes the session with `peer`; its pending requests end with
    /// [`ExchangeError::SessionClosed`].
    pub async fn close_session(&self, peer: SocketAddr) -> Result<(), Error> {
        call(&self.cmds, move |e, now| e.close_session(now, peer)).await
    }

    /// Sets (or clears) the keepalive of the existing session with `peer`.
    pub async fn set_keepalive(
        &self,
        peer: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(), Error> {
        call(&self.cmds, move |e, now| {
            e.set_keepalive(now, peer, keepalive)
        })
        .await
    }

    /// Starts a request or ping in the driver and waits for its terminal event (a failure
    /// comes as `Err`).
    async fn exchange(
        &self,
        start: impl FnOnce(&mut Endpoint, Instant) -> Result<RequestId, coap_engine::Error>
            + Send
            + 'static,
    ) -> Result<Event, Error> {
        let (reply, rx) = channel::bounded(1);
        let cmd: Cmd = Box::new(move |s, now| match start(&mut s.endpoint, now) {
            Ok(id) => drop(s.pending.insert(id, reply)),
            Err(e) => drop(reply.try_send(Err(Error::Rejected(e)))),
        });
        self.cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
        let cancel_on_drop = CancelOnDrop(&self.cmds, &rx);
        let result = rx.recv().await.unwrap_or(Err(Error::DriverStopped));
        std::mem::forget(cancel_on_drop);
        result
    }
}

/// Runs `f` on the engine inside the driver and waits for its result.
async fn call(
    cmds: &Sender<Cmd>,
    f: impl FnOnce(&mut Endpoint, Instant) -> Result<(), coap_engine::Error> + Send + 'static,
) -> Result<(), Error> {
    let (tx, rx) = channel::bounded(1);
    let cmd: Cmd = Box::new(move |s, now| drop(tx.try_send(f(&mut s.endpoint, now))));
    cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
    let result = rx.recv().await.map_err(|_| Error::DriverStopped)?;
    result.map_err(Error::Rejected)
}

/// Dropped with a request's future before it resolved: closes its answer channel, and the
/// driver cancels every pending exchange whose channel is closed.
struct CancelOnDrop<'a, T>(&'a Sender<Cmd>, &'a Receiver<T>);

impl<T> Drop for CancelOnDrop<'_, T> {
    fn drop(&mut self) {
        self.1.close();
        let _ = self.0.try_send(Box::new(|s, now| {
            s.pending.retain(|&id, reply| {
                let gone = reply.is_closed();
                if gone {
                    let _ = s.endpoint.cancel(now, id);
                }
                !gone
            })
        }));
    }
}

/// A request received by the server side, with the [`Responder`] that answers it.
pub struct IncomingRequest {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The request as received (already deduplicated by the engine).
    pub request: Packet,
    /// Answers it, now or later.
    pub responder: Responder,
}

/// Answers one incoming request. Respond whenever ready: if it takes longer than
/// [`Config::empty_ack_delay`] the engine has already acknowledged the request and the answer
/// goes out as a separate response. Dropping it unanswered sends 5.00 Internal Server Error.
pub struct Responder {
    id: IncomingRequestId,
    cmds: Sender<Cmd>,
    answered: bool,
}

impl Responder {
    /// Sends `response` (its code must be a response code; type, Message ID and token are set
    /// by the engine). Resolves once the engine has accepted it.
    pub async fn respond(mut self, response: Packet) -> Result<(), Error> {
        self.answered = true;
        let id = self.id;
        call(&self.cmds, move |e, now| e.respond(now, id, &response)).await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let id = self.id;
            let _ = self.cmds.try_send(Box::new(move |s, now| {
                let _ = s
                    .endpoint
                    .respond(now, id, &code(ResponseType::InternalServerError));
            }));
        }
    }
}

/// The stream of incoming requests (server side). Clones share one queue: each request goes
/// to one of them. Holding it keeps the driver running.
///
/// A server that answers late, as a separate response (the engine sends the Empty ACK):
/// ```
/// use std::time::Duration;
/// use coap_engine::coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
/// use coap_engine_smol::Driver;
///
/// smol::block_on(async {
///     let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (addr, incoming, _task) = (server.local_addr().unwrap(), server.incoming(), server.spawn());
///     smol::spawn(async move {
///         while let Some(req) = incoming.next().await {
///             smol::Timer::after(Duration::from_millis(1200)).await; // > empty_ack_delay (1 s)
///             let mut response = Packet::new();
///             response.header.code = MessageClass::Response(ResponseType::Content);
///             req.responder.respond(response).await.unwrap();
///         }
///     })
///     .detach();
///
///     let client = Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
///     let (client, _task) = (client.client(), client.spawn());
///     let mut get = Packet::new();
///     get.header.code = MessageClass::Request(RequestType::Get);
///     let response = client.request(addr, get).await.unwrap();
///     assert_eq!(response.header.get_type(), MessageType::Confirmable); // not piggybacked
/// });
/// ```
#[derive(Clone)]
pub struct Incoming {
    rx: Receiver<IncomingRequest>,
    _cmds: Sender<Cmd>,
}

impl Incoming {
    /// The next incoming request; `None` once the driver has stopped.
    pub async fn next(&self) -> Option<IncomingRequest> {
        self.rx.recv().await.ok()
    }

    /// Serves every incoming request with `handler`, each in its own task on smol's global
    /// executor, so a slow answer (sent as a separate response) holds up no other request.
    /// Runs until the driver stops.
    pub async fn serve<F, Fut>(self, handler: F)
    where
        F: Fn(SocketAddr, Packet) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Packet> + Send + 'static,
    {
        let handler = Arc::new(handler);
        while let Some(incoming) = self.next().await {
            let handler = handler.clone();
            smol::spawn(async move {
                let (peer, responder) = (incoming.peer, incoming.responder);
                let response = handler(peer, incoming.request).await;
                if let Err(e) = responder.respond(response).await {
                    log::warn!("response to {peer} not sent: {e}");
                }
            })
            .detach();
        }
    }
}

/// The session event stream: [`Event::SessionNew`], [`Event::SessionEstablished`],
/// [`Event::SessionFailed`], [`Event::SessionClosed`], [`Event::SendFailed`],
/// [`Event::HandshakeFailed`] (a secure server's refused or stalled handshakes). Responses,
/// pongs and failures of requests and pings go to their futures (and are dropped with a
/// future that was dropped), requests to [`Incoming`]. Bounded by [`EVENT_CAPACITY`].
pub struct Events(Pin<Box<Receiver<Event>>>);

impl Clone for Events {
    fn clone(&self) -> Self {
        Events(Box::pin(Receiver::clone(&self.0)))
    }
}

impl Events {
    /// The next event; `None` once the driver has stopped.
    pub async fn recv(&self) -> Option<Event> {
        self.0.recv().await.ok()
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.as_mut().poll_next(cx)
    }
}
