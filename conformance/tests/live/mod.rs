//! LIVE_01–04 for real (LIVE_01/03/04 in `more_cases`, further down; LIVE_04's client
//! observes `/time` with `-s`; LIVE_06, the same over DTLS, in `dtls.rs`;
//! LIVE_05, over TCP and TLS on loopback, in `tcp.rs`). LIVE_02: two network
//! namespaces created by the case, joined by a veth pair (addresses only inside them), a server in one, a client with `-K 1` in the other; mid-session
//! the client's link goes down, so its `sendto()` fails with ENETUNREACH. Needs root and
//! iproute2 (`ip`): the case fails, never skips, without them.
//!
//! - ours → libcoap: our `coap-client -K 1` against `coap-server-notls`; it must report a
//!   keepalive failure and exit non-zero within interval + timeout (2 s) of the last packet it
//!   heard (checked against the moment the link went down, which is later than that packet).
//! - libcoap → ours: `coap-client-notls -K 1 -B 6` against our `coap-server` in the same
//!   scenario; what libcoap does is recorded (exit status, time, what it printed), not judged.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coap_engine_conformance::{libcoap, ours, run_command, Run};

use crate::{Case, Dir};

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
/// The link goes down this long after the client started: its request has been answered
/// with an Empty ACK and at least one keepalive ping exchanged.
const CUT_AFTER: Duration = Duration::from_millis(2500);
const CLIENT_ADDR: &str = "10.231.0.1";
const SERVER_ADDR: &str = "10.231.0.2";

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "LIVE_02",
            dir: Dir::OursToLibcoap,
            checks: "netns + veth, client link down mid-session (ENETUNREACH): our coap-client -K 1 reports keepalive failure within interval+timeout and exits non-zero",
            run: ours_client_libcoap_server,
            record_only: false,
        },
        Case {
            id: "LIVE_02",
            dir: Dir::LibcoapToOurs,
            checks: "same scenario with coap-client-notls -K 1 -B 6 against our coap-server: libcoap's behaviour recorded",
            run: libcoap_client_our_server,
            record_only: true,
        },
    ]
}

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

/// Two namespaces joined by a veth pair; deleted (and their processes killed) on drop.
struct Netns {
    client_ns: String,
    server_ns: String,
    children: Vec<Child>,
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
        let mut n = Netns {
            client_ns: a.clone(),
            server_ns: String::new(),
            children: Vec::new(),
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        n.server_ns = b.clone();
        for ns in [&a, &b] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &a, "link", "add", "cva", "type", "veth", "peer", "name", "cvb", "netns", &b,
        ]);
        ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            "cva",
        ]);
        ip(&[
            "-n",
            &b,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/24"),
            "dev",
            "cvb",
        ]);
        ip(&["-n", &a, "link", "set", "cva", "up"]);
        ip(&["-n", &b, "link", "set", "cvb", "up"]);
        n
    }

    fn exec(ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }

    /// Starts a server in the server namespace and waits until our client, from the client
    /// namespace, gets an answer from it.
    fn start_server(&mut self, program: &Path, args: &[&str]) {
        let child = Netns::exec(&self.server_ns, program)
            .args(args)
            .args(["-A", SERVER_ADDR, "-p", "5683"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.children.push(child);
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
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never answered across the veth pair", program.display());
    }

    /// Runs `program args` in the client namespace, takes the client's link down
    /// `CUT_AFTER` later, and returns the run and the time from the cut to its exit.
    fn run_and_cut(&self, program: &Path, args: &[&str], limit: Duration) -> (Run, Duration) {
        let ns = self.client_ns.clone();
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(CUT_AFTER);
            ip(&["-n", &ns, "link", "set", "cva", "down"]);
            Instant::now()
        });
        let r = run_command(Netns::exec(&self.client_ns, program), program, args, limit);
        let end = Instant::now();
        let cut = cutter.join().expect("link down");
        (r, end.saturating_duration_since(cut))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

fn ours_client_libcoap_server() -> String {
    let mut net = Netns::new();
    net.start_server(&libcoap("coap-server-notls"), &[]);
    let client = ours("coap-client");
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coap://{SERVER_ADDR}/async?60");
    let (r, after) = net.run_and_cut(
        &client,
        &["-K", &k, "-B", "30", "-v", "6", &uri],
        Duration::from_secs(20),
    );
    let d = r.describe();
    assert!(
        r.status.is_some(),
        "our client did not exit within 20 s\n{d}"
    );
    assert_eq!(
        r.code(),
        Some(3),
        "exit status 3 (no response) expected\n{d}"
    );
    assert!(r.stderr.contains("keepalive failure"), "{d}");
    assert!(
        r.stderr.contains("unreachable"),
        "sends must fail as unreachable (ENETUNREACH)\n{d}"
    );
    assert!(
        r.elapsed >= CUT_AFTER,
        "the session must survive until the cut\n{d}"
    );
    assert!(
        after <= BOUND + SLACK,
        "keepalive failure {after:?} after the link went down > bound {BOUND:?} + {SLACK:?}\n{d}"
    );
    let silent = r
        .stderr
        .lines()
        .find(|l| l.contains("keepalive failure"))
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "exit 3 {:.2} s after the link went down (bound {} s from the last packet heard); stderr: `{silent}`",
        after.as_secs_f64(),
        BOUND.as_secs()
    )
}

