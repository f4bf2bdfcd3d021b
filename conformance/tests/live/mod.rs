//! LIVE_01–04 for real (LIVE_04's client observes `/time` with `-s`; LIVE_06, the same over
//! DTLS, in `dtls.rs`; LIVE_05, over TCP and TLS on loopback, in `tcp.rs`). Two network
//! namespaces created by the case, joined by a veth pair (addresses only inside them), a server
//! in one, a client with `-K 1` in the other; mid-session the path dies: LIVE_02 takes the
//! client's link down (its `sendto()` then fails with ENETUNREACH), LIVE_01 freezes the server
//! (SIGSTOP: packets vanish). Needs root and iproute2 (`ip`): the case fails, never skips,
//! without them.
//!
//! Nothing is inferred from a sleep: every frame crossing the server's end of the veth pair is
//! captured (`capture.rs`), and the path dies only once the capture shows what the scenario
//! needs (the request's Empty ACK and a keepalive ping answered; a notification acknowledged),
//! or once a log line shows it. The bounds under test are measured from that cut.
//!
//! - ours → libcoap: our `coap-client -K 1` against `coap-server-notls`; it must report a
//!   keepalive failure and exit non-zero within interval + timeout (2 s) of the last packet it
//!   heard (checked against the moment the path died, which is later than that packet).
//! - libcoap → ours: `coap-client-notls -K 1 -B 6` against our `coap-server` in the same
//!   scenario; what libcoap does is recorded (exit status, time, what it printed), not judged.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coap_engine_conformance::{libcoap, ours, run_command};

use crate::{Case, Dir};
use capture::{Capture, Frame, ACK, CON, RST};

mod capture;
mod dtls;
mod tcp;
pub use dtls::cases as dtls_cases;
pub use tcp::cases as tcp_cases;

const KEEPALIVE_S: u64 = 1;
/// interval + timeout for `-K 1` (both tools: a ping after K s of silence, failure after K more).
const BOUND: Duration = Duration::from_secs(2 * KEEPALIVE_S);
/// Timer resolution, process exit and a loaded CI machine, on top of the bound.
const SLACK: Duration = Duration::from_millis(750);
/// How long what a scenario needs before its cut (an answer, a ping exchanged, notifications)
/// is waited for from the client's start: generous, since a loaded machine may be slow to get
/// there; no bound under test is measured from the start.
const SETTLE: Duration = Duration::from_secs(15);
/// How long a client may take to exit after the cut before it is killed (and the case fails).
const EXIT_LIMIT: Duration = Duration::from_secs(15);
const CLIENT_ADDR: &str = "10.231.0.1";
const SERVER_ADDR: &str = "10.231.0.2";

fn verbose() -> bool {
    std::env::var_os("CONFORMANCE_VERBOSE").is_some()
}

// ---------------------------------------------------------------------------------------------
// Processes whose output lines carry their arrival times

/// One line a process printed, when it was read, and whether on stderr.
#[derive(Clone)]
struct Line {
    at: Instant,
    err: bool,
    text: String,
}

type Lines = Arc<Mutex<Vec<Line>>>;

/// A process whose stdout and stderr lines are recorded with their arrival time; SIGCONTed,
/// killed and reaped on drop.
struct Proc {
    child: Child,
    name: String,
    started: Instant,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(program: &Path, args: &[&str]) -> Proc {
        Proc::spawn_command(Command::new(program), program, args)
    }

