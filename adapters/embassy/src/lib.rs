#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # coap-engine-embassy
//!
//! An async CoAP client and server for [embassy](https://embassy.dev): the sans-IO
//! [`coap_engine::Endpoint`] driven over an `embassy-net` [`UdpSocket`] with `embassy-time`
//! timers, or over `TcpSocket`s for CoAP over TCP (RFC 8323, feature `tcp`, see the `tcp`
//! module). `#![no_std]` + `alloc`, no `unsafe`.
//!
//! Three pieces share one [`CoapChannels`] (place it in a `static` or a `StaticCell`):
//!
//! - [`CoapRunner`] owns the engine and the socket; [`CoapRunner::run`] is a future that never
//!   ends: spawn it as its own task. Do not `join` it with the embassy-net `Runner` in one
//!   task: each wakes the other whenever it is polled, so a shared task never sleeps. It selects over the socket,
//!   one [`Timer`] for the engine's deadline and the command channel, and after every input
//!   drains the engine (transmits, then events) as `coap-engine` requires. It never blocks on
//!   the application: a full channel drops a session event, or answers an incoming request
//!   with 5.03 Service Unavailable. With feature `tcp`, `tcp::TcpRunner` takes its place
//!   for a CoAP-over-TCP endpoint and serves the same handles.
//! - [`Client`]: [`Client::request`] sends a request and resolves to the response or a typed
//!   [`RequestError`]: the engine's own [`ExchangeError`] (timeout, reset, session failure or
//!   close, send failure, block-wise failures, ...) or the engine's refusal;
//!   [`Client::observe`] (RFC 7641) returns an [`Observation`] whose
//!   [`next`](Observation::next) yields notifications, then exactly one end, and which ends
//!   with [`Observation::deregister`], [`Observation::cancel`] or when dropped;
//!   [`Client::ping`], [`Client::open_session`] (with a per-session keepalive),
//!   [`Client::close_session`] and [`Client::next_event`] for session lifecycle events.
//! - [`Server`]: [`Server::next_request`] yields incoming requests; answer each with
//!   [`Server::respond`], now or later (the engine sends an Empty ACK, then a separate
//!   response, when the answer is late). Observable resources: accept a registration with
//!   [`Server::respond_observe`], send state changes with [`Server::notify`], and learn of
//!   observers leaving with [`Server::next_observer_removed`].
//!
//! Memory stays bounded whatever the application does: every channel is `N` deep and the
//! runner never waits for a handle; an [`Observation`] keeps only its freshest unread
//! notification.
//!
//! Send errors are reported to the engine with [`Endpoint::handle_send_result`]:
//! `SendError::NoRoute` as [`SendErrorKind::Unreachable`], `PacketTooLarge` as
//! [`SendErrorKind::TooBig`], `SocketNotBound` (and an address family the stack was built
//! without) as [`SendErrorKind::Other`]. While the socket's transmit buffer is full the runner
//! waits for room without ever delaying a timer, so a dead link cannot postpone a keepalive
//! failure.
//!
//! ## Security
//!
//! This adapter runs plain CoAP (`coap://`, and `coap+tcp://` with feature `tcp`) only. The
//! engine's DTLS (its `dtls` feature) is built on dimpl, and its TLS (its `tls` feature, for
//! `coaps+tcp://`) on rustls; both need `std`, so neither is available on `no_std` targets.
//! What the engine does offer on `no_std` is its security seam:
//! [`coap_engine::security::SecurityLayer`] and [`coap_engine::security::SecureChannel`] are
//! always compiled, and an embedded DTLS (or TLS) implementation of them, put in
//! `Config::security` (the engine's `security` feature), turns an endpoint into a `coaps://`
//! (or `coaps+tcp://`) one without changes to the engine. Such a layer will need
//! [`Endpoint::set_unix_time`] from the application (an RTC or SNTP; embassy has no wall
//! clock) before certificates can be checked, though not for pre-shared keys; and this
//! runner receives into a buffer of
//! [`Config::max_message_size`](coap_engine::Config::max_message_size) bytes, sized for
//! plain CoAP messages, which records (a header and an authentication tag more) outgrow.
//! Until such a layer exists, a device can reach a DTLS server through
//! a gateway that terminates DTLS, or protect its messages at the application layer with
//! OSCORE (RFC 8613), which the engine does not implement: with option 9 (OSCORE) listed in
//! [`Config::extra_critical_options`](coap_engine::Config::extra_critical_options), requests
//! carrying it reach the application unchanged instead of being answered 4.02 Bad Option.
//!
//! ```no_run
//! # async fn demo(stack: embassy_net::Stack<'static>) {
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
//! use coap_engine::{Config, Endpoint};
//! use coap_engine_embassy::{Client, CoapChannels, CoapRunner};
//! use embassy_net::udp::{PacketMetadata, UdpSocket};
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//!
//! let (mut rx_meta, mut rx, mut tx_meta, mut tx) =
//!     ([PacketMetadata::EMPTY; 4], [0; 1152], [PacketMetadata::EMPTY; 4], [0; 1152]);
//! let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
//! socket.bind(5683).unwrap();
//! let channels = CoapChannels::<NoopRawMutex, 4>::new();
//! let endpoint = Endpoint::new(Config::default(), /* seed from your RNG */ 7).unwrap();
//! let mut runner = CoapRunner::new(endpoint, socket, &channels);
//! let client = Client::new(&channels);
//! let mut get = Packet::new();
//! get.header.code = MessageClass::Request(RequestType::Get);
//! let peer = "192.0.2.1:5683".parse().unwrap();
//! let either = embassy_futures::select::select(runner.run(), client.request(peer, get)).await;
//! # }
//! ```

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::future::{pending, poll_fn};
use core::net::{IpAddr, SocketAddr};
use core::task::Poll;

