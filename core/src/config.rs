//! Configuration: RFC 7252 §4.8 transmission parameters, keepalive, and resource limits.

use alloc::vec::Vec;
use core::fmt;

use crate::time::Duration;

/// The transmission parameters of RFC 7252 §4.8, with the RFC's defaults.
///
/// The derived times of §4.8.2 (`MAX_TRANSMIT_SPAN`, `EXCHANGE_LIFETIME`, ...) are computed from
/// these, so changing `ack_timeout` or `max_retransmit` moves them consistently.
///
/// ```
/// use coap_engine::{Duration, TransmissionParameters};
/// let p = TransmissionParameters::default();
/// assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
/// assert_eq!(p.max_transmit_wait(), Duration::from_secs(93));
/// assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
/// assert_eq!(p.non_lifetime(), Duration::from_secs(145));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TransmissionParameters {
    /// ACK_TIMEOUT: the minimum initial retransmission timeout (default 2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR as thousandths (default 1500 = 1.5); the initial timeout is drawn
    /// uniformly from `[ack_timeout, ack_timeout × factor]`. Integer so that no_std targets
    /// need no float support and the draw is exact.
    pub ack_random_factor_milli: u32,
    /// MAX_RETRANSMIT (default 4).
    pub max_retransmit: u8,
    /// NSTART: outstanding interactions per peer (default 1); further requests wait in a
    /// bounded queue ([`Limits::max_queued_requests`]).
    pub nstart: usize,
    /// MAX_LATENCY (default 100 s), used only for the derived lifetimes.
    pub max_latency: Duration,
    /// PROCESSING_DELAY (default: ACK_TIMEOUT), used only for EXCHANGE_LIFETIME.
    pub processing_delay: Duration,
}

impl Default for TransmissionParameters {
    fn default() -> Self {
        TransmissionParameters {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor_milli: 1500,
            max_retransmit: 4,
            nstart: 1,
            max_latency: Duration::from_secs(100),
            processing_delay: Duration::from_secs(2),
        }
    }
}

impl TransmissionParameters {
    /// `d × ack_random_factor_milli / 1000`, exact and saturating, in u64 arithmetic: the
    /// whole thousands and the rest scale apart (`rest × factor` < 1000 × 2^32 fits), which
    /// spares a microcontroller's code 128-bit multiplication and division.
    fn scaled(&self, d: Duration) -> Duration {
        let factor = u64::from(self.ack_random_factor_milli);
        let (thousands, rest) = div_rem_1000(d.as_micros());
        Duration::from_micros(
            thousands
                .saturating_mul(factor)
                .saturating_add(div_rem_1000(rest * factor).0),
        )
    }
    /// ACK_TIMEOUT × ACK_RANDOM_FACTOR: the largest initial retransmission timeout.
    pub fn max_initial_timeout(&self) -> Duration {
        self.scaled(self.ack_timeout)
    }
    /// MAX_TRANSMIT_SPAN = ACK_TIMEOUT × (2^MAX_RETRANSMIT − 1) × ACK_RANDOM_FACTOR.
    pub fn max_transmit_span(&self) -> Duration {
        self.scaled(self.ack_timeout * ((1u64 << self.max_retransmit.min(62)) - 1))
    }
    /// MAX_TRANSMIT_WAIT = ACK_TIMEOUT × (2^(MAX_RETRANSMIT + 1) − 1) × ACK_RANDOM_FACTOR.
    pub fn max_transmit_wait(&self) -> Duration {
        self.scaled(self.ack_timeout * ((1u64 << (self.max_retransmit.min(61) + 1)) - 1))
    }
    /// EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 × MAX_LATENCY + PROCESSING_DELAY: how long a
    /// Message ID of a CON stays in the deduplication cache.
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency * 2 + self.processing_delay
    }
    /// NON_LIFETIME = MAX_TRANSMIT_SPAN + MAX_LATENCY: how long a Message ID of a NON stays in
    /// the deduplication cache.
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }
}

