//! TLS_02–04 (RFC 8323 `coaps+tcp://`, certificates) against libcoap's OpenSSL build, in both
//! directions: our `coap-client` → `coap-server-openssl`, and `coap-client-openssl` → our
//! `coap-server`. LIVE_05 (the liveness contract over TCP and TLS) is in `live/tcp.rs`.
//!
//! Each connection goes through a [`TcpRelay`], which records the bytes both ways (and can
//! end every connection it carries with a TCP RST, for LIVE_05). Over TLS the relay reads the
//! plaintext hellos: that a handshake took place, the version and cipher suite the server
//! chose. What follows (in TLS 1.3 the certificates and alerts too) is encrypted, so a refusal
//! is checked by what each side says: our client's one line and exit status, libcoap's log
//! lines (it logs the alerts it receives), our server's `-v 4` warning.
//!
//! libcoap's clients exit 0 after a failed handshake (see `dtls/mod.rs`), so in that direction
//! a refusal is checked by the answer never being printed; the exit status goes to the note.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_engine_conformance::{libcoap, ours, run, Run, Server};

use crate::dtls::{exit, libcoap_complaint, pki};
use crate::{Case, Dir, Tls, CLIENT_LIMIT};

/// How `/` begins on our server: libcoap's client printed our answer.
const OUR_TEXT: &str = "coap-engine";
/// How `/` begins on libcoap's server.
const LIBCOAP_TEXT: &str = "libcoap";

/// 127.0.0.2 reaches a loopback server whose certificate names localhost, 127.0.0.1 and ::1
/// only: the wrong name (as in DTLS_09).
const OTHER_NAME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A refusal is told at once: far below any timeout (`-B 5`), with room for a loaded machine.
const PROMPT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// A recording TCP relay

/// Bytes read from one side of a relayed connection, as they came.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Which connection (0 for the first one accepted).
    pub conn: usize,
    /// Client → server (else server → client).
    pub to_server: bool,
    pub at: Instant,
    pub bytes: Vec<u8>,
}

struct RelayState {
    stop: AtomicBool,
    /// Bumped by [`TcpRelay::reset`]: connections accepted before it are reset.
    generation: AtomicUsize,
    accepted: AtomicUsize,
    /// Workers still running (each owns its connection's two sockets).
    running: AtomicUsize,
    chunks: Mutex<Vec<Chunk>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// A TCP relay in front of a server: the client connects to the relay's address, each
/// connection is forwarded to the server over a connection of its own, and the bytes both ways
/// are recorded. [`TcpRelay::reset`] ends every connection with a TCP RST both ways (SO_LINGER
/// 0 and close). An end of stream is passed on as one (shutdown for writing); a read error
/// (a reset) resets the other side too. Stops on drop.
pub struct TcpRelay {
    addr: SocketAddr,
    state: Arc<RelayState>,
    accept: Option<JoinHandle<()>>,
}

impl TcpRelay {
    pub fn new(server: SocketAddr) -> TcpRelay {
        TcpRelay::on(Ipv4Addr::LOCALHOST, server)
    }