use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::{
    Duration, Endpoint, Event, ExchangeError, IncomingRequestId, Keepalive, RequestId,
    SendErrorKind, Transmit,
};
use embassy_futures::select::{select4, Either4};
use embassy_net::udp::{RecvError, SendError, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use embassy_time::Timer;

pub use coap_engine;

#[cfg(feature = "observe")]
mod observe;
#[cfg(feature = "observe")]
pub use observe::{Observation, Observed, ObserverRemoved};
#[cfg(feature = "tcp")]
pub mod tcp;
#[cfg(feature = "tcp")]
pub use tcp::TcpRunner;

/// The current time as the engine counts it: microseconds since embassy-time's epoch (boot).
pub fn now() -> coap_engine::Instant {
    to_engine_instant(embassy_time::Instant::now())
}

/// Converts an `embassy_time::Instant` to the engine's [`coap_engine::Instant`] (µs since boot).
pub fn to_engine_instant(t: embassy_time::Instant) -> coap_engine::Instant {
    coap_engine::Instant::from_micros(t.as_micros())
}

/// Converts an engine [`coap_engine::Instant`] to an `embassy_time::Instant` (saturating).
pub fn to_embassy_instant(t: coap_engine::Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_micros(t.as_micros().min(embassy_time::Instant::MAX.as_micros()))
}

/// Converts a `SocketAddr` to an embassy-net endpoint, or `None` for an address family this
/// crate was built without (features `proto-ipv4`, `proto-ipv6`).
pub fn to_ip_endpoint(addr: SocketAddr) -> Option<IpEndpoint> {
    let ip = match addr.ip() {
        #[cfg(feature = "proto-ipv4")]
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        #[cfg(feature = "proto-ipv6")]
        IpAddr::V6(a) => IpAddress::Ipv6(a),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some(IpEndpoint::new(ip, addr.port()))
}

/// Converts an embassy-net endpoint to a `SocketAddr`.
pub fn to_socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    endpoint.into()
}

/// Classifies an embassy-net send error for [`Endpoint::handle_send_result`].
pub fn send_error_kind(error: SendError) -> SendErrorKind {
    match error {
        SendError::NoRoute => SendErrorKind::Unreachable,
        SendError::PacketTooLarge => SendErrorKind::TooBig,
        SendError::SocketNotBound => SendErrorKind::Other,
    }
}

/// Why [`Client::request`], [`Client::ping`] or an [`Observation`] got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The exchange ended without an answer, as the engine reports it, unchanged:
    /// [`ExchangeError::Timeout`] (no acknowledgement after all retransmissions, or no
    /// response in time), [`Reset`](ExchangeError::Reset) (the peer answered with Reset),
    /// [`SendFailed`](ExchangeError::SendFailed) (too big, or no route on its last attempt),
    /// [`SessionFailed`](ExchangeError::SessionFailed) (keepalive timeout, consecutive
    /// unreachable sends, a failed TCP connection),
    /// [`SessionClosed`](ExchangeError::SessionClosed) ([`Client::close_session`], an idle
    /// session, a TCP Release), [`Cancelled`](ExchangeError::Cancelled)
    /// ([`Observation::cancel`]), and the block-wise failures
    /// of RFC 7959: [`BodyTooLarge`](ExchangeError::BodyTooLarge),
    /// [`UnexpectedBlock`](ExchangeError::UnexpectedBlock) and
    /// [`RepresentationChanged`](ExchangeError::RepresentationChanged).
    Exchange(ExchangeError),
    /// The engine refused the call (bad packet, session or queue limits); nothing was sent.
    Rejected(coap_engine::Error),
}

