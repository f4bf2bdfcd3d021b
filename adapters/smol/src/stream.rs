//! CoAP over TCP and over TLS (RFC 8323): [`StreamDriver`], one connection per peer.
//!
//! A stream driver hands out the same handles as the UDP [`Driver`](crate::Driver)
//! ([`Client`], [`Incoming`], [`Events`]), so application code does not change with the
//! transport. Its task owns the engine and the listener; each connection is a task of its own
//! that reads into a [`READ_BUFFER_SIZE`] buffer and writes what the engine hands over, in
//! order. The engine says when to open and close connections
//! ([`StreamCommand`]); the driver reports what happens to them.
//!
//! - **Connect**: a request (or [`Client::open_session`]) to a peer without a connection
//!   opens one, within the connect timeout ([`DEFAULT_CONNECT_TIMEOUT`],
//!   [`StreamDriver::set_connect_timeout`]). Requests made meanwhile wait for it.
//! - **Accept** (a driver made by [`StreamDriver::bind`]): every accepted connection is
//!   offered to the engine, which refuses it beyond
//!   [`Limits::max_sessions`](coap_engine::Limits::max_sessions) (or, on a TLS server,
//!   [`Limits::max_handshakes`](coap_engine::Limits::max_handshakes)); a refused one is
//!   closed at once.
//! - **Writes** go out in the order the engine made them, each reported to the engine when
//!   the kernel has taken all of it, which is how the engine keeps at most
//!   [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes) waiting per
//!   connection: beyond it a request or response to that peer is refused with
//!   [`Error::Rejected`](crate::Error::Rejected)`(`[`QueueFull`](coap_engine::Error::QueueFull)`)`
//!   until the peer reads; the engine also leaves a backlogged peer's Pings unanswered. As a
//!   second line of defence (the engine's own Release or Abort are never refused), a
//!   connection is no longer read from while more than twice `max_unwritten_bytes` (at
//!   least 64 KiB) waits to be written to it, and TCP's flow control holds the peer back.
//! - **Close**, when the engine asks (a Release, an Abort, a failed keepalive, an idle
//!   session, [`Client::close_session`]): the writes already handed over are flushed, the
//!   sending side is shut down, and the connection is closed once the peer closes its side,
//!   or after [`CLOSE_TIMEOUT`] whatever happens. When the driver stops, its connections
//!   are closed at once.
//!
//! ## What the application sees when a connection fails
//!
//! Requests waiting on a connection that fails end with
//! [`Error::Exchange`](crate::Error::Exchange)`(`[`ExchangeError::SessionFailed`](coap_engine::ExchangeError::SessionFailed)`(`[`FailureReason::Connection`](coap_engine::FailureReason::Connection)`(..)))`,
//! and [`Events`] gets [`Event::SessionFailed`](coap_engine::Event::SessionFailed) with the
//! same reason:
//!
//! | What the socket said | [`ConnectionFailure`](coap_engine::ConnectionFailure) |
//! |---|---|
//! | connect: refused (ECONNREFUSED) | `ConnectFailed(SendErrorKind::Refused)` |
//! | connect: no route (ENETUNREACH, EHOSTUNREACH, ENETDOWN) | `ConnectFailed(SendErrorKind::Unreachable)` |
//! | connect: no answer within the connect timeout, or the kernel's ETIMEDOUT | `ConnectFailed(SendErrorKind::TimedOut)` |
//! | connect: anything else | `ConnectFailed(SendErrorKind::Other)` |
//! | read: end of stream (the peer closed without a Release) | `Closed` |
//! | read: an error (ECONNRESET, ETIMEDOUT, ...) | `Reset` |
//! | write: an error (EPIPE, ECONNRESET, ...) | `WriteFailed(kind)`, `kind` by [`SendErrorKind::from_io_error`] (mostly `Other`); [`Events`] also gets [`Event::SendFailed`](coap_engine::Event::SendFailed) |
//!
//! A peer's 7.04 Release ends its session with
//! [`Event::Released`](coap_engine::Event::Released) and
//! [`CloseReason::Released`](coap_engine::CloseReason::Released) (requests still pending on
//! it end with [`ExchangeError::SessionClosed`](coap_engine::ExchangeError::SessionClosed)),
//! a 7.05 Abort with `AbortedByPeer`, and broken framing from the peer with `Aborted`. On a
//! TLS connection a failed handshake ends a client's requests with
//! [`FailureReason::Security`](coap_engine::FailureReason::Security), and a server reports
//! it as [`Event::HandshakeFailed`](coap_engine::Event::HandshakeFailed).
//!
//! ## CoAP over TCP
//!
//! ```
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::Config;
//! use coap_engine_smol::StreamDriver;
//!
//! smol::block_on(async {
//!     // A server on an ephemeral loopback port, answering every request with "hi".
//!     let server = StreamDriver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
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
//!     // A client: it connects when the first request asks for the server.
//!     let driver = StreamDriver::client_only(Config::default()).unwrap();
//!     let (client, _client_task) = (driver.client(), driver.spawn());
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request(server_addr, get).await.unwrap();
//!     assert_eq!(response.payload, b"hi");
//! });
//! ```
//!
//! ## CoAP over TLS (feature `tls`)
//!
//! The engine's TLS layer in `Config::security` makes a
//! `coaps+tcp://` endpoint (port 5684); the driver is the same. The client checks the
//! server's certificate against its trust anchors and the name it meant: the Uri-Host of the
//! first request to that server, or else the server's IP address. The driver gives the
//! engine the wall-clock time when it starts, so certificate validity periods are checked
//! without further setup.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::credentials::{trust_anchors_from_pem, CertifiedKey};
//! use coap_engine::tls::{Tls, TlsConfig};
//! use coap_engine::{Config, Security};
//! use coap_engine_smol::{security_entropy, StreamDriver};
//!
//! smol::block_on(async {
//!     // Server: its certificate chain and private key.
//!     let certificate =
//!         CertifiedKey::from_pem(&std::fs::read("server.pem")?, &std::fs::read("server.key")?)?;
//!     let tls = TlsConfig { certificate: Some(certificate), ..TlsConfig::default() };
//!     let security = Security::new(Tls::new(tls, security_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let server = StreamDriver::bind("127.0.0.1:5684".parse()?, config)?;
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
//!     // Client: trusts the CA that issued the server's certificate.
//!     let anchors = trust_anchors_from_pem(&std::fs::read("ca.pem")?)?;
//!     let tls = TlsConfig { trust_anchors: anchors, ..TlsConfig::default() };
//!     let security = Security::new(Tls::new(tls, security_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let driver = StreamDriver::client_only(config)?;
//!     let (client, _task) = (driver.client(), driver.spawn());
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     // The name the server's certificate must carry.
//!     get.add_option(CoapOption::UriHost, b"localhost".to_vec());
//!     let response = client.request("127.0.0.1:5684".parse()?, get).await?;
//!     println!("{}", String::from_utf8_lossy(&response.payload));
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::{
    Config, Endpoint, Instant, SendErrorKind, StreamClosed, StreamCommand, Transmit, TransmitId,
    Transport,
};
use smol::channel::{self, Receiver, Sender};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::{Async, Task, Timer};

