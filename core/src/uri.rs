//! CoAP URIs: `coap://`, `coaps://` (RFC 7252 §6), `coap+tcp://` and `coaps+tcp://`
//! (RFC 8323 §8), decomposed into request options (§6.4) and composed from them (§6.5).
//!
//! ```
//! use coap_engine::coap_lite::{CoapOption, RequestType};
//! use coap_engine::uri::{self, Scheme};
//!
//! let uri = uri::parse("coap://[2001:db8::1]/sensors/temp?unit=C")?;
//! assert_eq!(uri.scheme(), Scheme::Coap);
//! let request = uri.request(RequestType::Get);
//! let peer = uri.socket_addr().expect("an IP literal needs no name resolution");
//! assert_eq!(peer, "[2001:db8::1]:5683".parse().unwrap());
//! // The destination address stands for the host: no Uri-Host, no Uri-Port (§6.4 steps 5, 7).
//! assert!(request.get_option(CoapOption::UriHost).is_none());
//! assert_eq!(uri.path_segments(), [b"sensors".to_vec(), b"temp".to_vec()]);
//! assert_eq!(uri.to_string(), "coap://[2001:db8::1]/sensors/temp?unit=C");
//! // endpoint.request(now, peer, &request)
//! # Ok::<(), coap_engine::uri::UriError>(())
//! ```
//!
//! A host name stays a name: the engine does no DNS. [`CoapUri::socket_addr`] gives the
//! address of an IP host; for a [`Host::Name`] the application resolves it and sends to
//! what it resolves to (the name travels as Uri-Host).
//!
//! # Choices this module makes
//!
//! - **The parser is ours.** A CoAP URI is a narrow subset of RFC 3986 (no user
//!   information, a host that cannot be empty, `path-abempty`), and §6.4 wants its own
//!   order of operations (the host lower-cased *before* percent-decoding, reference
//!   resolution but no other normalization). `iri-string` and `fluent-uri`, both `no_std`
//!   and within the core's MSRV, would check the characters of each component, which is the
//!   smallest part of the work: what the generic parsers accept and CoAP refuses, the §6.4
//!   steps, RFC 6874 zones (neither accepts them) and §6.5 would still be code of ours, and
//!   `fluent-uri` would bring a procedural macro (`ref-cast`) into the core's build. So the
//!   core's required dependencies stay `coap-lite` and `log`.
//! - **Fragments** fail the algorithm (§6.4 step 4).
//! - **IPv6 zones** (RFC 6874, `coap://[fe80::1%25eth0]/`) are accepted, since link-local
//!   addresses are common in constrained networks: the zone is reported by
//!   [`CoapUri::zone`] and never sent (it means something on this host only). A numeric
//!   zone becomes the scope of [`CoapUri::socket_addr`]; an interface name is the
//!   application's to resolve. `IPvFuture` literals are refused.
//! - **Port 0** is refused: no request can be sent to it.
//! - **Uri-Port** follows §6.4 step 7 literally: it is sent only when the port differs from
//!   the request's destination port, not when it differs from the scheme's default.
//! - **Option values are bytes**: a percent-decoded path segment or query argument need not
//!   be UTF-8 (§6.4 does not fail then). A host name must be (RFC 3986 §3.2.2), since it is
//!   for name resolution.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use core::str::FromStr;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

mod error;
mod scheme;
mod syntax;

pub use error::UriError;
pub use scheme::Scheme;
use syntax::{
    check, decode, host_of_option, is_path_char, is_pchar, is_query_char, is_reg_name_char,
    is_scheme, is_unreserved, parse_ip_literal, parse_port, parse_reg_name, remove_dot_segments,
    write_encoded,
};

/// Parses an absolute CoAP URI (RFC 7252 §6.4 steps 1–4 and the components of steps 5–9).
/// The same as [`CoapUri::parse`].
///
/// ```
/// let uri = coap_engine::uri::parse("coaps+tcp://Example.COM/a%20b")?;
/// assert_eq!(uri.port(), 5684);
/// assert_eq!(uri.host(), &coap_engine::uri::Host::Name("example.com".into()));
/// assert_eq!(uri.path_segments(), [b"a b".to_vec()]);
/// # Ok::<(), coap_engine::uri::UriError>(())
/// ```
pub fn parse(uri: &str) -> Result<CoapUri, UriError> {
    CoapUri::parse(uri)
}

