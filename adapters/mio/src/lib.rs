#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # coap-engine-mio
//!
//! Drives a sans-IO [`coap_engine::Endpoint`] from mio: it reads the clock, moves the bytes,
//! arms the timers and reports every I/O outcome back to the engine. All protocol logic
//! stays in `coap-engine`.
//!
//! - [`Driver`]: CoAP over UDP (`coap://`) and, with feature `dtls`, over DTLS
//!   (`coaps://`), on one non-blocking [`mio::net::UdpSocket`]. Described below.
//! - [`StreamDriver`]: CoAP over TCP (`coap+tcp://`, RFC 8323) and, with feature `tls`,
//!   over TLS (`coaps+tcp://`), on non-blocking TCP connections, as client and server. See
//!   the [`stream`] module.
//!
//! - [`reuseport`]: several drivers on one address, one per thread, the kernel keeping each
//!   peer on one of them ([`Driver::bind_reuseport`], [`StreamDriver::bind_reuseport`]).
//!
//! `security_entropy()` (feature `dtls` or `tls`) seeds either security layer from the
//! operating system's random number generator.
//!
//! Both drivers wrap every application call of the engine and send what it produces:
//! [`request`](Driver::request), [`respond`](Driver::respond), [`ping`](Driver::ping),
//! [`cancel`](Driver::cancel); observe (RFC 7641) as a client with
//! [`observe`](Driver::observe) and [`deregister_observation`](Driver::deregister_observation)
//! (notifications arrive as [`Event::Notification`]), and as a server with
//! [`respond_observe`](Driver::respond_observe), [`notify`](Driver::notify) and
//! [`observers`](Driver::observers) (observers leave with [`Event::ObserverRemoved`]);
//! sessions with [`open_session`](Driver::open_session),
//! [`close_session`](Driver::close_session) and [`set_keepalive`](Driver::set_keepalive).
//!
//! Two ways to use a [`Driver`]:
//!
//! - **In your own `mio::Poll`**: [`Driver::register`] it with a [`Token`] you choose, pass
//!   its readiness events to [`Driver::handle_event`], call [`Driver::handle_timeout`] every
//!   time `poll` returns, use [`Driver::next_timeout`] in your poll timeout, and drain
//!   [`Driver::poll_event`].
//! - **A blocking loop**: [`Driver::run`] with a [`Handler`] (a closure is one).
//!
//! Send outcomes become [`Endpoint::handle_send_result`] inputs: `ENETUNREACH`,
//! `EHOSTUNREACH`, `ENETDOWN` → [`SendErrorKind::Unreachable`]; `ECONNREFUSED` →
//! [`SendErrorKind::Refused`]; `EMSGSIZE` → [`SendErrorKind::TooBig`]; `WouldBlock` keeps the
//! transmit and retries it once the socket is writable; anything else →
//! [`SendErrorKind::Other`].
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
//! use coap_engine::{Config, Event};
//! use coap_engine_mio::Driver;
//!
//! let mut server = Driver::bind("127.0.0.1:5683".parse().unwrap(), Config::default())?;
//! server.run(&mut |driver: &mut Driver, event: Event| {
//!     if let Event::Request { id, .. } = event {
//!         let mut response = Packet::new();
//!         response.header.code = MessageClass::Response(ResponseType::Content);
//!         response.payload = b"hello".to_vec();
//!         let _ = driver.respond(id, &response);
//!     }
//!     ControlFlow::Continue(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## `coaps://` (feature `dtls`)
//!
//! A secure endpoint is a driver whose `Config::security` holds the engine's DTLS layer,
//! seeded with `dtls_entropy()`; requests, responses and events are the same as on a plain
//! one, and the socket is the CoAPS port (5684). The driver gives the engine the wall-clock
//! time when it starts ([`Driver::from_parts`]), so certificate validity periods are checked
//! without further setup. A pre-shared-key server and a client of it:
//!
//! ```no_run
//! # #[cfg(feature = "dtls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use std::ops::ControlFlow;
//! use std::sync::Arc;
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
//! use coap_engine::{Config, Event, Security};
//! use coap_engine_mio::{dtls_entropy, Driver};
//!
//! // Server: the key of every PSK identity it accepts.
//! let mut keys = BTreeMap::new();
//! keys.insert(b"sensor-1".to_vec(), b"secret-key".to_vec());
//! let dtls = DtlsConfig { psk_store: Some(Arc::new(keys)), ..DtlsConfig::default() };
//! let security = Security::new(Dtls::new(dtls, dtls_entropy())?);
//! let config = Config { security: Some(security), ..Config::default() };
//! let mut server = Driver::bind("127.0.0.1:5684".parse()?, config)?;
//! std::thread::spawn(move || {
//!     server.run(&mut |driver: &mut Driver, event: Event| {
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
//! // Client: its identity and key; the handshake starts with the first request.
//! let psk = PskCredentials { identity: b"sensor-1".to_vec(), key: b"secret-key".to_vec() };
//! let dtls = DtlsConfig { psk: Some(psk), ..DtlsConfig::default() };
//! let security = Security::new(Dtls::new(dtls, dtls_entropy())?);
//! let config = Config { security: Some(security), ..Config::default() };
//! let mut client = Driver::bind("127.0.0.1:0".parse()?, config)?;
//! let mut get = Packet::new();
//! get.header.code = MessageClass::Request(RequestType::Get);
//! client.request("127.0.0.1:5684".parse()?, &get)?;
//! client.run(&mut |_: &mut Driver, event: Event| match event {
//!     Event::Response { response, .. } => {
//!         println!("{}", String::from_utf8_lossy(&response.payload));
//!         ControlFlow::Break(())
//!     }
//!     // A refused key or certificate ends here too: `SessionFailed(Security(..))`.
//!     Event::RequestFailed { error, .. } => {
//!         eprintln!("{error}");
//!         ControlFlow::Break(())
//!     }
//!     _ => ControlFlow::Continue(()),
//! })?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "dtls"))]
//! # fn main() {}
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration as StdDuration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