fn libcoap_client_our_server() -> String {
    let mut net = Netns::new();
    net.start_server(&ours("coap-server"), &[]);
    let client = libcoap("coap-client-notls");
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coap://{SERVER_ADDR}/async?60");
    let (r, after) = net.run_and_cut(
        &client,
        &["-K", &k, "-B", "6", "-v", "7", &uri],
        Duration::from_secs(20),
    );
    let d = r.describe();
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "coap-client-notls still running after 20 s\n{d}"
    );
    assert!(
        r.elapsed >= CUT_AFTER,
        "libcoap's client ended before the cut\n{d}"
    );
    let out = format!("{}{}", r.stdout, r.stderr);
    let unreachable = out.contains("Network is unreachable");
    let keepalive_event = out
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("keepalive") && (l.contains("fail") || l.contains("timeout"))
        })
        .map(|l| format!("`{}`", l.trim()));
    let count = |needle: &str| out.matches(needle).count();
    let gave_up = out.lines().any(|l| l.trim_end().ends_with("INFO timeout"));
    format!(
        "coap-client-notls exit status {}, {:.2} s after the link went down; ENETUNREACH logged: {} \
         ({} failed sends, {} internal \"session disconnected\" lines, pings kept going); \
         keepalive failure reported: {}; ended by -B 6 (\"timeout\"): {}",
        r.code().map_or("none (killed)".into(), |c| c.to_string()),
        after.as_secs_f64(),
        if unreachable { "yes" } else { "no" },
        count("failed to send"),
        count("session disconnected"),
        keepalive_event.unwrap_or_else(|| "none".into()),
        if gave_up { "yes" } else { "no" }
    )
}