/// The URI of a request (RFC 7252 §6.5): `scheme`, the request's destination and its
/// Uri-Host, Uri-Port, Uri-Path and Uri-Query options. The same as
/// `CoapUri::from_options(scheme, destination, request)?.to_string()`.
///
/// ```
/// use coap_engine::coap_lite::{CoapOption, Packet};
/// use coap_engine::uri::{compose, Scheme};
///
/// let mut request = Packet::new();
/// request.add_option(CoapOption::UriHost, b"example.net".to_vec());
/// request.add_option(CoapOption::UriPath, b"a/b".to_vec());
/// request.add_option(CoapOption::UriQuery, b"x&y".to_vec());
/// let uri = compose(Scheme::Coaps, "192.0.2.1:5684".parse().unwrap(), &request)?;
/// assert_eq!(uri, "coaps://example.net/a%2Fb?x%26y");
/// # Ok::<(), coap_engine::uri::UriError>(())
/// ```
pub fn compose(
    scheme: Scheme,
    destination: SocketAddr,
    request: &Packet,
) -> Result<String, UriError> {
    CoapUri::from_options(scheme, destination, request).map(|uri| uri.to_string())
}

/// The host of a CoAP URI.
///
/// Its `Display` is the host as a URI writes it: `192.0.2.1`, `[2001:db8::1]` or the name
/// percent-encoded where it must be.
///
/// ```
/// use coap_engine::uri::{self, Host};
/// let uri = uri::parse("coap://192.0.2.1/")?;
/// assert_eq!(uri.host(), &Host::Ip("192.0.2.1".parse().unwrap()));
/// let uri = uri::parse("coap://[2001:DB8::1]/")?;
/// assert_eq!(uri.host().to_string(), "[2001:db8::1]");
/// # Ok::<(), coap_engine::uri::UriError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An `IPv4address`, or the IPv6 address of an `IP-literal`. A request sent to this
    /// address carries no Uri-Host (§6.4 step 5).
    Ip(IpAddr),
    /// A `reg-name`, as the Uri-Host Option carries it: lower-cased, then percent-decoded
    /// (§6.4 step 5). Resolving it to an address is the application's job.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            // RFC 5952 text, which is what `Ipv6Addr` displays.
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Name(name) => {
                let mut bytes = name.as_bytes();
                // A name such as `1.2.3.%34` decodes to the text of an IPv4address, which
                // it must not become again.
                if let (Ok(_), [first, rest @ ..]) = (name.parse::<Ipv4Addr>(), bytes) {
                    write!(f, "%{first:02X}")?;
                    bytes = rest;
                }
                // An upper-case letter can only have come percent-encoded (§6.4 step 5
                // lower-cases the rest), so it goes back that way.
                write_encoded(f, bytes, |b| is_reg_name_char(b) && !b.is_ascii_uppercase())
            }
        }
    }
}

/// An absolute CoAP URI, decomposed: its scheme, host and port, and the values of the
/// Uri-Path and Uri-Query options it stands for (RFC 7252 §6.4).
///
/// Two URIs that §6.3 calls equivalent decompose to equal values:
///
/// ```
/// use coap_engine::uri::CoapUri;
/// let a: CoapUri = "coap://example.com:5683/~sensors/temp.xml".parse()?;
/// let b: CoapUri = "coap://EXAMPLE.com/%7Esensors/temp.xml".parse()?;
/// let c: CoapUri = "coap://EXAMPLE.com:/%7esensors/temp.xml".parse()?;
/// assert!(a == b && b == c);
/// # Ok::<(), coap_engine::uri::UriError>(())
/// ```
///
/// Its `Display` composes the URI again (§6.5), the same for equivalent URIs:
/// `coap://example.com/~sensors/temp.xml` for the three above.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CoapUri {
    scheme: Scheme,
    host: Host,
    /// RFC 6874 zone of an IPv6 host, percent-decoded.
    zone: Option<String>,
    port: u16,
    path: Vec<Vec<u8>>,
    query: Vec<Vec<u8>>,
}