impl From<ExchangeError> for RequestError {
    fn from(e: ExchangeError) -> Self {
        RequestError::Exchange(e)
    }
}

impl From<coap_engine::Error> for RequestError {
    fn from(e: coap_engine::Error) -> Self {
        RequestError::Rejected(e)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Exchange(e) => e.fmt(f),
            RequestError::Rejected(e) => write!(f, "rejected: {e}"),
        }
    }
}

impl core::error::Error for RequestError {}

/// A request received by the server, to answer with [`Server::respond`].
#[derive(Clone, Debug)]
pub struct IncomingRequest {
    /// Handle for the answer.
    pub id: IncomingRequestId,
    /// Who sent it.
    pub peer: SocketAddr,
    /// The request as received.
    pub request: Packet,
}

/// What the runner answers to a handle's call.
enum Outcome {
    Response(Packet),
    Pong(Duration),
    Failed(RequestError),
    /// [`Endpoint::respond_observe`]'s result.
    #[cfg(feature = "observe")]
    Observing(Result<bool, coap_engine::Error>),
    /// [`Endpoint::notify`]'s result.
    #[cfg(feature = "observe")]
    Notified(Result<usize, coap_engine::Error>),
    /// [`Endpoint::observers`]'s result.
    #[cfg(feature = "observe")]
    Observers(usize),
}

type Reply<M> = Arc<Signal<M, Outcome>>;

/// A call from a handle to the runner.
enum Command<M: RawMutex> {
    Request(SocketAddr, Packet, Reply<M>),
    Ping(SocketAddr, Reply<M>),
    Respond(IncomingRequestId, Packet),
    Open(SocketAddr, Option<Keepalive>),
    Close(SocketAddr),
    #[cfg(feature = "observe")]
    Observe(observe::ObserveCommand<M>),
}

/// The channels between a [`CoapRunner`] and its [`Client`]/[`Server`] handles, each `N`
/// deep. Use `NoopRawMutex` when everything runs on one executor, `CriticalSectionRawMutex`
/// when handles live in other executors or interrupts.
pub struct CoapChannels<M: RawMutex, const N: usize> {
    commands: Channel<M, Command<M>, N>,
    requests: Channel<M, IncomingRequest, N>,
    events: Channel<M, Event, N>,
    #[cfg(feature = "observe")]
    removed: Channel<M, ObserverRemoved, N>,
}

impl<M: RawMutex, const N: usize> CoapChannels<M, N> {
    /// Empty channels (usable in a `static`).
    pub const fn new() -> Self {
        CoapChannels {
            commands: Channel::new(),
            requests: Channel::new(),
            events: Channel::new(),
            #[cfg(feature = "observe")]
            removed: Channel::new(),
        }
    }
}

