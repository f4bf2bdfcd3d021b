//! `coap-bench`: loopback throughput of our `coap-server` against libcoap's
//! `coap-server-notls`, with the physical limit of this machine next to them: P simulated
//! clients keep W Confirmable GETs in flight each for D seconds; it reports responses/s,
//! p50/p99 latency and the CPU used by the server and by the generator. The servers are
//! measured in turn, R rounds each (medians reported), each run against a freshly started
//! server process.
//!
//! ```text
//! cargo build --release -p coap-engine-examples
//! target/release/coap-bench [-P 16,2000] [-W 4,1] [-D 3] [-R 3] [-p path/to/coap-server]
//!                            [-b rcvbuf] [-g raw|engine] [-k key -u identity] [-M sessions]
//!                            [-s coap+tcp | -s coaps+tcp -c certfile -j keyfile -C cafile]
//! ```
//!
//! For `coap://` the generator costs as little as a CoAP client can (`src/bench/loadgen.rs`):
//! each client is a Message ID, a token and W slots, with its own loopback address
//! (127.10.x.y); requests are hand-built 8-byte datagrams, answers are matched by address and
//! Message ID or token, and lost requests are retransmitted as RFC 7252 says. So that the
//! server never pays for the generator, the generator never sleeps in a receive (a reply
//! would have to wake it, inside the server's send): it takes what arrived and otherwise
//! naps on a timer. Server and generator are pinned to a core each (CPU 0 and 1) when there
//! are two. `-g engine` uses one `coap_engine::Endpoint` per client instead (the generator
//! of `coaps://`), which costs the generator more than our server.
//!
//! Next to the two CoAP servers, two raw echo servers are measured in the same run: this
//! program with `-E batched` (`recvmmsg`/`sendmmsg`, 64 per call) or `-E single` (one
//! `recv_from`/`send_to` per datagram), turning each request into an answer of the same
//! size as the servers' with no CoAP work at all (`src/bench/echo.rs`): the physical limit
//! of this machine's loopback. The tables give ours / libcoap and ours / batched echo.
//!
//! Every server takes the system's default socket receive buffer. At the usual 212,992 bytes
//! a socket holds about 256 requests, so with 2,000 clients in flight the kernel would drop
//! most of them and their clients would wait seconds to retransmit. `-b bytes` (default
//! 4 MiB; `-b 0` to leave it) raises `net.core.rmem_default` for the runs and puts it back
//! after (root only; otherwise it says so, and the drops at the server's socket are
//! reported).
//!
//! With `-k key -u identity` every client speaks CoAP over DTLS with that pre-shared key
//! (TLS_PSK_WITH_AES_128_CCM_8) to our `coap-server -k key` and libcoap's
//! `coap-server-openssl -k key`, both on their DTLS port (`-p`+1); each client's handshake
//! happens during the ramp-up, before the measurement window.
//!
//! With `-s coap+tcp` every client is a CoAP-over-TCP endpoint (RFC 8323) with a connection
//! of its own to our `coap-server` and libcoap's `coap-server-notls`, both on their TCP port
//! (`-p`); with `-s coaps+tcp` the connections are TLS, to both servers' TLS port (`-p`+1)
//! of `coap-server -c certfile -j keyfile` and `coap-server-openssl` with the same
//! certificate, which the clients verify against `-C cafile` (and the address 127.0.0.1).
//! The clients are the mio adapter's `StreamDriver`s in one poll; they connect one per
//! millisecond (libcoap's server listens with a backlog of 5) and the measurement starts
//! 0.2 s after every client has had its first answer, so connecting and handshakes are not
//! measured.
//!
//! With `-M N` it measures memory instead of speed: the resident set of a fresh server
//! process before and after N peers (127.64.x.y) each had one GET /time answered, divided
//! by N, for our `coap-server -x N+16` and libcoap's `coap-server-notls` (see
//! `src/bench/memory.rs`).
//!
//! `-P` and `-W` take comma-separated lists that pair up (a single value pairs with every
//! value of the other list): each round measures every (P, W) pair against both servers, so
//! the change of rate from the first pair to each other one is a ratio measured within one
//! run, and reported as the median of the per-round ratios.
//!
//! All clients share one UDP socket (Linux only): replies are routed to their client by
//! the address they were sent to (`IP_PKTINFO`), 64 per `recvmmsg`, and requests leave 64
//! per `sendmmsg` through a raw socket that writes each one's source address (one `sendmsg`
//! each without `CAP_NET_RAW`; see `src/mmsg.rs`). Clients start 64 per millisecond rather
//! than all at once; the measurement starts 0.2 s after the last one started. The tool
//! reports the drops at the server's socket (`/proc/net/udp`) and the requests still
//! unanswered 1.5 s after a run.
//!
//! Only 127.x.y.z addresses are used; every run is bounded in time and its server is killed
//! after it.

#[cfg(target_os = "linux")]
#[path = "../cli.rs"]
mod cli;
#[cfg(target_os = "linux")]
#[path = "../bench/echo.rs"]
mod echo;
#[cfg(target_os = "linux")]
#[path = "../bench/loadgen.rs"]
mod loadgen;
#[cfg(target_os = "linux")]
#[path = "../bench/memory.rs"]
mod memory;
#[cfg(target_os = "linux")]
#[path = "../mmsg.rs"]
mod mmsg;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("coap-bench: needs Linux (IP_PKTINFO, sendmmsg, recvmmsg)");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main()
}

#[cfg(target_os = "linux")]
mod bench {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
    use std::ops::Range;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
    use coap_engine::{
        Config, Endpoint, Event, Limits, RequestId, TransmissionParameters, Transport,
    };
    use coap_engine_mio::mio::{Events, Poll, Token};
    use coap_engine_mio::StreamDriver;

    use crate::cli;
    use crate::mmsg::{AddressBlock, MultiSocket, RecvBatch, SendBatch};