/// `x / 1000` and `x % 1000` by long division in 16-bit digits, each step a 32-bit division:
/// a 32-bit microcontroller has no 64-bit divide, and the library routine that stands in for
/// one costs 864 bytes of code for the three times it is used here.
fn div_rem_1000(x: u64) -> (u64, u64) {
    let (hi, lo) = ((x >> 32) as u32, x as u32);
    let (q1, r1) = (hi / 1000, hi % 1000);
    // Each partial remainder is below 1000 < 2^10, so remainder and next digit fit 26 bits.
    let mid = (r1 << 16) | (lo >> 16);
    let (q2, r2) = (mid / 1000, mid % 1000);
    let low = (r2 << 16) | (lo & 0xFFFF);
    let (q3, r3) = (low / 1000, low % 1000);
    (
        (u64::from(q1) << 32) | (u64::from(q2) << 16) | u64::from(q3),
        u64::from(r3),
    )
}

/// Automatic keepalive: the liveness contract's parameters (see the crate docs).
///
/// When nothing has been heard from the peer for `interval`, the engine sends a CoAP ping
/// (an Empty Confirmable message, answered by Reset). If still nothing has been heard by
/// `last_heard + interval + timeout`, the session fails with
/// [`FailureReason::KeepaliveTimeout`](crate::FailureReason::KeepaliveTimeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence after which a ping is sent.
    pub interval: Duration,
    /// Further silence after which the session is failed.
    pub timeout: Duration,
}

impl Keepalive {
    /// The longest silence a live session may have: `interval + timeout`.
    pub fn bound(&self) -> Duration {
        self.interval + self.timeout
    }
}