    /// [`Proc::spawn`] with a prepared command (e.g. `ip netns exec NS program`).
    fn spawn_command(mut cmd: Command, program: &Path, args: &[&str]) -> Proc {
        use std::io::BufRead;
        let started = Instant::now();
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let lines: Lines = Arc::new(Mutex::new(Vec::new()));
        let outs: [(bool, Box<dyn std::io::Read + Send>); 2] = [
            (false, Box::new(child.stdout.take().expect("piped stdout"))),
            (true, Box::new(child.stderr.take().expect("piped stderr"))),
        ];
        let mut readers = Vec::new();
        for (err, from) in outs {
            let sink = lines.clone();
            readers.push(std::thread::spawn(move || {
                for text in std::io::BufReader::new(from).lines() {
                    let Ok(text) = text else { break };
                    let at = Instant::now();
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Line { at, err, text });
                }
            }));
        }
        Proc {
            child,
            name: format!("{} {}", program.display(), args.join(" ")),
            started,
            lines,
            readers,
        }
    }

    fn snapshot(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn text(&self) -> String {
        let lines: String = self.snapshot().into_iter().map(|l| l.text + "\n").collect();
        format!("--- {}\n{lines}", self.name)
    }

    /// The `n`th line (from 1) for which `pred` holds, waited for until `deadline`.
    fn wait_nth(
        &self,
        n: usize,
        deadline: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        loop {
            if let Some(l) = self
                .snapshot()
                .into_iter()
                .filter(|l| pred(&l.text))
                .nth(n - 1)
            {
                return Some((l.at, l.text));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first line containing `needle`, waited for until `deadline`.
    fn wait_line(&self, needle: &str, deadline: Instant) -> Option<(Instant, String)> {
        self.wait_nth(1, deadline, |l| l.contains(needle))
    }

    /// Waits until `n` lines contain `needle`; false at `deadline`.
    fn wait_count(&self, needle: &str, n: usize, deadline: Instant) -> bool {
        self.wait_nth(n, deadline, |l| l.contains(needle)).is_some()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP: the process stops; its sockets stay open and its kernel keeps acknowledging.
    /// Returns the moment the signal was sent, once the kernel reports the process stopped.
    fn freeze(&self) -> Instant {
        self.signal(libc::SIGSTOP);
        let at = Instant::now();
        let stat = format!("/proc/{}/stat", self.child.id());
        let deadline = at + Duration::from_secs(5);
        loop {
            // `pid (comm) STATE ...`: the state follows the last `)`.
            let state = std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
                .flatten();
            if matches!(state, Some('T' | 't')) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "{} not stopped 5 s after SIGSTOP (state {state:?})",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL: the kernel closes its sockets (a FIN, or a RST where unread data was left).
    fn kill9(&mut self) -> Instant {
        let _ = self.child.kill();
        let at = Instant::now();
        let _ = self.child.wait();
        at
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit until `deadline`: its status and when it was seen.
    fn wait_exit(&mut self, deadline: Instant) -> Option<(ExitStatus, Instant)> {
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some((s, Instant::now()));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the exit until `deadline` (then kills it) and returns the whole run, its
    /// output complete.
    fn finish(mut self, cut: Instant, alive_at_cut: bool, deadline: Instant) -> Timed {
        let exit = self.wait_exit(deadline);
        let ended = exit.map_or_else(Instant::now, |(_, at)| at);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Timed {
            status: exit.map(|(s, _)| s),
            lines: self.snapshot(),
            started: self.started,
            cut,
            alive_at_cut,
            ended,
            name: self.name.clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A client run to its end around the moment its path died (the cut).
struct Timed {
    /// `None` when it was killed at the limit.
    status: Option<ExitStatus>,
    lines: Vec<Line>,
    started: Instant,
    cut: Instant,
    /// Seen still running right before the cut.
    alive_at_cut: bool,
    ended: Instant,
    name: String,
}

impl Timed {
    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| {
                format!(
                    "{:7.3}s {}{}\n",
                    l.at.saturating_duration_since(self.started).as_secs_f64(),
                    if l.err { "" } else { "[stdout] " },
                    l.text
                )
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{}: status {:?} after {:.2} s, path cut at {:.2} s (running then: {})\n--- output (timed)\n{}",
            self.name,
            self.status,
            (self.ended - self.started).as_secs_f64(),
            (self.cut - self.started).as_secs_f64(),
            self.alive_at_cut,
            self.text()
        )
    }

    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn find(&self, needle: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }

    fn stderr(&self) -> String {
        self.lines
            .iter()
            .filter(|l| l.err)
            .map(|l| l.text.clone() + "\n")
            .collect()
    }

    /// stdout, then stderr.
    fn output(&self) -> String {
        let out: String = self
            .lines
            .iter()
            .filter(|l| !l.err)
            .map(|l| l.text.clone() + "\n")
            .collect();
        out + &self.stderr()
    }

    /// The time from the cut to the exit.
    fn after_cut(&self) -> Duration {
        self.ended.saturating_duration_since(self.cut)
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.text.as_str())
    }

    /// The exit status for a note.
    fn exit_note(&self) -> String {
        self.code()
            .map_or("none (killed)".into(), |c| c.to_string())
    }

    /// Our client's verdict: it exited with status 3 and a keepalive failure on stderr, whose
    /// line is returned.
    #[track_caller]
    fn keepalive_exit(&self) -> String {
        let d = self.describe();
        assert!(
            self.status.is_some(),
            "our client did not exit within {EXIT_LIMIT:?} after the path died\n{d}"
        );
        assert_eq!(
            self.code(),
            Some(3),
            "exit status 3 (no response) expected\n{d}"
        );
        self.lines
            .iter()
            .find(|l| l.err && l.text.contains("keepalive failure"))
            .unwrap_or_else(|| panic!("no keepalive failure reported\n{d}"))
            .text
            .trim()
            .to_string()
    }
}

/// The first of `lines` holding a keepalive failure or timeout, quoted; `none` without one.
fn keepalive_event<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    lines
        .into_iter()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("keepalive") && (l.contains("fail") || l.contains("timeout"))
        })
        .map_or("none".into(), |l| format!("`{}`", l.trim()))
}

/// What follows the last `sep` in the first of `lines` containing `needle`, quoted; `none`
/// without one.
fn logged<'a>(lines: impl IntoIterator<Item = &'a str>, needle: &str, sep: &str) -> String {
    lines
        .into_iter()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split(sep).last())
        .map_or("none".into(), |l| format!("`{}`", l.trim()))
}

/// Whether libcoap's client ended through its own `-B` deadline (`INFO timeout`).
fn gave_up<'a>(lines: impl IntoIterator<Item = &'a str>) -> &'static str {
    if lines
        .into_iter()
        .any(|l| l.trim_end().ends_with("INFO timeout"))
    {
        "yes"
    } else {
        "no"
    }
}

// ---------------------------------------------------------------------------------------------
// Two namespaces

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "the LIVE cases need root and iproute2 (Debian package iproute2): cannot run `ip`: {e}"
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (the LIVE cases need root and iproute2): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair (`cva` on the client's side, `cvb` on the server's);
/// deleted on drop (after the processes in them, which are dropped first).
struct Netns {
    client_ns: String,
    server_ns: String,
}

impl Netns {
    fn new() -> Netns {
        let tag = format!("cconf{}", std::process::id());
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        for ns in [&a, &b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        ip(&["netns", "add", &a]);
        let mut n = Netns {
            client_ns: a.clone(),
            server_ns: String::new(),
        };
        ip(&["netns", "add", &b]);
        n.server_ns = b.clone();
        for ns in [&a, &b] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &a, "link", "add", "cva", "type", "veth", "peer", "name", "cvb", "netns", &b,
        ]);
        for (ns, dev, addr) in [(&a, "cva", CLIENT_ADDR), (&b, "cvb", SERVER_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        n
    }

    fn exec(ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts a server in the server namespace (its output recorded; `ip netns exec` execs
    /// the program, so the pid is the server's) and waits until our client, from the client
    /// namespace, gets an answer from it.
    fn start_server(&self, program: &Path, args: &[&str]) -> Proc {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-A", SERVER_ADDR, "-p", "5683"]);
        let mut server = Proc::spawn_command(Netns::exec(&self.server_ns, program), program, &all);
        let client = ours("coap-client");
        let uri = format!("coap://{SERVER_ADDR}/");
        for _ in 0..50 {
            let r = run_command(
                Netns::exec(&self.client_ns, &client),
                &client,
                &["-B", "1", &uri],
                Duration::from_secs(5),
            );
            if r.code() == Some(0) {
                return server;
            }
            if !server.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} never answered across the veth pair\n{}",
            program.display(),
            server.text()
        );
    }

    /// Starts `program args` in the client namespace, its output recorded.
    fn spawn_client(&self, program: &Path, args: &[&str]) -> Proc {
        Proc::spawn_command(Netns::exec(&self.client_ns, program), program, args)
    }

    fn cut_client_link(&self) -> Instant {
        ip(&["-n", &self.client_ns, "link", "set", "cva", "down"]);
        Instant::now()
    }

    /// Runs `program args` in the client namespace; once `ready` has seen what the scenario
    /// needs (it panics if that never comes), kills the path with `cut` (which returns the
    /// moment it did), and waits up to [`EXIT_LIMIT`] after it for the client's exit.
    fn run_cut(
        &self,
        program: &Path,
        args: &[&str],
        ready: impl FnOnce(&Proc),
        cut: impl FnOnce() -> Instant,
    ) -> Timed {
        let mut client = self.spawn_client(program, args);
        ready(&client);
        let alive = client.alive();
        let at = cut();
        client.finish(at, alive, at + EXIT_LIMIT)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.server_ns] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the capture must show before a cut

fn mid(f: &Frame) -> Option<u16> {
    f.header().map(|(_, _, id)| id)
}

/// The client's first Confirmable request has been answered by an Empty ACK (a separate
/// response follows: `/async`), and after it a keepalive ping (an Empty CON from the client)
/// has been answered (an Empty RST or ACK with its Message ID): the session is alive both ways
/// and the keepalive is running.
fn acked_and_ping_answered(frames: &[Frame]) -> bool {
    let is_request = |f: &&Frame| {
        f.to_server && matches!(f.header(), Some((CON, code, _)) if code >> 5 == 0 && code != 0)
    };
    let Some(request) = frames.iter().find(is_request) else {
        return false;
    };
    let Some(ack) = frames
        .iter()
        .position(|f| !f.to_server && f.is_empty(ACK) && mid(f) == mid(request))
    else {
        return false;
    };
    let after = &frames[ack..];
    after
        .iter()
        .filter(|f| f.to_server && f.is_empty(CON))
        .any(|ping| {
            after.iter().any(|f| {
                !f.to_server
                    && f.at >= ping.at
                    && (f.is_empty(RST) || f.is_empty(ACK))
                    && mid(f) == mid(ping)
            })
        })
}

/// A Confirmable 2.05 notification to the client has been acknowledged by it (an Empty ACK
/// with its Message ID): the observation is alive both ways.
fn notification_acked(frames: &[Frame]) -> bool {
    frames
        .iter()
        .filter(|f| !f.to_server && matches!(f.header(), Some((CON, 0x45, _))))
        .any(|n| {
            frames
                .iter()
                .any(|f| f.to_server && f.is_empty(ACK) && mid(f) == mid(n))
        })
}

/// Waits until `capture` shows `what` (`seen`), for [`SETTLE`] from `since`; panics otherwise.
fn await_capture(
    capture: &Capture,
    since: Instant,
    what: &str,
    seen: impl Fn(&[Frame]) -> bool,
    context: impl FnOnce() -> String,
) -> Instant {
    capture.wait_for(since + SETTLE, seen).unwrap_or_else(|| {
        panic!(
            "{what}: not seen on the wire within {SETTLE:?}\n{}\ncaptured at the server's end: {:02x?}",
            context(),
            capture.frames().iter().map(|f| (f.to_server, &f.bytes)).collect::<Vec<_>>()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// LIVE_01 and LIVE_02

/// How the path dies mid-session.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    /// LIVE_02: the client's link goes down (its sends fail with ENETUNREACH).
    LinkDown,
    /// LIVE_01: the server is frozen (SIGSTOP): packets vanish.
    Frozen,
}

impl Death {
    fn what(self) -> &'static str {
        match self {
            Death::LinkDown => "the link went down",
            Death::Frozen => "the server was frozen",
        }
    }
}

/// `client args` (requesting `/async?60` with `-K 1`) against `server` across the veth pair;
/// once the capture at the server's end shows the request's Empty ACK and a keepalive ping
/// answered, the path dies (`death`).
fn dead_path(death: Death, server: &Path, client: &Path, args: &[&str]) -> Timed {
    let net = Netns::new();
    let server = net.start_server(server, &[]);
    let capture = Capture::start(&net.server_ns, "cvb");
    net.run_cut(
        client,
        args,
        |c| {
            await_capture(
                &capture,
                c.started,
                "the request's Empty ACK and a keepalive ping answered",
                acked_and_ping_answered,
                || format!("{}\n{}", c.text(), server.text()),
            );
        },
        || match death {
            Death::LinkDown => net.cut_client_link(),
            Death::Frozen => server.freeze(),
        },
    )
}

fn async_uri() -> String {
    format!("coap://{SERVER_ADDR}/async?60")
}

fn ours_client(death: Death) -> String {
    let k = KEEPALIVE_S.to_string();
    let uri = async_uri();
    let r = dead_path(
        death,
        &libcoap("coap-server-notls"),
        &ours("coap-client"),
        &["-K", &k, "-B", "30", "-v", "6", &uri],
    );
    let line = r.keepalive_exit();
    let d = r.describe();
    let after = r.after_cut();
    if death == Death::LinkDown {
        assert!(
            r.stderr().contains("unreachable"),
            "sends must fail as unreachable (ENETUNREACH)\n{d}"
        );
    }
    assert!(
        r.alive_at_cut,
        "the session must survive until {}\n{d}",
        death.what()
    );
    assert!(
        after <= BOUND + SLACK,
        "keepalive failure {after:?} after {} > bound {BOUND:?} + {SLACK:?}\n{d}",
        death.what()
    );
    format!(
        "exit 3 {:.2} s after {} (bound {} s from the last packet heard; cut once the request's Empty ACK and a ping answered were captured); stderr: `{line}`",
        after.as_secs_f64(),
        death.what(),
        BOUND.as_secs()
    )
}

fn libcoap_client(death: Death) -> String {
    let k = KEEPALIVE_S.to_string();
    let uri = async_uri();
    let r = dead_path(
        death,
        &ours("coap-server"),
        &libcoap("coap-client-notls"),
        &["-K", &k, "-B", "6", "-v", "7", &uri],
    );
    let d = r.describe();
    if verbose() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "coap-client-notls still running {EXIT_LIMIT:?} after the cut\n{d}"
    );
    assert!(
        r.alive_at_cut,
        "libcoap's client ended before {}\n{d}",
        death.what()
    );
    let out = r.output();
    let count = |needle: &str| out.matches(needle).count();
    let specific = match death {
        Death::LinkDown => format!(
            "ENETUNREACH logged: {} ({} failed sends, {} internal \"session disconnected\" lines, pings kept going)",
            if out.contains("Network is unreachable") {
                "yes"
            } else {
                "no"
            },
            count("failed to send"),
            count("session disconnected"),
        ),
        Death::Frozen => format!(
            "internal disconnect logged: {}; error printed: {}",
            logged(r.texts(), "session disconnected", " : "),
            logged(r.texts(), " ERR ", " ERR "),
        ),
    };
    format!(
        "coap-client-notls exit status {}, {:.2} s after {}; {specific}; keepalive failure reported: {}; ended by -B 6 (\"timeout\"): {}",
        r.exit_note(),
        r.after_cut().as_secs_f64(),
        death.what(),
        keepalive_event(r.texts()),
        gave_up(r.texts())
    )
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "LIVE_02",
            dir: Dir::OursToLibcoap,
            checks: "netns + veth, client link down mid-session (ENETUNREACH): our coap-client -K 1 reports keepalive failure within interval+timeout and exits non-zero",
            run: || ours_client(Death::LinkDown),
            record_only: false,
        },
        Case {
            id: "LIVE_02",
            dir: Dir::LibcoapToOurs,
            checks: "same scenario with coap-client-notls -K 1 -B 6 against our coap-server: libcoap's behaviour recorded",
            run: || libcoap_client(Death::LinkDown),
            record_only: true,
        },
    ]
}

pub fn more_cases() -> Vec<Case> {
    vec![
        Case {
            id: "LIVE_01",
            dir: Dir::OursToLibcoap,
            checks: "netns + veth, server frozen (SIGSTOP) mid-session, packets vanish: our coap-client -K 1 reports keepalive failure within interval+timeout and exits non-zero",
            run: || ours_client(Death::Frozen),
            record_only: false,
        },
        Case {
            id: "LIVE_01",
            dir: Dir::LibcoapToOurs,
            checks: "same scenario with coap-client-notls -K 1 -B 6 against our frozen coap-server: libcoap's behaviour recorded",
            run: || libcoap_client(Death::Frozen),
            record_only: true,
        },
        Case {
            id: "LIVE_03",
            dir: Dir::OursToLibcoap,
            checks: "netns + veth, server frozen (SIGSTOP) before a CON request, which is retransmitted unanswered: our coap-client -K 2 reports keepalive failure within interval+timeout of opening the session (nothing heard) and exits non-zero",
            run: live03_ours_client,
            record_only: false,
        },
        Case {
            id: "LIVE_03",
            dir: Dir::LibcoapToOurs,
            checks: "same scenario with coap-client-notls -K 2 -B 8 against our frozen coap-server: libcoap's behaviour recorded",
            run: live03_libcoap_client,
            record_only: true,
        },
        Case {
            id: "LIVE_04",
            dir: Dir::LibcoapToOurs,
            checks: "netns + veth, our coap-server -K 1; coap-client-notls -s observing /time, its link goes down: our server drops the observation (and session) within interval+timeout",
            run: live04_our_server,
            record_only: false,
        },
        Case {
            id: "LIVE_04",
            dir: Dir::OursToLibcoap,
            checks: "same scenario with coap-server-notls (no keepalive flag) and our coap-client -s vanishing: how long libcoap keeps notifying, recorded",
            run: live04_libcoap_server,
            record_only: true,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// LIVE_04

/// The peer (`addr:port`) in our server's `PEER: observer added` line.
fn observer_peer(line: &str) -> Option<String> {
    let rest = line.split_once(": ")?.1;
    let rest = rest.strip_prefix("INFO: ").unwrap_or(rest);
    rest.split_once(": observer added")
        .map(|(peer, _)| peer.to_string())
}

fn live04_our_server() -> String {
    let net = Netns::new();
    let k = KEEPALIVE_S.to_string();
    let server = net.start_server(&ours("coap-server"), &["-K", &k, "-v", "6"]);
    let capture = Capture::start(&net.server_ns, "cvb");
    let uri = format!("coap://{SERVER_ADDR}/time");
    let client = net.spawn_client(
        &libcoap("coap-client-notls"),
        &["-B", "30", "-s", "60", &uri],
    );
    let context = || format!("{}\n{}", server.text(), client.text());
    let (_, added) = server
        .wait_line("observer added", client.started + SETTLE)
        .unwrap_or_else(|| {
            panic!(
                "the server never logged the client's observation of /time\n{}",
                context()
            )
        });
    let peer = observer_peer(&added)
        .unwrap_or_else(|| panic!("no peer in the server's line `{added}`\n{}", context()));
    await_capture(
        &capture,
        client.started,
        "a Confirmable notification acknowledged by the client",
        notification_acked,
        context,
    );
    let cut = net.cut_client_link();
    let deadline = cut + BOUND + SLACK + Duration::from_secs(2);
    let removed_line = format!("{peer}: observer removed: the client's session ended");
    let removed = server.wait_line(&removed_line, deadline);
    let failed = server.wait_line(&format!("{peer}: session failed"), deadline);
    let text = server.text();
    let (at, line) = removed.unwrap_or_else(|| {
        panic!("our server never logged `{removed_line}` after the link went down\n{text}")
    });
    assert!(
        failed.is_some(),
        "the session must fail with the observation\n{text}"
    );
    assert!(
        at >= cut,
        "the observer was removed before the client vanished\n{text}"
    );
    let after = at - cut;
    assert!(
        after <= BOUND + SLACK,
        "observer removed {after:?} after the link went down > bound {BOUND:?} + {SLACK:?}\n{text}"
    );
    format!(
        "observation of /time dropped {:.2} s after the client's link went down (bound {} s from the last packet heard; cut once a notification acknowledged was captured); stderr: `{}`",
        after.as_secs_f64(),
        BOUND.as_secs(),
        line.trim()
    )
}

fn live04_libcoap_server() -> String {
    let net = Netns::new();
    let server = net.start_server(&libcoap("coap-server-notls"), &["-v", "7"]);
    let uri = format!("coap://{SERVER_ADDR}/time");
    let client = net.spawn_client(&ours("coap-client"), &["-B", "30", "-s", "200", &uri]);
    // The observation is established once libcoap logs a notification.
    server
        .wait_line("Observe PDU presented", client.started + SETTLE)
        .unwrap_or_else(|| {
            panic!(
                "coap-server-notls -v 7 logged no notification within {SETTLE:?}\n{}\n{}",
                server.text(),
                client.text()
            )
        });
    let cut = net.cut_client_link();
    // libcoap gives a CON notification up after MAX_TRANSMIT_WAIT (93 s) at most.
    let removed = server.wait_line("removed subscription", cut + Duration::from_secs(100));
    let snap = server.snapshot();
    let before_cut = snap
        .iter()
        .filter(|l| l.at < cut && l.text.contains("Observe PDU presented"))
        .count();
    assert!(
        before_cut > 0,
        "coap-server-notls -v 7 logged no notification before the cut\n{}",
        server.text()
    );
    let after: Vec<&Line> = snap.iter().filter(|l| l.at >= cut).collect();
    let count = |needle: &str| after.iter().filter(|l| l.text.contains(needle)).count();
    let notifications = count("Observe PDU presented");
    let retransmissions = count("retransmission #");
    let errors = after
        .iter()
        .map(|l| &l.text)
        .find(|l| l.contains(" WARN ") || l.contains(" ERR ") || l.contains("unreachable"))
        .map(|l| format!("`{}`", l.split(" : ").last().unwrap_or(l).trim()));
    let last_send = after
        .iter()
        .rev()
        .find(|l| l.text.contains("sent ") && l.text.contains("bytes"))
        .map_or(0.0, |l| (l.at - cut).as_secs_f64());
    format!(
        "coap-server-notls (no keepalive option) notified {before_cut} time(s) before the cut; after it: {notifications} new notification(s), {retransmissions} retransmission(s), the last datagram sent {last_send:.1} s after the cut; send error logged: {}; {}",
        errors.unwrap_or_else(|| "none".into()),
        match removed {
            Some((t, _)) => format!(
                "observer removed (`removed subscription`) {:.1} s after the cut, when its CON notification timed out",
                (t - cut).as_secs_f64()
            ),
            None => "no removal within 100 s".into(),
        }
    )
}

// ---------------------------------------------------------------------------------------------
// LIVE_03

/// LIVE_03: interval + timeout for `-K 2`; the first retransmission of the CON request
/// (ACK_TIMEOUT 2 s × 1..1.5) falls inside it.
const K03: u64 = 2;
const BOUND03: Duration = Duration::from_secs(2 * K03);

/// What reached the frozen server: retransmissions of the first request, Empty CON pings,
/// other CoAP messages.
struct Arrived {
    retransmissions: u64,
    pings: u64,
    other: u64,
}

/// Freezes `server` (once it has answered; the kernel reports it stopped) and runs `program
/// args` against it from the client namespace (`-K 2`), capturing every CoAP datagram that
/// crosses the server's end of the veth pair. The path is dead from the client's start (its
/// `cut`). Returns the run, whether anything came from the server, and what arrived (`None`
/// when no request did).
fn run_frozen(server: &Path, program: &Path, args: &[&str]) -> (Timed, bool, Option<Arrived>) {
    let net = Netns::new();
    let server = net.start_server(server, &[]);
    server.freeze();
    let capture = Capture::start(&net.server_ns, "cvb");
    let r = net.run_cut(program, args, |_| {}, Instant::now);
    let frames = capture.finish();
    if verbose() {
        eprintln!(
            "{}\ncaptured {:02x?}",
            r.describe(),
            frames
                .iter()
                .map(|f| (f.to_server, &f.bytes))
                .collect::<Vec<_>>()
        );
    }
    let heard = frames.iter().any(|f| !f.to_server);
    let messages: Vec<&Frame> = frames.iter().filter(|f| f.to_server).collect();
    let Some(first) = messages
        .iter()
        .find(|f| matches!(f.header(), Some((_, code, _)) if code >> 5 == 0 && code != 0))
    else {
        return (r, heard, None);
    };
    let request = mid(first);
    let (mut transmissions, mut pings, mut other) = (0, 0, 0);
    for f in &messages {
        match f.header() {
            Some((_, code, _)) if code != 0 && mid(f) == request => transmissions += 1,
            Some((CON, 0, _)) if f.bytes.len() == 4 => pings += 1,
            _ => other += 1,
        }
    }
    let arrived = Arrived {
        retransmissions: transmissions - 1,
        pings,
        other,
    };
    (r, heard, Some(arrived))
}

fn live03_ours_client() -> String {
    let k = K03.to_string();
    let uri = format!("coap://{SERVER_ADDR}/");
    let (r, heard, arrived) = run_frozen(
        &libcoap("coap-server-notls"),
        &ours("coap-client"),
        &["-K", &k, "-B", "30", "-v", "9", &uri],
    );
    let line = r.keepalive_exit();
    let d = r.describe();
    let Arrived {
        retransmissions,
        pings,
        other,
    } = arrived.unwrap_or_else(|| {
        panic!("no request reached the frozen server (see CONFORMANCE_VERBOSE=1)\n{d}")
    });
    assert!(
        !heard,
        "the frozen server sent something (see CONFORMANCE_VERBOSE=1)\n{d}"
    );
    assert!(
        retransmissions >= 1,
        "the request must have been retransmitted before the keepalive failure\n{d}"
    );
    let elapsed = r.ended - r.started;
    assert!(
        elapsed <= BOUND03 + SLACK,
        "keepalive failure after {elapsed:?} > bound {BOUND03:?} + {SLACK:?}\n{d}"
    );
    format!(
        "exit 3 {:.2} s after the client started (bound {} s; nothing was ever heard; the CON request reached the frozen server, then {retransmissions} retransmission(s) of it, {pings} ping(s), {other} other CoAP message(s), as captured on its interface); stderr: `{line}`",
        elapsed.as_secs_f64(),
        BOUND03.as_secs()
    )
}

fn live03_libcoap_client() -> String {
    let k = K03.to_string();
    let uri = format!("coap://{SERVER_ADDR}/");
    let (r, _, arrived) = run_frozen(
        &ours("coap-server"),
        &libcoap("coap-client-notls"),
        &["-K", &k, "-B", "8", "-v", "7", &uri],
    );
    let arrived = arrived.map_or("no request".to_string(), |a| {
        format!(
            "{} retransmission(s), {} ping(s), {} other CoAP message(s)",
            a.retransmissions, a.pings, a.other
        )
    });
    let d = r.describe();
    assert!(
        r.status.is_some(),
        "coap-client-notls still running {EXIT_LIMIT:?} after its start\n{d}"
    );
    let out = r.output();
    let retransmits = out.matches("retransmission #").count();
    let pings = out.lines().filter(|l| l.contains("t:CON c:0.00")).count();
    format!(
        "coap-client-notls exit status {} after {:.2} s; {retransmits} retransmission(s) of the request logged, {pings} ping(s) logged (after the request, the frozen server received {arrived}); \
         internal disconnect logged: {}; ended by -B 8 (\"timeout\"): {}",
        r.exit_note(),
        (r.ended - r.started).as_secs_f64(),
        logged(r.texts(), "session disconnected", " : "),
        gave_up(r.texts())
    )
}
