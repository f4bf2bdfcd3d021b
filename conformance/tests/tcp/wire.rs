//! The wire of CoAP over TCP (RFC 8323) as the tests see it: a recording TCP relay between a
//! client and a server, frames cut from each direction's bytes with the engine's public
//! [`Deframer`], a raw peer that writes chosen bytes (the malformed or signalling peer the
//! tools cannot play), and a reader of TLS records for `coaps+tcp://`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_engine::framing::{frame, Deframer};

/// How a direction of a connection ended, as its reader saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// End of stream (the sender closed or shut down its side).
    Fin,
    /// The connection was reset (or another read error).
    Reset,
}

/// Bytes (or the end) read from one side of a relayed connection.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub conn: usize,
    pub to_server: bool,
    pub at: Instant,
    pub bytes: Vec<u8>,
    pub end: Option<End>,
}

/// One RFC 8323 frame, decoded.
#[derive(Clone, Debug)]
pub struct Frame {
    /// When its last byte arrived.
    pub at: Instant,
    pub class: u8,
    pub detail: u8,
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
    /// Its size on the wire (length header, code, token, options and payload).
    pub wire_len: usize,
}

impl Frame {
    pub fn code(&self) -> String {
        format!("{}.{:02}", self.class, self.detail)
    }

    pub fn is(&self, code: &str) -> bool {
        self.code() == code
    }

    pub fn is_signal(&self) -> bool {
        self.class == 7
    }

    pub fn is_request(&self) -> bool {
        self.class == 0 && self.detail != 0
    }

    pub fn is_response(&self) -> bool {
        (2..=5).contains(&self.class)
    }

    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, v)| v.as_slice())
    }

    pub fn uint(&self, number: u16) -> Option<u64> {
        self.option(number).map(uint)
    }

    /// `7.01 tok=[] [2:1152, 4:] 12 bytes of payload (frame 17 bytes)`.
    pub fn describe(&self) -> String {
        let opts: Vec<String> = self
            .options
            .iter()
            .map(|(n, v)| {
                let text = v.iter().all(|b| b.is_ascii_graphic());
                if self.is_signal() || matches!(*n, 6 | 7 | 12 | 14 | 17 | 23 | 27 | 28 | 60) {
                    if v.is_empty() {
                        format!("{n}:")
                    } else {
                        format!("{n}:{}", uint(v))
                    }
                } else if text {
                    format!("{n}:{}", String::from_utf8_lossy(v))
                } else {
                    format!("{n}:{v:02x?}")
                }
            })
            .collect();
        let payload = if self.payload.len() <= 40 {
            format!("{:?}", String::from_utf8_lossy(&self.payload))
        } else {
            format!("{} bytes of payload", self.payload.len())
        };
        format!(
            "{} tok={:02x?} [{}] {payload} (frame {} bytes)",
            self.code(),
            self.token,
            opts.join(", "),
            self.wire_len
        )
    }
}

/// An unsigned option value (RFC 7252 §3.2).
pub fn uint(v: &[u8]) -> u64 {
    v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
}

/// Options and payload of a message in RFC 7252's layout after its header and token.
fn parse_options(mut b: &[u8]) -> (Vec<(u16, Vec<u8>)>, Vec<u8>) {
    fn ext(nibble: u8, b: &mut &[u8]) -> Option<u32> {
        match nibble {
            13 => {
                let v = u32::from(*b.first()?) + 13;
                *b = &b[1..];
                Some(v)
            }
            14 => {
                let v = u32::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])) + 269;
                *b = &b[2..];
                Some(v)
            }
            15 => None,
            n => Some(u32::from(n)),
        }
    }
    let mut out = Vec::new();
    let mut number = 0u32;
    while let Some(&first) = b.first() {
        b = &b[1..];
        if first == 0xFF {
            return (out, b.to_vec());
        }
        let (Some(delta), Some(len)) = (ext(first >> 4, &mut b), ext(first & 15, &mut b)) else {
            break;
        };
        let Some(value) = b.get(..len as usize) else {
            break;
        };
        number += delta;
        out.push((number as u16, value.to_vec()));
        b = &b[len as usize..];
    }
    (out, Vec::new())
}

