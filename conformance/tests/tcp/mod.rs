//! TCP_01–07 and TLS_01 (CoAP over TCP and TLS, RFC 8323) against libcoap 4.3.1's OpenSSL
//! build, in both directions: our `coap-client` → `coap-server-openssl` (rows
//! "ours → coap-server-openssl") and `coap-client-openssl` → our `coap-server` (rows
//! "coap-client-openssl → ours"). libcoap's server listens for `coap+tcp://` on `-p` and,
//! with a certificate, for `coaps+tcp://` on `-p` + 1; so does ours.
//!
//! Every exchange passes a recording TCP relay ([`wire::TcpRelay`]), whose byte streams are
//! cut into frames with the engine's public `Deframer`, so the cases check the signalling on
//! the wire: CSMs and their options, Ping/Pong tokens, Release and Abort, frame sizes against
//! the receiver's Max-Message-Size. Where neither tool can be made to send something (a
//! Release, an Abort, malformed framing, no CSM) the test plays that peer with raw bytes
//! ([`wire::Raw`], [`wire::FakeServer`]); such rows say so, and the rows where libcoap
//! receives those bytes record what it does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_engine_conformance::{libcoap, ours, run, Background, Ready, Run, Scratch, Server};

use crate::dtls::pki;
use crate::tls::{suite_name, version_name};
use crate::{Case, Dir, Tls, CLIENT_LIMIT};

mod wire;

use wire::{csm, encode, server_hello, tls_records, End, FakeServer, Frame, Raw, TcpRelay};

const OPENSSL: Tls = Tls::OpenSsl;

/// Signalling option numbers (RFC 8323 §5.3–§5.6).
const MAX_MESSAGE_SIZE: u16 = 2;
const BLOCK_WISE_TRANSFER: u16 = 4;
const CUSTODY: u16 = 2;

/// Observe, Block2, Block1 (RFC 7641, RFC 7959).
const OBSERVE: u16 = 6;
const BLOCK2: u16 = 23;
const BLOCK1: u16 = 27;

/// How `/` begins on both servers.
const ROOT_TEXT: &str = "This is a test server";

/// Bound on anything a peer is expected to do at once (close, answer), on a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Peers

/// A server listening for `coap+tcp://` on its port (ready: it answers a UDP ping there and
/// its TCP port listens, which `Server::start` waits for).
fn tcp_server(program: &std::path::Path, args: &[&str]) -> Server {
    Server::start(program, args, Ready::Ping)
}

/// A server with a certificate: `coaps+tcp://` on port + 1 (listening once ready).
fn tls_server(program: &std::path::Path, args: &[&str]) -> Server {
    Server::start_dtls(program, args)
}

fn libcoap_server(args: &[&str]) -> Server {
    tcp_server(&libcoap(OPENSSL.server()), args)
}

fn our_server(args: &[&str]) -> Server {
    tcp_server(&ours("coap-server"), args)
}

/// The peers of a case run one way or the other: libcoap's server (`args`) and our client
/// if `ours_client`, else our server and libcoap's client.
fn peers(ours_client: bool, args: &[&str]) -> (Server, fn(&[&str]) -> Run) {
    if ours_client {
        (libcoap_server(args), our_client)
    } else {
        (our_server(args), libcoap_client)
    }
}

fn tcp_addr(s: &Server) -> SocketAddr {
    s.addr()
}

fn tls_addr(s: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], s.port + 1))
}

fn our_client(args: &[&str]) -> Run {
    run(
        &ours("coap-client"),
        &[&["-B", "20"][..], args].concat(),
        CLIENT_LIMIT,
    )
}

/// libcoap's client at its default verbosity (warnings and errors go to stdout).
fn libcoap_client(args: &[&str]) -> Run {
    run(
        &libcoap(OPENSSL.client()),
        &[&["-B", "20"][..], args].concat(),
        CLIENT_LIMIT,
    )
}

/// The last line libcoap's client printed, without its timestamp.
fn last_line(r: &Run) -> String {
    format!("{}{}", r.stdout, r.stderr)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map_or("nothing".to_string(), |l| {
            let l = [" ERR ", " WARN ", " INFO ", " DEBG "]
                .iter()
                .find_map(|level| l.split_once(level).map(|(_, m)| m))
                .unwrap_or(l);
            format!("`{}`", l.trim())
        })
}

