//! `coap-bench -E batched|single -A addr -p port`: the physical-limit column. A server that
//! does no CoAP work at all: each request becomes its own piggybacked answer in place (type
//! ACK, code 2.05, Message ID and token kept, then Content-Format text/plain and a payload
//! that makes the answer [`ANSWER_LEN`] bytes, the size of both servers' answers to
//! `GET /`) and goes straight back. `batched` moves up to [`BATCH`] datagrams per `recvmmsg`/`sendmmsg`, as the mio
//! adapter does; `single` makes one `recv_from` and one `send_to` per datagram. What the
//! generator measures against it is what this machine's loopback and system calls allow.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use coap_engine::codec::parse_header;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};

use crate::mmsg::{BATCH, MTU};

/// The answer's size: our `coap-server`'s answer to `GET /` is 141 bytes, libcoap's 150.
const ANSWER_LEN: usize = 144;

/// Turns the request of `len` bytes at the start of `buf` into its answer; the answer's
/// length, or `None` for what is not a CoAP request (left unanswered).
fn answer(buf: &mut [u8; MTU], len: usize) -> Option<usize> {
    let h = parse_header(&buf[..len]).ok()?;
    let tkl = usize::from(h.token_length);
    if !h.is_request() || tkl > 8 || len < 4 + tkl {
        return None;
    }
    buf[0] = 0x60 | tkl as u8; // version 1, ACK
    buf[1] = 0x45; // 2.05 Content
    let options = 4 + tkl;
    buf[options] = 0xc0; // Content-Format (12), empty: text/plain
    buf[options + 1] = 0xff;
    buf[options + 2..ANSWER_LEN].fill(b'x');
    Some(ANSWER_LEN)
}

/// Serves until killed; returns only on a socket error.
pub(crate) fn serve(addr: SocketAddrV4, batched: bool) -> Result<(), String> {
    let socket = UdpSocket::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
    if batched {
        serve_batched(&socket)
    } else {
        let mut buf = [0u8; MTU];
        loop {
            let (n, from) = socket
                .recv_from(&mut buf)
                .map_err(|e| format!("receive: {e}"))?;
            if let Some(len) = answer(&mut buf, n) {
                let _ = socket.send_to(&buf[..len], from);
            }
        }
    }
}

fn serve_batched(socket: &UdpSocket) -> Result<(), String> {
    let mut bufs = vec![[0u8; MTU]; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut received: Vec<(usize, Option<SockaddrIn>)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                socket.as_raw_fd(),
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => received.extend(results.map(|m| (m.bytes, m.address))),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
        let mut slices = Vec::with_capacity(received.len());
        let mut addrs = Vec::with_capacity(received.len());
        for (buf, &(n, from)) in bufs.iter_mut().zip(&received) {
            if let Some(len) = answer(buf, n) {
                slices.push([IoSlice::new(&buf[..len])]);
                addrs.push(from);
            }
        }
        let mut done = 0;
        while done < slices.len() {
            let none: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                socket.as_raw_fd(),
                &mut send_headers,
                &slices[done..],
                &addrs[done..],
                none,
                MsgFlags::empty(),
            ) {
                Ok(results) => done += results.count().max(1),
                Err(Errno::EINTR) => {}
                Err(_) => done += 1, // that one is lost, as on a wire
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(request: &[u8]) -> Option<Vec<u8>> {
        let mut buf = [0u8; MTU];
        buf[..request.len()].copy_from_slice(request);
        answer(&mut buf, request.len()).map(|n| buf[..n].to_vec())
    }

    #[test]
    fn a_request_becomes_its_piggybacked_answer() {
        let req = [
            0x44, 0x01, 0x12, 0x34, 1, 2, 3, 4, 0xb4, b't', b'i', b'm', b'e',
        ];
        let a = answer_to(&req).unwrap();
        assert_eq!(a.len(), ANSWER_LEN);
        let p = coap_engine::coap_lite::Packet::from_bytes(&a).unwrap();
        assert_eq!(
            p.header.get_type(),
            coap_engine::coap_lite::MessageType::Acknowledgement
        );
        assert_eq!(
            p.header.code,
            coap_engine::coap_lite::MessageClass::Response(
                coap_engine::coap_lite::ResponseType::Content
            )
        );
        assert_eq!(
            (p.header.message_id, p.get_token()),
            (0x1234, &[1, 2, 3, 4][..])
        );
        assert_eq!(
            p.get_content_format(),
            Some(coap_engine::coap_lite::ContentFormat::TextPlain)
        );
        assert_eq!(p.payload.len(), ANSWER_LEN - 10);
        // Responses, empty messages and truncated or foreign datagrams get nothing.
        assert_eq!(answer_to(&[0x64, 0x45, 0, 1, 1, 2, 3, 4]), None);
        assert_eq!(answer_to(&[0x40, 0x00, 0, 1]), None);
        assert_eq!(answer_to(&[0x48, 0x01, 0, 1, 1]), None);
        assert_eq!(answer_to(&[0x84, 0x01, 0, 1, 1, 2, 3, 4]), None);
        assert_eq!(answer_to(&[0x44]), None);
    }
}