/// Frames of one direction's bytes, in order, each stamped with the arrival of its last
/// chunk; the error that stopped the cutting, if any.
pub fn frames_of(chunks: &[(Instant, &[u8])]) -> (Vec<Frame>, Option<String>) {
    let mut d = Deframer::default();
    let mut out = Vec::new();
    let mut msg = Vec::new();
    let mut consumed = 0usize;
    let mut pushed = 0usize;
    for (at, bytes) in chunks {
        d.push(bytes);
        pushed += bytes.len();
        loop {
            match d.next(usize::MAX, &mut msg) {
                Ok(true) => {
                    let now = pushed - d.pending();
                    let tkl = usize::from(msg[0] & 15);
                    let (options, payload) = parse_options(&msg[4 + tkl..]);
                    out.push(Frame {
                        at: *at,
                        class: msg[1] >> 5,
                        detail: msg[1] & 31,
                        token: msg[4..4 + tkl].to_vec(),
                        options,
                        payload,
                        wire_len: now - consumed,
                    });
                    consumed = now;
                }
                Ok(false) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

/// A frame for the stream: `code` as (class, detail), options in any order.
pub fn encode(code: (u8, u8), token: &[u8], options: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
    fn nibble(v: usize, ext: &mut Vec<u8>) -> u8 {
        match v {
            0..=12 => v as u8,
            13..=268 => {
                ext.push((v - 13) as u8);
                13
            }
            _ => {
                ext.extend_from_slice(&((v - 269) as u16).to_be_bytes());
                14
            }
        }
    }
    let mut m = vec![0x40 | token.len() as u8, code.0 << 5 | code.1, 0, 0];
    m.extend_from_slice(token);
    let mut opts = options.to_vec();
    opts.sort_by_key(|(n, _)| *n);
    let mut last = 0usize;
    for (n, v) in opts {
        let mut ext = Vec::new();
        let d = nibble(usize::from(n) - last, &mut ext);
        let l = nibble(v.len(), &mut ext);
        m.push(d << 4 | l);
        m.extend_from_slice(&ext);
        m.extend_from_slice(v);
        last = usize::from(n);
    }
    if !payload.is_empty() {
        m.push(0xFF);
        m.extend_from_slice(payload);
    }
    let mut out = Vec::new();
    assert!(frame(&mut out, &m));
    out
}

/// A CSM (7.01) with Max-Message-Size and, if `block_wise`, Block-Wise-Transfer.
pub fn csm(max_message_size: u32, block_wise: bool) -> Vec<u8> {
    let size = max_message_size.to_be_bytes();
    let first = size.iter().position(|b| *b != 0).unwrap_or(4);
    let mut opts: Vec<(u16, &[u8])> = vec![(2, &size[first..])];
    if block_wise {
        opts.push((4, &[]));
    }
    encode((7, 1), &[], &opts, &[])
}

// ---------------------------------------------------------------------------------------------
// The recording relay

/// A TCP relay on 127.0.0.1 in front of a server: each connection accepted is forwarded to
/// the server on a connection of its own, bytes copied both ways and recorded as they are
/// read, with the end of each direction (a FIN passed on as a shutdown). Stops on drop.
pub struct TcpRelay {
    pub port: u16,
    log: Arc<Mutex<Vec<Chunk>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl TcpRelay {
    pub fn new(server: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Arc<Mutex<Vec<Chunk>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (log, stop, threads) = (log.clone(), stop.clone(), threads.clone());
            std::thread::spawn(move || {
                let mut conn = 0;
                while !stop.load(Ordering::Relaxed) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    client.set_nonblocking(false).unwrap();
                    let Ok(upstream) = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                    else {
                        record(&log, conn, true, &[], Some(End::Reset));
                        conn += 1;
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let pairs = [
                        (
                            client.try_clone().unwrap(),
                            upstream.try_clone().unwrap(),
                            true,
                        ),
                        (upstream, client, false),
                    ];
                    for (from, to, to_server) in pairs {
                        let (log, stop) = (log.clone(), stop.clone());
                        let t = std::thread::spawn(move || {
                            copy(from, to, to_server, conn, &log, &stop)
                        });
                        threads.lock().unwrap().push(t);
                    }
                    conn += 1;
                }
            })
        };
        TcpRelay {
            port,
            log,
            stop,
            threads,
            accept: Some(accept),
        }
    }

    /// `scheme://127.0.0.1:PORT/path`.
    pub fn uri(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    pub fn chunks(&self) -> Vec<Chunk> {
        self.log.lock().unwrap().clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.chunks().iter().map(|c| c.conn + 1).max().unwrap_or(0)
    }

    /// The end of one direction of connection `conn`, if it ended.
    pub fn end(&self, conn: usize, to_server: bool) -> Option<(Instant, End)> {
        self.chunks()
            .iter()
            .find(|c| c.conn == conn && c.to_server == to_server && c.end.is_some())
            .map(|c| (c.at, c.end.unwrap()))
    }

    /// Waits until every connection accepted so far (at least one) has ended in the
    /// directions asked for: client → server (everything a client that exited sent is then
    /// recorded), and server → client if `both`. Panics after `limit`.
    pub fn wait_closed(&self, both: bool, limit: Duration) {
        let give_up = Instant::now() + limit;
        loop {
            let n = self.connections();
            let done = n > 0
                && (0..n).all(|c| {
                    self.end(c, true).is_some() && (!both || self.end(c, false).is_some())
                });
            if done {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "relayed connection(s) still open after {limit:?}\n{}",
                self.trace()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The bytes of one direction of a connection, as read.
    pub fn bytes(&self, conn: usize, to_server: bool) -> Vec<u8> {
        self.chunks()
            .iter()
            .filter(|c| c.conn == conn && c.to_server == to_server)
            .flat_map(|c| c.bytes.clone())
            .collect()
    }

    /// The frames of one direction of a connection, and the framing error that stopped the
    /// cutting, if any.
    pub fn frames(&self, conn: usize, to_server: bool) -> (Vec<Frame>, Option<String>) {
        let chunks = self.chunks();
        let parts: Vec<(Instant, &[u8])> = chunks
            .iter()
            .filter(|c| c.conn == conn && c.to_server == to_server)
            .map(|c| (c.at, c.bytes.as_slice()))
            .collect();
        frames_of(&parts)
    }

    /// The frames of one direction, which must cut cleanly.
    #[track_caller]
    pub fn clean_frames(&self, conn: usize, to_server: bool) -> Vec<Frame> {
        let (frames, err) = self.frames(conn, to_server);
        if let Some(e) = err {
            panic!("{e} in the stream\n{}", self.trace());
        }
        frames
    }

    /// One line per frame (and end of stream) per connection, for failure messages.
    pub fn trace(&self) -> String {
        let chunks = self.chunks();
        let Some(start) = chunks.first().map(|c| c.at) else {
            return "(nothing relayed)\n".into();
        };
        let mut out = String::new();
        for conn in 0..self.connections() {
            out.push_str(&format!("connection {conn}:\n"));
            let mut lines: Vec<(Instant, String)> = Vec::new();
            for to_server in [true, false] {
                let dir = if to_server { "C->S" } else { "S->C" };
                let (frames, err) = self.frames(conn, to_server);
                for f in frames {
                    lines.push((f.at, format!("{dir} {}", f.describe())));
                }
                if let Some(e) = err {
                    lines.push((Instant::now(), format!("{dir} cannot cut further: {e}")));
                }
                if let Some((at, end)) = self.end(conn, to_server) {
                    lines.push((at, format!("{dir} {end:?}")));
                }
            }
            lines.sort_by_key(|(at, _)| *at);
            for (at, l) in lines {
                let t = at.saturating_duration_since(start).as_secs_f64();
                out.push_str(&format!("{t:8.3}s {l}\n"));
            }
        }
        out
    }

    /// [`TcpRelay::trace`] for TLS: the records of each direction.
    pub fn tls_trace(&self) -> String {
        let mut out = String::new();
        for conn in 0..self.connections() {
            for to_server in [true, false] {
                let dir = if to_server { "C->S" } else { "S->C" };
                let records: Vec<String> = tls_records(&self.bytes(conn, to_server))
                    .iter()
                    .map(|(t, l)| format!("{t}({l})"))
                    .collect();
                out.push_str(&format!(
                    "connection {conn} {dir}: {} {:?}\n",
                    records.join(" "),
                    self.end(conn, to_server).map(|(_, e)| e)
                ));
            }
        }
        out
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

fn record(log: &Mutex<Vec<Chunk>>, conn: usize, to_server: bool, bytes: &[u8], end: Option<End>) {
    log.lock().unwrap().push(Chunk {
        conn,
        to_server,
        at: Instant::now(),
        bytes: bytes.to_vec(),
        end,
    });
}

fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    to_server: bool,
    conn: usize,
    log: &Mutex<Vec<Chunk>>,
    stop: &AtomicBool,
) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => {
                record(log, conn, to_server, &[], Some(End::Fin));
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // Recorded before it is passed on: whatever the receiver got is in the log.
                record(log, conn, to_server, &buf[..n], None);
                let _ = to.write_all(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                record(log, conn, to_server, &[], Some(End::Reset));
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// TLS records of a byte stream: (content type, length).
pub fn tls_records(mut b: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
        out.push((b[0], len));
        if b.len() < 5 + len {
            break;
        }
        b = &b[5 + len..];
    }
    out
}

/// The (TLS version, cipher suite) a server's first flight chose: from its ServerHello, the
/// supported_versions extension (RFC 8446 §4.2.1) if there, else the legacy version.
pub fn server_hello(bytes: &[u8]) -> Option<(u16, u16)> {
    let be = |b: &[u8], at: usize| Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    if *bytes.first()? != 22 || *bytes.get(5)? != 2 {
        return None;
    }
    let hello = bytes.get(9..)?; // record header (5), handshake type and length (4)
    let legacy = be(hello, 0)?;
    let sid = usize::from(*hello.get(34)?);
    let suite = be(hello, 35 + sid)?;
    let mut at = 35 + sid + 3;
    let end = at + 2 + usize::from(be(hello, at)?);
    at += 2;
    let mut version = legacy;
    while at + 4 <= end {
        let (ty, len) = (be(hello, at)?, usize::from(be(hello, at + 2)?));
        if ty == 43 && len == 2 {
            version = be(hello, at + 4)?;
        }
        at += 4 + len;
    }
    Some((version, suite))
}

// ---------------------------------------------------------------------------------------------
// A raw peer

/// One end of a TCP connection driven byte by byte by the test: the peer that sends what
/// neither tool can be made to send, and reads what comes back.
pub struct Raw {
    pub stream: TcpStream,
    chunks: Vec<(Instant, Vec<u8>)>,
    pub end: Option<(Instant, End)>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Raw::from(stream)
    }

    pub fn from(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let _ = stream.set_nodelay(true);
        Raw {
            stream,
            chunks: Vec::new(),
            end: None,
        }
    }

    /// Writes `bytes`; false if the connection refused them.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// What was received, cut into frames (and the framing error, if any).
    pub fn frames(&self) -> (Vec<Frame>, Option<String>) {
        let parts: Vec<(Instant, &[u8])> = self
            .chunks
            .iter()
            .map(|(t, b)| (*t, b.as_slice()))
            .collect();
        frames_of(&parts)
    }

    /// Reads until `done` holds for the frames received, the stream ends, or `limit` passes;
    /// returns whether `done` held.
    pub fn read_until(&mut self, limit: Duration, done: impl Fn(&[Frame]) -> bool) -> bool {
        let give_up = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            if done(&self.frames().0) {
                return true;
            }
            if self.end.is_some() || Instant::now() >= give_up {
                return false;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => self.end = Some((Instant::now(), End::Fin)),
                Ok(n) => self.chunks.push((Instant::now(), buf[..n].to_vec())),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.end = Some((Instant::now(), End::Reset)),
            }
        }
    }

    /// Reads until the stream ends or `limit` passes; returns how it ended.
    pub fn read_to_end(&mut self, limit: Duration) -> Option<End> {
        self.read_until(limit, |_| false);
        self.end.map(|(_, e)| e)
    }

    /// The received frames in one line each.
    pub fn trace(&self) -> String {
        let (frames, err) = self.frames();
        let mut s: String = frames
            .iter()
            .map(|f| format!("  <- {}\n", f.describe()))
            .collect();
        if let Some(e) = err {
            s.push_str(&format!("  <- cannot cut further: {e}\n"));
        }
        s.push_str(&format!("  end: {:?}\n", self.end.map(|(_, e)| e)));
        s
    }
}

/// A listener on 127.0.0.1 playing a server: accepts one connection within `limit`.
pub struct FakeServer {
    listener: TcpListener,
    pub port: u16,
}

impl FakeServer {
    pub fn new() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake server listener");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        FakeServer { listener, port }
    }

    pub fn uri(&self, path: &str) -> String {
        format!("coap+tcp://127.0.0.1:{}/{path}", self.port)
    }

    #[track_caller]
    pub fn accept(&self, limit: Duration) -> Raw {
        let give_up = Instant::now() + limit;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return Raw::from(s);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < give_up,
                        "no client connected to the fake server within {limit:?}"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}
