//! LIVE_02 for real: two network namespaces created by the case, joined by a veth pair
//! (addresses only inside them), a server in one, a client with `-K 1` in the other; mid-session
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
        panic!("LIVE_02 needs root and iproute2 (Debian package iproute2): cannot run `ip`: {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (LIVE_02 needs root and iproute2): {}",
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