/// `text` with the port of every `127.0.0.1:PORT` replaced by `PORT` (ephemeral ports would
/// change the report on every run).
fn unport(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i + 10]);
        rest = &rest[i + 10..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str("PORT");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn exit(r: &Run) -> String {
    r.code()
        .map_or("none (killed at the limit)".into(), |c| c.to_string())
}

/// `client` with `args` and the `coap+tcp://` URI of `path` on `server` through a relay, until
/// the connection has closed both ways (within [`PROMPT`]); returns the relay, the run and
/// the context for failure messages.
fn closed_exchange(
    server: &Server,
    client: fn(&[&str]) -> Run,
    args: &[&str],
    path: &str,
) -> (TcpRelay, Run, String) {
    let relay = TcpRelay::new(tcp_addr(server));
    let uri = relay.uri("coap+tcp", path);
    let r = client(&[args, &[uri.as_str()]].concat());
    relay.wait_closed(true, PROMPT);
    let c = ctx(&relay, &r);
    (relay, r, c)
}

fn ctx(relay: &TcpRelay, r: &Run) -> String {
    format!("{}\n--- wire\n{}", r.describe(), relay.trace())
}

// ---------------------------------------------------------------------------------------------
// Wire checks

/// The peer's CSM: the first frame of a direction must be one (RFC 8323 §5.3). Returns its
/// (Max-Message-Size, Block-Wise-Transfer).
#[track_caller]
fn first_csm(frames: &[Frame], who: &str, c: &str) -> (Option<u64>, bool) {
    let first = frames
        .first()
        .unwrap_or_else(|| panic!("nothing from the {who}\n{c}"));
    assert!(
        first.is("7.01"),
        "the {who}'s first message is {}, not a CSM (RFC 8323 §5.3)\n{c}",
        first.code()
    );
    (
        first.uint(MAX_MESSAGE_SIZE),
        first.option(BLOCK_WISE_TRANSFER).is_some(),
    )
}

/// The request and response of a single exchange on connection `conn`: the first request
/// after the client's CSM and the response with its token.
#[track_caller]
fn exchange(relay: &TcpRelay, conn: usize, c: &str) -> (Frame, Frame) {
    let up = relay.clean_frames(conn, true);
    let down = relay.clean_frames(conn, false);
    first_csm(&up, "client", c);
    first_csm(&down, "server", c);
    let req = up
        .iter()
        .find(|f| f.is_request())
        .unwrap_or_else(|| panic!("no request\n{c}"))
        .clone();
    let resp = down
        .iter()
        .find(|f| f.is_response() && f.token == req.token)
        .unwrap_or_else(|| panic!("no response with the request's token\n{c}"))
        .clone();
    (req, resp)
}

/// Every frame of a direction fits the receiver's announced Max-Message-Size (RFC 8323
/// §5.3.1). Returns (frames, largest).
#[track_caller]
fn within(frames: &[Frame], max: u64, who: &str, c: &str) -> (usize, usize) {
    let largest = frames.iter().map(|f| f.wire_len).max().unwrap_or(0);
    for f in frames {
        assert!(
            f.wire_len as u64 <= max,
            "a {}-byte frame to the {who}, which announced Max-Message-Size {max}: {}\n{c}",
            f.wire_len,
            f.describe()
        );
    }
    (frames.len(), largest)
}

// ---------------------------------------------------------------------------------------------
// TCP_01: CSM both ways

fn check_csms(relay: &TcpRelay, r: &Run, client_x: u64, server_x: u64) -> String {
    let c = ctx(relay, r);
    relay.wait_closed(false, PROMPT);
    let up = relay.clean_frames(0, true);
    let down = relay.clean_frames(0, false);
    let (cm, cb) = first_csm(&up, "client", &c);
    let (sm, sb) = first_csm(&down, "server", &c);
    assert_eq!(cm, Some(client_x), "client's Max-Message-Size (-X)\n{c}");
    assert_eq!(sm, Some(server_x), "server's Max-Message-Size (-X)\n{c}");
    assert!(cb, "client's CSM without Block-Wise-Transfer\n{c}");
    assert!(sb, "server's CSM without Block-Wise-Transfer\n{c}");
    for (frames, who) in [(&up, "client"), (&down, "server")] {
        assert_eq!(
            frames.iter().filter(|f| f.is("7.01")).count(),
            1,
            "one CSM from the {who}\n{c}"
        );
    }
    let (_, resp) = exchange(relay, 0, &c);
    assert!(resp.is("2.05"), "{c}");
    format!(
        "client CSM: Max-Message-Size {client_x}, Block-Wise-Transfer; server CSM: \
         Max-Message-Size {server_x}, Block-Wise-Transfer; each the first frame of its \
         direction, the GET answered 2.05"
    )
}

fn csm_ours() -> String {
    csm_exchange(&libcoap_server(&["-X", "2048"]), our_client, "libcoap")
}

fn csm_libcoap() -> String {
    csm_exchange(&our_server(&["-X", "2048"]), libcoap_client, "coap-engine")
}

/// `client -X 4096` GETs `/` of `server` (`-X 2048`), whose text holds `text`, through a
/// relay: exit 0 and the CSMs checked.
fn csm_exchange(server: &Server, client: fn(&[&str]) -> Run, text: &str) -> String {
    let relay = TcpRelay::new(tcp_addr(server));
    let r = client(&["-X", "4096", &relay.uri("coap+tcp", "")]);
    r.expect_code(0);
    assert!(r.stdout.contains(text), "{}", ctx(&relay, &r));
    check_csms(&relay, &r, 4096, 2048)
}

// ---------------------------------------------------------------------------------------------
// TCP_02: the four methods

/// Runs one client invocation through the relay and returns its exchange (on the newest
/// connection).
fn one(relay: &TcpRelay, r: &Run) -> (Frame, Frame) {
    relay.wait_closed(false, PROMPT);
    let conn = relay.connections() - 1;
    exchange(relay, conn, &ctx(relay, r))
}

#[track_caller]
fn expect_exchange(
    relay: &TcpRelay,
    r: &Run,
    method: &str,
    payload: Option<&str>,
    codes: &[&str],
) -> String {
    let c = ctx(relay, r);
    let (req, resp) = one(relay, r);
    assert!(
        req.is(method),
        "request {} instead of {method}\n{c}",
        req.code()
    );
    if let Some(p) = payload {
        assert_eq!(req.payload, p.as_bytes(), "request payload\n{c}");
    }
    assert!(
        codes.iter().any(|code| resp.is(code)),
        "response {} (expected {codes:?})\n{c}",
        resp.code()
    );
    resp.code()
}

fn methods(ours_client: bool) -> String {
    let (server, client) = peers(ours_client, &["-d", "10"]);
    let relay = TcpRelay::new(tcp_addr(&server));
    let uri = |p: &str| relay.uri("coap+tcp", p);
    let own_text = if ours_client {
        "libcoap"
    } else {
        "coap-engine"
    };

    let r = client(&[&uri("")]);
    r.expect_code(0);
    assert!(r.stdout.contains(own_text), "{}", ctx(&relay, &r));
    let get = expect_exchange(&relay, &r, "0.01", None, &["2.05"]);

    let text = "tcp conformance put";
    let r = client(&["-m", "put", "-e", text, &uri("example_data")]);
    r.expect_code(0);
    let put = expect_exchange(&relay, &r, "0.03", Some(text), &["2.01", "2.04"]);
    let r = client(&[&uri("example_data")]);
    r.expect_code(0);
    assert!(
        r.stdout.contains(text),
        "GET after PUT\n{}",
        ctx(&relay, &r)
    );
    expect_exchange(&relay, &r, "0.01", None, &["2.05"]);

    let r = client(&["-m", "post", "-e", "posted", &uri("created-by-post")]);
    r.expect_code(0);
    let post = expect_exchange(&relay, &r, "0.02", Some("posted"), &["2.01"]);

    let r = client(&["-m", "put", "-e", "doomed", &uri("to-delete")]);
    r.expect_code(0);
    expect_exchange(&relay, &r, "0.03", Some("doomed"), &["2.01"]);
    let r = client(&["-m", "delete", &uri("to-delete")]);
    r.expect_code(0);
    let delete = expect_exchange(&relay, &r, "0.04", None, &["2.02"]);
    let r = client(&[&uri("to-delete")]);
    // Our client exits 1 on a 4.xx; libcoap's exits 0.
    r.expect_code(if ours_client { 1 } else { 0 });
    let gone = expect_exchange(&relay, &r, "0.01", None, &["4.04"]);
    format!(
        "GET / {get}; PUT /example_data {put}, then GET returns it; POST (creates) {post}; \
         DELETE {delete}, then GET {gone}; {} connections, each CSM first both ways, tokens \
         echoed",
        relay.connections()
    )
}

// ---------------------------------------------------------------------------------------------
// TCP_03: Ping/Pong

/// The client's 7.02 Pings before the answer to its request, each answered by a 7.03 Pong
/// after it (the n-th Pong answers the n-th Ping: a stream keeps their order; a Ping that
/// crosses the answer, the client closing, need not be). Returns (Pings, the slowest answer,
/// how many Pongs carried their Ping's token, as RFC 8323 §5.4 asks).
#[track_caller]
fn check_pings(relay: &TcpRelay, c: &str) -> (usize, Duration, usize) {
    let up = relay.clean_frames(0, true);
    let down = relay.clean_frames(0, false);
    let answer = down
        .iter()
        .find(|f| f.is_response())
        .unwrap_or_else(|| panic!("no answer\n{c}"))
        .at;
    let pings: Vec<&Frame> = up
        .iter()
        .filter(|f| f.is("7.02") && f.at < answer)
        .collect();
    let pongs: Vec<&Frame> = down.iter().filter(|f| f.is("7.03")).collect();
    assert!(!pings.is_empty(), "no 7.02 Ping from the client\n{c}");
    assert!(pings.len() <= pongs.len(), "a Pong for every Ping\n{c}");
    let mut worst = Duration::ZERO;
    let mut matched = 0;
    for (p, q) in pings.iter().zip(&pongs) {
        assert!(q.at >= p.at, "a Pong before its Ping\n{c}");
        worst = worst.max(q.at - p.at);
        matched += usize::from(q.token == p.token);
    }
    (pings.len(), worst, matched)
}

/// A raw client pings `addr` with Custody (after the CSMs): the Pong, if one came.
fn custody_ping(addr: SocketAddr) -> (Raw, Option<Frame>) {
    let mut raw = Raw::connect(addr);
    assert!(raw.send(&csm(1152, true)));
    assert!(raw.send(&encode((7, 2), b"cus", &[(CUSTODY, &[])], &[])));
    raw.read_until(PROMPT, |fs| fs.iter().any(|f| f.is("7.03")));
    let pong = raw.frames().0.into_iter().find(|f| f.is("7.03"));
    (raw, pong)
}

fn describe_pong(p: &Frame) -> String {
    format!(
        "{}, {} Custody",
        if p.token.is_empty() {
            "an empty token".to_string()
        } else {
            format!("token {:?}", String::from_utf8_lossy(&p.token))
        },
        if p.option(CUSTODY).is_some() {
            "with"
        } else {
            "without"
        }
    )
}

/// Our client pings libcoap's server while /async?3 is pending (judged: the Pings, and
/// that the connection stays up); libcoap's Pongs are recorded.
fn ping_ours() -> String {
    let server = libcoap_server(&[]);
    // libcoap's /async?3 answers after 3 s: the connection is silent meanwhile.
    let (relay, r, c) = closed_exchange(&server, our_client, &["-K", "1"], "async?3");
    assert_eq!(r.code(), Some(0), "{c}");
    assert_eq!(r.stdout, "done", "{c}");
    let (n, worst, matched) = check_pings(&relay, &c);
    assert!(n >= 2, "Pings every second of silence expected\n{c}");
    let (raw, pong) = custody_ping(tcp_addr(&server));
    let pong = pong.unwrap_or_else(|| panic!("no Pong to a Ping with Custody\n{}", raw.trace()));
    format!(
        "our client (-K 1) sent {n} Pings before the answer while waiting 3 s for /async?3 (4-byte tokens), \
         each answered by a Pong within {:.0} ms, {matched} of them with the Ping's token \
         (libcoap answers with an empty token: RFC 8323 §5.4 asks for the Ping's); the \
         connection stayed up and the answer came; a raw Ping {{token \"cus\", Custody}} got \
         a Pong with {}",
        worst.as_secs_f64() * 1e3,
        describe_pong(&pong)
    )
}

fn ping_libcoap() -> String {
    let server = our_server(&[]);
    let (relay, r, c) = closed_exchange(&server, libcoap_client, &["-K", "1"], "async?3");
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("done"), "{c}");
    let (n, worst, matched) = check_pings(&relay, &c);
    assert_eq!(
        matched, n,
        "every Pong with its Ping's token (RFC 8323 §5.4)\n{c}"
    );
    // Our server echoes Custody (requests are handled as they are read, so everything
    // before the Ping has been processed).
    let (raw, pong) = custody_ping(tcp_addr(&server));
    let pong = pong.unwrap_or_else(|| panic!("no Pong to a Ping with Custody\n{}", raw.trace()));
    assert_eq!(pong.token, b"cus", "Pong token\n{}", raw.trace());
    assert!(
        pong.option(CUSTODY).is_some(),
        "Pong without Custody\n{}",
        raw.trace()
    );
    format!(
        "libcoap's client (-K 1) sent {n} Pings (empty tokens) before the answer while waiting 3 s for \
         /async?3, each answered by a Pong with its token within {:.0} ms; a raw Ping {{token \"cus\", \
         Custody}} got a Pong with {}",
        worst.as_secs_f64() * 1e3,
        describe_pong(&pong)
    )
}