    const PROG: &str = "coap-bench";
    /// Client `i` sends from 127.10.0.1 + i.
    pub(crate) const CLIENTS: AddressBlock = AddressBlock::new(127, 10, 0, 0);
    /// Clients started per millisecond, rather than all at once.
    pub(crate) const RAMP_PER_MS: usize = 64;
    /// Time after the last client started before the measurement window opens.
    pub(crate) const WARM_UP: Duration = Duration::from_millis(200);
    /// How often every client's engine timers (retransmissions, ≥ 2 s away) are checked: a
    /// sweep touches all P engines, so it is kept rare.
    pub(crate) const SWEEP: Duration = Duration::from_millis(50);
    /// How long a run waits for its last answers before giving up on what is left.
    pub(crate) const WIND_DOWN: Duration = Duration::from_millis(1500);

    /// A server process, killed when dropped.
    pub(crate) struct Server {
        pub(crate) child: Child,
        pub(crate) addr: SocketAddrV4,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// What the clients speak, and so which of a server's ports is measured.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Mode {
        Udp,
        Dtls,
        Tcp,
        Tls,
    }

    impl Mode {
        fn stream(self) -> bool {
            matches!(self, Mode::Tcp | Mode::Tls)
        }
        fn secure(self) -> bool {
            matches!(self, Mode::Dtls | Mode::Tls)
        }
    }