impl<M: RawMutex, const N: usize> Default for CoapChannels<M, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The client side: requests, observations, pings, sessions and their events. Cheap to copy.
pub struct Client<'a, M: RawMutex, const N: usize> {
    channels: &'a CoapChannels<M, N>,
}

impl<M: RawMutex, const N: usize> Clone for Client<'_, M, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: RawMutex, const N: usize> Copy for Client<'_, M, N> {}

/// Sends `make`'s command to the runner and waits for its answer.
async fn call<M: RawMutex, const N: usize>(
    channels: &CoapChannels<M, N>,
    make: impl FnOnce(Reply<M>) -> Command<M>,
) -> Outcome {
    let reply = Arc::new(Signal::new());
    channels.commands.send(make(reply.clone())).await;
    reply.wait().await
}

impl<'a, M: RawMutex, const N: usize> Client<'a, M, N> {
    /// A client handle on `channels`.
    pub fn new(channels: &'a CoapChannels<M, N>) -> Self {
        Client { channels }
    }

    /// Sends `request` (its code must be a method; Confirmable unless set Non-confirmable) to
    /// `peer` and waits for the response. Dropping the future does not cancel the exchange:
    /// it still ends on its own (response, timeout or session failure).
    pub async fn request(&self, peer: SocketAddr, request: Packet) -> Result<Packet, RequestError> {
        match call(self.channels, |r| Command::Request(peer, request, r)).await {
            Outcome::Response(p) => Ok(p),
            Outcome::Failed(e) => Err(e),
            _ => unreachable!("the runner answers a request with a response or an error"),
        }
    }

    /// Sends a CoAP ping to `peer` (an Empty CON, answered by Reset; over TCP a 7.02 Ping,
    /// answered by 7.03 Pong); resolves to the round-trip time.
    pub async fn ping(&self, peer: SocketAddr) -> Result<Duration, RequestError> {
        match call(self.channels, |r| Command::Ping(peer, r)).await {
            Outcome::Pong(rtt) => Ok(rtt),
            Outcome::Failed(e) => Err(e),
            _ => unreachable!("the runner answers a ping with a pong or an error"),
        }
    }

    /// Opens a session with `peer` (over UDP without sending anything; over TCP by opening
    /// the connection) and sets its keepalive (`None`: the `Config`'s). With a keepalive, a
    /// silent peer ends in
    /// [`Event::SessionFailed`] on [`next_event`](Self::next_event) within
    /// `interval + timeout`.
    pub async fn open_session(&self, peer: SocketAddr, keepalive: Option<Keepalive>) {
        self.channels
            .commands
            .send(Command::Open(peer, keepalive))
            .await;
    }

    /// Closes the session with `peer`; its pending requests and observations end with
    /// [`RequestError::Exchange`]`(`[`ExchangeError::SessionClosed`]`)`.
    pub async fn close_session(&self, peer: SocketAddr) {
        self.channels.commands.send(Command::Close(peer)).await;
    }

    /// The next session event: [`Event::SessionNew`], [`Event::SessionEstablished`],
    /// [`Event::SessionFailed`], [`Event::SessionClosed`], [`Event::SendFailed`] (or, over
    /// TCP, [`Event::Released`] when the peer releases the connection). The runner
    /// drops events while the channel is full, so read them if you care about them.
    /// (Responses, notifications and removed observers go to their own handles:
    /// [`Client::request`], [`Observation::next`], [`Server::next_observer_removed`].)
    pub async fn next_event(&self) -> Event {
        self.channels.events.receive().await
    }
}

/// The server side: incoming requests and their answers, observable resources and their
/// notifications. Cheap to copy.
pub struct Server<'a, M: RawMutex, const N: usize> {
    channels: &'a CoapChannels<M, N>,
}

impl<M: RawMutex, const N: usize> Clone for Server<'_, M, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: RawMutex, const N: usize> Copy for Server<'_, M, N> {}

impl<'a, M: RawMutex, const N: usize> Server<'a, M, N> {
    /// A server handle on `channels`.
    pub fn new(channels: &'a CoapChannels<M, N>) -> Self {
        Server { channels }
    }