// ---------------------------------------------------------------------------------------------
// TCP_04: 100 kB both ways, within Max-Message-Size

const BIG: usize = 100_000;

fn big_body() -> Vec<u8> {
    (0..BIG)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[(i * 7 + i / 36) % 36])
        .collect()
}

/// Checks one connection: each direction within the other side's Max-Message-Size. Returns
/// a summary.
#[track_caller]
fn check_sizes(relay: &TcpRelay, conn: usize, c: &str) -> String {
    let up = relay.clean_frames(conn, true);
    let down = relay.clean_frames(conn, false);
    let (cm, _) = first_csm(&up, "client", c);
    let (sm, _) = first_csm(&down, "server", c);
    let (cm, sm) = (cm.unwrap_or(1152), sm.unwrap_or(1152));
    let (nu, lu) = within(&up, sm, "server", c);
    let (nd, ld) = within(&down, cm, "client", c);
    let blocks = |fs: &[Frame], opt: u16| {
        let b: Vec<u64> = fs.iter().filter_map(|f| f.uint(opt)).collect();
        let bert = b.iter().any(|v| v & 7 == 7);
        (b.len(), bert)
    };
    let (b1, bert1) = blocks(&up, BLOCK1);
    let (b2, bert2) = blocks(&down, BLOCK2);
    let (asks, _) = blocks(&up, BLOCK2);
    format!(
        "{nu} frames up (largest {lu} ≤ {sm}; {b1} with Block1{}{}), {nd} down (largest {ld} \
         ≤ {cm}; {b2} with Block2{})",
        if bert1 { ", BERT" } else { "" },
        if asks > 0 {
            format!(", {asks} asking for a Block2 block")
        } else {
            String::new()
        },
        if bert2 { ", BERT" } else { "" }
    )
}