/// Hard caps that keep memory bounded whatever peers send. Each cap's behaviour when reached
/// is part of the API contract and documented on the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of sessions (peers). A datagram from a new peer beyond it is rejected
    /// statelessly (a Confirmable message gets a Reset, anything else is dropped) and no
    /// session is created; [`Endpoint::request`](crate::Endpoint::request) to a new peer
    /// returns [`Error::SessionLimit`](crate::Error::SessionLimit). At most 2^24.
    pub max_sessions: usize,
    /// Requests waiting for an NSTART slot on one session; beyond it `request` returns
    /// [`Error::QueueFull`](crate::Error::QueueFull).
    pub max_queued_requests: usize,
    /// Our requests in flight (sent, not yet answered) on one session, whatever NSTART says.
    pub max_exchanges: usize,
    /// Our own Confirmable messages other than requests awaiting their ACK on one session:
    /// application pings and separate responses. Beyond it [`Endpoint::ping`](crate::Endpoint::ping)
    /// returns [`Error::QueueFull`](crate::Error::QueueFull) and a late answer is sent as a
    /// Non-confirmable separate response (RFC 7252 §5.2.2). Keepalive probes are exempt. On a
    /// connection it caps the application's 7.02 Pings awaiting their Pong.
    pub max_confirmables: usize,
    /// Incoming requests waiting for the application's response on one session; a further
    /// request is answered by the engine with 5.03 Service Unavailable (RFC 7252 §5.9.3).
    pub max_pending_requests: usize,
    /// Message IDs remembered for deduplication on one session; when full, the oldest entry is
    /// forgotten early (a duplicate of it arriving later would be processed again).
    pub max_dedup_entries: usize,
    /// Peers whose ended session's deduplication cache and Message ID counter are kept for
    /// EXCHANGE_LIFETIME, so that a late retransmission is still recognised and a new session
    /// does not re-use a recent Message ID (RFC 7252 §4.4, §4.5). When full, the oldest is
    /// forgotten early. The cap counts what was filed in the last EXCHANGE_LIFETIME, including
    /// entries since taken back by a returning peer (a peer that comes and goes often holds
    /// places until they age out), so that its bookkeeping is bounded too. At most 2^24;
    /// 0 remembers nothing.
    pub max_remembered_peers: usize,
    /// Transmits waiting to be polled; when full the oldest is dropped as if lost on the wire
    /// (a CON will be retransmitted). Only reached by an adapter that does not drain. Not
    /// applied on a stream endpoint, whose writes are bounded by `max_unwritten_bytes`
    /// instead (a dropped write would cut a hole in the byte stream).
    pub max_queued_transmits: usize,
    /// Recent transmits whose send result can still be reported; older reports are ignored.
    pub tracked_transmits: usize,
    /// Sent datagrams the engine is done with (an answer whose deduplication entry expired,
    /// a request whose exchange ended) kept to hold the next ones of the same length, so a
    /// steady exchange of messages sends without allocating. They hold at most this many
    /// datagrams' bytes while idle; 0 frees every datagram at once.
    pub recycled_datagrams: usize,
    /// Clients' observations of our resources held on one session (RFC 7641 §4.1). A
    /// registration beyond it is answered as a plain GET: the response carries no Observe
    /// option, which tells the client it is not observing (§3.1).
    pub max_observers: usize,
    /// Observers of one resource, over all sessions; beyond it registrations are answered as
    /// plain GETs too.
    pub max_observers_per_resource: usize,
    /// Request bodies being reassembled from Block1 blocks (RFC 7959 §2.5) on one session. A
    /// further transfer's first block is answered with 4.13 Request Entity Too Large (which
    /// §2.9.3 allows "at any time" a server lacks the resources to store blocks) until one
    /// completes or expires; 0 refuses every multi-block request body. A partial body is
    /// dropped EXCHANGE_LIFETIME after its latest block.
    ///
    /// The same bound covers the answers kept for further blocks (RFC 7959 §2.7): the answer
    /// to a request of a method other than GET or FETCH (PUT, POST, ...) that is larger than
    /// one block is kept per request target (method and options but the block ones) for
    /// EXCHANGE_LIFETIME, replaced by the next such request to that target, and the requests
    /// for its further blocks are served from it without reaching the application. A body
    /// being received takes precedence: it evicts the oldest kept answer.
    pub max_block_transfers: usize,
    /// Handshakes in progress that peers opened (server role of a secure endpoint, after
    /// the peer proved its address with a cookie round trip, RFC 6347 §4.2.1). A further
    /// peer's ClientHello is dropped, with no state kept, until one completes, fails or
    /// times out; the peer's own retransmission tries again. Until the cookie round trip no
    /// handshake holds any state at all, so spoofed ClientHellos cost nothing here. With
    /// DTLS a half-open handshake holds about 5.5 KB (PSK) or 9 KB (certificates), measured
    /// by `core/tests/dtls_memory.rs`, and never more than 16 buffered datagrams of at most
    /// 18 KiB each: the default 64 stay under 2 MB in practice, and under 19 MB whatever
    /// peers send.
    pub max_handshakes: usize,
    /// Bytes written to one connection (CoAP over TCP) that the adapter has not yet reported
    /// done ([`Endpoint::handle_send_result`](crate::Endpoint::handle_send_result) with `Ok`,
    /// which stream adapters must report), each write counting 64 bytes more for its
    /// bookkeeping (so that many tiny writes are bounded too). Beyond it, application calls
    /// for that peer (requests, answers, pings, deregistrations) are refused with
    /// [`Error::QueueFull`](crate::Error::QueueFull), notifications are skipped, queued
    /// requests, re-registrations and further blocks wait, and the peer's Pings and the
    /// requests the engine answers itself (5.03 beyond `max_pending_requests`, 4.02, 2.31
    /// Continue, further blocks of a kept response) go unanswered, until the adapter catches
    /// up; only the engine's own one-off signals (its CSM, Release, Abort) still go.
    /// So a connection holds at most this much plus one message and those signals. (A stream
    /// endpoint never drops a queued write as `max_queued_transmits` does for datagrams.)
    pub max_unwritten_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 4096,
            max_queued_requests: 64,
            max_exchanges: 64,
            max_confirmables: 32,
            max_pending_requests: 32,
            max_dedup_entries: 256,
            max_remembered_peers: 4096,
            max_queued_transmits: 4096,
            tracked_transmits: 4096,
            recycled_datagrams: 16,
            max_observers: 16,
            max_observers_per_resource: 4096,
            max_block_transfers: 4,
            max_handshakes: 64,
            max_unwritten_bytes: 256 * 1024,
        }
    }
}

