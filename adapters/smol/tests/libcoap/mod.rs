//! libcoap's command-line peers as child processes, killed when their guard is dropped (a
//! failing test included).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running libcoap program; killed and reaped on drop.
pub struct Libcoap {
    child: Child,
    pub name: &'static str,
}

impl Libcoap {
    /// Starts `name` with `args`; panics naming the program if it cannot be started.
    pub fn spawn(name: &'static str, args: &[&str]) -> Libcoap {
        let child = Command::new(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test needs libcoap's {name} (Debian package libcoap3-bin): {e}")
            });
        Libcoap { child, name }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for it to exit by itself and returns its standard output; panics
    /// (the guard then kills it) if it does not.
    pub fn finish(mut self, limit: Duration) -> String {
        let start = Instant::now();
        while !self.exited() {
            assert!(
                start.elapsed() < limit,
                "{} still running after {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Libcoap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port of `range` on 127.0.0.1 that nothing is bound to right now.
pub fn free_udp_port(range: std::ops::Range<u16>, skip: usize) -> Option<u16> {
    range
        .filter(|&p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
        .nth(skip)
}