use crate::handles::{new_endpoint, Core, Handles};
use crate::{Client, Events, Incoming};

/// The most a connection reads at once, and what it holds before the engine has the bytes.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// How long opening a connection may take unless set otherwise
/// ([`StreamDriver::set_connect_timeout`]).
pub const DEFAULT_CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// The longest a connection the engine asked to close lives on: time to flush what was
/// handed over and to see the peer close its side, so that the close does not become a
/// reset that could destroy the last writes before the peer read them.
pub const CLOSE_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// Writes waiting for a connection are taken together up to this many bytes, one system
/// call for many small frames.
const WRITE_BATCH: usize = 64 * 1024;

/// What connections may report before the driver reads it: reads wait beyond, so a fast
/// peer cannot outrun the engine's memory.
const CONNECTION_EVENTS: usize = 64;

/// How long accepting pauses after the listener failed (e.g. out of file descriptors), so
/// that the failure does not spin.
const ACCEPT_BACKOFF: StdDuration = StdDuration::from_millis(100);

/// Owns the listener (if any), the connections and the engine of a CoAP-over-TCP or
/// CoAP-over-TLS endpoint; see the [module docs](self). Take the handles you need
/// ([`client`](Self::client), [`incoming`](Self::incoming), [`events`](Self::events)), then
/// run it with [`run`](Self::run) or [`spawn`](Self::spawn). It stops when every
/// [`Client`], [`Incoming`] and [`Responder`](crate::Responder) has been dropped (or when its
/// task is dropped).
pub struct StreamDriver {
    state: State,
    handles: Handles,
}

