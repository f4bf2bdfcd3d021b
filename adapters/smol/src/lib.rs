#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # coap-engine-smol
//!
//! An async CoAP client and server on [smol](https://docs.rs/smol), driven by the sans-IO
//! [`coap_engine::Endpoint`]. One driver task owns the endpoint and its sockets; it moves
//! bytes, reads the clock, arms one `async_io::Timer` for the engine's deadline and reports
//! every send's outcome back to the engine. All protocol logic (retransmission,
//! deduplication, separate responses, keepalive, RFC 8323 signaling) lives in the engine;
//! the handles here are channels to the driver, cheap to clone.
//!
//! - [`Driver`]: CoAP over UDP (`coap://`) and DTLS (`coaps://`, feature `dtls`), one
//!   `Async<std::net::UdpSocket>` for every peer.
//! - [`StreamDriver`]: CoAP over TCP (`coap+tcp://`) and TLS (`coaps+tcp://`, feature
//!   `tls`), RFC 8323: a listener and a connection per peer; see the [`stream`] module for
//!   connections, backpressure and how their failures reach the application.
//!
//! Both hand out the same handles, so application code is the same whatever the transport:
//!
//! - [`Client`]: [`request`](Client::request) resolves to the response or a typed [`Error`]:
//!   the engine's own [`ExchangeError`] (timeout, reset, session/keepalive failure, send
//!   failure, ...), a refused call, or a stopped driver; dropping the future cancels the
//!   request. [`ping`](Client::ping) resolves to the round-trip time.
//!   [`observe`](Client::observe) resolves to an [`Observation`] (RFC 7641), a stream of
//!   notifications that ends with the final response or the failure; dropping it
//!   deregisters.
//! - [`Incoming`]: the server side, a stream of [`IncomingRequest`]s each with a
//!   [`Responder`] that may answer at any time (over UDP, if the application is slow the
//!   engine sends the Empty ACK itself and the answer goes out as a separate response).
//!   [`Incoming::serve`] runs an async handler per request. A registration is answered
//!   with [`Responder::respond_observe`]; [`Incoming::notify`] reaches the observers of a
//!   resource.
//! - [`Events`]: session lifecycle and send failures ([`Event::SessionNew`](coap_engine::Event::SessionNew),
//!   [`Event::SessionEstablished`](coap_engine::Event::SessionEstablished), [`Event::SessionFailed`](coap_engine::Event::SessionFailed), [`Event::SessionClosed`](coap_engine::Event::SessionClosed),
//!   [`Event::SendFailed`](coap_engine::Event::SendFailed), [`Event::ObserverRemoved`](coap_engine::Event::ObserverRemoved), and on a secure server [`Event::HandshakeFailed`](coap_engine::Event::HandshakeFailed)).
//!
//! ```
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::Config;
//! use coap_engine_smol::Driver;
//!
//! smol::block_on(async {
//!     // A server on an ephemeral loopback port, answering every request with "hi".
//!     let server = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
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
//!     // A client on another socket.
//!     let client_driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
//!     let client = client_driver.client();
//!     let _client_task = client_driver.spawn();
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request(server_addr, get).await.unwrap();
//!     assert_eq!(response.payload, b"hi");
//! });
//! ```
//!
//! ## `coaps://` (feature `dtls`)
//!
//! A secure endpoint is a driver whose `Config::security` holds the engine's DTLS layer,
//! seeded with `security_entropy()`; [`Client`], [`Incoming`] and [`Events`] work as on a plain
//! one, and the socket is the CoAPS port (5684). A handshake the server refuses (a wrong key,
//! an untrusted certificate) fails the request with
//! [`ExchangeError::SessionFailed`]`(`[`FailureReason::Security`](coap_engine::FailureReason::Security)`)`.
//! The driver gives the engine the wall-clock time when it starts
//! ([`Driver::from_parts`]), so certificate validity periods are checked without further
//! setup. A pre-shared-key server and a client of it:
//!
//! ```no_run
//! # #[cfg(feature = "dtls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use coap_engine::coap_lite::{MessageClass, Packet, RequestType, ResponseType};
//! use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
//! use coap_engine::{Config, Security};
//! use coap_engine_smol::{security_entropy, Driver};
//!
//! smol::block_on(async {
//!     // Server: the key of every PSK identity it accepts.
//!     let mut keys = BTreeMap::new();
//!     keys.insert(b"sensor-1".to_vec(), b"secret-key".to_vec());
//!     let dtls = DtlsConfig { psk_store: Some(Arc::new(keys)), ..DtlsConfig::default() };
//!     let security = Security::new(Dtls::new(dtls, security_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let server = Driver::bind("127.0.0.1:5684".parse()?, config)?;
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
//!     // Client: its identity and key; the handshake starts with the first request.
//!     let psk = PskCredentials { identity: b"sensor-1".to_vec(), key: b"secret-key".to_vec() };
//!     let dtls = DtlsConfig { psk: Some(psk), ..DtlsConfig::default() };
//!     let security = Security::new(Dtls::new(dtls, security_entropy())?);
//!     let config = Config { security: Some(security), ..Config::default() };
//!     let driver = Driver::bind("127.0.0.1:0".parse()?, config)?;
//!     let (client, _task) = (driver.client(), driver.spawn());
//!     let mut get = Packet::new();
//!     get.header.code = MessageClass::Request(RequestType::Get);
//!     let response = client.request("127.0.0.1:5684".parse()?, get).await?;
//!     println!("{}", String::from_utf8_lossy(&response.payload));
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "dtls"))]
//! # fn main() {}
//! ```