    /// Starts `program` with `args` on a free port (free for UDP and TCP, and the next one
    /// too): datagrams and TCP are served on it, DTLS and TLS on the next port, the one
    /// measured in those modes.
    pub(crate) fn spawn(program: &str, mode: Mode, args: &[String]) -> Result<Server, String> {
        let free = |port: u16| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        let port = loop {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            if port < u16::MAX && free(port) && free(port + 1) {
                break port;
            }
        };
        let child = Command::new(program)
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let port = if mode.secure() { port + 1 } else { port };
        let server = Server {
            child,
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        };
        std::thread::sleep(Duration::from_millis(300));
        if mode.stream() {
            let started = Instant::now();
            while TcpStream::connect(server.addr).is_err() {
                if started.elapsed() > Duration::from_secs(5) {
                    return Err(format!("{program} does not listen on TCP port {port}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(server)
    }

    /// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
    pub(crate) fn cpu_time(pid: &str) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// Datagrams the kernel dropped at the IPv4 UDP socket bound to `addr` (its receive
    /// buffer was full), from the `drops` column of `/proc/net/udp`.
    pub(crate) fn socket_drops(addr: SocketAddrV4) -> u64 {
        let local = format!(
            "{:08X}:{:04X}",
            u32::from(*addr.ip()).swap_bytes(),
            addr.port()
        );
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        table
            .lines()
            .filter(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
            .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    }

    /// One simulated client: its engine and the send times of its requests in flight.
    struct Client {
        endpoint: Endpoint,
        in_flight: Vec<(RequestId, Instant)>,
    }

    /// What one run measured.
    pub(crate) struct Run {
        rate: f64,
        p50: Duration,
        p99: Duration,
        /// Requests that ended in an error.
        failures: u64,
        /// Requests still unanswered (being retransmitted) 1.5 s after the run; cancelled.
        unanswered: u64,
        /// Datagrams dropped at the server's socket (receive buffer full) during the run.
        server_drops: u64,
        server_cpu: f64,
        generator_cpu: f64,
    }

    impl Run {
        /// A run's figures from its answers' latencies (µs) within a window of `elapsed`
        /// seconds and the CPU seconds each side used in it.
        fn new(
            mut latencies: Vec<u32>,
            elapsed: f64,
            failures: u64,
            unanswered: u64,
            server_drops: u64,
            server_cpu: f64,
            generator_cpu: f64,
        ) -> Run {
            latencies.sort_unstable();
            let pct = |q: f64| {
                let i =
                    ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
                Duration::from_micros(latencies.get(i).copied().unwrap_or_default().into())
            };
            Run {
                rate: latencies.len() as f64 / elapsed,
                p50: pct(0.5),
                p99: pct(0.99),
                failures,
                unanswered,
                server_drops,
                // CPU time is sampled in 10 ms ticks: a rough share of one core.
                server_cpu: server_cpu / elapsed,
                generator_cpu: generator_cpu / elapsed,
            }
        }
    }

    /// Counters of the run in progress.
    /// A run's phases and counters: clients start, the window opens `WARM_UP` after they
    /// are all going and lasts `secs`, then answers stop starting new requests and the run
    /// ends when nothing is in flight or `WIND_DOWN` has passed.
    pub(crate) struct Tally {
        /// The measurement window, once open.
        window: Option<(Instant, Instant)>,
        /// Whether answered clients send their next request.
        pub(crate) running: bool,
        latencies: Vec<u32>,
        pub(crate) failures: u64,
        secs: f64,
        /// The server's process id, for its CPU time.
        pid: String,
        /// CPU time of the server and of this process when the window opened.
        cpu_at_start: (Duration, Duration),
        wind_down_until: Option<Instant>,
        run_start: Instant,
        /// Clients started so far.
        pub(crate) started: usize,
        /// When every client was going; the window opens `WARM_UP` after it.
        ready_at: Option<Instant>,
    }

    impl Tally {
        pub(crate) fn new(server: &Server, secs: f64) -> Tally {
            Tally {
                window: None,
                running: true,
                latencies: Vec::with_capacity(1 << 20),
                failures: 0,
                secs,
                pid: server.child.id().to_string(),
                cpu_at_start: (Duration::ZERO, Duration::ZERO),
                wind_down_until: None,
                run_start: Instant::now(),
                started: 0,
                ready_at: None,
            }
        }

        /// The clients of `0..p` to start now, at `per_ms` a millisecond from the run's start.
        pub(crate) fn start(&mut self, now: Instant, per_ms: usize, p: usize) -> Range<usize> {
            let due = (now.duration_since(self.run_start).as_micros() as usize / 1000 + 1)
                .saturating_mul(per_ms);
            let from = self.started;
            self.started = due.min(p).max(from);
            from..self.started
        }

        /// Every client is going as of `now` (the first call counts).
        pub(crate) fn ready(&mut self, now: Instant) {
            self.ready_at.get_or_insert(now);
        }

        pub(crate) fn is_ready(&self) -> bool {
            self.ready_at.is_some()
        }

        /// Moves the phases on at `now`, the window opening `WARM_UP` after
        /// [`ready`](Self::ready); whether the run is over (`idle`: nothing is in flight).
        pub(crate) fn advance(&mut self, now: Instant, idle: impl FnOnce() -> bool) -> bool {
            if self.window.is_none() && self.ready_at.is_some_and(|t| now >= t + WARM_UP) {
                self.window = Some((now, now + Duration::from_secs_f64(self.secs)));
                self.cpu_at_start = (cpu_time(&self.pid), cpu_time("self"));
            }
            if let Some((_, end)) = self.window {
                if now >= end && self.running {
                    self.running = false;
                    self.wind_down_until = Some(now + WIND_DOWN);
                }
            }
            self.wind_down_until
                .is_some_and(|until| now >= until || idle())
        }

        /// A request sent at `sent` ended now: answered (`ok`) or failed.
        pub(crate) fn ended(&mut self, sent: Instant, ok: bool) {
            let t = Instant::now();
            if !ok {
                self.failures += 1;
            } else if self
                .window
                .is_some_and(|(start, end)| t >= start && t < end)
            {
                self.latencies
                    .push(t.duration_since(sent).as_micros() as u32);
            }
        }

        /// The run's figures; `unanswered` requests were still in flight at its end.
        pub(crate) fn finish(self, unanswered: u64, server_drops: u64) -> Run {
            let (start, end) = self.window.expect("the window opened before the run ended");
            let elapsed = end.duration_since(start).as_secs_f64();
            let server_cpu = (cpu_time(&self.pid) - self.cpu_at_start.0).as_secs_f64();
            let generator_cpu = (cpu_time("self") - self.cpu_at_start.1).as_secs_f64();
            Run::new(
                self.latencies,
                elapsed,
                self.failures,
                unanswered,
                server_drops,
                server_cpu,
                generator_cpu,
            )
        }
    }

    struct Generator {
        socket: MultiSocket,
        clients: Vec<Client>,
        recv: RecvBatch,
        send: SendBatch,
        epoch: Instant,
        get: Packet,
        send_errors: usize,
    }

    impl Generator {
        fn new(clients: usize, config: Config) -> Result<Generator, String> {
            let socket = MultiSocket::bind(4 << 20, Duration::from_millis(5))
                .map_err(|e| format!("cannot open the client socket: {e}"))?;
            let seed = coap_engine_mio::random_seed();
            let clients = (0..clients)
                .map(|i| {
                    let endpoint = Endpoint::new(config.clone(), seed.wrapping_add(i as u64))
                        .map_err(|e| format!("bad client config: {e}"))?;
                    let in_flight = Vec::with_capacity(config.transmission.nstart);
                    Ok(Client {
                        endpoint,
                        in_flight,
                    })
                })
                .collect::<Result<_, String>>()?;
            let mut get = Packet::new();
            get.header.code = MessageClass::Request(RequestType::Get);
            Ok(Generator {
                socket,
                clients,
                recv: RecvBatch::new(),
                send: SendBatch::default(),
                epoch: Instant::now(),
                get,
                send_errors: 0,
            })
        }

        fn engine_now(&self, t: Instant) -> coap_engine::Instant {
            coap_engine::Instant::from_micros(t.duration_since(self.epoch).as_micros() as u64)
        }

        /// Sends a GET from client `i` to `server`.
        fn issue(&mut self, i: usize, server: SocketAddr, tally: &mut Tally) {
            let t = Instant::now();
            let now = self.engine_now(t);
            let client = &mut self.clients[i];
            match client.endpoint.request(now, server, &self.get) {
                Ok(id) => client.in_flight.push((id, t)),
                Err(e) => {
                    tally.failures += 1;
                    eprintln!("{PROG}: request from client {i} refused: {e}");
                }
            }
        }

        /// Handles client `i`'s events (answers start its next request while running) and
        /// queues its transmits.
        fn service(&mut self, i: usize, server: SocketAddr, tally: &mut Tally) {
            while let Some(event) = self.clients[i].endpoint.poll_event() {
                let (id, ok) = match event {
                    Event::Response { id, .. } => (id, true),
                    Event::RequestFailed { id, .. } => (id, false),
                    _ => continue,
                };
                let client = &mut self.clients[i];
                let Some(k) = client.in_flight.iter().position(|(r, _)| *r == id) else {
                    continue; // cancelled at the end of an earlier run
                };
                let (_, sent) = client.in_flight.swap_remove(k);
                tally.ended(sent, ok);
                if tally.running {
                    self.issue(i, server, tally);
                }
            }
            let source = CLIENTS.address(i);
            while let Some(t) = self.clients[i].endpoint.poll_transmit() {
                if let SocketAddr::V4(destination) = t.destination {
                    self.send.push(source, destination, t.payload);
                }
            }
        }

        /// Runs clients `0..p` with `w` requests each in flight against `server`.
        fn load(&mut self, server: &Server, p: usize, w: usize, secs: f64) -> Result<Run, String> {
            let peer = SocketAddr::V4(server.addr);
            let mut tally = Tally::new(server, secs);
            let drops_before = socket_drops(server.addr);
            let mut last_sweep = Instant::now();
            loop {
                let now = Instant::now();
                let clients = &self.clients[..p];
                if tally.advance(now, || clients.iter().all(|c| c.in_flight.is_empty())) {
                    break;
                }
                // Start clients at a bounded pace, W requests each.
                for i in tally.start(now, RAMP_PER_MS, p) {
                    for _ in 0..w {
                        self.issue(i, peer, &mut tally);
                    }
                    self.service(i, peer, &mut tally);
                }
                if tally.started == p {
                    tally.ready(now);
                }
                if now.duration_since(last_sweep) >= SWEEP {
                    last_sweep = now;
                    let enow = self.engine_now(now);
                    for i in 0..p {
                        let endpoint = &mut self.clients[i].endpoint;
                        if endpoint.poll_timeout().is_some_and(|t| t <= enow) {
                            endpoint.handle_timeout(enow);
                            self.service(i, peer, &mut tally);
                        }
                    }
                }
                self.send_errors += self.socket.send(&mut self.send);
                let n = self
                    .socket
                    .recv(&mut self.recv, true)
                    .map_err(|e| format!("receive: {e}"))?;
                for k in 0..n {
                    let (local, from, bytes) = self.recv.get(k);
                    let Some(i) = local.and_then(|a| CLIENTS.index(a)).filter(|&i| i < p) else {
                        continue;
                    };
                    if from != server.addr {
                        continue;
                    }
                    let enow = self.engine_now(Instant::now());
                    self.clients[i].endpoint.handle_datagram(enow, peer, bytes);
                    self.service(i, peer, &mut tally);
                }
            }
            // Requests still unanswered (lost, or the server is stuck) end here.
            let enow = self.engine_now(Instant::now());
            let mut unanswered = 0;
            for client in &mut self.clients[..p] {
                unanswered += client.in_flight.len() as u64;
                client.in_flight.clear();
                // The server is stopped after each run: forget it (ending what is in flight).
                let _ = client.endpoint.close_session(enow, peer);
                while client.endpoint.poll_event().is_some() {}
                while client.endpoint.poll_transmit().is_some() {}
            }
            Ok(tally.finish(unanswered, socket_drops(server.addr) - drops_before))
        }
    }

    /// The load generator of `-s coap+tcp` and `-s coaps+tcp`: one connection per client.
    mod streams {
        use super::*;

        /// Tokens per client in the shared poll: its driver's listener slot (unused) and
        /// its one connection, with room to spare.
        const TOKEN_BITS: usize = 2;
        /// Clients started per millisecond: libcoap's server listens with a backlog of 5.
        const RAMP_PER_MS: usize = 1;

        struct Client {
            driver: StreamDriver,
            in_flight: Vec<(RequestId, Instant)>,
            /// It had an answer: its connection (and handshake) is done.
            answered: bool,
            /// Already in this turn's list of clients to service.
            touched: bool,
        }

        /// Sends a GET from `client` to `server`.
        fn issue(client: &mut Client, server: SocketAddr, get: &Packet, tally: &mut Tally) {
            let t = Instant::now();
            match client.driver.request(server, get) {
                Ok(id) => client.in_flight.push((id, t)),
                Err(e) => {
                    tally.failures += 1;
                    eprintln!("{PROG}: request refused: {e}");
                }
            }
        }

        /// Runs `p` clients with `w` requests each in flight against `server`.
        pub(super) fn load(
            server: &Server,
            config: &Config,
            p: usize,
            w: usize,
            secs: f64,
        ) -> Result<Run, String> {
            let peer = SocketAddr::V4(server.addr);
            let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
            let mut clients = Vec::with_capacity(p);
            for i in 0..p {
                let mut driver = StreamDriver::new(config.clone())
                    .map_err(|e| format!("bad client config: {e}"))?;
                let first = i << TOKEN_BITS;
                driver
                    .register(
                        poll.registry(),
                        Token(first)..Token(first + (1 << TOKEN_BITS)),
                    )
                    .map_err(|e| format!("register: {e}"))?;
                clients.push(Client {
                    driver,
                    in_flight: Vec::with_capacity(w),
                    answered: false,
                    touched: false,
                });
            }
            let mut get = Packet::new();
            get.header.code = MessageClass::Request(RequestType::Get);
            let mut tally = Tally::new(server, secs);
            let mut events = Events::with_capacity(1024);
            let mut touched = Vec::with_capacity(p);
            let mut last_sweep = Instant::now();
            // Give up if the clients never all get an answer (the server is stuck).
            let connect_limit = Instant::now() + Duration::from_secs(30);
            loop {
                let now = Instant::now();
                // Ready once every client has connected and had an answer.
                if tally.started == p && clients.iter().all(|c| c.answered) {
                    tally.ready(now);
                }
                if !tally.is_ready() && now > connect_limit {
                    return Err(format!(
                        "{} of {p} clients never got an answer",
                        clients.iter().filter(|c| !c.answered).count()
                    ));
                }
                if tally.advance(now, || clients.iter().all(|c| c.in_flight.is_empty())) {
                    break;
                }
                // Start clients at a bounded pace, W requests each (the first connects).
                for i in tally.start(now, RAMP_PER_MS, p) {
                    for _ in 0..w {
                        issue(&mut clients[i], peer, &get, &mut tally);
                    }
                }
                poll.poll(&mut events, Some(Duration::from_millis(1)))
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::Interrupted => Ok(()),
                        _ => Err(format!("poll: {e}")),
                    })?;
                for event in events.iter() {
                    let i = event.token().0 >> TOKEN_BITS;
                    if let Some(client) = clients.get_mut(i) {
                        client.driver.handle_event(event);
                        if !client.touched {
                            client.touched = true;
                            touched.push(i);
                        }
                    }
                }
                if now.duration_since(last_sweep) >= SWEEP {
                    // Engine timers and connect deadlines of every client.
                    last_sweep = now;
                    for (i, client) in clients.iter_mut().enumerate() {
                        if !client.touched {
                            client.touched = true;
                            touched.push(i);
                        }
                    }
                }
                for i in touched.drain(..) {
                    let client = &mut clients[i];
                    client.touched = false;
                    // The next requests leave in one write per client, not one each.
                    client.driver.cork();
                    client.driver.handle_timeout();
                    while let Some(event) = client.driver.poll_event() {
                        let (id, ok) = match event {
                            Event::Response { id, .. } => (id, true),
                            Event::RequestFailed { id, error, .. } => {
                                eprintln!("{PROG}: request failed: {error}");
                                (id, false)
                            }
                            _ => continue,
                        };
                        let Some(k) = client.in_flight.iter().position(|(r, _)| *r == id) else {
                            continue;
                        };
                        let (_, sent) = client.in_flight.swap_remove(k);
                        client.answered |= ok;
                        tally.ended(sent, ok);
                        if tally.running {
                            issue(client, peer, &get, &mut tally);
                        }
                    }
                    client.driver.uncork();
                }
            }
            let mut unanswered = 0;
            for client in &mut clients {
                unanswered += client.in_flight.len() as u64;
                // A Release, then the connection's end.
                let now = client.driver.now();
                let _ = client.driver.endpoint_mut().close_session(now, peer);
                client.driver.drive();
            }
            // A stream loses nothing: what the server cannot take waits in its kernel.
            Ok(tally.finish(unanswered, 0))
        }
    }

    /// The load generator a run uses.
    enum Load {
        /// `coap://`: hand-built requests, no engine (`src/bench/loadgen.rs`).
        Raw(crate::loadgen::Loadgen),
        /// `coaps://`, or `coap://` with `-g engine`: one engine per client.
        Engine(Generator),
        /// `coap+tcp://`, `coaps+tcp://`: one stream driver per client.
        Streams,
    }

    /// The cores servers and the generator are pinned to.
    const SERVER_CPU: usize = 0;
    const GENERATOR_CPU: usize = 1;

    /// Pins process `pid` (0: this one) to `cpu`; whether that worked.
    fn pin(pid: u32, cpu: usize) -> bool {
        use nix::sched::{sched_setaffinity, CpuSet};
        let mut set = CpuSet::new();
        set.set(cpu).is_ok()
            && sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set).is_ok()
    }

    /// `net.core.rmem_default` raised for the runs, put back when dropped. The servers
    /// measured (libcoap's included) take the default receive buffer; at the default of
    /// 212,992 bytes a socket holds about 256 requests and the kernel drops the rest, whose
    /// clients then wait seconds to retransmit.
    struct RmemDefault {
        old: Option<String>,
    }

    const RMEM_DEFAULT: &str = "/proc/sys/net/core/rmem_default";

    impl RmemDefault {
        /// Raises the default to `bytes` if it is lower (and this process may).
        fn raise(bytes: usize, in_flight: usize) -> RmemDefault {
            let old = std::fs::read_to_string(RMEM_DEFAULT).ok();
            let current = old.as_deref().and_then(|v| v.trim().parse::<usize>().ok());
            if current.is_some_and(|c| c >= bytes) {
                return RmemDefault { old: None };
            }
            match std::fs::write(RMEM_DEFAULT, bytes.to_string()) {
                Ok(()) => {
                    eprintln!(
                        "net.core.rmem_default: {} → {bytes} bytes for the runs (-b)",
                        current.map_or("?".to_string(), |c| c.to_string())
                    );
                    RmemDefault { old }
                }
                Err(e) => {
                    eprintln!(
                        "{PROG}: cannot raise net.core.rmem_default to {bytes} ({e}): the \
                         servers keep {} bytes of receive buffer, about {} of the {in_flight} \
                         requests in flight; drops are reported",
                        current.map_or("?".to_string(), |c| c.to_string()),
                        current.unwrap_or(0) / 832,
                    );
                    RmemDefault { old: None }
                }
            }
        }
    }

    impl Drop for RmemDefault {
        fn drop(&mut self) {
            if let Some(old) = &self.old {
                if std::fs::write(RMEM_DEFAULT, old.trim()).is_err() {
                    eprintln!("{PROG}: could not restore net.core.rmem_default to {old}");
                }
            }
        }
    }

    /// Every simulated client's configuration: W requests in flight.
    fn client_config(
        nstart: usize,
        security: Option<coap_engine::Security>,
        stream: bool,
    ) -> Config {
        Config {
            transmission: TransmissionParameters {
                nstart,
                ..TransmissionParameters::default()
            },
            limits: Limits {
                max_exchanges: nstart.max(Limits::default().max_exchanges),
                ..Limits::default()
            },
            security,
            transport: if stream {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            ..Config::default()
        }
    }

    /// `-M n`: memory per idle session of both servers, `r` fresh processes each.
    fn session_memory(ours: &str, n: usize, r: usize) -> Result<bool, String> {
        // Room for every peer, and for the generator's address if it counts as one.
        let cap = (n + 16).to_string();
        let servers = [
            ("coap-engine coap-server", ours, vec!["-x".to_string(), cap]),
            ("libcoap coap-server-notls", "coap-server-notls", Vec::new()),
        ];
        let mut per_session = vec![Vec::new(); servers.len()];
        let mut complete = true;
        for round in 0..r {
            for (s, (name, program, args)) in servers.iter().enumerate() {
                let f = crate::memory::measure(program, args, n, "time")?;
                complete &= f.answered == n;
                eprintln!(
                    "round {round}: {name:<26} {} of {n} sessions answered in {:.1} s, \
                     RSS {} → {} KiB: {:.0} bytes per session",
                    f.answered,
                    f.elapsed.as_secs_f64(),
                    f.rss_before / 1024,
                    f.rss_after / 1024,
                    f.per_session(),
                );
                per_session[s].push(f.per_session());
            }
        }
        println!(
            "
{n} idle sessions (one GET /time each), RSS delta, medians of {r} runs"
        );
        println!("| server | bytes per session |");
        println!("| --- | --- |");
        for (s, (name, ..)) in servers.iter().enumerate() {
            println!("| {name} | {:.0} |", median(per_session[s].clone()));
        }
        if !complete {
            eprintln!(
                "{PROG}: a server did not answer every peer within {} s; its figure is per \
                 session it reached",
                crate::memory::LIMIT.as_secs()
            );
        }
        Ok(complete)
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        if v.len() % 2 == 0 {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        }
    }

    /// `-P`/`-W`: a comma-separated list of counts.
    fn list(flag: char, value: &str) -> Result<Vec<usize>, String> {
        value
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=60_000).contains(n))
                    .ok_or_else(|| format!("-{flag}: {v:?} is not a number in 1..60000"))
            })
            .collect()
    }

