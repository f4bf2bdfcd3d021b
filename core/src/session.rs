//! Per-peer state: the message layer (RFC 7252 §4) and request/response exchanges (§5) with
//! one peer, plus the session's liveness.
//!
//! A session is created on first contact (our request or ping, or a request from the peer)
//! and owns everything the engine knows about that peer, so that failing or closing it frees
//! all of it at once and ends every pending exchange with exactly one terminal event.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddr;

use coap_lite::{MessageType, Packet};

use crate::block::{self, ClientTransfer, Reassembly, ServerBlocks};
use crate::codec::{self, MessageView};
use crate::config::{Config, Keepalive};
use crate::dedup::Dedup;
use crate::error::Error;
use crate::event::{
    CloseReason, Event, ExchangeError, FailureReason, IncomingRequestId, RequestId,
};
use crate::liveness::Liveness;
use crate::observe::{self, Observation, Observer, ObserverRemoval, RecentMids, ResourceId};
use crate::outputs::{Ctx, SessionKey, TransmitRecord};
use crate::security::SecureChannel;

#[cfg(feature = "security")]
mod channel;
use crate::time::{Duration, Instant};
use crate::transmit::{Datagram, SendErrorKind, TransmitId};

/// 4.02 Bad Option, 5.03 Service Unavailable.
const BAD_OPTION: u8 = codec::code(4, 2);
const SERVICE_UNAVAILABLE: u8 = codec::code(5, 3);

/// Who opened the session. Only peer-opened (server-side) sessions are reaped when idle: a
/// session the application opened lives until the application closes it or it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Remote,
}

/// How a session ends, returned to the endpoint which removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Failed(FailureReason),
    Closed(CloseReason),
}