impl StreamDriver {
    /// Listens on `addr` (port 0 picks a free one) for connections from clients, and connects
    /// to servers as requests ask, with an engine configured by `config` (its transport made
    /// [`Transport::Tcp`] whatever it said; with a TLS layer in
    /// `Config::security` every connection is a TLS one) and
    /// randomly seeded. The driver does nothing until [`run`](Self::run) or
    /// [`spawn`](Self::spawn).
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a configuration the engine refuses, or as
    /// binding the listener fails.
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<StreamDriver> {
        let endpoint = new_endpoint(Config {
            transport: Transport::Tcp,
            ..config
        })?;
        Self::from_parts(Some(Async::<TcpListener>::bind(addr)?), endpoint)
    }

    /// A driver without a listener: it only connects to servers as requests ask. Otherwise
    /// as [`bind`](Self::bind).
    pub fn client_only(config: Config) -> io::Result<StreamDriver> {
        let endpoint = new_endpoint(Config {
            transport: Transport::Tcp,
            ..config
        })?;
        Self::from_parts(None, endpoint)
    }

    /// Wraps an existing listener (or none) and engine: a fixed seed for a reproducible run,
    /// or a listener set up beforehand. Tells the endpoint the wall-clock time
    /// ([`Endpoint::set_unix_time`]), which a TLS endpoint needs to check certificates'
    /// validity periods.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] unless the endpoint's transport is
    /// [`Transport::Tcp`].
    pub fn from_parts(
        listener: Option<Async<TcpListener>>,
        endpoint: Endpoint,
    ) -> io::Result<StreamDriver> {
        if endpoint.config().transport != Transport::Tcp {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a stream driver needs an endpoint configured with Transport::Tcp",
            ));
        }
        let pause_reads_at = endpoint
            .config()
            .limits
            .max_unwritten_bytes
            .saturating_mul(2)
            .max(64 * 1024);
        let (core, handles) = Core::new(endpoint);
        let (reports, reports_rx) = channel::bounded(CONNECTION_EVENTS);
        let state = State {
            core,
            listener,
            accept_resume: None,
            connections: HashMap::new(),
            next_id: 0,
            reports,
            reports_rx,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pause_reads_at,
        };
        Ok(StreamDriver { state, handles })
    }

    /// How long opening a connection may take before the requests waiting for it fail with
    /// `ConnectFailed(SendErrorKind::TimedOut)` (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn set_connect_timeout(&mut self, timeout: StdDuration) {
        self.state.connect_timeout = timeout;
    }

    /// The listener's local address (with the actual port when bound to port 0); an error
    /// for a driver made by [`client_only`](Self::client_only), which has no listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.state.listener {
            Some(listener) => listener.get_ref().local_addr(),
            None => Err(io::Error::new(
                ErrorKind::NotConnected,
                "a client-only stream driver has no listener",
            )),
        }
    }

    /// A client handle.
    pub fn client(&self) -> Client {
        self.handles.client.clone()
    }

    /// The incoming-request stream (server side). While no clone of it is alive, incoming
    /// requests are answered 4.04 Not Found.
    pub fn incoming(&self) -> Incoming {
        self.handles.incoming.clone()
    }

    /// The session event stream. Events go to one of the clones that are alive; if none is
    /// taken before the driver runs, they are discarded.
    pub fn events(&self) -> Events {
        self.handles.events.clone()
    }

    /// Runs the driver as a task on smol's global executor. Dropping the returned task stops
    /// the driver; `.detach()` it to let it run on its own.
    pub fn spawn(self) -> Task<io::Result<()>> {
        smol::spawn(self.run())
    }

    /// Drives the engine and its connections until every handle is gone, then returns
    /// `Ok(())`. A listener that fails to accept (out of file descriptors, ...) is tried
    /// again after a pause rather than ending the driver; the `io::Result` is the UDP
    /// [`Driver::run`](crate::Driver::run)'s, so both run alike.
    pub async fn run(self) -> io::Result<()> {
        let StreamDriver { mut state, handles } = self;
        let cmd_rx = handles.into_commands(); // only the application's handles keep it running
        loop {
            state.drain();
            let timer = match state.core.endpoint.poll_timeout() {
                Some(t) => Timer::at(state.core.instant_of(t)),
                None => Timer::never(),
            };
            let accept = async {
                match (&state.listener, state.accept_resume) {
                    (Some(listener), None) => Wake::Accepted(listener.accept().await),
                    (Some(_), Some(at)) => {
                        Timer::at(at).await;
                        Wake::AcceptResumed
                    }
                    (None, _) => future::pending().await,
                }
            };
            // `race` polls in random order: a busy connection starves neither the
            // application, nor the listener, nor the engine's deadlines.
            let wake = future::race(
                future::race(async { Wake::Cmd(cmd_rx.recv().await.ok()) }, async {
                    timer.await;
                    Wake::Timeout
                }),
                future::race(
                    async {
                        match state.reports_rx.recv().await {
                            Ok(report) => Wake::Report(report),
                            Err(_) => future::pending().await, // never: `state` holds a sender
                        }
                    },
                    accept,
                ),
            )
            .await;
            let now = state.core.now();
            match wake {
                Wake::Cmd(None) => return Ok(()),
                Wake::Cmd(Some(cmd)) => cmd(&mut state.core, now),
                Wake::Timeout => state.core.endpoint.handle_timeout(now),
                Wake::Report(report) => state.report(now, report),
                Wake::Accepted(Ok((stream, peer))) => state.accepted(now, stream, peer),
                Wake::Accepted(Err(e)) => {
                    log::warn!("accept: {e}; accepting again in {ACCEPT_BACKOFF:?}");
                    state.accept_resume = Some(StdInstant::now() + ACCEPT_BACKOFF);
                }
                Wake::AcceptResumed => state.accept_resume = None,
            }
        }
    }
}

