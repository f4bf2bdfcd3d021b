//! `coap-bench`'s load generator for `coap://` (included with `#[path]`): P simulated
//! clients that cost the generator as little as a CoAP client can, so that what is measured
//! is the server.
//!
//! A client here is not an engine: it is a Message ID counter, a token counter and W slots
//! of requests in flight. A request is the 8-byte Confirmable `GET /` with a 4-byte token;
//! its answer is matched by the address it came back to (the client), then by Message ID
//! (piggybacked, RST) or token (separate responses, which are acknowledged). A request left
//! unanswered is sent again, Message ID unchanged, after 2 s, 4 s, 8 s, 16 s (RFC 7252's
//! ACK_TIMEOUT doubling, without the random factor), and fails after the fourth.
//!
//! So that the server never pays for the generator: the generator never sleeps in a
//! receive. It takes what has arrived without waiting (`MSG_DONTWAIT`), and when nothing has,
//! it naps for [`NAP`] on a timer, so no reply ever has to wake it (a wake-up is work for
//! the sender, inside the server's `sendmmsg`). Its timer slack is set to 1 µs so the nap is
//! short; the CPU share the tables report is the time it spent working (a nap costs only its
//! wake-up).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use coap_engine::coap_lite::MessageType;
use coap_engine::codec::parse_header;

use crate::bench::{socket_drops, Run, Server, Tally, CLIENTS, RAMP_PER_MS, SWEEP};
use crate::mmsg::{MultiSocket, RecvBatch, SendBatch};

/// How long the generator sleeps when nothing arrived.
pub(crate) const NAP: Duration = Duration::from_micros(50);
/// RFC 7252's ACK_TIMEOUT (without ACK_RANDOM_FACTOR) and MAX_RETRANSMIT.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u8 = 4;

/// A datagram the generator sends: a request (8 bytes) or an empty ACK (4 bytes).
#[derive(Clone, Copy)]
pub(crate) struct Wire {
    len: u8,
    bytes: [u8; 8],
}