/// A token of 0–8 bytes stored inline (no allocation per exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    pub(crate) fn from_slice(s: &[u8]) -> Option<Token> {
        let mut bytes = [0; 8];
        bytes.get_mut(..s.len())?.copy_from_slice(s);
        Some(Token {
            len: s.len() as u8,
            bytes,
        })
    }

    fn random(ctx: &mut Ctx<'_>, len: u8) -> Token {
        let bytes = ctx.rng.next_u64().to_be_bytes();
        Token { len, bytes }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Why a Confirmable message of ours awaits its ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConPurpose {
    Request(RequestId),
    /// A separate response (RFC 7252 §5.2.2).
    Response,
    /// A ping: the application's (with its id) or a keepalive probe (None).
    Ping(Option<RequestId>),
    /// A notification to the observer with this token (RFC 7641 §4.5).
    Notification(Token),
}

/// A Confirmable message in retransmission (RFC 7252 §4.2).
#[derive(Debug)]
struct PendingCon {
    mid: u16,
    bytes: Datagram,
    purpose: ConPurpose,
    first_sent: Instant,
    retransmissions: u8,
    timeout: Duration,
    next_at: Instant,
    last_transmit: TransmitId,
    last_error: Option<SendErrorKind>,
}

/// One of our requests awaiting its response.
#[derive(Debug)]
struct ClientExchange {
    id: RequestId,
    token: Token,
    mid: u16,
    confirmable: bool,
    /// For a CON: the ACK arrived (the response will be separate). NON requests never are.
    acked: bool,
    /// Set once no retransmission is pending: from a NON's sending, from a CON's Empty ACK.
    response_deadline: Option<Instant>,
    /// A NON request's send failure (a CON's is kept on its `PendingCon`).
    last_error: Option<SendErrorKind>,
    last_transmit: Option<TransmitId>,
    /// Set for an observation (RFC 7641): the exchange outlives its first response.
    observe: Option<alloc::boxed::Box<Observation>>,
    /// The request's first transmission, from which further Block2 requests are derived.
    request: Datagram,
    /// A block-wise transfer (RFC 7959) in progress.
    block: Option<Box<ClientTransfer>>,
    /// Set on an exchange the engine started itself to fetch the rest of a notification's
    /// body (RFC 7959 §2.6); its outcome feeds that observation, never the application.
    fetch: Option<Fetch>,
}

/// The notification a fetch completes: for which observation, its sequence number and when
/// its first block arrived.
#[derive(Clone, Copy, Debug)]
struct Fetch {
    observation: RequestId,
    seq: u32,
    at: Instant,
    /// The first block's ETag: a body that ends with another one is a newer representation,
    /// whose own notification is on its way (RFC 7959 §2.6).
    etag: Option<Token>,
}

impl ClientExchange {
    /// Outstanding in the sense of NSTART (RFC 7252 §4.7): a CON not yet acknowledged, or a
    /// request still expecting a response that is not a separate one after an ACK.
    fn outstanding(&self) -> bool {
        !self.acked
    }
}

/// A request waiting for an NSTART slot, already encoded.
#[derive(Debug)]
struct Queued {
    id: RequestId,
    token: Token,
    mid: u16,
    confirmable: bool,
    bytes: Datagram,
    observe: Option<alloc::boxed::Box<Observation>>,
    block: Option<Box<ClientTransfer>>,
}

/// A request from the peer awaiting the application's response.
#[derive(Debug)]
struct Incoming {
    id: IncomingRequestId,
    mid: u16,
    token: Token,
    confirmable: bool,
    /// When the Empty ACK goes out if the application has not answered (CON only).
    ack_at: Option<Instant>,
    expires: Instant,
    /// The Observe option of a GET or FETCH: 0 registers, 1 deregisters (RFC 7641 §2).
    observe: Option<u32>,
    /// What its response needs block-wise (RFC 7959).
    block: ServerBlocks,
}

pub(crate) struct Session {
    pub(crate) peer: SocketAddr,
    pub(crate) key: SessionKey,
    origin: Origin,
    established: bool,
    /// Last request or response either way (pings excluded), for idle reaping.
    last_activity: Instant,
    next_mid: u16,
    cons: Vec<PendingCon>,
    exchanges: Vec<ClientExchange>,
    queue: VecDeque<Queued>,
    incoming: Vec<Incoming>,
    dedup: Dedup,
    /// Clients' observations of our resources (RFC 7641 §4.1).
    observers: Vec<Observer>,
    /// Request bodies being reassembled from Block1 blocks (RFC 7959 §2.5).
    blocks: Reassembly,
    pub(crate) liveness: Liveness,
    unreachable_in_row: u32,
    /// The deadline under which this session is filed in the endpoint's timer set.
    pub(crate) armed: Option<Instant>,
    /// The security association (RFC 7252 §9) of a secure endpoint's session; every
    /// message is sealed into it and opened from it.
    #[cfg(feature = "security")]
    channel: Option<Box<dyn SecureChannel>>,
    /// Set when the session must end but the call that found out cannot end it itself (a
    /// failed seal deep in the message layer); the endpoint ends it on its next look.
    #[cfg(feature = "security")]
    pub(crate) doomed: Option<Ending>,
}

/// Critical options of RFC 7252, 7641 and 7959 the engine passes to the application:
/// If-Match, Uri-Host, If-None-Match, Uri-Port, Uri-Path, Uri-Query, Accept, Block2, Block1,
/// Proxy-Uri, Proxy-Scheme. (Elective options need no recognition, RFC 7252 §5.4.1.)
fn is_known_critical(number: u16, config: &Config) -> bool {
    matches!(number, 1 | 3 | 5 | 7 | 11 | 15 | 17 | 23 | 27 | 35 | 39)
        || config.extra_critical_options.contains(&number)
}

fn new_id(ctx: &mut Ctx<'_>, slot: u32) -> u64 {
    let n = *ctx.next_id;
    *ctx.next_id += 1;
    // The slot rides in the low bits so an id leads straight to its session.
    (n << 24) | slot as u64
}

pub(crate) fn slot_of(id: u64) -> u32 {
    (id & 0xFF_FFFF) as u32
}

impl Session {
    /// A new session; `memory` is what a previous session with the same peer left behind.
    pub(crate) fn new(
        peer: SocketAddr,
        key: SessionKey,
        origin: Origin,
        now: Instant,
        ctx: &mut Ctx<'_>,
        memory: Option<PeerMemory>,
        channel: Option<Box<dyn SecureChannel>>,
    ) -> Self {
        #[cfg(not(feature = "security"))]
        let _ = channel;
        let (dedup, next_mid) = match memory {
            Some(m) => (m.dedup, m.next_mid),
            None => (Dedup::default(), ctx.rng.next_u64() as u16),
        };
        Session {
            peer,
            key,
            origin,
            established: false,
            last_activity: now,
            next_mid,
            cons: Vec::new(),
            exchanges: Vec::new(),
            queue: VecDeque::new(),
            incoming: Vec::new(),
            dedup,
            observers: Vec::new(),
            blocks: Reassembly::default(),
            liveness: Liveness::new(now, ctx.config.keepalive),
            unreachable_in_row: 0,
            armed: None,
            #[cfg(feature = "security")]
            channel,
            #[cfg(feature = "security")]
            doomed: None,
        }
    }

    fn alloc_mid(&mut self) -> u16 {
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        mid
    }

    fn send(&mut self, ctx: &mut Ctx<'_>, mid: u16, bytes: Datagram) -> TransmitId {
        let record = TransmitRecord {
            peer: self.peer,
            session: Some(self.key),
            message_id: Some(mid),
        };
        #[cfg(feature = "security")]
        if self.channel.is_some() {
            return self.seal(ctx, record, &bytes);
        }
        ctx.out.send(record, bytes)
    }

    /// Messages can flow: the session is plain, or its secure association is open.
    fn ready(&self) -> bool {
        #[cfg(feature = "security")]
        return self.channel_open();
        #[cfg(not(feature = "security"))]
        true
    }

    /// Whether the session is a secure association (RFC 7252 §9).
    pub(crate) fn is_secure(&self) -> bool {
        #[cfg(feature = "security")]
        return self.channel.is_some();
        #[cfg(not(feature = "security"))]
        false
    }

    /// Sends a new CON and starts its retransmission timer with the randomized initial timeout
    /// of RFC 7252 §4.2.
    fn send_con(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        mid: u16,
        bytes: Datagram,
        purpose: ConPurpose,
    ) {
        let base = ctx.config.transmission.ack_timeout;
        let spread = ctx.derived.initial_spread;
        let timeout = base + Duration::from_micros(ctx.rng.up_to(spread.as_micros()));
        let last_transmit = self.send(ctx, mid, bytes.clone());
        self.cons.push(PendingCon {
            mid,
            bytes,
            purpose,
            first_sent: now,
            retransmissions: 0,
            timeout,
            next_at: now + timeout,
            last_transmit,
            last_error: None,
        });
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.cons.is_empty()
            && self.exchanges.is_empty()
            && self.queue.is_empty()
            && self.incoming.is_empty()
            && self.observers.is_empty()
            && self.blocks.is_empty()
    }

    /// The earliest instant at which this session has something to do.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for c in &self.cons {
            consider(c.next_at);
        }
        for e in &self.exchanges {
            if let Some(t) = e.response_deadline {
                consider(t);
            }
            if let Some(t) = e.observe.as_ref().and_then(|o| o.reregister_at) {
                consider(t);
            }
        }
        for i in &self.incoming {
            consider(i.ack_at.map_or(i.expires, |a| a.min(i.expires)));
        }
        if let Some(t) = self.dedup.next_expiry() {
            consider(t);
        }
        if let Some(t) = self.blocks.next_expiry() {
            consider(t);
        }
        if let Some(t) = self.liveness.fail_at() {
            consider(t);
        }
        // A handshake in progress is its own probe: nothing can be sealed before it ends.
        if !self.probe_outstanding() && self.ready() {
            if let Some(t) = self.liveness.probe_at() {
                consider(t);
            }
        }
        #[cfg(feature = "security")]
        if let Some(t) = self.channel.as_ref().and_then(|c| c.poll_timeout()) {
            consider(t);
        }
        #[cfg(feature = "security")]
        if self.doomed.is_some() {
            consider(Instant::ZERO);
        }
        if self.origin == Origin::Remote && self.is_idle() {
            consider(self.last_activity + config.idle_timeout);
        }
        next
    }

    fn probe_outstanding(&self) -> bool {
        self.cons
            .iter()
            .any(|c| c.purpose == ConPurpose::Ping(None))
    }

    /// A valid message arrived from the peer.
    fn heard(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.unreachable_in_row = 0;
        if self.liveness.heard(now) && !self.established {
            self.established = true;
            ctx.out.event(Event::SessionEstablished { peer: self.peer });
        }
    }

    // ---------------------------------------------------------------- application calls

    /// Queues or sends a request. The packet's code and type were validated by the endpoint.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        packet: &Packet,
        observe: Option<alloc::boxed::Box<Observation>>,
    ) -> Result<RequestId, Error> {
        let limits = &ctx.config.limits;
        if self.queue.len() >= limits.max_queued_requests {
            return Err(Error::QueueFull);
        }
        let token = if packet.get_token().is_empty() {
            self.fresh_token(ctx)?
        } else {
            let t = Token::from_slice(packet.get_token()).ok_or(Error::TokenTooLong)?;
            if self.token_in_use(&t) {
                return Err(Error::TokenInUse);
            }
            t
        };
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let mtype = if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let mid = self.next_mid;
        let (bytes, block) =
            block::first_request(ctx.out, ctx.config, packet, mtype, mid, token.as_slice())?;
        self.alloc_mid();
        let id = RequestId(new_id(ctx, self.key.slot));
        self.queue.push_back(Queued {
            id,
            token,
            mid,
            confirmable,
            bytes,
            observe,
            block,
        });
        self.last_activity = now;
        self.pump(now, ctx);
        Ok(id)
    }

    fn token_in_use(&self, t: &Token) -> bool {
        self.exchanges.iter().any(|e| e.token == *t) || self.queue.iter().any(|q| q.token == *t)
    }

    fn fresh_token(&mut self, ctx: &mut Ctx<'_>) -> Result<Token, Error> {
        let len = ctx.config.token_length;
        if len == 0 {
            // Empty tokens are told apart by sending only one such request at a time.
            return Ok(Token {
                len: 0,
                bytes: [0; 8],
            });
        }
        for _ in 0..16 {
            let t = Token::random(ctx, len);
            if !self.token_in_use(&t) {
                return Ok(t);
            }
        }
        Err(Error::TokenInUse)
    }

    /// Sends queued requests while NSTART and the exchange cap allow.
    fn pump(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if !self.ready() {
            return; // requests wait for the handshake (bounded by max_queued_requests)
        }
        self.unpark(now, ctx);
        loop {
            let outstanding = self.exchanges.iter().filter(|e| e.outstanding()).count();
            if outstanding >= ctx.config.transmission.nstart
                || self.exchanges.len() >= ctx.config.limits.max_exchanges
            {
                return;
            }
            let Some(head) = self.queue.front() else {
                return;
            };
            if head.token.len == 0 && self.exchanges.iter().any(|e| e.token.len == 0) {
                return;
            }
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            let mut exchange = ClientExchange {
                id: q.id,
                token: q.token,
                mid: q.mid,
                confirmable: q.confirmable,
                acked: false,
                response_deadline: None,
                last_error: None,
                last_transmit: None,
                observe: q.observe,
                request: q.bytes.clone(),
                block: q.block,
                fetch: None,
            };
            if q.confirmable {
                self.send_con(now, ctx, q.mid, q.bytes, ConPurpose::Request(q.id));
            } else {
                exchange.last_transmit = Some(self.send(ctx, q.mid, q.bytes));
                exchange.response_deadline = Some(now + ctx.config.response_timeout);
            }
            self.exchanges.push(exchange);
        }
    }

    /// Confirmables of ours other than requests (which `max_exchanges` bounds): pings and
    /// separate responses.
    fn other_confirmables(&self) -> usize {
        self.cons
            .iter()
            .filter(|c| !matches!(c.purpose, ConPurpose::Request(_)))
            .count()
    }

    pub(crate) fn ping(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Result<RequestId, Error> {
        if self.other_confirmables() >= ctx.config.limits.max_confirmables {
            return Err(Error::QueueFull);
        }
        let id = RequestId(new_id(ctx, self.key.slot));
        let mid = self.alloc_mid();
        let bytes = ctx.out.encode_empty(MessageType::Confirmable, mid);
        self.send_con(now, ctx, mid, bytes, ConPurpose::Ping(Some(id)));
        Ok(id)
    }

    pub(crate) fn set_keepalive(&mut self, now: Instant, keepalive: Option<Keepalive>) {
        self.liveness.set_keepalive(now, keepalive);
    }

    /// Answers an incoming request: piggybacked if the Empty ACK has not gone out yet, else a
    /// separate CON response; a NON request gets a NON response (RFC 7252 §5.2). When
    /// `max_confirmables` separate responses already await their ACK, a further one goes as
    /// NON (which §5.2.2 allows), so a peer that never acknowledges cannot grow our state.
    pub(crate) fn respond(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: IncomingRequestId,
        response: &Packet,
        observe: Option<ResourceId>,
    ) -> Result<bool, Error> {
        let index = self
            .incoming
            .iter()
            .position(|i| i.id == id)
            .ok_or(Error::UnknownRequest)?;
        let inc = &self.incoming[index];
        // A registration is accepted only for a 2.xx answer and within the observer caps;
        // otherwise the response goes out without Observe, so the client knows (RFC 7641 §3.1).
        let register = observe.filter(|&resource| {
            let known = self.observers.iter().any(|o| o.token == inc.token);
            let limits = &ctx.config.limits;
            inc.observe == Some(0)
                && u8::from(response.header.code) >> 5 == 2
                && (known || self.observers.len() < limits.max_observers)
                && (known || ctx.observe.count(resource) < limits.max_observers_per_resource)
        });
        let with_observe;
        let response = match register {
            Some(_) => {
                let mut p = response.clone();
                p.set_observe_value(ctx.observe.next_seq());
                with_observe = p;
                &with_observe
            }
            None => response,
        };
        let shaped =
            block::shape_response(ctx.config, &inc.block, inc.token.len as usize, response);
        let response = shaped.as_ref().unwrap_or(response);
        let (mtype, mid) = if inc.confirmable && inc.ack_at.is_some() {
            (MessageType::Acknowledgement, inc.mid)
        } else if inc.confirmable && self.other_confirmables() < ctx.config.limits.max_confirmables
        {
            (MessageType::Confirmable, self.next_mid)
        } else {
            (MessageType::NonConfirmable, self.next_mid)
        };
        let bytes = ctx.out.encode_packet(
            response,
            mtype,
            mid,
            inc.token.as_slice(),
            ctx.config.max_message_size,
        )?;
        let inc = self.incoming.swap_remove(index);
        self.last_activity = now;
        match mtype {
            MessageType::Acknowledgement => {
                self.dedup.set_reply(inc.mid, bytes.clone());
                self.send(ctx, mid, bytes);
            }
            MessageType::Confirmable => {
                self.alloc_mid();
                self.send_con(now, ctx, mid, bytes, ConPurpose::Response);
            }
            _ => {
                self.alloc_mid();
                self.send(ctx, mid, bytes);
            }
        }
        if let Some(resource) = register {
            self.add_observer(now, ctx, resource, inc.token, mid);
        }
        Ok(register.is_some())
    }

    /// Adds (or refreshes) the observer with `token`: one entry per endpoint and token
    /// (RFC 7641 §4.1); the same token registered for another resource replaces the old entry.
    fn add_observer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        resource: ResourceId,
        token: Token,
        mid: u16,
    ) {
        if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
            if o.resource == resource {
                o.confirmed = now;
                o.recent.push(mid);
                return;
            }
            self.remove_observer(ctx, token, ObserverRemoval::Replaced);
        }
        let mut recent = RecentMids::default();
        recent.push(mid);
        self.observers.push(Observer {
            resource,
            token,
            confirmed: now,
            recent,
        });
        ctx.observe.add(resource, self.key);
    }

    /// Removes the observer with `token`, if any, and tells the application.
    fn remove_observer(&mut self, ctx: &mut Ctx<'_>, token: Token, reason: ObserverRemoval) {
        if matches!(
            reason,
            ObserverRemoval::Deregistered | ObserverRemoval::Replaced
        ) {
            // The client said it no longer wants these notifications: stop retransmitting one
            // still in flight. (A final error notification, by contrast, must still arrive.)
            self.cons
                .retain(|c| c.purpose != ConPurpose::Notification(token));
        }
        if let Some(i) = self.observers.iter().position(|o| o.token == token) {
            let o = self.observers.swap_remove(i);
            ctx.observe.remove(o.resource, self.key);
            ctx.out.event(Event::ObserverRemoved {
                peer: self.peer,
                resource: o.resource,
                reason,
            });
        }
    }

    /// Sends `notification` (its Observe option already set, or absent for a final non-2.xx
    /// one) to every observer of `resource` on this session. Non-confirmable unless
    /// `confirmable`, a Confirmable one is still in flight (RFC 7641 §4.5.2 replaces it), or the
    /// observer has not confirmed its interest for 24 hours (§4.5). A final notification ends
    /// the observations. Returns how many observers were notified.
    pub(crate) fn notify(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        resource: ResourceId,
        notification: &Packet,
        confirmable: bool,
    ) -> usize {
        let last = u8::from(notification.header.code) >> 5 != 2;
        let mut sent = 0;
        let tokens: Vec<Token> = self
            .observers
            .iter()
            .filter(|o| o.resource == resource)
            .map(|o| o.token)
            .collect();
        for token in tokens {
            let in_flight = self
                .cons
                .iter()
                .position(|c| c.purpose == ConPurpose::Notification(token));
            let Some(o) = self.observers.iter().find(|o| o.token == token) else {
                continue;
            };
            let con =
                confirmable || in_flight.is_some() || now >= o.confirmed + observe::CON_INTERVAL;
            let mtype = if con {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let mid = self.next_mid;
            // A large representation goes as its first block; the client fetches the rest
            // with ordinary GETs, which the application answers in full (RFC 7959 §2.6).
            let shaped = block::shape_response(
                ctx.config,
                &block::ServerBlocks::default(),
                token.len as usize,
                notification,
            );
            let bytes = match ctx.out.encode_packet(
                shaped.as_ref().unwrap_or(notification),
                mtype,
                mid,
                token.as_slice(),
                ctx.config.max_message_size,
            ) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::debug!("{}: notification not sent: {e}", self.peer);
                    continue;
                }
            };
            self.alloc_mid();
            match in_flight {
                // §4.5.2: the new notification takes the old one's place and carries on with
                // its retransmission counter and timeout.
                Some(ci) => {
                    let transmit = self.send(ctx, mid, bytes.clone());
                    let c = &mut self.cons[ci];
                    c.mid = mid;
                    c.bytes = bytes;
                    c.next_at = now + c.timeout;
                    c.last_transmit = transmit;
                    c.last_error = None;
                }
                None if con => {
                    self.send_con(now, ctx, mid, bytes, ConPurpose::Notification(token));
                }
                None => {
                    self.send(ctx, mid, bytes);
                }
            }
            if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
                o.recent.push(mid);
            }
            sent += 1;
            if last {
                self.remove_observer(ctx, token, ObserverRemoval::ErrorResponse);
            }
        }
        if sent > 0 {
            self.last_activity = now;
        }
        sent
    }

    /// Ends one of our requests or pings early. Returns false if it is not pending here.
    pub(crate) fn cancel(&mut self, ctx: &mut Ctx<'_>, id: RequestId, now: Instant) -> bool {
        let peer = self.peer;
        if let Some(i) = self.queue.iter().position(|q| q.id == id) {
            self.queue.remove(i);
        } else if let Some(i) = self.exchanges.iter().position(|e| e.id == id) {
            self.exchanges.swap_remove(i);
            self.stop_request_cons(&[id]);
            self.drop_fetches(id);
        } else if let Some(i) = self
            .cons
            .iter()
            .position(|c| c.purpose == ConPurpose::Ping(Some(id)))
        {
            self.cons.swap_remove(i);
            ctx.out.event(Event::PingFailed {
                id,
                peer,
                error: ExchangeError::Cancelled,
            });
            return true;
        } else {
            return false;
        }
        ctx.out.event(Event::RequestFailed {
            id,
            peer,
            error: ExchangeError::Cancelled,
        });
        self.pump(now, ctx);
        true
    }

    // ---------------------------------------------------------------- inbound messages

    /// Handles a validated datagram from this session's peer.
    pub(crate) fn on_message(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        self.heard(now, ctx);
        let h = msg.header;
        match h.mtype {
            MessageType::Confirmable | MessageType::NonConfirmable if h.is_reserved_class() => {
                self.reject(ctx, h.mtype, h.message_id);
            }
            MessageType::Confirmable if h.is_empty() => {
                // CoAP ping (RFC 7252 §4.3): answered with Reset.
                let rst = ctx.out.encode_empty(MessageType::Reset, h.message_id);
                self.send(ctx, h.message_id, rst);
            }
            MessageType::NonConfirmable if h.is_empty() => {} // §4.3: NON must not be empty
            MessageType::Confirmable | MessageType::NonConfirmable if h.is_request() => {
                self.on_request(now, ctx, msg);
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                self.on_response(now, ctx, msg)
            }
            // §4.2: an ACK carrying a request or a reserved class is rejected by ignoring it.
            MessageType::Acknowledgement if h.is_request() || h.is_reserved_class() => {}
            MessageType::Acknowledgement => self.on_ack(now, ctx, msg),
            // §4.2: a Reset must be empty; anything else is silently ignored.
            MessageType::Reset if !h.is_empty() => {}
            MessageType::Reset => self.on_reset(now, ctx, h.message_id),
        }
    }

    /// Rejects a message (§4.2/§4.3): Reset for a CON, and for a NON too (allowed, and it
    /// tells the sender at once), nothing otherwise.
    fn reject(&mut self, ctx: &mut Ctx<'_>, mtype: MessageType, mid: u16) {
        if matches!(
            mtype,
            MessageType::Confirmable | MessageType::NonConfirmable
        ) {
            let rst = ctx.out.encode_empty(MessageType::Reset, mid);
            self.send(ctx, mid, rst);
        }
    }

    /// Returns true if `mid` was seen before (and re-sends the cached reply to a duplicate CON).
    fn duplicate(&mut self, ctx: &mut Ctx<'_>, mtype: MessageType, mid: u16) -> bool {
        let Some(entry) = self.dedup.get(mid) else {
            return false;
        };
        if mtype == MessageType::Confirmable {
            if let Some(reply) = entry.reply.clone() {
                self.send(ctx, mid, reply);
            } else if let Some(inc) = self
                .incoming
                .iter_mut()
                .find(|i| i.mid == mid && i.ack_at.is_some())
            {
                // The peer retransmitted while the application is still working on it: each
                // duplicate CON should be acknowledged (§4.5), so the Empty ACK goes out now and
                // the answer becomes a separate response, which stops the retransmissions.
                inc.ack_at = None;
                let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
                self.reply_cached(ctx, mid, ack);
            }
        }
        true
    }

    fn remember(&mut self, now: Instant, ctx: &mut Ctx<'_>, mtype: MessageType, mid: u16) {
        let confirmable = mtype == MessageType::Confirmable;
        let lifetime = if confirmable {
            ctx.derived.exchange_lifetime
        } else {
            ctx.derived.non_lifetime
        };
        self.dedup.insert(
            mid,
            confirmable,
            now + lifetime,
            ctx.config.limits.max_dedup_entries,
        );
    }

    /// Sends a reply to a CON and caches it for duplicates.
    fn reply_cached(&mut self, ctx: &mut Ctx<'_>, mid: u16, bytes: Datagram) {
        self.dedup.set_reply(mid, bytes.clone());
        self.send(ctx, mid, bytes);
    }

    fn on_request(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        let h = msg.header;
        let mid = h.message_id;
        if self.duplicate(ctx, h.mtype, mid) {
            return;
        }
        self.remember(now, ctx, h.mtype, mid);
        self.last_activity = now;
        let confirmable = h.mtype == MessageType::Confirmable;
        let config = ctx.config;
        if msg
            .unrecognized_critical(|n| is_known_critical(n, config))
            .is_some()
        {
            // §5.4.1: 4.02 for a CON request; a NON request is rejected.
            if confirmable {
                // The diagnostic payload (§5.5.2) is dropped if it would exceed the size limit.
                let diagnostic: &[u8] = b"unrecognized critical option";
                let fits = 5 + msg.token.len() + diagnostic.len() <= ctx.config.max_message_size;
                let ack = ctx.out.encode_simple(
                    MessageType::Acknowledgement,
                    BAD_OPTION,
                    mid,
                    msg.token,
                    if fits { diagnostic } else { b"" },
                );
                self.reply_cached(ctx, mid, ack);
            } else {
                self.reject(ctx, h.mtype, mid);
            }
            return;
        }
        let Some(token) = Token::from_slice(msg.token) else {
            return;
        };
        let Some((request, block)) = self.block_request(now, ctx, msg) else {
            return; // answered by the engine (2.31 Continue, or a block-wise error)
        };
        if self.incoming.len() >= ctx.config.limits.max_pending_requests {
            // The application is not keeping up: answer for it rather than grow.
            if confirmable {
                let ack = ctx.out.encode_simple(
                    MessageType::Acknowledgement,
                    SERVICE_UNAVAILABLE,
                    mid,
                    msg.token,
                    b"",
                );
                self.reply_cached(ctx, mid, ack);
            } else {
                let own = self.alloc_mid();
                let non = ctx.out.encode_simple(
                    MessageType::NonConfirmable,
                    SERVICE_UNAVAILABLE,
                    own,
                    msg.token,
                    b"",
                );
                self.send(ctx, own, non);
            }
            return;
        }
        let (ack_at, lifetime) = if confirmable {
            (
                Some(now + ctx.config.empty_ack_delay),
                ctx.derived.exchange_lifetime,
            )
        } else {
            (None, ctx.derived.non_lifetime)
        };
        // Observe means something on GET and FETCH only (RFC 7641 §2, RFC 8132 §2.4).
        let observe = match h.code {
            1 | 5 => msg.option(observe::OBSERVE).and_then(observe::value),
            _ => None,
        };
        if observe == Some(1) {
            self.remove_observer(ctx, token, ObserverRemoval::Deregistered);
        }
        let id = IncomingRequestId(new_id(ctx, self.key.slot));
        self.incoming.push(Incoming {
            id,
            mid,
            token,
            confirmable,
            ack_at,
            expires: now + lifetime,
            observe,
            block,
        });
        ctx.out.event(Event::Request {
            id,
            peer: self.peer,
            request: request.unwrap_or_else(|| msg.to_packet()),
        });
    }

    fn on_response(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        let h = msg.header;
        let mid = h.message_id;
        if self.duplicate(ctx, h.mtype, mid) {
            return;
        }
        self.remember(now, ctx, h.mtype, mid);
        let confirmable = h.mtype == MessageType::Confirmable;
        let config = ctx.config;
        let index = self
            .exchanges
            .iter()
            .position(|e| e.token.as_slice() == msg.token);
        let acceptable = msg
            .unrecognized_critical(|n| is_known_critical(n, config))
            .is_none()
            && block::well_formed(msg);
        let Some(index) = index.filter(|_| acceptable) else {
            // No matching exchange, or a critical option we cannot honour: reject (§4.2,
            // §5.3.2, §5.4.1), remembering the Reset for duplicates.
            let rst = ctx.out.encode_empty(MessageType::Reset, mid);
            self.reply_cached(ctx, mid, rst);
            return;
        };
        if confirmable {
            let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
            self.reply_cached(ctx, mid, ack);
        }
        self.complete(now, ctx, index, msg);
    }

    /// Delivers a response to exchange `index` and frees its slot (unless it is a notification
    /// that keeps an observation going).
    fn complete(&mut self, now: Instant, ctx: &mut Ctx<'_>, index: usize, msg: &MessageView<'_>) {
        if self.exchanges[index].observe.is_some() && self.notification(now, ctx, index, msg) {
            return;
        }
        let Some(response) = self.block_response(now, ctx, index, msg) else {
            return; // a block-wise transfer goes on, broke off, or this block was stale
        };
        let e = self.exchanges.swap_remove(index);
        // A response also acknowledges a CON request whose ACK was lost (§5.2.2).
        self.stop_request_cons(&[e.id]);
        self.last_activity = now;
        match e.fetch {
            Some(fetch) => self.fetched(ctx, fetch, response),
            None => ctx.out.event(Event::Response {
                id: e.id,
                peer: self.peer,
                response,
            }),
        }
        self.pump(now, ctx);
    }

    /// The whole body of a notification that came in blocks has arrived: deliver it, if its
    /// observation still wants it and nothing newer was delivered meanwhile.
    fn fetched(&mut self, ctx: &mut Ctx<'_>, fetch: Fetch, mut response: Packet) {
        let peer = self.peer;
        let etag = response
            .get_first_option(coap_lite::CoapOption::ETag)
            .and_then(|v| Token::from_slice(v));
        if etag != fetch.etag {
            return;
        }
        let Some(obs) = self
            .exchanges
            .iter_mut()
            .find(|e| e.id == fetch.observation)
            .and_then(|e| e.observe.as_mut())
            .filter(|o| !o.deregistering)
        else {
            return;
        };
        if obs
            .last
            .is_some_and(|(v1, t1)| !observe::fresh(v1, t1, fetch.seq, fetch.at))
        {
            return;
        }
        obs.last = Some((fetch.seq, fetch.at));
        // The blocks were fetched without Observe; the notification's number goes back on.
        response.set_observe_value(fetch.seq);
        ctx.out.event(Event::Notification {
            id: fetch.observation,
            peer,
            response,
        });
    }

    /// Starts fetching the rest of a notification whose first block is `msg` (RFC 7959
    /// §2.6): GET requests for the further blocks, without Observe and under a token of their
    /// own (the observation's token stays the registration's). A newer notification replaces
    /// a fetch still running; without room for another exchange the notification is dropped,
    /// and the next one is fetched.
    fn start_fetch(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        observation: RequestId,
        seq: u32,
        msg: &MessageView<'_>,
    ) {
        self.drop_fetches(observation);
        let peer = self.peer;
        if self.exchanges.len() >= ctx.config.limits.max_exchanges || ctx.config.token_length == 0 {
            log::debug!("{peer}: no room to fetch a notification's blocks; dropped");
            return;
        }
        let Ok(token) = self.fresh_token(ctx) else {
            return;
        };
        let Some(e) = self.exchanges.iter().find(|e| e.id == observation) else {
            return;
        };
        let Some(obs) = e.observe.as_ref() else {
            return;
        };
        let mut request = obs.request.clone();
        request.clear_option(coap_lite::CoapOption::Observe);
        let mtype = if e.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        // Only the template of the block requests: never sent as such.
        let Ok(template) = ctx
            .out
            .encode_packet(&request, mtype, 0, token.as_slice(), usize::MAX)
        else {
            return;
        };
        let mut fetcher = ClientExchange {
            id: RequestId(new_id(ctx, self.key.slot) | RequestId::INTERNAL),
            token,
            mid: 0,
            confirmable: e.confirmable,
            acked: true,
            response_deadline: None,
            last_error: None,
            last_transmit: None,
            observe: None,
            request: template,
            block: None,
            fetch: Some(Fetch {
                observation,
                seq,
                at: now,
                etag: msg.option(block::ETAG).and_then(Token::from_slice),
            }),
        };
        if let block::Step::Next =
            block::on_response(&mut fetcher.block, ctx.config, &fetcher.request, msg, false)
        {
            self.exchanges.push(fetcher);
            self.next_block(now, ctx, self.exchanges.len() - 1);
        }
    }

    /// Stops retransmitting the CONs of requests `ids` (answered, ended or abandoned).
    fn stop_request_cons(&mut self, ids: &[RequestId]) {
        self.cons
            .retain(|c| !matches!(c.purpose, ConPurpose::Request(id) if ids.contains(&id)));
    }

    /// Ends the fetches running for `observation` (their outcome is no longer wanted).
    fn drop_fetches(&mut self, observation: RequestId) {
        let mut dropped = Vec::new();
        self.exchanges.retain(|e| {
            let mine = e.fetch.is_some_and(|f| f.observation == observation);
            if mine {
                dropped.push(e.id);
            }
            !mine
        });
        self.stop_request_cons(&dropped);
    }

    /// A response to observation `index`. A 2.xx with an Observe option is a notification:
    /// delivered if fresh (RFC 7641 §3.4), and the observation goes on (returns true).
    /// Anything else ends it and is delivered as the final response (returns false).
    fn notification(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        msg: &MessageView<'_>,
    ) -> bool {
        let seq = msg.option(observe::OBSERVE).and_then(observe::value);
        let success = msg.header.code_class() == 2;
        let peer = self.peer;
        let e = &mut self.exchanges[index];
        let id = e.id;
        let Some(obs) = e.observe.as_mut() else {
            return false;
        };
        let Some(seq) = seq.filter(|_| success) else {
            return false;
        };
        if obs.deregistering {
            // Notifications still in flight when we deregistered are acknowledged but no
            // longer delivered; the answer to the deregistration (without Observe) ends it.
            return true;
        }
        e.acked = true;
        e.response_deadline = None;
        // Newer than what was delivered, and than a notification whose blocks are being
        // fetched (RFC 7641 §3.4).
        let fetching = self
            .exchanges
            .iter()
            .find_map(|e| e.fetch.filter(|f| f.observation == id));
        let fresh = |last: Option<(u32, Instant)>| {
            last.is_none_or(|(v1, t1)| observe::fresh(v1, t1, seq, now))
        };
        let Some(obs) = self.exchanges[index].observe.as_mut() else {
            return false;
        };
        let mut fetch = false;
        if fresh(obs.last) && fresh(fetching.map(|f| (f.seq, f.at))) {
            let max_age = observe::max_age(msg.option(observe::MAX_AGE));
            obs.reregister_at = Some(now + max_age + observe::REREGISTER_MARGIN);
            let block2 = msg.option(block::BLOCK2).map(block::Block::decode);
            if block2.is_some_and(|b| b.is_ok_and(|b| b.more)) {
                // Only the first block of a larger body: fetch the rest (RFC 7959 §2.6).
                fetch = true;
            } else {
                obs.last = Some((seq, now));
                ctx.out.event(Event::Notification {
                    id,
                    peer,
                    response: msg.to_packet(),
                });
            }
        }
        // The (re-)registration is answered, piggybacked or not.
        self.stop_request_cons(&[id]);
        if fetch {
            self.start_fetch(now, ctx, id, seq, msg);
        }
        self.last_activity = now;
        self.pump(now, ctx);
        true
    }

    /// Re-sends observation `index`'s request with Observe = `value` (0 re-registers, 1
    /// deregisters) and a new Message ID, under the same token (RFC 7641 §3.3.1, §3.6).
    fn resend_observe(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        value: u32,
    ) -> Result<(), Error> {
        let e = &self.exchanges[index];
        let Some(obs) = e.observe.as_ref() else {
            return Err(Error::UnknownRequest);
        };
        let mut request = obs.request.clone();
        request.set_observe_value(value);
        let mtype = if e.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let mid = self.next_mid;
        let bytes = ctx.out.encode_packet(
            &request,
            mtype,
            mid,
            e.token.as_slice(),
            ctx.config.max_message_size,
        )?;
        let (id, confirmable) = (e.id, e.confirmable);
        self.alloc_mid();
        self.stop_request_cons(&[id]);
        let transmit = if confirmable {
            self.send_con(now, ctx, mid, bytes, ConPurpose::Request(id));
            None
        } else {
            Some(self.send(ctx, mid, bytes))
        };
        let e = &mut self.exchanges[index];
        e.mid = mid;
        e.last_error = None;
        e.last_transmit = transmit;
        // A CON is bounded by its retransmissions (its Empty ACK starts the response timeout);
        // a NON by the response timeout.
        e.response_deadline = (!confirmable).then(|| now + ctx.config.response_timeout);
        self.last_activity = now;
        Ok(())
    }

    /// Re-registers observations whose Max-Age lapsed without a fresh notification.
    fn reregister(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        for i in 0..self.exchanges.len() {
            let Some(obs) = self.exchanges[i].observe.as_mut() else {
                continue;
            };
            if obs.reregister_at.is_none_or(|t| t > now) {
                continue;
            }
            obs.reregister_at = None;
            // The answer starts a new baseline: the server may have restarted its numbering.
            obs.last = None;
            if let Err(e) = self.resend_observe(now, ctx, i, 0) {
                log::debug!("{}: re-registration not sent: {e}", self.peer);
            }
        }
    }

    /// Deregisters observation `id` with a GET carrying Observe = 1 (RFC 7641 §3.6); the
    /// answer to it is the observation's final [`Event::Response`].
    pub(crate) fn deregister(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: RequestId,
    ) -> Result<(), Error> {
        if self.queue.iter().any(|q| q.id == id && q.observe.is_some()) {
            // Never sent: there is nothing to deregister at the server.
            self.cancel(ctx, id, now);
            return Ok(());
        }
        let index = self
            .exchanges
            .iter()
            .position(|e| e.id == id && e.observe.as_ref().is_some_and(|o| !o.deregistering))
            .ok_or(Error::UnknownRequest)?;
        self.resend_observe(now, ctx, index, 1)?;
        if let Some(obs) = self.exchanges[index].observe.as_mut() {
            obs.deregistering = true;
            obs.reregister_at = None;
        }
        Ok(())
    }

    fn on_ack(&mut self, now: Instant, ctx: &mut Ctx<'_>, msg: &MessageView<'_>) {
        let mid = msg.header.message_id;
        let Some(ci) = self.cons.iter().position(|c| c.mid == mid) else {
            return;
        };
        match self.cons[ci].purpose {
            ConPurpose::Request(id) => {
                let Some(ei) = self.exchanges.iter().position(|e| e.id == id) else {
                    self.cons.swap_remove(ci);
                    return;
                };
                if msg.header.is_empty() {
                    self.cons.swap_remove(ci);
                    let e = &mut self.exchanges[ei];
                    e.acked = true;
                    e.response_deadline = Some(now + ctx.config.response_timeout);
                    self.pump(now, ctx);
                } else {
                    let config = ctx.config;
                    let token_ok = self.exchanges[ei].token.as_slice() == msg.token;
                    // A piggybacked response with the wrong token or an unknown critical option
                    // is rejected by ignoring it (§4.2, §5.4.1); the CON keeps retransmitting.
                    if token_ok
                        && msg
                            .unrecognized_critical(|n| is_known_critical(n, config))
                            .is_none()
                        && block::well_formed(msg)
                    {
                        self.complete(now, ctx, ei, msg);
                    }
                }
            }
            ConPurpose::Response => {
                self.cons.swap_remove(ci);
            }
            ConPurpose::Notification(token) => {
                self.cons.swap_remove(ci);
                if let Some(o) = self.observers.iter_mut().find(|o| o.token == token) {
                    o.confirmed = now;
                }
            }
            ConPurpose::Ping(id) => {
                // Some peers answer a ping with an Empty ACK instead of Reset; both prove life.
                let c = self.cons.swap_remove(ci);
                if let Some(id) = id {
                    ctx.out.event(Event::Pong {
                        id,
                        peer: self.peer,
                        rtt: now - c.first_sent,
                    });
                }
            }
        }
    }

    fn on_reset(&mut self, now: Instant, ctx: &mut Ctx<'_>, mid: u16) {
        let peer = self.peer;
        if let Some(ci) = self.cons.iter().position(|c| c.mid == mid) {
            let c = self.cons.swap_remove(ci);
            match c.purpose {
                ConPurpose::Request(id) => {
                    self.exchanges.retain(|e| e.id != id);
                    ctx.out.event(Event::RequestFailed {
                        id,
                        peer,
                        error: ExchangeError::Reset,
                    });
                    self.pump(now, ctx);
                }
                ConPurpose::Response => {
                    log::debug!("{peer}: separate response rejected with Reset")
                }
                ConPurpose::Ping(Some(id)) => {
                    ctx.out.event(Event::Pong {
                        id,
                        peer,
                        rtt: now - c.first_sent,
                    });
                }
                ConPurpose::Ping(None) => {}
                ConPurpose::Notification(token) => {
                    self.remove_observer(ctx, token, ObserverRemoval::Reset);
                }
            }
        } else if let Some(token) = self
            .observers
            .iter()
            .find(|o| o.recent.contains(mid))
            .map(|o| o.token)
        {
            // A Reset to a Non-confirmable notification (or to the registration's response).
            self.remove_observer(ctx, token, ObserverRemoval::Reset);
        } else if let Some(ei) = self
            .exchanges
            .iter()
            .position(|e| !e.confirmable && e.mid == mid)
        {
            let e = self.exchanges.swap_remove(ei);
            ctx.out.event(Event::RequestFailed {
                id: e.id,
                peer,
                error: ExchangeError::Reset,
            });
            self.pump(now, ctx);
        }
    }

    // ---------------------------------------------------------------- block-wise (RFC 7959)

    /// What a response to exchange `index` means block-wise (see `block::on_response`): the
    /// response to deliver, or None when the transfer goes on (the next block is sent, or
    /// waits for an NSTART slot), broke off (the request has failed), or the block was stale.
    fn block_response(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        msg: &MessageView<'_>,
    ) -> Option<Packet> {
        let piggybacked = msg.header.mtype == MessageType::Acknowledgement;
        let e = &mut self.exchanges[index];
        match block::on_response(&mut e.block, ctx.config, &e.request, msg, piggybacked) {
            block::Step::Deliver(response) => Some(response),
            block::Step::Ignore => None,
            block::Step::Next => {
                self.next_block(now, ctx, index);
                None
            }
            block::Step::Fail(error) => {
                self.fail_transfer(now, ctx, index, error);
                None
            }
        }
    }

    /// Encodes the next block request of exchange `index` and parks it; `pump` sends it as
    /// soon as NSTART allows (at once, unless other requests took the slot meanwhile).
    fn next_block(&mut self, now: Instant, ctx: &mut Ctx<'_>, index: usize) {
        let e = &mut self.exchanges[index];
        let id = e.id;
        // The answered block's CON (if its ACK was lost) needs no more retransmissions.
        self.stop_request_cons(&[id]);
        let mid = self.next_mid;
        let e = &mut self.exchanges[index];
        let Some(transfer) = e.block.as_mut() else {
            return;
        };
        match transfer.encode_next(ctx.out, ctx.config, mid, e.token.as_slice()) {
            Ok(bytes) => {
                transfer.parked = Some((mid, bytes));
                // Not outstanding and no deadline while parked.
                e.acked = true;
                e.response_deadline = None;
                self.alloc_mid();
                self.last_activity = now;
                self.pump(now, ctx);
            }
            Err(_) => {
                let error = ExchangeError::SendFailed(SendErrorKind::TooBig);
                self.fail_transfer(now, ctx, index, error);
            }
        }
    }

    /// Sends parked block requests while NSTART allows: a transfer's next block goes before
    /// queued requests, which are younger.
    fn unpark(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        while let Some(i) = self
            .exchanges
            .iter()
            .position(|e| e.block.as_ref().is_some_and(|t| t.parked.is_some()))
        {
            let outstanding = self.exchanges.iter().filter(|e| e.outstanding()).count();
            if outstanding >= ctx.config.transmission.nstart {
                return;
            }
            let e = &mut self.exchanges[i];
            let Some((mid, bytes)) = e.block.as_mut().and_then(|t| t.parked.take()) else {
                return;
            };
            e.mid = mid;
            e.acked = false;
            e.last_error = None;
            e.last_transmit = None;
            e.response_deadline = None;
            if e.confirmable {
                let id = e.id;
                self.send_con(now, ctx, mid, bytes, ConPurpose::Request(id));
            } else {
                e.response_deadline = Some(now + ctx.config.response_timeout);
                let transmit = self.send(ctx, mid, bytes);
                self.exchanges[i].last_transmit = Some(transmit);
            }
        }
    }

    /// Ends exchange `index` mid-transfer with `error`.
    fn fail_transfer(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        index: usize,
        error: ExchangeError,
    ) {
        let e = self.exchanges.swap_remove(index);
        self.stop_request_cons(&[e.id]);
        self.last_activity = now;
        ctx.out.event(Event::RequestFailed {
            id: e.id,
            peer: self.peer,
            error,
        });
        self.pump(now, ctx);
    }

    /// The Block options of an incoming request (see `Reassembly::on_request`): the request
    /// to give the application (None: as received) and what its response needs, or None when
    /// the engine has answered it (2.31 Continue for a non-final Block1 block, or an error).
    fn block_request(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        msg: &MessageView<'_>,
    ) -> Option<(Option<Packet>, ServerBlocks)> {
        let expires = now + ctx.derived.exchange_lifetime;
        let mid = msg.header.message_id;
        match self.blocks.on_request(ctx.config, expires, msg) {
            block::Inbound::Deliver(request, info) => Some((request, info)),
            block::Inbound::Answer(answer) => {
                if msg.header.mtype == MessageType::Confirmable {
                    let ack = answer.encode(ctx.out, MessageType::Acknowledgement, mid, msg.token);
                    self.reply_cached(ctx, mid, ack);
                } else {
                    let own = self.alloc_mid();
                    let non = answer.encode(ctx.out, MessageType::NonConfirmable, own, msg.token);
                    self.send(ctx, own, non);
                }
                None
            }
            block::Inbound::Reject => {
                self.reject(ctx, msg.header.mtype, mid);
                None
            }
        }
    }

    // ---------------------------------------------------------------- send results

    /// The adapter could not send transmit `id` (message `mid`). The message counts as lost:
    /// its normal retransmission schedule stands, so a dead link never causes a busy loop.
    pub(crate) fn on_send_failed(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        id: TransmitId,
        mid: Option<u16>,
        kind: SendErrorKind,
    ) -> Option<Ending> {
        let peer = self.peer;
        if let Some(ci) = self
            .cons
            .iter()
            .position(|c| Some(c.mid) == mid && c.last_transmit == id)
        {
            self.cons[ci].last_error = Some(kind);
            // A keepalive probe is never ended early: the next one would be due at once and
            // fail at once again (a busy loop on a path that rejects every send). It stays on
            // its backoff like any lost message; the keepalive deadline decides.
            if kind == SendErrorKind::TooBig && self.cons[ci].purpose != ConPurpose::Ping(None) {
                // Retransmitting the same bytes cannot succeed.
                let c = self.cons.swap_remove(ci);
                self.end_con(now, ctx, c.purpose, ExchangeError::SendFailed(kind));
            }
        } else if let Some(ei) = self
            .exchanges
            .iter()
            .position(|e| e.last_transmit == Some(id))
        {
            self.exchanges[ei].last_error = Some(kind);
            if kind == SendErrorKind::TooBig {
                let e = self.exchanges.swap_remove(ei);
                ctx.out.event(Event::RequestFailed {
                    id: e.id,
                    peer,
                    error: ExchangeError::SendFailed(kind),
                });
                self.pump(now, ctx);
            }
        }
        if kind == SendErrorKind::Unreachable {
            self.unreachable_in_row += 1;
            if let Some(n) = ctx.config.fail_after_unreachable {
                if self.unreachable_in_row >= n {
                    return Some(Ending::Failed(FailureReason::Unreachable {
                        failures: self.unreachable_in_row,
                    }));
                }
            }
        }
        None
    }

    /// A send went out: a streak of unreachable failures is broken.
    pub(crate) fn on_send_ok(&mut self) {
        self.unreachable_in_row = 0;
    }

    /// A CON of ours is given up: tell whoever waited for it.
    fn end_con(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        purpose: ConPurpose,
        error: ExchangeError,
    ) {
        let peer = self.peer;
        match purpose {
            ConPurpose::Request(id) => {
                self.exchanges.retain(|e| e.id != id);
                ctx.out.event(Event::RequestFailed { id, peer, error });
                self.pump(now, ctx);
            }
            ConPurpose::Ping(Some(id)) => ctx.out.event(Event::PingFailed { id, peer, error }),
            ConPurpose::Ping(None) => {} // the keepalive deadline decides, not the probe
            ConPurpose::Response => log::debug!("{peer}: separate response never acknowledged"),
            ConPurpose::Notification(token) => {
                self.remove_observer(ctx, token, ObserverRemoval::NotAcknowledged);
            }
        }
    }

    // ---------------------------------------------------------------- timers

    /// Runs everything due at `now`. Returns how the session ends, if it does.
    pub(crate) fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Ending> {
        // Liveness first: a dead peer is reported whatever else is pending.
        if self.liveness.fail_at().is_some_and(|t| t <= now) {
            let silent_for = now - self.liveness.last_heard();
            return Some(Ending::Failed(FailureReason::KeepaliveTimeout {
                silent_for,
            }));
        }
        #[cfg(feature = "security")]
        if let Some(ending) = self.doomed.take() {
            return Some(ending);
        }
        #[cfg(feature = "security")]
        if let Some(ending) = self.channel_timer(now, ctx, false) {
            return Some(ending);
        }
        self.retransmit(now, ctx);
        self.expire_exchanges(now, ctx);
        self.reregister(now, ctx);
        self.serve_pending(now, ctx);
        self.dedup.expire(now);
        self.blocks.expire(now);
        if !self.probe_outstanding()
            && self.ready()
            && self.liveness.probe_at().is_some_and(|t| t <= now)
        {
            let mid = self.alloc_mid();
            let bytes = ctx.out.encode_empty(MessageType::Confirmable, mid);
            self.send_con(now, ctx, mid, bytes, ConPurpose::Ping(None));
        }
        if self.origin == Origin::Remote
            && self.is_idle()
            && self.last_activity + ctx.config.idle_timeout <= now
        {
            return Some(Ending::Closed(CloseReason::Idle));
        }
        #[cfg(feature = "security")]
        return self.doomed.take();
        #[cfg(not(feature = "security"))]
        None
    }

    fn retransmit(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let max = ctx.config.transmission.max_retransmit;
        let mut i = 0;
        while i < self.cons.len() {
            if self.cons[i].next_at > now {
                i += 1;
                continue;
            }
            if self.cons[i].retransmissions < max {
                let (mid, bytes) = (self.cons[i].mid, self.cons[i].bytes.clone());
                let id = self.send(ctx, mid, bytes);
                let c = &mut self.cons[i];
                c.retransmissions += 1;
                c.timeout = c.timeout * 2;
                c.next_at = now + c.timeout;
                c.last_transmit = id;
                c.last_error = None;
                i += 1;
            } else {
                let c = self.cons.swap_remove(i);
                let error = c
                    .last_error
                    .map_or(ExchangeError::Timeout, ExchangeError::SendFailed);
                // Over a secure association, silence through every retransmission may mean
                // the peer no longer has the association (it restarted, RFC 6347 §4.2.8):
                // end the session so the next request starts a new handshake. Keepalive
                // probes are left to the keepalive deadline.
                #[cfg(feature = "security")]
                if self.channel.is_some()
                    && c.purpose != ConPurpose::Ping(None)
                    && self.liveness.last_heard() <= c.first_sent
                {
                    self.doom(Ending::Failed(FailureReason::NoResponse));
                }
                self.end_con(now, ctx, c.purpose, error);
            }
        }
    }

    fn expire_exchanges(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let peer = self.peer;
        let mut ended = Vec::new();
        self.exchanges.retain(|e| {
            if e.response_deadline.is_some_and(|t| t <= now) {
                let error = e
                    .last_error
                    .map_or(ExchangeError::Timeout, ExchangeError::SendFailed);
                ctx.out.event(Event::RequestFailed {
                    id: e.id,
                    peer,
                    error,
                });
                ended.push(e.id);
                false
            } else {
                true
            }
        });
        if !ended.is_empty() {
            // Nothing of an ended exchange may go on (a CON of it could fail again later).
            self.stop_request_cons(&ended);
            self.pump(now, ctx);
        }
    }

    /// Sends Empty ACKs for requests the application is slow to answer (§5.2.2) and forgets
    /// requests it never answered.
    fn serve_pending(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        let mut i = 0;
        while i < self.incoming.len() {
            let inc = &mut self.incoming[i];
            if inc.expires <= now {
                log::debug!(
                    "{}: request {:?} never answered; forgotten",
                    self.peer,
                    inc.id
                );
                self.incoming.swap_remove(i);
                continue;
            }
            if inc.ack_at.is_some_and(|t| t <= now) {
                inc.ack_at = None;
                let mid = inc.mid;
                let ack = ctx.out.encode_empty(MessageType::Acknowledgement, mid);
                self.reply_cached(ctx, mid, ack);
            }
            i += 1;
        }
    }

    /// Ends every pending exchange with one terminal event each, then the session's own event.
    pub(crate) fn terminate(&mut self, ctx: &mut Ctx<'_>, ending: Ending) {
        let peer = self.peer;
        let error = match ending {
            Ending::Failed(reason) => ExchangeError::SessionFailed(reason),
            Ending::Closed(_) => ExchangeError::SessionClosed,
        };
        for q in self.queue.drain(..) {
            ctx.out.event(Event::RequestFailed {
                id: q.id,
                peer,
                error,
            });
        }
        for e in self.exchanges.drain(..) {
            ctx.out.event(Event::RequestFailed {
                id: e.id,
                peer,
                error,
            });
        }
        for c in self.cons.drain(..) {
            if let ConPurpose::Ping(Some(id)) = c.purpose {
                ctx.out.event(Event::PingFailed { id, peer, error });
            }
        }
        self.incoming.clear();
        for o in self.observers.drain(..) {
            ctx.observe.remove(o.resource, self.key);
            ctx.out.event(Event::ObserverRemoved {
                peer,
                resource: o.resource,
                reason: ObserverRemoval::SessionEnded,
            });
        }
        ctx.out.event(match ending {
            Ending::Failed(reason) => Event::SessionFailed { peer, reason },
            Ending::Closed(reason) => Event::SessionClosed { peer, reason },
        });
    }

    /// What must outlive the session (see [`PeerMemory`]).
    pub(crate) fn into_memory(self) -> PeerMemory {
        PeerMemory {
            dedup: self.dedup,
            next_mid: self.next_mid,
        }
    }

    /// State held, for tests and diagnostics: (CONs in flight, exchanges, queued, pending
    /// incoming, dedup entries).
    pub(crate) fn footprint(&self) -> SessionFootprint {
        SessionFootprint {
            confirmables_in_flight: self.cons.len(),
            exchanges: self.exchanges.len(),
            queued_requests: self.queue.len(),
            pending_requests: self.incoming.len(),
            dedup_entries: self.dedup.len(),
            observers: self.observers.len(),
            block_transfers: self.blocks.len(),
        }
    }

    pub(crate) fn is_established(&self) -> bool {
        self.established
    }

    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }
}

