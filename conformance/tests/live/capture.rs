//! What reaches a network namespace's interface, counted frame by frame: an `AF_PACKET`
//! socket opened inside the namespace (on a thread of its own that `setns` moves there), so
//! the count does not depend on timing, device counters or other traffic (ARP, IPv6).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// CoAP datagrams (UDP to port 5683) captured on one interface.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Vec<u8>>, String>>>,
}

const ETH_P_IP: u16 = 0x0800;

impl Capture {
    /// Starts capturing IPv4 frames arriving on `dev` in namespace `ns`; returns once the
    /// socket is bound, so nothing sent after this returns is missed.
    pub fn start(ns: &str, dev: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = std::sync::mpsc::channel();
        let (ns, iface, flag) = (ns.to_string(), dev.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let socket = match open(&ns, &iface) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = ready.send(Ok(()));
            let mut payloads = Vec::new();
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: `buf` is valid for `buf.len()` bytes; the socket is ours.
                let n = unsafe { libc::recv(socket, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue; // the receive timeout: look at the flag again
                }
                if let Some(coap) = coap_payload(&buf[..n as usize]) {
                    payloads.push(coap.to_vec());
                }
            }
            // SAFETY: closing the descriptor this thread opened.
            unsafe { libc::close(socket) };
            Ok(payloads)
        });
        match bound.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("packet capture in {dev} failed: {e}"),
            Err(_) => panic!("packet capture thread died"),
        }
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the CoAP messages captured, in order.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread
            .join()
            .expect("packet capture thread")
            .unwrap_or_else(|e| panic!("packet capture: {e}"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An `AF_PACKET` datagram socket for IPv4 on `dev`, opened inside namespace `ns` (this
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
            i32::from(ETH_P_IP.to_be()),
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
        addr.sll_protocol = ETH_P_IP.to_be();
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

/// The UDP payload of an IPv4 packet to port 5683, if it is one.
fn coap_payload(ip: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    (port == 5683).then(|| udp.get(8..)).flatten()
}
