#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// A feature left out turns its paths off with `cfg!` where they branch from the shared ones,
// so the code that served them is unreachable and the compiler drops it; naming every such
// function in a `#[cfg]` would scatter the features over the whole engine.
#![cfg_attr(
    not(all(
        feature = "client",
        feature = "server",
        feature = "observe",
        feature = "blockwise",
        feature = "tcp"
    )),
    allow(dead_code, unused_imports, unused_variables, unused_mut)
)]
//! # coap-engine
//!
//! A sans-IO CoAP endpoint (RFC 7252, CoAP over UDP): all of the protocol, none of the I/O.
//! The engine never touches a socket, a clock or an entropy source; adapters feed it `now`,
//! datagrams, timeouts and send results, and carry out the transmits it asks for. See
//! [`Endpoint`] for the input/output rules and a runnable example.
//!
//! ## The liveness contract
//!
//! A session's liveness is defined by what the engine **hears** from the peer, never by what
//! it sends. With a [`Keepalive`] of (`interval`, `timeout`):
//!
//! - after `interval` of silence the engine sends a CoAP ping (Empty CON, answered by Reset);
//! - a session whose peer has been silent for `interval + timeout` fails with
//!   [`Event::SessionFailed`] and [`FailureReason::KeepaliveTimeout`] **no later than**
//!   `last_heard + interval + timeout` (plus the adapter's timer resolution), and every pending
//!   exchange on it ends with [`ExchangeError::SessionFailed`];
//! - nothing sent moves `last_heard`: not a ping, not a retransmission, not a failed send. A
//!   failed send (reported with [`Endpoint::handle_send_result`]) becomes
//!   [`Event::SendFailed`], counts as a lost message, and waits its normal backoff: a dead
//!   link never causes a busy loop and never postpones the failure;
//! - pings are independent of the request pipeline: outstanding Confirmable requests and a
//!   full NSTART queue neither delay nor block them;
//! - optionally ([`Config::fail_after_unreachable`]) consecutive "unreachable" send failures
//!   fail the session earlier, never later.
//!
//! The contract holds for both roles: a server with keepalive discovers a vanished client and
//! drops its state.
//!
//! ## Observing resources (RFC 7641)
//!
//! A client calls [`Endpoint::observe`] and receives every fresh notification as
//! [`Event::Notification`]; the observation ends with one terminal event like any request
//! (the server's final response, a failure, [`Endpoint::cancel`] or
//! [`Endpoint::deregister`]), and with its session when keepalive declares the server dead.
//! A server answers a registration with [`Endpoint::respond_observe`] and pushes new
//! representations with [`Endpoint::notify`]; observers that go away (Reset, unacknowledged
//! Confirmable notification, deregistration, keepalive failure of their session) are
//! reported as [`Event::ObserverRemoved`], so a dead client is never notified forever.
//!
//! ## Block-wise transfers (RFC 7959)
//!
//! Bodies larger than one datagram are the engine's business, in both roles, configured by
//! [`Blockwise`]:
//!
//! - **client**: a request body larger than the block size (or than
//!   [`Config::max_message_size`]) goes in Block1 blocks, each answered 2.31 Continue, the
//!   server's smaller block size adopted on the way; a response in Block2 blocks is fetched
//!   block by block and delivered as **one** [`Event::Response`] with the whole body. The
//!   request keeps one [`RequestId`], one exchange slot and ends in exactly one terminal event
//!   whatever happens mid-transfer (cancel, timeout, session failure), with
//!   [`ExchangeError::BodyTooLarge`], [`ExchangeError::UnexpectedBlock`] and
//!   [`ExchangeError::RepresentationChanged`] for what can go wrong only block-wise;
//! - **server**: a request body arriving in Block1 blocks is reassembled before the
//!   application sees **one** [`Event::Request`]; a response larger than the block the client
//!   asked for is cut statelessly into that block (with Size2 and an ETag), so the application
//!   simply answers every request with the whole representation.
//!
//! A request that carries its own Block1 option, or Block2 with a block number other than 0,
//! is left alone: the application is doing block-wise itself.
//!
//! ## Requests from URIs (RFC 7252 §6, RFC 8323 §8)
//!
//! [`uri::parse`] decomposes `coap://`, `coaps://`, `coap+tcp://` and `coaps+tcp://` URIs
//! into a [`CoapUri`]: its [`Scheme`] (which says the [`Transport`] and whether it is
//! secured), its host and port, and the Uri-Host, Uri-Path and Uri-Query options it stands
//! for (§6.4); [`CoapUri::request`] makes the request in one call. The way back, from a
//! request's options to its URI (§6.5), is [`uri::compose`]. Names stay names: resolving
//! them is the application's job, as the engine does no DNS.
//!
//! ```
//! use coap_engine::coap_lite::RequestType;
//! let uri = coap_engine::uri::parse("coap://[::1]/sensors/temp")?;
//! let request = uri.request(RequestType::Get);
//! let peer = uri.socket_addr().expect("an IP address, no name to resolve");
//! # let _ = (request, peer);
//! // endpoint.request(now, peer, &request)
//! # Ok::<(), coap_engine::UriError>(())
//! ```
//!
//! ## Features: paying only for what is used
//!
//! Each part of the engine an application may not need is a cargo feature, all on by
//! default. On a microcontroller, take `default-features = false` and name what is used;
//! what is left out costs no code (`core/nostd-check/breakdown.sh` prints the sizes).
//!
//! | Feature | What it adds | Without it |
//! | --- | --- | --- |
//! | `client` | our requests: [`Endpoint::request`] | a response is unexpected: Reset (§4.2) |
//! | `server` | requests from peers: [`Event::Request`], [`Endpoint::respond`] | a request is rejected with Reset, or 4.02 on a stream, and opens no session |
//! | `observe` | RFC 7641 in the roles that are on: [`Endpoint::observe`], [`Endpoint::notify`], ... | a registration gets a plain response, which tells the client it is not observing (RFC 7641 §3.1) |
//! | `blockwise` | RFC 7959 done by the engine (see below) | Block options are the application's, like any other; a body must fit one message ([`Error::MessageTooLarge`]) |
//! | `tcp` | CoAP over TCP (RFC 8323): [`Transport::Tcp`], [`Endpoint::handle_connected`], ... | [`Config::validate`] refuses `Transport::Tcp` |
//!
//! Pings, keepalive, sessions and every liveness guarantee are in every build; so are the
//! event and error types, whatever the features (a variant a build cannot produce is simply
//! never seen). `dtls` and `tls` (which needs `tcp`) add the security layers.
//!
//! ## Bounded memory
//!
//! Every per-peer structure has a cap in [`Limits`], and each cap's behaviour when reached is
//! documented there; the number of sessions is capped too. Whatever peers send, state stays
//! within `max_sessions × per-session caps`; a body being reassembled block-wise is capped by
//! [`Blockwise::max_body_size`] (at most [`Limits::max_block_transfers`] of them per session
//! as a server, one per exchange as a client).

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod block;
pub mod codec;
mod config;
#[cfg(any(feature = "dtls", feature = "tls"))]
pub mod credentials;
mod dedup;
#[cfg(feature = "dtls")]
pub mod dtls;
mod endpoint;
#[cfg(any(feature = "dtls", feature = "tls"))]
mod entropy;
mod error;
mod event;
pub mod framing;
mod liveness;
mod observe;
mod outputs;
mod rng;
pub mod security;
mod session;
mod slim;
mod time;
#[cfg(feature = "tls")]
pub mod tls;
mod transmit;
pub mod uri;

pub use coap_lite;
pub use config::{
    Blockwise, Config, ConfigError, Keepalive, Limits, TransmissionParameters, Transport,
};
pub use endpoint::{Endpoint, SessionInfo, StreamClosed};
pub use error::Error;
pub use event::{
    CloseReason, ConnectionFailure, Event, ExchangeError, FailureReason, IncomingRequestId,
    RequestId,
};
pub use observe::{ObserverRemoval, ResourceId};
pub use outputs::StreamCommand;
pub use security::{CertificateError, PeerIdentity, Security, SecurityError};
pub use session::SessionFootprint;
pub use time::{Duration, Instant};
pub use transmit::{Datagram, SendErrorKind, Transmit, TransmitId, TransmitInfo};
pub use uri::{CoapUri, Scheme, UriError};

/// The README's examples, compiled and run as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