impl CoapUri {
    /// Parses an absolute CoAP URI: RFC 7252 §6.4 steps 1–4 (an absolute URI, reference
    /// resolution, a CoAP scheme in any case, no fragment) and the components that steps 5–9
    /// turn into options. Never panics; whatever is not a CoAP URI is an [`UriError`].
    ///
    /// ```
    /// use coap_engine::uri::{CoapUri, UriError};
    /// let uri = CoapUri::parse("coap://h/a/./b/../c//d?x=1&&y")?;
    /// assert_eq!(uri.path_segments(), [b"a".to_vec(), b"c".to_vec(), vec![], b"d".to_vec()]);
    /// assert_eq!(uri.query_arguments(), [b"x=1".to_vec(), vec![], b"y".to_vec()]);
    /// assert_eq!(CoapUri::parse("coap://h/#top"), Err(UriError::Fragment));
    /// assert_eq!(CoapUri::parse("/relative"), Err(UriError::NotAbsolute));
    /// # Ok::<(), UriError>(())
    /// ```
    pub fn parse(uri: &str) -> Result<CoapUri, UriError> {
        // Step 1: an absolute URI starts with its scheme.
        let colon = uri.find(':').ok_or(UriError::NotAbsolute)?;
        if !is_scheme(&uri[..colon]) {
            return Err(UriError::NotAbsolute);
        }
        let hier_start = colon + 1;
        let hash = uri[hier_start..].find('#').map(|i| hier_start + i);
        let end = hash.unwrap_or(uri.len());
        let question = uri[hier_start..end].find('?').map(|i| hier_start + i);
        let hier_end = question.unwrap_or(end);
        // Malformed is malformed whatever the scheme, so the syntax is checked first.
        if let Some(hash) = hash {
            check(uri, hash + 1..uri.len(), is_query_char)?;
        }
        if let Some(question) = question {
            check(uri, question + 1..end, is_query_char)?;
        }
        // Step 3 (RFC 8323 §8.4 adds the stream schemes).
        let scheme: Scheme = uri[..colon].parse()?;
        // Step 4.
        if hash.is_some() {
            return Err(UriError::Fragment);
        }
        // RFC 7252 §6.1: "//" host [":" port] path-abempty, nothing else.
        if !uri[hier_start..hier_end].starts_with("//") {
            return Err(UriError::MissingHost);
        }
        let authority_start = hier_start + 2;
        let authority_end = uri[authority_start..hier_end]
            .find('/')
            .map_or(hier_end, |i| authority_start + i);
        check(uri, authority_end..hier_end, is_path_char)?;
        let authority = &uri[authority_start..authority_end];
        if authority.contains('@') {
            return Err(UriError::UserInfo);
        }

        let (host, zone, port_start) = if authority.starts_with('[') {
            let close = authority
                .find(']')
                .map(|i| authority_start + i)
                .ok_or(UriError::InvalidIpLiteral)?;
            let (address, zone) = parse_ip_literal(uri, authority_start + 1..close)?;
            (Host::Ip(IpAddr::V6(address)), zone, close + 1)
        } else {
            let host_end = authority
                .find(':')
                .map_or(authority_end, |i| authority_start + i);
            (
                parse_reg_name(uri, authority_start..host_end)?,
                None,
                host_end,
            )
        };
        let port = parse_port(&uri[port_start..authority_end], port_start, scheme)?;

        // Step 2: resolving an absolute URI leaves it as it is but for its dot segments.
        let path = remove_dot_segments(&uri[authority_end..hier_end]);
        // Step 8: "" and "/" give no Uri-Path; any other path one per segment, empty ones
        // included.
        let path = match path.as_str() {
            "" | "/" => Vec::new(),
            p => p[1..].split('/').map(decode).collect(),
        };
        // Step 9: a query, even an empty one, is one Uri-Query per argument.
        let query = question.map_or_else(Vec::new, |q| {
            uri[q + 1..end].split('&').map(decode).collect()
        });
        Ok(CoapUri {
            scheme,
            host,
            zone,
            port,
            path,
            query,
        })
    }