enum Wake {
    Cmd(Option<crate::handles::Cmd>),
    Timeout,
    Report(Report),
    Accepted(io::Result<(Async<TcpStream>, SocketAddr)>),
    AcceptResumed,
}

type ConnectionId = u64;

/// What connection tasks tell the driver.
enum Report {
    Connected {
        id: ConnectionId,
        peer: SocketAddr,
        stream: Async<TcpStream>,
    },
    ConnectFailed {
        id: ConnectionId,
        peer: SocketAddr,
        kind: SendErrorKind,
    },
    Data {
        id: ConnectionId,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    Closed {
        id: ConnectionId,
        peer: SocketAddr,
        how: StreamClosed,
    },
    /// These writes are done (all of them in the kernel) or failed.
    Written {
        ids: Vec<TransmitId>,
        result: Result<(), SendErrorKind>,
    },
}

/// A connection as the driver holds it. Dropping it cancels its task, which closes the
/// socket at once; [`close`](Self::close) lets it flush first.
struct Connection {
    id: ConnectionId,
    writes: Sender<Transmit>,
    /// Bytes handed to the connection and not yet written.
    backlog: Arc<AtomicUsize>,
    /// Never sent on: dropping it tells the connection task to close, within
    /// [`CLOSE_TIMEOUT`].
    _closing: Sender<()>,
    /// Until the connection is open, what its task will take; writes queue meanwhile.
    waiting: Option<(Receiver<Transmit>, Receiver<()>)>,
    /// Opening the connection, then serving it.
    task: Option<Task<()>>,
}

impl Connection {
    /// Closes after the writes handed over so far (a connection not yet open is abandoned).
    fn close(self) {
        if let (None, Some(task)) = (&self.waiting, self.task) {
            task.detach();
        }
    }
}

/// Everything the driver task owns.
struct State {
    core: Core,
    listener: Option<Async<TcpListener>>,
    /// Accepting pauses until then after a failed accept.
    accept_resume: Option<StdInstant>,
    connections: HashMap<SocketAddr, Connection>,
    next_id: ConnectionId,
    reports: Sender<Report>,
    reports_rx: Receiver<Report>,
    connect_timeout: StdDuration,
    pause_reads_at: usize,
}

impl State {
    /// The drain rule: transmits to their connections, then connection commands, then
    /// events, until none is left.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.endpoint.poll_transmit() {
                progressed = true;
                self.write(t);
            }
            while let Some(command) = self.core.endpoint.poll_stream_command() {
                progressed = true;
                match command {
                    StreamCommand::Connect(peer) => self.connect(peer),
                    StreamCommand::Close(peer) => {
                        if let Some(connection) = self.connections.remove(&peer) {
                            connection.close();
                        }
                    }
                    other => log::warn!("stream command {other:?} not understood; ignored"),
                }
            }
            // Routing can make output too: a request nobody takes is answered 4.04 at once.
            progressed |= self.core.route_events();
            if !progressed {
                return;
            }
        }
    }

    /// Queues `t` on its connection, in order after what is already queued.
    fn write(&mut self, t: Transmit) {
        let len = t.payload.len();
        let id = t.id;
        let queued = match self.connections.get(&t.destination) {
            Some(c) => {
                c.backlog.fetch_add(len, Ordering::Relaxed);
                let queued = c.writes.try_send(t).is_ok();
                if !queued {
                    c.backlog.fetch_sub(len, Ordering::Relaxed);
                }
                queued
            }
            None => false,
        };
        if !queued {
            // Its connection task has ended after a failure the engine is about to hear of.
            log::debug!("transmit {id:?}: no connection to write it to");
            let now = self.core.now();
            self.core
                .endpoint
                .handle_send_result(now, id, Err(SendErrorKind::Other));
        }
    }

    fn new_connection(&mut self) -> Connection {
        let id = self.next_id;
        self.next_id += 1;
        let (writes, writes_rx) = channel::unbounded();
        let (closing, closing_rx) = channel::bounded(1);
        Connection {
            id,
            writes,
            backlog: Arc::new(AtomicUsize::new(0)),
            _closing: closing,
            waiting: Some((writes_rx, closing_rx)),
            task: None,
        }
    }

    /// Opens a connection to `peer`, as the engine asked.
    fn connect(&mut self, peer: SocketAddr) {
        let (reports, timeout) = (self.reports.clone(), self.connect_timeout);
        let mut connection = self.new_connection();
        connection.task = Some(smol::spawn(connect(connection.id, peer, timeout, reports)));
        // A connection the engine no longer knows, if any, is of no use to it.
        self.connections.insert(peer, connection);
    }

    /// Starts serving `stream`, open with `peer`.
    fn serve(&self, connection: &mut Connection, peer: SocketAddr, stream: Async<TcpStream>) {
        // CoAP messages are small and often answered: do not hold them back (Nagle).
        if let Err(e) = stream.get_ref().set_nodelay(true) {
            log::debug!("{peer}: TCP_NODELAY: {e}");
        }
        let Some((writes, closing)) = connection.waiting.take() else {
            return;
        };
        let link = Link {
            id: connection.id,
            peer,
            writes,
            closing,
            backlog: connection.backlog.clone(),
            pause_reads_at: self.pause_reads_at,
            reports: self.reports.clone(),
        };
        connection.task = Some(smol::spawn(link.run(stream)));
    }

    fn accepted(&mut self, now: Instant, stream: Async<TcpStream>, peer: SocketAddr) {
        let mut connection = self.new_connection();
        self.serve(&mut connection, peer, stream);
        // The engine takes the new connection from a peer for the one it had.
        self.connections.insert(peer, connection);
        if let Err(e) = self.core.endpoint.handle_accepted(now, peer) {
            log::debug!("{peer}: connection refused by the engine: {e}");
            self.connections.remove(&peer);
        }
    }

    fn report(&mut self, now: Instant, report: Report) {
        match report {
            Report::Connected { id, peer, stream } => {
                let Some(mut connection) = self.current(peer, id) else {
                    return; // abandoned while it opened: dropping `stream` closes it
                };
                self.serve(&mut connection, peer, stream);
                self.connections.insert(peer, connection);
                self.core.endpoint.handle_connected(now, peer);
            }
            Report::ConnectFailed { id, peer, kind } => {
                if self.current(peer, id).is_some() {
                    self.core.endpoint.handle_connect_failed(now, peer, kind);
                }
            }
            Report::Data { id, peer, bytes } => {
                if self.connections.get(&peer).is_some_and(|c| c.id == id) {
                    self.core.endpoint.handle_datagram(now, peer, &bytes);
                }
            }
            Report::Closed { id, peer, how } => {
                if self.current(peer, id).is_some() {
                    self.core.endpoint.handle_closed(now, peer, how);
                }
            }
            Report::Written { ids, result } => {
                for id in ids {
                    self.core.endpoint.handle_send_result(now, id, result);
                }
            }
        }
    }

    /// Takes the connection with `peer` if it is the one `id` names, not one that replaced it.
    fn current(&mut self, peer: SocketAddr, id: ConnectionId) -> Option<Connection> {
        if self.connections.get(&peer)?.id == id {
            self.connections.remove(&peer)
        } else {
            None
        }
    }
}