fn large(ours_client: bool) -> String {
    let scratch = Scratch::new("tcp");
    let input = scratch.file("big.in");
    let body = big_body();
    std::fs::write(&input, &body).unwrap();
    // The server takes at most 1152-byte messages: the upload must go in blocks.
    let (server, client) = peers(ours_client, &["-d", "10", "-X", "1152"]);
    let relay = TcpRelay::new(tcp_addr(&server));
    let uri = relay.uri("coap+tcp", "big");
    let r = client(&["-m", "put", "-f", &input, &uri]);
    r.expect_code(0);
    relay.wait_closed(false, PROMPT);
    let c = ctx(&relay, &r);
    let put = check_sizes(&relay, 0, &c);
    // What reached the server: the Block1 payloads, in order.
    let up = relay.clean_frames(0, true);
    let sent: Vec<u8> = up
        .iter()
        .filter(|f| f.is("0.03"))
        .flat_map(|f| f.payload.clone())
        .collect();
    assert!(
        sent == body,
        "the PUT's blocks do not make up the body\n{c}"
    );
    let resp = relay.clean_frames(0, false);
    let last = resp
        .iter()
        .rfind(|f| f.is_response())
        .unwrap_or_else(|| panic!("PUT not answered\n{c}"));
    assert!(last.is("2.01") || last.is("2.04"), "{c}");

    // Back with the client's -X 1152 (its limit bites), then with its default.
    let mut gets = Vec::new();
    for (conn, x) in [(1, Some("1152")), (2, None)] {
        let output = scratch.file(&format!("big.out{conn}"));
        let mut args = vec!["-o", output.as_str(), uri.as_str()];
        if let Some(x) = x {
            args.splice(0..0, ["-X", x]);
        }
        let r = client(&args);
        r.expect_code(0);
        relay.wait_closed(false, PROMPT);
        let c = ctx(&relay, &r);
        let sizes = check_sizes(&relay, conn, &c);
        let got = std::fs::read(&output).unwrap_or_default();
        assert!(
            got == body,
            "GET returned {} bytes, not the {BIG} put (first difference at {:?})\n{c}",
            got.len(),
            got.iter().zip(&body).position(|(a, b)| a != b)
        );
        gets.push(format!(
            "GET {}: {sizes}",
            x.map_or("with the client's default".to_string(), |x| format!(
                "with client -X {x}"
            ))
        ));
    }
    format!(
        "100 kB PUT then GET byte-exact, server -X 1152: PUT {put}, answer {}; {}",
        last.code(),
        gets.join("; ")
    )
}

// ---------------------------------------------------------------------------------------------
// TCP_05: observe

