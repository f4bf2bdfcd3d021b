//! CoAP over TCP (RFC 8323, `coap+tcp://`) on embassy-net [`TcpSocket`]s (feature `tcp`).
//!
//! [`TcpRunner`] is to a stream endpoint ([`Transport::Tcp`]) what
//! [`CoapRunner`](crate::CoapRunner) is to a datagram one: it owns the engine and a fixed set
//! of TCP sockets whose buffers you provide, and serves the same [`Client`](crate::Client) and
//! [`Server`](crate::Server) handles over the same [`CoapChannels`], so application code does
//! not change with the transport. Framing, the Capabilities and Settings Message, 7.02
//! Ping/7.03 Pong, Release and Abort all happen in `coap-engine`; the runner only moves bytes
//! and reports what happens to connections.
//!
//! ## What is supported
//!
//! - **Client** (the main use): a request, ping or
//!   [`open_session`](crate::Client::open_session) to a peer without a connection makes the
//!   engine ask for one ([`StreamCommand::Connect`]); the runner opens it on a free socket
//!   within [`set_connect_timeout`](TcpRunner::set_connect_timeout)
//!   ([`DEFAULT_CONNECT_TIMEOUT`]), and requests made meanwhile wait for it. One socket is one
//!   connection: give the runner as many sockets as peers it must talk to at once, and set
//!   [`Limits::max_sessions`](coap_engine::Limits::max_sessions) to that number. A connect
//!   finding no socket free fails with [`SendErrorKind::Other`] (a socket still closing an old
//!   connection is taken, and that connection aborted).
//! - **Server** (optional): after [`TcpRunner::listen`], every socket that carries no
//!   connection listens on the port (embassy-net has no listener: each socket accepts one
//!   connection), and every connection accepted is offered to the engine, which refuses it
//!   beyond `max_sessions`; a refused one is closed at once. A client connect takes a
//!   listening socket (not one in the middle of a handshake) when none is idle.
//! - **Observe** (RFC 7641, over TCP as RFC 8323 §7.2 has it): [`Client::observe`](crate::Client::observe)
//!   and the server's [`respond_observe`](crate::Server::respond_observe) /
//!   [`notify`](crate::Server::notify) work as over UDP, through the same handles.
//! - **Not supported**: CoAP over TLS (`coaps+tcp://`). The engine's TLS layer (its `tls`
//!   feature) is built on rustls and needs `std`, so it is not available on `no_std` targets;
//!   as for DTLS (see the crate's Security section), an embedded TLS implementation of
//!   [`coap_engine::security::SecurityLayer`] in `Config::security` (the engine's
//!   `security` feature) would work with this runner unchanged. Name resolution is not done
//!   either: peers are socket addresses.
//!
//! ## Writes, reads and timers
//!
//! - **Writes** go to the socket's transmit buffer in the order the engine made them, without
//!   ever waiting: what does not fit waits in the runner's queue for that connection until
//!   the socket has room. Each write is reported to the engine
//!   ([`Endpoint::handle_send_result`] with `Ok`) once the socket has taken all of it, which
//!   is how the engine counts a connection's unwritten bytes: beyond
//!   [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes) it refuses new
//!   requests and responses to that peer ([`RequestError::Rejected`](crate::RequestError)
//!   with [`QueueFull`](coap_engine::Error::QueueFull)) and leaves its Pings unanswered. The
//!   queue therefore holds at most about that many bytes per connection: on a
//!   microcontroller, set the limit to what you can spare (the default is 256 KiB). As a
//!   second line of defence, a connection is not read from while more than twice that waits
//!   to be written to it, and TCP's flow control holds the peer back.
//! - **Reads** take at most [`READ_BUFFER_SIZE`] bytes at a time into one buffer shared by
//!   all sockets, and each read goes to the engine ([`Endpoint::handle_datagram`]) before the
//!   next. A busy connection cannot starve the timer: the runner checks its deadline before
//!   every read.
//! - **Timers**: the runner waits on one [`Timer`] for the earliest of the engine's deadline,
//!   connect timeouts and close timeouts, alongside socket readiness and the handles'
//!   commands. A write that the socket cannot take (a peer that stopped reading, a link that
//!   went down) never delays it: the engine's keepalive fails a silent peer's session by
//!   `last_heard + interval + timeout` whatever the socket does.
//! - **Closing**, when the engine asks ([`StreamCommand::Close`]: a Release, an Abort, a
//!   failed keepalive, an idle session, [`Client::close_session`](crate::Client::close_session)):
//!   what is queued is written, the sending side is shut (FIN), and the socket is free again
//!   once the peer closed its side too, or after [`CLOSE_TIMEOUT`] whatever happens (then it
//!   is aborted). What the peer still sends meanwhile is read and dropped.
//!
//! ## Limits to set on a microcontroller
//!
//! - [`Limits::max_sessions`](coap_engine::Limits::max_sessions): at most the number of
//!   sockets; a session beyond cannot get a connection.
//! - [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes): what may wait
//!   for room in a socket, per connection (see Writes above).
//!   Each write counts 64 bytes more than its size, so this also bounds how many small
//!   writes (Pongs to a flood of Pings) can wait. (`Limits::max_queued_transmits` does not
//!   apply to a stream endpoint: a stream drops no write.)
//!
//! ## Failures, as the engine hears them
//!
//! | What embassy-net said | Input to the engine | The session fails with |
//! |---|---|---|
//! | connect: RST from the peer ([`ConnectError::ConnectionReset`]) | `handle_connect_failed(.., Refused)` | `Connection(ConnectFailed(Refused))` |
//! | connect: no answer within the connect timeout | `handle_connect_failed(.., TimedOut)` | `Connection(ConnectFailed(TimedOut))` |
//! | connect: [`ConnectError::NoRoute`] (e.g. an unspecified address) | `handle_connect_failed(.., Unreachable)` | `Connection(ConnectFailed(Unreachable))` |
//! | connect: no socket free, or an address family built without | `handle_connect_failed(.., Other)` | `Connection(ConnectFailed(Other))` |
//! | read: end of stream (the peer closed without a Release) | `handle_closed(.., Eof)` | `Connection(Closed)` |
//! | read or write: [`Error::ConnectionReset`] | `handle_closed(.., Reset)` | `Connection(Reset)` |
//! | write: all of it in the socket | `handle_send_result(id, Ok(()))` | |
//!
//! ([`connect_error_kind`] and [`stream_closed`] are these mappings.) Writes still queued on a
//! connection that broke, or that did not finish closing in time, are reported failed
//! ([`SendErrorKind::Other`]), which the application sees as
//! [`Event::SendFailed`](coap_engine::Event::SendFailed) on
//! [`Client::next_event`](crate::Client::next_event). Requests and observations pending on a
//! failed session end with
//! [`RequestError::Exchange`](crate::RequestError::Exchange)`(`[`ExchangeError::SessionFailed`](coap_engine::ExchangeError::SessionFailed)`)`
//! carrying the same reason.
//!
//! ## Example
//!
//! A client of `coap+tcp://192.0.2.1` with one socket (one connection) and a keepalive on
//! its session:
//!
//! ```no_run
//! # async fn demo(stack: embassy_net::Stack<'static>) {
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
//! use coap_engine::{Config, Duration, Endpoint, Keepalive, Limits, Transport};
//! use coap_engine_embassy::{Client, CoapChannels, TcpRunner};
//! use embassy_net::tcp::TcpSocket;
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//!
//! let (mut rx, mut tx) = ([0; 1024], [0; 1024]);
//! let socket = TcpSocket::new(stack, &mut rx, &mut tx);
//! let config = Config {
//!     transport: Transport::Tcp,
//!     limits: Limits { max_sessions: 1, max_unwritten_bytes: 4096, ..Limits::default() },
//!     ..Config::default()
//! };
//! let channels = CoapChannels::<NoopRawMutex, 4>::new();
//! let endpoint = Endpoint::new(config, /* seed from your RNG */ 7).unwrap();
//! let mut runner = TcpRunner::new(endpoint, [socket], &channels).unwrap();
//! let client = Client::new(&channels);
//! let server = "192.0.2.1:5683".parse().unwrap();
//! let app = async {
//!     let keepalive = Keepalive { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) };
//!     client.open_session(server, Some(keepalive)).await; // connects
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     client.request(server, get).await
//! };
//! // On a device, spawn `runner.run()` as a task of its own instead.
//! let either = embassy_futures::select::select(runner.run(), app).await;
//! # }
//! ```

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::future::{pending, poll_fn, Future};
use core::net::SocketAddr;
use core::pin::pin;
use core::task::{Context, Poll};