/// What a session leaves behind for EXCHANGE_LIFETIME after it ends: its deduplication cache,
/// so a retransmission that arrives later is still recognised and answered from the cache
/// (RFC 7252 §4.5), and its Message ID counter, so a new session with the same peer does not
/// re-use a recent Message ID (§4.4).
#[derive(Debug)]
pub(crate) struct PeerMemory {
    dedup: Dedup,
    next_mid: u16,
}

impl PeerMemory {
    pub(crate) fn expire(&mut self, now: Instant) {
        self.dedup.expire(now);
    }
}

/// How much state one session holds; see [`Endpoint::session_info`](crate::Endpoint::session_info).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFootprint {
    /// Confirmable messages awaiting acknowledgement (requests, separate responses, pings).
    pub confirmables_in_flight: usize,
    /// Our requests awaiting a response.
    pub exchanges: usize,
    /// Our requests waiting for an NSTART slot.
    pub queued_requests: usize,
    /// Incoming requests awaiting the application's response.
    pub pending_requests: usize,
    /// Message IDs remembered for deduplication.
    pub dedup_entries: usize,
    /// Clients observing our resources on this session (RFC 7641).
    pub observers: usize,
    /// Request bodies being reassembled from Block1 blocks (RFC 7959), at most
    /// [`Limits::max_block_transfers`](crate::Limits::max_block_transfers). (Our own requests
    /// in a block-wise transfer are counted in `exchanges`.)
    pub block_transfers: usize,
}