fn observe(ours_client: bool) -> String {
    let (server, client) = peers(ours_client, &[]);
    let relay = TcpRelay::new(tcp_addr(&server));
    let uri = relay.uri("coap+tcp", "time");
    let r = client(&["-s", "3", &uri]);
    r.expect_code(0);
    relay.wait_closed(false, PROMPT);
    let c = ctx(&relay, &r);
    let up = relay.clean_frames(0, true);
    let down = relay.clean_frames(0, false);
    let register = up
        .iter()
        .find(|f| f.is_request())
        .unwrap_or_else(|| panic!("no request\n{c}"));
    assert_eq!(register.uint(OBSERVE), Some(0), "GET with Observe 0\n{c}");
    let notes: Vec<&Frame> = down
        .iter()
        .filter(|f| f.is("2.05") && f.token == register.token && f.option(OBSERVE).is_some())
        .collect();
    assert!(
        notes.len() >= 3,
        "{} notification(s) in 3 s of /time\n{c}",
        notes.len()
    );
    let seq: Vec<u64> = notes.iter().filter_map(|f| f.uint(OBSERVE)).collect();
    assert!(
        seq.windows(2).all(|w| w[0] < w[1]),
        "Observe values not increasing: {seq:?}\n{c}"
    );
    for n in &notes {
        assert!(
            r.stdout
                .contains(String::from_utf8_lossy(&n.payload).trim()),
            "notification {:?} not printed\n{c}",
            String::from_utf8_lossy(&n.payload)
        );
    }
    let dereg = up
        .iter()
        .rfind(|f| f.is_request() && f.uint(OBSERVE) == Some(1));
    let dereg = dereg.map_or("no deregistration (GET with Observe 1)".to_string(), |d| {
        let answered = down
            .iter()
            .any(|f| f.is_response() && f.token == d.token && f.at >= d.at);
        format!(
            "deregistration GET with Observe 1 (token {}), {}",
            if d.token == register.token {
                "the registration's"
            } else {
                "a new one"
            },
            if answered {
                "answered"
            } else {
                "not waited for"
            }
        )
    });
    format!(
        "GET /time with Observe 0; {} notifications with the token, Observe {seq:?}, all \
         printed; {dereg}",
        notes.len()
    )
}

// ---------------------------------------------------------------------------------------------
// TCP_06: Release and Abort

/// How a raw peer's connection ended after it sent something: the frames that came back
/// after that, and the end.
fn reaction(raw: &mut Raw, since: usize, limit: Duration) -> (Vec<String>, Option<End>, f64) {
    let t = Instant::now();
    let end = raw.read_to_end(limit);
    let after: Vec<String> = raw.frames().0[since..].iter().map(|f| f.code()).collect();
    (after, end, t.elapsed().as_secs_f64())
}

fn describe_end(after: &[String], end: Option<End>, secs: f64) -> String {
    let sent = if after.is_empty() {
        "sent nothing back".to_string()
    } else {
        format!("sent {}", after.join(", "))
    };
    match end {
        Some(End::Fin) => format!("{sent}, closed the connection ({secs:.2} s)"),
        Some(End::Reset) => format!("{sent}, reset the connection ({secs:.2} s)"),
        None => format!("{sent}, kept the connection open ({secs:.0} s watched)"),
    }
}

/// A raw client at `addr`: CSM, GET / answered, then `signal`; returns what the server did.
fn send_signal(
    addr: SocketAddr,
    signal: &[u8],
    watch: Duration,
) -> (Vec<String>, Option<End>, f64) {
    let mut raw = Raw::connect(addr);
    assert!(raw.send(&csm(1152, true)));
    assert!(raw.send(&encode((0, 1), b"g", &[], &[])));
    assert!(
        raw.read_until(PROMPT, |fs| fs.iter().any(|f| f.is_response())),
        "GET / not answered\n{}",
        raw.trace()
    );
    let since = raw.frames().0.len();
    raw.send(signal);
    reaction(&mut raw, since, watch)
}

fn article(name: &str) -> &'static str {
    if name.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

fn release() -> Vec<u8> {
    encode((7, 4), &[], &[], &[])
}

fn abort() -> Vec<u8> {
    encode((7, 5), &[], &[], b"conformance abort")
}

/// Our client ends with a Release (judged), libcoap's server closes; our client against a
/// fake server that sends a Release or an Abort instead of answering: exit 3, one line.
fn release_ours() -> String {
    let server = libcoap_server(&[]);
    let (relay, r, c) = closed_exchange(&server, our_client, &[], "");
    r.expect_code(0);
    let up = relay.clean_frames(0, true);
    let last = up.last().unwrap_or_else(|| panic!("nothing sent\n{c}"));
    assert!(
        last.is("7.04"),
        "our client's last frame is not a Release\n{c}"
    );
    let (fin, _) = relay.end(0, true).unwrap();
    assert!(last.at <= fin, "{c}");
    let server_end = match relay.end(0, false).map(|(_, e)| e) {
        Some(End::Fin) => "closes its side too (FIN)",
        Some(End::Reset) => "resets the connection",
        None => "keeps its side open",
    };

    let mut notes = Vec::new();
    for (name, signal) in [("Release", release()), ("Abort", abort())] {
        let fake = FakeServer::new();
        let client = Background::spawn(&ours("coap-client"), &["-B", "10", &fake.uri("x")]);
        let mut raw = fake.accept(PROMPT);
        let got_request = raw.read_until(PROMPT, |fs| fs.iter().any(|f| f.is_request()));
        assert!(got_request, "no request from our client\n{}", raw.trace());
        assert!(raw.send(&csm(1152, true)));
        raw.send(&signal);
        let since = raw.frames().0.len();
        let (after, end, secs) = reaction(&mut raw, since, PROMPT);
        drop(raw);
        let r = client.finish(CLIENT_LIMIT);
        let c = format!(
            "{}\n--- fake server received\n{after:?} {end:?}",
            r.describe()
        );
        assert_eq!(r.code(), Some(3), "{c}");
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr\n{c}");
        assert!(end.is_some(), "our client kept the connection open\n{c}");
        let word = if name == "Release" {
            "release"
        } else {
            "abort"
        };
        assert!(
            lines[0].to_lowercase().contains(word),
            "the line does not name the {name}\n{c}"
        );
        notes.push(format!(
            "fake server's {name}: our client {}, exit 3 `{}`",
            describe_end(&after, end, secs),
            unport(lines[0].trim())
        ));
    }
    format!(
        "our client's last frame is a 7.04 Release, then its FIN; libcoap's server then \
         {}; {}",
        server_end,
        notes.join("; ")
    )
}

/// libcoap's server receiving a Release or an Abort from a raw client (recorded).
fn release_to_libcoap() -> String {
    let server = libcoap_server(&[]);
    let addr = tcp_addr(&server);
    let watch = Duration::from_secs(2);
    let (a1, e1, s1) = send_signal(addr, &release(), watch);
    let (a2, e2, s2) = send_signal(addr, &abort(), watch);
    format!(
        "after a Release it {}; after an Abort it {}",
        describe_end(&a1, e1, s1),
        describe_end(&a2, e2, s2)
    )
}

