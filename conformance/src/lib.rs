//! Harness for the conformance suite (`tests/conformance.rs`): peers from libcoap 4.3.1
//! (`coap-server-notls`, `coap-client-notls`, and for DTLS the `-openssl` and `-gnutls`
//! builds; Debian package `libcoap3-bin`) and our `coap-server`/`coap-client` (crate
//! `coap-engine-examples`, built once per run), started on free loopback ports, waited for,
//! their output captured, and always stopped by a guard (also when a case panics). A
//! [`Relay`] between client and server records every datagram, so each case checks the wire
//! as well as exit codes and payloads; for DTLS it reads the record layer
//! ([`dtls_records`]), and it can lose chosen datagrams ([`Relay::drop_when`]).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use coap_engine::coap_lite::{MessageClass, MessageType, Packet};

/// The Debian package that provides the libcoap peers.
pub const LIBCOAP_PACKAGE: &str = "libcoap3-bin";

/// The path of a libcoap binary on `PATH`; panics (the case fails, never skips) naming the
/// package that provides it.
pub fn libcoap(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: install the Debian package {LIBCOAP_PACKAGE} \
                 (apt-get install {LIBCOAP_PACKAGE}); .ci/test installs it when missing"
            )
        })
}

/// `name vX.Y.Z` as the libcoap binary reports it (from its usage text).
pub fn libcoap_version(name: &str) -> String {
    static CACHE: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = cache.iter().find(|(n, _)| n == name) {
        return v.clone();
    }
    let out = Command::new(libcoap(name))
        .arg("-h") // libcoap prints its usage (with the version) for a bad -h
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = text
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|v| format!("{name} {v}"))
        .unwrap_or_else(|| format!("{name} (version unknown)"));
    cache.push((name.to_string(), version.clone()));
    version
}

/// Our example binaries (`coap-server`, `coap-client`), built once per test run with the
/// cargo that runs the tests, in the same profile and target directory.
pub fn ours(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(build_examples)
        .as_ref()
        .unwrap_or_else(|e| {
            panic!("cannot build coap-engine-examples: {e}");
        });
    let path = dir.join(name);
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}

fn build_examples() -> Result<PathBuf, String> {
    // target/<profile>/deps/<this test binary>
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test binary outside a target directory")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or("no target directory")?
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The workspace's manifest by its plain path, and the binaries of the whole workspace:
    // through `conformance/../Cargo.toml` and as `-p coap-engine-examples` alone, this build
    // and a later `cargo test --workspace` in the same target directory each rebuilt the
    // engine crates and the examples after the other. (On a fresh target directory the first
    // build here still compiles the binaries' own feature set once: `cargo test` resolves
    // features with dev-dependencies, this build without them.)
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("conformance/ has no parent directory")?
        .join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bins"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => return Err("unnamed profile directory".into()),
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(profile_dir)
}

/// A loopback port free for UDP and for TCP at the time of the call: servers listen on both
/// (`coap://` and `coap+tcp://`), and TCP clients take their local ports from the same
/// ephemeral range the kernel hands UDP sockets, so a port free for UDP alone may be taken.
pub fn free_port() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        let port = socket.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback port that is free for UDP and TCP, and whose next port is free too, at the time
/// of the call.
pub fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// Output of a child process collected by reader threads (no pipe ever fills up).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn collect(mut from: impl Read + Send + 'static) -> (Captured, JoinHandle<()>) {
        let c = Captured::default();
        let sink = c.0.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(&buf[..n]);
            }
        });
        (c, thread)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Puts `earlier` in front of what is captured (a restarted server's earlier output).
    fn prepend(&self, earlier: &str) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = earlier.as_bytes().to_vec();
        all.append(&mut v);
        *v = all;
    }
}

/// How a server is known to be ready.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ready {
    /// It answers a CoAP ping (Empty CON → RST) from a probe socket.
    Ping,
    /// Its UDP port is bound (seen in /proc/net/udp); nothing is sent to it, so a `-l list`
    /// counts the case's own datagrams from 1.
    Bound,
}