/// A process started in a namespace whose stdout and stderr lines are recorded with their arrival time.
struct Logged {
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Logged {
    fn snapshot(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn text(&self) -> String {
        self.snapshot().into_iter().map(|(_, l)| l + "\n").collect()
    }
}

impl Netns {
    /// Like `start_server`, but the server's stderr is recorded line by line with arrival
    /// times; returns the log and the server's pid (`ip netns exec` execs the program).
    fn start_server_logged(&mut self, program: &Path, args: &[&str]) -> (Logged, u32) {
        use std::io::BufRead;
        let mut child = Netns::exec(&self.server_ns, program)
            .args(args)
            .args(["-A", SERVER_ADDR, "-p", "5683"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        self.children.push(child);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        fn pump(
            from: impl std::io::Read + Send + 'static,
            sink: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
        ) {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), line));
                }
            });
        }
        pump(stderr, lines.clone());
        pump(stdout, lines.clone());
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
                return (Logged { lines }, pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never answered across the veth pair", program.display());
    }

    /// Starts `program args` in the client namespace (output discarded; killed on drop).
    fn spawn_client(&mut self, program: &Path, args: &[&str]) {
        let child = Netns::exec(&self.client_ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.children.push(child);
    }

    fn cut_client_link(&self) -> Instant {
        ip(&["-n", &self.client_ns, "link", "set", "cva", "down"]);
        Instant::now()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGCONTs a frozen process on drop (the Netns guard then kills it).
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

pub fn more_cases() -> Vec<Case> {
    vec![
        Case {
            id: "LIVE_01",
            dir: Dir::OursToLibcoap,
            checks: "netns + veth, server frozen (SIGSTOP) mid-session, packets vanish: our coap-client -K 1 reports keepalive failure within interval+timeout and exits non-zero",
            run: live01_ours_client,
            record_only: false,
        },
        Case {
            id: "LIVE_01",
            dir: Dir::LibcoapToOurs,
            checks: "same scenario with coap-client-notls -K 1 -B 6 against our frozen coap-server: libcoap's behaviour recorded",
            run: live01_libcoap_client,
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

/// Runs `program args` in the client namespace and freezes the server `CUT_AFTER` later;
/// returns the run and the time from the freeze to the client's exit.
fn run_and_freeze(net: &Netns, pid: u32, program: &Path, args: &[&str]) -> (Run, Duration) {
    let freezer = std::thread::spawn(move || {
        std::thread::sleep(CUT_AFTER);
        signal(pid, "-STOP");
        Instant::now()
    });
    let r = run_command(
        Netns::exec(&net.client_ns, program),
        program,
        args,
        Duration::from_secs(20),
    );
    let end = Instant::now();
    let frozen = freezer.join().expect("SIGSTOP");
    (r, end.saturating_duration_since(frozen))
}

fn live01_ours_client() -> String {
    let mut net = Netns::new();
    let (_log, pid) = net.start_server_logged(&libcoap("coap-server-notls"), &[]);
    let _thaw = Thaw(pid);
    let client = ours("coap-client");
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coap://{SERVER_ADDR}/async?60");
    let (r, after) = run_and_freeze(&net, pid, &client, &["-K", &k, "-B", "30", "-v", "6", &uri]);
    let d = r.describe();
    assert!(
        r.status.is_some(),
        "our client did not exit within 20 s\n{d}"
    );
    assert_eq!(
        r.code(),
        Some(3),
        "exit status 3 (no response) expected\n{d}"
    );
    assert!(r.stderr.contains("keepalive failure"), "{d}");
    assert!(
        r.elapsed >= CUT_AFTER,
        "the session must survive until the freeze\n{d}"
    );
    assert!(
        after <= BOUND + SLACK,
        "keepalive failure {after:?} after the freeze > bound {BOUND:?} + {SLACK:?}\n{d}"
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("keepalive failure"))
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "exit 3 {:.2} s after the server was frozen (bound {} s from the last packet heard); stderr: `{line}`",
        after.as_secs_f64(),
        BOUND.as_secs()
    )
}

fn live01_libcoap_client() -> String {
    let mut net = Netns::new();
    let (_log, pid) = net.start_server_logged(&ours("coap-server"), &[]);
    let _thaw = Thaw(pid);
    let client = libcoap("coap-client-notls");
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coap://{SERVER_ADDR}/async?60");
    let (r, after) = run_and_freeze(&net, pid, &client, &["-K", &k, "-B", "6", "-v", "7", &uri]);
    let d = r.describe();
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "coap-client-notls still running after 20 s\n{d}"
    );
    assert!(
        r.elapsed >= CUT_AFTER,
        "libcoap's client ended before the freeze\n{d}"
    );
    let out = format!("{}{}", r.stdout, r.stderr);
    let keepalive_event = out
        .lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("keepalive") && (l.contains("fail") || l.contains("timeout"))
        })
        .map(|l| format!("`{}`", l.trim()));
    let gave_up = out.lines().any(|l| l.trim_end().ends_with("INFO timeout"));
    let disconnected = out
        .lines()
        .find(|l| l.contains("session disconnected"))
        .and_then(|l| l.split(" : ").last())
        .map(|l| format!("`{}`", l.trim()));
    let error = out
        .lines()
        .find(|l| l.contains(" ERR "))
        .and_then(|l| l.split(" ERR ").last())
        .map(|l| format!("`{}`", l.trim()));
    format!(
        "coap-client-notls exit status {}, {:.2} s after the server was frozen; keepalive failure reported: {}; \
         internal disconnect logged: {}; error printed: {}; ended by -B 6 (\"timeout\"): {}",
        r.code().map_or("none (killed)".into(), |c| c.to_string()),
        after.as_secs_f64(),
        keepalive_event.unwrap_or_else(|| "none".into()),
        disconnected.unwrap_or_else(|| "none".into()),
        error.unwrap_or_else(|| "none".into()),
        if gave_up { "yes" } else { "no" }
    )
}

/// The peer (`addr:port`) of the first observer our server logged (`PEER: observer added`).
fn observer_peer(log: &Logged) -> Option<String> {
    log.snapshot().into_iter().find_map(|(_, l)| {
        let rest = l.split_once(": ")?.1;
        let rest = rest.strip_prefix("INFO: ").unwrap_or(rest);
        rest.split_once(": observer added")
            .map(|(peer, _)| peer.to_string())
    })
}

/// Waits until a log line contains `needle` (or `deadline` passes); its arrival and text.
fn wait_line(log: &Logged, needle: &str, deadline: Instant) -> Option<(Instant, String)> {
    loop {
        if let Some(hit) = log.snapshot().into_iter().find(|(_, l)| l.contains(needle)) {
            return Some(hit);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn live04_our_server() -> String {
    let mut net = Netns::new();
    let k = KEEPALIVE_S.to_string();
    let (log, _pid) = net.start_server_logged(&ours("coap-server"), &["-K", &k, "-v", "6"]);
    let client = libcoap("coap-client-notls");
    let uri = format!("coap://{SERVER_ADDR}/time");
    net.spawn_client(&client, &["-B", "30", "-s", "60", &uri]);
    std::thread::sleep(CUT_AFTER);
    let peer = observer_peer(&log).unwrap_or_else(|| {
        panic!(
            "the server never logged the client's observation of /time\n{}",
            log.text()
        )
    });
    let cut = net.cut_client_link();
    let deadline = cut + BOUND + SLACK + Duration::from_secs(2);
    let removed_line = format!("{peer}: observer removed: the client's session ended");
    let removed = wait_line(&log, &removed_line, deadline);
    let failed = wait_line(&log, &format!("{peer}: session failed"), deadline);
    let text = log.text();
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
        "observation of /time dropped {:.2} s after the client's link went down (bound {} s from the last packet heard); stderr: `{}`",
        after.as_secs_f64(),
        BOUND.as_secs(),
        line.trim()
    )
}

fn live04_libcoap_server() -> String {
    let mut net = Netns::new();
    let (log, _pid) = net.start_server_logged(&libcoap("coap-server-notls"), &["-v", "7"]);
    let client = ours("coap-client");
    let uri = format!("coap://{SERVER_ADDR}/time");
    net.spawn_client(&client, &["-B", "30", "-s", "200", &uri]);
    std::thread::sleep(CUT_AFTER);
    let cut = net.cut_client_link();
    // libcoap gives a CON notification up after MAX_TRANSMIT_WAIT (93 s) at most.
    let removed = wait_line(&log, "removed subscription", cut + Duration::from_secs(100));
    let snap = log.snapshot();
    let before_cut = snap
        .iter()
        .filter(|(t, l)| *t < cut && l.contains("Observe PDU presented"))
        .count();
    assert!(
        before_cut > 0,
        "coap-server-notls -v 7 logged no notification before the cut\n{}",
        log.text()
    );
    let after: Vec<&(Instant, String)> = snap.iter().filter(|(t, _)| *t >= cut).collect();
    let count = |needle: &str| after.iter().filter(|(_, l)| l.contains(needle)).count();
    let notifications = count("Observe PDU presented");
    let retransmissions = count("retransmission #");
    let errors = after
        .iter()
        .find(|(_, l)| l.contains(" WARN ") || l.contains(" ERR ") || l.contains("unreachable"))
        .map(|(_, l)| format!("`{}`", l.split(" : ").last().unwrap_or(l).trim()));
    let last_send = after
        .iter()
        .rev()
        .find(|(_, l)| l.contains("sent ") && l.contains("bytes"))
        .map_or(0.0, |(t, _)| (*t - cut).as_secs_f64());
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

/// Runs `program args` in the client namespace against the frozen server, capturing every
/// CoAP datagram that reaches the server's end of the veth pair. Returns the run and, of
/// what arrived, (retransmissions of the first request, Empty CON pings, other CoAP
/// messages), or `None` when no request arrived at all.
fn run_frozen(net: &Netns, program: &Path, args: &[&str]) -> (Run, Option<(u64, u64, u64)>) {
    let capture = capture::Capture::start(&net.server_ns, "cvb");
    let r = run_command(
        Netns::exec(&net.client_ns, program),
        program,
        args,
        Duration::from_secs(20),
    );
    let messages = capture.finish();
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("captured {messages:02x?}");
    }
    // RFC 7252 §3: version 1, type in bits 5–4, code in byte 1, Message ID in bytes 2–3.
    let coap =
        |m: &Vec<u8>| (m.len() >= 4 && m[0] >> 6 == 1).then(|| (m[0] >> 4 & 3, m[1], [m[2], m[3]]));
    let Some((_, _, mid)) = messages
        .iter()
        .filter_map(coap)
        .find(|&(_, code, _)| code >> 5 == 0 && code != 0)
    else {
        return (r, None);
    };
    let (mut transmissions, mut pings, mut other) = (0, 0, 0);
    for m in &messages {
        match coap(m) {
            Some((_, code, id)) if code != 0 && id == mid => transmissions += 1,
            Some((0, 0, _)) if m.len() == 4 => pings += 1,
            _ => other += 1,
        }
    }
    (r, Some((transmissions - 1, pings, other)))
}

/// LIVE_03: interval + timeout for `-K 2`; the first retransmission of the CON request
/// (ACK_TIMEOUT 2 s × 1..1.5) falls inside it.
const K03: u64 = 2;
const BOUND03: Duration = Duration::from_secs(2 * K03);

fn live03_ours_client() -> String {
    let mut net = Netns::new();
    let (_log, pid) = net.start_server_logged(&libcoap("coap-server-notls"), &[]);
    let _thaw = Thaw(pid);
    signal(pid, "-STOP");
    let client = ours("coap-client");
    let k = K03.to_string();
    let uri = format!("coap://{SERVER_ADDR}/");
    let (r, frames) = run_frozen(&net, &client, &["-K", &k, "-B", "30", "-v", "9", &uri]);
    let d = r.describe();
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "our client did not exit within 20 s\n{d}"
    );
    assert_eq!(
        r.code(),
        Some(3),
        "exit status 3 (no response) expected\n{d}"
    );
    assert!(r.stderr.contains("keepalive failure"), "{d}");
    let (retransmissions, pings, other) = frames.unwrap_or_else(|| {
        panic!("no request reached the frozen server (see CONFORMANCE_VERBOSE=1)\n{d}")
    });
    assert!(
        retransmissions >= 1,
        "the request must have been retransmitted before the keepalive failure\n{d}"
    );
    assert!(
        r.elapsed <= BOUND03 + SLACK,
        "keepalive failure after {:?} > bound {BOUND03:?} + {SLACK:?}\n{d}",
        r.elapsed
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("keepalive failure"))
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "exit 3 {:.2} s after the client started (bound {} s; nothing was ever heard; the CON request reached the frozen server, then {retransmissions} retransmission(s) of it, {pings} ping(s), {other} other CoAP message(s), as captured on its interface); stderr: `{line}`",
        r.elapsed.as_secs_f64(),
        BOUND03.as_secs()
    )
}

fn live03_libcoap_client() -> String {
    let mut net = Netns::new();
    let (_log, pid) = net.start_server_logged(&ours("coap-server"), &[]);
    let _thaw = Thaw(pid);
    signal(pid, "-STOP");
    let client = libcoap("coap-client-notls");
    let k = K03.to_string();
    let uri = format!("coap://{SERVER_ADDR}/");
    let (r, frames) = run_frozen(&net, &client, &["-K", &k, "-B", "8", "-v", "7", &uri]);
    let frames = frames.map_or("no request".to_string(), |(re, p, o)| {
        format!("{re} retransmission(s), {p} ping(s), {o} other CoAP message(s)")
    });
    let d = r.describe();
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "coap-client-notls still running after 20 s\n{d}"
    );
    let out = format!("{}{}", r.stdout, r.stderr);
    let retransmits = out.matches("retransmission #").count();
    let pings = out.lines().filter(|l| l.contains("t:CON c:0.00")).count();
    let disconnected = out
        .lines()
        .find(|l| l.contains("session disconnected"))
        .and_then(|l| l.split(" : ").last())
        .map(|l| format!("`{}`", l.trim()));
    let gave_up = out.lines().any(|l| l.trim_end().ends_with("INFO timeout"));
    format!(
        "coap-client-notls exit status {} after {:.2} s; {retransmits} retransmission(s) of the request logged, {pings} ping(s) logged (after the request, the frozen server received {frames}); \
         internal disconnect logged: {}; ended by -B 8 (\"timeout\"): {}",
        r.code().map_or("none (killed)".into(), |c| c.to_string()),
        r.elapsed.as_secs_f64(),
        disconnected.unwrap_or_else(|| "none".into()),
        if gave_up { "yes" } else { "no" }
    )
}
