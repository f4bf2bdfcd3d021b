//! Per-peer state: the message layer (RFC 7252 §4) and request/response exchanges (§5) with
//! one peer, plus the session's liveness.
//!
//! A session is created on first contact (our request or ping, or a request from the peer)
//! and owns everything the engine knows about that peer, so that failing or closing it frees
//! all of it at once and ends every pending exchange with exactly one terminal event.

use alloc::boxed::Box;
use core::net::SocketAddr;

use coap_lite::MessageType;

use crate::block::Reassembly;
use crate::codec::{self};
use crate::config::{Config, Keepalive};
use crate::dedup::Dedup;
use crate::event::{CloseReason, Event, ExchangeError, FailureReason};
use crate::liveness::Liveness;
use crate::observe::{Observer, ObserverRemoval};
use crate::outputs::{Ctx, SessionKey, TransmitRecord};
use crate::security::SecureChannel;
use crate::slim::SlimVec;

mod blockwise;
#[cfg(feature = "security")]
mod channel;
mod exchange;
mod message;
mod observation;
mod server;
mod stream;

use crate::time::Instant;
use crate::transmit::{Datagram, TransmitId};
use exchange::{ClientExchange, Fetch, Queued};
use message::{ConPurpose, PendingCon};
use server::Incoming;

/// 4.02 Bad Option, 5.03 Service Unavailable.
const BAD_OPTION: u8 = codec::code(4, 2);
const SERVICE_UNAVAILABLE: u8 = codec::code(5, 3);
/// 5.00 Internal Server Error: a kept response that no longer fits the path.
const INTERNAL_ERROR: u8 = codec::code(5, 0);

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