/// Opens a connection to `peer` within `timeout` and reports the outcome.
async fn connect(
    id: ConnectionId,
    peer: SocketAddr,
    timeout: StdDuration,
    reports: Sender<Report>,
) {
    let opened = Async::<TcpStream>::connect(peer)
        .or(async {
            Timer::after(timeout).await;
            Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))
        })
        .await;
    let report = match opened {
        Ok(stream) => Report::Connected { id, peer, stream },
        Err(e) => {
            let kind = SendErrorKind::from_io_error(&e).unwrap_or(SendErrorKind::Other);
            log::debug!("connect to {peer}: {e} ({kind:?})");
            Report::ConnectFailed { id, peer, kind }
        }
    };
    let _ = reports.send(report).await;
}

/// What a connection task needs besides its socket.
struct Link {
    id: ConnectionId,
    peer: SocketAddr,
    writes: Receiver<Transmit>,
    closing: Receiver<()>,
    backlog: Arc<AtomicUsize>,
    pause_reads_at: usize,
    reports: Sender<Report>,
}

impl Link {
    /// Reads and writes until the connection fails, or until the driver closes it: then the
    /// writes queued so far are flushed and the connection closed, within [`CLOSE_TIMEOUT`].
    async fn run(self, stream: Async<TcpStream>) {
        let stream = &stream;
        // The writer says when it took bytes off the backlog, for a reader waiting on it.
        let (drained, drained_rx) = channel::bounded::<()>(1);
        let reading = async {
            self.read(stream, &drained_rx).await;
            // Reported; the driver ends this task unless it is closing, which the writer
            // finishes.
            future::pending::<bool>().await
        };
        let served = async {
            if reading.or(self.write(stream, &drained)).await {
                // Everything handed over is written: tell the peer, and wait for it to close
                // its side so that our close cannot reset what it has not read yet.
                let _ = stream.get_ref().shutdown(Shutdown::Write);
                let mut sink = [0u8; 1024];
                while let Ok(1..) = (&mut &*stream).read(&mut sink).await {}
            }
        };
        served
            .or(async {
                let _ = self.closing.recv().await; // returns once the driver let go
                Timer::after(CLOSE_TIMEOUT).await;
                log::debug!("{}: closed after {CLOSE_TIMEOUT:?}", self.peer);
            })
            .await;
    }