/// Block-wise transfers (RFC 7959), which the engine carries out for the application in both
/// roles, so that bodies larger than one datagram need no application code:
///
/// - as a client, a response with a Block2 option is reassembled (the further blocks are
///   requested by the engine) and delivered as one [`Event::Response`](crate::Event::Response)
///   with the whole body; a request body larger than `block_size` (or too large for
///   [`Config::max_message_size`]) is sent in Block1 blocks;
/// - as a server, a request body sent in Block1 blocks is reassembled before the application
///   sees one [`Event::Request`](crate::Event::Request), and a response larger than the block
///   the client asked for (or than `block_size`, or than `max_message_size`) is cut into the
///   block the request asked for, statelessly: the application answers every block request
///   with the whole representation.
///
/// ```
/// use coap_engine::{Blockwise, Config};
/// let config = Config {
///     blockwise: Blockwise { block_size: 256, max_body_size: 16 * 1024, ..Blockwise::default() },
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blockwise {
    /// Our preferred block size in bytes: a power of two from 16 to 1024 (SZX 0–6, RFC 7959
    /// §2.2; default 1024). Request bodies are sent in blocks of at most this size, responses
    /// are cut into blocks of at most this size, and when a server answers with larger blocks
    /// the next request asks for this size instead (late negotiation, §2.4). Blocks are made
    /// smaller still when a message would otherwise exceed [`Config::max_message_size`].
    pub block_size: usize,
    /// Ask for `block_size` blocks in the first request already (early negotiation, RFC 7959
    /// §2.4) rather than waiting for a server to answer with blocks (default false, because
    /// Block2 is a critical option: a server that does not implement RFC 7959 rejects a request
    /// carrying it with 4.02 Bad Option). A request whose packet carries its own Block2 option
    /// with block number 0 negotiates that option's size early, whatever this says.
    pub early_negotiation: bool,
    /// The largest body the engine reassembles, in bytes (default 64 KiB): a response body
    /// beyond it ends the request with
    /// [`ExchangeError::BodyTooLarge`](crate::ExchangeError::BodyTooLarge) (at once if the
    /// server announces a larger Size2), and a request body beyond it is answered with 4.13
    /// Request Entity Too Large carrying this value in Size1 (RFC 7959 §2.9.3).
    pub max_body_size: usize,
}

impl Default for Blockwise {
    fn default() -> Self {
        Blockwise {
            block_size: 1024,
            early_negotiation: false,
            max_body_size: 64 * 1024,
        }
    }
}

/// What an endpoint's socket speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: CoAP over UDP (RFC 7252), or DTLS with a security layer (`coap://`,
    /// `coaps://`). The default.
    #[default]
    Udp,
    /// A byte stream per peer: CoAP over TCP (RFC 8323), or TLS with a security layer
    /// (`coap+tcp://`, `coaps+tcp://`). The adapter opens, accepts and closes connections as
    /// the engine asks ([`Endpoint::poll_stream_command`](crate::Endpoint::poll_stream_command)).
    Tcp,
}