    /// The URI of a request (RFC 7252 §6.5, RFC 8323 §8.5): the host is the Uri-Host
    /// Option, else the destination's IP address; the port is the Uri-Port Option, else the
    /// destination's port; the path and query come from the Uri-Path and Uri-Query Options.
    ///
    /// Option values carry no percent-encoding (§5.10.1), so a Uri-Host name is
    /// percent-encoded wherever a `reg-name` needs it (where step 2 of §6.5 would fail), and
    /// it is lower-cased, as host names are case-insensitive (RFC 3986 §3.2.2). One empty
    /// Uri-Path composes to `/` like none, so it is dropped. A destination with an IPv6
    /// scope has it as its zone.
    ///
    /// ```
    /// use coap_engine::coap_lite::{CoapOption, Packet};
    /// use coap_engine::uri::{CoapUri, Scheme};
    ///
    /// let mut request = Packet::new();
    /// request.add_option(CoapOption::UriPort, vec![0x1f, 0x40]);
    /// request.add_option(CoapOption::UriPath, b".well-known".to_vec());
    /// request.add_option(CoapOption::UriPath, b"core".to_vec());
    /// let uri = CoapUri::from_options(Scheme::Coap, "[2001:db8::1]:5683".parse().unwrap(), &request)?;
    /// assert_eq!(uri.to_string(), "coap://[2001:db8::1]:8000/.well-known/core");
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    ///
    /// # Errors
    /// [`UriError::InvalidUriHost`] for a Uri-Host that is empty, not UTF-8, or an
    /// `IP-literal` that is not an IPv6 address; [`UriError::InvalidUriPort`] for a
    /// Uri-Port longer than 2 bytes or 0; [`UriError::InvalidPort`] for destination port 0
    /// without Uri-Port.
    pub fn from_options(
        scheme: Scheme,
        destination: SocketAddr,
        request: &Packet,
    ) -> Result<CoapUri, UriError> {
        let values = |option| -> Vec<Vec<u8>> {
            request
                .get_option(option)
                .map(|list| list.iter().cloned().collect())
                .unwrap_or_default()
        };
        let (host, zone) = match request.get_first_option(CoapOption::UriHost) {
            Some(value) => (host_of_option(value)?, None),
            None => match destination {
                SocketAddr::V6(a) if a.scope_id() != 0 => (
                    Host::Ip(IpAddr::V6(*a.ip())),
                    Some(a.scope_id().to_string()),
                ),
                a => (Host::Ip(a.ip()), None),
            },
        };
        let port = match request.get_first_option(CoapOption::UriPort) {
            Some(value) if value.len() <= 2 => {
                match value.iter().fold(0u16, |n, &b| n << 8 | u16::from(b)) {
                    0 => return Err(UriError::InvalidUriPort),
                    port => port,
                }
            }
            Some(_) => return Err(UriError::InvalidUriPort),
            None if destination.port() == 0 => return Err(UriError::InvalidPort),
            None => destination.port(),
        };
        let mut path = values(CoapOption::UriPath);
        if let [only] = path.as_slice() {
            if only.is_empty() {
                path.clear();
            }
        }
        Ok(CoapUri {
            scheme,
            host,
            zone,
            port,
            path,
            query: values(CoapOption::UriQuery),
        })
    }

