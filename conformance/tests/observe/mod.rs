//! OBS_01–12 (RFC 7641) in both directions: our `coap-client -s` (or the engine in-process,
//! where a step needs it) against `coap-server-notls`, and `coap-client-notls -s` against our
//! `coap-server`. The observing client talks through the recording relay; clients that change
//! or delete the observed resource talk to the server directly (the relay forwards to one
//! client only). Each case checks the notifications on the wire: the registration's token on
//! every one, the Observe sequence increasing, the message type (CON, and then acknowledged
//! by the client with its Message ID, or NON), and the end of the observation.
//!
//! What libcoap cannot do, or does differently from RFC 7641, is recorded (result
//! "recorded") with the reason.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use coap_engine::{Config, Event, RequestId};
use coap_engine_conformance::{libcoap, ours, Background, Datagram, Relay, Run, Server};
use coap_engine_mio::{Driver, Handler};

use crate::{code, libcoap_server, our_server, server_for, type_name, Case, Dir};

/// Limit for a whole observing client run.
const OBSERVER_LIMIT: Duration = Duration::from_secs(40);
/// Keepalive of our server in OBS_05 (`-K 1`): interval + timeout is the bound.
const K: u64 = 1;
const BOUND: Duration = Duration::from_secs(2 * K);
/// Timer resolution, process scheduling and a loaded machine, on top of a bound.
const SLACK: Duration = Duration::from_millis(750);

// ---------------------------------------------------------------------------------------------
// Clients

/// Starts the observing client (ours when `ours_client`) with `args` through nothing: the
/// caller puts the relay's URI in `args`.
fn spawn_observer(ours_client: bool, args: &[&str]) -> Background {
    let mut a = vec!["-B", "20"];
    a.extend_from_slice(args);
    if ours_client {
        Background::spawn(&ours("coap-client"), &a)
    } else {
        Background::spawn(&libcoap("coap-client-notls"), &a)
    }
}

/// A plain request by the other side's client, straight to the server (not through the
/// relay, which forwards to the observer only).
fn direct(ours_client: bool, args: &[&str]) -> Run {
    let mut a = vec!["-B", "10"];
    a.extend_from_slice(args);
    let program = if ours_client {
        ours("coap-client")
    } else {
        libcoap("coap-client-notls")
    };
    coap_engine_conformance::run(&program, &a, Duration::from_secs(20))
}

// ---------------------------------------------------------------------------------------------
// The wire

fn observe_of(p: &Packet) -> Option<u32> {
    p.get_option(CoapOption::Observe)
        .and_then(|l| l.front())
        .filter(|v| v.len() <= 3)
        .map(|v| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
}

fn is_response(p: &Packet) -> bool {
    matches!(p.header.code, MessageClass::Response(_))
}

/// One observation as seen on the wire.
struct Wire {
    dgs: Vec<Datagram>,
    /// The registration: the first GET with Observe = 0.
    registration: Packet,
    reg_at: Instant,
    /// Responses from the server with the registration's token (dropped ones included),
    /// with their arrival.
    answers: Vec<(Instant, Packet, bool)>,
}

impl Wire {
    #[track_caller]
    fn read(relay: &Relay, c: &str) -> Wire {
        let dgs = relay.datagrams();
        let (reg_at, registration) = dgs
            .iter()
            .filter(|d| d.to_server && !d.is_empty_message())
            .map(|d| (d.at, d.packet()))
            .find(|(_, p)| {
                p.header.code == MessageClass::Request(RequestType::Get) && observe_of(p) == Some(0)
            })
            .unwrap_or_else(|| panic!("no GET with Observe = 0 on the wire\n{c}"));
        let token = registration.get_token().to_vec();
        let answers = dgs
            .iter()
            .filter(|d| !d.to_server && !d.is_empty_message())
            .map(|d| (d.at, d.packet(), d.dropped))
            .filter(|(_, p, _)| is_response(p) && p.get_token() == token.as_slice())
            .collect();
        Wire {
            dgs,
            registration,
            reg_at,
            answers,
        }
    }

    fn token(&self) -> &[u8] {
        self.registration.get_token()
    }

    /// Notifications (2.xx with Observe) that reached the client, in order; a retransmission
    /// (a CON with a Message ID already seen) counts once, as the client's deduplication
    /// does.
    fn notifications(&self) -> Vec<(Instant, Packet)> {
        let mut seen: Vec<u16> = Vec::new();
        let mut out = Vec::new();
        for (t, p, dropped) in &self.answers {
            if *dropped || observe_of(p).is_none() || !code(p).starts_with('2') {
                continue;
            }
            if p.header.get_type() == MessageType::Confirmable {
                if seen.contains(&p.header.message_id) {
                    continue;
                }
                seen.push(p.header.message_id);
            }
            out.push((*t, p.clone()));
        }
        out
    }

    /// The client's requests with the registration's token after `from`.
    fn requests_after(&self, from: Instant) -> Vec<(Instant, Packet)> {
        self.dgs
            .iter()
            .filter(|d| d.to_server && !d.is_empty_message() && d.at > from)
            .map(|d| (d.at, d.packet()))
            .filter(|(_, p)| {
                matches!(p.header.code, MessageClass::Request(_)) && p.get_token() == self.token()
            })
            .collect()
    }

    /// When the client sent its deregistration (GET with Observe = 1), if it did.
    fn deregistration_at(&self) -> Option<Instant> {
        self.requests_after(self.reg_at)
            .into_iter()
            .find(|(_, p)| observe_of(p) == Some(1))
            .map(|(t, _)| t)
    }

    /// Whether the client acknowledged the CON message with `mid` (an Empty ACK).
    fn acked(&self, mid: u16) -> bool {
        self.dgs.iter().any(|d| {
            d.to_server && d.is_empty_message() && {
                let p = d.packet();
                p.header.get_type() == MessageType::Acknowledgement && p.header.message_id == mid
            }
        })
    }

    /// An Empty RST from the client for `mid`, and when.
    fn reset(&self, mid: u16) -> Option<Instant> {
        self.dgs
            .iter()
            .find(|d| {
                d.to_server && d.is_empty_message() && {
                    let p = d.packet();
                    p.header.get_type() == MessageType::Reset && p.header.message_id == mid
                }
            })
            .map(|d| d.at)
    }
}

/// What notifications must be: CON (each acknowledged by the client), NON, or NON with
/// libcoap's every fifth CON (its `-N` keeps one in five confirmable, RFC 7641 §4.5).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Con,
    Non,
    NonMostly,
}