use coap_engine::{
    Endpoint, SendErrorKind, StreamClosed, StreamCommand, Transmit, TransmitId, Transport,
};
use embassy_futures::poll_once;
use embassy_futures::select::{select3, Either3};
use embassy_net::tcp::{ConnectError, Error, State, TcpSocket};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{Duration, Instant, Timer};

use crate::{now, to_embassy_instant, to_ip_endpoint, to_socket_addr, CoapChannels, Dispatch};

/// How long opening a connection may take unless set otherwise
/// ([`TcpRunner::set_connect_timeout`]).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection the engine asked to close keeps its socket: time to write what
/// was queued and to see the peer close its side, so that the close does not become a reset
/// that could destroy the last messages (a Release, an Abort) before the peer read them.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most one read takes from a socket before the engine has the bytes (the runner's one
/// read buffer, shared by all its sockets).
pub const READ_BUFFER_SIZE: usize = 512;

/// Classifies an embassy-net connect error for [`Endpoint::handle_connect_failed`]: a reset
/// (the peer answered the SYN with RST) is [`SendErrorKind::Refused`], `TimedOut` is
/// [`SendErrorKind::TimedOut`], `NoRoute` is [`SendErrorKind::Unreachable`], and
/// `InvalidState` (the socket was busy) is [`SendErrorKind::Other`].
pub fn connect_error_kind(error: ConnectError) -> SendErrorKind {
    match error {
        ConnectError::ConnectionReset => SendErrorKind::Refused,
        ConnectError::TimedOut => SendErrorKind::TimedOut,
        ConnectError::NoRoute => SendErrorKind::Unreachable,
        ConnectError::InvalidState => SendErrorKind::Other,
    }
}