    /// The scheme, which says how the request travels ([`Scheme::transport`],
    /// [`Scheme::is_secure`]).
    ///
    /// ```
    /// let uri = coap_engine::uri::parse("coaps://h/")?;
    /// assert!(uri.scheme().is_secure());
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: an IP address, or a name the application resolves.
    ///
    /// ```
    /// use coap_engine::uri::{self, Host};
    /// assert_eq!(uri::parse("coap://Sensor.Example/")?.host(), &Host::Name("sensor.example".into()));
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The zone of an IPv6 host (RFC 6874), percent-decoded: an interface name or number
    /// on this host. It is never sent.
    ///
    /// ```
    /// let uri = coap_engine::uri::parse("coap://[fe80::1%25eth0]/")?;
    /// assert_eq!(uri.zone(), Some("eth0"));
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The port: the URI's, else the scheme's default (§6.4 step 6).
    ///
    /// ```
    /// assert_eq!(coap_engine::uri::parse("coap+tcp://h/")?.port(), 5683);
    /// assert_eq!(coap_engine::uri::parse("coap://h:61616/")?.port(), 61616);
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The values of the Uri-Path Options, in order: each segment of the path,
    /// percent-decoded (§6.4 step 8). None for `/` or an empty path.
    ///
    /// ```
    /// let uri = coap_engine::uri::parse("coap://h/a%2Fb/")?;
    /// assert_eq!(uri.path_segments(), [b"a/b".to_vec(), vec![]]);
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn path_segments(&self) -> &[Vec<u8>] {
        &self.path
    }

    /// The values of the Uri-Query Options, in order: each `&`-separated argument of the
    /// query, percent-decoded (§6.4 step 9).
    ///
    /// ```
    /// let uri = coap_engine::uri::parse("coap://h/?rt=temp&if=a%26b")?;
    /// assert_eq!(uri.query_arguments(), [b"rt=temp".to_vec(), b"if=a&b".to_vec()]);
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn query_arguments(&self) -> &[Vec<u8>] {
        &self.query
    }

    /// Where to send the request when the host is an IP address: that address and the
    /// port, with a numeric zone as the IPv6 scope. `None` for a host name (resolve it, and
    /// use [`port`](Self::port)) and for a zone that names an interface (find its index).
    ///
    /// ```
    /// let uri = coap_engine::uri::parse("coaps://[fe80::1%252]:7000/")?;
    /// assert_eq!(uri.socket_addr(), Some("[fe80::1%2]:7000".parse().unwrap()));
    /// assert_eq!(coap_engine::uri::parse("coap://example.com/")?.socket_addr(), None);
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let Host::Ip(ip) = self.host else {
            return None;
        };
        match (ip, &self.zone) {
            (ip, None) => Some(SocketAddr::new(ip, self.port)),
            (IpAddr::V6(a), Some(zone)) if zone.bytes().all(|b| b.is_ascii_digit()) => {
                let scope = zone.parse().ok()?;
                Some(SocketAddrV6::new(a, self.port, 0, scope).into())
            }
            _ => None,
        }
    }

    /// Sets the Uri-Host, Uri-Port, Uri-Path and Uri-Query Options of `request` (RFC 7252
    /// §6.4 steps 5–9, replacing any it had) for a request sent to the address this URI
    /// names: its IP address, or one its name resolves to, on [`port`](Self::port). So a
    /// name is sent as Uri-Host, an IP address is not, and Uri-Port never is. To send
    /// elsewhere, use [`apply_to_destination`](Self::apply_to_destination).
    ///
    /// ```
    /// use coap_engine::coap_lite::{CoapOption, Packet};
    /// let uri = coap_engine::uri::parse("coap://Printer.local:61616/status")?;
    /// let mut request = Packet::new();
    /// uri.apply_to(&mut request);
    /// assert_eq!(request.get_first_option(CoapOption::UriHost), Some(&b"printer.local".to_vec()));
    /// assert_eq!(request.get_first_option(CoapOption::UriPort), None);
    /// assert_eq!(request.get_first_option(CoapOption::UriPath), Some(&b"status".to_vec()));
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn apply_to(&self, request: &mut Packet) {
        self.set_options(request, matches!(self.host, Host::Name(_)), false);
    }

    /// Sets the Uri-Host, Uri-Port, Uri-Path and Uri-Query Options of `request` (replacing
    /// any it had) for a request sent to `destination`, as §6.4 says: Uri-Host unless the
    /// host is `destination`'s IP address, Uri-Port unless the port is `destination`'s.
    ///
    /// ```
    /// use coap_engine::coap_lite::{CoapOption, Packet};
    /// let uri = coap_engine::uri::parse("coap://192.0.2.1/")?;
    /// let mut request = Packet::new();
    /// // Through a port forwarded to the server: the host and port it knows go as options.
    /// uri.apply_to_destination(&mut request, "198.51.100.7:40000".parse().unwrap());
    /// assert_eq!(request.get_first_option(CoapOption::UriHost), Some(&b"192.0.2.1".to_vec()));
    /// assert_eq!(request.get_first_option(CoapOption::UriPort), Some(&vec![0x16, 0x33]));
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn apply_to_destination(&self, request: &mut Packet, destination: SocketAddr) {
        // A dual-stack socket may report an IPv4 peer as IPv4-mapped IPv6.
        let host = match self.host {
            Host::Ip(ip) => ip.to_canonical() != destination.ip().to_canonical(),
            Host::Name(_) => true,
        };
        self.set_options(request, host, self.port != destination.port());
    }

    /// A new Confirmable request with `method` and this URI's options
    /// ([`apply_to`](Self::apply_to)); the engine gives it a Message ID and a token.
    ///
    /// ```
    /// use coap_engine::coap_lite::{MessageClass, RequestType};
    /// use coap_engine::{Config, Endpoint, Instant};
    ///
    /// let uri = coap_engine::uri::parse("coap://127.0.0.1/hello")?;
    /// let request = uri.request(RequestType::Get);
    /// assert_eq!(request.header.code, MessageClass::Request(RequestType::Get));
    /// let mut endpoint = Endpoint::new(Config::default(), 1).unwrap();
    /// endpoint.request(Instant::ZERO, uri.socket_addr().unwrap(), &request).unwrap();
    /// # Ok::<(), coap_engine::uri::UriError>(())
    /// ```
    pub fn request(&self, method: RequestType) -> Packet {
        let mut request = Packet::new();
        request.header.code = MessageClass::Request(method);
        self.apply_to(&mut request);
        request
    }

    fn set_options(&self, request: &mut Packet, host: bool, port: bool) {
        for option in [
            CoapOption::UriHost,
            CoapOption::UriPort,
            CoapOption::UriPath,
            CoapOption::UriQuery,
        ] {
            request.clear_option(option);
        }
        if host {
            let value = match &self.host {
                Host::Name(name) => name.clone().into_bytes(),
                ip => ip.to_string().into_bytes(),
            };
            request.add_option(CoapOption::UriHost, value);
        }
        if port {
            let value = match self.port.to_be_bytes() {
                [0, low] => alloc::vec![low],
                both => both.to_vec(),
            };
            request.add_option(CoapOption::UriPort, value);
        }
        for segment in &self.path {
            request.add_option(CoapOption::UriPath, segment.clone());
        }
        for argument in &self.query {
            request.add_option(CoapOption::UriQuery, argument.clone());
        }
    }
}

