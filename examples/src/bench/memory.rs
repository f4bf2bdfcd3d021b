//! `coap-bench -M N`: a server's memory per idle peer session, by RSS delta. A fresh server
//! process is started; its resident set is read; N peers (each its own loopback address,
//! 127.64.0.0 upwards) send it one Confirmable GET each and get their answer; 0.5 s later
//! the resident set is read again. (RSS after − RSS before) / N is what one session that
//! served one request costs while it is remembered (within EXCHANGE_LIFETIME, so its
//! deduplication entry and cached answer are alive).
//!
//! The peers are not engines: each request is a hand-built datagram from the shared
//! batched socket, at most `WINDOW` unanswered at a time, re-sent with its Message ID
//! unchanged (so the server deduplicates it) if no answer came within `RESEND`.

use std::time::{Duration, Instant};

use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};

use crate::bench::{spawn, Mode};
use crate::mmsg::{AddressBlock, MultiSocket, RecvBatch, SendBatch};

/// Peer `i` sends from 127.64.0.1 + i.
const PEERS: AddressBlock = AddressBlock::new(127, 64, 0, 0);
/// Requests unanswered at once: well within a server socket's receive buffer.
const WINDOW: usize = 128;
/// A request unanswered this long is sent again.
const RESEND: Duration = Duration::from_millis(300);
/// The whole measurement gives up after this.
pub(crate) const LIMIT: Duration = Duration::from_secs(120);

/// What one server's measurement found.
pub(crate) struct Footprint {
    pub(crate) rss_before: u64,
    pub(crate) rss_after: u64,
    pub(crate) answered: usize,
    pub(crate) elapsed: Duration,
}

impl Footprint {
    /// Per session that was answered (a server that falls behind is measured at the
    /// sessions it reached, not charged for the rest).
    pub(crate) fn per_session(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.answered.max(1) as f64
    }
}

/// Resident set size of process `pid` in bytes (`VmRSS` in `/proc/<pid>/status`).
fn rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no VmRSS for process {pid}"))
}

fn request(i: usize, path: &str) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = i as u16;
    p.set_token((i as u32).to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p.to_bytes().unwrap_or_default()
}

/// Starts `program` with `args`, opens `n` sessions on it and measures its RSS delta.
pub(crate) fn measure(
    program: &str,
    args: &[String],
    n: usize,
    path: &str,
) -> Result<Footprint, String> {
    let server = spawn(program, Mode::Udp, args)?;
    let pid = server.child.id();
    let mut socket = MultiSocket::bind(8 << 20, Duration::from_millis(20))
        .map_err(|e| format!("cannot open the peers' socket: {e}"))?;
    let mut recv = RecvBatch::new();
    let mut send: SendBatch<Vec<u8>> = SendBatch::default();
    let rss_before = rss(pid)?;
    let started = Instant::now();
    let mut answered = vec![false; n];
    let mut count = 0;
    // (peer, last sent) of the requests in flight.
    let mut in_flight: Vec<(usize, Instant)> = Vec::with_capacity(WINDOW);
    let mut next = 0;
    while count < n && started.elapsed() < LIMIT {
        let now = Instant::now();
        for (i, sent) in in_flight.iter_mut() {
            if now.duration_since(*sent) >= RESEND {
                *sent = now;
                send.push(PEERS.address(*i), server.addr, request(*i, path));
            }
        }
        while in_flight.len() < WINDOW && next < n {
            send.push(PEERS.address(next), server.addr, request(next, path));
            in_flight.push((next, now));
            next += 1;
        }
        socket.send(&mut send);
        let got = socket
            .recv(&mut recv, true)
            .map_err(|e| format!("receive failed: {e}"))?;
        for k in 0..got {
            let (local, _, _) = recv.get(k);
            let Some(i) = local.and_then(|a| PEERS.index(a)).filter(|&i| i < n) else {
                continue;
            };
            if !answered[i] {
                answered[i] = true;
                count += 1;
                in_flight.retain(|&(j, _)| j != i);
            }
        }
    }
    let elapsed = started.elapsed();
    // Let the server settle (its own timers, allocator) before the second reading.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss(pid)?;
    drop(server);
    Ok(Footprint {
        rss_before,
        rss_after,
        answered: count,
        elapsed,
    })
}
