//! LIVE_06: LIVE_02 over DTLS, the seed's own scenario. Two network namespaces joined by a
//! veth pair (made by the case, as in LIVE_02); a DTLS server (PSK) in one, in the other a
//! client observing `/time` over `coaps://` with keepalive `-K 1`; mid-observation the
//! client's link goes down, so each of its `sendto()` calls fails with ENETUNREACH.
//!
//! - ours → `coap-server-openssl` / `coap-server-gnutls`: our `coap-client -s 60 -K 1` must
//!   report a keepalive failure and exit non-zero no later than interval + timeout (2 s)
//!   after the last packet it heard (the last notification, whose arrival is timed by its
//!   `-v 6` log line), and the sends it reports failing must be unreachable ones.
//! - `coap-client-openssl` / `coap-client-gnutls` → our `coap-server`: the same scenario
//!   with `-K 1 -B 8`; what libcoap does is recorded, not judged.

use std::path::Path;
use std::time::Instant;

use coap_engine_conformance::{libcoap, ours};

use super::{
    gave_up, keepalive_event, logged, verbose, Netns, Timed, BOUND, EXIT_LIMIT, KEEPALIVE_S,
    SERVER_ADDR, SETTLE, SLACK,
};
use crate::dtls::{IDENTITY, KEY};
use crate::{Case, Dir, Tls};

pub fn cases() -> Vec<Case> {
    const OURS: &str = "netns + veth, DTLS (PSK): our coap-client -s 60 -K 1 observing /time over coaps://, its link goes down (ENETUNREACH): keepalive failure within interval+timeout of the last notification heard, exit 3";
    const THEIRS: &str = "same scenario with libcoap's client -s 60 -K 1 -B 8 against our coap-server -k: libcoap's behaviour recorded";
    vec![
        Case {
            id: "LIVE_06",
            dir: Dir::OursToTls(Tls::OpenSsl),
            checks: OURS,
            run: || ours_client(Tls::OpenSsl),
            record_only: false,
        },
        Case {
            id: "LIVE_06",
            dir: Dir::OursToTls(Tls::GnuTls),
            checks: OURS,
            run: || ours_client(Tls::GnuTls),
            record_only: false,
        },
        Case {
            id: "LIVE_06",
            dir: Dir::TlsToOurs(Tls::OpenSsl),
            checks: THEIRS,
            run: || libcoap_client(Tls::OpenSsl),
            record_only: true,
        },
        Case {
            id: "LIVE_06",
            dir: Dir::TlsToOurs(Tls::GnuTls),
            checks: THEIRS,
            run: || libcoap_client(Tls::GnuTls),
            record_only: true,
        },
    ]
}

/// Runs `program args` (observing `/time`) in the client namespace; takes its link down once
/// it has logged two notifications (`notification` holds for those lines): it was observing
/// over a working DTLS session when the path died.
fn observe_and_cut(
    net: &Netns,
    program: &Path,
    args: &[&str],
    notification: impl Fn(&str) -> bool,
) -> Timed {
    net.run_cut(
        program,
        args,
        |c| {
            c.wait_nth(2, c.started + SETTLE, &notification)
                .unwrap_or_else(|| {
                    panic!("no second notification within {SETTLE:?}\n{}", c.text())
                });
        },
        || net.cut_client_link(),
    )
}

