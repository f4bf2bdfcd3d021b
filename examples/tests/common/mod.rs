//! What the end-to-end tests share: servers on free loopback ports, ready once they answer
//! a CoAP ping, killed by a guard.

#![allow(dead_code)] // each test crate uses its own part

use std::process::{Child, Command, Stdio};

// The conformance harness's own probes: one way to pick ports and to know a server is up.
pub use coap_engine_conformance::{answers_ping, free_port_pair};

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
        if answers_ping(&mut server.child, port) {
            return server;
        }
        let _ = server.child.kill();
    }
    panic!("{program} never answered a ping");
}
