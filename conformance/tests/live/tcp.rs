//! LIVE_05: the liveness contract over TCP and TLS (RFC 8323: keepalive probes are 7.02 Ping,
//! answered by 7.03 Pong), against libcoap's OpenSSL build on loopback, over `coap+tcp://` and
//! `coaps+tcp://`. A frozen peer (SIGSTOP) keeps its connection open: its kernel still
//! acknowledges every byte, only the process no longer answers, so only a keepalive notices.
//!
//! - a frozen server: our `coap-client -K 1` observing `/time` on `coap-server-openssl` must
//!   report a keepalive failure and exit 3 within interval + timeout (2 s) of the freeze
//!   (the last packet heard came before it); beside it, what libcoap's server does when our
//!   client freezes (it has no keepalive), recorded;
//! - a reset connection (the relay ends it with a RST both ways, or the server is killed with
//!   SIGKILL): our client ends at once with the typed reason;
//! - the reverse: our `coap-server -K 1` drops a frozen `coap-client-openssl` (session failed,
//!   observer removed) within the bound, and a reset one at once; beside it, what libcoap's
//!   client does with `-K 1` when our server freezes, recorded.
//!
//! Every connection goes through the TCP relay of `tls/mod.rs`; over `coap+tcp://` it reads
//! the RFC 8323 frames, so the Pings and (missing) Pongs are checked on the wire. Over TLS they
//! are encrypted: there the bytes sent after the freeze stand for the probes.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use coap_engine_conformance::{free_port_pair, libcoap, ours, Background, Run};

use crate::dtls::pki;
use crate::tls::{frames, TcpRelay, PING, PONG};
use crate::{Case, Dir, Tls};

use super::{keepalive_event, logged, Proc};

/// `-K 1` on either side: a ping after 1 s of silence, failure 1 s later.
const K: &str = "1";
/// interval + timeout for `-K 1`.
const BOUND: Duration = Duration::from_secs(2);
/// Timer resolution, process exit and a loaded machine, on top of the bound.
const SLACK: Duration = Duration::from_millis(750);
/// A reset is reported as soon as it is read: well below the keepalive bound.
const RESET_BOUND: Duration = Duration::from_secs(1);
/// How long a condition (a notification, a log line) is waited for.
const WAIT: Duration = Duration::from_secs(10);

/// A server with `server.pem` on a free loopback port: CoAP over TCP on PORT, TLS on PORT + 1.
/// Ready once both accept a connection.
struct Peer {
    proc: Proc,
    port: u16,
}

impl Peer {
    fn start(program: &Path, args: &[&str]) -> Peer {
        let (cert, key) = (pki("server.pem"), pki("server.key"));
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port_pair();
            if TcpListener::bind(("127.0.0.1", port)).is_err()
                || TcpListener::bind(("127.0.0.1", port + 1)).is_err()
            {
                continue;
            }
            let p = port.to_string();
            let mut all: Vec<&str> = args.to_vec();
            all.extend_from_slice(&["-c", &cert, "-j", &key, "-A", "127.0.0.1", "-p", &p]);
            let mut proc = Proc::spawn(program, &all);
            let deadline = Instant::now() + Duration::from_secs(5);
            let ready = |port: u16| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            };
            while proc.alive() && Instant::now() < deadline {
                if ready(port) && ready(port + 1) {
                    return Peer { proc, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = proc.text();
        }
        panic!(
            "{} never accepted TCP and TLS connections on a free port\n{last}",
            program.display()
        );
    }

    fn addr(&self, secure: bool) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + u16::from(secure)))
    }
}

fn scheme(secure: bool) -> &'static str {
    if secure {
        "coaps+tcp"
    } else {
        "coap+tcp"
    }
}

fn libcoap_server() -> Peer {
    Peer::start(&libcoap(Tls::OpenSsl.server()), &[])
}

