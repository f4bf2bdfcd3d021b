//! The endpoint: one socket's worth of CoAP, serving many peers.

use alloc::boxed::Box;
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::net::SocketAddr;

use coap_lite::MessageType;

use crate::codec;
use crate::config::{Config, ConfigError, Keepalive};
use crate::event::Event;
use crate::observe::Registry;
use crate::outputs::{Derived, Outputs};
use crate::rng::Rng;
use crate::security::PeerIdentity;
#[cfg(feature = "security")]
use crate::security::SecureChannel;
use crate::session::{Origin, Session, SessionFootprint};
use crate::time::Instant;
use crate::transmit::{SendErrorKind, Transmit, TransmitId, TransmitInfo};

#[cfg(feature = "security")]
mod association;
mod calls;
mod connection;
mod memory;
mod peers;
mod sessions;

use memory::Memories;
use peers::PeerIndex;

pub use connection::StreamClosed;

/// A CoAP endpoint (RFC 7252 §1.2) as a sans-IO state machine: it owns no socket, reads no
/// clock and draws no entropy. Give it inputs, then drain its outputs.
///
/// # Inputs
/// - [`handle_datagram`](Self::handle_datagram): a datagram arrived from a peer.
/// - [`handle_timeout`](Self::handle_timeout): the deadline from [`poll_timeout`](Self::poll_timeout) passed.
/// - [`handle_send_result`](Self::handle_send_result): a transmit could not be sent (successes need no report).
/// - application calls: [`request`](Self::request), [`respond`](Self::respond),
///   [`ping`](Self::ping), [`cancel`](Self::cancel), [`open_session`](Self::open_session),
///   [`close_session`](Self::close_session), [`set_keepalive`](Self::set_keepalive); for
///   RFC 7641, [`observe`](Self::observe), [`deregister`](Self::deregister),
///   [`respond_observe`](Self::respond_observe) and [`notify`](Self::notify).
///
/// Every input takes `now`; time never goes backwards inside the engine (an earlier `now` is
/// treated as the latest seen), and every input first runs whatever timers are already due,
/// so a caller that feeds datagrams late still sees deadlines honoured in order.
///
/// # Outputs: drain after every input
/// After **any** input, call [`poll_transmit`](Self::poll_transmit) until it returns `None`
/// (send each datagram, reporting failures), then [`poll_event`](Self::poll_event) until
/// `None`, then read [`poll_timeout`](Self::poll_timeout) and arm one timer for it. Until that
/// deadline nothing changes unless a new input arrives, so a caller that follows this rule
/// never polls in a loop and never misses a retransmission or a keepalive deadline.
///
/// # Example: a client and a server wired back to back
/// ```
/// use coap_engine::{Config, Endpoint, Event, Instant};
/// use coap_lite::{Packet, RequestType, MessageClass, ResponseType};
///
/// let (client_addr, server_addr) = ("[::1]:40000".parse().unwrap(), "[::1]:5683".parse().unwrap());
/// let mut client = Endpoint::new(Config::default(), 1).unwrap();
/// let mut server = Endpoint::new(Config::default(), 2).unwrap();
/// let now = Instant::ZERO;
///
/// let mut get = Packet::new();
/// get.header.code = MessageClass::Request(RequestType::Get);
/// get.add_option(coap_lite::CoapOption::UriPath, b"hello".to_vec());
/// let id = client.request(now, server_addr, &get).unwrap();
///
/// while let Some(t) = client.poll_transmit() {
///     server.handle_datagram(now, client_addr, &t.payload);
/// }
/// while let Some(event) = server.poll_event() {
///     if let Event::Request { id, .. } = event {
///         let mut response = Packet::new();
///         response.header.code = MessageClass::Response(ResponseType::Content);
///         response.payload = b"world".to_vec();
///         server.respond(now, id, &response).unwrap(); // piggybacked on the ACK
///     }
/// }
/// while let Some(t) = server.poll_transmit() {
///     client.handle_datagram(now, server_addr, &t.payload);
/// }
/// let mut answered = false;
/// while let Some(event) = client.poll_event() {
///     if let Event::Response { id: rid, response, .. } = event {
///         assert_eq!(rid, id);
///         assert_eq!(response.payload, b"world");
///         answered = true;
///     }
/// }
/// assert!(answered);
/// ```
pub struct Endpoint {
    config: Config,
    derived: Derived,
    rng: Rng,
    out: Outputs,
    /// Boxed: a slot costs a pointer, so the vector's spare capacity costs little.
    sessions: Vec<Option<Box<Session>>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_peer: PeerIndex,
    /// The last peer looked up and its slot: most datagrams come from the peer of the one
    /// before (a request and its answer, a burst), and an equality test is far cheaper than
    /// a tree search ordered by `SocketAddr`.
    last_peer: Option<(SocketAddr, u32)>,
    /// The sessions' deadlines, earliest first: (deadline, slot). An entry counts while its
    /// session is filed under it (`Session::armed`); one left behind by a deadline that moved
    /// earlier or a session that ended is stale, skipped when it comes up, never on top
    /// after an input (so [`poll_timeout`](Self::poll_timeout) is exact), and swept out when
    /// they outnumber the sessions. A heap rather than an ordered set: far less code on a
    /// microcontroller, and no node allocations.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    now: Instant,
    next_id: u64,
    due: Vec<u32>,
    /// Ended sessions' deduplication state and Message ID counters, kept for
    /// EXCHANGE_LIFETIME (at most `max_remembered_peers`), restored if the peer returns.
    memory: Memories,
    /// Which sessions observe which of our resources (RFC 7641).
    observe: Registry,
    /// Secure associations peers opened that are still in their handshake (server role),
    /// at most `limits.max_handshakes`; a session is made when one completes.
    #[cfg(feature = "security")]
    handshakes: Vec<(SocketAddr, Box<dyn SecureChannel>)>,
    /// Unix time at `Instant::ZERO`, for certificates' validity periods.
    unix_epoch: Option<u64>,
}