/// Everything an [`Endpoint`](crate::Endpoint) is configured with.
///
/// ```
/// use coap_engine::{Config, Duration, Keepalive};
/// let config = Config {
///     keepalive: Some(Keepalive { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) }),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// RFC 7252 §4.8 parameters.
    pub transmission: TransmissionParameters,
    /// Length of the random tokens given to requests that carry none (0–8, default 4;
    /// RFC 7252 §5.3.1). With 0, only one request per peer is in flight at a time, because
    /// responses could not otherwise be told apart. Short tokens (0–1 bytes) also cannot tell
    /// a late separate response to a request that already ended (timed out, cancelled) from
    /// the answer to a newer request with the same token; use 4 or more where that matters.
    pub token_length: u8,
    /// How long the engine waits for the application to answer a Confirmable request before it
    /// sends an Empty ACK and turns the answer into a separate response (default 1 s; keep it
    /// below `ack_timeout` so clients do not retransmit needlessly).
    pub empty_ack_delay: Duration,
    /// How long a client waits for a response once no retransmission is pending: for a NON
    /// request from its sending, for a CON request from its Empty ACK (default
    /// MAX_TRANSMIT_WAIT, 93 s). Must be greater than zero.
    pub response_timeout: Duration,
    /// Keepalive applied to every session (None: off). Can be changed per session with
    /// [`Endpoint::set_keepalive`](crate::Endpoint::set_keepalive).
    pub keepalive: Option<Keepalive>,
    /// Fail a session early after this many consecutive "unreachable" send results with
    /// nothing heard in between (None: never early). It can only make detection earlier than
    /// the keepalive bound, never later.
    pub fail_after_unreachable: Option<u32>,
    /// A session a peer opened (server side) with no request or response for this long and
    /// nothing pending is closed with [`CloseReason::Idle`](crate::CloseReason::Idle)
    /// (default 300 s; keep it ≥ EXCHANGE_LIFETIME so deduplication state outlives it).
    pub idle_timeout: Duration,
    /// Largest message the engine will build (default 1152 bytes, RFC 7252 §4.6). Request and
    /// response bodies that do not fit go block-wise (see [`Blockwise`]).
    pub max_message_size: usize,
    /// Critical option numbers the application understands beyond those the engine knows
    /// (RFC 7252's If-Match, Uri-Host, If-None-Match, Uri-Port, Uri-Path, Uri-Query, Accept,
    /// Proxy-Uri, Proxy-Scheme, and RFC 7959's Block1/Block2; elective options need no
    /// listing). Requests with any other critical option are answered with 4.02 Bad Option
    /// (RFC 7252 §5.4.1). The engine does not process OSCORE (RFC 8613, option 9): an
    /// application that does lists 9 here and gets such requests as they arrived.
    pub extra_critical_options: Vec<u16>,
    /// Block-wise transfers (RFC 7959).
    pub blockwise: Blockwise,
    /// Resource caps.
    pub limits: Limits,
    /// Datagrams or streams (default [`Transport::Udp`]).
    pub transport: Transport,
    /// The security layer (RFC 7252 §9), or `None` for plain CoAP over UDP (the default).
    /// With one, every session of the endpoint is a secure association (`coaps://`, e.g.
    /// DTLS with feature `dtls`); see [`Security`](crate::Security).
    #[cfg(feature = "security")]
    pub security: Option<crate::security::Security>,
}

impl Default for Config {
    fn default() -> Self {
        let transmission = TransmissionParameters::default();
        Config {
            response_timeout: transmission.max_transmit_wait(),
            transmission,
            token_length: 4,
            empty_ack_delay: Duration::from_secs(1),
            keepalive: None,
            fail_after_unreachable: None,
            idle_timeout: Duration::from_secs(300),
            max_message_size: 1152,
            extra_critical_options: Vec::new(),
            blockwise: Blockwise::default(),
            limits: Limits::default(),
            transport: Transport::Udp,
            #[cfg(feature = "security")]
            security: None,
        }
    }
}

/// A configuration value out of range; the message says which and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    allowed: &'static str,
}

impl ConfigError {
    /// The offending field's name.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config: `{}` must be {}",
            self.field, self.allowed
        )
    }
}

