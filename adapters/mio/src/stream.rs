//! CoAP over TCP and over TLS (RFC 8323, `coap+tcp://` and `coaps+tcp://`) on mio: the
//! [`StreamDriver`] moves the bytes of a CoAP-over-TCP [`Endpoint`] between non-blocking
//! [`TcpStream`]s, one connection per peer address, in both roles at once: it opens the
//! connections the engine asks for ([`StreamCommand::Connect`]), accepts those that arrive on
//! its listener (if it has one), and closes them when the engine says so
//! ([`StreamCommand::Close`]). Framing, the Capabilities and Settings Message, Ping/Pong,
//! Release, Abort and TLS all happen in `coap-engine`; this module only does I/O.
//!
//! Two ways to use it, as with the UDP [`Driver`](crate::Driver):
//!
//! - **In your own `mio::Poll`**: [`StreamDriver::register`] it with a range of [`Token`]s it
//!   may use (one for the listener, one per connection), pass the readiness events whose
//!   token it [owns](StreamDriver::owns) to [`StreamDriver::handle_event`], call
//!   [`StreamDriver::handle_timeout`] every time `poll` returns, sleep no longer than
//!   [`StreamDriver::next_timeout`], and drain [`StreamDriver::poll_event`].
//! - **A blocking loop**: [`StreamDriver::run`] with a [`StreamHandler`] (a closure is one).
//!
//! ## Connections
//!
//! - **Opening.** A request (or ping, or `open_session`) to a peer with no connection makes
//!   the engine ask for one; the driver starts a non-blocking connect and reports it open
//!   ([`Endpoint::handle_connected`]) once the socket is writable with no pending error, or
//!   failed ([`Endpoint::handle_connect_failed`]): the session and its requests then fail with
//!   [`ConnectionFailure::ConnectFailed`](coap_engine::ConnectionFailure::ConnectFailed).
//!   A connect not done within [`StreamDriver::set_connect_timeout`] (default 30 s) fails with
//!   [`SendErrorKind::TimedOut`], as the kernel's own `ETIMEDOUT` does. Peers are socket
//!   addresses: name resolution is the application's business.
//! - **Accepting.** Readiness on the listener accepts until `WouldBlock`; every connection is
//!   offered to the engine ([`Endpoint::handle_accepted`]) and closed at once if it refuses it
//!   (session or handshake limits, see [`Limits`](coap_engine::Limits)). If accepting fails
//!   for want of resources (`EMFILE`, `ENOBUFS`, ...) it is tried again 100 ms later.
//! - **Writing.** Each connection has its own queue of the engine's writes, written in order,
//!   partially if the kernel takes only part; on `WouldBlock` the rest waits for the socket to
//!   become writable. Every write is reported to the engine once the kernel has all of it
//!   ([`Endpoint::handle_send_result`] with `Ok`), which is how the engine counts a
//!   connection's unwritten bytes: beyond
//!   [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes) it refuses new
//!   requests, responses and notifications to that peer with [`Error::QueueFull`], which
//!   [`StreamDriver::request`] and [`StreamDriver::respond`] return as they are: try again
//!   after some responses arrived, or give up. So a peer that stops reading costs at most that
//!   much memory here, plus what its kernel and ours buffer.
//! - **Reading.** Readiness reads until `WouldBlock` into one 16 KiB buffer whose bytes go
//!   straight to the engine ([`Endpoint::handle_datagram`]); a connection is read at most
//!   256 KiB at a time so that one busy peer cannot starve the others (the rest is read at once
//!   on the next [`StreamDriver::handle_timeout`]). The driver stops reading from a connection
//!   whose queue of unwritten bytes has grown beyond four times `max_unwritten_bytes` plus
//!   1 MiB until the queue shrinks: the peer's own kernel then pushes back on it. (The
//!   engine itself stops answering Pings once a connection is backlogged, so this is a
//!   second line of defence.)
//! - **Writing.** Writes leave at once, a connection's queued ones coalesced into one `send`
//!   of up to 64 KiB; between [`StreamDriver::cork`] and [`StreamDriver::uncork`] they wait,
//!   so that the answers to a burst of requests cost one system call, not one each.
//! - **Closing.** [`StreamCommand::Close`] writes what is still queued, then shuts the
//!   connection down (FIN) and waits for the peer's end (reading and dropping what still
//!   arrives, so that the close does not turn into a reset that could destroy the last
//!   message, a Release or an Abort). A connection that has not finished all that 5 s after
//!   the command is dropped.
//!
//! ## Errors, as the engine hears them
//!
//! | what happened | input to the engine |
//! | --- | --- |
//! | connect: `ECONNREFUSED` | `handle_connect_failed(..)` with [`SendErrorKind::Refused`] |
//! | connect: `ENETUNREACH`, `EHOSTUNREACH`, `ENETDOWN` | `handle_connect_failed(..)` with [`SendErrorKind::Unreachable`] |
//! | connect: no answer within the connect timeout | `handle_connect_failed(..)` with [`SendErrorKind::TimedOut`] |
//! | connect: any other error | `handle_connect_failed(..)` with [`SendErrorKind::Other`] |
//! | read returned 0 (the peer closed its side) | `handle_closed(.., StreamClosed::Eof)` |
//! | read failed (`ECONNRESET`, `ETIMEDOUT`, ...) | `handle_closed(.., StreamClosed::Reset)` |
//! | write failed with `ECONNRESET`, `EPIPE`, `ECONNABORTED` | `handle_closed(.., StreamClosed::Reset)` |
//! | write failed otherwise | `handle_send_result(id, Err(kind))`, kind by [`SendErrorKind::from_io_error`]: the session fails with `WriteFailed(kind)` |
//! | write done | `handle_send_result(id, Ok(()))` |
//! | `WouldBlock` | nothing: the write waits for the socket to be writable |
//!
//! Writes still queued on a connection that broke, or that the engine closed and that did not
//! finish closing in time, are reported failed ([`SendErrorKind::Other`], or the write
//! error's kind), which the application sees as [`Event::SendFailed`].
//!
//! ## `coap+tcp://`
//!
//! A server answering every request with "hello", and a client of it; both are stream
//! endpoints (`Transport::Tcp`), and any driver can do both:
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::{Config, Event, Transport};
//! use coap_engine_mio::StreamDriver;
//!
//! let tcp = Config { transport: Transport::Tcp, ..Config::default() };
//! let mut server = StreamDriver::bind("127.0.0.1:5683".parse()?, tcp.clone())?;
//! std::thread::spawn(move || {
//!     server.run(&mut |driver: &mut StreamDriver, event: Event| {
//!         if let Event::Request { id, .. } = event {
//!             let mut response = Packet::new();
//!             response.header.code = MessageClass::Response(ResponseType::Content);
//!             response.payload = b"hello".to_vec();
//!             // `Err(QueueFull)` here: the client does not read what we write.
//!             let _ = driver.respond(id, &response);
//!         }
//!         ControlFlow::Continue(())
//!     })
//! });
//!
//! // A client needs no listener: `new`. The connection opens with the first request.
//! let mut client = StreamDriver::new(tcp)?;
//! let mut get = Packet::new();
//! get.header.code = MessageClass::Request(RequestType::Get);
//! client.request("127.0.0.1:5683".parse()?, &get)?;
//! client.run(&mut |_: &mut StreamDriver, event: Event| match event {
//!     Event::Response { response, .. } => {
//!         println!("{}", String::from_utf8_lossy(&response.payload));
//!         ControlFlow::Break(())
//!     }
//!     // A refused or broken connection ends here: `SessionFailed(Connection(..))`.
//!     Event::RequestFailed { error, .. } => {
//!         eprintln!("{error}");
//!         ControlFlow::Break(())
//!     }
//!     _ => ControlFlow::Continue(()),
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## `coaps+tcp://` (feature `tls`)
//!
//! The same endpoints with the engine's TLS layer in `Config::security`, seeded with
//! `security_entropy()`. The driver gives the engine the wall-clock
//! time when it starts ([`StreamDriver::from_parts`]) so that certificates' validity periods
//! are checked. The client verifies the server's certificate against its trust anchors and
//! the name it connected to (the request's Uri-Host, else the server's IP address); here the
//! server also requires a client certificate:
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::ops::ControlFlow;
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::credentials::{trust_anchors_from_pem, CertifiedKey, ClientAuth};
//! use coap_engine::tls::{Tls, TlsConfig};
//! use coap_engine::{Config, Event, Security, Transport};
//! use coap_engine_mio::{security_entropy, StreamDriver};
//!
//! let ca = trust_anchors_from_pem(&std::fs::read("ca.pem")?)?;
//! let tls_config = |tls: TlsConfig| -> Result<Config, Box<dyn std::error::Error>> {
//!     let tls = Tls::new(tls, security_entropy())?;
//!     Ok(Config {
//!         transport: Transport::Tcp,
//!         security: Some(Security::new(tls)),
//!         ..Config::default()
//!     })
//! };
//!
//! // Server: its certificate and key; clients must present one issued by `ca`.
//! let certificate = CertifiedKey::from_pem(
//!     &std::fs::read("server.pem")?,
//!     &std::fs::read("server.key")?,
//! )?;
//! let server_config = tls_config(TlsConfig {
//!     certificate: Some(certificate),
//!     trust_anchors: ca.clone(),
//!     client_auth: ClientAuth::Required,
//!     ..TlsConfig::default()
//! })?;
//! let mut server = StreamDriver::bind("127.0.0.1:5684".parse()?, server_config)?;
//! std::thread::spawn(move || {
//!     server.run(&mut |driver: &mut StreamDriver, event: Event| {
//!         if let Event::Request { id, .. } = event {
//!             let mut response = Packet::new();
//!             response.header.code = MessageClass::Response(ResponseType::Content);
//!             response.payload = b"hello".to_vec();
//!             let _ = driver.respond(id, &response);
//!         }
//!         ControlFlow::Continue(())
//!     })
//! });
//!
//! // Client: trusts `ca`, presents its own certificate.
//! let certificate = CertifiedKey::from_pem(
//!     &std::fs::read("client.pem")?,
//!     &std::fs::read("client.key")?,
//! )?;
//! let client_config = tls_config(TlsConfig {
//!     certificate: Some(certificate),
//!     trust_anchors: ca,
//!     ..TlsConfig::default()
//! })?;
//! let mut client = StreamDriver::new(client_config)?;
//! let mut get = Packet::new();
//! get.header.code = MessageClass::Request(RequestType::Get);
//! client.request("127.0.0.1:5684".parse()?, &get)?;
//! client.run(&mut |_: &mut StreamDriver, event: Event| match event {
//!     Event::Response { response, .. } => {
//!         println!("{}", String::from_utf8_lossy(&response.payload));
//!         ControlFlow::Break(())
//!     }
//!     // An untrusted certificate ends here: `SessionFailed(Security(Certificate(..)))`.
//!     Event::RequestFailed { error, .. } => {
//!         eprintln!("{error}");
//!         ControlFlow::Break(())
//!     }
//!     _ => ControlFlow::Continue(()),
//! })?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::{Shutdown, SocketAddr};
use std::ops::{ControlFlow, Range};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::Packet;
use coap_engine::{
    Config, Endpoint, Error, Event, IncomingRequestId, Instant, Keepalive, RequestId, ResourceId,
    SendErrorKind, StreamClosed, StreamCommand, Transmit, TransmitId, Transport,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

use crate::{random_seed, unix_time};

/// The read buffer: what one `read` hands the engine at most.
const READ_CHUNK: usize = 16 * 1024;
/// Reads per connection per readiness before the others get their turn (256 KiB).
const READ_BUDGET: usize = 16;
/// Connections accepted per readiness before the rest of the work gets its turn.
const ACCEPT_BUDGET: usize = 64;
/// Small writes are copied together into one `send` of at most this many bytes.
const COALESCE: usize = 64 * 1024;
/// How long after a failed `accept` (out of descriptors or memory) it is tried again.
const ACCEPT_RETRY: StdDuration = StdDuration::from_millis(100);
/// How long a connection the engine closed may take to flush and see the peer's end.
const CLOSE_LINGER: StdDuration = StdDuration::from_secs(5);
/// The connect timeout unless [`StreamDriver::set_connect_timeout`] says otherwise.
const DEFAULT_CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(30);
/// Tokens [`StreamDriver::run`] gives its private poll: all of them, short of the top ones
/// some mio versions keep for themselves.
const RUN_TOKENS: Range<Token> = Token(0)..Token(usize::MAX >> 1);

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `connect` issued; open once the socket is writable with no error.
    Connecting,
    /// Carrying the engine's session with its peer.
    Open,
    /// The engine has forgotten it: what is queued is written, then FIN, then the peer's end
    /// is awaited. `shut`: the FIN went; `eof`: the peer's end came.
    Closing { shut: bool, eof: bool },
}