pub(crate) struct Session {
    pub(crate) peer: SocketAddr,
    pub(crate) key: SessionKey,
    origin: Origin,
    established: bool,
    /// Last request or response either way (pings excluded), for idle reaping.
    last_activity: Instant,
    next_mid: u16,
    cons: SlimVec<PendingCon>,
    exchanges: SlimVec<ClientExchange>,
    queue: SlimVec<Queued>,
    incoming: SlimVec<Incoming>,
    dedup: Dedup,
    /// Clients' observations of our resources (RFC 7641 §4.1).
    observers: SlimVec<Observer>,
    /// Request bodies being reassembled from Block1 blocks (RFC 7959 §2.5).
    blocks: Reassembly,
    pub(crate) liveness: Liveness,
    unreachable_in_row: u32,
    /// The deadline under which this session is filed in the endpoint's timer heap.
    pub(crate) armed: Option<Instant>,
    /// The security association (RFC 7252 §9) of a secure endpoint's session; every
    /// message is sealed into it and opened from it.
    #[cfg(feature = "security")]
    channel: Option<Box<dyn SecureChannel>>,
    /// Set when the session must end but the call that found out cannot end it itself (a
    /// failed seal deep in the message layer); the endpoint ends it on its next look.
    pub(crate) doomed: Option<Box<Ending>>,
    /// The connection, on a CoAP-over-TCP endpoint (RFC 8323); None over datagrams.
    #[cfg(feature = "tcp")]
    stream: Option<Box<stream::Stream>>,
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
            cons: SlimVec::new(),
            exchanges: SlimVec::new(),
            queue: SlimVec::new(),
            incoming: SlimVec::new(),
            dedup,
            observers: SlimVec::new(),
            blocks: Reassembly::default(),
            liveness: Liveness::new(now, ctx.config.keepalive),
            unreachable_in_row: 0,
            armed: None,
            #[cfg(feature = "security")]
            channel,
            doomed: None,
            #[cfg(feature = "tcp")]
            stream: match ctx.config.transport {
                // A connection we accepted is open from the start; ours opens when the
                // adapter says so.
                crate::config::Transport::Tcp => {
                    Some(Box::new(stream::Stream::new(origin == Origin::Remote)))
                }
                crate::config::Transport::Udp => None,
            },
        }
    }

    fn send(&mut self, ctx: &mut Ctx<'_>, mid: u16, bytes: Datagram) -> TransmitId {
        if self.stream_ref().is_some() {
            return self.stream_send(ctx, &bytes);
        }
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

    /// Messages can flow: the session is plain, or its secure association is open; a
    /// connection is open.
    fn ready(&self) -> bool {
        #[cfg(feature = "security")]
        if !self.channel_open() {
            return false;
        }
        self.stream_ready()
    }

    /// Whether the transport is reliable (a stream): no message types, no acknowledgements,
    /// no retransmission.
    pub(crate) fn reliable(&self) -> bool {
        self.stream_ref().is_some()
    }

    /// Whether the session is a secure association (RFC 7252 §9).
    pub(crate) fn is_secure(&self) -> bool {
        #[cfg(feature = "security")]
        return self.channel.is_some();
        #[cfg(not(feature = "security"))]
        false
    }

    /// Gives back the memory of its empty collections, so that a quiet session costs only
    /// its fixed part. At most once a second once it has freed something: a session in
    /// steady use keeps its collections rather than allocating them again for every
    /// request (what a session holds between trims is bounded by its limits).
    #[inline]
    pub(crate) fn trim(&mut self, now: Instant) {
        // Units of 2^20 µs (about a second): a shift, not a division, on every call.
        let secs = (now.as_micros() >> 20) as u32;
        let last = self.dedup.trimmed_at;
        if last != u32::MAX && secs.wrapping_sub(last) < 1 {
            return;
        }
        self.release_empty(secs);
    }

    #[cold]
    fn release_empty(&mut self, secs: u32) {
        // Not `||`: every empty collection is released.
        let freed = self.cons.release_if_empty()
            | self.exchanges.release_if_empty()
            | self.queue.release_if_empty()
            | self.incoming.release_if_empty()
            | (cfg!(feature = "observe") && self.observers.release_if_empty())
            | self.blocks.release_if_empty();
        if freed {
            self.dedup.trimmed_at = secs;
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.cons.is_empty()
            && self.stream_ref().is_none_or(|s| s.is_idle())
            && self.exchanges.is_empty()
            && self.queue.is_empty()
            && self.incoming.is_empty()
            && (!cfg!(feature = "observe") || self.observers.is_empty())
            && self.blocks.is_empty()
    }

    /// The earliest instant at which this session has something to do.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Instant> {
        // Runs after every input to the session: a plain minimum over microseconds, with
        // u64::MAX for "none", costs fewer instructions than folding `Option`s.
        let mut next = u64::MAX;
        let mut consider = |t: Instant| next = next.min(t.as_micros());
        for c in &self.cons {
            consider(c.next_at);
        }
        for e in &self.exchanges {
            if let Some(t) = e.response_deadline {
                consider(t);
            }
            let observation = e.observe.as_ref().filter(|_| cfg!(feature = "observe"));
            if let Some(t) = observation.and_then(|o| o.reregister_at) {
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
        if self.doomed.is_some() {
            consider(Instant::ZERO);
        }
        if let Some(t) = self
            .stream_ref()
            .and_then(|s| s.deadline(config.response_timeout))
        {
            consider(t);
        }
        if self.origin == Origin::Remote && self.is_idle() {
            consider(self.last_activity + config.idle_timeout);
        }
        (next != u64::MAX).then(|| Instant::from_micros(next))
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

    pub(crate) fn set_keepalive(&mut self, now: Instant, keepalive: Option<Keepalive>) {
        self.liveness.set_keepalive(now, keepalive);
    }

    // ---------------------------------------------------------------- inbound messages

    // ---------------------------------------------------------------- block-wise (RFC 7959)

    // ---------------------------------------------------------------- send results

    /// Send `id` went out: a streak of unreachable failures is broken, and a write is no
    /// longer owed to the connection (requests held back by the backlog may go now).
    pub(crate) fn on_send_ok(&mut self, now: Instant, ctx: &mut Ctx<'_>, id: TransmitId) {
        self.unreachable_in_row = 0;
        if self.reliable() {
            self.stream_written(id);
            self.pump(now, ctx);
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
        if let Some(ending) = self.doomed.take() {
            return Some(*ending);
        }
        #[cfg(feature = "security")]
        if let Some(ending) = self.channel_timer(now, ctx, false) {
            return Some(ending);
        }
        self.retransmit(now, ctx);
        if cfg!(feature = "client") {
            self.expire_exchanges(now, ctx);
        }
        if cfg!(all(feature = "client", feature = "observe")) {
            self.reregister(now, ctx);
        }
        if cfg!(feature = "server") {
            self.serve_pending(now, ctx);
        }
        self.dedup.expire(now, &mut ctx.out.pool);
        self.blocks.expire(now);
        if self.reliable() {
            self.stream_expire_pings(now, ctx);
        }
        if !self.probe_outstanding()
            && self.ready()
            && self.liveness.probe_at().is_some_and(|t| t <= now)
        {
            if self.reliable() {
                self.stream_ping(now, ctx, None); // RFC 8323 §5.4: 7.02 Ping
            } else {
                let mid = self.alloc_mid();
                let bytes = ctx.out.encode_empty(MessageType::Confirmable, mid);
                self.send_con(now, ctx, mid, bytes, ConPurpose::Ping(None));
            }
        }
        if self.origin == Origin::Remote
            && self.is_idle()
            && self.last_activity + ctx.config.idle_timeout <= now
        {
            return Some(Ending::Closed(CloseReason::Idle));
        }
        self.doomed.take().map(|e| *e)
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
            e.failed(ctx.out, peer, error);
        }
        for c in self.cons.drain(..) {
            if let ConPurpose::Ping(Some(id)) = c.purpose {
                ctx.out.event(Event::PingFailed { id, peer, error });
            }
        }
        self.stream_end_pings(ctx, error);
        self.incoming.clear();
        for o in self
            .observers
            .drain(..)
            .filter(|_| cfg!(feature = "observe"))
        {
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
            confirmables_in_flight: self.cons.len()
                + self.stream_ref().map_or(0, |s| s.pings_in_flight()),
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
    /// A memory that stands for a session whose next Message ID was `next_mid`.
    #[cfg(test)]
    pub(crate) fn with_next_mid(next_mid: u16) -> Self {
        PeerMemory {
            dedup: Dedup::default(),
            next_mid,
        }
    }

    #[cfg(test)]
    pub(crate) fn next_mid(&self) -> u16 {
        self.next_mid
    }

    pub(crate) fn expire(&mut self, now: Instant, pool: &mut crate::transmit::DatagramPool) {
        self.dedup.expire(now, pool);
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