/// Classifies an embassy-net read or write error for [`Endpoint::handle_closed`]: the only
/// one, `ConnectionReset`, is [`StreamClosed::Reset`] (the end of stream is a read of 0
/// bytes, [`StreamClosed::Eof`], not an error).
pub fn stream_closed(error: Error) -> StreamClosed {
    match error {
        Error::ConnectionReset => StreamClosed::Reset,
    }
}

/// Why [`TcpRunner::new`] or [`TcpRunner::listen`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpRunnerError {
    /// The endpoint is not a stream one: its `Config::transport` must be [`Transport::Tcp`].
    NotTcp,
    /// No socket was given: the runner could open no connection.
    NoSockets,
    /// Port 0 cannot be listened on.
    InvalidPort,
}

impl fmt::Display for TcpRunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpRunnerError::NotTcp => "the endpoint is not configured with Transport::Tcp",
            TcpRunnerError::NoSockets => "a TCP runner needs at least one socket",
            TcpRunnerError::InvalidPort => "cannot listen on port 0",
        })
    }
}

impl core::error::Error for TcpRunnerError {}

/// What a socket is doing for the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Free (its socket closed, or in TIME-WAIT, which a new connection may reuse).
    Idle,
    /// Waiting for a connection on the listen port.
    Listening,
    /// SYN sent for the engine's `Connect`.
    Connecting { peer: SocketAddr, deadline: Instant },
    /// Carrying the engine's session with `peer`.
    Open { peer: SocketAddr },
    /// The engine has forgotten it: the queue is written, then FIN (`shut`), then the peer's
    /// end is awaited, until `deadline` at the latest.
    Closing { deadline: Instant, shut: bool },
}

/// One socket and the engine's writes waiting for room in it.
struct Slot<'a> {
    socket: TcpSocket<'a>,
    phase: Phase,
    /// Oldest first; `offset` bytes of the first are already in the socket.
    writes: VecDeque<Transmit>,
    offset: usize,
    /// Bytes in `writes` not yet in the socket.
    unwritten: usize,
}

/// Connection states before the handshake completed.
fn handshaking(state: State) -> bool {
    matches!(state, State::Listen | State::SynSent | State::SynReceived)
}

/// `timeout` from now; a timeout too long to count is never reached.
fn after(timeout: Duration) -> Instant {
    Instant::now().checked_add(timeout).unwrap_or(Instant::MAX)
}

/// States in which the socket is done with its connection and may take another.
fn finished(state: State) -> bool {
    matches!(state, State::Closed | State::TimeWait)
}