/// One TCP connection and its write queue.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    state: State,
    /// Connect or close deadline, also in [`StreamDriver::deadlines`].
    deadline: Option<StdInstant>,
    /// The engine's writes, oldest first; `offset` bytes of the first already went.
    queue: VecDeque<Transmit>,
    offset: usize,
    /// Bytes in `queue` not yet written.
    queued: usize,
    /// The last write hit `WouldBlock`: wait for writable readiness.
    write_blocked: bool,
    /// Already in [`StreamDriver::dirty`].
    dirty: bool,
    /// Readable data may be left (the read budget ran out, or reading resumed).
    read_pending: bool,
    /// Not read while its queue is over the pause threshold.
    paused: bool,
}

/// An input for the engine found while writing or connecting, given once the engine's
/// outputs are drained, so that the engine and the driver agree on which connection a peer
/// address means when it is given.
#[derive(Clone, Copy, Debug)]
enum Input {
    Sent(TransmitId, Result<(), SendErrorKind>),
    Connected(SocketAddr),
    ConnectFailed(SocketAddr, SendErrorKind),
    Closed(SocketAddr, StreamClosed),
}

struct Registration {
    registry: Registry,
    tokens: Range<Token>,
}

/// A CoAP-over-TCP or -TLS endpoint (RFC 8323) on non-blocking mio TCP sockets: client
/// connections and, with a listener, server ones. See the [module docs](self).
pub struct StreamDriver {
    endpoint: Endpoint,
    epoch: StdInstant,
    listener: Option<TcpListener>,
    accept_pending: bool,
    accept_retry: Option<StdInstant>,
    /// Connections by slot; slot `i` has token `tokens.start + 1 + i`.
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    /// The connection carrying each peer's session (not those closing).
    by_peer: HashMap<SocketAddr, usize>,
    /// Connect and close deadlines: (when, slot).
    deadlines: BTreeSet<(StdInstant, usize)>,
    /// Connections with something to write.
    dirty: Vec<usize>,
    /// Writes wait for `uncork`.
    corked: bool,
    /// Connections with data left to read.
    reads: Vec<usize>,
    inputs: VecDeque<Input>,
    registration: Option<Registration>,
    connect_timeout: StdDuration,
    /// Unwritten bytes beyond which a connection is not read.
    read_pause: usize,
    buf: Box<[u8]>,
    scratch: Vec<u8>,
}

