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
//! - [`Client`]: [`request`](Client::request) resolves to the response or a typed [`Error`]
//!   (timeout, reset, session/keepalive failure, send failure, cancelled); dropping the future
//!   cancels the request. [`ping`](Client::ping) resolves to the round-trip time.
//! - [`Incoming`]: the server side, a stream of [`IncomingRequest`]s each with a
//!   [`Responder`] that may answer at any time: if the application is slow the engine sends the
//!   Empty ACK itself and the answer goes out as a separate response. [`Incoming::serve`] runs
//!   an async handler per request.
//! - [`Events`]: session lifecycle and send failures ([`Event::SessionNew`],
//!   [`Event::SessionEstablished`], [`Event::SessionFailed`], [`Event::SessionClosed`],
//!   [`Event::SendFailed`]).
//!
//! ```
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine_smol::Driver;
//!
//! smol::block_on(async {
//!     // A server on an ephemeral loopback port, answering every request with "hi".
//!     let server = Driver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
//!     let client_driver = Driver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let client = client_driver.client();
//!     let _client_task = client_driver.spawn();
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request(server_addr, get).await.unwrap();
//!     assert_eq!(response.payload, b"hi");
//! });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant as StdInstant;

use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::{
    Config, Duration, Endpoint, Event, ExchangeError, FailureReason, IncomingRequestId, Instant,
    Keepalive, RequestId, SendErrorKind, Transmit,
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
    /// No acknowledgement after all retransmissions, or no response in time.
    Timeout,
    /// The peer answered with Reset.
    Reset,
    /// The session failed while the exchange was pending: keepalive timeout
    /// ([`FailureReason::KeepaliveTimeout`]) or consecutive unreachable sends.
    SessionFailed(FailureReason),
    /// The session was closed while the exchange was pending.
    SessionClosed,
    /// The message could not be sent (see [`SendErrorKind`]).
    SendFailed(SendErrorKind),
    /// The exchange was cancelled.
    Cancelled,
    /// Another exchange error the engine may add in the future.
    Exchange(ExchangeError),
    /// The engine refused the call (not a request, queue full, unknown session, ...).
    Rejected(coap_engine::Error),
    /// The driver task has stopped.
    DriverStopped,
}

impl From<ExchangeError> for Error {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Timeout => Error::Timeout,
            ExchangeError::Reset => Error::Reset,
            ExchangeError::SessionFailed(reason) => Error::SessionFailed(reason),
            ExchangeError::SessionClosed => Error::SessionClosed,
            ExchangeError::SendFailed(kind) => Error::SendFailed(kind),
            ExchangeError::Cancelled => Error::Cancelled,
            other => Error::Exchange(other),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout => ExchangeError::Timeout.fmt(f),
            Error::Reset => ExchangeError::Reset.fmt(f),
            Error::SessionFailed(r) => ExchangeError::SessionFailed(*r).fmt(f),
            Error::SessionClosed => ExchangeError::SessionClosed.fmt(f),
            Error::SendFailed(k) => ExchangeError::SendFailed(*k).fmt(f),
            Error::Cancelled => ExchangeError::Cancelled.fmt(f),
            Error::Exchange(e) => e.fmt(f),
            Error::Rejected(e) => write!(f, "rejected: {e}"),
            Error::DriverStopped => f.write_str("the CoAP driver task has stopped"),
        }
    }
}

impl std::error::Error for Error {}

type SendFilter = Arc<dyn Fn(SocketAddr, &[u8]) -> io::Result<()> + Send + Sync>;
type Call = Box<dyn FnOnce(&mut Endpoint, Instant) -> Result<(), coap_engine::Error> + Send>;

enum Answer {
    Response(Packet),
    Pong(Duration),
}

enum Cmd {
    /// A request (or, without a packet, a ping) under the client's key for cancelling it.
    Exchange(
        u64,
        SocketAddr,
        Option<Packet>,
        Sender<Result<Answer, Error>>,
    ),
    Cancel(u64),
    Call(Call, Option<Sender<Result<(), coap_engine::Error>>>),
}

/// Configures a [`Driver`] before binding its socket.
pub struct Builder {
    config: Config,
    seed: Option<u64>,
    send_filter: Option<SendFilter>,
}

impl Builder {
    /// A builder with the engine configuration `config`.
    pub fn new(config: Config) -> Self {
        Builder {
            config,
            seed: None,
            send_filter: None,
        }
    }

    /// Seeds the engine's randomness (Message IDs, tokens, jitter); by default a random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Installs a hook run before every send: returning `Err(e)` makes that send fail with `e`
    /// instead of reaching the socket (classified by [`SendErrorKind::from_io_error`] and reported to
    /// the engine like a real failure). For tests and fault injection, e.g. flipping an
    /// `AtomicBool` to return `ErrorKind::NetworkUnreachable`.
    pub fn send_filter(
        mut self,
        filter: impl Fn(SocketAddr, &[u8]) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.send_filter = Some(Arc::new(filter));
        self
    }

