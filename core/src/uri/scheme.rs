//! The URI schemes of CoAP and the transports they name.

use core::fmt;
use core::str::FromStr;

use super::UriError;
use crate::config::Transport;

/// A CoAP URI scheme, which says how a request travels.
///
/// ```
/// use coap_engine::{uri::Scheme, Transport};
/// let scheme: Scheme = "COAPS+TCP".parse()?;
/// assert_eq!(scheme, Scheme::CoapsTcp);
/// assert_eq!((scheme.transport(), scheme.is_secure(), scheme.default_port()), (Transport::Tcp, true, 5684));
/// assert_eq!(scheme.to_string(), "coaps+tcp");
/// # Ok::<(), coap_engine::uri::UriError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `coap`: CoAP over UDP (RFC 7252 §6.1), default port 5683.
    Coap,
    /// `coaps`: CoAP over DTLS (RFC 7252 §6.2), default port 5684.
    Coaps,
    /// `coap+tcp`: CoAP over TCP (RFC 8323 §8.1), default port 5683.
    CoapTcp,
    /// `coaps+tcp`: CoAP over TLS (RFC 8323 §8.2), default port 5684.
    CoapsTcp,
}

impl Scheme {
    /// Every scheme, in the order of the enum.
    pub const ALL: [Scheme; 4] = [
        Scheme::Coap,
        Scheme::Coaps,
        Scheme::CoapTcp,
        Scheme::CoapsTcp,
    ];

    /// The scheme of requests over `transport`, secured (DTLS, TLS) or not (§6.5 step 1,
    /// RFC 8323 §8.5).
    ///
    /// ```
    /// use coap_engine::{uri::Scheme, Transport};
    /// assert_eq!(Scheme::new(Transport::Udp, true), Scheme::Coaps);
    /// ```
    pub const fn new(transport: Transport, secure: bool) -> Scheme {
        match (transport, secure) {
            (Transport::Udp, false) => Scheme::Coap,
            (Transport::Udp, true) => Scheme::Coaps,
            (Transport::Tcp, false) => Scheme::CoapTcp,
            (Transport::Tcp, true) => Scheme::CoapsTcp,
        }
    }

    /// The transport of the endpoint that can send the request: datagrams for `coap` and
    /// `coaps`, a stream for `coap+tcp` and `coaps+tcp`.
    ///
    /// ```
    /// use coap_engine::{uri::Scheme, Transport};
    /// assert_eq!(Scheme::Coaps.transport(), Transport::Udp);
    /// ```
    pub const fn transport(self) -> Transport {
        match self {
            Scheme::Coap | Scheme::Coaps => Transport::Udp,
            Scheme::CoapTcp | Scheme::CoapsTcp => Transport::Tcp,
        }
    }

    /// The request goes over DTLS (`coaps`) or TLS (`coaps+tcp`), so the endpoint needs a
    /// security layer ([`Config::security`](crate::Config)).
    ///
    /// ```
    /// assert!(!coap_engine::uri::Scheme::CoapTcp.is_secure());
    /// ```
    pub const fn is_secure(self) -> bool {
        matches!(self, Scheme::Coaps | Scheme::CoapsTcp)
    }

    /// The port a URI without one means: 5683 without security, 5684 with it.
    ///
    /// ```
    /// assert_eq!(coap_engine::uri::Scheme::Coaps.default_port(), 5684);
    /// ```
    pub const fn default_port(self) -> u16 {
        if self.is_secure() {
            5684
        } else {
            5683
        }
    }

    /// The scheme's name, lower-case, as a URI starts with it.
    ///
    /// ```
    /// assert_eq!(coap_engine::uri::Scheme::CoapTcp.as_str(), "coap+tcp");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Coap => "coap",
            Scheme::Coaps => "coaps",
            Scheme::CoapTcp => "coap+tcp",
            Scheme::CoapsTcp => "coaps+tcp",
        }
    }
}

impl FromStr for Scheme {
    type Err = UriError;

    /// A scheme name without `:`, in any case (RFC 3986 §3.1).
    fn from_str(name: &str) -> Result<Scheme, UriError> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .ok_or(UriError::UnsupportedScheme)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