    /// `-D`, `-R`, `-M`: a number greater than 0, at most `max`.
    fn number(flag: char, value: &str, max: f64) -> Result<f64, String> {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && *v <= max)
            .ok_or_else(|| format!("-{flag}: bad number {value:?}"))
    }

    /// The command line's settings; see the module documentation.
    struct Flags {
        key: Option<String>,
        identity: Option<String>,
        scheme: Option<String>,
        cert: Option<String>,
        cert_key: Option<String>,
        ca: Option<String>,
        ps: Vec<usize>,
        ws: Vec<usize>,
        d: f64,
        r: usize,
        sessions: Option<usize>,
        /// `-E`: serve as a raw echo server, batched or not.
        echo: Option<bool>,
        listen: Option<String>,
        engine_generator: bool,
        rmem: Option<usize>,
        /// `-p`: our coap-server, or with `-E` the port to serve on.
        ours: Option<String>,
    }

    fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Flags, String> {
        use cli::Arg::Short;
        let mut f = Flags {
            key: None,
            identity: None,
            scheme: None,
            cert: None,
            cert_key: None,
            ca: None,
            ps: vec![16],
            ws: vec![4],
            d: 3.0,
            r: 3,
            sessions: None,
            echo: None,
            listen: None,
            engine_generator: false,
            rmem: Some(4 << 20),
            ours: None,
        };
        let mut p = cli::parser(args);
        while let Some(arg) = p.next().map_err(cli::message)? {
            match arg {
                Short('P') => f.ps = list('P', &cli::value(&mut p)?)?,
                Short('W') => f.ws = list('W', &cli::value(&mut p)?)?,
                Short('D') => f.d = number('D', &cli::value(&mut p)?, 60.0)?,
                Short('R') => f.r = number('R', &cli::value(&mut p)?, 100.0)? as usize,
                Short('M') => {
                    f.sessions = Some(number('M', &cli::value(&mut p)?, 16_000_000.0)? as usize)
                }
                Short('p') => f.ours = Some(cli::value(&mut p)?),
                Short('k') => f.key = Some(cli::value(&mut p)?),
                Short('u') => f.identity = Some(cli::value(&mut p)?),
                Short('s') => f.scheme = Some(cli::value(&mut p)?),
                Short('c') => f.cert = Some(cli::value(&mut p)?),
                Short('j') => f.cert_key = Some(cli::value(&mut p)?),
                Short('C') => f.ca = Some(cli::value(&mut p)?),
                Short('A') => f.listen = Some(cli::value(&mut p)?),
                Short('E') => match cli::value(&mut p)?.as_str() {
                    "batched" => f.echo = Some(true),
                    "single" => f.echo = Some(false),
                    _ => return Err("-E: batched or single".into()),
                },
                Short('g') => match cli::value(&mut p)?.as_str() {
                    "raw" => f.engine_generator = false,
                    "engine" => f.engine_generator = true,
                    _ => return Err("-g: raw or engine".into()),
                },
                Short('b') => {
                    f.rmem = match cli::value(&mut p)?.parse::<usize>() {
                        Ok(0) => None,
                        Ok(n) if n <= 1 << 30 => Some(n),
                        _ => return Err("-b: a byte count up to 1 GiB, or 0".into()),
                    }
                }
                // Everything is a flag: a stray argument is a mistake, said so.
                _ => return Err(cli::unexpected(arg)),
            }
        }
        Ok(f)
    }

    pub fn main() {
        let code = match run() {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("{PROG}: {e}");
                1
            }
        };
        // Only now: the servers were killed when `run` returned.
        std::process::exit(code)
    }

    /// Parses the flags, starts both servers and measures; whether every request succeeded.
    fn run() -> Result<bool, String> {
        let Flags {
            key,
            identity,
            scheme,
            cert,
            cert_key,
            ca,
            ps,
            ws,
            d,
            r,
            sessions,
            echo,
            listen,
            engine_generator,
            rmem,
            ours,
        } = parse_args(cli::args()).unwrap_or_else(|e| cli::usage_error(PROG, e));
        let ours = ours.unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .with_file_name("coap-server")
                .to_string_lossy()
                .into_owned()
        });
        if let Some(batched) = echo {
            // A server of our own making: `-A` and `-p` are its address and port here.
            let ip = listen
                .as_deref()
                .unwrap_or("127.0.0.1")
                .parse::<Ipv4Addr>()
                .unwrap_or_else(|_| cli::usage_error(PROG, "-A: an IPv4 address"));
            let port = ours
                .parse::<u16>()
                .unwrap_or_else(|_| cli::usage_error(PROG, "-E takes -p port"));
            crate::echo::serve(SocketAddrV4::new(ip, port), batched)?;
            return Ok(false);
        }
        if let Some(n) = sessions {
            return session_memory(&ours, n, r);
        }
        let pairs: Vec<(usize, usize)> = match (ps.len(), ws.len()) {
            (a, b) if a == b => ps.into_iter().zip(ws).collect(),
            (1, _) => ws.into_iter().map(|w| (ps[0], w)).collect(),
            (_, 1) => ps.into_iter().map(|p| (p, ws[0])).collect(),
            _ => cli::usage_error(PROG, "-P and -W lists must have the same length"),
        };
        let max_p = pairs.iter().map(|&(p, _)| p).max().unwrap_or(1);
        let max_w = pairs.iter().map(|&(_, w)| w).max().unwrap_or(1);
        let mode = match (scheme.as_deref(), &key) {
            (None, None) | (Some("coap"), None) => Mode::Udp,
            (None, Some(_)) | (Some("coaps"), _) => Mode::Dtls,
            (Some("coap+tcp"), None) => Mode::Tcp,
            (Some("coaps+tcp"), None) => Mode::Tls,
            (Some(s), Some(_)) if s.ends_with("tcp") => {
                cli::usage_error(PROG, "-k/-u are for coaps (DTLS); TLS takes -c -j -C")
            }
            (Some(s), _) => cli::usage_error(
                PROG,
                format!("-s {s:?}: coap, coaps, coap+tcp or coaps+tcp"),
            ),
        };
        let mut server_args = Vec::new();
        let security = match mode {
            Mode::Udp | Mode::Tcp => None,
            Mode::Dtls => {
                let (Some(key), Some(identity)) = (&key, &identity) else {
                    cli::usage_error(PROG, "-k and -u go together (a PSK and its identity)")
                };
                server_args.extend(["-k".to_string(), key.clone()]);
                let dtls = coap_engine::dtls::DtlsConfig {
                    psk: Some(coap_engine::dtls::PskCredentials {
                        identity: identity.as_bytes().to_vec(),
                        key: key.as_bytes().to_vec(),
                    }),
                    ..Default::default()
                };
                let dtls = coap_engine::dtls::Dtls::new(dtls, coap_engine_mio::dtls_entropy())
                    .map_err(|e| format!("-k/-u: {e}"))?;
                Some(coap_engine::Security::new(dtls))
            }
            Mode::Tls => {
                let (Some(cert), Some(cert_key), Some(ca)) = (&cert, &cert_key, &ca) else {
                    cli::usage_error(
                        PROG,
                        "-s coaps+tcp needs -c certfile -j keyfile (the servers') and -C \
                         cafile (its issuer, trusted by the clients)",
                    )
                };
                server_args.extend(["-c", cert, "-j", cert_key].map(String::from));
                let tls = coap_engine::tls::TlsConfig {
                    trust_anchors: cli::load_trust_anchors(&[('C', ca.clone())])?,
                    ..Default::default()
                };
                let tls = coap_engine::tls::Tls::new(tls, coap_engine_mio::security_entropy())
                    .map_err(|e| format!("-C: {e}"))?;
                Some(coap_engine::Security::new(tls))
            }
        };
        let ours_as = |name: &str| (name.to_string(), ours.clone(), server_args.clone());
        let libcoap_as = |name: &str, program: &str| {
            (name.to_string(), program.to_string(), server_args.clone())
        };
        let mut servers: Vec<(String, String, Vec<String>)> = match mode {
            Mode::Udp => vec![
                ours_as("coap-engine coap-server"),
                libcoap_as("libcoap coap-server-notls", "coap-server-notls"),
            ],
            Mode::Dtls => vec![
                ours_as("coap-engine coap-server (DTLS)"),
                libcoap_as("libcoap coap-server-openssl", "coap-server-openssl"),
            ],
            Mode::Tcp => vec![
                ours_as("coap-engine coap-server (TCP)"),
                libcoap_as("libcoap coap-server-notls (TCP)", "coap-server-notls"),
            ],
            Mode::Tls => vec![
                ours_as("coap-engine coap-server (TLS)"),
                libcoap_as("libcoap coap-server-openssl (TLS)", "coap-server-openssl"),
            ],
        };
        if mode == Mode::Udp {
            // The physical limit: this program as a server that does no CoAP work.
            let me = std::env::current_exe()
                .map_err(|e| format!("cannot find this program: {e}"))?
                .to_string_lossy()
                .into_owned();
            for (name, kind) in [("raw echo, batched", "batched"), ("raw echo", "single")] {
                let args = vec!["-E".to_string(), kind.to_string()];
                servers.push((name.to_string(), me.clone(), args));
            }
        }
        // Server and generator each on a core of their own, so neither takes the other's.
        let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
            && pin(0, GENERATOR_CPU);
        // Room in every server's socket for every request in flight (restored on return).
        let _rmem = rmem.map(|bytes| RmemDefault::raise(bytes, max_p * max_w));
        let config = client_config(max_w, security.clone(), mode.stream());
        let mut generator = match mode {
            Mode::Tcp | Mode::Tls => Load::Streams,
            Mode::Udp if !engine_generator => Load::Raw(crate::loadgen::Loadgen::new(max_p)?),
            Mode::Udp | Mode::Dtls => Load::Engine(Generator::new(max_p, config.clone())?),
        };
        if let Load::Raw(g) = &generator {
            eprintln!(
                "generator: {} clients, raw CoAP on one socket, requests {}",
                max_p,
                if g.batched_sends() {
                    "batched through a raw socket"
                } else {
                    "one sendmsg each (no CAP_NET_RAW)"
                }
            );
        }
        if pinned {
            eprintln!("pinned: servers to CPU {SERVER_CPU}, generator to CPU {GENERATOR_CPU}");
        }
        // results[pair][server][round]
        let mut results: Vec<Vec<Vec<Run>>> = pairs
            .iter()
            .map(|_| servers.iter().map(|_| Vec::new()).collect())
            .collect();
        for round in 0..r {
            for (k, &(p, w)) in pairs.iter().enumerate() {
                for (s, (name, program, args)) in servers.iter().enumerate() {
                    // A fresh server per run: no run inherits another's sessions.
                    let server = spawn(program, mode, args)?;
                    if pinned && !pin(server.child.id(), SERVER_CPU) {
                        eprintln!("{PROG}: could not pin {name} to CPU {SERVER_CPU}");
                    }
                    let run = match &mut generator {
                        Load::Raw(generator) => generator.load(&server, p, w, d)?,
                        Load::Engine(generator) => generator.load(&server, p, w, d)?,
                        Load::Streams => streams::load(&server, &config, p, w, d)?,
                    };
                    let mut trouble = String::new();
                    if run.failures > 0 {
                        trouble += &format!("  {} requests failed", run.failures);
                    }
                    if run.server_drops > 0 {
                        trouble += &format!("  server socket dropped {}", run.server_drops);
                    }
                    if run.unanswered > 0 {
                        trouble += &format!("  {} still unanswered after it", run.unanswered);
                    }
                    eprintln!(
                        "round {round}: P={p} W={w} {:<26} {:>9.0} resp/s  p50 {:?}  p99 {:?}  \
                         cpu: server {:.0} %, generator {:.0} %{trouble}",
                        name,
                        run.rate,
                        run.p50,
                        run.p99,
                        run.server_cpu * 100.0,
                        run.generator_cpu * 100.0,
                    );
                    results[k][s].push(run);
                }
            }
        }
        let send_errors = match &generator {
            Load::Raw(g) => g.send_errors,
            Load::Engine(g) => g.send_errors,
            Load::Streams => 0,
        };
        if let Some(errors) = Some(send_errors).filter(|n| *n > 0) {
            eprintln!("{PROG}: {errors} datagrams could not be sent");
        }
        for (k, &(p, w)) in pairs.iter().enumerate() {
            println!("\nP={p} W={w} D={d}s, medians of {r} runs");
            println!("| server | responses/s | p50 | p99 | server CPU | generator CPU |");
            println!("| --- | --- | --- | --- | --- | --- |");
            for (s, server) in servers.iter().enumerate() {
                let runs = &results[k][s];
                let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
                println!(
                    "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} % | {:.0} % |",
                    server.0,
                    m(&|x| x.rate),
                    m(&|x| x.p50.as_secs_f64() * 1e6),
                    m(&|x| x.p99.as_secs_f64() * 1e6),
                    m(&|x| x.server_cpu * 100.0),
                    m(&|x| x.generator_cpu * 100.0),
                );
            }
            let ratio = |to: usize| {
                median(
                    (0..r)
                        .map(|i| results[k][0][i].rate / results[k][to][i].rate.max(1e-9))
                        .collect(),
                )
            };
            println!(
                "ratio (ours / libcoap, median of per-round ratios): {:.2}",
                ratio(1)
            );
            if servers.len() > 2 {
                println!(
                    "ratio (ours / raw echo, batched; median of per-round ratios): {:.2}",
                    ratio(2)
                );
            }
        }
        for (k, &(p, w)) in pairs.iter().enumerate().skip(1) {
            let (p0, w0) = pairs[0];
            println!(
                "\nrate at P={p} W={w} relative to P={p0} W={w0} (median of per-round ratios):"
            );
            for (s, server) in servers.iter().enumerate() {
                let change = median(
                    (0..r)
                        .map(|i| results[k][s][i].rate / results[0][s][i].rate.max(1e-9))
                        .collect(),
                );
                println!(
                    "  {:<26} {change:.2} ({:+.1} %)",
                    server.0,
                    (change - 1.0) * 100.0
                );
            }
        }
        let all = results.iter().flatten().flatten();
        let failures: u64 = all.map(|x| x.failures).sum();
        if failures > 0 {
            eprintln!("{PROG}: {failures} requests failed");
        }
        Ok(failures == 0)
    }

    #[cfg(test)]
    mod tests {
        use std::ffi::OsString;

        use super::{parse_args, Flags};

        fn parse(args: &[&str]) -> Result<Flags, String> {
            parse_args(args.iter().map(OsString::from).collect())
        }

        #[test]
        fn values_come_joined_or_separate_as_with_libcoaps_getopt() {
            for args in [
                &["-P16,64", "-W4,8", "-D3", "-R5", "-sCoap+tcp"][..],
                &[
                    "-P", "16,64", "-W", "4,8", "-D", "3", "-R", "5", "-s", "Coap+tcp",
                ],
            ] {
                let f = parse(args).unwrap();
                assert_eq!((f.ps, f.ws), (vec![16, 64], vec![4, 8]), "{args:?}");
                assert_eq!((f.d, f.r), (3.0, 5), "{args:?}");
                assert_eq!(f.scheme.as_deref(), Some("Coap+tcp"), "{args:?}");
            }
            let f = parse(&["-Ebatched", "-p", "-", "-b0", "-gengine"]).unwrap();
            assert_eq!(f.echo, Some(true));
            assert_eq!(f.ours.as_deref(), Some("-"), "a value may start with -");
            assert_eq!(f.rmem, None);
            assert!(f.engine_generator);
        }

        #[test]
        fn command_line_errors_are_one_line_naming_the_flag() {
            for (args, want) in [
                (&["-q"][..], "unknown option -q"),
                (&["--rounds", "3"], "unknown option --rounds"),
                (&["-P"], "option -P needs an argument"),
                (&["-D", "0"], "-D: bad number \"0\""),
                (&["-R", "many"], "-R: bad number \"many\""),
                (&["-P", "16,x"], "-P: \"x\" is not a number in 1..60000"),
                (&["-E", "sideways"], "-E: batched or single"),
                // coap-bench takes no positional argument, before `--` or after.
                (&["127.0.0.1"], "unexpected argument \"127.0.0.1\""),
                (&["--", "-R"], "unexpected argument \"-R\""),
            ] {
                assert_eq!(parse(args).err().as_deref(), Some(want), "{args:?}");
            }
        }
    }
}