    /// Binds the UDP socket and creates the driver (which does nothing until
    /// [`Driver::run`] or [`Driver::spawn`]).
    pub fn bind(self, addr: SocketAddr) -> io::Result<Driver> {
        let socket = Async::<UdpSocket>::bind(addr)?;
        let seed = self.seed.unwrap_or_else(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        let endpoint = Endpoint::new(self.config, seed)
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        let (cmd_tx, cmd_rx) = channel::unbounded();
        let (incoming_tx, incoming_rx) = channel::unbounded();
        let (events_tx, events_rx) = channel::bounded(EVENT_CAPACITY);
        let state = State {
            endpoint,
            epoch: StdInstant::now(),
            responders: Sender::downgrade(&cmd_tx),
            incoming_tx,
            events_tx,
            by_key: HashMap::new(),
            pending: HashMap::new(),
        };
        let client = Client {
            cmds: cmd_tx,
            next_key: Arc::default(),
        };
        let filter = self.send_filter;
        Ok(Driver {
            socket,
            state,
            filter,
            client,
            cmd_rx,
            incoming_rx,
            events_rx,
        })
    }
}

/// Owns the socket and the engine. Take the handles you need ([`client`](Self::client),
/// [`incoming`](Self::incoming), [`events`](Self::events)), then run it with
/// [`run`](Self::run) or [`spawn`](Self::spawn). It stops when every [`Client`], [`Incoming`]
/// and [`Responder`] has been dropped (or when its task is dropped).
pub struct Driver {
    socket: Async<UdpSocket>,
    state: State,
    filter: Option<SendFilter>,
    client: Client,
    cmd_rx: Receiver<Cmd>,
    incoming_rx: Receiver<IncomingRequest>,
    events_rx: Receiver<Event>,
}

impl Driver {
    /// Binds `addr` with the default [`Config`]; see [`Builder`] for more.
    pub fn bind(addr: SocketAddr) -> io::Result<Driver> {
        Builder::new(Config::default()).bind(addr)
    }

    /// The socket's local address (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// A client handle.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The incoming-request stream (server side). If none is taken before the driver runs,
    /// incoming requests are answered 4.04 Not Found.
    pub fn incoming(&self) -> Incoming {
        Incoming {
            rx: self.incoming_rx.clone(),
            _cmds: self.client.cmds.clone(),
        }
    }