/// Checks the notifications of an observation: at least `min`, every one with the
/// registration's token (the relay's filter) and an Observe option whose value increases
/// (RFC 7641 §3.4 on a network that does not reorder), the first one piggybacked on the ACK of
/// a CON registration, the later ones of `kind`. Returns a summary for the report.
#[track_caller]
fn check_notifications(w: &Wire, kind: Kind, min: usize, c: &str) -> String {
    let n = w.notifications();
    assert!(
        n.len() >= min,
        "{} notification(s) reached the client, {min} expected\n{c}",
        n.len()
    );
    let seq: Vec<u32> = n.iter().filter_map(|(_, p)| observe_of(p)).collect();
    assert!(
        seq.windows(2).all(|v| v[0] < v[1]),
        "Observe values {seq:?} must increase\n{c}"
    );
    if w.registration.header.get_type() == MessageType::Confirmable {
        let (_, first) = &n[0];
        assert_eq!(
            type_name(first.header.get_type()),
            "ACK",
            "the registration's answer is piggybacked\n{c}"
        );
        assert_eq!(
            first.header.message_id, w.registration.header.message_id,
            "{c}"
        );
    }
    let later: Vec<&Packet> = n[1..]
        .iter()
        .map(|(_, p)| p)
        .filter(|p| p.header.get_type() != MessageType::Acknowledgement)
        .collect();
    let cons = later
        .iter()
        .filter(|p| p.header.get_type() == MessageType::Confirmable)
        .count();
    let nons = later.len() - cons;
    match kind {
        Kind::Con => assert_eq!(nons, 0, "CON notifications expected\n{c}"),
        Kind::Non => assert_eq!(cons, 0, "NON notifications expected\n{c}"),
        Kind::NonMostly => assert!(
            nons >= 1 && cons <= later.len().div_ceil(5),
            "NON notifications, at most one in five CON, expected\n{c}"
        ),
    }
    // A client that exits right after its deregistration (libcoap's) cannot acknowledge what
    // crosses it: only notifications sent before it are checked.
    let dereg_at = w.deregistration_at();
    let before: Vec<u16> = n
        .iter()
        .filter(|(t, _)| dereg_at.is_none_or(|d| *t < d))
        .map(|(_, p)| p.header.message_id)
        .collect();
    for p in later.iter().filter(|p| {
        p.header.get_type() == MessageType::Confirmable && before.contains(&p.header.message_id)
    }) {
        assert!(
            w.acked(p.header.message_id),
            "CON notification {:#06x} not acknowledged\n{c}",
            p.header.message_id
        );
    }
    let types = match (cons, nons) {
        (c, 0) => format!("{c} CON notification(s), each ACKed with its MID"),
        (0, n) => format!("{n} NON notification(s)"),
        (c, n) => format!("{n} NON and {c} CON notification(s) (ACKed)"),
    };
    format!(
        "registration answered (Observe {}), then {types}, Observe {}..{} increasing, token {:02x?} on all",
        seq[0],
        seq[1.min(seq.len() - 1)],
        seq[seq.len() - 1],
        w.token()
    )
}