/// What the engine knows about one session, from [`Endpoint::session_info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Something valid has been heard from the peer.
    pub established: bool,
    /// The peer opened the session (we are its server).
    pub opened_by_peer: bool,
    /// Last time a valid message arrived from the peer (the session's creation until then).
    pub last_heard: Instant,
    /// The keepalive in force.
    pub keepalive: Option<Keepalive>,
    /// The state it holds.
    pub footprint: SessionFootprint,
}

impl Endpoint {
    /// Creates an endpoint. `seed` drives Message IDs, tokens and retransmission jitter: give
    /// each endpoint a seed from a real entropy source in production, and a fixed one in tests
    /// to replay a run exactly.
    pub fn new(config: Config, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Endpoint {
            out: Outputs::new(&config),
            derived: Derived::new(&config),
            config,
            rng: Rng::new(seed),
            sessions: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_peer: PeerIndex::new((mix(seed), mix(seed ^ 0x5bd1_e995))),
            last_peer: None,
            timers: BinaryHeap::new(),
            now: Instant::ZERO,
            next_id: 1,
            due: Vec::new(),
            memory: Memories::new((mix(seed ^ 0x2545_f491), mix(seed ^ 0x1b87_3593))),
            observe: Registry::default(),
            #[cfg(feature = "security")]
            handshakes: Vec::new(),
            unix_epoch: None,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ------------------------------------------------------------------------ outputs

    /// The next datagram to send, if any. Report a failed send with
    /// [`handle_send_result`](Self::handle_send_result).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// The next datagram to send, written into `buf` (cleared first), for adapters that own
    /// their buffers: `buf`'s capacity is reused, and the engine takes back the datagram's own
    /// storage at once unless it keeps the bytes (for retransmission or for answering
    /// duplicates), so a steady exchange of messages sends without allocating. Report a
    /// failed send with [`handle_send_result`](Self::handle_send_result) and the returned id.
    ///
    /// ```
    /// use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    /// use coap_engine::{Config, Endpoint, Instant};
    ///
    /// let mut client = Endpoint::new(Config::default(), 1).unwrap();
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// let server = "127.0.0.1:5683".parse().unwrap();
    /// client.request(Instant::ZERO, server, &get).unwrap();
    ///
    /// let mut buf = Vec::with_capacity(1152); // one buffer, reused for every datagram
    /// let info = client.poll_transmit_into(&mut buf).unwrap();
    /// assert_eq!(info.destination, server);
    /// assert_eq!(buf[0] >> 6, 1, "a CoAP version 1 message");
    /// // socket.send_to(&buf, info.destination) ...
    /// assert!(client.poll_transmit_into(&mut buf).is_none());
    /// ```
    pub fn poll_transmit_into(&mut self, buf: &mut Vec<u8>) -> Option<TransmitInfo> {
        let t = self.out.poll_transmit()?;
        buf.clear();
        buf.extend_from_slice(&t.payload);
        self.out.pool.recycle(t.payload);
        Some(TransmitInfo {
            id: t.id,
            destination: t.destination,
        })
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// When the engine next needs [`handle_timeout`](Self::handle_timeout), if ever. Read it
    /// after draining transmits and events.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let session = self.timers.peek().map(|&Reverse((t, _))| t);
        let memory = self.memory.next_expiry();
        #[cfg(feature = "security")]
        let handshake = self.handshake_deadline();
        #[cfg(not(feature = "security"))]
        let handshake = None;
        [session, memory, handshake].into_iter().flatten().min()
    }

    /// Whether transmits are waiting to be polled.
    pub fn has_transmits(&self) -> bool {
        self.out.has_transmits()
    }

    // ------------------------------------------------------------------------ inputs

    /// A datagram arrived from `peer`. Malformed input gets RFC 7252's treatment and never
    /// panics: a Confirmable message with a format error is answered with Reset, anything
    /// else malformed is dropped, and a version other than 1 is ignored (§3, §4.2, §4.3).
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let now = self.advance(now);
        if cfg!(feature = "tcp") && self.config.transport == crate::config::Transport::Tcp {
            self.stream_data(now, peer, bytes);
            return;
        }
        #[cfg(feature = "security")]
        if self.config.security.is_some() {
            self.secure_datagram(now, peer, bytes);
            return;
        }
        let slot = self.lookup(peer);
        self.message(now, peer, slot, bytes);
    }

    /// One CoAP message from `peer`: a plain datagram, or a message a secure association
    /// opened (`slot` is then its session).
    fn message(&mut self, now: Instant, peer: SocketAddr, slot: Option<u32>, bytes: &[u8]) {
        // Too short to carry a Message ID, or another protocol version: silently ignored.
        let Ok(header) = codec::parse_header(bytes) else {
            return;
        };
        let msg = match codec::parse(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                log::debug!("{peer}: format error: {e}");
                if header.mtype == MessageType::Confirmable {
                    self.reset(peer, slot, header.message_id);
                }
                return;
            }
        };
        let slot = match slot {
            Some(slot) => slot,
            // Only a request opens a session; anything else from a stranger is rejected
            // without keeping state (a CON ping gets its Reset, which is also its answer).
            None if cfg!(feature = "server")
                && msg.header.is_request()
                && msg.header.mtype != MessageType::Acknowledgement =>
            {
                match self.create_session(now, peer, Origin::Remote, None) {
                    Ok(slot) => {
                        self.out.event(Event::SessionNew { peer });
                        slot
                    }
                    Err(_) => {
                        log::debug!("{peer}: session limit reached; request rejected");
                        if header.mtype == MessageType::Confirmable {
                            self.stateless_reset(peer, None, header.message_id);
                        }
                        return;
                    }
                }
            }
            None => {
                if header.mtype == MessageType::Confirmable {
                    self.stateless_reset(peer, None, header.message_id);
                }
                return;
            }
        };
        let (session, mut ctx) = self.split(slot);
        if let Some(session) = session {
            session.on_message(now, &mut ctx, &msg);
        }
        self.rearm(slot);
    }