/// Our server receiving a Release or an Abort from a raw client (judged), and the end of
/// libcoap's client's connection.
fn release_to_ours() -> String {
    let server = our_server(&["-v", "6"]);
    let (relay, r, c) = closed_exchange(&server, libcoap_client, &[], "");
    r.expect_code(0);
    let up = relay.clean_frames(0, true);
    let libcoap_end = if up.iter().any(|f| f.is("7.04")) {
        "a Release, then its FIN"
    } else {
        "its FIN without a Release"
    };
    assert!(
        relay.end(0, false).is_some(),
        "our server did not close after the client's FIN\n{c}"
    );
    let addr = tcp_addr(&server);
    let mut notes = Vec::new();
    for (name, signal) in [("Release", release()), ("Abort", abort())] {
        let (after, end, secs) = send_signal(addr, &signal, PROMPT);
        assert_eq!(
            end,
            Some(End::Fin),
            "our server after a {name}: {after:?}\n{}",
            server.output()
        );
        assert!(after.is_empty(), "our server sent {after:?} after a {name}");
        notes.push(format!(
            "after {} {name} it {}",
            article(name),
            describe_end(&after, end, secs)
        ));
    }
    // Still serving.
    let r = libcoap_client(&[&relay.uri("coap+tcp", "")]);
    assert!(r.stdout.contains("coap-engine"), "{}", r.describe());
    format!(
        "libcoap's client ends with {libcoap_end}, our server closes too; raw client: {}; \
         the server serves the next client",
        notes.join("; ")
    )
}

/// libcoap's client receiving a Release or an Abort from a fake server (recorded).
fn release_to_libcoap_client() -> String {
    let mut notes = Vec::new();
    for (name, signal) in [("Release", release()), ("Abort", abort())] {
        let fake = FakeServer::new();
        let client = Background::spawn(&libcoap(OPENSSL.client()), &["-B", "2", &fake.uri("x")]);
        let mut raw = fake.accept(PROMPT);
        // libcoap's client sends its request only once the server's CSM came.
        assert!(raw.send(&csm(1152, true)));
        let got_request = raw.read_until(PROMPT, |fs| fs.iter().any(|f| f.is_request()));
        assert!(
            got_request,
            "no request from libcoap's client\n{}",
            raw.trace()
        );
        raw.send(&signal);
        let since = raw.frames().0.len();
        let (after, end, secs) = reaction(&mut raw, since, Duration::from_secs(6));
        drop(raw);
        let r = client.finish(CLIENT_LIMIT);
        let last = last_line(&r);
        notes.push(format!(
            "on {} {name} it {}, exit {} after {:.1} s, output {last}",
            article(name),
            describe_end(&after, end, secs),
            exit(&r),
            r.elapsed.as_secs_f64()
        ));
    }
    notes.join("; ")
}

// ---------------------------------------------------------------------------------------------
// TCP_07: malformed framing, no CSM

/// The malformed inputs a raw client sends to a server: (name, bytes).
fn bad_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut too_long = csm(1152, true);
    // A 4-byte extended length announcing 1 MB, beyond the server's -X 1152.
    too_long.extend_from_slice(&[0xF0, 0x00, 0x0E, 0xFF, 0xB3, 0x01]);
    let mut tkl = csm(1152, true);
    tkl.extend_from_slice(&[0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    vec![
        ("a GET before any CSM", encode((0, 1), b"n", &[], &[])),
        ("token length 9 after the CSM", tkl),
        ("a 1 MB length after the CSM", too_long),
    ]
}

/// What a server did with each malformed input: (Abort seen, its diagnostic, end).
fn malformed_to(addr: SocketAddr, watch: Duration) -> Vec<(&'static str, Raw, f64)> {
    bad_inputs()
        .into_iter()
        .map(|(name, bytes)| {
            let mut raw = Raw::connect(addr);
            raw.send(&bytes);
            let t = Instant::now();
            raw.read_to_end(watch);
            (name, raw, t.elapsed().as_secs_f64())
        })
        .collect()
}

fn abort_of(raw: &Raw) -> Option<Frame> {
    raw.frames().0.into_iter().find(|f| f.is("7.05"))
}

fn malformed_to_ours() -> String {
    let server = our_server(&["-X", "1152"]);
    let mut notes = Vec::new();
    for (name, raw, secs) in malformed_to(tcp_addr(&server), PROMPT) {
        let c = format!("{name}\n{}", raw.trace());
        let a = abort_of(&raw).unwrap_or_else(|| panic!("no 7.05 Abort\n{c}"));
        let (frames, _) = raw.frames();
        assert!(
            frames.last().is_some_and(|f| f.is("7.05")),
            "something after the Abort\n{c}"
        );
        assert_eq!(raw.end.map(|(_, e)| e), Some(End::Fin), "not closed\n{c}");
        notes.push(format!(
            "{name}: Abort {:?}, closed ({secs:.2} s)",
            String::from_utf8_lossy(&a.payload)
        ));
    }
    let r = libcoap_client(&[&format!("coap+tcp://127.0.0.1:{}/", server.port)]);
    assert!(r.stdout.contains("coap-engine"), "{}", r.describe());
    format!(
        "our server (-X 1152) to a raw client: {}; then serves libcoap's client",
        notes.join("; ")
    )
}

fn malformed_to_libcoap() -> String {
    let server = libcoap_server(&["-X", "1152"]);
    let watch = Duration::from_secs(2);
    let notes: Vec<String> = malformed_to(tcp_addr(&server), watch)
        .into_iter()
        .map(|(name, raw, secs)| {
            let (frames, err) = raw.frames();
            // The scenario ran: libcoap's server took the connection and sent its CSM.
            assert!(
                frames.first().is_some_and(|f| f.is("7.01")),
                "{name}: no CSM from coap-server-openssl\n{}",
                raw.trace()
            );
            let codes: Vec<String> = frames.iter().map(Frame::code).collect();
            let abort = abort_of(&raw).map_or(String::new(), |a| {
                format!(" (Abort {:?})", String::from_utf8_lossy(&a.payload))
            });
            format!(
                "{name}: {}{abort}{}",
                describe_end(&codes, raw.end.map(|(_, e)| e), secs),
                err.map_or(String::new(), |e| format!(", then unreadable: {e}"))
            )
        })
        .collect();
    let alive = {
        let r = libcoap_client(&[&format!("coap+tcp://127.0.0.1:{}/", server.port)]);
        r.stdout.contains("libcoap")
    };
    format!(
        "coap-server-openssl (-X 1152) to a raw client: {}; {}",
        notes.join("; "),
        if alive {
            "it serves the next client"
        } else {
            "it does not serve the next client"
        }
    )
}

/// The bytes a fake server sends a client: (name, bytes).
fn bad_server_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut tkl = csm(1152, true);
    tkl.extend_from_slice(&[
        0x0F, 0x45, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ]);
    vec![
        ("a 2.05 before any CSM", encode((2, 5), b"z", &[], b"early")),
        ("token length 15 after the CSM", tkl),
    ]
}