impl AsRef<[u8]> for Wire {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Confirmable `GET /` with Message ID `mid` and the 4-byte token `token`.
fn get(mid: u16, token: u32) -> Wire {
    let [m0, m1] = mid.to_be_bytes();
    let [t0, t1, t2, t3] = token.to_be_bytes();
    Wire {
        len: 8,
        bytes: [0x44, 0x01, m0, m1, t0, t1, t2, t3],
    }
}

/// The empty ACK of a Confirmable separate response.
fn ack(mid: u16) -> Wire {
    let [m0, m1] = mid.to_be_bytes();
    Wire {
        len: 4,
        bytes: [0x60, 0x00, m0, m1, 0, 0, 0, 0],
    }
}

/// A request in flight.
struct Slot {
    mid: u16,
    token: u32,
    first_sent: Instant,
    last_sent: Instant,
    /// Retransmissions so far.
    tries: u8,
    /// An empty ACK came: the answer follows as a separate response; stop retransmitting.
    acknowledged: bool,
}

#[derive(Default)]
struct Client {
    next_mid: u16,
    next_token: u32,
    in_flight: Vec<Slot>,
}

/// What a reply to a client means for its requests.
enum Reply {
    /// Piggybacked answer or RST, by Message ID; `ok`: a 2.xx answer.
    ByMid {
        mid: u16,
        token: Option<u32>,
        ok: bool,
    },
    /// Empty ACK: the request with this Message ID is acknowledged.
    Acknowledged { mid: u16 },
    /// Separate response, by token; `ack`: it was Confirmable, with this Message ID.
    ByToken {
        token: u32,
        ok: bool,
        ack: Option<u16>,
    },
}

fn parse(bytes: &[u8]) -> Option<Reply> {
    // The engine's own header reader: only the fixed header and the token are needed.
    let h = parse_header(bytes).ok()?;
    let mid = h.message_id;
    let token = match bytes.get(4..4 + usize::from(h.token_length)) {
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    };
    let ok = h.code_class() == 2;
    match h.mtype {
        MessageType::Acknowledgement if h.is_empty() => Some(Reply::Acknowledged { mid }),
        MessageType::Acknowledgement => Some(Reply::ByMid { mid, token, ok }),
        MessageType::Reset => Some(Reply::ByMid {
            mid,
            token: None,
            ok: false,
        }),
        t if !h.is_empty() => Some(Reply::ByToken {
            token: token?,
            ok,
            ack: (t == MessageType::Confirmable).then_some(mid),
        }),
        _ => None,
    }
}

pub(crate) struct Loadgen {
    socket: MultiSocket,
    clients: Vec<Client>,
    recv: RecvBatch,
    send: SendBatch<Wire>,
    pub(crate) send_errors: usize,
}

impl Loadgen {
    pub(crate) fn new(clients: usize) -> Result<Loadgen, String> {
        // Room for every reply of 2,000 × 4 clients at once (about 1 KiB each in the kernel).
        let socket = MultiSocket::bind(16 << 20, Duration::from_millis(5))
            .map_err(|e| format!("cannot open the client socket: {e}"))?;
        // A nap of NAP, not of NAP plus the default 50 µs of slack.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        Ok(Loadgen {
            socket,
            clients: (0..clients).map(|_| Client::default()).collect(),
            recv: RecvBatch::new(),
            send: SendBatch::default(),
            send_errors: 0,
        })
    }

    /// Whether requests leave in batches (a raw socket was available).
    pub(crate) fn batched_sends(&self) -> bool {
        self.socket.batched_sends()
    }

    fn issue(&mut self, i: usize, server: SocketAddrV4, now: Instant) {
        let client = &mut self.clients[i];
        let (mid, token) = (client.next_mid, client.next_token);
        client.next_mid = mid.wrapping_add(1);
        client.next_token = token.wrapping_add(1);
        client.in_flight.push(Slot {
            mid,
            token,
            first_sent: now,
            last_sent: now,
            tries: 0,
            acknowledged: false,
        });
        self.send.push(CLIENTS.address(i), server, get(mid, token));
    }

    /// Ends client `i`'s request at `k` (answered when `ok`), and starts its next one.
    fn complete(&mut self, i: usize, k: usize, ok: bool, tally: &mut Tally, server: SocketAddrV4) {
        let slot = self.clients[i].in_flight.swap_remove(k);
        tally.ended(slot.first_sent, ok);
        if tally.running {
            self.issue(i, server, Instant::now());
        }
    }

    fn on_reply(&mut self, i: usize, reply: Reply, tally: &mut Tally, server: SocketAddrV4) {
        let slots = &mut self.clients[i].in_flight;
        match reply {
            Reply::ByMid { mid, token, ok } => {
                let found = slots
                    .iter()
                    .position(|s| s.mid == mid && token.is_none_or(|t| t == s.token));
                if let Some(k) = found {
                    self.complete(i, k, ok, tally, server);
                }
            }
            Reply::Acknowledged { mid } => {
                if let Some(s) = slots.iter_mut().find(|s| s.mid == mid) {
                    s.acknowledged = true;
                }
            }
            Reply::ByToken { token, ok, ack: a } => {
                if let Some(mid) = a {
                    self.send.push(CLIENTS.address(i), server, ack(mid));
                }
                if let Some(k) = slots.iter().position(|s| s.token == token) {
                    self.complete(i, k, ok, tally, server);
                }
            }
        }
    }

    /// Retransmits what is due and fails what ran out of retransmissions.
    fn sweep(&mut self, p: usize, now: Instant, tally: &mut Tally, server: SocketAddrV4) {
        for i in 0..p {
            let mut k = 0;
            while k < self.clients[i].in_flight.len() {
                let s = &mut self.clients[i].in_flight[k];
                let due = s.last_sent + ACK_TIMEOUT * (1 << s.tries);
                if s.acknowledged || now < due {
                    k += 1;
                } else if s.tries == MAX_RETRANSMIT {
                    self.complete(i, k, false, tally, server);
                } else {
                    s.tries += 1;
                    s.last_sent = now;
                    let wire = get(s.mid, s.token);
                    self.send.push(CLIENTS.address(i), server, wire);
                    k += 1;
                }
            }
        }
    }

    /// Runs clients `0..p` with `w` requests each in flight against `server` for `secs`.
    pub(crate) fn load(
        &mut self,
        server: &Server,
        p: usize,
        w: usize,
        secs: f64,
    ) -> Result<Run, String> {
        let addr = server.addr;
        let mut tally = Tally::new(server, secs);
        let drops_before = socket_drops(addr);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            let clients = &self.clients[..p];
            if tally.advance(now, || clients.iter().all(|c| c.in_flight.is_empty())) {
                break;
            }
            for i in tally.start(now, RAMP_PER_MS, p) {
                for _ in 0..w {
                    self.issue(i, addr, now);
                }
            }
            if tally.started == p {
                tally.ready(now);
            }
            if now.duration_since(last_sweep) >= SWEEP {
                last_sweep = now;
                self.sweep(p, now, &mut tally, addr);
            }
            self.send_errors += self.socket.send(&mut self.send);
            let n = self
                .socket
                .recv(&mut self.recv, false)
                .map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                std::thread::sleep(NAP);
                continue;
            }
            for k in 0..n {
                let (local, from, bytes) = self.recv.get(k);
                let Some(i) = local.and_then(|a| CLIENTS.index(a)).filter(|&i| i < p) else {
                    continue;
                };
                if from != addr {
                    continue;
                }
                if let Some(reply) = parse(bytes) {
                    self.on_reply(i, reply, &mut tally, addr);
                }
            }
        }
        let mut unanswered = 0;
        for client in &mut self.clients[..p] {
            unanswered += client.in_flight.len() as u64;
            client.in_flight.clear();
        }
        Ok(tally.finish(unanswered, socket_drops(addr) - drops_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_told_apart() {
        // Piggybacked 2.05 with our token.
        let r = parse(&[0x64, 0x45, 0x12, 0x34, 0, 0, 0, 9, 0xff, b'x']);
        assert!(matches!(
            r,
            Some(Reply::ByMid {
                mid: 0x1234,
                token: Some(9),
                ok: true
            })
        ));
        // Piggybacked 4.04.
        let r = parse(&[0x64, 0x84, 0, 1, 0, 0, 0, 1]);
        assert!(matches!(r, Some(Reply::ByMid { ok: false, .. })));
        // Empty ACK, then a Confirmable separate 2.05 (to be acknowledged).
        assert!(matches!(
            parse(&[0x60, 0x00, 0, 7]),
            Some(Reply::Acknowledged { mid: 7 })
        ));
        let r = parse(&[0x44, 0x45, 0x99, 0x01, 0, 0, 0, 3]);
        assert!(matches!(
            r,
            Some(Reply::ByToken {
                token: 3,
                ok: true,
                ack: Some(0x9901)
            })
        ));
        // A NON separate response needs no ACK; RST ends by Message ID.
        let r = parse(&[0x54, 0x45, 0, 2, 0, 0, 0, 4]);
        assert!(matches!(
            r,
            Some(Reply::ByToken {
                token: 4,
                ack: None,
                ..
            })
        ));
        assert!(matches!(
            parse(&[0x70, 0x00, 0, 5]),
            Some(Reply::ByMid {
                mid: 5,
                ok: false,
                ..
            })
        ));
        // Not CoAP version 1, or truncated.
        assert!(parse(&[0x84, 0x45, 0, 1]).is_none());
        assert!(parse(&[0x64, 0x45, 0]).is_none());
    }

    #[test]
    fn requests_are_well_formed_coap() {
        let w = get(0xabcd, 0x0102_0304);
        let p = coap_engine::coap_lite::Packet::from_bytes(w.as_ref()).unwrap();
        assert_eq!(p.header.message_id, 0xabcd);
        assert_eq!(p.get_token(), [1, 2, 3, 4]);
        assert_eq!(
            p.header.code,
            coap_engine::coap_lite::MessageClass::Request(coap_engine::coap_lite::RequestType::Get)
        );
        let a = coap_engine::coap_lite::Packet::from_bytes(ack(9).as_ref()).unwrap();
        assert_eq!(
            a.header.get_type(),
            coap_engine::coap_lite::MessageType::Acknowledgement
        );
        assert_eq!(a.header.code, coap_engine::coap_lite::MessageClass::Empty);
    }
}