    /// The session event stream. Events go to one of the clones that are alive; if none is
    /// taken before the driver runs, they are discarded.
    pub fn events(&self) -> Events {
        Events(Box::pin(self.events_rx.clone()))
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
            socket,
            mut state,
            filter,
            client,
            cmd_rx,
            incoming_rx,
            events_rx,
        } = self;
        // Drop our own handle and receivers, so that closed streams are noticed.
        drop((client, incoming_rx, events_rx));
        state.epoch = StdInstant::now();
        let mut buf = vec![0u8; 65_535];
        loop {
            state.drain(&socket, filter.as_ref()).await;
            let deadline = state.endpoint.poll_timeout();
            let epoch = state.epoch;
            let cmd = async { Wake::Cmd(cmd_rx.recv().await.ok()) };
            let recv = async { Wake::Datagram(socket.recv_from(&mut buf).await) };
            let timer = async {
                match deadline {
                    Some(t) => {
                        Timer::at(epoch + std::time::Duration::from_micros(t.as_micros())).await;
                    }
                    None => std::future::pending::<()>().await,
                }
                Wake::Timeout
            };
            let wake = cmd.or(recv).or(timer).await;
            let now = state.now();
            match wake {
                Wake::Cmd(None) => return Ok(()),
                Wake::Cmd(Some(cmd)) => state.command(now, cmd),
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

struct State {
    endpoint: Endpoint,
    epoch: StdInstant,
    responders: WeakSender<Cmd>,
    incoming_tx: Sender<IncomingRequest>,
    events_tx: Sender<Event>,
    by_key: HashMap<u64, RequestId>,
    pending: HashMap<RequestId, (u64, Sender<Result<Answer, Error>>)>,
}

impl State {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The drain rule: transmits (reporting failures), then events, until both are empty.
    async fn drain(&mut self, socket: &Async<UdpSocket>, filter: Option<&SendFilter>) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                if let Err(e) = send(socket, filter, &t).await {
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

    fn route(&mut self, event: Event) {
        let (id, outcome) = match event {
            Event::Response { id, response, .. } => (id, Ok(Answer::Response(response))),
            Event::Pong { id, rtt, .. } if self.pending.contains_key(&id) => {
                (id, Ok(Answer::Pong(rtt)))
            }
            Event::RequestFailed { id, error, .. } | Event::PingFailed { id, error, .. } => {
                (id, Err(Error::from(error)))
            }
            Event::Request { id, peer, request } => return self.incoming(id, peer, request),
            other => {
                if let Err(e) = self.events_tx.try_send(other) {
                    if e.is_full() {
                        log::warn!("event stream full; dropping {:?}", e.into_inner());
                    }
                }
                return;
            }
        };
        if let Some((key, reply)) = self.pending.remove(&id) {
            self.by_key.remove(&key);
            let _ = reply.try_send(outcome);
        }
    }

    fn incoming(&mut self, id: IncomingRequestId, peer: SocketAddr, request: Packet) {
        if let Some(cmds) = self.responders.upgrade() {
            let responder = Responder {
                id,
                cmds,
                answered: false,
            };
            let item = IncomingRequest {
                peer,
                request,
                responder,
            };
            match self.incoming_tx.try_send(item) {
                Ok(()) => return,
                Err(e) => e.into_inner().responder.answered = true,
            }
        }
        let now = self.now();
        let _ = self
            .endpoint
            .respond(now, id, &response(ResponseType::NotFound));
    }

    fn command(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Exchange(key, peer, request, reply) => {
                let started = match &request {
                    Some(packet) => self.endpoint.request(now, peer, packet),
                    None => self.endpoint.ping(now, peer),
                };
                match started {
                    Ok(id) => {
                        self.by_key.insert(key, id);
                        self.pending.insert(id, (key, reply));
                    }
                    Err(e) => drop(reply.try_send(Err(Error::Rejected(e)))),
                }
            }
            Cmd::Cancel(key) => {
                if let Some(id) = self.by_key.get(&key) {
                    let _ = self.endpoint.cancel(now, *id);
                }
            }
            Cmd::Call(call, reply) => {
                let result = call(&mut self.endpoint, now);
                if let Some(reply) = reply {
                    let _ = reply.try_send(result);
                }
            }
        }
    }
}

async fn send(
    socket: &Async<UdpSocket>,
    filter: Option<&SendFilter>,
    t: &Transmit,
) -> io::Result<()> {
    if let Some(filter) = filter {
        filter(t.destination, &t.payload)?;
    }
    // `Async::send_to` waits until the socket is writable and retries on WouldBlock.
    socket.send_to(&t.payload, t.destination).await.map(drop)
}

fn response(code: ResponseType) -> Packet {
    let mut packet = Packet::new();
    packet.header.code = MessageClass::Response(code);
    packet
}

/// A handle for sending requests and pings and managing sessions. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmds: Sender<Cmd>,
    next_key: Arc<AtomicU64>,
}

impl Client {
    /// Sends `request` to `peer` (Confirmable unless the packet says Non-confirmable) and
    /// resolves to the response. Dropping the future cancels the request in the engine.
    pub async fn request(&self, peer: SocketAddr, request: Packet) -> Result<Packet, Error> {
        match self.exchange(peer, Some(request)).await? {
            Answer::Response(packet) => Ok(packet),
            Answer::Pong(_) => unreachable!("a request is answered by a response"),
        }
    }

    /// Sends a CoAP ping (Empty CON) to `peer` and resolves to the round-trip time.
    pub async fn ping(&self, peer: SocketAddr) -> Result<std::time::Duration, Error> {
        match self.exchange(peer, None).await? {
            Answer::Pong(rtt) => Ok(rtt.into()),
            Answer::Response(_) => unreachable!("a ping is answered by a pong"),
        }
    }

    /// Opens a session with `peer` without sending anything, so that keepalive watches it.
    pub async fn open_session(&self, peer: SocketAddr) -> Result<(), Error> {
        call(&self.cmds, move |e, now| e.open_session(now, peer)).await
    }

    /// Closes the session with `peer`; its pending requests end with [`Error::SessionClosed`].
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

    async fn exchange(&self, peer: SocketAddr, request: Option<Packet>) -> Result<Answer, Error> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = channel::bounded(1);
        let cmd = Cmd::Exchange(key, peer, request, reply);
        self.cmds.try_send(cmd).map_err(|_| Error::DriverStopped)?;
        let mut guard = CancelOnDrop {
            key,
            cmds: &self.cmds,
            armed: true,
        };
        let result = rx.recv().await.unwrap_or(Err(Error::DriverStopped));
        guard.armed = false;
        result
    }
}

/// Runs `f` on the engine inside the driver and waits for its result.
async fn call(
    cmds: &Sender<Cmd>,
    f: impl FnOnce(&mut Endpoint, Instant) -> Result<(), coap_engine::Error> + Send + 'static,
) -> Result<(), Error> {
    let (tx, rx) = channel::bounded(1);
    cmds.try_send(Cmd::Call(Box::new(f), Some(tx)))
        .map_err(|_| Error::DriverStopped)?;
    rx.recv()
        .await
        .map_err(|_| Error::DriverStopped)?
        .map_err(Error::Rejected)
}

/// Cancels a request whose future is dropped before it resolved.
struct CancelOnDrop<'a> {
    key: u64,
    cmds: &'a Sender<Cmd>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cmds.try_send(Cmd::Cancel(self.key));
        }
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
            let call: Call = Box::new(move |e, now| {
                e.respond(now, id, &response(ResponseType::InternalServerError))
            });
            let _ = self.cmds.try_send(Cmd::Call(call, None));
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
///     let server = Driver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
///     let client = Driver::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
/// [`Event::SessionFailed`], [`Event::SessionClosed`], [`Event::SendFailed`] (and pongs of
/// pings not sent through a [`Client`]). Responses and requests go to their futures and to
/// [`Incoming`] instead. Bounded by [`EVENT_CAPACITY`].
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