/// Our client observing `/time` through `relay` with `-K 1`; returns once it has printed two
/// notifications.
fn our_observer(relay: &TcpRelay, secure: bool, server: &Peer) -> Background {
    let ca = pki("ca.pem");
    let uri = relay.uri(scheme(secure), "time");
    let mut args = vec!["-K", K, "-s", "60", "-B", "30", "-w", "-v", "6"];
    if secure {
        args.extend_from_slice(&["-C", &ca]);
    }
    args.push(&uri);
    let client = Background::spawn(&ours("coap-client"), &args);
    let deadline = Instant::now() + WAIT;
    while !client.output().contains("notification 2 ") {
        assert!(
            Instant::now() < deadline,
            "our client printed no second notification within {WAIT:?}\n{}\n{}\n--- relay\n{}",
            client.output(),
            server.proc.text(),
            relay.trace()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    client
}

/// The line of our client's stderr that holds `needle`, trimmed.
fn line_with(r: &Run, needle: &str) -> String {
    r.stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ctx(r: &Run, server: &Peer, relay: &TcpRelay) -> String {
    format!(
        "{}\n{}\n--- relay\n{}",
        r.describe(),
        server.proc.text(),
        relay.trace()
    )
}

/// RFC 8323 messages of the relay's first connection in one direction after `from`.
fn codes_after(relay: &TcpRelay, to_server: bool, from: Instant) -> Vec<u8> {
    frames(relay, 0, to_server)
        .into_iter()
        .filter(|(t, _, _)| *t > from)
        .map(|(_, c, _)| c)
        .collect()
}

/// Bytes of the relay's first connection in one direction after `from`.
fn bytes_after(relay: &TcpRelay, to_server: bool, from: Instant) -> usize {
    relay
        .chunks()
        .into_iter()
        .filter(|c| c.conn == 0 && c.to_server == to_server && c.at > from)
        .map(|c| c.bytes.len())
        .sum()
}

/// After a freeze of the peer on the far side: the side under test probed (a 7.02 Ping over TCP;
/// over TLS, bytes went out) and no Pong came back. `to_peer` is the direction towards the
/// frozen peer. Returns a note.
#[track_caller]
fn probed_unanswered(
    relay: &TcpRelay,
    secure: bool,
    to_peer: bool,
    frozen: Instant,
    c: &str,
) -> String {
    if secure {
        let out = bytes_after(relay, to_peer, frozen);
        assert!(
            out > 0,
            "nothing was sent to the frozen peer (no probe)\n{c}"
        );
        format!("{out} encrypted bytes sent to the frozen peer")
    } else {
        let sent = codes_after(relay, to_peer, frozen);
        let back = codes_after(relay, !to_peer, frozen);
        assert!(
            sent.contains(&PING),
            "no 7.02 Ping to the frozen peer on the wire\n{c}"
        );
        assert!(
            !back.contains(&PONG),
            "a 7.03 Pong from the frozen peer?\n{c}"
        );
        format!(
            "{} 7.02 Ping(s) to the frozen peer on the wire, no 7.03 Pong",
            sent.iter().filter(|&&x| x == PING).count()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// (a) a frozen server

fn frozen_server_ours(secure: bool) -> String {
    let server = libcoap_server();
    let relay = TcpRelay::new(server.addr(secure));
    let client = our_observer(&relay, secure, &server);
    let frozen = server.proc.freeze();
    let r = client.finish(Duration::from_secs(30));
    let after = Instant::now().saturating_duration_since(frozen);
    let c = ctx(&r, &server, &relay);
    assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
    assert!(r.stderr.contains("keepalive failure"), "{c}");
    assert!(
        after <= BOUND + SLACK,
        "keepalive failure {after:?} after the freeze > bound {BOUND:?} + {SLACK:?}\n{c}"
    );
    let wire = probed_unanswered(&relay, secure, true, frozen, &c);
    format!(
        "{}: exit 3 {:.2} s after the server was frozen (bound {} s from the last packet heard); {wire}; stderr: `{}`",
        scheme(secure),
        after.as_secs_f64(),
        BOUND.as_secs(),
        line_with(&r, "keepalive failure")
    )
}

/// A live server that is slow to answer: our client (`-K 1`) waiting for `/async?4` pings it
/// every second of silence and is answered, so it waits for the response and exits 0.
fn idle_live_server_ours(secure: bool) -> String {
    let server = libcoap_server();
    let relay = TcpRelay::new(server.addr(secure));
    let ca = pki("ca.pem");
    let uri = relay.uri(scheme(secure), "async?4");
    let mut args = vec!["-K", K, "-B", "30"];
    if secure {
        args.extend_from_slice(&["-C", &ca]);
    }
    args.push(&uri);
    let r = coap_engine_conformance::run(&ours("coap-client"), &args, Duration::from_secs(30));
    let c = ctx(&r, &server, &relay);
    assert_eq!(
        r.code(),
        Some(0),
        "a live server must not be declared dead while it takes 4 s to answer\n{c}"
    );
    assert!(r.stdout.contains("done"), "libcoap's /async answer\n{c}");
    assert!(
        r.elapsed >= Duration::from_secs(4),
        "/async?4 answers after 4 s\n{c}"
    );
    if secure {
        return format!(
            "{}: exit 0 after {:.2} s with libcoap's answer (Pings inside TLS)",
            scheme(secure),
            r.elapsed.as_secs_f64()
        );
    }
    let pings = frames(&relay, 0, true)
        .into_iter()
        .filter(|f| f.1 == PING)
        .count();
    let pongs: Vec<usize> = frames(&relay, 0, false)
        .into_iter()
        .filter(|f| f.1 == PONG)
        .map(|f| f.2)
        .collect();
    assert!(
        pings >= 2 && pongs.len() >= 2,
        "a Ping per second of silence, each answered, expected\n{c}"
    );
    format!(
        "{}: exit 0 after {:.2} s with libcoap's answer; {pings} Ping(s) on the wire, answered by {} Pong(s) with token length(s) {:?} (RFC 8323 §5.4 asks for the Ping's token)",
        scheme(secure),
        r.elapsed.as_secs_f64(),
        pongs.len(),
        pongs
    )
}

/// libcoap's server (no keepalive option) while our observing client is frozen: recorded.
fn frozen_client_libcoap_server() -> String {
    let mut notes = Vec::new();
    for secure in [false, true] {
        let server = libcoap_server();
        let relay = TcpRelay::new(server.addr(secure));
        let uri = relay.uri(scheme(secure), "time");
        let ca = pki("ca.pem");
        let mut args = vec!["-s", "60", "-B", "30", "-w", "-v", "6"];
        if secure {
            args.extend_from_slice(&["-C", &ca]);
        }
        args.push(&uri);
        let client = Proc::spawn(&ours("coap-client"), &args);
        let deadline = Instant::now() + WAIT;
        assert!(
            client.wait_line("notification 2 ", deadline).is_some(),
            "our client printed no second notification\n{}\n{}",
            client.text(),
            relay.trace()
        );
        let frozen = client.freeze();
        // Watch for 6 s (3 × the bound our server keeps with -K 1).
        let watch = Duration::from_secs(6);
        std::thread::sleep(watch);
        let to_client = bytes_after(&relay, false, frozen);
        let frames_note = if secure {
            format!("{to_client} encrypted bytes")
        } else {
            let codes = codes_after(&relay, false, frozen);
            format!(
                "{} notification(s), {} Ping(s)",
                codes.iter().filter(|&&x| x == 0x45).count(),
                codes.iter().filter(|&&x| x == PING).count()
            )
        };
        assert_eq!(
            relay.accepted(),
            1,
            "one connection expected\n{}",
            relay.trace()
        );
        notes.push(format!(
            "{}: in the {} s after our client froze, coap-server-openssl sent it {frames_note} and {}",
            scheme(secure),
            watch.as_secs(),
            if to_client > 0 {
                "kept the connection and the observation (nothing tells it the client is gone)"
            } else {
                "sent nothing"
            }
        ));
    }
    notes.join("; ")
}

// ---------------------------------------------------------------------------------------------
// (b) a reset connection

fn reset_ours() -> String {
    let mut notes = Vec::new();
    for secure in [false, true] {
        // The relay resets both ways (SO_LINGER 0).
        let server = libcoap_server();
        let relay = TcpRelay::new(server.addr(secure));
        let client = our_observer(&relay, secure, &server);
        let at = relay.reset();
        let r = client.finish(Duration::from_secs(30));
        let after = Instant::now().saturating_duration_since(at);
        let c = ctx(&r, &server, &relay);
        assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
        let line = line_with(&r, "connection reset by");
        assert!(
            line.contains("during the observation"),
            "a `connection reset by ... during the observation` line expected\n{c}"
        );
        assert!(
            after <= RESET_BOUND,
            "the reset was reported {after:?} after it (> {RESET_BOUND:?})\n{c}"
        );
        notes.push(format!(
            "{} RST: exit 3 after {:.2} s, `{line}`",
            scheme(secure),
            after.as_secs_f64()
        ));

        // The server killed (SIGKILL): its kernel closes the connection.
        let mut server = libcoap_server();
        let relay = TcpRelay::new(server.addr(secure));
        let client = our_observer(&relay, secure, &server);
        let at = server.proc.kill9();
        let r = client.finish(Duration::from_secs(30));
        let after = Instant::now().saturating_duration_since(at);
        let c = ctx(&r, &server, &relay);
        assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
        let line = r
            .stderr
            .lines()
            .find(|l| {
                l.contains("closed the connection during the observation")
                    || l.contains("connection reset by")
            })
            .unwrap_or_else(|| panic!("no typed connection failure on stderr\n{c}"))
            .trim()
            .to_string();
        assert!(
            after <= RESET_BOUND,
            "the closed connection was reported {after:?} after the kill (> {RESET_BOUND:?})\n{c}"
        );
        notes.push(format!(
            "{} server killed (SIGKILL): exit 3 after {:.2} s, `{line}`",
            scheme(secure),
            after.as_secs_f64()
        ));
    }
    notes.join("; ")
}

// ---------------------------------------------------------------------------------------------
// (c) the reverse: our server with keepalive, libcoap's client frozen or reset

fn our_server(keepalive: bool) -> Peer {
    let mut args = vec!["-v", "6"];
    if keepalive {
        args.extend_from_slice(&["-K", K]);
    }
    Peer::start(&ours("coap-server"), &args)
}

/// libcoap's client observing `/time` on our server through `relay`; returns once our server
/// logged the observer.
fn libcoap_observer(
    relay: &TcpRelay,
    secure: bool,
    server: &Peer,
    extra: &[&str],
) -> (Proc, Instant) {
    let ca = pki("ca.pem");
    let uri = relay.uri(scheme(secure), "time");
    let mut args = vec!["-s", "60", "-B", "30", "-w"];
    args.extend_from_slice(extra);
    if secure {
        args.extend_from_slice(&["-C", &ca]);
    }
    args.push(&uri);
    let client = Proc::spawn(&libcoap(Tls::OpenSsl.client()), &args);
    let (added, _) = server
        .proc
        .wait_line("observer added", Instant::now() + WAIT)
        .unwrap_or_else(|| {
            panic!(
                "our server logged no observer\n{}",
                both(server, &client, relay)
            )
        });
    (client, added)
}

/// What the server and the client printed, and what crossed the relay, for a failure message.
fn both(server: &Peer, client: &Proc, relay: &TcpRelay) -> String {
    format!(
        "{}\n{}\n--- relay\n{}",
        server.proc.text(),
        client.text(),
        relay.trace()
    )
}

fn frozen_client_our_server(secure: bool) -> String {
    let server = our_server(true);
    let relay = TcpRelay::new(server.addr(secure));
    let (client, added) = libcoap_observer(&relay, secure, &server, &[]);
    // Healthy, the client answers our keepalive Pings: twice the bound on, the session lives.
    let healthy = added + 2 * BOUND;
    std::thread::sleep(healthy.saturating_duration_since(Instant::now()));
    let count = |v: &[u8], code: u8| v.iter().filter(|&&x| x == code).count();
    if !secure {
        // Over coap+tcp the freeze waits until two Pings answered are on the wire, however
        // slowly a loaded machine got there (the assertion below says whether they came), and
        // then comes right after a Pong the relay recorded: our server pings only after a
        // second of silence, so no Ping is in flight. Frozen at a moment of its own, the
        // client may answer a Ping while the signal is on its way, and the relay would record
        // that Pong after the freeze.
        let deadline = added + WAIT;
        let pongs = || count(&codes_after(&relay, true, added), PONG);
        while Instant::now() < deadline
            && (count(&codes_after(&relay, false, added), PING) < 2 || pongs() < 2)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let seen = pongs();
        while Instant::now() < deadline && pongs() == seen {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let c = || both(&server, &client, &relay);
    assert!(
        !server.proc.text().contains("session failed"),
        "the session failed while the client was running\n{}",
        c()
    );
    let pongs = if secure {
        String::new()
    } else {
        let to_client = codes_after(&relay, false, added);
        let from_client = codes_after(&relay, true, added);
        assert!(
            count(&to_client, PING) >= 2 && count(&from_client, PONG) >= 2,
            "Pings answered by Pongs expected before the freeze\n{}",
            c()
        );
        format!(
            "{} Ping(s) answered by {} Pong(s) in the {:.1} s before the freeze; ",
            count(&to_client, PING),
            count(&from_client, PONG),
            Instant::now()
                .saturating_duration_since(added)
                .as_secs_f64()
        )
    };
    let frozen = client.freeze();
    let deadline = frozen + BOUND + SLACK + Duration::from_secs(3);
    let removed = server
        .proc
        .wait_line("observer removed: the client's session ended", deadline);
    let failed = server
        .proc
        .wait_line("session failed: keepalive failure", deadline);
    let (at, removed) =
        removed.unwrap_or_else(|| panic!("our server never removed the observer\n{}", c()));
    let (_, failed) = failed.unwrap_or_else(|| panic!("no keepalive failure logged\n{}", c()));
    assert!(
        at > frozen,
        "the observer was removed before the freeze\n{}",
        c()
    );
    let after = at - frozen;
    assert!(
        after <= BOUND + SLACK,
        "observer removed {after:?} after the freeze > bound {BOUND:?} + {SLACK:?}\n{}",
        c()
    );
    let wire = probed_unanswered(&relay, secure, false, frozen, &c());
    let strip = |l: &str| {
        l.split_once("INFO: ")
            .or(l.split_once("WARN: "))
            .map_or(l, |(_, m)| m)
            .trim()
            .to_string()
    };
    format!(
        "{}: {pongs}observer removed {:.2} s after the client was frozen (bound {} s from the last packet heard); {wire}; our server logged `{}` and `{}`",
        scheme(secure),
        after.as_secs_f64(),
        BOUND.as_secs(),
        strip(&failed),
        strip(&removed)
    )
}

/// libcoap's client with `-K 1` observing our server, which is frozen: recorded.
fn frozen_server_libcoap_client() -> String {
    let mut notes = Vec::new();
    for secure in [false, true] {
        let server = our_server(false);
        let relay = TcpRelay::new(server.addr(secure));
        let (mut client, _) = libcoap_observer(&relay, secure, &server, &["-K", K, "-v", "7"]);
        assert!(
            client.wait_count("process incoming 2.05 response", 2, Instant::now() + WAIT),
            "coap-client-openssl logged no second notification\n{}",
            client.text()
        );
        let frozen = server.proc.freeze();
        let watch = Duration::from_secs(10);
        let exited = client.wait_exit(frozen + watch);
        let out = client.text();
        let after_freeze: Vec<String> = client
            .snapshot()
            .into_iter()
            .filter(|l| l.at > frozen)
            .map(|l| l.text)
            .collect();
        let pings = after_freeze.iter().filter(|l| l.contains("c:Ping")).count();
        let disconnected = logged(
            after_freeze.iter().map(|l| l.as_str()),
            "session disconnected",
            " : ",
        );
        let keepalive = keepalive_event(out.lines());
        let reconnect = after_freeze
            .iter()
            .any(|l| l.contains("coap_socket_connect_tcp"));
        notes.push(format!(
            "{}: {}; {pings} Ping(s) logged after the freeze; internal disconnect logged: {}; keepalive failure reported: {}; reconnection attempted: {}",
            scheme(secure),
            match exited {
                Some((s, at)) => format!(
                    "exit status {} {:.2} s after the freeze",
                    s.code().map_or("none".into(), |c| c.to_string()),
                    (at - frozen).as_secs_f64()
                ),
                None => format!("still running {} s after the freeze", watch.as_secs()),
            },
            disconnected,
            keepalive,
            if reconnect { "yes" } else { "no" }
        ));
    }
    notes.join("; ")
}

/// The relay resets the connection of libcoap's observing client: our server (with `-K 1`)
/// drops the observer at once; libcoap's client's behaviour goes to the note.
fn reset_our_server() -> String {
    let mut notes = Vec::new();
    for secure in [false, true] {
        let server = our_server(true);
        let relay = TcpRelay::new(server.addr(secure));
        let (mut client, _) = libcoap_observer(&relay, secure, &server, &[]);
        let at = relay.reset();
        let c = || both(&server, &client, &relay);
        let deadline = at + RESET_BOUND + Duration::from_secs(3);
        let reset = server
            .proc
            .wait_line("the peer reset the connection", deadline);
        let removed = server
            .proc
            .wait_line("observer removed: the client's session ended", deadline);
        let (reset_at, reset_line) =
            reset.unwrap_or_else(|| panic!("our server logged no reset connection\n{}", c()));
        let (removed_at, _) =
            removed.unwrap_or_else(|| panic!("our server never removed the observer\n{}", c()));
        let after = removed_at.max(reset_at).saturating_duration_since(at);
        assert!(
            after <= RESET_BOUND,
            "our server took {after:?} (> {RESET_BOUND:?}) to drop the reset client\n{}",
            c()
        );
        let exited = client.wait_exit(at + Duration::from_secs(5));
        let strip = |l: &str| {
            l.split_once("INFO: ")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        };
        notes.push(format!(
            "{}: our server logged `{}` and removed the observer {:.2} s after the RST; coap-client-openssl {} (logged {})",
            scheme(secure),
            strip(&reset_line),
            after.as_secs_f64(),
            match exited {
                Some((s, t)) => format!(
                    "exit status {} {:.2} s after it",
                    s.code().map_or("none".into(), |c| c.to_string()),
                    (t - at).as_secs_f64()
                ),
                None => "still running 5 s after it".into(),
            },
            client
                .snapshot()
                .iter()
                .map(|l| &l.text)
                .find(|l| l.contains(" WARN ") || l.contains(" ERR "))
                .map_or("nothing at WARN or ERR".into(), |l| format!(
                    "`{}`",
                    l.split_once(" WARN ")
                        .or_else(|| l.split_once(" ERR "))
                        .map_or(l.as_str(), |(_, m)| m)
                        .trim()
                ))
        ));
    }
    notes.join("; ")
}

pub fn cases() -> Vec<Case> {
    const O: Tls = Tls::OpenSsl;
    vec![
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "frozen server, coap+tcp: coap-server-openssl SIGSTOPped while our coap-client -K 1 observes /time: keepalive failure within interval+timeout, exit 3; a 7.02 Ping unanswered on the wire",
            run: || frozen_server_ours(false),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "frozen server, coaps+tcp: coap-server-openssl SIGSTOPped while our coap-client -K 1 observes /time: keepalive failure within interval+timeout, exit 3",
            run: || frozen_server_ours(true),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "live but slow server, coap+tcp: our coap-client -K 1 waiting 4 s for /async?4 keeps pinging (7.02) and is answered (7.03): exit 0, no false keepalive failure",
            run: || idle_live_server_ours(false),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "live but slow server, coaps+tcp: our coap-client -K 1 waiting 4 s for /async?4: exit 0, no false keepalive failure",
            run: || idle_live_server_ours(true),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "reset connection, coap+tcp and coaps+tcp: the relay resets (RST) our observing client's connection, or the server is killed: exit 3 at once with the typed reason",
            run: reset_ours,
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::OursToTls(O),
            checks: "frozen client, coap-server-openssl side: our observing coap-client SIGSTOPped; what libcoap's server (no keepalive option) does, recorded",
            run: frozen_client_libcoap_server,
            record_only: true,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::TlsToOurs(O),
            checks: "frozen client, coap+tcp: coap-client-openssl observing /time SIGSTOPped: our coap-server -K 1 fails the session and removes the observer within interval+timeout; Ping unanswered on the wire",
            run: || frozen_client_our_server(false),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::TlsToOurs(O),
            checks: "frozen client, coaps+tcp: coap-client-openssl observing /time SIGSTOPped: our coap-server -K 1 fails the session and removes the observer within interval+timeout",
            run: || frozen_client_our_server(true),
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::TlsToOurs(O),
            checks: "reset connection, coap+tcp and coaps+tcp: the relay resets coap-client-openssl's observing connection: our coap-server removes the observer at once; libcoap's client's reaction recorded",
            run: reset_our_server,
            record_only: false,
        },
        Case {
            id: "LIVE_05",
            dir: Dir::TlsToOurs(O),
            checks: "frozen server, client side: coap-client-openssl -K 1 observing /time while our coap-server is SIGSTOPped, coap+tcp and coaps+tcp: libcoap's behaviour recorded",
            run: frozen_server_libcoap_client,
            record_only: true,
        },
    ]
}
