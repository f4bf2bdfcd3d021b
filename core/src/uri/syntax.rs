//! RFC 3986's grammar, as much of it as CoAP URIs use, and percent-encoding.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use super::{Host, Scheme, UriError};

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986 §3.1).
pub(super) fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

pub(super) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

pub(super) fn is_reg_name_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b)
}

pub(super) fn is_pchar(b: u8) -> bool {
    is_reg_name_char(b) || matches!(b, b':' | b'@')
}

pub(super) fn is_path_char(b: u8) -> bool {
    is_pchar(b) || b == b'/'
}

/// The characters of a query and of a fragment (RFC 3986 §3.4, §3.5).
pub(super) fn is_query_char(b: u8) -> bool {
    is_pchar(b) || matches!(b, b'/' | b'?')
}

/// Every byte of `uri[range]` is `allowed` or starts a percent-encoding.
pub(super) fn check(
    uri: &str,
    range: Range<usize>,
    allowed: fn(u8) -> bool,
) -> Result<(), UriError> {
    let bytes = uri.as_bytes();
    let mut i = range.start;
    while i < range.end {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| j < range.end && bytes[j].is_ascii_hexdigit();
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(UriError::InvalidPercentEncoding { at: i });
                }
                i += 3;
            }
            b if allowed(b) => i += 1,
            _ => return Err(UriError::InvalidCharacter { at: i }),
        }
    }
    Ok(())
}

/// Percent-decodes text that [`check`] accepted (a stray `%` stays as it is).
pub(super) fn decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hexadecimal digits make one byte.
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

pub(super) fn write_encoded(
    f: &mut fmt::Formatter<'_>,
    bytes: &[u8],
    keep: impl Fn(u8) -> bool,
) -> fmt::Result {
    for &b in bytes {
        if keep(b) {
            f.write_char(char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// `IPv6address` or RFC 6874's `IPv6address "%25" ZoneID` (the text between the brackets);
/// the zone comes back percent-decoded.
pub(super) fn parse_ip_literal(
    uri: &str,
    range: Range<usize>,
) -> Result<(Ipv6Addr, Option<String>), UriError> {
    let literal = &uri[range.clone()];
    if literal.starts_with(['v', 'V']) {
        return Err(UriError::UnsupportedIpLiteral);
    }
    let (address, zone) = match literal.find('%') {
        None => (literal, None),
        Some(percent) => {
            let zone_start = range.start + percent + 3;
            if !literal[percent..].starts_with("%25") || zone_start == range.end {
                return Err(UriError::InvalidIpLiteral);
            }
            check(uri, zone_start..range.end, is_unreserved)?;
            let zone = String::from_utf8(decode(&uri[zone_start..range.end]))
                .map_err(|_| UriError::InvalidIpLiteral)?;
            (&literal[..percent], Some(zone))
        }
    };
    let address = address.parse().map_err(|_| UriError::InvalidIpLiteral)?;
    Ok((address, zone))
}

/// `IPv4address / reg-name` (RFC 3986 §3.2.2; the grammar tries IPv4address first).
pub(super) fn parse_reg_name(uri: &str, range: Range<usize>) -> Result<Host, UriError> {
    if range.is_empty() {
        return Err(UriError::MissingHost);
    }
    check(uri, range.clone(), is_reg_name_char)?;
    let text = &uri[range];
    // `Ipv4Addr`'s syntax is RFC 3986's `IPv4address`: four decimal octets, no leading zero.
    if let Ok(address) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(address)));
    }
    // §6.4 step 5: lower-case, then decode.
    String::from_utf8(decode(&text.to_ascii_lowercase()))
        .map(Host::Name)
        .map_err(|_| UriError::HostNotUtf8)
}

/// `[":" port]` (RFC 3986 §3.2.3); an empty port is the default (§6.3's
/// `coap://EXAMPLE.com:/`).
pub(super) fn parse_port(text: &str, at: usize, scheme: Scheme) -> Result<u16, UriError> {
    let digits = match text.strip_prefix(':') {
        None if text.is_empty() => return Ok(scheme.default_port()),
        None => return Err(UriError::InvalidCharacter { at }),
        Some("") => return Ok(scheme.default_port()),
        Some(digits) => digits,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::InvalidPort);
    }
    // Leading zeros are allowed, so the length says nothing; saturate instead.
    let port = digits
        .bytes()
        .fold(0u32, |n, b| (n * 10 + u32::from(b - b'0')).min(1 << 16));
    match u16::try_from(port) {
        Ok(0) | Err(_) => Err(UriError::InvalidPort),
        Ok(port) => Ok(port),
    }
}

/// The Uri-Host value as a host: an IPv4 address, a bracketed IPv6 address, or a name.
pub(super) fn host_of_option(value: &[u8]) -> Result<Host, UriError> {
    let text = core::str::from_utf8(value).map_err(|_| UriError::InvalidUriHost)?;
    if text.is_empty() {
        return Err(UriError::InvalidUriHost);
    }
    if let Some(inner) = text.strip_prefix('[') {
        let address = inner
            .strip_suffix(']')
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            .ok_or(UriError::InvalidUriHost)?;
        return Ok(Host::Ip(IpAddr::V6(address)));
    }
    if let Ok(address) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(address)));
    }
    Ok(Host::Name(text.to_ascii_lowercase()))
}

/// RFC 3986 §5.2.4, for a path that is empty or starts with `/`.
pub(super) fn remove_dot_segments(path: &str) -> String {
    fn pop(output: &mut String) {
        let cut = output.rfind('/').unwrap_or(0);
        output.truncate(cut);
    }
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop(&mut output);
        } else if input == "/.." {
            input = "/";
            pop(&mut output);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| start + i);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}