fn malformed_to_client(ours_client: bool, watch: Duration) -> Vec<String> {
    bad_server_inputs()
        .into_iter()
        .map(|(name, bytes)| {
            let fake = FakeServer::new();
            let client = if ours_client {
                Background::spawn(&ours("coap-client"), &["-B", "10", &fake.uri("x")])
            } else {
                Background::spawn(&libcoap(OPENSSL.client()), &["-B", "2", &fake.uri("x")])
            };
            let mut raw = fake.accept(PROMPT);
            // The client's CSM (libcoap's client sends nothing more before the server's).
            let csm_came = raw.read_until(PROMPT, |fs| !fs.is_empty());
            assert!(csm_came, "{name}: nothing from the client\n{}", raw.trace());
            let since = raw.frames().0.len();
            raw.send(&bytes);
            let t = Instant::now();
            raw.read_to_end(watch);
            let secs = t.elapsed().as_secs_f64();
            let after: Vec<Frame> = raw.frames().0[since..].to_vec();
            let end = raw.end.map(|(_, e)| e);
            let trace = raw.trace();
            drop(raw);
            let r = client.finish(CLIENT_LIMIT);
            let c = format!(
                "{name}\n{}\n--- fake server received\n{trace}",
                r.describe()
            );
            let codes: Vec<String> = after.iter().map(Frame::code).collect();
            if ours_client {
                let a = after
                    .iter()
                    .find(|f| f.is("7.05"))
                    .unwrap_or_else(|| panic!("no Abort from our client\n{c}"));
                assert!(
                    after.last().unwrap().is("7.05"),
                    "something after the Abort\n{c}"
                );
                assert_eq!(end, Some(End::Fin), "our client did not close\n{c}");
                assert_eq!(r.code(), Some(3), "{c}");
                assert_eq!(r.stderr.lines().count(), 1, "one line\n{c}");
                format!(
                    "{name}: Abort {:?}, closed ({secs:.2} s), exit 3 `{}`",
                    String::from_utf8_lossy(&a.payload),
                    unport(r.stderr.trim())
                )
            } else {
                let last = last_line(&r);
                format!(
                    "{name}: {}, exit {} after {:.1} s, output {last}",
                    describe_end(&codes, end, secs),
                    exit(&r),
                    r.elapsed.as_secs_f64()
                )
            }
        })
        .collect()
}

fn malformed_ours_client() -> String {
    format!(
        "our client to a fake server: {}",
        malformed_to_client(true, PROMPT).join("; ")
    )
}

fn malformed_libcoap_client() -> String {
    format!(
        "coap-client-openssl to a fake server: {}",
        malformed_to_client(false, Duration::from_secs(3)).join("; ")
    )
}

// ---------------------------------------------------------------------------------------------
// TLS_01: coaps+tcp with certificates

/// TLS on the wire: a ClientHello first, handshake records back, application data both
/// ways, none of `clear` in either direction.
#[track_caller]
fn check_tls(relay: &TcpRelay, clear: &[&str], c: &str) -> String {
    let mut counts = Vec::new();
    for conn in 0..relay.connections() {
        let up = relay.bytes(conn, true);
        let down = relay.bytes(conn, false);
        assert!(
            up.len() > 5 && up[0] == 22 && up[5] == 1,
            "connection {conn} does not start with a TLS ClientHello\n{c}"
        );
        assert!(down.first() == Some(&22), "no TLS handshake back\n{c}");
        for (bytes, who) in [(&up, "client"), (&down, "server")] {
            let n = tls_records(bytes).iter().filter(|(t, _)| *t == 23).count();
            assert!(n > 0, "no application data from the {who}\n{c}");
            counts.push(n);
        }
        for text in clear {
            assert!(
                text.len() >= 12,
                "{text:?} is too short to search ciphertext for"
            );
            for bytes in [&up, &down] {
                assert!(
                    !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
                    "{text:?} crossed the relay in the clear\n{c}"
                );
            }
        }
    }
    let (version, suite) = server_hello(&relay.bytes(0, false))
        .unwrap_or_else(|| panic!("no readable ServerHello\n{c}"));
    let (version, suite) = (version_name(version), suite_name(suite));
    format!(
        "{} TLS connection(s), {version}, {suite}, each a ClientHello, then \
         application-data records both ways ({counts:?}); no payload in the clear",
        relay.connections()
    )
}