impl FromStr for CoapUri {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<CoapUri, UriError> {
        CoapUri::parse(uri)
    }
}

impl fmt::Display for CoapUri {
    /// RFC 7252 §6.5 steps 1–10 from the decomposed URI: the scheme, the host, `:port`
    /// unless it is the scheme's default, then one `/segment` per Uri-Path (or `/`) and
    /// `?argument&...` per Uri-Query, percent-encoding what the grammar reserves. A segment
    /// that is `.` or `..` is percent-encoded too, or reference resolution would remove it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match (&self.host, &self.zone) {
            (Host::Ip(IpAddr::V6(a)), Some(zone)) => {
                write!(f, "[{a}%25")?;
                write_encoded(f, zone.as_bytes(), is_unreserved)?;
                f.write_char(']')?;
            }
            (host, _) => write!(f, "{host}")?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        if self.path.is_empty() {
            f.write_char('/')?;
        }
        for segment in &self.path {
            f.write_char('/')?;
            match segment.as_slice() {
                b"." => f.write_str("%2E")?,
                b".." => f.write_str("%2E%2E")?,
                s => write_encoded(f, s, is_pchar)?,
            }
        }
        for (i, argument) in self.query.iter().enumerate() {
            f.write_char(if i == 0 { '?' } else { '&' })?;
            write_encoded(f, argument, |b| b != b'&' && is_query_char(b))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