impl Slot<'_> {
    /// The peer whose session this connection carries.
    fn peer(&self) -> Option<SocketAddr> {
        match self.phase {
            Phase::Connecting { peer, .. } | Phase::Open { peer } => Some(peer),
            _ => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline, .. } | Phase::Closing { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Takes the queued writes (to report them failed).
    fn take_writes(&mut self) -> VecDeque<Transmit> {
        self.offset = 0;
        self.unwritten = 0;
        core::mem::take(&mut self.writes)
    }

    /// Whether [`TcpRunner::step`] has work on this socket now. If not, the socket will wake
    /// `cx` when it may: the conditions here must be exactly those `step` acts on, or the
    /// runner would spin (work announced, none done) or sleep through work.
    fn poll_ready(&self, pause_reads_at: usize, cx: &mut Context<'_>) -> bool {
        let s = &self.socket;
        let (read, write) = match self.phase {
            Phase::Idle => return false,
            // State changes wake both of the socket's wakers: registering one is enough.
            Phase::Listening | Phase::Connecting { .. } => {
                if !handshaking(s.state()) {
                    return true;
                }
                (false, true)
            }
            Phase::Open { .. } => {
                let read = self.unwritten <= pause_reads_at;
                let write = !self.writes.is_empty();
                // A read also reports the end of the stream or a reset, a write a reset.
                if (read && (s.can_recv() || !s.may_recv()))
                    || (write && (s.can_send() || !s.may_send()))
                {
                    return true;
                }
                (read, write)
            }
            Phase::Closing { shut, .. } => {
                let flush = !shut && (self.writes.is_empty() || s.can_send() || !s.may_send());
                if flush || s.can_recv() || finished(s.state()) {
                    return true;
                }
                (true, !shut)
            }
        };
        if read {
            let _ = pin!(s.wait_read_ready()).poll(cx);
        }
        if write {
            let _ = pin!(s.wait_write_ready()).poll(cx);
        }
        false
    }
}

/// What the runner learnt about a connection, for the engine. Given in order once the
/// engine's outputs are drained, so that each input is followed by a drain as the engine
/// requires, and none is given from inside the handling of another's outputs.
#[derive(Clone, Copy, Debug)]
enum Input {
    Sent(TransmitId, Result<(), SendErrorKind>),
    Connected(SocketAddr),
    ConnectFailed(SocketAddr, SendErrorKind),
    Closed(SocketAddr, StreamClosed),
}

/// Owns a CoAP-over-TCP [`Endpoint`] and its [`TcpSocket`]s, and moves everything between
/// them, the clock and the [`Client`](crate::Client)/[`Server`](crate::Server) handles. See
/// the [module docs](self). Run it with [`run`](Self::run), as its own task.
pub struct TcpRunner<'a, M: RawMutex, const N: usize> {
    endpoint: Endpoint,
    dispatch: Dispatch<'a, M, N>,
    slots: Vec<Slot<'a>>,
    inputs: VecDeque<Input>,
    listen_port: Option<u16>,
    connect_timeout: Duration,
    pause_reads_at: usize,
    buf: Vec<u8>,
}

impl<'a, M: RawMutex, const N: usize> TcpRunner<'a, M, N> {
    /// A runner for `endpoint` (configured with [`Transport::Tcp`]) on `sockets`: new,
    /// unconnected [`TcpSocket`]s, one per connection the runner may hold at once (e.g.
    /// `[socket]` for a client of one server). Nagle's algorithm is turned off on each: CoAP
    /// messages are small and usually wait for an answer.
    ///
    /// Fails with [`TcpRunnerError::NotTcp`] for a datagram endpoint and
    /// [`TcpRunnerError::NoSockets`] without sockets.
    pub fn new(
        endpoint: Endpoint,
        sockets: impl IntoIterator<Item = TcpSocket<'a>>,
        channels: &'a CoapChannels<M, N>,
    ) -> Result<Self, TcpRunnerError> {
        if endpoint.config().transport != Transport::Tcp {
            return Err(TcpRunnerError::NotTcp);
        }
        let slots: Vec<Slot<'a>> = sockets
            .into_iter()
            .map(|mut socket| {
                socket.set_nagle_enabled(false);
                Slot {
                    socket,
                    phase: Phase::Idle,
                    writes: VecDeque::new(),
                    offset: 0,
                    unwritten: 0,
                }
            })
            .collect();
        if slots.is_empty() {
            return Err(TcpRunnerError::NoSockets);
        }
        let pause_reads_at = endpoint
            .config()
            .limits
            .max_unwritten_bytes
            .saturating_mul(2);
        Ok(TcpRunner {
            endpoint,
            dispatch: Dispatch::new(channels),
            slots,
            inputs: VecDeque::new(),
            listen_port: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pause_reads_at,
            buf: vec![0; READ_BUFFER_SIZE],
        })
    }

