//! The endpoint: one socket's worth of CoAP, serving many peers.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use coap_lite::{MessageType, Packet};

use crate::codec;
use crate::config::{Config, ConfigError, Keepalive};
use crate::error::Error;
use crate::event::{CloseReason, Event, IncomingRequestId, RequestId};
use crate::observe::{Observation, Registry, ResourceId};
use crate::outputs::{Ctx, Derived, Outputs, SessionKey, TransmitRecord};
use crate::rng::Rng;
use crate::security::{PeerIdentity, SecureChannel};
use crate::session::{slot_of, Ending, Origin, PeerMemory, Session, SessionFootprint};
use crate::time::Instant;
use crate::transmit::{SendErrorKind, Transmit, TransmitId};

#[cfg(feature = "security")]
mod association;
mod connection;

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
    sessions: Vec<Option<Session>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_peer: BTreeMap<SocketAddr, u32>,
    /// The last peer looked up and its slot: most datagrams come from the peer of the one
    /// before (a request and its answer, a burst), and an equality test is far cheaper than
    /// a tree search ordered by `SocketAddr`.
    last_peer: Option<(SocketAddr, u32)>,
    /// One entry per session with something to do: (deadline, slot).
    timers: BTreeSet<(Instant, u32)>,
    now: Instant,
    next_id: u64,
    due: Vec<u32>,
    /// Ended sessions' deduplication state and Message ID counters, kept for
    /// EXCHANGE_LIFETIME (at most `max_remembered_peers`), restored if the peer returns.
    memory: BTreeMap<SocketAddr, (PeerMemory, u64)>,
    /// Expiry order of `memory`: (expires, peer, generation of the entry).
    memory_order: VecDeque<(Instant, SocketAddr, u64)>,
    memory_seq: u64,
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
            by_peer: BTreeMap::new(),
            last_peer: None,
            timers: BTreeSet::new(),
            now: Instant::ZERO,
            next_id: 1,
            due: Vec::new(),
            memory: BTreeMap::new(),
            memory_order: VecDeque::new(),
            memory_seq: 0,
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

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// When the engine next needs [`handle_timeout`](Self::handle_timeout), if ever. Read it
    /// after draining transmits and events.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let session = self.timers.first().map(|&(t, _)| t);
        let memory = self.memory_order.front().map(|&(t, _, _)| t);
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
        if self.config.transport == crate::config::Transport::Tcp {
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
            None if msg.header.is_request() && msg.header.mtype != MessageType::Acknowledgement => {
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
                    s.on_send_ok(id);
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

    // ------------------------------------------------------------------------ application calls

    /// Sends a request to `peer` (opening a session if there is none). The packet's code must
    /// be a method and its type Confirmable (the default of `Packet::new()`) or
    /// Non-confirmable; the engine assigns the Message ID, and a random token unless the
    /// packet carries one. The request goes out at once, or waits in the peer's queue while
    /// NSTART requests are outstanding. It ends in exactly one of [`Event::Response`] or
    /// [`Event::RequestFailed`]. A body too large for one message is sent block-wise, and a
    /// response in blocks is delivered whole (see [`Blockwise`](crate::Blockwise)).
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Packet,
    ) -> Result<RequestId, Error> {
        let now = self.check_request(now, request)?;
        let name = uri_host(request);
        self.with_local_session(now, peer, name, |s, ctx| s.request(now, ctx, request, None))
    }

    /// Observes a resource (RFC 7641): sends `request` (a GET or FETCH; its Observe option is
    /// set to 0, register) and keeps the exchange open. Every fresh 2.xx notification,
    /// the first response included, arrives as [`Event::Notification`] with the returned id;
    /// late, reordered ones are dropped by the rule of RFC 7641 §3.4. When Max-Age passes
    /// without a notification the engine re-registers (§3.3.1). The observation ends with
    /// exactly one terminal event:
    /// - [`Event::Response`]: a response without Observe or not 2.xx (the server would not
    ///   or no longer will notify, e.g. 4.04 after a DELETE), or the answer to
    ///   [`deregister`](Self::deregister);
    /// - [`Event::RequestFailed`]: no answer, Reset, [`cancel`](Self::cancel) (the next
    ///   notification is then rejected with Reset, §3.6), or the session failed (keepalive).
    ///
    /// ```
    /// use coap_engine::{Config, Endpoint, Instant};
    /// use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    ///
    /// let mut client = Endpoint::new(Config::default(), 7).unwrap();
    /// let mut get = Packet::new();
    /// get.header.code = MessageClass::Request(RequestType::Get);
    /// get.add_option(CoapOption::UriPath, b"time".to_vec());
    /// let id = client.observe(Instant::ZERO, "127.0.0.1:5683".parse().unwrap(), &get).unwrap();
    /// let sent = client.poll_transmit().unwrap();
    /// assert_eq!(sent.payload[4..].len() > 0, true); // a GET with Observe = 0 is on its way
    /// # let _ = id;
    /// ```
    pub fn observe(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Packet,
    ) -> Result<RequestId, Error> {
        let now = self.check_request(now, request)?;
        if !matches!(u8::from(request.header.code), 1 | 5) {
            return Err(Error::NotObservable);
        }
        let mut request = request.clone();
        request.set_observe_value(0);
        let observation = alloc::boxed::Box::new(Observation {
            request: request.clone(),
            last: None,
            reregister_at: None,
            deregistering: false,
        });
        let name = uri_host(&request);
        self.with_local_session(now, peer, name, |s, ctx| {
            s.request(now, ctx, &request, Some(observation))
        })
    }

    /// Ends observation `id` by deregistering (RFC 7641 §3.6): a GET with Observe = 1 and the
    /// registration's token and options. Notifications that still arrive are acknowledged
    /// but not delivered; the observation's terminal event is the answer to this GET
    /// ([`Event::Response`]) or [`Event::RequestFailed`] if none comes. To end one without
    /// telling the server, use [`cancel`](Self::cancel).
    pub fn deregister(&mut self, now: Instant, id: RequestId) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownRequest)
            .and_then(|s| s.deregister(now, &mut ctx, id));
        self.rearm(slot);
        result
    }

    /// Checks what every request must be; moves time to `now`.
    fn check_request(&mut self, now: Instant, request: &Packet) -> Result<Instant, Error> {
        let now = self.advance(now);
        let code = u8::from(request.header.code);
        if code >> 5 != 0 || code == 0 {
            return Err(Error::NotARequest);
        }
        if !matches!(
            request.header.get_type(),
            MessageType::Confirmable | MessageType::NonConfirmable
        ) {
            return Err(Error::InvalidMessageType);
        }
        if request.get_token().len() > 8 {
            return Err(Error::TokenTooLong);
        }
        Ok(now)
    }

    /// Answers incoming request `id` (from [`Event::Request`]): piggybacked on the ACK if the
    /// engine has not yet sent an Empty ACK, otherwise as a separate Confirmable response that
    /// is retransmitted until acknowledged; a Non-confirmable request gets a Non-confirmable
    /// response. The engine sets type, Message ID and token; the packet's code must be a
    /// response code. Give the whole representation: if it is larger than the block the request
    /// asked for (or than the block size, or than `max_message_size`), the engine sends just
    /// that block (RFC 7959 §2.4), and answers each further block request the application
    /// answers the same way.
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: &Packet,
    ) -> Result<(), Error> {
        self.answer(now, id, response, None).map(|_| ())
    }

    /// `respond` and `respond_observe`: Ok(whether an observer was added).
    fn answer(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: &Packet,
        observe: Option<ResourceId>,
    ) -> Result<bool, Error> {
        let now = self.advance(now);
        let class = u8::from(response.header.code) >> 5;
        if !(2..=5).contains(&class) {
            return Err(Error::NotAResponse);
        }
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownRequest)
            .and_then(|s| s.respond(now, &mut ctx, id, response, observe));
        self.rearm(slot);
        result
    }

    /// Answers incoming request `id` like [`respond`](Self::respond) and, if it is a
    /// registration (a GET or FETCH with Observe = 0, RFC 7641 §3.1) and `response` is 2.xx,
    /// adds its sender as an observer of `resource`: the response gets an Observe option,
    /// and [`notify`](Self::notify) reaches the observer from then on. Returns whether the
    /// observer was added; it is not when the request was no registration, the response is
    /// not 2.xx, or [`Limits::max_observers`](crate::Limits::max_observers) /
    /// `max_observers_per_resource` is reached (the response then goes without Observe,
    /// which tells the client, §4.1). A registration with a token the client already
    /// observes with refreshes that entry (§4.1). Observers leave with
    /// [`Event::ObserverRemoved`].
    pub fn respond_observe(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        resource: ResourceId,
        response: &Packet,
    ) -> Result<bool, Error> {
        self.answer(now, id, response, Some(resource))
    }

    /// Sends `notification` (a response: code, options and payload; the engine sets type,
    /// Message ID, token and the Observe sequence number) to every observer of `resource`,
    /// and returns how many there were (RFC 7641 §4.2).
    ///
    /// Notifications are Non-confirmable unless `confirmable` is set, except that each
    /// observer gets a Confirmable one at least every 24 hours and while a previous
    /// Confirmable notification to it is still unacknowledged, which the new one replaces
    /// (§4.5, §4.5.2). An observer whose Confirmable notification is never acknowledged, or
    /// who answers one with Reset, is removed. A notification that is not 2.xx is the last:
    /// it is sent without Observe and ends every observation of `resource` (§3.2).
    pub fn notify(
        &mut self,
        now: Instant,
        resource: ResourceId,
        notification: &Packet,
        confirmable: bool,
    ) -> Result<usize, Error> {
        let now = self.advance(now);
        let class = u8::from(notification.header.code) >> 5;
        if !(2..=5).contains(&class) {
            return Err(Error::NotAResponse);
        }
        let mut notification = notification.clone();
        if class == 2 {
            notification.set_observe_value(self.observe.next_seq());
        } else {
            notification.clear_option(coap_lite::CoapOption::Observe);
        }
        let mut sent = 0;
        for key in self.observe.sessions(resource) {
            if self.generations.get(key.slot as usize) != Some(&key.generation) {
                continue;
            }
            let (session, mut ctx) = self.split(key.slot);
            if let Some(s) = session {
                sent += s.notify(now, &mut ctx, resource, &notification, confirmable);
            }
            self.rearm(key.slot);
        }
        Ok(sent)
    }

    /// How many clients observe `resource`.
    pub fn observers(&self, resource: ResourceId) -> usize {
        self.observe.count(resource)
    }

    /// Sends a CoAP ping (an Empty Confirmable message, RFC 7252 §4.3) to `peer`, opening a
    /// session if needed. Ends in [`Event::Pong`] or [`Event::PingFailed`]. Pings are not held
    /// back by NSTART: liveness probing is independent of the request pipeline.
    pub fn ping(&mut self, now: Instant, peer: SocketAddr) -> Result<RequestId, Error> {
        let now = self.advance(now);
        self.with_local_session(now, peer, None, |s, ctx| s.ping(now, ctx))
    }

    /// Cancels one of our requests or pings; it ends with
    /// [`ExchangeError::Cancelled`](crate::ExchangeError::Cancelled). A late response to it will be answered with Reset.
    pub fn cancel(&mut self, now: Instant, id: RequestId) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = slot_of(id.0);
        let (session, mut ctx) = self.split(slot);
        let found = session.is_some_and(|s| s.cancel(&mut ctx, id, now));
        self.rearm(slot);
        if found {
            Ok(())
        } else {
            Err(Error::UnknownRequest)
        }
    }

    /// Opens a session with `peer` without sending anything, so that keepalive starts
    /// watching it (the session counts as silent from now). Does nothing if one exists.
    pub fn open_session(&mut self, now: Instant, peer: SocketAddr) -> Result<(), Error> {
        let now = self.advance(now);
        if !self.by_peer.contains_key(&peer) {
            let slot = self.create_local_session(now, peer, None)?;
            self.after_local_call(slot, true, peer, true);
        }
        Ok(())
    }

    /// Closes the session with `peer`: its pending exchanges end with
    /// [`ExchangeError::SessionClosed`](crate::ExchangeError::SessionClosed), then
    /// [`Event::SessionClosed`] is emitted and all its state is freed.
    pub fn close_session(&mut self, now: Instant, peer: SocketAddr) -> Result<(), Error> {
        self.advance(now);
        let slot = *self.by_peer.get(&peer).ok_or(Error::UnknownSession)?;
        self.end_session(slot, Ending::Closed(CloseReason::Local));
        Ok(())
    }

    /// Sets (or with `None` clears) the keepalive of the session with `peer`, overriding
    /// [`Config::keepalive`]. Silence is measured from the later of `now` and the last message
    /// heard.
    pub fn set_keepalive(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        keepalive: Option<Keepalive>,
    ) -> Result<(), Error> {
        let now = self.advance(now);
        let slot = *self.by_peer.get(&peer).ok_or(Error::UnknownSession)?;
        if let Some(Some(s)) = self.sessions.get_mut(slot as usize) {
            s.set_keepalive(now, keepalive);
        }
        self.rearm(slot);
        Ok(())
    }

    // ------------------------------------------------------------------------ inspection

    /// What the engine holds for `peer`, if it has a session.
    pub fn session_info(&self, peer: SocketAddr) -> Option<SessionInfo> {
        let slot = *self.by_peer.get(&peer)?;
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
            let slot = *self.by_peer.get(&peer)?;
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
        self.by_peer.keys().copied()
    }

    /// Peers without a session whose deduplication state and Message ID counter are still
    /// remembered: a session's memory outlives it by EXCHANGE_LIFETIME (RFC 7252 §4.4, §4.5),
    /// for at most `limits.max_remembered_peers` peers.
    pub fn remembered_peers(&self) -> usize {
        self.memory.len()
    }

    // ------------------------------------------------------------------------ internals

    /// Moves time forward (never back) and runs every session timer that is due.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.max(now);
        self.now = now;
        // Each due session runs once per call, so a buggy deadline can never spin here.
        let mut due = core::mem::take(&mut self.due);
        while let Some(&(t, slot)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(Some(s)) = self.sessions.get_mut(slot as usize) {
                s.armed = None;
            }
            due.push(slot);
        }
        for &slot in &due {
            let (session, mut ctx) = self.split(slot);
            match session.and_then(|s| s.on_timeout(now, &mut ctx)) {
                Some(ending) => self.end_session(slot, ending),
                None => self.rearm(slot),
            }
        }
        due.clear();
        self.due = due;
        #[cfg(feature = "security")]
        self.run_handshake_timers(now);
        while let Some(&(t, peer, seq)) = self.memory_order.front() {
            if t > now {
                break;
            }
            self.memory_order.pop_front();
            self.forget(peer, seq);
        }
        now
    }

    fn forget(&mut self, peer: SocketAddr, seq: u64) {
        if self.memory.get(&peer).is_some_and(|m| m.1 == seq) {
            self.memory.remove(&peer);
        }
    }

    fn lookup(&mut self, peer: SocketAddr) -> Option<u32> {
        if let Some((p, slot)) = self.last_peer {
            if p == peer {
                return Some(slot);
            }
        }
        let slot = *self.by_peer.get(&peer)?;
        self.last_peer = Some((peer, slot));
        Some(slot)
    }

    fn split(&mut self, slot: u32) -> (Option<&mut Session>, Ctx<'_>) {
        let session = self
            .sessions
            .get_mut(slot as usize)
            .and_then(Option::as_mut);
        let max_message_size = session
            .as_deref()
            .map_or(self.config.max_message_size, |s| s.send_limit(&self.config));
        let path = session
            .as_deref()
            .map_or_else(Default::default, |s| s.block_path(&self.config));
        let ctx = Ctx {
            config: &self.config,
            derived: &self.derived,
            rng: &mut self.rng,
            out: &mut self.out,
            next_id: &mut self.next_id,
            observe: &mut self.observe,
            max_message_size,
            path,
        };
        (session, ctx)
    }

    /// A session we open: on a secure endpoint its handshake starts now, checking the
    /// server's certificate against `server_name` (or else the peer's address).
    fn create_local_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<alloc::string::String>,
    ) -> Result<u32, Error> {
        #[cfg(feature = "security")]
        let channel = self.connect(now, peer, server_name.as_deref())?;
        #[cfg(not(feature = "security"))]
        let channel = {
            let _ = server_name;
            None
        };
        let slot = self.create_session(now, peer, Origin::Local, channel)?;
        if self.config.transport == crate::config::Transport::Tcp {
            // A secure connection's handshake starts once it is open.
            self.out
                .command(crate::outputs::StreamCommand::Connect(peer));
            return Ok(slot);
        }
        #[cfg(feature = "security")]
        self.start_handshake(now, slot);
        Ok(slot)
    }

    fn create_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        origin: Origin,
        channel: Option<Box<dyn SecureChannel>>,
    ) -> Result<u32, Error> {
        if self.by_peer.len() >= self.config.limits.max_sessions {
            return Err(Error::SessionLimit);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.sessions.push(None);
                self.generations.push(0);
                (self.sessions.len() - 1) as u32
            }
        };
        let key = SessionKey {
            slot,
            generation: self.generations[slot as usize],
        };
        let memory = self.memory.remove(&peer).map(|(mut m, _)| {
            m.expire(now);
            m
        });
        // Message IDs and deduplication belong to one association (RFC 7252 §9.1): a new
        // secure session starts afresh.
        let memory = memory.filter(|_| channel.is_none());
        let (_, mut ctx) = self.split(slot);
        let session = Session::new(peer, key, origin, now, &mut ctx, memory, channel);
        self.sessions[slot as usize] = Some(session);
        self.by_peer.insert(peer, slot);
        Ok(slot)
    }

    /// Runs an application call on the session with `peer`, opening one if needed.
    fn with_local_session<T>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        server_name: Option<alloc::string::String>,
        call: impl FnOnce(&mut Session, &mut Ctx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (slot, fresh) = match self.lookup(peer) {
            Some(slot) => (slot, false),
            None => (self.create_local_session(now, peer, server_name)?, true),
        };
        let (session, mut ctx) = self.split(slot);
        let result = session
            .ok_or(Error::UnknownSession)
            .and_then(|s| call(s, &mut ctx));
        self.after_local_call(slot, fresh, peer, result.is_ok());
        result
    }

    /// A session opened for an application call is announced only if the call succeeded;
    /// otherwise it is discarded as if never made.
    fn after_local_call(&mut self, slot: u32, fresh: bool, peer: SocketAddr, ok: bool) {
        if fresh && !ok {
            // The session may hold a returning peer's memory; keep that, announce nothing.
            if let Some(session) = self.free_slot(slot) {
                self.remember(session);
            }
            return;
        }
        if fresh {
            self.out.event(Event::SessionNew { peer });
        }
        self.rearm(slot);
    }

    fn free_slot(&mut self, slot: u32) -> Option<Session> {
        let session = self.sessions.get_mut(slot as usize)?.take()?;
        if let Some(t) = session.armed {
            self.timers.remove(&(t, slot));
        }
        self.by_peer.remove(&session.peer);
        if self.last_peer.is_some_and(|(_, s)| s == slot) {
            self.last_peer = None;
        }
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        Some(session)
    }

    fn end_session(&mut self, slot: u32, ending: Ending) {
        if let Some(mut session) = self.free_slot(slot) {
            let (_, mut ctx) = self.split(slot);
            let on_purpose = matches!(
                ending,
                Ending::Closed(CloseReason::Local | CloseReason::Idle)
            );
            // A connection we end on purpose is released in order (RFC 8323 §5.5).
            if on_purpose && session.reliable() {
                session.release(&mut ctx);
            }
            #[cfg(feature = "security")]
            if on_purpose {
                session.close_channel(&mut ctx);
            }
            session.terminate(&mut ctx, ending);
            if session.reliable() {
                self.close_connection(session.peer, ending);
                return; // nothing to remember: no Message IDs on a stream
            }
            // Message IDs and deduplication belong to one association (RFC 7252 §9.1).
            if !session.is_secure() {
                self.remember(session);
            }
        }
    }

    fn remember(&mut self, session: Session) {
        let cap = self.config.limits.max_remembered_peers;
        if cap == 0 {
            return;
        }
        while self.memory.len() >= cap {
            let Some((_, peer, seq)) = self.memory_order.pop_front() else {
                break;
            };
            self.forget(peer, seq);
        }
        self.memory_seq += 1;
        let expires = self.now + self.config.transmission.exchange_lifetime();
        let peer = session.peer;
        self.memory
            .insert(peer, (session.into_memory(), self.memory_seq));
        self.memory_order
            .push_back((expires, peer, self.memory_seq));
    }

    fn rearm(&mut self, slot: u32) {
        let Some(Some(s)) = self.sessions.get_mut(slot as usize) else {
            return;
        };
        #[cfg(feature = "security")]
        if let Some(ending) = s.doomed.take() {
            self.end_session(slot, ending);
            return;
        }
        let next = s.next_deadline(&self.config);
        // Lazy re-arming: a deadline that moves later (or goes away) leaves the earlier entry
        // filed; when it fires, the session finds nothing due and is filed again under its real
        // deadline. Only a deadline that moves earlier touches the timer set, so the common
        // request/response cycle (deadline set, then cleared) costs no tree operations. A
        // deadline is never late; at worst the adapter wakes once for nothing.
        match (s.armed, next) {
            (Some(old), Some(t)) if old <= t => {}
            (Some(_), None) | (None, None) => {}
            (old, Some(t)) => {
                if let Some(old) = old {
                    self.timers.remove(&(old, slot));
                }
                self.timers.insert((t, slot));
                s.armed = Some(t);
            }
        }
    }

    fn stateless_reset(&mut self, peer: SocketAddr, slot: Option<u32>, mid: u16) {
        let session = slot.map(|slot| SessionKey {
            slot,
            generation: self.generations[slot as usize],
        });
        let rst = self.out.encode_empty(MessageType::Reset, mid);
        self.out.send(
            TransmitRecord {
                peer,
                session,
                message_id: Some(mid),
            },
            rst,
        );
    }
}

/// The host a request names (its Uri-Host, RFC 7252 §5.10.1), for checking a server's
/// certificate; an IP literal there is checked as an address, like the destination.
fn uri_host(request: &Packet) -> Option<alloc::string::String> {
    let host = request.get_first_option(coap_lite::CoapOption::UriHost)?;
    core::str::from_utf8(host)
        .ok()
        .map(alloc::string::String::from)
}