    /// Resets a malformed Confirmable message: inside the peer's association if it has one,
    /// statelessly otherwise.
    fn reset(&mut self, peer: SocketAddr, slot: Option<u32>, mid: u16) {
        #[cfg(feature = "security")]
        if let Some(slot) = slot {
            let (session, mut ctx) = self.split(slot);
            if let Some(s) = session.filter(|s| s.is_secure()) {
                s.reset(&mut ctx, mid);
                self.rearm(slot);
                return;
            }
        }
        self.stateless_reset(peer, slot, mid);
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) has passed (calling it early or
    /// twice is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The adapter's result for transmit `id`. Only failures need reporting; an `Ok` is
    /// accepted and resets the session's count of consecutive unreachable failures. A failure
    /// is reported back as [`Event::SendFailed`] and the message counts as lost: nothing is
    /// resent early, and no keepalive deadline moves.
    pub fn handle_send_result(
        &mut self,
        now: Instant,
        id: TransmitId,
        result: Result<(), SendErrorKind>,
    ) {
        let now = self.advance(now);
        let Some(record) = self.out.record(id) else {
            log::debug!("send result for untracked transmit {id:?} ignored");
            return;
        };
        if let Err(kind) = result {
            self.out.event(Event::SendFailed {
                transmit: id,
                peer: record.peer,
                kind,
            });
        }
        let Some(key) = record.session else { return };
        if self.generations.get(key.slot as usize) != Some(&key.generation) {
            return; // that session is gone
        }
        let (session, mut ctx) = self.split(key.slot);
        let ending = match result {
            Ok(()) => {
                if let Some(s) = session {
                    s.on_send_ok(now, &mut ctx, id);
                }
                None
            }
            Err(kind) => {
                session.and_then(|s| s.on_send_failed(now, &mut ctx, id, record.message_id, kind))
            }
        };
        match ending {
            Some(ending) => self.end_session(key.slot, ending),
            None => self.rearm(key.slot),
        }
    }

    // ------------------------------------------------------------------------ inspection

    /// What the engine holds for `peer`, if it has a session.
    pub fn session_info(&self, peer: SocketAddr) -> Option<SessionInfo> {
        let slot = self.by_peer.get(&peer, &self.sessions)?;
        let s = self.sessions.get(slot as usize)?.as_ref()?;
        Some(SessionInfo {
            established: s.is_established(),
            opened_by_peer: s.origin() == Origin::Remote,
            last_heard: s.liveness.last_heard(),
            keepalive: s.liveness.keepalive(),
            footprint: s.footprint(),
        })
    }

    /// Number of sessions.
    pub fn session_count(&self) -> usize {
        self.by_peer.len()
    }

    /// Handshakes peers opened that have not completed yet (server role of a secure
    /// endpoint; at most [`Limits::max_handshakes`](crate::Limits::max_handshakes)).
    pub fn handshakes_in_progress(&self) -> usize {
        #[cfg(feature = "security")]
        return self.handshakes.len();
        #[cfg(not(feature = "security"))]
        0
    }

    /// Who the peer of a secure session proved to be: its PSK identity or its certificate.
    /// `None` for a plain session, a handshake still in progress, or no session.
    pub fn peer_identity(&self, peer: SocketAddr) -> Option<PeerIdentity> {
        #[cfg(feature = "security")]
        {
            let slot = self.by_peer.get(&peer, &self.sessions)?;
            self.sessions.get(slot as usize)?.as_ref()?.peer_identity()
        }
        #[cfg(not(feature = "security"))]
        {
            let _ = peer;
            None
        }
    }

    /// Tells the engine the wall-clock time: `unix_secs` (seconds since 1970-01-01 UTC) is
    /// the time at `now`. A secure endpoint checks certificates' validity periods against
    /// it; without it, a certificate is refused with
    /// [`CertificateError::NoClock`](crate::CertificateError::NoClock). Adapters call this
    /// once at start; a later call applies to associations started after it.
    pub fn set_unix_time(&mut self, now: Instant, unix_secs: u64) {
        self.unix_epoch = Some(unix_secs.saturating_sub(now.as_micros() / 1_000_000));
    }

    /// Peers with a session.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sessions.iter().flatten().map(|s| s.peer)
    }

    /// Peers without a session whose deduplication state and Message ID counter are still
    /// remembered: a session's memory outlives it by EXCHANGE_LIFETIME (RFC 7252 §4.4, §4.5),
    /// for at most `limits.max_remembered_peers` peers.
    pub fn remembered_peers(&self) -> usize {
        self.memory.len()
    }
}

/// SplitMix64's finaliser: spreads the endpoint's seed into the peer index's hash keys
/// without drawing from its random number generator (whose sequence tests replay).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
