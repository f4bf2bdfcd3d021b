//! What crosses a network namespace's interface, frame by frame: an `AF_PACKET` socket
//! opened inside the namespace (on a thread of its own that `setns` moves there), so what a
//! case asserts on does not depend on timing, device counters or other traffic (ARP, IPv6).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One CoAP datagram seen on the interface, with the moment it was read.
#[derive(Clone, Debug)]
pub struct Frame {
    pub at: Instant,
    /// To port 5683 (else from it).
    pub to_server: bool,
    pub bytes: Vec<u8>,
}

impl Frame {
    /// RFC 7252 §3: (type, code, Message ID) of a version 1 message.
    pub fn header(&self) -> Option<(u8, u8, u16)> {
        let m = &self.bytes;
        (m.len() >= 4 && m[0] >> 6 == 1)
            .then(|| (m[0] >> 4 & 3, m[1], u16::from_be_bytes([m[2], m[3]])))
    }

    /// An Empty message (code 0.00, no token, nothing after the header) of type `t`.
    pub fn is_empty(&self, t: u8) -> bool {
        self.bytes.len() == 4 && matches!(self.header(), Some((ty, 0, _)) if ty == t)
    }
}

pub const CON: u8 = 0;
pub const ACK: u8 = 2;
pub const RST: u8 = 3;

/// CoAP datagrams (UDP to or from port 5683) captured on one interface, both directions.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Frame>>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// Every protocol, so frames the namespace sends show up beside those it receives (a socket
/// bound to one protocol only sees incoming frames).
const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    /// Starts capturing IPv4 frames crossing `dev` in namespace `ns`, either way; returns
    /// once the socket is bound, so nothing sent after this returns is missed.
    pub fn start(ns: &str, dev: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (ready, bound) = std::sync::mpsc::channel();
        let (ns, iface, flag, sink) = (
            ns.to_string(),
            dev.to_string(),
            stop.clone(),
            frames.clone(),
        );
        let thread = std::thread::spawn(move || {
            let socket = match open(&ns, &iface) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = ready.send(Ok(()));
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: `buf` is valid for `buf.len()` bytes; the socket is ours.
                let n = unsafe { libc::recv(socket, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue; // the receive timeout: look at the flag again
                }
                let at = Instant::now();
                if let Some((to_server, coap)) = coap_payload(&buf[..n as usize]) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(Frame {
                        at,
                        to_server,
                        bytes: coap.to_vec(),
                    });
                }
            }
            // SAFETY: closing the descriptor this thread opened.
            unsafe { libc::close(socket) };
            Ok(())
        });
        match bound.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("packet capture in {dev} failed: {e}"),
            Err(_) => panic!("packet capture thread died"),
        }
        Capture {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// What was captured so far, in order.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `seen` holds for what was captured: the moment it did, or `None` once
    /// `deadline` has passed.
    pub fn wait_for(&self, deadline: Instant, seen: impl Fn(&[Frame]) -> bool) -> Option<Instant> {
        loop {
            if seen(&self.frames()) {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops and returns the CoAP messages captured, in order.
    pub fn finish(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread
            .join()
            .expect("packet capture thread")
            .unwrap_or_else(|e| panic!("packet capture: {e}"));
        self.frames()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An `AF_PACKET` datagram socket for every protocol on `dev`, opened inside namespace `ns` (this
/// thread stays there).
fn open(ns: &str, dev: &str) -> Result<libc::c_int, String> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: plain system calls on descriptors and values owned here.
    unsafe {
        if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
        }
        let s = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM,
            i32::from(ETH_P_ALL.to_be()),
        );
        if s < 0 {
            return Err(format!(
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        let name = std::ffi::CString::new(dev).map_err(|e| e.to_string())?;
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(format!("no interface {dev} in {ns}"));
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = index as i32;
        if libc::bind(
            s,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(format!(
                "bind to {dev}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        Ok(s)
    }
}

/// Whether an IPv4 packet is UDP to port 5683 (else from it), and its UDP payload; `None`
/// for anything else (ARP and IPv6 frames fail the version check).
fn coap_payload(ip: &[u8]) -> Option<(bool, &[u8])> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    let from = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let to = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let to_server = to == 5683;
    (to_server || from == 5683)
        .then(|| Some((to_server, udp.get(8..)?)))
        .flatten()
}
