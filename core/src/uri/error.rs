//! What goes wrong between text and options.

use core::fmt;

/// Why a string is not a CoAP URI, or options make no URI.
///
/// Its `Display` is one line, for the user who typed the URI.
///
/// ```
/// use coap_engine::uri::{self, UriError};
/// let error = uri::parse("coap://h:70000/").unwrap_err();
/// assert_eq!(error, UriError::InvalidPort);
/// assert_eq!(error.to_string(), "the port must be a number from 1 to 65535");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// No scheme: a relative reference, not an absolute URI (§6.4 step 1).
    NotAbsolute,
    /// A scheme other than `coap`, `coaps`, `coap+tcp` and `coaps+tcp` (§6.4 step 3).
    UnsupportedScheme,
    /// No `//host`, or an empty host: CoAP has no default host (§6.1).
    MissingHost,
    /// `user@`: CoAP URIs have no user information (§6.1).
    UserInfo,
    /// A fragment (`#...`): it is not part of a request URI (§6.4 step 4).
    Fragment,
    /// A byte the URI grammar (RFC 3986) does not allow where it stands, at this offset.
    /// Characters outside ASCII are percent-encoded in a URI.
    InvalidCharacter {
        /// Byte offset in the URI.
        at: usize,
    },
    /// A `%` not followed by two hexadecimal digits, at this offset.
    InvalidPercentEncoding {
        /// Byte offset of the `%` in the URI.
        at: usize,
    },
    /// The port is not a number from 1 to 65535.
    InvalidPort,
    /// Between `[` and `]` is no IPv6 address, or a zone that is empty, not UTF-8 or not
    /// introduced by `%25` (RFC 6874).
    InvalidIpLiteral,
    /// An `IPvFuture` literal (`[v1.…]`): no address this engine can send to.
    UnsupportedIpLiteral,
    /// The percent-decoded host name is not UTF-8 (RFC 3986 §3.2.2).
    HostNotUtf8,
    /// The Uri-Host Option is empty, not UTF-8, or an `IP-literal` that is no IPv6 address.
    InvalidUriHost,
    /// The Uri-Port Option is longer than 2 bytes, or 0.
    InvalidUriPort,
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::NotAbsolute => f.write_str("not an absolute URI: expected coap://host[:port]/path?query"),
            UriError::UnsupportedScheme => f.write_str("the scheme must be coap, coaps, coap+tcp or coaps+tcp"),
            UriError::MissingHost => f.write_str("no host: expected coap://host[:port]/path (an IPv6 address in brackets, coap://[::1]/)"),
            UriError::UserInfo => f.write_str("a CoAP URI has no user information (user@)"),
            UriError::Fragment => f.write_str("a request URI has no fragment (#...)"),
            UriError::InvalidCharacter { at } => write!(f, "character not allowed there at byte {at} (percent-encode it)"),
            UriError::InvalidPercentEncoding { at } => write!(f, "'%' at byte {at} is not followed by two hexadecimal digits"),
            UriError::InvalidPort => f.write_str("the port must be a number from 1 to 65535"),
            UriError::InvalidIpLiteral => f.write_str("bad IP literal: expected an IPv6 address in brackets, with an optional %25zone"),
            UriError::UnsupportedIpLiteral => f.write_str("IPvFuture literals ([v...]) are not supported"),
            UriError::HostNotUtf8 => f.write_str("the percent-decoded host name is not UTF-8"),
            UriError::InvalidUriHost => f.write_str("the Uri-Host option is empty, not UTF-8 or a bad IP literal"),
            UriError::InvalidUriPort => f.write_str("the Uri-Port option is longer than 2 bytes or 0"),
        }
    }
}

impl core::error::Error for UriError {}