/// A server process on 127.0.0.1; killed and reaped on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub program: String,
    path: PathBuf,
    args: Vec<String>,
    ready: Ready,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts `program args -A 127.0.0.1 -p PORT` on a free port and waits until it is ready
    /// (retrying on another port if the one picked was taken meanwhile).
    pub fn start(program: &Path, args: &[&str], ready: Ready) -> Server {
        Server::start_on(program, args, ready, free_port)
    }

    /// [`Server::start`] for a server given DTLS credentials: libcoap's servers and ours then
    /// listen for `coaps://` on PORT + 1 too, so both ports must be free, and the server is
    /// ready once PORT + 1 is bound as well.
    pub fn start_dtls(program: &Path, args: &[&str]) -> Server {
        Server::start_on(program, args, Ready::Ping, free_port_pair)
    }

    fn start_on(program: &Path, args: &[&str], ready: Ready, pick: fn() -> u16) -> Server {
        let name = program.display().to_string();
        let mut last = String::new();
        for _ in 0..5 {
            let port = pick();
            if ready == Ready::Bound && port_bound(port) {
                continue; // taken again meanwhile: Bound could not tell who holds it
            }
            let mut server = Server::spawn(program, args, ready, port);
            if server.wait_ready() {
                return server;
            }
            last = server.output();
            // dropped: killed; try another port
        }
        panic!("{name} never became ready on a free port; its output:\n{last}");
    }

    fn spawn(program: &Path, args: &[&str], ready: Ready, port: u16) -> Server {
        let name = program.display().to_string();
        let mut child = Command::new(program)
            .args(args)
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (stdout, r1) = Captured::collect(child.stdout.take().unwrap());
        let (stderr, r2) = Captured::collect(child.stderr.take().unwrap());
        Server {
            child,
            port,
            program: name,
            path: program.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ready,
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    fn wait_ready(&mut self) -> bool {
        let port = self.port;
        let ok = match self.ready {
            Ready::Ping => answers_ping(&mut self.child, port),
            Ready::Bound => bound(&mut self.child, port),
        };
        // A DTLS server binds PORT + 1 next to PORT; for any other server PORT + 1 is
        // nobody's business, so only look when credentials were given. Every server listens
        // for `coap+tcp://` on PORT, and for `coaps+tcp://` on PORT + 1 with a certificate
        // (libcoap's with a PSK too): a server that lost one of those ports to another socket
        // logs it and goes on without it, so readiness includes them.
        ok && (!self.has_dtls() || bound(&mut self.child, port + 1))
            && listens(&mut self.child, port)
            && (!self.has_tls() || listens(&mut self.child, port + 1))
    }

    fn has_dtls(&self) -> bool {
        self.args.iter().any(|a| a == "-k" || a == "-c")
    }

    fn has_tls(&self) -> bool {
        let libcoap = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("coap-server-"));
        self.args
            .iter()
            .any(|a| a == "-c" || (libcoap && a == "-k"))
    }

    /// Kills the server (SIGKILL: it says nothing to its peers, and forgets every session)
    /// and starts it again with the same arguments on the same port(s), ready as before.
    /// Returns when it was killed.
    pub fn restart(&mut self) -> Instant {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let killed = Instant::now();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        // The port was just freed: nobody else is expected to grab it in these few
        // milliseconds, but a bind race shows up as not ready, so try a few times.
        for _ in 0..5 {
            let mut fresh = Server::spawn(&self.path, &args, self.ready, self.port);
            if fresh.wait_ready() {
                std::mem::swap(self, &mut fresh);
                // The old process is reaped: its readers end with its pipes, after which
                // its output is complete and goes in front of the new one's.
                for r in fresh.readers.drain(..) {
                    let _ = r.join();
                }
                self.stdout.prepend(&fresh.stdout.text());
                self.stderr.prepend(&fresh.stderr.text());
                return killed;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} did not start again on port {}; its output:\n{}",
            self.program,
            self.port,
            self.output()
        );
    }

    /// The DTLS (`coaps://`) port: PORT + 1, as on libcoap's servers.
    pub fn dtls_port(&self) -> u16 {
        self.port + 1
    }

    pub fn dtls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dtls_port()))
    }

    pub fn coaps_uri(&self, path: &str) -> String {
        format!("coaps://127.0.0.1:{}/{path}", self.dtls_port())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn uri(&self, path: &str) -> String {
        format!("coap://127.0.0.1:{}/{path}", self.port)
    }

    /// Everything the server wrote so far (stdout, then stderr).
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

fn exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Whether the server `child` answers a CoAP ping (an Empty CON) to `port` on 127.0.0.1
/// with a Reset, within about 5 s (up to 100 pings, 50 ms apart); false at once if `child`
/// exits meanwhile (a server that lost the race for its port).
pub fn answers_ping(child: &mut Child, port: u16) -> bool {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    for mid in 0..100u16 {
        if exited(child) {
            return false;
        }
        let [a, b] = mid.to_be_bytes();
        let _ = probe.send_to(&[0x40, 0x00, a, b], ("127.0.0.1", port)); // Empty CON
        if let Ok((n, _)) = probe.recv_from(&mut buf) {
            if n >= 4 && buf[0] >> 4 & 3 == 3 {
                return true; // Reset: the answer to a CoAP ping
            }
        }
    }
    false
}

/// Whether a UDP socket is bound to `port` (IPv4 or IPv6), per /proc/net/udp{,6}.
fn port_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&suffix))
            })
        })
    })
}

