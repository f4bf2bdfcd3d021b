//! Just enough of the DTLS 1.2 wire format (RFC 6347 §4.1, §4.2.2) to act before an
//! association exists: check a datagram's record framing, read a ClientHello's random,
//! cookie and cipher suites, and rebuild the cookie-less ClientHello the stateless cookie
//! exchange stands for. dimpl parses everything after that.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, thread_local, vec};

/// Record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// Handshake header: type, length, message_seq, fragment_offset, fragment_length.
const HANDSHAKE_HEADER: usize = 12;
/// A record's fragment may not exceed 2^14 bytes of plaintext plus 2048 of protection
/// (RFC 6347 §4.1, RFC 5246 §6.2.3).
pub(crate) const MAX_RECORD: usize = (1 << 14) + 2048;

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;

/// Cipher suites (IANA TLS registry).
pub(crate) const PSK_AES128_CCM_8: u16 = 0xC0A8;
pub(crate) const ECDHE_ECDSA_SUITES: [u16; 3] = [0xC02B, 0xC02C, 0xCCA9];

/// Whether every record in `datagram` is well framed and within the size a record may have.
/// dimpl drops what it cannot parse; this bound also caps the certificate it can hand back.
pub(crate) fn records_ok(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    // One largest record per datagram at most: what a handshake may buffer stays bounded
    // (dimpl keeps up to 16 datagrams per association).
    if rest.is_empty() || rest.len() > RECORD_HEADER + MAX_RECORD {
        return false;
    }
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if len > MAX_RECORD || rest.len() < RECORD_HEADER + len {
            return false;
        }
        rest = &rest[RECORD_HEADER + len..];
    }
    true
}

/// A ClientHello that arrived whole in the first record of a datagram.
pub(crate) struct ClientHello<'a> {
    pub(crate) random: &'a [u8],
    pub(crate) cookie: &'a [u8],
    suites: &'a [u8],
    /// The first record, as received.
    record: &'a [u8],
    /// Where the cookie length byte is, within `record`.
    cookie_at: usize,
}

impl<'a> ClientHello<'a> {
    /// The cipher suites offered, in the client's order of preference.
    pub(crate) fn suites(&self) -> impl Iterator<Item = u16> + 'a {
        self.suites
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    /// This ClientHello as it was before the cookie exchange (RFC 6347 §4.2.1): same
    /// record, no cookie, message_seq 0. Fed to a fresh server so that it reaches the state
    /// it would have had after answering that first ClientHello itself.
    pub(crate) fn without_cookie(&self) -> Vec<u8> {
        let cut = self.cookie.len();
        let mut out = Vec::with_capacity(self.record.len() - cut);
        out.extend_from_slice(&self.record[..self.cookie_at]);
        out.push(0);
        out.extend_from_slice(&self.record[self.cookie_at + 1 + cut..]);
        let record_len = out.len() - RECORD_HEADER;
        out[11..13].copy_from_slice(&(record_len as u16).to_be_bytes());
        let body_len = (record_len - HANDSHAKE_HEADER) as u32;
        let h = RECORD_HEADER;
        out[h + 1..h + 4].copy_from_slice(&body_len.to_be_bytes()[1..]);
        out[h + 4..h + 6].copy_from_slice(&[0, 0]); // message_seq
        out[h + 9..h + 12].copy_from_slice(&body_len.to_be_bytes()[1..]);
        out
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// Reads the ClientHello in the first record of `datagram`: epoch 0, unfragmented.
pub(crate) fn client_hello(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let header = datagram.get(..RECORD_HEADER)?;
    if header[0] != HANDSHAKE || header[3..5] != [0, 0] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let record = datagram.get(..RECORD_HEADER + len)?;
    let hs = &record[RECORD_HEADER..];
    let hh = hs.get(..HANDSHAKE_HEADER)?;
    let (length, offset, fragment) = (u24(&hh[1..4]), u24(&hh[6..9]), u24(&hh[9..12]));
    if hh[0] != CLIENT_HELLO || offset != 0 || fragment != length {
        return None;
    }
    let body = hs.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + length)?;
    if HANDSHAKE_HEADER + length != hs.len() {
        return None; // a second message in the record: not something to stand in for
    }
    let random = body.get(2..34)?;
    let sid_len = usize::from(*body.get(34)?);
    let cookie_pos = 35 + sid_len;
    let cookie_len = usize::from(*body.get(cookie_pos)?);
    let cookie = body.get(cookie_pos + 1..cookie_pos + 1 + cookie_len)?;
    let suites_pos = cookie_pos + 1 + cookie_len;
    let suites_len = usize::from(u16::from_be_bytes(
        body.get(suites_pos..suites_pos + 2)?.try_into().ok()?,
    ));
    let suites = body.get(suites_pos + 2..suites_pos + 2 + suites_len)?;
    Some(ClientHello {
        random,
        cookie,
        suites,
        record,
        cookie_at: RECORD_HEADER + HANDSHAKE_HEADER + cookie_pos,
    })
}

/// Whether the datagram starts with a ClientHello (epoch 0): a peer asking for a new
/// association.
pub(crate) fn starts_client_hello(datagram: &[u8]) -> bool {
    datagram.len() > RECORD_HEADER
        && datagram[0] == HANDSHAKE
        && datagram[3..5] == [0, 0]
        && datagram[RECORD_HEADER] == CLIENT_HELLO
}

/// Whether a datagram we produced is a HelloVerifyRequest.
pub(crate) fn is_hello_verify_request(datagram: &[u8]) -> bool {
    datagram.len() > RECORD_HEADER
        && datagram[0] == HANDSHAKE
        && datagram[RECORD_HEADER] == HELLO_VERIFY_REQUEST
}

/// Whether a datagram we produced carries a ChangeCipherSpec: our Finished follows it.
pub(crate) fn has_change_cipher_spec(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while let Some(header) = rest.get(..RECORD_HEADER) {
        if header[0] == 20 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        rest = rest.get(RECORD_HEADER + len..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with the given cookie and suites.
    fn hello(cookie: &[u8], seq: u16) -> Vec<u8> {
        let mut body = vec![0xFE, 0xFD];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 4, 0xC0, 0xA8, 0xC0, 0x2B]);
        body.extend_from_slice(&[1, 0]); // null compression
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&seq.to_be_bytes());
        hs.extend_from_slice(&[0, 0, 0]);
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_a_client_hello_and_drops_its_cookie() {
        let with = hello(&[9; 32], 1);
        let ch = client_hello(&with).unwrap();
        assert_eq!(ch.cookie, &[9; 32]);
        assert_eq!(ch.random, &[7; 32]);
        assert_eq!(ch.suites().collect::<Vec<_>>(), vec![0xC0A8, 0xC02B]);
        assert_eq!(ch.without_cookie(), hello(&[], 0));
        assert!(records_ok(&with) && starts_client_hello(&with));
    }

    #[test]
    fn rejects_truncated_and_oversized_framing() {
        let h = hello(&[], 0);
        for cut in 0..h.len() {
            assert!(client_hello(&h[..cut]).is_none(), "cut at {cut}");
            assert!(!records_ok(&h[..cut]), "framing cut at {cut}");
        }
        let mut big = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF];
        big.resize(13 + 0xFFFF, 0);
        assert!(!records_ok(&big));
    }
}