    /// The next incoming request (deduplicated by the engine). While `N` requests wait here
    /// unread, further ones are answered 5.03 Service Unavailable by the runner.
    pub async fn next_request(&self) -> IncomingRequest {
        self.channels.requests.receive().await
    }

    /// Answers request `id` with `response` (a response code, e.g. 2.05 Content): piggybacked
    /// if the engine has not yet sent an Empty ACK, otherwise as a separate response. An
    /// unknown or expired `id` is ignored.
    pub async fn respond(&self, id: IncomingRequestId, response: Packet) {
        self.channels
            .commands
            .send(Command::Respond(id, response))
            .await;
    }
}

/// What every runner does for the handles: carry out their calls on the engine and route the
/// engine's events back to them. One per runner, so the UDP and TCP runners behave alike.
struct Dispatch<'a, M: RawMutex, const N: usize> {
    channels: &'a CoapChannels<M, N>,
    pending: BTreeMap<RequestId, Reply<M>>,
    #[cfg(feature = "observe")]
    observations: observe::Observations<M>,
}

impl<'a, M: RawMutex, const N: usize> Dispatch<'a, M, N> {
    fn new(channels: &'a CoapChannels<M, N>) -> Self {
        Dispatch {
            channels,
            pending: BTreeMap::new(),
            #[cfg(feature = "observe")]
            observations: observe::Observations::new(),
        }
    }

    fn command(&mut self, endpoint: &mut Endpoint, command: Command<M>) {
        let t = now();
        let (result, reply) = match command {
            Command::Request(peer, packet, reply) => (endpoint.request(t, peer, &packet), reply),
            Command::Ping(peer, reply) => (endpoint.ping(t, peer), reply),
            Command::Respond(id, packet) => {
                let _ = endpoint.respond(t, id, &packet); // unknown id: nothing to do
                return;
            }
            Command::Open(peer, keepalive) => {
                if endpoint.open_session(t, peer).is_ok() && keepalive.is_some() {
                    let _ = endpoint.set_keepalive(t, peer, keepalive);
                }
                return;
            }
            Command::Close(peer) => {
                let _ = endpoint.close_session(t, peer); // none: already gone
                return;
            }
            #[cfg(feature = "observe")]
            Command::Observe(command) => {
                self.observations.command(endpoint, command);
                return;
            }
        };
        match result {
            Ok(id) => {
                self.pending.insert(id, reply);
            }
            Err(e) => reply.signal(Outcome::Failed(RequestError::Rejected(e))),
        }
    }

    /// Never waits for the application: a full channel drops a session event or a removed
    /// observer, or answers an incoming request with 5.03 Service Unavailable; a notification
    /// replaces the one its handle has not taken yet.
    fn event(&mut self, endpoint: &mut Endpoint, event: Event) {
        let (id, outcome) = match event {
            Event::Request { id, peer, request } => {
                let incoming = IncomingRequest { id, peer, request };
                if self.channels.requests.try_send(incoming).is_err() {
                    let mut busy = Packet::new();
                    busy.header.code = MessageClass::Response(ResponseType::ServiceUnavailable);
                    let _ = endpoint.respond(now(), id, &busy);
                }
                return;
            }
            #[cfg(feature = "observe")]
            Event::Notification { id, response, .. } => {
                self.observations.notification(endpoint, id, response);
                return;
            }
            #[cfg(feature = "observe")]
            Event::ObserverRemoved {
                peer,
                resource,
                reason,
            } => {
                let removed = ObserverRemoved {
                    peer,
                    resource,
                    reason,
                };
                let _ = self.channels.removed.try_send(removed); // full: dropped
                return;
            }
            Event::Response { id, response, .. } => (id, Outcome::Response(response)),
            Event::RequestFailed { id, error, .. } | Event::PingFailed { id, error, .. } => {
                (id, Outcome::Failed(error.into()))
            }
            Event::Pong { id, rtt, .. } => (id, Outcome::Pong(rtt)),
            other => {
                let _ = self.channels.events.try_send(other); // full: dropped
                return;
            }
        };
        #[cfg(feature = "observe")]
        let Some(outcome) = self.observations.end(id, outcome) else {
            return;
        };
        if let Some(reply) = self.pending.remove(&id) {
            reply.signal(outcome);
        }
    }
}