/// Whether a TCP socket listens on `port` (any address), per /proc/net/tcp{,6}.
fn tcp_listening(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut w = l.split_whitespace();
                let local = w.nth(1).unwrap_or_default();
                let state = w.nth(1).unwrap_or_default();
                local.ends_with(&suffix) && state == "0A"
            })
        })
    })
}

/// Whether `child` comes to listen on TCP `port` while it runs (within 5 s).
fn listens(child: &mut Child, port: u16) -> bool {
    for _ in 0..250 {
        if exited(child) {
            return false;
        }
        if tcp_listening(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn bound(child: &mut Child, port: u16) -> bool {
    for _ in 0..250 {
        if exited(child) {
            return false;
        }
        if port_bound(port) {
            // A server that lost the race for the port exits at once: make sure it is ours.
            std::thread::sleep(Duration::from_millis(50));
            return !exited(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A finished client run.
pub struct Run {
    pub program: String,
    pub args: Vec<String>,
    /// `None` when the harness killed it at its time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Everything the run printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {:?}\nstatus: {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.program, self.args, self.status, self.elapsed, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "{}", self.describe());
        self
    }

    /// The single line a failing client printed on stderr, trimmed; panics with `ctx` unless
    /// there is exactly one and it holds every one of `words`.
    #[track_caller]
    pub fn one_stderr_line(&self, words: &[&str], ctx: &str) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one line on stderr expected\n{ctx}");
        for w in words {
            assert!(lines[0].contains(w), "{w:?} not in the failure line\n{ctx}");
        }
        lines[0].trim().to_string()
    }
}

/// A scratch directory for one case's files, removed (with its files) on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory under the system's temporary directory, named after `group`, this
    /// process and a counter, so cases and concurrent runs never share one.
    pub fn new(group: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coap-conformance-{group}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    /// The path of `name` in the directory, as a command-line argument.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills a child on drop unless it was reaped.
struct Reap(Option<Child>);
impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a client to completion, killing it after `limit`.
pub fn run(program: &Path, args: &[&str], limit: Duration) -> Run {
    run_command(Command::new(program), program, args, limit)
}

/// [`run`] with a prepared command (e.g. `ip netns exec NS program`).
pub fn run_command(cmd: Command, program: &Path, args: &[&str], limit: Duration) -> Run {
    Background::spawn_command(cmd, program, args).finish(limit)
}

/// A client started without waiting for it (e.g. an observer that another client's requests
/// will affect, or one to kill mid-observation); killed on drop unless finished.
pub struct Background {
    guard: Reap,
    program: String,
    args: Vec<String>,
    start: Instant,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts `program args`, its output captured.
    pub fn spawn(program: &Path, args: &[&str]) -> Background {
        Background::spawn_command(Command::new(program), program, args)
    }

    /// [`Background::spawn`] with a prepared command.
    pub fn spawn_command(mut cmd: Command, program: &Path, args: &[&str]) -> Background {
        let start = Instant::now();
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let (stdout, r1) = Captured::collect(child.stdout.take().unwrap());
        let (stderr, r2) = Captured::collect(child.stderr.take().unwrap());
        Background {
            guard: Reap(Some(child)),
            program: program.display().to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            start,
            stdout,
            stderr,
            readers: vec![r1, r2],
        }
    }

    /// What it printed so far (stdout, then stderr).
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout.text(), self.stderr.text())
    }

    /// Kills it at once (SIGKILL): it vanishes without a word on the wire.
    pub fn kill(&mut self) {
        if let Some(c) = &mut self.guard.0 {
            let _ = c.kill();
        }
    }

    /// Waits for it to exit, killing it once `limit` has passed since its start.
    pub fn finish(mut self, limit: Duration) -> Run {
        let status = loop {
            let Some(child) = self.guard.0.as_mut() else {
                break None;
            };
            if let Some(s) = child.try_wait().expect("wait for a client") {
                self.guard.0 = None;
                break Some(s);
            }
            if self.start.elapsed() > limit {
                self.guard = Reap(None); // the old guard kills it
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.start.elapsed();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Run {
            program: std::mem::take(&mut self.program),
            args: std::mem::take(&mut self.args),
            status: status.filter(|s| s.code().is_some() || !killed_by_us(s)),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            elapsed,
        }
    }
}

/// A status from our own SIGKILL (`Background::kill`).
fn killed_by_us(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

/// One datagram seen by a [`Relay`].
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Client → server (else server → client).
    pub to_server: bool,
    pub bytes: Vec<u8>,
    pub at: Instant,
    /// Dropped by the relay instead of forwarded (see [`Relay::drop_to_client_until_next_request`]
    /// and [`Relay::drop_when`]).
    pub dropped: bool,
}

impl Datagram {
    pub fn packet(&self) -> Packet {
        Packet::from_bytes(&self.bytes)
            .unwrap_or_else(|e| panic!("unparsable datagram {:02x?}: {e:?}", self.bytes))
    }

    pub fn is_empty_message(&self) -> bool {
        self.bytes.len() == 4 && self.bytes[1] == 0
    }
}

/// A UDP relay on 127.0.0.1 in front of a server: the client talks to the relay's port, every
/// datagram both ways is forwarded and recorded. Stops on drop.
pub struct Relay {
    pub port: u16,
    log: Arc<Mutex<Vec<Datagram>>>,
    synced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Server → client datagrams are dropped (recorded as such) while set.
    drop_down: Arc<AtomicBool>,
    /// The next request from the client clears `drop_down` before it is forwarded.
    until_request: Arc<AtomicBool>,
    /// Which datagrams to drop besides `drop_down` (see [`Relay::drop_when`]).
    rule: Arc<Mutex<Option<DropRule>>>,
    /// The address the client talks to.
    front_ip: std::net::Ipv4Addr,
    threads: Vec<JoinHandle<()>>,
}

/// Decides, for each datagram (client → server when the flag is set, and its bytes), whether
/// the relay drops it.
pub type DropRule = Box<dyn FnMut(bool, &[u8]) -> bool + Send>;

fn apply(rule: &Mutex<Option<DropRule>>, to_server: bool, bytes: &[u8]) -> bool {
    rule.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .is_some_and(|r| r(to_server, bytes))
}

impl Relay {
    pub fn new(server: SocketAddr) -> Relay {
        Relay::on(std::net::Ipv4Addr::LOCALHOST, server)
    }

    /// A relay whose client side listens on `front_ip` (another loopback address such as
    /// 127.0.0.2 reaches a server under a name its certificate does not carry).
    pub fn on(front_ip: std::net::Ipv4Addr, server: SocketAddr) -> Relay {
        let front = UdpSocket::bind((front_ip, 0)).expect("relay front socket");
        let back = UdpSocket::bind("127.0.0.1:0").expect("relay back socket");
        back.connect(server).expect("relay connect");
        let tick = Some(Duration::from_millis(10));
        front.set_read_timeout(tick).unwrap();
        back.set_read_timeout(tick).unwrap();
        let port = front.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (front_tx, back_rx) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let synced = Arc::new(AtomicU64::new(0));
        let drop_down = Arc::new(AtomicBool::new(false));
        let until_request = Arc::new(AtomicBool::new(false));
        let rule: Arc<Mutex<Option<DropRule>>> = Arc::new(Mutex::new(None));
        let up = {
            let (log, stop, client) = (log.clone(), stop.clone(), client.clone());
            let synced = synced.clone();
            let (drop_down, until_request) = (drop_down.clone(), until_request.clone());
            let rule = rule.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        if let Some(seq) = buf[..n].strip_prefix(SYNC_MAGIC) {
                            if let Ok(seq) = <[u8; 8]>::try_from(seq) {
                                synced.fetch_max(u64::from_be_bytes(seq), Ordering::SeqCst);
                            }
                            continue;
                        }
                        *client.lock().unwrap() = Some(from);
                        // A request: code class 0, not Empty.
                        let request = n >= 4 && buf[1] != 0 && buf[1] >> 5 == 0;
                        if request && until_request.swap(false, Ordering::SeqCst) {
                            drop_down.store(false, Ordering::SeqCst);
                        }
                        let dropped = apply(&rule, true, &buf[..n]);
                        record(&log, true, &buf[..n], dropped);
                        if !dropped {
                            let _ = back.send(&buf[..n]);
                        }
                    }
                }
            })
        };
        let down = {
            let (log, stop, drop_down) = (log.clone(), stop.clone(), drop_down.clone());
            let rule = rule.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = back_rx.recv(&mut buf) {
                        let dropped =
                            drop_down.load(Ordering::SeqCst) || apply(&rule, false, &buf[..n]);
                        record(&log, false, &buf[..n], dropped);
                        if dropped {
                            continue;
                        }
                        if let Some(to) = *client.lock().unwrap() {
                            let _ = front_tx.send_to(&buf[..n], to);
                        }
                    }
                }
            })
        };
        Relay {
            port,
            log,
            synced,
            stop,
            drop_down,
            until_request,
            rule,
            front_ip,
            threads: vec![up, down],
        }
    }

    /// From now on, drops every datagram `rule` picks (it sees each one, in either
    /// direction, in arrival order): a lossy link that loses exactly what a case names, DTLS
    /// records included. Dropped datagrams are recorded with `dropped` set.
    pub fn drop_when(&self, rule: impl FnMut(bool, &[u8]) -> bool + Send + 'static) {
        *self.rule.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(rule));
    }

    /// From now on, drops every server → client datagram (the server goes silent for the
    /// client) until the client's next request, which passes and ends the drop (so the
    /// answer to, e.g., a re-registration reaches the client). Dropped datagrams are
    /// recorded with `dropped` set.
    pub fn drop_to_client_until_next_request(&self) {
        self.until_request.store(true, Ordering::SeqCst);
        self.drop_down.store(true, Ordering::SeqCst);
    }

    /// Whether server → client datagrams are being dropped.
    pub fn dropping(&self) -> bool {
        self.drop_down.load(Ordering::SeqCst)
    }

    pub fn uri(&self, path: &str) -> String {
        format!("coap://{}:{}/{path}", self.front_ip, self.port)
    }

    /// The relay's `coaps://` URI (put the relay in front of the server's DTLS port).
    pub fn coaps_uri(&self, path: &str) -> String {
        format!("coaps://{}:{}/{path}", self.front_ip, self.port)
    }

    /// The datagrams seen so far, in order: everything a client sent before this call is
    /// included (see [`Relay::sync`]).
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.sync();
        self.log.lock().unwrap().clone()
    }

    /// Waits until the relay has handled every datagram that reached its client-side socket
    /// before this call, so a client that sent its last ACK and exited at once is fully
    /// recorded: a marker (not CoAP: version 3) is queued behind them and waited for.
    /// Server → client datagrams need no such wait: the relay records them before forwarding,
    /// so whatever a client received is already recorded.
    pub fn sync(&self) {
        let want = self.synced.load(Ordering::SeqCst) + 1;
        let probe = UdpSocket::bind("127.0.0.1:0").expect("relay sync socket");
        let mut marker = SYNC_MAGIC.to_vec();
        marker.extend_from_slice(&want.to_be_bytes());
        probe
            .send_to(&marker, (self.front_ip, self.port))
            .expect("relay sync send");
        let give_up = Instant::now() + Duration::from_secs(10);
        while self.synced.load(Ordering::SeqCst) < want {
            assert!(Instant::now() < give_up, "relay did not sync within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Forgets what was recorded so far.
    pub fn clear(&self) {
        self.sync();
        self.log.lock().unwrap().clear();
    }

    /// One line per datagram, for failure messages.
    pub fn trace(&self) -> String {
        let start = self.datagrams().first().map(|d| d.at);
        self.datagrams()
            .iter()
            .map(|d| {
                let t = start.map_or(0.0, |s| d.at.duration_since(s).as_secs_f64());
                let dir = if d.to_server { "C->S" } else { "S->C" };
                let dropped = if d.dropped {
                    " (dropped by the relay)"
                } else {
                    ""
                };
                format!("{t:7.3}s {dir} {}{dropped}\n", describe(&d.bytes))
            })
            .collect()
    }
}

impl Relay {
    /// [`Relay::trace`] for DTLS: one line per datagram with its records (content type,
    /// epoch, sequence number; the message type of plaintext handshake records).
    pub fn dtls_trace(&self) -> String {
        let dgs = self.datagrams();
        let start = dgs.first().map(|d| d.at);
        dgs.iter()
            .map(|d| {
                let t = start.map_or(0.0, |s| d.at.duration_since(s).as_secs_f64());
                let dir = if d.to_server { "C->S" } else { "S->C" };
                let records: Vec<String> = dtls_records(&d.bytes)
                    .iter()
                    .map(DtlsRecord::name)
                    .collect();
                let dropped = if d.dropped {
                    " (dropped by the relay)"
                } else {
                    ""
                };
                format!(
                    "{t:7.3}s {dir} {} bytes: {}{dropped}\n",
                    d.bytes.len(),
                    records.join(", ")
                )
            })
            .collect()
    }
}

/// DTLS record content types (RFC 6347 §4.1, RFC 5246 §6.2.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// Handshake message types (RFC 5246 §7.4, RFC 6347 §4.2.2).
pub const CLIENT_HELLO: u8 = 1;
pub const SERVER_HELLO: u8 = 2;
pub const HELLO_VERIFY_REQUEST: u8 = 3;
pub const CERTIFICATE: u8 = 11;
pub const CERTIFICATE_REQUEST: u8 = 13;

/// One DTLS record of a datagram, as far as a relay without the keys can read it.
#[derive(Clone, Debug)]
pub struct DtlsRecord {
    pub content_type: u8,
    pub epoch: u16,
    pub sequence: u64,
    pub fragment: Vec<u8>,
}

impl DtlsRecord {
    /// The handshake message type of a plaintext (epoch 0) handshake record; the records of
    /// epoch 1 and later are encrypted.
    pub fn handshake_type(&self) -> Option<u8> {
        (self.content_type == HANDSHAKE && self.epoch == 0)
            .then(|| self.fragment.first().copied())
            .flatten()
    }

    /// The cipher suite a plaintext ServerHello picks.
    pub fn server_hello_suite(&self) -> Option<u16> {
        if self.handshake_type() != Some(SERVER_HELLO) {
            return None;
        }
        // Handshake header (12 bytes), then version (2), random (32), session id.
        let body = self.fragment.get(12..)?;
        let sid = usize::from(*body.get(34)?);
        let at = 35 + sid;
        Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
    }

    /// (level, description) of a plaintext (epoch 0) alert.
    pub fn plain_alert(&self) -> Option<(u8, u8)> {
        (self.content_type == ALERT && self.epoch == 0 && self.fragment.len() == 2)
            .then(|| (self.fragment[0], self.fragment[1]))
    }

    /// `handshake(ClientHello) e0#1`, `application_data e1#3 (37 bytes)`, ...
    pub fn name(&self) -> String {
        let kind = match self.content_type {
            CHANGE_CIPHER_SPEC => "change_cipher_spec".to_string(),
            ALERT => match self.plain_alert() {
                Some((level, desc)) => format!("alert({level},{desc})"),
                None => "alert(encrypted)".to_string(),
            },
            HANDSHAKE => match self.handshake_type() {
                Some(t) => format!("handshake({})", handshake_name(t)),
                None => "handshake(encrypted: Finished)".to_string(),
            },
            APPLICATION_DATA => format!("application_data ({} bytes)", self.fragment.len()),
            other => format!("type {other}"),
        };
        format!("{kind} e{}#{}", self.epoch, self.sequence)
    }
}

fn handshake_name(t: u8) -> String {
    match t {
        0 => "HelloRequest".into(),
        1 => "ClientHello".into(),
        2 => "ServerHello".into(),
        3 => "HelloVerifyRequest".into(),
        11 => "Certificate".into(),
        12 => "ServerKeyExchange".into(),
        13 => "CertificateRequest".into(),
        14 => "ServerHelloDone".into(),
        15 => "CertificateVerify".into(),
        16 => "ClientKeyExchange".into(),
        20 => "Finished".into(),
        other => format!("type {other}"),
    }
}

/// The DTLS records of a datagram, in order (RFC 6347 §4.1: a 13-byte header, then the
/// fragment); a truncated record ends the list.
pub fn dtls_records(bytes: &[u8]) -> Vec<DtlsRecord> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 13 {
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(fragment) = rest.get(13..13 + len) else {
            break;
        };
        out.push(DtlsRecord {
            content_type: rest[0],
            epoch: u16::from_be_bytes([rest[3], rest[4]]),
            sequence: rest[5..11]
                .iter()
                .fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            fragment: fragment.to_vec(),
        });
        rest = &rest[13 + len..];
    }
    out
}

impl Datagram {
    /// The datagram's DTLS records.
    pub fn records(&self) -> Vec<DtlsRecord> {
        dtls_records(&self.bytes)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the relay's sync marker: version bits 3, never a CoAP message.
const SYNC_MAGIC: &[u8] = b"\xffrelay-sync:";

fn record(log: &Mutex<Vec<Datagram>>, to_server: bool, bytes: &[u8], dropped: bool) {
    log.lock().unwrap().push(Datagram {
        to_server,
        bytes: bytes.to_vec(),
        at: Instant::now(),
        dropped,
    });
}

/// `CON GET mid=0x1234 token=[..] opts payload` for a datagram (or its bytes if unparsable).
pub fn describe(bytes: &[u8]) -> String {
    match Packet::from_bytes(bytes) {
        Ok(p) => {
            let t = match p.header.get_type() {
                MessageType::Confirmable => "CON",
                MessageType::NonConfirmable => "NON",
                MessageType::Acknowledgement => "ACK",
                MessageType::Reset => "RST",
            };
            let opts: Vec<String> = p
                .options()
                .flat_map(|(n, vs)| {
                    vs.iter().map(move |v| {
                        // uint options (Observe, Uri-Port, Content-Format, Max-Age, Accept,
                        // Size1/2) as numbers.
                        if matches!(*n, 6 | 7 | 12 | 14 | 17 | 28 | 60) {
                            let x = v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
                            format!("{n}:{x}")
                        } else {
                            format!("{n}:{}", String::from_utf8_lossy(v))
                        }
                    })
                })
                .collect();
            format!(
                "{t} {} mid={:#06x} token={:02x?} [{}] {:?}",
                p.header.code,
                p.header.message_id,
                p.get_token(),
                opts.join(", "),
                String::from_utf8_lossy(&p.payload)
            )
        }
        Err(e) => format!("{bytes:02x?} ({e:?})"),
    }
}
