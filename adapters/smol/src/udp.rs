//! CoAP over UDP (and DTLS): [`Driver`], one socket for every peer.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};

use coap_engine::{Config, Endpoint, SendErrorKind, Transport};
use smol::future::FutureExt as _;
use smol::{Async, Timer};

use crate::handles::{new_endpoint, Cmd, Core, Handles};
use crate::{Client, Events, Incoming};

type SendFilter = Box<dyn FnMut(SocketAddr, &[u8]) -> io::Result<()> + Send>;

/// Owns the socket and the engine. Take the handles you need ([`client`](Self::client),
/// [`incoming`](Self::incoming), [`events`](Self::events)), then run it with
/// [`run`](Self::run) or [`spawn`](Self::spawn). It stops when every [`Client`], [`Incoming`]
/// and [`Responder`](crate::Responder) has been dropped (or when its task is dropped).
pub struct Driver {
    state: State,
    handles: Handles,
}

impl Driver {
    /// Binds a UDP socket on `addr` (port 0 picks a free one) with an engine configured by
    /// `config` and randomly seeded. The driver does nothing until [`run`](Self::run) or
    /// [`spawn`](Self::spawn). The engine is told the wall-clock time, as by
    /// [`from_parts`](Self::from_parts).
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a configuration the engine refuses, or one
    /// for [`Transport::Tcp`] (a [`StreamDriver`](crate::StreamDriver) serves those).
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Driver> {
        if config.transport != Transport::Udp {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a UDP driver needs Transport::Udp; a StreamDriver serves Transport::Tcp",
            ));
        }
        let endpoint = new_endpoint(config)?;
        Ok(Self::from_parts(Async::<UdpSocket>::bind(addr)?, endpoint))
    }

    /// Wraps an existing socket and engine: a fixed seed for a reproducible run, or a socket
    /// set up beforehand (buffer sizes, ...).
    ///
    /// Tells the endpoint the wall-clock time ([`Endpoint::set_unix_time`]), which a secure
    /// endpoint needs to check certificates' validity periods and a plain one ignores.
    ///
    /// A request to a peer that never answers ends in the engine's own [`ExchangeError`](coap_engine::ExchangeError):
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
    pub fn from_parts(socket: Async<UdpSocket>, endpoint: Endpoint) -> Driver {
        let (core, handles) = Core::new(endpoint);
        let state = State {
            socket,
            core,
            filter: None,
        };
        Driver { state, handles }
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

    /// Spawns [`run`](Self::run) on smol's global executor. Dropping the returned task stops
    /// the driver; `.detach()` it to let it run on its own.
    pub fn spawn(self) -> smol::Task<io::Result<()>> {
        smol::spawn(self.run())
    }

    /// Drives the engine until every handle is gone. Returns an error only if the socket
    /// fails to receive in a way that cannot be retried.
    pub async fn run(self) -> io::Result<()> {
        let Driver { mut state, handles } = self;
        let cmd_rx = handles.into_commands(); // only the application's handles keep it running
        let mut buf = vec![0u8; 65_535];
        loop {
            state.drain().await;
            let timer = match state.core.endpoint.poll_timeout() {
                Some(t) => Timer::at(state.core.instant_of(t)),
                None => Timer::never(),
            };
            let wake = async { Wake::Cmd(cmd_rx.recv().await.ok()) }
                .or(async { Wake::Datagram(state.socket.recv_from(&mut buf).await) })
                .or(async {
                    timer.await;
                    Wake::Timeout
                })
                .await;
            let now = state.core.now();
            match wake {
                Wake::Cmd(None) => return Ok(()),
                Wake::Cmd(Some(cmd)) => cmd(&mut state.core, now),
                Wake::Datagram(Ok((n, peer))) => {
                    state.core.endpoint.handle_datagram(now, peer, &buf[..n])
                }
                // ICMP errors from earlier sends surface here (e.g. ECONNREFUSED); harmless.
                Wake::Datagram(Err(e)) if is_transient(&e) => log::debug!("receive: {e}"),
                Wake::Datagram(Err(e)) => return Err(e),
                Wake::Timeout => state.core.endpoint.handle_timeout(now),
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
    core: Core,
    filter: Option<SendFilter>,
}

impl State {
    /// The drain rule: transmits (reporting failures), then events, until both are empty.
    async fn drain(&mut self) {
        loop {
            while let Some(t) = self.core.endpoint.poll_transmit() {
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
                    let now = self.core.now();
                    self.core.endpoint.handle_send_result(now, t.id, Err(kind));
                }
            }
            self.core.route_events();
            if !self.core.endpoint.has_transmits() {
                return;
            }
        }
    }
}