/// Application logic for [`StreamDriver::run`]. Any
/// `FnMut(&mut StreamDriver, Event) -> ControlFlow<()>` closure is a handler.
///
/// ```
/// use std::ops::ControlFlow;
/// use coap_engine::Event;
/// use coap_engine_mio::{StreamDriver, StreamHandler};
///
/// struct StopOnPong;
/// impl StreamHandler for StopOnPong {
///     fn on_event(&mut self, _: &mut StreamDriver, event: Event) -> ControlFlow<()> {
///         match event {
///             Event::Pong { .. } => ControlFlow::Break(()),
///             _ => ControlFlow::Continue(()),
///         }
///     }
/// }
/// ```
pub trait StreamHandler {
    /// One engine event; respond or make requests through `driver`. `Break` ends the loop.
    fn on_event(&mut self, driver: &mut StreamDriver, event: Event) -> ControlFlow<()>;

    /// Called once per loop turn, before sleeping: do timed application work and return when
    /// to be called again (`Continue(None)`: only after I/O or an engine deadline).
    /// `Break` ends the loop. The default does nothing.
    fn on_tick(&mut self, driver: &mut StreamDriver) -> ControlFlow<(), Option<StdInstant>> {
        let _ = driver;
        ControlFlow::Continue(None)
    }
}

impl<F: FnMut(&mut StreamDriver, Event) -> ControlFlow<()>> StreamHandler for F {
    fn on_event(&mut self, driver: &mut StreamDriver, event: Event) -> ControlFlow<()> {
        self(driver, event)
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, message.to_owned())
}

/// Errors after which the connection is gone rather than one write failed.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

fn kind_of(e: &io::Error) -> SendErrorKind {
    SendErrorKind::from_io_error(e).unwrap_or(SendErrorKind::Other)
}