    /// Feeds what arrives to the driver, until the connection ends (reported).
    async fn read(&self, stream: &Async<TcpStream>, drained: &Receiver<()>) {
        let (id, peer) = (self.id, self.peer);
        let mut buf = vec![0u8; READ_BUFFER_SIZE];
        let how = loop {
            while self.backlog.load(Ordering::Relaxed) > self.pause_reads_at {
                // The peer does not read what we write: stop reading what it writes.
                if drained.recv().await.is_err() {
                    return;
                }
            }
            match (&mut &*stream).read(&mut buf).await {
                Ok(0) => break StreamClosed::Eof,
                Ok(n) => {
                    let bytes = buf[..n].to_vec();
                    if self
                        .reports
                        .send(Report::Data { id, peer, bytes })
                        .await
                        .is_err()
                    {
                        return; // the driver has stopped
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{peer}: read: {e}");
                    break StreamClosed::Reset;
                }
            }
        };
        let _ = self.reports.send(Report::Closed { id, peer, how }).await;
    }

    /// Writes what the driver queues, in order, reporting each write. True once the driver
    /// has closed the queue and all of it is written; false when a write failed.
    async fn write(&self, stream: &Async<TcpStream>, drained: &Sender<()>) -> bool {
        let mut batch = Vec::new();
        let mut ids = Vec::new();
        loop {
            let Ok(first) = self.writes.recv().await else {
                return true;
            };
            ids.push(first.id);
            let mut len = first.payload.len();
            // Frames queued behind it go in the same write, copied together.
            batch.clear();
            while len < WRITE_BATCH {
                let Ok(next) = self.writes.try_recv() else {
                    break;
                };
                if batch.is_empty() {
                    batch.extend_from_slice(&first.payload);
                }
                batch.extend_from_slice(&next.payload);
                ids.push(next.id);
                len += next.payload.len();
            }
            let bytes: &[u8] = if batch.is_empty() {
                &first.payload
            } else {
                &batch
            };
            let written = (&mut &*stream).write_all(bytes).await;
            self.backlog.fetch_sub(len, Ordering::Relaxed);
            let _ = drained.try_send(());
            let result = written.map_err(|e| {
                let kind = SendErrorKind::from_io_error(&e).unwrap_or(SendErrorKind::Other);
                log::debug!("{}: write: {e} ({kind:?})", self.peer);
                kind
            });
            let failed = result.is_err();
            let ids = std::mem::take(&mut ids);
            if self
                .reports
                .send(Report::Written { ids, result })
                .await
                .is_err()
                || failed
            {
                return false;
            }
        }
    }
}