    /// Serves CoAP over TCP on `port` (5683 for `coap+tcp://`) as well: from then on, every
    /// socket without a connection listens on it. Fails with
    /// [`TcpRunnerError::InvalidPort`] for port 0.
    pub fn listen(&mut self, port: u16) -> Result<(), TcpRunnerError> {
        if port == 0 {
            return Err(TcpRunnerError::InvalidPort);
        }
        self.listen_port = Some(port);
        Ok(())
    }

    /// How long opening a connection may take before the requests waiting for it fail with
    /// `ConnectFailed(SendErrorKind::TimedOut)` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    /// The engine, e.g. for [`Endpoint::session_info`].
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs the endpoint forever: connect, accept, read, write, close, time out, and carry
    /// out the handles' calls. Spawn it as its own task (not `join`ed with the embassy-net
    /// `Runner`, see the [crate docs](crate)).
    pub async fn run(&mut self) -> ! {
        loop {
            self.drain();
            self.listen_idle();
            let deadline = self.deadline();
            let timer = async {
                match deadline {
                    Some(t) => Timer::at(t).await,
                    None => pending().await,
                }
            };
            let commands = self.dispatch.channels.commands.receive();
            let (slots, pause) = (&self.slots, self.pause_reads_at);
            let io = poll_fn(|cx| {
                // Every socket registers its wakers, even once one is known to be ready.
                let ready = slots
                    .iter()
                    .fold(false, |ready, slot| slot.poll_ready(pause, cx) | ready);
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            // The timer is polled first: socket work, however much, cannot hold it back.
            match select3(timer, commands, io).await {
                Either3::First(()) => self.expire(),
                Either3::Second(command) => self.dispatch.command(&mut self.endpoint, command),
                Either3::Third(()) => {
                    for i in 0..self.slots.len() {
                        self.step(i);
                    }
                }
            }
        }
    }

    /// The earliest of the engine's deadline and the sockets' connect and close deadlines.
    fn deadline(&self) -> Option<Instant> {
        let engine = self.endpoint.poll_timeout().map(to_embassy_instant);
        self.slots
            .iter()
            .filter_map(Slot::deadline)
            .chain(engine)
            .min()
    }

    /// The drain rule: the engine's writes to their connections' queues, then its connection
    /// commands, then its events, until none is left; then the next of the runner's inputs,
    /// and again, until neither is left.
    fn drain(&mut self) {
        loop {
            if let Some(t) = self.endpoint.poll_transmit() {
                self.enqueue(t);
            } else if let Some(command) = self.endpoint.poll_stream_command() {
                match command {
                    StreamCommand::Connect(peer) => self.connect(peer),
                    StreamCommand::Close(peer) => self.close(peer),
                    _ => {}
                }
            } else if let Some(event) = self.endpoint.poll_event() {
                self.dispatch.event(&mut self.endpoint, event);
            } else if let Some(input) = self.inputs.pop_front() {
                let (t, endpoint) = (now(), &mut self.endpoint);
                match input {
                    Input::Sent(id, result) => endpoint.handle_send_result(t, id, result),
                    Input::Connected(peer) => endpoint.handle_connected(t, peer),
                    Input::ConnectFailed(peer, kind) => {
                        endpoint.handle_connect_failed(t, peer, kind)
                    }
                    Input::Closed(peer, how) => endpoint.handle_closed(t, peer, how),
                }
            } else {
                return;
            }
        }
    }

    /// Queues `t` behind what is already waiting for its connection; it is written when the
    /// socket has room.
    fn enqueue(&mut self, t: Transmit) {
        match self
            .slots
            .iter_mut()
            .find(|s| s.peer() == Some(t.destination))
        {
            Some(slot) => {
                slot.unwritten += t.payload.len();
                slot.writes.push_back(t);
            }
            // Its connection broke, which the engine has been told or is about to be.
            None => self
                .inputs
                .push_back(Input::Sent(t.id, Err(SendErrorKind::Other))),
        }
    }

    /// Frees slot `i`, reporting the writes still queued on it failed: they never reached
    /// the socket.
    fn release(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.phase = Phase::Idle;
        let writes = slot.take_writes();
        let failed = writes
            .into_iter()
            .map(|t| Input::Sent(t.id, Err(SendErrorKind::Other)));
        self.inputs.extend(failed);
    }

    /// Drops slot `i`'s connection at once (RST) and frees the slot.
    fn abort(&mut self, i: usize) {
        self.slots[i].socket.abort();
        self.release(i);
    }

    /// Opens a connection to `peer`, as the engine asked.
    fn connect(&mut self, peer: SocketAddr) {
        let Some(remote) = to_ip_endpoint(peer) else {
            let failed = Input::ConnectFailed(peer, SendErrorKind::Other);
            self.inputs.push_back(failed);
            return;
        };
        // A connection the engine had with this peer is of no use to it any more.
        if let Some(i) = self.slots.iter().position(|s| s.peer() == Some(peer)) {
            self.abort(i);
        }
        // A free socket, else one listening (not one in the middle of a handshake), else one
        // closing: the new connection is worth more than a clean end of the old one.
        let idle = |s: &Slot<'_>| s.phase == Phase::Idle;
        let listening =
            |s: &Slot<'_>| s.phase == Phase::Listening && s.socket.state() == State::Listen;
        let closing = |s: &Slot<'_>| matches!(s.phase, Phase::Closing { .. });
        let slots = &self.slots;
        let Some(i) = slots
            .iter()
            .position(idle)
            .or_else(|| slots.iter().position(listening))
            .or_else(|| slots.iter().position(closing))
        else {
            let failed = Input::ConnectFailed(peer, SendErrorKind::Other);
            self.inputs.push_back(failed);
            return;
        };
        if self.slots[i].phase != Phase::Idle {
            self.abort(i);
        }
        let slot = &mut self.slots[i];
        match poll_once(slot.socket.connect(remote)) {
            Poll::Pending => {
                let deadline = after(self.connect_timeout);
                slot.phase = Phase::Connecting { peer, deadline };
            }
            Poll::Ready(Ok(())) => {
                slot.phase = Phase::Open { peer };
                self.inputs.push_back(Input::Connected(peer));
            }
            Poll::Ready(Err(e)) => {
                let failed = Input::ConnectFailed(peer, connect_error_kind(e));
                self.inputs.push_back(failed);
            }
        }
    }

    /// Closes the connection with `peer` after its queued writes, as the engine asked.
    fn close(&mut self, peer: SocketAddr) {
        let Some(i) = self.slots.iter().position(|s| s.peer() == Some(peer)) else {
            return;
        };
        match self.slots[i].phase {
            Phase::Open { .. } => {
                let deadline = after(CLOSE_TIMEOUT);
                self.slots[i].phase = Phase::Closing {
                    deadline,
                    shut: false,
                };
            }
            _ => self.abort(i),
        }
    }

    /// With a listen port, every free socket listens on it.
    fn listen_idle(&mut self) {
        let Some(port) = self.listen_port else {
            return;
        };
        for slot in self.slots.iter_mut().filter(|s| s.phase == Phase::Idle) {
            // The first poll puts the socket in LISTEN; the rest of `accept` is `step`'s.
            if !matches!(poll_once(slot.socket.accept(port)), Poll::Ready(Err(_))) {
                slot.phase = Phase::Listening;
            }
        }
    }

    /// Connect and close deadlines that passed, then the engine's timers.
    fn expire(&mut self) {
        let t = Instant::now();
        for i in 0..self.slots.len() {
            match self.slots[i].phase {
                Phase::Connecting { peer, deadline } if deadline <= t => {
                    self.abort(i);
                    let failed = Input::ConnectFailed(peer, SendErrorKind::TimedOut);
                    self.inputs.push_back(failed);
                }
                Phase::Closing { deadline, .. } if deadline <= t => self.abort(i),
                _ => {}
            }
        }
        self.drain();
        // Harmless when only a socket's deadline was due.
        self.endpoint.handle_timeout(now());
    }

    /// The work [`Slot::poll_ready`] announced for slot `i`.
    fn step(&mut self, i: usize) {
        let state = self.slots[i].socket.state();
        match self.slots[i].phase {
            Phase::Idle => {}
            Phase::Listening if handshaking(state) => {}
            // The handshake was reset: `listen_idle` listens again.
            Phase::Listening if finished(state) => self.slots[i].phase = Phase::Idle,
            Phase::Listening => self.accepted(i),
            Phase::Connecting { .. } if handshaking(state) => {}
            Phase::Connecting { peer, .. } => {
                if finished(state) {
                    // What embassy-net's own `connect` reports as `ConnectionReset`.
                    let kind = connect_error_kind(ConnectError::ConnectionReset);
                    self.release(i);
                    self.inputs.push_back(Input::ConnectFailed(peer, kind));
                } else {
                    self.slots[i].phase = Phase::Open { peer };
                    self.inputs.push_back(Input::Connected(peer));
                }
            }
            Phase::Open { peer } => {
                if let Err(e) = self.write(i) {
                    self.ended(i, peer, stream_closed(e));
                } else if self.slots[i].unwritten <= self.pause_reads_at {
                    self.drain();
                    self.read(i, peer);
                }
            }
            Phase::Closing { shut, .. } => self.closing(i, shut),
        }
        self.drain();
    }

    /// Offers the connection slot `i` accepted to the engine.
    fn accepted(&mut self, i: usize) {
        let Some(peer) = self.slots[i].socket.remote_endpoint().map(to_socket_addr) else {
            self.abort(i);
            return;
        };
        // The engine takes a new connection from a peer for the one it had: the old one is
        // reset (its writes are reported after this, when the engine has ended its session).
        if let Some(j) = self.slots.iter().position(|s| s.peer() == Some(peer)) {
            self.abort(j);
        }
        self.slots[i].phase = Phase::Open { peer };
        if self.endpoint.handle_accepted(now(), peer).is_err() {
            // Refused (session limit): closed at once.
            self.slots[i].socket.close();
            let deadline = after(CLOSE_TIMEOUT);
            self.slots[i].phase = Phase::Closing {
                deadline,
                shut: true,
            };
        }
    }

    /// Moves slot `i`'s queued writes into its socket until it has no room, reporting each
    /// one the socket took whole.
    fn write(&mut self, i: usize) -> Result<(), Error> {
        let slot = &mut self.slots[i];
        while let Some(front) = slot.writes.front() {
            let rest = &front.payload[slot.offset..];
            if !rest.is_empty() {
                match poll_once(slot.socket.write(rest)) {
                    Poll::Ready(Ok(n)) => {
                        slot.offset += n;
                        slot.unwritten -= n;
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(()),
                }
            }
            if slot.offset == front.payload.len() {
                self.inputs.push_back(Input::Sent(front.id, Ok(())));
                slot.writes.pop_front();
                slot.offset = 0;
            }
        }
        Ok(())
    }

    /// One read from slot `i`'s socket, to the engine.
    fn read(&mut self, i: usize, peer: SocketAddr) {
        match poll_once(self.slots[i].socket.read(&mut self.buf)) {
            Poll::Ready(Ok(0)) => self.ended(i, peer, StreamClosed::Eof),
            Poll::Ready(Ok(n)) => self.endpoint.handle_datagram(now(), peer, &self.buf[..n]),
            Poll::Ready(Err(e)) => self.ended(i, peer, stream_closed(e)),
            Poll::Pending => {}
        }
    }

    /// Slot `i`'s connection with `peer` ended (the peer closed it, or it was reset).
    fn ended(&mut self, i: usize, peer: SocketAddr, how: StreamClosed) {
        // Before the writes it leaves unwritten: the session fails as the connection did.
        self.inputs.push_back(Input::Closed(peer, how));
        match how {
            // The peer may still read what we send: our side is closed properly.
            StreamClosed::Eof => {
                self.slots[i].socket.close();
                self.release(i);
                let deadline = after(CLOSE_TIMEOUT);
                self.slots[i].phase = Phase::Closing {
                    deadline,
                    shut: true,
                };
            }
            _ => self.abort(i),
        }
    }

    /// A connection the engine closed: flush, FIN, then wait for the peer's end, dropping
    /// what it still sends.
    fn closing(&mut self, i: usize, shut: bool) {
        if !shut {
            if self.write(i).is_err() {
                self.abort(i);
                return;
            }
            let slot = &mut self.slots[i];
            if slot.writes.is_empty() {
                slot.socket.close();
                if let Phase::Closing { shut, .. } = &mut slot.phase {
                    *shut = true;
                }
            }
        }
        let slot = &mut self.slots[i];
        // Bounded: nothing new arrives while this runs.
        while let Poll::Ready(Ok(1..)) = poll_once(slot.socket.read(&mut self.buf)) {}
        if finished(slot.socket.state()) {
            self.release(i);
        }
    }
}