pub use coap_engine;
pub use mio;

mod batch;
pub mod reuseport;
pub mod stream;
pub use stream::{StreamDriver, StreamHandler};

use batch::{BatchIo, BATCH};

use coap_engine::coap_lite::Packet;
use coap_engine::{
    Config, Endpoint, Error, Event, IncomingRequestId, Instant, Keepalive, RequestId, ResourceId,
    SendErrorKind, Transmit,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token};

/// Datagrams read per readiness before the driver yields (the rest are read on the next
/// [`Driver::handle_timeout`], which [`Driver::next_timeout`] then asks for at once).
const READ_BUDGET: usize = 256;

/// What to do with one outgoing datagram; returned by a [`Driver::set_send_filter`] hook.
///
/// ```
/// use coap_engine::SendErrorKind;
/// use coap_engine_mio::SendAction;
/// let fail = SendAction::Fail(SendErrorKind::Unreachable);
/// assert_ne!(fail, SendAction::Send);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendAction {
    /// Send it normally.
    Send,
    /// Drop it silently, as if lost on the wire (the engine hears nothing about it).
    Drop,
    /// Do not send it, and report this failure to the engine as the send's result.
    Fail(SendErrorKind),
}

type SendFilter = Box<dyn FnMut(&Transmit) -> SendAction + Send>;

/// A CoAP endpoint on a non-blocking mio UDP socket. See the [crate docs](crate).
pub struct Driver {
    socket: UdpSocket,
    endpoint: Endpoint,
    epoch: StdInstant,
    /// Transmits taken from the engine and not yet sent: the next send batch.
    out: Vec<Transmit>,
    /// The socket answered `WouldBlock` to `out[0]`; the rest waits until it is writable.
    blocked: bool,
    registration: Option<(Registry, Token)>,
    writable_interest: bool,
    read_pending: bool,
    filter: Option<SendFilter>,
    io: BatchIo,
}