impl StreamDriver {
    /// Listens on `addr` (IPv4 or IPv6; port 0 picks a free one) and makes an endpoint seeded
    /// from [`random_seed`]: a server that can also open connections of its own. `config`
    /// must be a stream one ([`Transport::Tcp`]), else `InvalidInput`.
    ///
    /// ```
    /// use coap_engine::{Config, Transport};
    /// let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// let driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// assert_ne!(driver.local_addr()?.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let endpoint = Self::endpoint_for(config)?;
        Self::from_parts(Some(TcpListener::bind(addr)?), endpoint)
    }

    /// Like [`bind`](Self::bind), with `SO_REUSEPORT`: one more listener of a group on
    /// `addr`, for serving from several threads, each with a driver of its own; the kernel
    /// hands each new connection to one of them, and the connection stays there. Bind the
    /// first with the port you want (or port 0, then the others with the port it got).
    /// [`ErrorKind::Unsupported`] except on Linux and
    /// Android. See [`reuseport`](crate::reuseport).
    ///
    /// ```
    /// # if !cfg!(any(target_os = "linux", target_os = "android")) { return Ok(()) }
    /// use coap_engine::{Config, Transport};
    /// use coap_engine_mio::StreamDriver;
    /// let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// let first = StreamDriver::bind_reuseport("127.0.0.1:0".parse().unwrap(), tcp.clone())?;
    /// let second = StreamDriver::bind_reuseport(first.local_addr()?, tcp)?;
    /// assert_eq!(first.local_addr()?, second.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_reuseport(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let endpoint = Self::endpoint_for(config)?;
        Self::from_parts(Some(crate::reuseport::tcp_listener(addr)?), endpoint)
    }

    /// An endpoint seeded from [`random_seed`] with no listener: a client, whose connections
    /// open as the engine asks for them. `config` must be a stream one ([`Transport::Tcp`]),
    /// else `InvalidInput`.
    ///
    /// ```
    /// use coap_engine::{Config, Transport};
    /// let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// let client = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert!(client.local_addr().is_err()); // nothing to listen on
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(config: Config) -> io::Result<Self> {
        let endpoint = Self::endpoint_for(config)?;
        Self::from_parts(None, endpoint)
    }

    fn endpoint_for(config: Config) -> io::Result<Endpoint> {
        if config.transport != Transport::Tcp {
            return Err(invalid(
                "a stream driver needs a stream endpoint (Config::transport = Transport::Tcp)",
            ));
        }
        Endpoint::new(config, random_seed()).map_err(|e| invalid(&e.to_string()))
    }

    /// Wraps an existing endpoint (e.g. one with a fixed seed) and, for a server, a
    /// non-blocking listener. `InvalidInput` if the endpoint is not a stream one.
    ///
    /// Tells the endpoint the wall-clock time ([`Endpoint::set_unix_time`]), which a TLS
    /// endpoint needs to check certificates' validity periods and a plain one ignores.
    ///
    /// ```
    /// use coap_engine::{Config, Endpoint, Transport};
    /// use coap_engine_mio::{mio::net::TcpListener, StreamDriver};
    /// let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    /// let driver = StreamDriver::from_parts(Some(listener), Endpoint::new(tcp, 7).unwrap())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_parts(listener: Option<TcpListener>, mut endpoint: Endpoint) -> io::Result<Self> {
        if endpoint.config().transport != Transport::Tcp {
            return Err(invalid(
                "a stream driver needs a stream endpoint (Config::transport = Transport::Tcp)",
            ));
        }
        let epoch = StdInstant::now();
        if let Some(secs) = unix_time() {
            endpoint.set_unix_time(Instant::ZERO, secs);
        }
        let limits = &endpoint.config().limits;
        let read_pause = limits
            .max_unwritten_bytes
            .saturating_mul(4)
            .saturating_add(1 << 20);
        Ok(StreamDriver {
            endpoint,
            epoch,
            accept_pending: listener.is_some(),
            listener,
            accept_retry: None,
            connections: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            deadlines: BTreeSet::new(),
            dirty: Vec::new(),
            corked: false,
            reads: Vec::new(),
            inputs: VecDeque::new(),
            registration: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_pause,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            scratch: Vec::new(),
        })
    }

    /// The listener's local address; `InvalidInput` for a driver without one.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// println!("listening on {}", driver.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(invalid("this stream driver has no listener")),
        }
    }

    /// How long a connection may take to open before it fails with
    /// [`SendErrorKind::TimedOut`] (default 30 s; the kernel gives up on its own after about
    /// two minutes on Linux). Applies to connections started from now on.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// driver.set_connect_timeout(std::time::Duration::from_secs(5));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_connect_timeout(&mut self, timeout: StdDuration) {
        self.connect_timeout = timeout;
    }

    /// The engine's current time (microseconds since this driver was created).
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert!(driver.now() >= coap_engine::Instant::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The engine, for inspection.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert_eq!(driver.endpoint().session_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The engine, for calls without a wrapper here (`cancel`, `observe`, `open_session`,
    /// `close_session`, `set_keepalive`, ...). Pass [`now`](Self::now), then call
    /// [`drive`](Self::drive).
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let now = driver.now();
    /// driver.endpoint_mut().open_session(now, "127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.drive(); // starts connecting
    /// assert_eq!(driver.connections(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Connections carrying a session or opening for one (not those being closed).
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert_eq!(driver.connections(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connections(&self) -> usize {
        self.by_peer.len()
    }

    /// Bytes the engine handed over for `peer`'s connection that the kernel has not taken
    /// yet (`None`: no connection to `peer`). It stays within
    /// [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes) plus one
    /// message, because the engine refuses application messages beyond it and leaves the
    /// peer's Pings unanswered while it is over it (see the [module docs](self)).
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert_eq!(driver.unwritten_bytes("127.0.0.1:5683".parse().unwrap()), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unwritten_bytes(&self, peer: SocketAddr) -> Option<usize> {
        let slot = *self.by_peer.get(&peer)?;
        self.connection(slot).map(|c| c.queued)
    }

    /// Registers the listener and every connection in `registry`. The driver uses the
    /// tokens of `tokens` (at least two: the first is the listener's, each connection
    /// takes one of the others while it lives), so the range bounds how many connections
    /// it has at once: beyond it a new connection is refused (an accepted one is closed, a
    /// connect fails with [`SendErrorKind::Other`]). Route the events whose token it
    /// [`owns`](Self::owns) to [`handle_event`](Self::handle_event).
    ///
    /// ```
    /// use coap_engine_mio::mio::{Poll, Token};
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// let poll = Poll::new()?;
    /// driver.register(poll.registry(), Token(100)..Token(1100))?;
    /// assert!(driver.owns(Token(100)) && !driver.owns(Token(7)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register(&mut self, registry: &Registry, tokens: Range<Token>) -> io::Result<()> {
        if tokens.end.0 < tokens.start.0.saturating_add(2) {
            return Err(invalid(
                "a stream driver needs a range of at least two tokens",
            ));
        }
        let capacity = tokens.end.0 - tokens.start.0 - 1;
        if self.connections.iter().skip(capacity).any(Option::is_some) {
            return Err(invalid("too few tokens for the connections already open"));
        }
        self.deregister()?;
        let first = tokens.start.0;
        if let Some(listener) = &mut self.listener {
            registry.register(listener, Token(first), Interest::READABLE)?;
        }
        for (slot, connection) in self.connections.iter_mut().enumerate() {
            if let Some(c) = connection {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.register(&mut c.stream, Token(first + 1 + slot), interest)?;
            }
        }
        self.registration = Some(Registration {
            registry: registry.try_clone()?,
            tokens,
        });
        Ok(())
    }

    /// Removes the listener and every connection from the registry they were registered in.
    ///
    /// ```
    /// # use coap_engine_mio::mio::{Poll, Token};
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// # let poll = Poll::new()?;
    /// driver.register(poll.registry(), Token(1)..Token(100))?;
    /// driver.deregister()?;
    /// assert!(!driver.owns(Token(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister(&mut self) -> io::Result<()> {
        let Some(registration) = self.registration.take() else {
            return Ok(());
        };
        let registry = &registration.registry;
        if let Some(listener) = &mut self.listener {
            registry.deregister(listener)?;
        }
        for c in self.connections.iter_mut().flatten() {
            registry.deregister(&mut c.stream)?;
        }
        Ok(())
    }

    /// Whether `token` is one of those this driver was registered with.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert!(!driver.owns(coap_engine_mio::mio::Token(0))); // not registered
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn owns(&self, token: Token) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.tokens.contains(&token))
    }

    /// How long the user's `Poll::poll` may sleep: until the earliest of the engine's deadline
    /// and the driver's own (connect and close timeouts), zero while work is left over,
    /// `None` for no deadline.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert_eq!(driver.next_timeout(), None); // an idle endpoint has no deadline
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_timeout(&self) -> Option<StdDuration> {
        if !self.reads.is_empty()
            || (self.accept_pending && self.registration.is_some())
            || self.endpoint.has_transmits()
            || (!self.dirty.is_empty() && !self.corked)
        {
            return Some(StdDuration::ZERO);
        }
        let engine = self.endpoint.poll_timeout().map(|deadline| {
            StdDuration::from_micros(deadline.as_micros().saturating_sub(self.now().as_micros()))
        });
        let now = StdInstant::now();
        let own = [self.deadlines.first().map(|&(t, _)| t), self.accept_retry]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(now));
        match (engine, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles a mio readiness event for one of this driver's tokens: accepts connections,
    /// completes a connect, reads what arrived and writes what waited, then does what the
    /// engine asked. Then drain [`poll_event`](Self::poll_event). Events for other tokens are
    /// ignored.
    ///
    /// ```no_run
    /// # use coap_engine_mio::mio::{Events, Poll, Token};
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// # let mut poll = Poll::new()?;
    /// driver.register(poll.registry(), Token(1)..Token(1000))?;
    /// let mut events = Events::with_capacity(256);
    /// loop {
    ///     poll.poll(&mut events, driver.next_timeout())?;
    ///     for event in events.iter() {
    ///         if driver.owns(event.token()) {
    ///             driver.handle_event(event);
    ///         } // else: one of your own sources
    ///     }
    ///     driver.handle_timeout();
    ///     while let Some(event) = driver.poll_event() { /* ... */ }
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_event(&mut self, event: &mio::event::Event) {
        let Some(first) = self.registration.as_ref().and_then(|r| {
            r.tokens
                .contains(&event.token())
                .then_some(r.tokens.start.0)
        }) else {
            return;
        };
        let index = event.token().0 - first;
        if index == 0 {
            self.accept_pending = true;
            self.accept();
        } else {
            self.connection_ready(index - 1, event);
        }
        self.drive();
    }

    /// Call whenever the user's `poll` returns (timeout or not): continues reading and
    /// accepting where a budget ran out, fails connects and drops closing connections whose
    /// time is up, runs engine timers that are due, and writes what is pending.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// driver.handle_timeout(); // harmless when nothing is due
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_timeout(&mut self) {
        let now = StdInstant::now();
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            self.accept_pending = true;
        }
        if self.accept_pending && self.registration.is_some() {
            self.accept();
        }
        for slot in mem::take(&mut self.reads) {
            if self.connection(slot).is_some_and(|c| c.read_pending) {
                self.read(slot);
            }
        }
        while let Some(&(deadline, slot)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.remove(&(deadline, slot));
            self.expire(slot);
        }
        self.drive();
        let now = self.now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.drive();
    }

    /// Does what the engine asked (writes, connects, closes) and reports the results,
    /// until it asks for nothing more. Call after every direct
    /// [`endpoint_mut`](Self::endpoint_mut) call.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// driver.drive();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn drive(&mut self) {
        loop {
            while let Some(t) = self.endpoint.poll_transmit() {
                self.enqueue(t);
            }
            while let Some(command) = self.endpoint.poll_stream_command() {
                match command {
                    StreamCommand::Connect(peer) => self.connect(peer),
                    StreamCommand::Close(peer) => self.close(peer),
                    other => log::warn!("stream command {other:?} not understood; ignored"),
                }
            }
            if !self.corked {
                self.flush_dirty();
            }
            if self.inputs.is_empty() {
                return;
            }
            let now = self.now();
            while let Some(input) = self.inputs.pop_front() {
                match input {
                    Input::Sent(id, result) => self.endpoint.handle_send_result(now, id, result),
                    Input::Connected(peer) => self.endpoint.handle_connected(now, peer),
                    Input::ConnectFailed(peer, kind) => {
                        self.endpoint.handle_connect_failed(now, peer, kind)
                    }
                    Input::Closed(peer, how) => self.endpoint.handle_closed(now, peer, how),
                }
            }
        }
    }

    /// The next engine event, if any. Drain after every input.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// while let Some(event) = driver.poll_event() {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll_event(&mut self) -> Option<Event> {
        self.endpoint.poll_event()
    }

    /// Holds writes back until [`uncork`](Self::uncork), like `TCP_CORK`: what the engine
    /// writes meanwhile is queued, and leaves coalesced (one `send` of up to 64 KiB per
    /// connection) when uncorked. An application answering a burst of events corks before
    /// taking them and uncorks after the last, so the answers cost one system call rather
    /// than one each. [`run`](Self::run) does so by itself.
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// driver.cork();
    /// while let Some(event) = driver.poll_event() {
    ///     // ... answer it with driver.respond(..)
    /// }
    /// driver.uncork();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Writes what waited since [`cork`](Self::cork), and from now on at once.
    pub fn uncork(&mut self) {
        self.corked = false;
        self.drive();
    }

    /// Writes what is queued on every connection that has something new to write.
    fn flush_dirty(&mut self) {
        while let Some(slot) = self.dirty.pop() {
            if let Some(c) = self.connection_mut(slot) {
                c.dirty = false;
            }
            self.flush(slot);
        }
    }

    /// Sends a request ([`Endpoint::request`]), opening a connection to `peer` if there is
    /// none, and writes what it can at once (unless [corked](Self::cork)).
    /// [`Error::QueueFull`] when the connection's unwritten bytes are beyond
    /// [`Limits::max_unwritten_bytes`](coap_engine::Limits::max_unwritten_bytes) (the peer
    /// does not read fast enough) or the session's request queue is full.
    ///
    /// ```
    /// use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// let id = driver.request("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request(&mut self, peer: SocketAddr, request: &Packet) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.request(now, peer, request);
        self.drive();
        id
    }

    /// Answers an incoming request ([`Endpoint::respond`]), now or later, and writes it.
    /// [`Error::QueueFull`] when the client does not read fast enough (see
    /// [`request`](Self::request)): the request stays unanswered, so try again later.
    ///
    /// ```no_run
    /// # use coap_engine::{Config, Transport, Event, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::bind("127.0.0.1:0".parse().unwrap(), tcp)?;
    /// if let Some(Event::Request { id, .. }) = driver.poll_event() {
    ///     let mut response = Packet::new();
    ///     response.header.code = MessageClass::Response(ResponseType::Content);
    ///     driver.respond(id, &response).unwrap();
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn respond(&mut self, id: IncomingRequestId, response: &Packet) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.respond(now, id, response);
        self.drive();
        result
    }

    /// Sends a 7.02 Ping ([`Endpoint::ping`]), opening a connection if there is none; the
    /// 7.03 Pong arrives as [`Event::Pong`].
    ///
    /// ```
    /// # use coap_engine::{Config, Transport};
    /// # let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let ping = driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ping(&mut self, peer: SocketAddr) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.ping(now, peer);
        self.drive();
        id
    }

    /// Observes a resource (RFC 7641, [`Endpoint::observe`]): sends `request` (a GET or
    /// FETCH) with Observe = 0, on the connection with `peer` (opened first if there is none),
    /// written at once unless [corked](Self::cork). Each fresh
    /// notification, the first response included, arrives as [`Event::Notification`] with
    /// the returned id; the observation ends with one [`Event::Response`] (the final
    /// response, or the answer to [`deregister_observation`](Self::deregister_observation))
    /// or [`Event::RequestFailed`].
    ///
    /// ```
    /// use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// get.add_option(CoapOption::UriPath, b"time".to_vec());
    /// let observation = driver.observe("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn observe(&mut self, peer: SocketAddr, request: &Packet) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.observe(now, peer, request);
        self.drive();
        id
    }

    /// Ends observation `id` by deregistering ([`Endpoint::deregister`], RFC 7641 §3.6: a
    /// GET with Observe = 1), written as [`request`](Self::request)'s is; its terminal
    /// event is the server's answer. [`Error::QueueFull`] while the peer does not read
    /// what is already written. (Named apart from [`deregister`](Self::deregister), which
    /// takes the sockets out of a `mio::Registry`.)
    ///
    /// ```
    /// # use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// # let mut get = Packet::new();
    /// # get.header.code = MessageClass::Request(RequestType::Get);
    /// let observation = driver.observe("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// driver.deregister_observation(observation).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister_observation(&mut self, id: RequestId) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.deregister(now, id);
        self.drive();
        result
    }

    /// Cancels one of our requests, pings or observations ([`Endpoint::cancel`]): it ends
    /// with [`ExchangeError::Cancelled`](coap_engine::ExchangeError::Cancelled), and a late
    /// response or notification is ignored (a connection has no Reset).
    ///
    /// ```
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let ping = driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.cancel(ping).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cancel(&mut self, id: RequestId) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.cancel(now, id);
        self.drive();
        result
    }

    /// Answers a registration and adds its sender as an observer of `resource`
    /// ([`Endpoint::respond_observe`]); returns whether the observer was added. Written as
    /// [`respond`](Self::respond)'s answer is, with the same [`Error::QueueFull`].
    ///
    /// ```no_run
    /// # use coap_engine::{Event, ResourceId, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// if let Some(Event::Request { id, .. }) = driver.poll_event() {
    ///     let mut response = Packet::new();
    ///     response.header.code = MessageClass::Response(ResponseType::Content);
    ///     let added = driver.respond_observe(id, ResourceId(1), &response).unwrap();
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn respond_observe(
        &mut self,
        id: IncomingRequestId,
        resource: ResourceId,
        response: &Packet,
    ) -> Result<bool, Error> {
        let now = self.now();
        let result = self.endpoint.respond_observe(now, id, resource, response);
        self.drive();
        result
    }

    /// Sends `notification` to every observer of `resource` ([`Endpoint::notify`]) and
    /// returns how many there were, writing to each observer's connection (coalesced while
    /// [corked](Self::cork)). RFC 8323 has no message types: `confirmable` changes nothing
    /// on the wire.
    ///
    /// ```
    /// # use coap_engine::{ResourceId, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let mut state = Packet::new();
    /// state.header.code = MessageClass::Response(ResponseType::Content);
    /// state.payload = b"22.5".to_vec();
    /// assert_eq!(driver.notify(ResourceId(1), &state, false).unwrap(), 0); // nobody observes yet
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn notify(
        &mut self,
        resource: ResourceId,
        notification: &Packet,
        confirmable: bool,
    ) -> Result<usize, Error> {
        let now = self.now();
        let result = self
            .endpoint
            .notify(now, resource, notification, confirmable);
        self.drive();
        result
    }

    /// How many clients observe `resource` ([`Endpoint::observers`]).
    ///
    /// ```
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// assert_eq!(driver.observers(coap_engine::ResourceId(1)), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn observers(&self, resource: ResourceId) -> usize {
        self.endpoint.observers(resource)
    }

    /// Opens a session with `peer` without sending anything, so that keepalive watches it
    /// ([`Endpoint::open_session`]): opens the connection.
    ///
    /// ```
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// driver.open_session("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open_session(&mut self, peer: SocketAddr) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.open_session(now, peer);
        self.drive();
        result
    }

    /// Closes the session with `peer` ([`Endpoint::close_session`]) with a 7.04 Release,
    /// then the connection; its pending exchanges
    /// end with [`ExchangeError::SessionClosed`](coap_engine::ExchangeError::SessionClosed).
    ///
    /// ```
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let peer = "127.0.0.1:5683".parse().unwrap();
    /// driver.open_session(peer).unwrap();
    /// driver.close_session(peer).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close_session(&mut self, peer: SocketAddr) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.close_session(now, peer);
        self.drive();
        result
    }

    /// Sets (or with `None` clears) the keepalive of the session with `peer`
    /// ([`Endpoint::set_keepalive`]).
    ///
    /// ```
    /// use coap_engine::{Duration, Keepalive};
    /// # let tcp = coap_engine::Config { transport: coap_engine::Transport::Tcp, ..Default::default() };
    /// # let mut driver = coap_engine_mio::StreamDriver::new(tcp)?;
    /// let peer = "127.0.0.1:5683".parse().unwrap();
    /// driver.open_session(peer).unwrap();
    /// let keepalive = Keepalive { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) };
    /// driver.set_keepalive(peer, Some(keepalive)).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_keepalive(
        &mut self,
        peer: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.set_keepalive(now, peer, keepalive);
        self.drive();
        result
    }

    /// Runs a blocking loop on a private `mio::Poll` until the handler breaks (or `poll`
    /// fails), handing it every engine event. What the handler's calls write goes out once
    /// it has had every event waiting. A registration in the caller's poll is suspended meanwhile and restored on return.
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// use coap_engine::{Config, Event, Transport};
    /// use coap_engine_mio::StreamDriver;
    /// let tcp = Config { transport: Transport::Tcp, ..Config::default() };
    /// let mut driver = StreamDriver::new(tcp)?;
    /// driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.run(&mut |_: &mut StreamDriver, event: Event| match event {
    ///     Event::Pong { rtt, .. } => { println!("pong after {rtt:?}"); ControlFlow::Break(()) }
    ///     Event::PingFailed { error, .. } => { eprintln!("{error}"); ControlFlow::Break(()) }
    ///     _ => ControlFlow::Continue(()),
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run<H: StreamHandler + ?Sized>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(256);
        let previous = match self.registration.as_ref() {
            Some(r) => Some((r.registry.try_clone()?, r.tokens.clone())),
            None => None,
        };
        self.register(poll.registry(), RUN_TOKENS)?;
        self.drive();
        let result = loop {
            let wake = match handler.on_tick(self) {
                ControlFlow::Break(()) => break Ok(()),
                ControlFlow::Continue(wake) => wake,
            };
            self.drive();
            match self.dispatch(handler) {
                ControlFlow::Break(()) => break Ok(()),
                // The handler may have scheduled work: tick again before sleeping.
                ControlFlow::Continue(true) => continue,
                ControlFlow::Continue(false) => {}
            }
            let app = wake.map(|w| w.saturating_duration_since(StdInstant::now()));
            let timeout = match (self.next_timeout(), app) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                break Err(e);
            }
            for event in events.iter() {
                self.handle_event(event);
            }
            self.handle_timeout();
        };
        self.deregister()?;
        if let Some((registry, tokens)) = previous {
            self.register(&registry, tokens)?;
        }
        result
    }

    /// Hands every queued event to the handler; `Continue(true)` if there was any.
    fn dispatch<H: StreamHandler + ?Sized>(&mut self, handler: &mut H) -> ControlFlow<(), bool> {
        let mut any = false;
        self.cork();
        while let Some(event) = self.poll_event() {
            any = true;
            if let ControlFlow::Break(()) = handler.on_event(self, event) {
                self.uncork();
                return ControlFlow::Break(());
            }
            self.drive();
        }
        self.uncork();
        ControlFlow::Continue(any)
    }

    // ------------------------------------------------------------------------ connections

    fn connection(&self, slot: usize) -> Option<&Connection> {
        self.connections.get(slot).and_then(Option::as_ref)
    }

    fn connection_mut(&mut self, slot: usize) -> Option<&mut Connection> {
        self.connections.get_mut(slot).and_then(Option::as_mut)
    }

    /// Whether `slot` carries the engine's session with its peer.
    fn is_live(&self, slot: usize) -> bool {
        self.connection(slot)
            .is_some_and(|c| self.by_peer.get(&c.peer) == Some(&slot))
    }

    /// Takes a slot for `stream`, registered if the driver is; gives the stream back if
    /// the token range is used up or registering fails.
    fn insert(&mut self, mut stream: TcpStream, peer: SocketAddr, state: State) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.connections.len(),
        };
        if let Some(r) = &self.registration {
            let capacity = r.tokens.end.0 - r.tokens.start.0 - 1;
            if slot >= capacity {
                if slot < self.connections.len() {
                    self.free.push(slot);
                }
                log::warn!("{peer}: no token left for another connection; refused");
                return None;
            }
            let token = Token(r.tokens.start.0 + 1 + slot);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = r.registry.register(&mut stream, token, interest) {
                if slot < self.connections.len() {
                    self.free.push(slot);
                }
                log::warn!("{peer}: cannot register the connection: {e}");
                return None;
            }
        }
        let deadline = match state {
            State::Connecting => Some(StdInstant::now() + self.connect_timeout),
            _ => None,
        };
        if let Some(d) = deadline {
            self.deadlines.insert((d, slot));
        }
        let connection = Connection {
            stream,
            peer,
            state,
            deadline,
            queue: VecDeque::new(),
            offset: 0,
            queued: 0,
            write_blocked: false,
            dirty: false,
            read_pending: false,
            paused: false,
        };
        if slot == self.connections.len() {
            self.connections.push(Some(connection));
        } else {
            self.connections[slot] = Some(connection);
        }
        Some(slot)
    }

    /// Drops a connection: its pending writes are reported failed with `kind`, after
    /// `report` if the engine should hear of it (only given for the live connection).
    fn discard(&mut self, slot: usize, report: Option<Input>, kind: SendErrorKind) {
        let live = self.is_live(slot);
        let Some(mut c) = self.connections.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if live {
            self.by_peer.remove(&c.peer);
            if let Some(input) = report {
                self.inputs.push_back(input);
            }
        }
        if let Some(d) = c.deadline {
            self.deadlines.remove(&(d, slot));
        }
        if let Some(r) = &self.registration {
            // Closing the socket removes it from epoll anyway; this keeps other pollers tidy.
            let _ = r.registry.deregister(&mut c.stream);
        }
        for t in c.queue.drain(..) {
            self.inputs.push_back(Input::Sent(t.id, Err(kind)));
        }
        self.free.push(slot);
    }

    fn set_deadline(&mut self, slot: usize, deadline: Option<StdInstant>) {
        let Some(c) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Some(d) = c.deadline {
            self.deadlines.remove(&(d, slot));
        }
        c.deadline = deadline;
        if let Some(d) = deadline {
            self.deadlines.insert((d, slot));
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.connection_mut(slot) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn mark_readable(&mut self, slot: usize) {
        if let Some(c) = self.connection_mut(slot) {
            if !c.read_pending {
                c.read_pending = true;
                self.reads.push(slot);
            }
        }
    }

    /// A write from the engine, queued on its peer's connection.
    fn enqueue(&mut self, t: Transmit) {
        let Some(&slot) = self.by_peer.get(&t.destination) else {
            log::debug!("write to {} with no connection; failed", t.destination);
            self.inputs
                .push_back(Input::Sent(t.id, Err(SendErrorKind::Other)));
            return;
        };
        if let Some(c) = self.connection_mut(slot) {
            c.queued += t.payload.len();
            c.queue.push_back(t);
        }
        self.mark_dirty(slot);
    }

    fn connect(&mut self, peer: SocketAddr) {
        if let Some(&old) = self.by_peer.get(&peer) {
            // The engine has no session with `peer` when it asks, so this one is stale.
            self.discard(old, None, SendErrorKind::Other);
        }
        let stream = match TcpStream::connect(peer) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("connect to {peer} failed: {e}");
                self.inputs
                    .push_back(Input::ConnectFailed(peer, kind_of(&e)));
                return;
            }
        };
        match self.insert(stream, peer, State::Connecting) {
            Some(slot) => {
                self.by_peer.insert(peer, slot);
            }
            None => self
                .inputs
                .push_back(Input::ConnectFailed(peer, SendErrorKind::Other)),
        }
    }

    fn close(&mut self, peer: SocketAddr) {
        let Some(slot) = self.by_peer.remove(&peer) else {
            return; // already gone (broken, or never opened)
        };
        let connecting = self
            .connection(slot)
            .is_some_and(|c| c.state == State::Connecting);
        if connecting {
            self.discard(slot, None, SendErrorKind::Other);
            return;
        }
        if let Some(c) = self.connection_mut(slot) {
            c.state = State::Closing {
                shut: false,
                eof: false,
            };
            c.paused = false;
        }
        self.set_deadline(slot, Some(StdInstant::now() + CLOSE_LINGER));
        self.mark_dirty(slot);
        // What the peer still sends is read and dropped, so that closing sends a FIN and
        // not a reset.
        self.mark_readable(slot);
    }

    /// A connect or close deadline passed.
    fn expire(&mut self, slot: usize) {
        let Some(c) = self.connection_mut(slot) else {
            return;
        };
        c.deadline = None;
        match c.state {
            State::Connecting => {
                let peer = c.peer;
                log::debug!("connect to {peer} timed out");
                let failed = Input::ConnectFailed(peer, SendErrorKind::TimedOut);
                self.discard(slot, Some(failed), SendErrorKind::TimedOut);
            }
            State::Closing { .. } => {
                log::debug!("{}: connection not closed in time; dropped", c.peer);
                self.discard(slot, None, SendErrorKind::Other);
            }
            State::Open => {}
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                self.accept_pending = false;
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.accepted(stream, peer),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                // The peer gave up before we accepted: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: the connections wait in the backlog.
                    log::warn!("accept failed: {e}; trying again shortly");
                    self.accept_pending = false;
                    self.accept_retry = Some(StdInstant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    fn accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        // Small messages answered by small messages: Nagle's algorithm would hold them back.
        let _ = stream.set_nodelay(true);
        if let Some(&old) = self.by_peer.get(&peer) {
            // The engine ends the old session itself when it hears of the new connection.
            self.discard(old, None, SendErrorKind::Other);
        }
        let Some(slot) = self.insert(stream, peer, State::Open) else {
            return;
        };
        self.by_peer.insert(peer, slot);
        let now = self.now();
        if let Err(e) = self.endpoint.handle_accepted(now, peer) {
            log::debug!("{peer}: connection refused by the endpoint: {e}");
            self.discard(slot, None, SendErrorKind::Other);
        }
        self.drive();
        // Bytes may have arrived before the socket was registered.
        self.mark_readable(slot);
    }

    fn connection_ready(&mut self, slot: usize, event: &mio::event::Event) {
        let Some(c) = self.connection_mut(slot) else {
            return; // a stale event for a connection already dropped
        };
        if c.state == State::Connecting {
            self.check_connect(slot);
            return;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            c.write_blocked = false;
            self.mark_dirty(slot);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // Writes first: reading may hand the engine requests whose answers queue behind.
            self.drive();
            self.read(slot);
        }
    }

    /// Whether a non-blocking connect has finished, and how (mio's recipe: a pending socket
    /// error, else whether the socket has a peer yet).
    fn check_connect(&mut self, slot: usize) {
        let Some(c) = self.connection_mut(slot) else {
            return;
        };
        let result = match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match c.stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotConnected => return, // not yet
                Err(e) => Err(e),
            },
        };
        let peer = c.peer;
        match result {
            Ok(()) => {
                // Small messages answered by small messages: Nagle's algorithm would hold
                // them back.
                let _ = c.stream.set_nodelay(true);
                c.state = State::Open;
                self.set_deadline(slot, None);
                self.inputs.push_back(Input::Connected(peer));
                self.mark_dirty(slot);
                self.mark_readable(slot);
            }
            Err(e) => {
                log::debug!("connect to {peer} failed: {e}");
                let failed = Input::ConnectFailed(peer, kind_of(&e));
                self.discard(slot, Some(failed), kind_of(&e));
            }
        }
    }

    /// Writes what is queued on `slot` until done or `WouldBlock`, reporting every write the
    /// kernel took in full.
    fn flush(&mut self, slot: usize) {
        let Some(c) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.state == State::Connecting {
            return;
        }
        let mut broken = None;
        while !c.write_blocked && !c.queue.is_empty() {
            // `send` rather than `writev`: std's `write` passes MSG_NOSIGNAL, so a peer gone
            // away is an EPIPE here and never a SIGPIPE for a process that did not ignore it.
            let bytes: &[u8] = if c.queue.len() == 1 || c.queue[0].payload.len() >= COALESCE {
                &c.queue[0].payload[c.offset..]
            } else {
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(&c.queue[0].payload[c.offset..]);
                for t in c.queue.iter().skip(1) {
                    if self.scratch.len() + t.payload.len() > COALESCE {
                        break;
                    }
                    self.scratch.extend_from_slice(&t.payload);
                }
                &self.scratch
            };
            match c.stream.write(bytes) {
                Ok(0) => {
                    broken = Some(io::Error::from(ErrorKind::WriteZero));
                    break;
                }
                Ok(mut n) => {
                    while n > 0 {
                        let Some(front) = c.queue.front() else { break };
                        let left = front.payload.len() - c.offset;
                        if n < left {
                            c.offset += n;
                            c.queued -= n;
                            break;
                        }
                        n -= left;
                        c.queued -= left;
                        c.offset = 0;
                        if let Some(t) = c.queue.pop_front() {
                            self.inputs.push_back(Input::Sent(t.id, Ok(())));
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => c.write_blocked = true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if self.scratch.capacity() > COALESCE {
            self.scratch = Vec::new();
        }
        if let Some(e) = broken {
            self.write_failed(slot, e);
            return;
        }
        let Some(c) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let State::Closing { shut: false, eof } = c.state {
            if c.queue.is_empty() {
                let shut = c.stream.shutdown(Shutdown::Write);
                c.state = State::Closing { shut: true, eof };
                if shut.is_err() || eof {
                    self.discard(slot, None, SendErrorKind::Other);
                }
            }
            return;
        }
        if c.paused && c.queued <= self.read_pause {
            c.paused = false;
            self.mark_readable(slot);
        }
    }

    fn write_failed(&mut self, slot: usize, e: io::Error) {
        let Some(c) = self.connection(slot) else {
            return;
        };
        let peer = c.peer;
        log::debug!("write to {peer} failed: {e}");
        let kind = kind_of(&e);
        if !self.is_live(slot) {
            self.discard(slot, None, kind);
        } else if is_reset(&e) {
            self.discard(slot, Some(Input::Closed(peer, StreamClosed::Reset)), kind);
        } else {
            // The first write's failure ends the session (WriteFailed); the engine then asks
            // for a close, which finds the connection gone.
            if let Some(t) = self.connection_mut(slot).and_then(|c| c.queue.pop_front()) {
                self.inputs.push_back(Input::Sent(t.id, Err(kind)));
            }
            self.discard(slot, None, kind);
        }
    }

    /// Reads `slot` until `WouldBlock`, within the read budget, handing the bytes to the
    /// engine (or dropping them on a connection being closed).
    fn read(&mut self, slot: usize) {
        for _ in 0..READ_BUDGET {
            let live = self.is_live(slot);
            let Some(c) = self.connections.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if c.state == State::Connecting {
                c.read_pending = false;
                return;
            }
            if live && c.queued > self.read_pause {
                c.paused = true;
                c.read_pending = false;
                return;
            }
            let peer = c.peer;
            let outcome = c.stream.read(&mut self.buf);
            match outcome {
                Ok(0) => {
                    c.read_pending = false;
                    if live {
                        let closed = Input::Closed(peer, StreamClosed::Eof);
                        self.discard(slot, Some(closed), SendErrorKind::Other);
                    } else if let State::Closing { shut, .. } = c.state {
                        if shut {
                            self.discard(slot, None, SendErrorKind::Other);
                        } else {
                            // Our FIN still has to follow what is queued.
                            c.state = State::Closing { shut, eof: true };
                        }
                    }
                    self.drive();
                    return;
                }
                Ok(n) => {
                    if live {
                        let now = self.now();
                        self.endpoint.handle_datagram(now, peer, &self.buf[..n]);
                        self.drive();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.read_pending = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    c.read_pending = false;
                    log::debug!("read from {peer} failed: {e}");
                    let closed = Input::Closed(peer, StreamClosed::Reset);
                    self.discard(slot, Some(closed), kind_of(&e));
                    self.drive();
                    return;
                }
            }
        }
        // Budget spent: the rest on the next turn, after the other connections.
        if let Some(c) = self.connection_mut(slot) {
            c.read_pending = false;
        }
        self.mark_readable(slot);
    }
}