fn ours_client(t: Tls) -> String {
    let net = Netns::new();
    let _server = net.start_server(&libcoap(t.server()), &["-k", KEY]);
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coaps://{SERVER_ADDR}/time");
    let args = [
        "-u", IDENTITY, "-k", KEY, "-s", "60", "-K", &k, "-w", "-B", "30", "-v", "6", &uri,
    ];
    let r = observe_and_cut(&net, &ours("coap-client"), &args, |l| {
        l.contains("notification")
    });
    let failure = r.keepalive_exit();
    let d = r.describe();
    let failed_at = r.find("keepalive failure").expect("logged").at;
    assert!(
        r.alive_at_cut,
        "the session must survive until the link went down\n{d}"
    );
    assert!(
        r.find("unreachable").is_some(),
        "sends must fail as unreachable (ENETUNREACH)\n{d}"
    );
    // The last packet heard: the last notification before the failure (each is logged at
    // -v 6 as it arrives; /time notifies every second, so no ping was needed before the cut).
    let notifications: Vec<Instant> = r
        .lines
        .iter()
        .filter(|l| l.text.contains("notification") && l.at < failed_at)
        .map(|l| l.at)
        .collect();
    assert!(
        notifications.len() >= 2,
        "the client must have been observing before the cut\n{d}"
    );
    let last_heard = *notifications.last().unwrap();
    assert!(
        last_heard <= r.cut,
        "a notification logged after the link went down\n{d}"
    );
    let after_heard = failed_at - last_heard;
    assert!(
        after_heard <= BOUND + SLACK,
        "keepalive failure {after_heard:?} after the last notification > bound {BOUND:?} + {SLACK:?}\n{d}"
    );
    assert!(
        r.ended - r.cut <= BOUND + SLACK,
        "exit later than the bound after the cut\n{d}"
    );
    format!(
        "exit 3 {:.2} s after the last notification heard ({} before the cut), {:.2} s after the link went down (bound {} s); stderr: `{}`",
        after_heard.as_secs_f64(),
        notifications.len(),
        (r.ended - r.cut).as_secs_f64(),
        BOUND.as_secs(),
        failure.trim()
    )
}

fn libcoap_client(t: Tls) -> String {
    let net = Netns::new();
    let _server = net.start_server(&ours("coap-server"), &["-k", KEY]);
    let k = KEEPALIVE_S.to_string();
    let uri = format!("coaps://{SERVER_ADDR}/time");
    let args = [
        "-u", IDENTITY, "-k", KEY, "-s", "60", "-K", &k, "-w", "-B", "8", "-v", "7", &uri,
    ];
    let r = observe_and_cut(&net, &libcoap(t.client()), &args, |l| l.contains("c:2.05"));
    let d = r.describe();
    if verbose() {
        eprintln!("{d}");
    }
    assert!(
        r.status.is_some(),
        "{} still running {EXIT_LIMIT:?} after the cut\n{d}",
        t.client()
    );
    assert!(r.alive_at_cut, "{} ended before the cut\n{d}", t.client());
    let notifications: Vec<Instant> = r
        .lines
        .iter()
        .filter(|l| l.at < r.cut && l.text.contains("c:2.05"))
        .map(|l| l.at)
        .collect();
    let before = notifications.len();
    assert!(
        before >= 2,
        "{} was not observing before the cut\n{d}",
        t.client()
    );
    let last_heard = notifications[before - 1];
    let after: Vec<&String> = r
        .lines
        .iter()
        .filter(|l| l.at >= r.cut)
        .map(|l| &l.text)
        .collect();
    let count = |needle: &str| after.iter().filter(|l| l.contains(needle)).count();
    let texts = || after.iter().map(|l| l.as_str());
    format!(
        "{} exit status {}, {:.2} s after the last notification heard ({before} before the cut), {:.2} s after the link went down; ENETUNREACH logged: {} ({} \"Network is unreachable\" lines, {} internal \"session disconnected\"); keepalive failure reported: {}; error printed: {}; ended by -B 8 (\"timeout\"): {}",
        t.client(),
        r.exit_note(),
        (r.ended - last_heard).as_secs_f64(),
        (r.ended - r.cut).as_secs_f64(),
        if count("Network is unreachable") > 0 {
            "yes"
        } else {
            "no"
        },
        count("Network is unreachable"),
        count("session disconnected"),
        keepalive_event(texts()),
        logged(texts(), " ERR ", " ERR "),
        gave_up(texts())
    )
}