fn tls(ours_client: bool) -> String {
    let (cert, key, ca) = (pki("server.pem"), pki("server.key"), pki("ca.pem"));
    let (mine, my_key) = (pki("client.pem"), pki("client.key"));
    let server_args = ["-c", &cert, "-j", &key, "-C", &ca, "-d", "10"];
    let server = if ours_client {
        tls_server(&libcoap(OPENSSL.server()), &server_args)
    } else {
        tls_server(&ours("coap-server"), &server_args)
    };
    let relay = TcpRelay::new(tls_addr(&server));
    let creds = [
        "-c",
        mine.as_str(),
        "-j",
        my_key.as_str(),
        "-C",
        ca.as_str(),
    ];
    let client = |args: &[&str]| {
        let a = [&creds[..], args].concat();
        if ours_client {
            our_client(&a)
        } else {
            libcoap_client(&a)
        }
    };
    let secret = "coaps+tcp conformance payload, never in the clear";
    let r = client(&["-m", "put", "-e", secret, &relay.uri("coaps+tcp", "secret")]);
    r.expect_code(0);
    let r = client(&[&relay.uri("coaps+tcp", "secret")]);
    r.expect_code(0);
    assert!(r.stdout.contains(secret), "{}", r.describe());
    let r = client(&[&relay.uri("coaps+tcp", "")]);
    r.expect_code(0);
    assert!(r.stdout.contains(ROOT_TEXT), "{}", r.describe());
    relay.wait_closed(false, PROMPT);
    let c = format!("{}\n--- wire\n{}", r.describe(), relay.tls_trace());
    let checked = check_tls(&relay, &[secret, ROOT_TEXT], &c);
    format!(
        "certificates both ways (server -C asks for the client's): PUT, GET of it, GET / over \
         coaps+tcp, exit 0; {checked}"
    )
}

// ---------------------------------------------------------------------------------------------
// Rows

pub fn cases() -> Vec<Case> {
    let ours = Dir::OursToTls(OPENSSL);
    let theirs = Dir::TlsToOurs(OPENSSL);
    vec![
        Case::new(
            "TCP_01",
            ours,
            "CSM both ways (coap+tcp): first frame each way, Max-Message-Size as -X, Block-Wise-Transfer",
            csm_ours,
            false,
        ),
        Case::new(
            "TCP_01",
            theirs,
            "CSM both ways (coap+tcp): first frame each way, Max-Message-Size as -X, Block-Wise-Transfer",
            csm_libcoap,
            false,
        ),
        Case::new(
            "TCP_02",
            ours,
            "GET, PUT, POST, DELETE over coap+tcp: codes and tokens on the wire",
            || methods(true),
            false,
        ),
        Case::new(
            "TCP_02",
            theirs,
            "GET, PUT, POST, DELETE over coap+tcp: codes and tokens on the wire",
            || methods(false),
            false,
        ),
        Case::new(
            "TCP_03",
            ours,
            "Ping/Pong: the client's -K 1 Pings answered by Pongs with their tokens; a raw Ping with Custody",
            ping_ours,
            false,
        ),
        Case::new(
            "TCP_03",
            theirs,
            "Ping/Pong: the client's -K 1 Pings answered by Pongs with their tokens; a raw Ping with Custody echoed",
            ping_libcoap,
            false,
        ),
        Case::new(
            "TCP_04",
            ours,
            "100 kB PUT and GET byte-exact, server -X 1152, GET with client -X 1152 and without: no frame above the receiver's Max-Message-Size",
            || large(true),
            false,
        ),
        Case::new(
            "TCP_04",
            theirs,
            "100 kB PUT and GET byte-exact, server -X 1152, GET with client -X 1152 and without: no frame above the receiver's Max-Message-Size",
            || large(false),
            false,
        ),
        Case::new(
            "TCP_05",
            ours,
            "observe /time over coap+tcp (-s 3): Observe 0, increasing notifications, deregistration",
            || observe(true),
            false,
        ),
        Case::new(
            "TCP_05",
            theirs,
            "observe /time over coap+tcp (-s 3): Observe 0, increasing notifications, deregistration",
            || observe(false),
            false,
        ),
        Case::new(
            "TCP_06",
            ours,
            "Release: our client ends with 7.04 then FIN; a fake server (the test) sends Release / Abort: exit 3, one line",
            release_ours,
            false,
        ),
        Case::new(
            "TCP_06",
            ours,
            "Release/Abort to coap-server-openssl (a raw client, the test, sends them): what it does",
            release_to_libcoap,
            true,
        ),
        Case::new(
            "TCP_06",
            theirs,
            "Release/Abort to our server (a raw client, the test, sends them): it closes, sends nothing more, keeps serving",
            release_to_ours,
            false,
        ),
        Case::new(
            "TCP_06",
            theirs,
            "Release/Abort to coap-client-openssl (a fake server, the test, sends them): what it does",
            release_to_libcoap_client,
            true,
        ),
        Case::new(
            "TCP_07",
            theirs,
            "malformed to our server: a raw client (the test) sends no CSM / token length 9 / a 1 MB length; Abort, then close",
            malformed_to_ours,
            false,
        ),
        Case::new(
            "TCP_07",
            ours,
            "malformed to coap-server-openssl: a raw client (the test) sends no CSM / token length 9 / a 1 MB length; what it does",
            malformed_to_libcoap,
            true,
        ),
        Case::new(
            "TCP_07",
            ours,
            "malformed to our client: a fake server (the test) sends no CSM / token length 15; Abort, close, exit 3",
            malformed_ours_client,
            false,
        ),
        Case::new(
            "TCP_07",
            theirs,
            "malformed to coap-client-openssl: a fake server (the test) sends no CSM / token length 15; what it does",
            malformed_libcoap_client,
            true,
        ),
        Case::new(
            "TLS_01",
            ours,
            "coaps+tcp with certificates both ways: PUT/GET exit 0, TLS records on the wire, no payload in the clear",
            || tls(true),
            false,
        ),
        Case::new(
            "TLS_01",
            theirs,
            "coaps+tcp with certificates both ways: PUT/GET exit 0, TLS records on the wire, no payload in the clear",
            || tls(false),
            false,
        ),
    ]
}
