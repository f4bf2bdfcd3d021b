//! What the end-to-end tests share: servers on free loopback ports, ready once they answer
//! a CoAP ping, killed by a guard.

#![allow(dead_code)] // each test crate uses its own part

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process, killed and reaped when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for UDP and TCP whose next port is free too: libcoap's server and
/// ours listen for TCP next to UDP, and with credentials on PORT + 1 as well.
pub fn free_port_pair() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let free = port < u16::MAX
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if free {
            return port;
        }
    }
}

/// Starts `program` with `args` plus `-A 127.0.0.1 -p PORT` on a free port (and the next
/// one free too) and waits until it answers a CoAP ping, retrying on another port if the one
/// picked was taken meanwhile; its stderr goes to `log` if given.
pub fn start_logging(program: &str, args: &[&str], log: Option<&std::fs::File>) -> Server {
    for _ in 0..5 {
        let port = free_port_pair();
        let child = Command::new(program)
            .args(args)
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, |f| f.try_clone().unwrap().into()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut server = Server { child, port };
        if answers_ping(port) {
            return server;
        }
        let _ = server.child.kill();
    }
    panic!("{program} never answered a ping");
}

/// Whether a CoAP ping (Empty CON) to `port` on 127.0.0.1 is answered with a Reset.
pub fn answers_ping(port: u16) -> bool {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    for mid in 0..100u16 {
        let [a, b] = mid.to_be_bytes();
        let _ = probe.send_to(&[0x40, 0x00, a, b], ("127.0.0.1", port)); // Empty CON
        if let Ok((n, _)) = probe.recv_from(&mut buf) {
            if n >= 4 && buf[0] >> 4 & 3 == 3 {
                return true; // Reset: the CoAP ping's answer
            }
        }
    }
    false
}