/// Application logic for [`Driver::run`]. Any `FnMut(&mut Driver, Event) -> ControlFlow<()>`
/// closure is a handler.
///
/// ```
/// use std::ops::ControlFlow;
/// use coap_engine::Event;
/// use coap_engine_mio::{Driver, Handler};
///
/// struct StopOnPong;
/// impl Handler for StopOnPong {
///     fn on_event(&mut self, _: &mut Driver, event: Event) -> ControlFlow<()> {
///         match event {
///             Event::Pong { .. } => ControlFlow::Break(()),
///             _ => ControlFlow::Continue(()),
///         }
///     }
/// }
/// ```
pub trait Handler {
    /// One engine event; respond or make requests through `driver`. `Break` ends the loop.
    fn on_event(&mut self, driver: &mut Driver, event: Event) -> ControlFlow<()>;

    /// Called once per loop turn, before sleeping: do timed application work and return when
    /// to be called again (`Continue(None)`: only after I/O or an engine deadline).
    /// `Break` ends the loop. The default does nothing.
    fn on_tick(&mut self, driver: &mut Driver) -> ControlFlow<(), Option<StdInstant>> {
        let _ = driver;
        ControlFlow::Continue(None)
    }
}

impl<F: FnMut(&mut Driver, Event) -> ControlFlow<()>> Handler for F {
    fn on_event(&mut self, driver: &mut Driver, event: Event) -> ControlFlow<()> {
        self(driver, event)
    }
}