    /// A relay listening on `front_ip` (a loopback address) instead of 127.0.0.1.
    pub fn on(front_ip: Ipv4Addr, server: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind((front_ip, 0))
            .unwrap_or_else(|e| panic!("bind a TCP relay on {front_ip}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("relay address");
        let state = Arc::new(RelayState {
            stop: AtomicBool::new(false),
            generation: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            chunks: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let conn = s.accepted.fetch_add(1, Ordering::SeqCst);
                        let Ok(upstream) =
                            TcpStream::connect_timeout(&server, Duration::from_secs(5))
                        else {
                            linger_zero(&client); // refused upstream: refuse the client too
                            continue;
                        };
                        s.running.fetch_add(1, Ordering::SeqCst);
                        let st = s.clone();
                        let worker = std::thread::spawn(move || {
                            pump(&st, conn, client, upstream);
                            st.running.fetch_sub(1, Ordering::SeqCst);
                        });
                        s.workers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(worker);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpRelay {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// `scheme://ip:port/path` for the relay's address.
    pub fn uri(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}/{path}", self.addr)
    }

    /// Everything read so far, in order.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.state
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bytes of one direction of connection `conn`, concatenated.
    pub fn bytes(&self, conn: usize, to_server: bool) -> Vec<u8> {
        self.chunks()
            .into_iter()
            .filter(|c| c.conn == conn && c.to_server == to_server)
            .flat_map(|c| c.bytes)
            .collect()
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Resets every connection open now, both ways (RST to the client and to the server), and
    /// returns once they are closed, with the moment the reset was asked for.
    pub fn reset(&self) -> Instant {
        let at = Instant::now();
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        let deadline = at + Duration::from_secs(5);
        while self.state.running.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the relay's connections did not close"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        at
    }

    /// A readable account of what crossed the relay, for failure messages.
    pub fn trace(&self) -> String {
        let chunks = self.chunks();
        let Some(t0) = chunks.first().map(|c| c.at) else {
            return "(nothing crossed the relay)".into();
        };
        chunks
            .iter()
            .map(|c| {
                format!(
                    "{:>8.3} s conn {} {} {} bytes {}\n",
                    (c.at - t0).as_secs_f64(),
                    c.conn,
                    if c.to_server { "→" } else { "←" },
                    c.bytes.len(),
                    hex_prefix(&c.bytes)
                )
            })
            .collect()
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let workers: Vec<JoinHandle<()>> = self
            .state
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

fn hex_prefix(b: &[u8]) -> String {
    let shown: Vec<String> = b.iter().take(24).map(|x| format!("{x:02x}")).collect();
    format!(
        "{}{}",
        shown.join(" "),
        if b.len() > 24 { " …" } else { "" }
    )
}

/// SO_LINGER with a zero timeout: closing the socket then sends a RST instead of a FIN.
fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor owned by `s`, and a `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

/// Forwards one connection both ways until both ends closed, a side reset, the relay was
/// reset or stopped. Owns both sockets, so that dropping them closes them.
fn pump(state: &RelayState, conn: usize, client: TcpStream, server: TcpStream) {
    use std::io::{Read, Write};
    let generation = state.generation.load(Ordering::SeqCst);
    let socks = [client, server];
    for s in &socks {
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    }
    // Whether each side (client, server) has ended its stream.
    let mut ended = [false, false];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        if state.generation.load(Ordering::SeqCst) != generation {
            for s in &socks {
                linger_zero(s);
            }
            return; // dropped: RST both ways
        }
        let mut fds: Vec<libc::pollfd> = socks
            .iter()
            .zip(ended)
            .map(|(s, e)| libc::pollfd {
                fd: if e { -1 } else { s.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
        if n <= 0 {
            continue;
        }
        for from in 0..2 {
            if fds[from].revents == 0 {
                continue;
            }
            let to = 1 - from;
            match (&socks[from]).read(&mut buf) {
                Ok(0) => {
                    ended[from] = true;
                    let _ = socks[to].shutdown(std::net::Shutdown::Write);
                }
                Ok(n) => {
                    state
                        .chunks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Chunk {
                            conn,
                            to_server: from == 0,
                            at: Instant::now(),
                            bytes: buf[..n].to_vec(),
                        });
                    if (&socks[to]).write_all(&buf[..n]).is_err() {
                        for s in &socks {
                            linger_zero(s);
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // A reset (or another error) on one side: reset the other too.
                    for s in &socks {
                        linger_zero(s);
                    }
                    return;
                }
            }
        }
        if ended == [true, true] {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the relay can read: TLS hellos, RFC 8323 frames

/// The server's plaintext ServerHello: (version, cipher suite) by name.
pub fn server_hello(server_bytes: &[u8]) -> Option<(String, String)> {
    // Record: type 22 (handshake), version, length; handshake: type 2 (server_hello), length.
    let rec = server_bytes;
    if rec.len() < 5 || rec[0] != 22 {
        return None;
    }
    let len = u16::from_be_bytes([rec[3], rec[4]]) as usize;
    let hs = rec.get(5..5 + len)?;
    if hs.first() != Some(&2) {
        return None;
    }
    let body = hs.get(4..)?;
    let legacy = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let sid_len = *body.get(34)? as usize;
    let mut at = 35 + sid_len;
    let suite = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    at += 3; // suite, compression
    let mut version = legacy;
    if let Some(ext_len) = body
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    {
        let mut e = at + 2;
        let end = (e + ext_len).min(body.len());
        while e + 4 <= end {
            let ty = u16::from_be_bytes([body[e], body[e + 1]]);
            let l = u16::from_be_bytes([body[e + 2], body[e + 3]]) as usize;
            if ty == 0x002b && l == 2 && e + 6 <= end {
                version = u16::from_be_bytes([body[e + 4], body[e + 5]]);
            }
            e += 4 + l;
        }
    }
    Some((version_name(version), suite_name(suite)))
}

/// A TLS version by name (`TLS 1.3`), else its number.
pub fn version_name(version: u16) -> String {
    match version {
        0x0304 => "TLS 1.3".to_string(),
        0x0303 => "TLS 1.2".to_string(),
        v => format!("version {v:#06x}"),
    }
}

/// A TLS cipher suite by its IANA name, else its number.
pub fn suite_name(suite: u16) -> String {
    match suite {
        0x1301 => "TLS_AES_128_GCM_SHA256".to_string(),
        0x1302 => "TLS_AES_256_GCM_SHA384".to_string(),
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256".to_string(),
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string(),
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string(),
        0xCCA9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_string(),
        s => format!("suite {s:#06x}"),
    }
}

/// Whether the client's first bytes are a TLS ClientHello.
pub fn client_hello(client_bytes: &[u8]) -> bool {
    client_bytes.len() > 5 && client_bytes[0] == 22 && client_bytes[5] == 1
}

/// RFC 8323 signaling codes.
pub const PING: u8 = 0xE2;
pub const PONG: u8 = 0xE3;

/// The CoAP-over-TCP messages (RFC 8323 §3.2 framing) of one direction of a connection: each
/// message's code and token length, stamped with the arrival of the chunk that completed it.
pub fn frames(relay: &TcpRelay, conn: usize, to_server: bool) -> Vec<(Instant, u8, usize)> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for c in relay
        .chunks()
        .into_iter()
        .filter(|c| c.conn == conn && c.to_server == to_server)
    {
        buf.extend_from_slice(&c.bytes);
        while let Some(total) = frame_len(&buf) {
            if buf.len() < total {
                break;
            }
            let ext = match buf[0] >> 4 {
                13 => 1,
                14 => 2,
                15 => 4,
                _ => 0,
            };
            out.push((c.at, buf[1 + ext], usize::from(buf[0] & 0x0f)));
            buf.drain(..total);
        }
    }
    out
}

/// The length of the frame at the start of `b` (header, code, token, options and payload), once
/// its header is complete.
fn frame_len(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    let (len, tkl) = ((first >> 4) as usize, (first & 0x0f) as usize);
    let (ext, body) = match len {
        13 => (1, *b.get(1)? as usize + 13),
        14 => (
            2,
            u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize + 269,
        ),
        15 => (
            4,
            u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize + 65805,
        ),
        n => (0, n),
    };
    Some(1 + ext + 1 + tkl + body)
}

// ---------------------------------------------------------------------------------------------
// Peers and helpers

const OPENSSL: Tls = Tls::OpenSsl;

/// libcoap's OpenSSL server with certificates: TLS on PORT + 1 (ready when DTLS is bound there).
fn libcoap_server(args: &[&str]) -> Server {
    Server::start_dtls(&libcoap(OPENSSL.server()), args)
}

fn our_server(args: &[&str]) -> Server {
    Server::start_dtls(&ours("coap-server"), args)
}

/// The TLS address of a server started with a certificate: PORT + 1.
fn tls_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port + 1))
}

fn our_client(args: &[&str]) -> Run {
    run(&ours("coap-client"), args, CLIENT_LIMIT)
}

fn libcoap_client(args: &[&str]) -> Run {
    run(&libcoap(OPENSSL.client()), args, CLIENT_LIMIT)
}

fn ctx(relay: &TcpRelay, r: &Run, server: &Server) -> String {
    format!(
        "{}\n--- server\n{}\n--- relay\n{}",
        r.describe(),
        server.output(),
        relay.trace()
    )
}

/// The plaintext hellos of the relay's connection `conn`: a ClientHello went out and the
/// server answered with a ServerHello. Returns "TLS 1.x, SUITE".
#[track_caller]
fn handshake_seen(relay: &TcpRelay, conn: usize, c: &str) -> String {
    assert!(
        client_hello(&relay.bytes(conn, true)),
        "no ClientHello on the wire\n{c}"
    );
    let (v, s) = server_hello(&relay.bytes(conn, false))
        .unwrap_or_else(|| panic!("no ServerHello on the wire\n{c}"));
    format!("{v}, {s}")
}

/// Waits (up to 3 s: its output arrives through a pipe) until the server's output contains
/// `needle`.
fn server_says(server: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if server.output().contains(needle) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// libcoap's log lines (at WARN) of one connection's TLS, trimmed, for the notes.
fn libcoap_tls_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(" TLS : ") && l.contains(" WARN "))
        .map(|l| {
            l.split_once(" TLS : ")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
        .collect()
}

/// Our server's `-v 4` lines about refused TLS clients (`PEER: TLS: REASON`), each trimmed
/// to its reason.
fn tls_refusals(server: &Server) -> Vec<String> {
    server
        .output()
        .lines()
        .filter_map(|l| l.split_once(": TLS: ").map(|(_, m)| m.trim().to_string()))
        .collect()
}

/// The first of [`tls_refusals`], which must hold `want` (else `why` is the failure).
#[track_caller]
fn our_server_refusal(server: &Server, want: &str, why: &str, c: &str) -> String {
    assert!(
        server_says(server, ": TLS: "),
        "our server logged no failed TLS handshake\n{c}"
    );
    let logged = tls_refusals(server).into_iter().next().unwrap_or_default();
    assert!(logged.contains(want), "{why}\n{c}");
    logged
}

/// libcoap's client against one of our servers through `relay`: whether it printed our
/// answer, and a note (exit status, what it logged).
fn libcoap_verdict(relay: &TcpRelay, args: &[&str]) -> (Run, bool, String) {
    let uri = relay.uri("coaps+tcp", "");
    let mut a: Vec<&str> = args.to_vec();
    a.extend_from_slice(&["-B", "5", &uri]);
    let r = libcoap_client(&a);
    let accepted = r.stdout.contains(OUR_TEXT);
    let note = format!(
        "{} (exit status {}, logged {})",
        if accepted {
            "printed our answer"
        } else {
            "no answer printed"
        },
        exit(&r),
        libcoap_complaint(&r, " TLS : ")
    );
    (r, accepted, note)
}

/// [`libcoap_verdict`] for a run that must end: whether it printed our answer, the note, and
/// the context for failure messages.
#[track_caller]
fn libcoap_ended(relay: &TcpRelay, server: &Server, args: &[&str]) -> (bool, String, String) {
    let (r, accepted, note) = libcoap_verdict(relay, args);
    let c = ctx(relay, &r, server);
    assert!(r.status.is_some(), "coap-client-openssl did not end\n{c}");
    (accepted, note, c)
}

/// Our client's refusal of a handshake: exit status 3 well before its `-B 5`, and a single
/// stderr line holding every one of `words`. Returns the context and that line.
#[track_caller]
fn refused(r: &Run, relay: &TcpRelay, server: &Server, words: &[&str]) -> (String, String) {
    let c = ctx(relay, r, server);
    assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
    let line = r.one_stderr_line(words, &c);
    assert!(r.elapsed < PROMPT, "a refusal, not a timeout\n{c}");
    (c, line)
}

/// One of our servers with the certificate `name`.pem (key `name`.key) and `extra`
/// arguments, at log level 4 (it logs why a handshake failed).
fn our_cert_server(name: &str, extra: &[&str]) -> Server {
    let (cert, key) = (pki(&format!("{name}.pem")), pki(&format!("{name}.key")));
    let mut args = vec!["-c", &cert, "-j", &key];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-v", "4"]);
    our_server(&args)
}

// ---------------------------------------------------------------------------------------------
// TLS_02: a server certificate from an unknown CA

fn unknown_ca_ours() -> String {
    let server = libcoap_server(&[
        "-c",
        &pki("other-server.pem"),
        "-j",
        &pki("other-server.key"),
    ]);
    let relay = TcpRelay::new(tls_addr(&server));
    let r = our_client(&["-C", &pki("ca.pem"), "-B", "5", &relay.uri("coaps+tcp", "")]);
    let (c, line) = refused(&r, &relay, &server, &["TLS", "unknown CA"]);
    let hello = handshake_seen(&relay, 0, &c);
    // Our alert is encrypted in TLS 1.3; libcoap logs what it received.
    assert!(
        server_says(&server, "alert read:fatal:unknown CA"),
        "coap-server-openssl did not log our unknown_ca alert\n{c}"
    );
    format!(
        "exit 3 after {:.2} s, `{line}`; {hello}; coap-server-openssl logged `SSL3 alert read:fatal:unknown CA`",
        r.elapsed.as_secs_f64()
    )
}

fn unknown_ca_libcoap() -> String {
    let server = our_cert_server("other-server", &[]);
    let relay = TcpRelay::new(tls_addr(&server));
    let (accepted, note, c) = libcoap_ended(&relay, &server, &["-C", &pki("ca.pem")]);
    assert!(
        !accepted,
        "coap-client-openssl -C ca.pem printed the answer of a server it cannot verify\n{c}"
    );
    let hello = handshake_seen(&relay, 0, &c);
    let logged = our_server_refusal(
        &server,
        "unknown_ca",
        "our server should log the client's unknown_ca alert",
        &c,
    );
    format!("coap-client-openssl -C ca.pem: {note}; {hello}; our server logged `{logged}`")
}

// ---------------------------------------------------------------------------------------------
// TLS_03: a server certificate for another name

fn wrong_name_ours() -> String {
    let ca = pki("ca.pem");
    let server = libcoap_server(&["-c", &pki("server.pem"), "-j", &pki("server.key")]);
    // The same server and certificate under a name it carries: accepted.
    let direct = SocketAddr::from(([127, 0, 0, 1], server.port + 1));
    let good = our_client(&["-C", &ca, "-B", "5", &format!("coaps+tcp://{direct}/")]);
    assert_eq!(
        good.code(),
        Some(0),
        "the certificate is good for 127.0.0.1\n{}\n--- server\n{}",
        good.describe(),
        server.output()
    );
    let relay = TcpRelay::on(OTHER_NAME, tls_addr(&server));
    let r = our_client(&["-C", &ca, "-B", "5", &relay.uri("coaps+tcp", "")]);
    let (c, line) = refused(&r, &relay, &server, &["TLS", "name mismatch", "127.0.0.2"]);
    let hello = handshake_seen(&relay, 0, &c);
    assert!(
        !r.stdout.contains(LIBCOAP_TEXT),
        "the answer was printed\n{c}"
    );
    let told = server_says(&server, "alert read:fatal")
        .then(|| {
            libcoap_tls_lines(&server.output())
                .into_iter()
                .find(|l| l.contains("alert read:fatal"))
                .map(|l| format!("`{l}`"))
        })
        .flatten()
        .unwrap_or_else(|| "nothing about an alert".into());
    format!(
        "reached as 127.0.0.1: exit 0; as 127.0.0.2: exit 3 after {:.2} s, `{line}`; {hello}; coap-server-openssl logged {told}",
        r.elapsed.as_secs_f64()
    )
}

fn wrong_name_libcoap() -> String {
    let server = our_cert_server("server", &[]);
    let relay = TcpRelay::on(OTHER_NAME, tls_addr(&server));
    let (accepted, note, c) = libcoap_ended(&relay, &server, &["-C", &pki("ca.pem")]);
    let hello = handshake_seen(&relay, 0, &c);
    format!(
        "server.pem (localhost, 127.0.0.1, ::1) reached as 127.0.0.2 with -C ca.pem: {}{note}; {hello}",
        if accepted {
            "ACCEPTED, the name is not checked: "
        } else {
            "refused: "
        }
    )
}

// ---------------------------------------------------------------------------------------------
// TLS_04: a client certificate required and checked

fn client_cert_ours() -> String {
    let ca = pki("ca.pem");
    // libcoap's -C: client certificates are asked for and verified against the CA.
    let server = libcoap_server(&[
        "-c",
        &pki("server.pem"),
        "-j",
        &pki("server.key"),
        "-C",
        &ca,
    ]);
    let relay = TcpRelay::new(tls_addr(&server));
    let uri = relay.uri("coaps+tcp", "");

    let none = our_client(&["-C", &ca, "-B", "5", &uri]);
    let (c, none_line) = refused(
        &none,
        &relay,
        &server,
        &["TLS", "certificate_required", "-c certfile"],
    );
    let hello = handshake_seen(&relay, 0, &c);
    assert!(
        server_says(&server, "peer did not return a certificate"),
        "coap-server-openssl did not log the missing certificate\n{c}"
    );

    let good = our_client(&[
        "-C",
        &ca,
        "-c",
        &pki("client.pem"),
        "-j",
        &pki("client.key"),
        "-B",
        "5",
        &uri,
    ]);
    let c = ctx(&relay, &good, &server);
    assert_eq!(good.code(), Some(0), "client.pem must be accepted\n{c}");
    assert!(good.stdout.contains(LIBCOAP_TEXT), "{c}");

    let untrusted = our_client(&[
        "-C",
        &ca,
        "-c",
        &pki("other-client.pem"),
        "-j",
        &pki("other-client.key"),
        "-B",
        "5",
        &uri,
    ]);
    let (c, untrusted_line) = refused(&untrusted, &relay, &server, &["TLS", "unknown_ca"]);
    assert!(
        server_says(&server, "'coap-engine untrusted client' depth=0"),
        "coap-server-openssl did not log the untrusted client certificate\n{c}"
    );
    assert_eq!(relay.accepted(), 3, "one connection per run\n{c}");
    format!(
        "no -c: exit 3, `{none_line}` (libcoap: `peer did not return a certificate`); client.pem: exit 0, libcoap's / text; \
         other-client.pem (untrusted CA): exit 3, `{untrusted_line}` (libcoap: `unable to get local issuer certificate`); {hello}"
    )
}

fn client_cert_libcoap() -> String {
    let ca = pki("ca.pem");
    let server = our_cert_server("server", &["-C", &ca]);
    let relay = TcpRelay::new(tls_addr(&server));

    let (accepted, none_note, c) = libcoap_ended(&relay, &server, &["-C", &ca]);
    assert!(
        !accepted,
        "our server answered a client without a certificate\n{c}"
    );
    let hello = handshake_seen(&relay, 0, &c);
    let none_logged = our_server_refusal(
        &server,
        "no certificate was sent",
        "our server should log the missing certificate",
        &c,
    );

    let (r, accepted, good_note) = libcoap_verdict(
        &relay,
        &[
            "-C",
            &ca,
            "-c",
            &pki("client.pem"),
            "-j",
            &pki("client.key"),
        ],
    );
    let c = ctx(&relay, &r, &server);
    assert!(accepted, "client.pem must be accepted\n{c}");
    assert_eq!(r.code(), Some(0), "{c}");

    let before = server.output().matches(": TLS: ").count();
    let (accepted, untrusted_note, c) = libcoap_ended(
        &relay,
        &server,
        &[
            "-C",
            &ca,
            "-c",
            &pki("other-client.pem"),
            "-j",
            &pki("other-client.key"),
        ],
    );
    assert!(
        !accepted,
        "our server answered an untrusted client certificate\n{c}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.output().matches(": TLS: ").count() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let untrusted_logged = tls_refusals(&server)
        .into_iter()
        .nth(before)
        .unwrap_or_else(|| panic!("our server logged no refusal of other-client.pem\n{c}"));
    assert!(
        untrusted_logged.contains("unknown CA"),
        "our server should refuse other-client.pem for its issuer\n{c}"
    );
    format!(
        "no -c: {none_note}, our server logged `{none_logged}`; client.pem: {good_note}; \
         other-client.pem (untrusted CA): {untrusted_note}, our server logged `{untrusted_logged}`; {hello}"
    )
}

// ---------------------------------------------------------------------------------------------

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("TLS_02", Dir::OursToTls(OPENSSL), "coaps+tcp, unknown CA: a server certificate from an untrusted CA refused, exit 3 with one line naming it, alert told (libcoap logs it)", unknown_ca_ours, false),
        Case::new("TLS_02", Dir::TlsToOurs(OPENSSL), "coaps+tcp, unknown CA: coap-client-openssl -C ca.pem against our server with an untrusted certificate prints no answer; our server logs the client's alert; exit status recorded", unknown_ca_libcoap, false),
        Case::new("TLS_03", Dir::OursToTls(OPENSSL), "coaps+tcp, wrong name: server.pem reached as 127.0.0.2 refused (exit 3, one line naming the mismatch), as 127.0.0.1 accepted", wrong_name_ours, false),
        Case::new("TLS_03", Dir::TlsToOurs(OPENSSL), "coaps+tcp, wrong name: coap-client-openssl -C ca.pem reaching our server.pem as 127.0.0.2: what it does, recorded", wrong_name_libcoap, true),
        Case::new("TLS_04", Dir::OursToTls(OPENSSL), "coaps+tcp, client certificate required (libcoap -C): without -c exit 3 naming certificate_required, with client.pem exit 0, with other-client.pem (untrusted CA) exit 3", client_cert_ours, false),
        Case::new("TLS_04", Dir::TlsToOurs(OPENSSL), "coaps+tcp, client certificate required (our -C): coap-client-openssl without a certificate and with other-client.pem gets no answer (our server logs why), with client.pem it does", client_cert_libcoap, false),
    ]
}

pub const OBSERVATIONS: &str = "
## TLS (coaps+tcp): differences observed (TLS_02–04)

- **libcoap's OpenSSL client exits 0 after a failed TLS handshake**, as over DTLS: refused for
  an unknown CA (`certificate verify failed`), for a missing client certificate (`SSL3 alert
  read:fatal:unknown`: OpenSSL has no name for TLS 1.3's certificate_required, 116) or an
  untrusted one (`alert read:fatal:unknown CA`), it logs `cannot send CoAP pdu` and exits 0.
  Our client exits 3 with one line naming the cause.
- **libcoap's client does not check the server's name over TLS either**: see TLS_03's row.
- **Both servers require a client certificate when given CAs** (libcoap's `-C`, ours `-C`/`-R`),
  and refuse one from another CA (`unable to get local issuer certificate` there, `unknown CA`
  here).
- **TLS version**: with our client and with our server, libcoap's OpenSSL build negotiates TLS 1.3
  (TLS_AES_256_GCM_SHA384), so certificates and alerts are encrypted on the wire; the refusals are
  checked by what each side logs and by the exit status.

## TCP and TLS liveness: differences observed (LIVE_05)

- **libcoap's Pong carries no token**: 4.3.1 answers a 7.02 Ping with `10 e3 20`, a 7.03 Pong
  with an empty token and a Custody option, where RFC 8323 §5.4 asks for the Ping's token. The
  engine used to keep its keepalive probe outstanding when no Pong matched it, so it sent
  no further Ping and failed a live, idle libcoap peer at interval + timeout (our client waiting
  for `/async?5` with `-K 1` exited 3 after 3 s; our server with `-K 1` dropped healthy
  observers about 3 s after they registered). Now whatever is heard answers the probe; the
  \"live but slow server\" rows check it.
- **coap-server-openssl has no keepalive**: when our observing client is frozen it goes on
  writing a notification every second into the open connection (its kernel still acknowledges
  them) and keeps the observation; over TCP nothing ever tells it the client is gone. Our
  `coap-server -K 1` pings the silent client and drops the session and its observer within
  interval + timeout.
- **coap-client-openssl -K 1 against our frozen server**: it pings once, logs an internal
  `session disconnected (reason 1)` 2 s after the freeze, tries to reconnect (`bind: Invalid
  argument`) and exits 0 without reporting a failure. Our client reports `keepalive failure`
  and exits 3 within the same bound. On a reset connection it also exits 0 at once; ours exits
  3 naming the reset (`connection reset by ...`) or the close (`... closed the connection
  during the observation`, when the server is killed).
";