/// The end of `-s`: a GET with Observe = 1, the registration's token and options
/// (RFC 7641 §3.6), answered without Observe; and no notification after that answer
/// (`quiet` was waited after the client ended). Returns a summary.
#[track_caller]
fn check_deregistration(w: &Wire, c: &str) -> String {
    let (at, dereg) = w
        .requests_after(w.reg_at)
        .into_iter()
        .find(|(_, p)| observe_of(p) == Some(1))
        .unwrap_or_else(|| panic!("no GET with Observe = 1 (deregistration)\n{c}"));
    assert_eq!(
        dereg.header.code,
        MessageClass::Request(RequestType::Get),
        "{c}"
    );
    let path = |p: &Packet| -> Vec<Vec<u8>> {
        p.get_option(CoapOption::UriPath)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(path(&dereg), path(&w.registration), "same Uri-Path\n{c}");
    let answer = w
        .answers
        .iter()
        .find(|(t, p, _)| {
            *t >= at
                && observe_of(p).is_none()
                && (p.header.get_type() != MessageType::Acknowledgement
                    || p.header.message_id == dereg.header.message_id)
        })
        .map(|(t, p, _)| (*t, p.clone()));
    let after = answer.as_ref().map_or(at, |(t, _)| *t);
    // A CON notification sent before may still be retransmitted (RFC 7252 §4.2); a new one
    // (a Message ID not seen before) must not come.
    let earlier: Vec<u16> = w
        .answers
        .iter()
        .filter(|(t, _, _)| *t <= after)
        .map(|(_, p, _)| p.header.message_id)
        .collect();
    let late: Vec<&Packet> = w
        .answers
        .iter()
        .filter(|(t, p, _)| {
            *t > after && observe_of(p).is_some() && !earlier.contains(&p.header.message_id)
        })
        .map(|(_, p, _)| p)
        .collect();
    assert!(
        late.is_empty(),
        "{} new notification(s) after the deregistration was answered\n{c}",
        late.len()
    );
    match answer {
        Some((_, p)) => format!(
            "deregistered with GET Observe 1 ({}), answered {} without Observe; no notification after",
            type_name(dereg.header.get_type()),
            code(&p)
        ),
        None => format!(
            "deregistered with GET Observe 1 ({}); answer not seen; no notification after",
            type_name(dereg.header.get_type())
        ),
    }
}

/// Messages from the server with the token after `at` that are not retransmissions of one
/// sent before (a Message ID not seen until then).
fn new_after(w: &Wire, at: Instant) -> Vec<&(Instant, Packet, bool)> {
    let earlier: Vec<u16> = w
        .answers
        .iter()
        .filter(|(t, _, _)| *t <= at)
        .map(|(_, p, _)| p.header.message_id)
        .collect();
    w.answers
        .iter()
        .filter(|(t, p, _)| *t > at && !earlier.contains(&p.header.message_id))
        .collect()
}

/// Every notification's payload was printed as it came: by our client exactly (with `-w`,
/// one per line), by libcoap's somewhere in its output.
#[track_caller]
fn check_printed(w: &Wire, run: &Run, ours_client: bool, c: &str) {
    // One that crosses the deregistration is rightly not delivered any more.
    let dereg_at = w.deregistration_at();
    let payloads: Vec<String> = w
        .notifications()
        .iter()
        .filter(|(t, _)| dereg_at.is_none_or(|d| *t < d))
        .map(|(_, p)| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    if ours_client {
        let want: String = payloads.iter().map(|p| format!("{p}\n")).collect();
        assert_eq!(run.stdout, want, "each notification printed, in order\n{c}");
    } else {
        for p in &payloads {
            assert!(run.stdout.contains(p.as_str()), "{p:?} not printed\n{c}");
        }
    }
}

fn ctx(relay: &Relay, run: &Run) -> String {
    format!("{}\n--- wire\n{}", run.describe(), relay.trace())
}

/// A client (ours if `ours_client`) observing `/time` of `server` through a new relay, with
/// `args` before the URI, once `count` notifications have crossed the relay.
fn observing_time(
    server: &Server,
    ours_client: bool,
    args: &[&str],
    count: usize,
) -> (Relay, Background) {
    let relay = Relay::new(server.addr());
    let uri = relay.uri("time");
    let observer = spawn_observer(ours_client, &[args, &[uri.as_str()]].concat());
    wait_notifications(&relay, count, Duration::from_secs(10));
    (relay, observer)
}

/// Waits until `count` notifications have reached the client (or panics after `limit`).
#[track_caller]
fn wait_notifications(relay: &Relay, count: usize, limit: Duration) {
    let give_up = Instant::now() + limit;
    loop {
        let n = relay
            .datagrams()
            .iter()
            .filter(|d| !d.to_server && !d.dropped && !d.is_empty_message())
            .filter(|d| {
                let p = d.packet();
                is_response(&p) && observe_of(&p).is_some()
            })
            .count();
        if n >= count {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "{n} notification(s) within {limit:?}, {count} expected\n{}",
            relay.trace()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// OBS_01, OBS_02, OBS_12: observe /time for 3 s

fn observe_time(ours_client: bool, server_args: &[&str], kind: Kind, dereg: bool) -> String {
    let server = server_for(ours_client, server_args);
    let relay = Relay::new(server.addr());
    let uri = relay.uri("time");
    let run = spawn_observer(ours_client, &["-s", "3", "-w", &uri]).finish(OBSERVER_LIMIT);
    // Anything the server still sends after the client ended shows on the wire meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    let c = ctx(&relay, &run);
    run.expect_code(0);
    let w = Wire::read(&relay, &c);
    let summary = check_notifications(&w, kind, 3, &c);
    let lines = run.stdout.lines().filter(|l| !l.trim().is_empty()).count();
    check_printed(&w, &run, ours_client, &c);
    let end = check_deregistration(&w, &c);
    let mut note = format!("{summary}; {lines} payloads printed; exit 0");
    if dereg {
        note = format!("{end} (after {lines} payloads printed, exit 0)");
        if !ours_client {
            let log = server.output();
            assert!(
                log.contains("observer removed: the client deregistered"),
                "our server must log the removal\n{log}\n{c}"
            );
            note.push_str("; our server logged `observer removed: the client deregistered`");
        }
    } else {
        note.push_str(&format!("; {end}"));
    }
    note
}

// ---------------------------------------------------------------------------------------------
// OBS_04: the server goes silent; the client re-registers when Max-Age lapses

fn max_age_ours_to_libcoap() -> String {
    let server = libcoap_server(&[]);
    let (relay, observer) = observing_time(&server, true, &["-s", "12", "-w", "-v", "6"], 2);
    relay.drop_to_client_until_next_request();
    let dropped_at = Instant::now();
    let run = observer.finish(OBSERVER_LIMIT);
    let c = ctx(&relay, &run);
    run.expect_code(0);
    let w = Wire::read(&relay, &c);
    let last_heard = w
        .notifications()
        .into_iter()
        .rfind(|(t, _)| *t < dropped_at)
        .unwrap_or_else(|| panic!("no notification before the drop\n{c}"));
    let max_age = last_heard
        .1
        .get_option(CoapOption::MaxAge)
        .and_then(|l| l.front())
        .map_or(60, |v| v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
    let (rereg_at, rereg) = w
        .requests_after(dropped_at)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no request after the server went silent\n{c}"));
    assert_eq!(
        observe_of(&rereg),
        Some(0),
        "the client must re-register (GET Observe 0, RFC 7641 §3.3.1)\n{c}"
    );
    assert_ne!(
        rereg.header.message_id, w.registration.header.message_id,
        "a re-registration is a new message\n{c}"
    );
    let silent = rereg_at - last_heard.0;
    // The engine re-registers Max-Age + 5 s after the last fresh notification.
    let due = Duration::from_secs(max_age + 5);
    assert!(
        silent + Duration::from_millis(100) >= due && silent <= due + SLACK,
        "re-registration {silent:?} after the last notification, expected {due:?}\n{c}"
    );
    let resumed = w
        .notifications()
        .into_iter()
        .filter(|(t, _)| *t > rereg_at)
        .count();
    assert!(
        resumed >= 1,
        "notifications must resume after the re-registration\n{c}"
    );
    format!(
        "libcoap's /time has Max-Age {max_age}; the relay dropped its notifications from {:.1} s; our client re-registered (GET Observe 0, same token, new MID) {:.2} s after the last one (Max-Age + 5 s margin), notifications resumed ({resumed} more), exit 0",
        (dropped_at - w.reg_at).as_secs_f64(),
        silent.as_secs_f64()
    )
}

fn max_age_libcoap_to_ours() -> String {
    let server = our_server(&[]);
    let (relay, observer) = observing_time(&server, false, &["-s", "12", "-w"], 2);
    relay.drop_to_client_until_next_request();
    let dropped_at = Instant::now();
    let run = observer.finish(OBSERVER_LIMIT);
    let c = ctx(&relay, &run);
    assert!(run.status.is_some(), "coap-client-notls hung\n{c}");
    let w = Wire::read(&relay, &c);
    let after: Vec<(Instant, Packet)> = w.requests_after(dropped_at);
    let reregistrations = after
        .iter()
        .filter(|(_, p)| observe_of(p) == Some(0))
        .count();
    let first = after.first().map(|(t, p)| {
        format!(
            "its first request after that came {:.1} s later: GET Observe {}",
            (*t - dropped_at).as_secs_f64(),
            observe_of(p).map_or("absent".into(), |v| v.to_string())
        )
    });
    format!(
        "our /time has Max-Age 1; the relay dropped its notifications from {:.1} s; coap-client-notls -s 12 re-registered {reregistrations} time(s) in the {:.1} s of silence ({}); exit status {}",
        (dropped_at - w.reg_at).as_secs_f64(),
        run.elapsed.as_secs_f64() - (dropped_at - w.reg_at).as_secs_f64(),
        first.unwrap_or_else(|| "it sent nothing after that".into()),
        run.code().map_or("none".into(), |c| c.to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// OBS_05: the client vanishes (killed); the server notices

/// Polls `server`'s output for `needle`; when it first appeared (by polling), if it did
/// within `limit`.
fn wait_log(server: &Server, needle: &str, limit: Duration) -> Option<Instant> {
    let give_up = Instant::now() + limit;
    loop {
        if server.output().contains(needle) {
            return Some(Instant::now());
        }
        if Instant::now() > give_up {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn vanished_libcoap_to_ours() -> String {
    let k = K.to_string();
    let server = our_server(&["-K", &k, "-v", "6"]);
    let (relay, mut observer) = observing_time(&server, false, &["-s", "60"], 3);
    observer.kill();
    let killed = Instant::now();
    let run = observer.finish(Duration::from_secs(5));
    let line = "observer removed: the client's session ended";
    let seen = wait_log(&server, line, BOUND + SLACK + Duration::from_secs(3));
    let c = format!("{}\n--- server\n{}", ctx(&relay, &run), server.output());
    let seen = seen.unwrap_or_else(|| panic!("our server never logged `{line}`\n{c}"));
    let after = seen - killed;
    assert!(
        after <= BOUND + SLACK,
        "observer removed {after:?} after the client vanished > bound {BOUND:?} + {SLACK:?}\n{c}"
    );
    let w = Wire::read(&relay, &c);
    let unacked = w
        .answers
        .iter()
        .filter(|(t, p, _)| {
            *t > killed
                && p.header.get_type() == MessageType::Confirmable
                && !w.acked(p.header.message_id)
        })
        .count();
    let pings = w
        .dgs
        .iter()
        .filter(|d| {
            !d.to_server && d.at > killed && d.is_empty_message() && d.bytes[0] >> 4 & 3 == 0
        })
        .count();
    format!(
        "coap-client-notls -s 60 killed (SIGKILL) after 3 notifications; our coap-server -K 1 logged `{line}` {:.2} s later (bound {} s from the last packet heard), after {unacked} unacknowledged CON notification(s) and {pings} ping(s)",
        after.as_secs_f64(),
        BOUND.as_secs()
    )
}

fn vanished_ours_to_libcoap() -> String {
    let server = libcoap_server(&["-v", "7"]);
    let (relay, mut observer) = observing_time(&server, true, &["-s", "120"], 3);
    observer.kill();
    let killed = Instant::now();
    let run = observer.finish(Duration::from_secs(5));
    // RFC 7252 §4.8: a CON is given up after MAX_TRANSMIT_WAIT (93 s) at most.
    let removed = wait_log(&server, "removed subscription", Duration::from_secs(100));
    let c = format!("{}\n--- server\n{}", ctx(&relay, &run), server.output());
    let w = Wire::read(&relay, &c);
    let after: Vec<&(Instant, Packet, bool)> =
        w.answers.iter().filter(|(t, _, _)| *t > killed).collect();
    let mut mids: Vec<u16> = after.iter().map(|(_, p, _)| p.header.message_id).collect();
    let sent = mids.len();
    mids.sort_unstable();
    mids.dedup();
    let last = after
        .last()
        .map_or(0.0, |(t, _, _)| (*t - killed).as_secs_f64());
    let log = server.output();
    let give_up = log
        .lines()
        .find(|l| l.contains("give up after"))
        .and_then(|l| l.split(" : ").last())
        .map(|l| format!("`{}`", l.trim()));
    format!(
        "our coap-client -s 120 killed (SIGKILL) after 3 notifications; coap-server-notls then sent {sent} datagram(s) to it ({} distinct notification(s), the rest retransmissions; no new notification while a CON one is unacknowledged; the last {last:.1} s after the kill); {}",
        mids.len(),
        match removed {
            Some(t) => format!(
                "it logged {} and `removed subscription` {:.1} s after the kill (RFC 7641 §4.5: a CON notification that times out removes the observer)",
                give_up.unwrap_or_else(|| "a give-up".into()),
                (t - killed).as_secs_f64()
            ),
            None => "no removal within 100 s".into(),
        }
    )
}

// ---------------------------------------------------------------------------------------------
// OBS_07, OBS_08, OBS_09: another client changes or deletes the observed resource

/// Starts a server (`server_args`) behind a relay, makes `path` on it (PUT `first`), starts
/// the observer through the relay, waits for its first notification, runs `change` (a client
/// talking to the server directly), and returns the server, the relay, the observer's run
/// and the context for failure messages.
fn observe_and_change(
    ours_client: bool,
    server_args: &[&str],
    path: &str,
    first: &str,
    change: &[&str],
) -> (Server, Relay, Run, String) {
    let server = server_for(ours_client, server_args);
    let relay = Relay::new(server.addr());
    let target = server.uri(path);
    direct(ours_client, &["-m", "put", "-t", "0", "-e", first, &target]).expect_code(0);
    let uri = relay.uri(path);
    let observer = spawn_observer(ours_client, &["-s", "5", "-w", &uri]);
    wait_notifications(&relay, 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let mut args = change.to_vec();
    args.push(&target);
    direct(ours_client, &args).expect_code(0);
    let run = observer.finish(OBSERVER_LIMIT);
    let c = ctx(&relay, &run);
    (server, relay, run, c)
}

fn update_by_put(ours_client: bool) -> String {
    let (_server, relay, run, c) = observe_and_change(
        ours_client,
        &["-d", "10"],
        "example_data",
        "obs09 first",
        &["-m", "put", "-t", "0", "-e", "obs09 second"],
    );
    run.expect_code(0);
    let w = Wire::read(&relay, &c);
    let n = w.notifications();
    let payloads: Vec<String> = n
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(
        payloads.first().map(String::as_str),
        Some("obs09 first"),
        "{c}"
    );
    let update = n
        .iter()
        .find(|(_, p)| p.payload == b"obs09 second")
        .unwrap_or_else(|| panic!("no notification of the PUT's payload\n{c}"));
    let summary = check_notifications(&w, Kind::Con, 2, &c);
    check_printed(&w, &run, ours_client, &c);
    let end = check_deregistration(&w, &c);
    format!(
        "PUT /example_data by another client → {} notification with the new payload; {summary}; {end}",
        type_name(update.1.header.get_type())
    )
}

fn delete_ends(ours_client: bool) -> String {
    let (server, relay, run, c) = observe_and_change(
        ours_client,
        &["-d", "10", "-v", "6"],
        "obs07",
        "obs07 data",
        &["-m", "delete"],
    );
    let w = Wire::read(&relay, &c);
    let (at, gone) = w
        .answers
        .iter()
        .find(|(_, p, _)| code(p) == "4.04")
        .map(|(t, p, _)| (*t, p.clone()))
        .unwrap_or_else(|| panic!("no 4.04 notification after the DELETE\n{c}"));
    assert_eq!(
        observe_of(&gone),
        None,
        "a 4.04 ends the observation: no Observe (RFC 7641 §3.2)\n{c}"
    );
    let late = w
        .answers
        .iter()
        .filter(|(t, p, _)| *t > at && observe_of(p).is_some())
        .count();
    assert_eq!(late, 0, "no notification after the 4.04\n{c}");
    let kind = type_name(gone.header.get_type());
    if ours_client {
        run.expect_code(1);
        assert!(run.stderr.contains("4.04 Not Found"), "{c}");
        // The data, then the 4.04's empty payload (-w: a newline each).
        assert_eq!(run.stdout, "obs07 data\n\n", "{c}");
        assert!(
            run.elapsed < Duration::from_secs(4),
            "the 4.04 must end our client's -s 5 early\n{c}"
        );
        format!(
            "DELETE by another client → coap-server-notls sent a {kind} 4.04 with the token and no Observe; our client printed the data, then ended at once: exit 1, `4.04 Not Found` on stderr"
        )
    } else {
        let log = server.output();
        let line = "observer removed: the resource sent an error response";
        assert!(log.contains(line), "{log}\n{c}");
        let requests = w.requests_after(at).len();
        format!(
            "DELETE by another client → our server sent a {kind} 4.04 with the token and no Observe and logged `{line}`; coap-client-notls printed `{}` on stderr, sent {requests} request(s) after it and went on until its -s 5 was up: exit status {} after {:.1} s",
            if run.stderr.contains("4.04") || run.stdout.contains("4.04") { "4.04" } else { "nothing" },
            run.code().map_or("(killed)".into(), |c| c.to_string()),
            run.elapsed.as_secs_f64()
        )
    }
}

fn format_change(ours_client: bool) -> String {
    let (server, relay, run, c) = observe_and_change(
        ours_client,
        &["-d", "10", "-v", "6"],
        "example_data",
        "obs08 text",
        &["-m", "put", "-t", "50", "-e", "{\"obs\":8}"],
    );
    let w = Wire::read(&relay, &c);
    let after: Vec<&(Instant, Packet, bool)> = w.answers.iter().skip(1).collect();
    let describe = |p: &Packet| {
        let ct = p
            .get_option(CoapOption::ContentFormat)
            .and_then(|l| l.front())
            .map_or("none".into(), |v| {
                v.iter()
                    .fold(0u32, |a, b| (a << 8) | u32::from(*b))
                    .to_string()
            });
        format!(
            "{} {}{} (Content-Format {ct})",
            type_name(p.header.get_type()),
            code(p),
            if observe_of(p).is_some() {
                " with Observe"
            } else {
                " without Observe"
            }
        )
    };
    if ours_client {
        run.expect_code(0);
        let json = after
            .iter()
            .find(|(_, p, _)| p.payload == b"{\"obs\":8}")
            .map(|(_, p, _)| describe(p));
        format!(
            "PUT /example_data with Content-Format 50 by another client (registered when it was text/plain): coap-server-notls sent {}; RFC 7641 §4.2 says the Content-Format of notifications MUST be the registration's, else 4.06 and the observer removed; our client printed what came and exited 0",
            json.unwrap_or_else(|| "no notification of it".into())
        )
    } else {
        let (at, gone) = after
            .iter()
            .find(|(_, p, _)| code(p) == "4.06")
            .map(|(t, p, _)| (*t, p.clone()))
            .unwrap_or_else(|| panic!("no 4.06 notification after the Content-Format change\n{c}"));
        assert_eq!(observe_of(&gone), None, "{c}");
        assert!(
            !after.iter().any(|(_, p, _)| p.payload == b"{\"obs\":8}"),
            "the JSON representation must not reach a text/plain observer\n{c}"
        );
        let late = w
            .answers
            .iter()
            .filter(|(t, p, _)| *t > at && observe_of(p).is_some())
            .count();
        assert_eq!(late, 0, "no notification after the 4.06\n{c}");
        let log = server.output();
        let line = "observer removed: the resource sent an error response";
        assert!(log.contains(line), "{log}\n{c}");
        format!(
            "PUT /example_data with Content-Format 50 by another client: the text/plain observer got {} (RFC 7641 §4.2) and was removed (`{line}`); coap-client-notls exited {} after {:.1} s",
            describe(&gone),
            run.code().map_or("(killed)".into(), |c| c.to_string()),
            run.elapsed.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The engine in-process: OBS_06 (cancel, then RST) and OBS_10 (a plain GET meanwhile)

#[derive(Clone, Copy, PartialEq)]
enum Step {
    /// After two notifications, cancel: the next notification gets a Reset.
    Cancel,
    /// After two notifications, a plain GET of the same resource from the same endpoint;
    /// after two more, deregister.
    PlainGet,
}

struct EngineObserver {
    peer: SocketAddr,
    step: Step,
    obs: Option<RequestId>,
    notifications: Vec<(Instant, Packet)>,
    plain: Option<RequestId>,
    plain_answer: Option<(Instant, Packet)>,
    /// Notifications before the plain GET was answered.
    before_plain: usize,
    acted: Option<Instant>,
    ended: Option<String>,
    stop_at: Option<Instant>,
    give_up: Instant,
}

fn get_time() -> Packet {
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, b"time".to_vec());
    get
}

impl Handler for EngineObserver {
    fn on_event(&mut self, driver: &mut Driver, event: Event) -> ControlFlow<()> {
        let now = Instant::now();
        match event {
            Event::Notification { id, response, .. } if Some(id) == self.obs => {
                self.notifications.push((now, response));
                let n = self.notifications.len();
                if n == 2 && self.acted.is_none() {
                    self.acted = Some(now);
                    match self.step {
                        Step::Cancel => {
                            let t = driver.now();
                            driver.endpoint_mut().cancel(t, id).expect("cancel");
                            // Long enough for the next notification, its RST and a quiet spell.
                            self.stop_at = Some(now + Duration::from_secs(4));
                        }
                        Step::PlainGet => {
                            self.plain = Some(driver.request(self.peer, &get_time()).expect("GET"))
                        }
                    }
                }
                if self.step == Step::PlainGet
                    && self.plain_answer.is_some()
                    && n >= self.before_plain + 2
                    && self.stop_at.is_none()
                {
                    let t = driver.now();
                    driver.endpoint_mut().deregister(t, id).expect("deregister");
                    self.stop_at = Some(now + Duration::from_secs(5));
                }
            }
            Event::Response { id, response, .. } if Some(id) == self.plain => {
                self.before_plain = self.notifications.len();
                self.plain_answer = Some((now, response));
            }
            Event::Response { id, response, .. } if Some(id) == self.obs => {
                self.ended = Some(format!("response {}", code(&response)));
                if self.step == Step::PlainGet {
                    return ControlFlow::Break(());
                }
            }
            Event::RequestFailed { id, error, .. } if Some(id) == self.obs => {
                self.ended = Some(format!("{error}"));
            }
            Event::RequestFailed { id, error, .. } if Some(id) == self.plain => {
                panic!("the plain GET failed: {error}")
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn on_tick(&mut self, _driver: &mut Driver) -> ControlFlow<(), Option<std::time::Instant>> {
        let now = Instant::now();
        if now >= self.give_up || self.stop_at.is_some_and(|t| now >= t) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(self.stop_at.unwrap_or(self.give_up).min(self.give_up)))
    }
}

fn engine_observe(relay: &Relay, step: Step) -> EngineObserver {
    let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
    let peer = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let now = driver.now();
    let id = driver
        .endpoint_mut()
        .observe(now, peer, &get_time())
        .expect("observe");
    driver.drive();
    let mut o = EngineObserver {
        peer,
        step,
        obs: Some(id),
        notifications: Vec::new(),
        plain: None,
        plain_answer: None,
        before_plain: 0,
        acted: None,
        ended: None,
        stop_at: None,
        give_up: Instant::now() + Duration::from_secs(20),
    };
    driver.run(&mut o).unwrap();
    assert!(
        Instant::now() < o.give_up,
        "the in-process observer did not finish within 20 s\n{}",
        relay.trace()
    );
    o
}

/// OBS_06 with the engine in-process: after two notifications the observation is
/// cancelled (forgotten without telling the server); the next notification is answered with
/// RST, and the server must then stop (RFC 7641 §3.6, §4.5).
fn reset_by_engine(server: Server, ours_server: bool) -> String {
    let relay = Relay::new(server.addr());
    let o = engine_observe(&relay, Step::Cancel);
    let trace = relay.trace();
    assert_eq!(o.notifications.len(), 2, "{trace}");
    assert_eq!(o.ended.as_deref(), Some("cancelled"), "{trace}");
    let cancelled = o.acted.expect("cancelled");
    let w = Wire::read(&relay, &trace);
    let (next_at, next) = w
        .answers
        .iter()
        .find(|(t, _, _)| *t > cancelled)
        .map(|(t, p, _)| (*t, p.clone()))
        .unwrap_or_else(|| panic!("no notification after the cancel\n{trace}"));
    let rst_at = w.reset(next.header.message_id).unwrap_or_else(|| {
        panic!(
            "the notification after the cancel ({:#06x}) was not answered with RST\n{trace}",
            next.header.message_id
        )
    });
    let late: Vec<&(Instant, Packet, bool)> = new_after(&w, rst_at);
    assert!(
        late.is_empty(),
        "{} notification(s) after the RST: the observer must be removed\n{trace}",
        late.len()
    );
    let quiet = o.stop_at.expect("stopped") - rst_at;
    let mut note = format!(
        "engine cancel() after 2 notifications; the next ({} Observe {}, {:.1} s later) answered with RST (its MID); no notification in the {:.1} s after",
        type_name(next.header.get_type()),
        observe_of(&next).map_or("-".into(), |v| v.to_string()),
        (next_at - cancelled).as_secs_f64(),
        quiet.as_secs_f64()
    );
    if ours_server {
        let line = "observer removed: the client answered a notification with Reset";
        let log = server.output();
        assert!(log.contains(line), "{log}\n{trace}");
        note.push_str(&format!("; our server logged `{line}`"));
    }
    note
}

/// OBS_06, libcoap → ours: coap-client-notls never rejects a notification of its own
/// observation; a second coap-client-notls on the first one's port (`-p`) knows nothing of its
/// token and answers our next notification with RST.
fn reset_by_libcoap() -> String {
    let server = our_server(&["-v", "6"]);
    let relay = Relay::new(server.addr());
    let port = coap_engine_conformance::free_port().to_string();
    let uri = relay.uri("time");
    let mut first = spawn_observer(false, &["-p", &port, "-s", "60", &uri]);
    // Its token is libcoap's first, {01}; the second client starts from another (-T is the
    // value before the first token) so that it cannot take the notification for its answer.
    wait_notifications(&relay, 2, Duration::from_secs(10));
    first.kill();
    let first = first.finish(Duration::from_secs(5));
    let killed = Instant::now();
    // The same address, another process: it asks for /async?3 and meanwhile gets a
    // notification of the first one's observation.
    let async_uri = relay.uri("async?3");
    let second = spawn_observer(false, &["-p", &port, "-T", "0x70", "-v", "7", &async_uri])
        .finish(OBSERVER_LIMIT);
    std::thread::sleep(Duration::from_millis(1500));
    let c = format!(
        "{}\n{}\n--- server\n{}",
        first.describe(),
        ctx(&relay, &second),
        server.output()
    );
    let w = Wire::read(&relay, &c);
    let reset = w
        .answers
        .iter()
        .filter(|(t, _, _)| *t > killed)
        .find_map(|(_, p, _)| w.reset(p.header.message_id).map(|at| (at, p.clone())))
        .unwrap_or_else(|| panic!("no notification answered with RST\n{c}"));
    let (rst_at, rejected) = reset;
    let late = new_after(&w, rst_at).len();
    assert_eq!(late, 0, "notifications after the RST\n{c}");
    let line = "observer removed: the client answered a notification with Reset";
    assert!(server.output().contains(line), "{c}");
    format!(
        "coap-client-notls -s 60 killed after 2 notifications; a second coap-client-notls on its port (-p), which does not know the token, answered our next {} notification with RST; our server logged `{line}` and sent no more",
        type_name(rejected.header.get_type())
    )
}

/// OBS_10 with the engine in-process: a plain GET of the observed resource from the same
/// endpoint (another token) is answered without Observe and the notifications go on.
fn plain_get_by_engine(server: Server) -> String {
    let relay = Relay::new(server.addr());
    let o = engine_observe(&relay, Step::PlainGet);
    let trace = relay.trace();
    let (answered, plain) = o
        .plain_answer
        .clone()
        .unwrap_or_else(|| panic!("the plain GET was not answered\n{trace}"));
    assert_eq!(
        observe_of(&plain),
        None,
        "a plain GET is answered without Observe\n{trace}"
    );
    assert_eq!(code(&plain), "2.05", "{trace}");
    let after = o
        .notifications
        .iter()
        .filter(|(t, _)| *t > answered)
        .count();
    assert!(
        after >= 2,
        "notifications must go on after the plain GET\n{trace}"
    );
    assert!(
        o.ended
            .as_deref()
            .is_some_and(|e| e.starts_with("response 2.")),
        "the observation ends with the answer to the deregistration, not before: {:?}\n{trace}",
        o.ended
    );
    let w = Wire::read(&relay, &trace);
    let plain_req = w
        .dgs
        .iter()
        .filter(|d| d.to_server && !d.is_empty_message())
        .map(Datagram::packet)
        .find(|p| {
            matches!(p.header.code, MessageClass::Request(_))
                && observe_of(p).is_none()
                && p.get_token() != w.token()
        })
        .unwrap_or_else(|| panic!("no plain GET on the wire\n{trace}"));
    format!(
        "engine: observe /time, then from the same endpoint a plain GET (token {:02x?}, no Observe) answered {} without Observe; {after} notifications followed on the observation's token; ended by deregistration",
        plain_req.get_token(),
        code(&plain)
    )
}

/// OBS_10, libcoap → ours: coap-client-notls cannot send a second request while it observes;
/// another coap-client-notls (another endpoint) GETs /time meanwhile.
fn plain_get_by_libcoap() -> String {
    let server = our_server(&[]);
    let (relay, observer) = observing_time(&server, false, &["-s", "4", "-w"], 2);
    let plain = direct(false, &[&server.uri("time")]);
    plain.expect_code(0);
    let got = Instant::now();
    let run = observer.finish(OBSERVER_LIMIT);
    let c = ctx(&relay, &run);
    run.expect_code(0);
    let w = Wire::read(&relay, &c);
    let after = w
        .notifications()
        .into_iter()
        .filter(|(t, _)| *t > got)
        .count();
    assert!(
        after >= 1,
        "notifications must go on after the plain GET\n{c}"
    );
    check_notifications(&w, Kind::Con, 3, &c);
    let end = check_deregistration(&w, &c);
    format!(
        "coap-client-notls -s 4 observing; another coap-client-notls GET /time (plain, answered {}); {after} more notification(s) to the observer after it; {end}",
        plain.stdout.trim()
    )
}

// ---------------------------------------------------------------------------------------------

pub fn cases() -> Vec<Case> {
    use Dir::*;
    vec![
        case!(
            "OBS_01",
            OursToLibcoap,
            "observe /time (-s 3), CON notifications: token, Observe increasing, each ACKed",
            || observe_time(true, &[], Kind::Con, false)
        ),
        case!(
            "OBS_01",
            LibcoapToOurs,
            "observe /time (-s 3), CON notifications: token, Observe increasing, each ACKed",
            || observe_time(false, &[], Kind::Con, false)
        ),
        case!(
            "OBS_02",
            OursToLibcoap,
            "observe /time (-s 3), server -N: NON notifications (libcoap: one in five CON)",
            || observe_time(true, &["-N"], Kind::NonMostly, false)
        ),
        case!(
            "OBS_02",
            LibcoapToOurs,
            "observe /time (-s 3), server -N: NON notifications",
            || observe_time(false, &["-N"], Kind::Non, false)
        ),
        case!(
            "OBS_04",
            OursToLibcoap,
            "notifications stop (relay drops them): the client re-registers when Max-Age lapses",
            max_age_ours_to_libcoap
        ),
        case!(
            recorded "OBS_04",
            LibcoapToOurs,
            "notifications stop (relay drops them): does coap-client-notls re-register?",
            max_age_libcoap_to_ours
        ),
        case!(
            recorded "OBS_05",
            OursToLibcoap,
            "observing client killed: what coap-server-notls does, watched until it removes the observer (100 s at most)",
            vanished_ours_to_libcoap
        ),
        case!(
            "OBS_05",
            LibcoapToOurs,
            "observing client killed: our coap-server -K 1 removes the observer within interval+timeout",
            vanished_libcoap_to_ours
        ),
        case!(
            "OBS_06",
            OursToLibcoap,
            "engine in-process cancels: the next notification gets RST, the server stops",
            || reset_by_engine(libcoap_server(&[]), false)
        ),
        case!(
            "OBS_06",
            EngineToOurs,
            "engine in-process cancels: the next notification gets RST, the server stops",
            || reset_by_engine(our_server(&["-v", "6"]), true)
        ),
        case!(
            "OBS_06",
            LibcoapToOurs,
            "a coap-client-notls that does not know the token (same port) RSTs a notification: observer removed",
            reset_by_libcoap
        ),
        case!(
            "OBS_07",
            OursToLibcoap,
            "DELETE by another client: 4.04 without Observe ends the observation",
            || delete_ends(true)
        ),
        case!(
            "OBS_07",
            LibcoapToOurs,
            "DELETE by another client: 4.04 without Observe ends the observation",
            || delete_ends(false)
        ),
        case!(
            recorded "OBS_08",
            OursToLibcoap,
            "PUT changing the Content-Format: what coap-server-notls notifies",
            || format_change(true)
        ),
        case!(
            "OBS_08",
            LibcoapToOurs,
            "PUT changing the Content-Format: 4.06 without Observe ends the observation",
            || format_change(false)
        ),
        case!(
            "OBS_09",
            OursToLibcoap,
            "PUT by another client: a notification with the new payload",
            || update_by_put(true)
        ),
        case!(
            "OBS_09",
            LibcoapToOurs,
            "PUT by another client: a notification with the new payload",
            || update_by_put(false)
        ),
        case!(
            "OBS_10",
            OursToLibcoap,
            "plain GET from the observing endpoint (engine in-process): notifications go on",
            || plain_get_by_engine(libcoap_server(&[]))
        ),
        case!(
            "OBS_10",
            EngineToOurs,
            "plain GET from the observing endpoint (engine in-process): notifications go on",
            || plain_get_by_engine(our_server(&[]))
        ),
        case!(
            "OBS_10",
            LibcoapToOurs,
            "plain GET by another coap-client-notls while one observes: notifications go on",
            plain_get_by_libcoap
        ),
        case!(
            "OBS_12",
            OursToLibcoap,
            "end of -s: GET Observe 1 with the token cancels; no notification after",
            || observe_time(true, &[], Kind::Con, true)
        ),
        case!(
            "OBS_12",
            LibcoapToOurs,
            "end of -s: GET Observe 1 with the token cancels; no notification after",
            || observe_time(false, &["-v", "6"], Kind::Con, true)
        ),
        case!(
            "OBS_13",
            OursToLibcoap,
            "observe /example_data larger than a block: notifications fetched block-wise (RFC 7959 §2.6), printed whole",
            || observe_large(true, &[3000, 4100])
        ),
        case!(
            "OBS_13",
            LibcoapToOurs,
            "observe /example_data larger than a block: notifications fetched block-wise (RFC 7959 §2.6), printed whole",
            || observe_large(false, &[3000, 4100])
        ),
        case!(
            "OBS_14",
            OursToLibcoap,
            "observe /example_data while its size varies (20, 2600, 700, 3100 bytes): each printed whole",
            || observe_large(true, &[20, 2600, 700, 3100])
        ),
        case!(
            "OBS_14",
            LibcoapToOurs,
            "observe /example_data while its size varies (20, 2600, 700, 3100 bytes): each printed whole",
            || observe_large(false, &[20, 2600, 700, 3100])
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// OBS_13, OBS_14: representations larger than a block (RFC 7959 §2.6)

/// A text body of `len` bytes, marked with `tag` every 50 bytes, so a body cut short or mixed
/// from two versions is told apart.
fn large_body(tag: char, len: usize) -> String {
    (0..len)
        .map(|i| {
            if i % 50 == 0 {
                tag
            } else {
                char::from(b'a' + (i % 26) as u8)
            }
        })
        .collect()
}

fn block2_num(p: &Packet) -> Option<(u32, bool)> {
    p.get_first_option(CoapOption::Block2).map(|v| {
        let n = v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
        (n >> 4, n & 8 != 0)
    })
}

/// PUTs a body of each size in turn to /example_data (straight to the server) while a client
/// observes it through the relay; every representation must be printed whole, in order, and
/// those larger than a block must have come as a first block with Observe followed by GETs
/// without Observe for the further blocks.
fn observe_large(ours_client: bool, sizes: &[usize]) -> String {
    let server = server_for(ours_client, &["-d", "10"]);
    let relay = Relay::new(server.addr());
    let target = server.uri("example_data");
    let bodies: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| large_body(char::from(b'A' + i as u8), n))
        .collect();
    direct(
        ours_client,
        &["-m", "put", "-t", "0", "-e", &bodies[0], &target],
    )
    .expect_code(0);
    let uri = relay.uri("example_data");
    let observer = spawn_observer(ours_client, &["-s", "8", "-w", &uri]);
    wait_notifications(&relay, 1, Duration::from_secs(10));
    for b in &bodies[1..] {
        std::thread::sleep(Duration::from_millis(800));
        direct(ours_client, &["-m", "put", "-t", "0", "-e", b, &target]).expect_code(0);
    }
    let run = observer.finish(OBSERVER_LIMIT);
    let c = ctx(&relay, &run);
    run.expect_code(0);
    let w = Wire::read(&relay, &c);
    // Printed whole and in order: every body appears, each after the one before.
    let mut from = 0;
    for (i, b) in bodies.iter().enumerate() {
        let at = run.stdout[from..].find(b.as_str()).unwrap_or_else(|| {
            panic!(
                "representation {i} ({} bytes) not printed whole, in order\n{c}",
                b.len()
            )
        });
        from += at + b.len();
    }
    if ours_client {
        let want: String = bodies.iter().map(|b| format!("{b}\n")).collect();
        assert_eq!(
            run.stdout, want,
            "exactly the representations, one per line\n{c}"
        );
    }
    // On the wire: large notifications came as block 0 with more to come, and the rest by
    // GETs without Observe asking for further blocks.
    let first_blocks = w
        .notifications()
        .iter()
        .filter(|(_, p)| block2_num(p) == Some((0, true)))
        .count();
    let large = sizes.iter().filter(|&&n| n > 1024).count();
    assert!(
        first_blocks >= large,
        "{first_blocks} notification(s) as a first block, {large} large representation(s)\n{c}"
    );
    // Any token: clients may fetch the further blocks under a token of their own.
    let follow_ups: Vec<Packet> = w
        .dgs
        .iter()
        .filter(|d| d.to_server && !d.is_empty_message() && d.at > w.reg_at)
        .map(|d| d.packet())
        .filter(|p| matches!(p.header.code, MessageClass::Request(_)))
        .filter(|p| block2_num(p).is_some_and(|(n, _)| n > 0))
        .collect();
    assert!(
        follow_ups.iter().all(|p| observe_of(p).is_none()),
        "block requests for a notification's body must not carry Observe (RFC 7959 §2.6)\n{c}"
    );
    assert!(
        !follow_ups.is_empty() || large == 0,
        "no GET for a further block\n{c}"
    );
    let own_token = follow_ups
        .iter()
        .filter(|p| p.get_token() != w.token())
        .count();
    let end = check_deregistration(&w, &c);
    format!(
        "{} representation(s) of {:?} bytes printed whole, in order; {first_blocks} notification(s) as block 0 with M=1, {} block GET(s) without Observe ({own_token} with a token of their own); {end}",
        bodies.len(),
        sizes,
        follow_ups.len()
    )
}