pub use coap_engine;
use coap_engine::ExchangeError;

mod handles;
mod observe;
pub mod stream;
mod udp;

pub use handles::{Client, Events, Incoming, IncomingRequest, Responder};
pub use observe::{Observation, NOTIFICATION_CAPACITY};
pub use stream::StreamDriver;
pub use udp::Driver;

/// Capacity of the [`Events`] channel; when full, further events are dropped (logged), so an
/// application that never reads events cannot stall the driver or grow its memory.
pub const EVENT_CAPACITY: usize = 1024;

/// Why a request, ping or other call through this adapter failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request or ping ended without an answer, as the engine reports it:
    /// [`ExchangeError::Timeout`], [`Reset`](ExchangeError::Reset),
    /// [`SessionFailed`](ExchangeError::SessionFailed) (keepalive failure, consecutive
    /// unreachable sends, or a failed DTLS handshake), [`SendFailed`](ExchangeError::SendFailed),
    /// [`SessionClosed`](ExchangeError::SessionClosed) or
    /// [`Cancelled`](ExchangeError::Cancelled).
    Exchange(ExchangeError),
    /// The engine refused the call (not a request, queue full, unknown session, ...); nothing
    /// was sent.
    Rejected(coap_engine::Error),
    /// The driver task has stopped.
    DriverStopped,
}

impl From<ExchangeError> for Error {
    fn from(e: ExchangeError) -> Self {
        Error::Exchange(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Exchange(e) => e.fmt(f),
            Error::Rejected(e) => write!(f, "rejected: {e}"),
            Error::DriverStopped => f.write_str("the CoAP driver task has stopped"),
        }
    }
}

impl std::error::Error for Error {}

/// 32 bytes from the operating system's random number generator, for a security layer:
/// [`Dtls::new`](coap_engine::dtls::Dtls::new) (feature `dtls`) or
/// [`Tls::new`](coap_engine::tls::Tls::new) (feature `tls`). Every key and random of the
/// layer derives from them, so call this once per layer and never reuse the value.
///
/// # Panics
///
/// If the operating system has no random number generator to offer (`getrandom` fails):
/// without one no key can be made, and there is nothing safe to fall back to.
///
/// ```
/// let entropy = coap_engine_smol::security_entropy();
/// assert_ne!(entropy, coap_engine_smol::security_entropy());
/// ```
#[cfg(any(feature = "dtls", feature = "tls"))]
pub fn security_entropy() -> [u8; 32] {
    let mut bytes = [0; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    bytes
}

/// The same as [`security_entropy`], under the name it had before TLS: 32 fresh bytes from
/// the operating system for [`Dtls::new`](coap_engine::dtls::Dtls::new), to be called once
/// per layer.
///
/// # Panics
///
/// As [`security_entropy`].
///
/// ```
/// let entropy = coap_engine_smol::dtls_entropy();
/// assert_ne!(entropy, coap_engine_smol::dtls_entropy());
/// ```
#[cfg(feature = "dtls")]
pub fn dtls_entropy() -> [u8; 32] {
    security_entropy()
}