/// A seed for [`Endpoint::new`] from std's per-process random hash keys and the clock.
///
/// ```
/// let a = coap_engine_mio::random_seed();
/// let b = coap_engine_mio::random_seed();
/// assert_ne!(a, b);
/// ```
pub fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// 32 bytes from the operating system's random number generator, for a security layer:
/// [`Dtls::new`](coap_engine::dtls::Dtls::new) (feature `dtls`) or
/// [`Tls::new`](coap_engine::tls::Tls::new) (feature `tls`). Every key, random and cookie
/// of the layer derives from them, so call this once per layer and never reuse the value.
///
/// # Panics
///
/// If the operating system has no random number generator to offer (`getrandom` fails):
/// without one no key can be made, and there is nothing safe to fall back to.
///
/// ```
/// let entropy = coap_engine_mio::security_entropy();
/// assert_ne!(entropy, coap_engine_mio::security_entropy());
/// ```
#[cfg(any(feature = "dtls", feature = "tls"))]
pub fn security_entropy() -> [u8; 32] {
    let mut bytes = [0; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    bytes
}

/// The same as [`security_entropy`], under the name it had when DTLS was the only security
/// layer: 32 bytes from the operating system's random number generator for
/// [`Dtls::new`](coap_engine::dtls::Dtls::new).
///
/// # Panics
///
/// As [`security_entropy`]: if the operating system has no random number generator.
///
/// ```
/// let entropy = coap_engine_mio::dtls_entropy();
/// assert_ne!(entropy, coap_engine_mio::dtls_entropy());
/// ```
#[cfg(feature = "dtls")]
pub fn dtls_entropy() -> [u8; 32] {
    security_entropy()
}

/// Seconds since 1970 by the system clock; `None` for a clock set before 1970, which would
/// only make every certificate look not yet valid.
pub(crate) fn unix_time() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

impl Driver {
    /// Binds a UDP socket on `addr` (IPv4 or IPv6; port 0 picks a free one) with an endpoint
    /// seeded from [`random_seed`], as [`from_parts`](Self::from_parts) does.
    ///
    /// ```
    /// let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert_ne!(driver.local_addr()?.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let endpoint = Endpoint::new(config, random_seed())
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Self::from_parts(UdpSocket::bind(addr)?, endpoint))
    }

    /// Like [`bind`](Self::bind), with `SO_REUSEPORT`: one more driver of a group on `addr`,
    /// for serving from several threads, each with a driver of its own. The kernel keeps
    /// each peer on one driver of the group while the group's sockets stay the same. Bind
    /// the first with the port you want (or port 0, then the others with the port it got).
    /// [`ErrorKind::Unsupported`] except on Linux and Android. See [`reuseport`].
    ///
    /// ```
    /// # if !cfg!(any(target_os = "linux", target_os = "android")) { return Ok(()) }
    /// use coap_engine_mio::Driver;
    /// let first = Driver::bind_reuseport("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let second = Driver::bind_reuseport(first.local_addr()?, Default::default())?;
    /// assert_eq!(first.local_addr()?, second.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_reuseport(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let endpoint = Endpoint::new(config, random_seed())
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Self::from_parts(reuseport::udp_socket(addr)?, endpoint))
    }

    /// Wraps an existing non-blocking socket and endpoint (e.g. one with a fixed seed).
    ///
    /// Tells the endpoint the wall-clock time ([`Endpoint::set_unix_time`]), which a secure
    /// endpoint needs to check certificates' validity periods and a plain one ignores.
    ///
    /// ```
    /// use coap_engine::{Config, Endpoint};
    /// use coap_engine_mio::{mio::net::UdpSocket, Driver};
    /// let socket = UdpSocket::bind("[::1]:0".parse().unwrap());
    /// # let Ok(socket) = socket else { return Ok(()) }; // no IPv6 here
    /// let driver = Driver::from_parts(socket, Endpoint::new(Config::default(), 7).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_parts(socket: UdpSocket, mut endpoint: Endpoint) -> Self {
        let epoch = StdInstant::now();
        if let Some(secs) = unix_time() {
            endpoint.set_unix_time(Instant::ZERO, secs);
        }
        Driver {
            socket,
            endpoint,
            epoch,
            out: Vec::with_capacity(BATCH),
            blocked: false,
            registration: None,
            writable_interest: false,
            read_pending: false,
            filter: None,
            io: BatchIo::new(),
        }
    }

    /// Turns batched datagram I/O on or off. On Linux and Android it is on by default: the
    /// driver receives with `recvmmsg` and sends with `sendmmsg`, up to 32 datagrams per
    /// system call (and [`run`](Self::run) sends what one turn of its loop produced
    /// together). Off, or on other systems, every datagram costs one `recv_from` or
    /// `send_to`. Either way every send's outcome is reported to the engine.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.set_batching(false);
    /// assert!(!driver.batching());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_batching(&mut self, on: bool) {
        self.io.set_batched(on);
    }

    /// Whether datagram I/O is batched (see [`set_batching`](Self::set_batching)).
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert_eq!(driver.batching(), cfg!(target_os = "linux"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn batching(&self) -> bool {
        self.io.is_batched()
    }

    /// The socket's local address.
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// println!("listening on {}", driver.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The engine's current time (microseconds since this driver was created).
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert!(driver.now() >= coap_engine::Instant::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The engine, for inspection.
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert_eq!(driver.endpoint().session_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The engine, for calls without a wrapper here (`cancel`, `open_session`,
    /// `set_keepalive`, ...). Pass [`now`](Self::now), then call [`drive`](Self::drive).
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let now = driver.now();
    /// driver.endpoint_mut().open_session(now, "127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.drive();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    /// Installs a hook consulted for every outgoing datagram: send it, drop it, or fail it
    /// with a chosen kind (loss and failure injection, like libcoap's `-l`).
    ///
    /// ```
    /// use coap_engine::SendErrorKind;
    /// use coap_engine_mio::SendAction;
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.set_send_filter(|_t| SendAction::Fail(SendErrorKind::Unreachable));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_send_filter(
        &mut self,
        filter: impl FnMut(&Transmit) -> SendAction + Send + 'static,
    ) {
        self.filter = Some(Box::new(filter));
    }

    /// Registers the socket in `registry` under `token` (readable; writable is added only
    /// while a send is blocked).
    ///
    /// ```
    /// use coap_engine_mio::mio::{Poll, Token};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let poll = Poll::new()?;
    /// driver.register(poll.registry(), Token(7))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = self.interest();
        registry.register(&mut self.socket, token, interest)?;
        self.writable_interest = self.blocked;
        self.registration = Some((registry.try_clone()?, token));
        Ok(())
    }

    /// Removes the socket from the registry it was registered in.
    ///
    /// ```
    /// # use coap_engine_mio::mio::{Poll, Token};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// # let poll = Poll::new()?;
    /// driver.register(poll.registry(), Token(7))?;
    /// driver.deregister()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister(&mut self) -> io::Result<()> {
        match self.registration.take() {
            Some((registry, _)) => registry.deregister(&mut self.socket),
            None => Ok(()),
        }
    }

    /// How long the user's `Poll::poll` may sleep: until the engine's deadline, zero while
    /// work is left over, `None` for no deadline.
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert_eq!(driver.next_timeout(), None); // an idle endpoint has no deadline
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn next_timeout(&self) -> Option<StdDuration> {
        if self.read_pending || (self.blocked && self.registration.is_none()) {
            return Some(StdDuration::ZERO);
        }
        if !self.blocked && (self.endpoint.has_transmits() || !self.out.is_empty()) {
            return Some(StdDuration::ZERO);
        }
        let deadline = self.endpoint.poll_timeout()?;
        Some(StdDuration::from_micros(
            deadline.as_micros().saturating_sub(self.now().as_micros()),
        ))
    }

    /// Handles a mio readiness event for this driver's token: reads every waiting datagram
    /// (until `WouldBlock`, within a budget), retries a blocked send when writable, and
    /// sends what the engine produced. Then drain [`poll_event`](Self::poll_event).
    ///
    /// ```no_run
    /// # use coap_engine_mio::mio::{Events, Poll, Token};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// # let mut poll = Poll::new()?;
    /// # driver.register(poll.registry(), Token(7))?;
    /// let mut events = Events::with_capacity(64);
    /// loop {
    ///     poll.poll(&mut events, driver.next_timeout())?;
    ///     for event in events.iter().filter(|e| e.token() == Token(7)) {
    ///         driver.handle_event(event);
    ///     }
    ///     driver.handle_timeout();
    ///     while let Some(event) = driver.poll_event() { /* ... */ }
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_event(&mut self, event: &mio::event::Event) {
        if event.is_writable() {
            self.drive();
        }
        if event.is_readable() {
            self.read_pending = true;
            self.read();
        }
    }

    /// Call whenever the user's `poll` returns (timeout or not): runs engine timers that are
    /// due, continues reading if the read budget ran out, and sends pending transmits.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.handle_timeout(); // harmless when nothing is due
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle_timeout(&mut self) {
        if self.read_pending {
            self.read();
        }
        let now = self.now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.drive();
    }

    /// Sends everything the engine has queued, reporting each outcome to it. Call after
    /// every direct [`endpoint_mut`](Self::endpoint_mut) call.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.drive();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn drive(&mut self) {
        self.flush();
        if !self.blocked {
            self.collect();
            self.flush();
        }
        self.update_interest();
    }

    /// After an application call: its datagrams join the send batch, which goes out when
    /// it is full or at the next [`drive`](Self::drive) ([`handle_timeout`](Self::handle_timeout),
    /// [`handle_event`](Self::handle_event), the end of [`run`](Self::run)'s dispatch);
    /// [`next_timeout`](Self::next_timeout) is zero while any wait.
    fn drive_call(&mut self) {
        self.collect();
        self.update_interest();
    }

    /// Moves the engine's transmits into the send batch through the send filter, sending
    /// the batch whenever it is full; stops early if the socket blocks.
    fn collect(&mut self) {
        loop {
            if self.out.len() >= BATCH {
                self.flush();
                if self.blocked {
                    self.update_interest();
                    return;
                }
            }
            let Some(t) = self.endpoint.poll_transmit() else {
                return;
            };
            match self.filter.as_mut().map_or(SendAction::Send, |f| f(&t)) {
                SendAction::Send => self.out.push(t),
                SendAction::Drop => {}
                SendAction::Fail(kind) => {
                    let now = self.now();
                    self.endpoint.handle_send_result(now, t.id, Err(kind));
                }
            }
        }
    }

    /// Sends the batch, reporting every datagram's outcome to the engine; what the socket
    /// would block on stays queued.
    fn flush(&mut self) {
        self.blocked = false;
        let mut done = 0;
        while done < self.out.len() {
            let result = self.io.send(&self.socket, &self.out[done..]);
            let now = self.now();
            match result {
                Ok(n) => {
                    for t in &self.out[done..done + n] {
                        self.endpoint.handle_send_result(now, t.id, Ok(()));
                    }
                    done += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => match SendErrorKind::from_io_error(&e) {
                    None => {
                        self.blocked = true;
                        break;
                    }
                    Some(kind) => {
                        let t = &self.out[done];
                        log::debug!("send to {} failed: {e}", t.destination);
                        self.endpoint.handle_send_result(now, t.id, Err(kind));
                        done += 1;
                    }
                },
            }
        }
        self.out.drain(..done);
    }

    /// The next engine event, if any. Drain after every input.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// while let Some(event) = driver.poll_event() {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll_event(&mut self) -> Option<Event> {
        self.endpoint.poll_event()
    }

    /// Sends a request ([`Endpoint::request`]): its datagram joins the send batch, which goes
    /// out when full or at the next [`drive`](Self::drive) or [`handle_timeout`](Self::handle_timeout)
    /// ([`next_timeout`](Self::next_timeout) is zero until then).
    ///
    /// ```
    /// use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// let id = driver.request("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request(&mut self, peer: SocketAddr, request: &Packet) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.request(now, peer, request);
        self.drive_call();
        id
    }

    /// Answers an incoming request ([`Endpoint::respond`]), now or later; the answer joins the
    /// send batch as [`request`](Self::request)'s datagrams do.
    ///
    /// ```no_run
    /// # use coap_engine::{Event, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
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
        self.drive_call();
        result
    }

    /// Sends a CoAP ping ([`Endpoint::ping`]), batched as [`request`](Self::request) is.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let ping = driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ping(&mut self, peer: SocketAddr) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.ping(now, peer);
        self.drive_call();
        id
    }

    /// Observes a resource (RFC 7641, [`Endpoint::observe`]): sends `request` (a GET or
    /// FETCH) with Observe = 0, batched as [`request`](Self::request) is. Each fresh
    /// notification, the first response included, arrives as [`Event::Notification`] with
    /// the returned id; the observation ends with one [`Event::Response`] (the final
    /// response, or the answer to [`deregister_observation`](Self::deregister_observation))
    /// or [`Event::RequestFailed`].
    ///
    /// ```
    /// use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// get.add_option(CoapOption::UriPath, b"time".to_vec());
    /// let observation = driver.observe("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn observe(&mut self, peer: SocketAddr, request: &Packet) -> Result<RequestId, Error> {
        let now = self.now();
        let id = self.endpoint.observe(now, peer, request);
        self.drive_call();
        id
    }

    /// Ends observation `id` by deregistering ([`Endpoint::deregister`], RFC 7641 §3.6: a
    /// GET with Observe = 1), batched as [`request`](Self::request) is; its terminal event
    /// is the server's answer. (Named apart from [`deregister`](Self::deregister), which
    /// takes the socket out of a `mio::Registry`.)
    ///
    /// ```
    /// # use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// # let mut get = Packet::new();
    /// # get.header.code = MessageClass::Request(RequestType::Get);
    /// let observation = driver.observe("127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// driver.deregister_observation(observation).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister_observation(&mut self, id: RequestId) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.deregister(now, id);
        self.drive_call();
        result
    }

    /// Cancels one of our requests, pings or observations ([`Endpoint::cancel`]): it ends
    /// with [`ExchangeError::Cancelled`](coap_engine::ExchangeError::Cancelled), and a late
    /// response or notification is answered with Reset.
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let ping = driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.cancel(ping).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cancel(&mut self, id: RequestId) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.cancel(now, id);
        self.drive_call();
        result
    }

    /// Answers a registration and adds its sender as an observer of `resource`
    /// ([`Endpoint::respond_observe`]); returns whether the observer was added. The answer
    /// joins the send batch as [`respond`](Self::respond)'s does.
    ///
    /// ```no_run
    /// # use coap_engine::{Event, ResourceId, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
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
        self.drive_call();
        result
    }

    /// Sends `notification` to every observer of `resource` ([`Endpoint::notify`]) and
    /// returns how many there were; the datagrams join the send batch (several go out in
    /// one system call where the platform batches).
    ///
    /// ```
    /// # use coap_engine::{ResourceId, coap_lite::{Packet, MessageClass, ResponseType}};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
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
        self.drive_call();
        result
    }

    /// How many clients observe `resource` ([`Endpoint::observers`]).
    ///
    /// ```
    /// # let driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// assert_eq!(driver.observers(coap_engine::ResourceId(1)), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn observers(&self, resource: ResourceId) -> usize {
        self.endpoint.observers(resource)
    }

    /// Opens a session with `peer` without sending anything, so that keepalive watches it
    /// ([`Endpoint::open_session`]).
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.open_session("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open_session(&mut self, peer: SocketAddr) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.open_session(now, peer);
        self.drive_call();
        result
    }

    /// Closes the session with `peer` ([`Endpoint::close_session`]); its pending exchanges
    /// end with [`ExchangeError::SessionClosed`](coap_engine::ExchangeError::SessionClosed).
    ///
    /// ```
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// let peer = "127.0.0.1:5683".parse().unwrap();
    /// driver.open_session(peer).unwrap();
    /// driver.close_session(peer).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close_session(&mut self, peer: SocketAddr) -> Result<(), Error> {
        let now = self.now();
        let result = self.endpoint.close_session(now, peer);
        self.drive_call();
        result
    }

    /// Sets (or with `None` clears) the keepalive of the session with `peer`
    /// ([`Endpoint::set_keepalive`]).
    ///
    /// ```
    /// use coap_engine::{Duration, Keepalive};
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
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
        self.drive_call();
        result
    }

    /// Runs a blocking loop on a private `mio::Poll` until the handler breaks (or `poll`
    /// fails), handing it every engine event. What the handler's calls send goes out in batches,
    /// the last when the events of one loop turn have all been handled.
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// use coap_engine::Event;
    /// # let mut driver = coap_engine_mio::Driver::bind("127.0.0.1:0".parse().unwrap(), Default::default())?;
    /// driver.ping("127.0.0.1:5683".parse().unwrap()).unwrap();
    /// driver.run(&mut |_: &mut coap_engine_mio::Driver, event: Event| match event {
    ///     Event::Pong { rtt, .. } => { println!("pong after {rtt:?}"); ControlFlow::Break(()) }
    ///     Event::PingFailed { error, .. } => { eprintln!("{error}"); ControlFlow::Break(()) }
    ///     _ => ControlFlow::Continue(()),
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run<H: Handler + ?Sized>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(64);
        let previous = self.registration.take();
        if let Some((registry, _)) = &previous {
            registry.deregister(&mut self.socket)?;
        }
        self.register(poll.registry(), Token(0))?;
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
        if let Some((registry, token)) = previous {
            self.register(&registry, token)?;
        }
        result
    }

    /// Hands every queued event to the handler; `Continue(true)` if there was any.
    fn dispatch<H: Handler + ?Sized>(&mut self, handler: &mut H) -> ControlFlow<(), bool> {
        let mut any = false;
        let mut flow = ControlFlow::Continue(());
        while let Some(event) = self.endpoint.poll_event() {
            any = true;
            flow = handler.on_event(self, event);
            self.collect();
            if flow.is_break() {
                break;
            }
        }
        self.drive();
        flow?;
        ControlFlow::Continue(any)
    }

    fn read(&mut self) {
        let mut errors = 0;
        let mut read = 0;
        while read < READ_BUDGET {
            match self.io.recv(&self.socket) {
                Ok(n) => {
                    read += n;
                    let now = self.now();
                    for i in 0..n {
                        if let Some((bytes, peer)) = self.io.datagram(i) {
                            self.endpoint.handle_datagram(now, peer, bytes);
                        }
                    }
                    self.collect();
                    if self.io.is_batched() && n < BATCH {
                        // A short batch emptied the queue: asking again would only return
                        // WouldBlock, and every datagram that arrives from now on raises a
                        // new readiness event (each one wakes the socket's waiters).
                        self.read_pending = false;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.read_pending = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // An ICMP error queued on the socket; reading consumes it.
                    log::debug!("recv failed: {e}");
                    errors += 1;
                    if errors > 16 {
                        break;
                    }
                }
            }
        }
        self.drive();
    }

    fn interest(&self) -> Interest {
        if self.blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    fn update_interest(&mut self) {
        let want = self.blocked;
        if want == self.writable_interest {
            return;
        }
        let interest = self.interest();
        if let Some((registry, token)) = &self.registration {
            match registry.reregister(&mut self.socket, *token, interest) {
                Ok(()) => self.writable_interest = want,
                Err(e) => log::warn!("reregister failed: {e}"),
            }
        }
    }
}