/// Owns the [`Endpoint`] and the [`UdpSocket`] and moves everything between them, the clock
/// and the handles. Run it with [`run`](Self::run).
pub struct CoapRunner<'a, M: RawMutex, const N: usize> {
    endpoint: Endpoint,
    socket: UdpSocket<'a>,
    dispatch: Dispatch<'a, M, N>,
    /// A transmit waiting for room in the socket's transmit buffer.
    blocked: Option<Transmit>,
    buf: Vec<u8>,
}

impl<'a, M: RawMutex, const N: usize> CoapRunner<'a, M, N> {
    /// A runner for `endpoint` on `socket`, which must already be bound (e.g.
    /// `socket.bind(5683)` for a server, any port for a client). Datagrams larger than the
    /// endpoint's `max_message_size` are dropped.
    pub fn new(
        endpoint: Endpoint,
        socket: UdpSocket<'a>,
        channels: &'a CoapChannels<M, N>,
    ) -> Self {
        let buf = vec![0; endpoint.config().max_message_size];
        CoapRunner {
            endpoint,
            socket,
            dispatch: Dispatch::new(channels),
            blocked: None,
            buf,
        }
    }

    /// The engine, e.g. for [`Endpoint::session_info`].
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs the endpoint forever: receive, time out, execute commands, send.
    pub async fn run(&mut self) -> ! {
        loop {
            self.drain();
            let deadline = self.endpoint.poll_timeout();
            let timer = async {
                match deadline {
                    Some(t) => Timer::at(to_embassy_instant(t)).await,
                    None => pending().await,
                }
            };
            let blocked = self.blocked.is_some();
            let writable = async {
                match blocked {
                    true => self.socket.wait_send_ready().await,
                    false => pending().await,
                }
            };
            let recv = self.socket.recv_from(&mut self.buf);
            let commands = self.dispatch.channels.commands.receive();
            match select4(recv, timer, commands, writable).await {
                Either4::First(Ok((n, meta))) => {
                    let peer = to_socket_addr(meta.endpoint);
                    self.endpoint.handle_datagram(now(), peer, &self.buf[..n]);
                }
                Either4::First(Err(RecvError::Truncated)) => {} // too big for us: dropped
                Either4::Second(()) => self.endpoint.handle_timeout(now()),
                Either4::Third(command) => self.dispatch.command(&mut self.endpoint, command),
                Either4::Fourth(()) => {} // retried by drain()
            }
        }
    }

    /// Sends what the engine wants sent and dispatches its events, until both are empty or
    /// the socket's transmit buffer is full (then `run` waits for room alongside the timer).
    fn drain(&mut self) {
        loop {
            while let Some(t) = self
                .blocked
                .take()
                .or_else(|| self.endpoint.poll_transmit())
            {
                if !self.send(t) {
                    break;
                }
            }
            let mut any = false;
            while let Some(event) = self.endpoint.poll_event() {
                any = true;
                self.dispatch.event(&mut self.endpoint, event);
            }
            if !any && (self.blocked.is_some() || !self.endpoint.has_transmits()) {
                return;
            }
        }
    }

    /// Tries to send `t` without waiting; `false` if the transmit buffer is full.
    fn send(&mut self, t: Transmit) -> bool {
        let Some(to) = to_ip_endpoint(t.destination) else {
            self.endpoint
                .handle_send_result(now(), t.id, Err(SendErrorKind::Other));
            return true;
        };
        let socket = &self.socket;
        let mut once = poll_fn(|cx| Poll::Ready(socket.poll_send_to(&t.payload, to, cx)));
        let polled = embassy_futures::poll_once(&mut once);
        match polled {
            Poll::Ready(Poll::Ready(Ok(()))) => true,
            Poll::Ready(Poll::Ready(Err(e))) => {
                self.endpoint
                    .handle_send_result(now(), t.id, Err(send_error_kind(e)));
                true
            }
            _ => {
                self.blocked = Some(t);
                false
            }
        }
    }
}