impl core::error::Error for ConfigError {}

/// What [`Config::validate`] checks, as (field, what it must be), in the order checked.
const RULES: [(&str, &str); 14] = [
    ("transmission.ack_timeout", "greater than zero"),
    (
        "transmission.ack_random_factor_milli",
        "at least 1000 (a factor of 1.0)",
    ),
    ("transmission.max_retransmit", "at most 20"),
    ("transmission.nstart", "at least 1"),
    ("token_length", "between 0 and 8 (RFC 7252 §3)"),
    ("keepalive", "an interval and a timeout greater than zero"),
    ("fail_after_unreachable", "None or at least 1"),
    ("response_timeout", "greater than zero"),
    ("max_message_size", "at least 16 bytes"),
    (
        "blockwise.block_size",
        "a power of two from 16 to 1024 (RFC 7959 §2.2)",
    ),
    ("transport", "Udp: CoAP over TCP needs feature `tcp`"),
    ("limits.max_sessions", "between 1 and 2^24"),
    ("limits", "non-zero per-session caps"),
    ("limits", "non-zero transmit queue and tracking sizes"),
];

impl Config {
    /// Checks every field's range. [`Endpoint::new`](crate::Endpoint::new) calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (t, l, b) = (&self.transmission, &self.limits, self.blockwise.block_size);
        let zero = Duration::ZERO;
        // Whether each of RULES is broken, in its order: the first broken one is reported.
        // (A table rather than a branch per rule: on a microcontroller each branch's error
        // construction cost as much code as its test.)
        let broken = [
            t.ack_timeout == zero,
            t.ack_random_factor_milli < 1000,
            t.max_retransmit > 20,
            t.nstart == 0,
            self.token_length > 8,
            self.keepalive
                .is_some_and(|k| k.interval == zero || k.timeout == zero),
            self.fail_after_unreachable == Some(0),
            // A request would expire at the instant it is sent, and each expiry would make
            // the next queued request due at once: no deadline would ever lie ahead.
            self.response_timeout == zero,
            self.max_message_size < 16,
            !(16..=1024).contains(&b) || !b.is_power_of_two(),
            self.transport == Transport::Tcp && !cfg!(feature = "tcp"),
            l.max_sessions == 0 || l.max_sessions > 1 << 24,
            l.max_exchanges == 0 || l.max_pending_requests == 0 || l.max_dedup_entries == 0,
            l.max_queued_transmits == 0 || l.tracked_transmits == 0,
        ];
        match broken.iter().position(|&broken| broken) {
            Some(i) => {
                let (field, allowed) = RULES[i];
                Err(ConfigError { field, allowed })
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_by_1000_in_16_bit_digits() {
        // A spread of values over every magnitude, from a fixed xorshift sequence.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = alloc::vec![0, 1, 999, 1000, 1001, u64::MAX, u64::MAX - 999];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for v in values {
            assert_eq!(div_rem_1000(v), (v / 1000, v % 1000), "{v}");
        }
    }

    /// The u64 scaling gives what exact 128-bit arithmetic gives, saturating at the top.
    #[test]
    fn scaling_by_the_random_factor_is_exact() {
        let micros = [
            0,
            1,
            999,
            1000,
            1001,
            2_000_000,
            123_456_789_012,
            u64::MAX / 4294,
            u64::MAX / 1000,
            u64::MAX - 1,
            u64::MAX,
        ];
        for factor in [1000, 1001, 1500, 2999, 65_535, u32::MAX] {
            let p = TransmissionParameters {
                ack_random_factor_milli: factor,
                ..TransmissionParameters::default()
            };
            for &m in &micros {
                let exact = (m as u128 * factor as u128 / 1000).min(u64::MAX as u128) as u64;
                assert_eq!(
                    p.scaled(Duration::from_micros(m)).as_micros(),
                    exact,
                    "{m} µs × {factor}/1000"
                );
            }
        }
    }
}
