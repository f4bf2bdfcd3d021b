//! DTLS_01–03 and DTLS_08–11 (RFC 7252 §9: DTLS 1.2, as libcoap 4.3.1 speaks it) against
//! both of libcoap's DTLS builds, in both directions: our `coap-client` (or the engine
//! in-process, where said) → `coap-server-openssl` / `coap-server-gnutls`, and
//! `coap-client-openssl` / `coap-client-gnutls` → our `coap-server`. Each (case, direction,
//! build) is a row of its own. LIVE_06 (DTLS in network namespaces) is in `live/dtls.rs`.
//!
//! The relay forwards DTLS datagrams like any others. It cannot read the CoAP inside, but it
//! reads the record layer: content types (22 handshake, 20 change_cipher_spec, 21 alert, 23
//! application data), epochs, the plaintext handshake messages of epoch 0 (the cipher suite a
//! ServerHello picks, whose Certificate went which way) and plaintext alerts. So besides exit
//! codes and payloads every case checks that a handshake took place and that the CoAP
//! payloads never crossed in the clear. DTLS_03 has the relay lose handshake records.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
use coap_engine::dtls::{trust_anchors_from_pem_file, Dtls, DtlsConfig, PskCredentials};
use coap_engine::{
    Config, Event, ExchangeError, FailureReason, Keepalive, Security, TransmissionParameters,
};
use coap_engine_conformance::{
    dtls_records, libcoap, ours, run, Background, Datagram, DtlsRecord, Relay, Run, Scratch,
    Server, ALERT, APPLICATION_DATA, CERTIFICATE, CERTIFICATE_REQUEST, CHANGE_CIPHER_SPEC,
    CLIENT_HELLO, HANDSHAKE, HELLO_VERIFY_REQUEST, SERVER_HELLO,
};
use coap_engine_mio::Driver;

use crate::{example_data, Case, Dir, Tls, CLIENT_LIMIT};

/// The PSK identity and key every PSK case uses (libcoap's `-u` and `-k`).
pub const IDENTITY: &str = "conformance";
pub const KEY: &str = "conformance-secret";
const WRONG_KEY: &str = "not-the-secret";

/// How `/` begins on both servers: it must never cross the relay in the clear.
const ROOT_TEXT: &str = "This is a test server";

/// Timer resolution, process start and exit on a loaded machine, on top of a bound.
const SLACK: Duration = Duration::from_millis(750);

/// A file of the test PKI in `core/tests/certs`: `ca.pem` issues `server.pem` (localhost,
/// 127.0.0.1, ::1) and `client.pem`; `other-ca.pem`, trusted by nobody, issues
/// `other-server.pem` (the same names).
pub fn pki(name: &str) -> String {
    format!("{}/../core/tests/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Peers

fn libcoap_server(t: Tls, args: &[&str]) -> Server {
    Server::start_dtls(&libcoap(t.server()), args)
}

fn our_server(args: &[&str]) -> Server {
    Server::start_dtls(&ours("coap-server"), args)
}

/// Our client with `args` as given (each case sets its own `-B`).
fn our_client(args: &[&str]) -> Run {
    run(&ours("coap-client"), args, CLIENT_LIMIT)
}

/// Our client with the PSK identity and key.
fn our_psk_client(args: &[&str]) -> Run {
    our_client(&[&["-u", IDENTITY, "-k", KEY, "-B", "20"][..], args].concat())
}

/// libcoap's client of build `t`, at its default verbosity: its warnings (a failed
/// handshake's cause among them) go to stdout with the payload.
fn libcoap_client(t: Tls, args: &[&str]) -> Run {
    run(&libcoap(t.client()), args, CLIENT_LIMIT)
}

fn libcoap_psk_client(t: Tls, args: &[&str]) -> Run {
    libcoap_client(
        t,
        &[&["-u", IDENTITY, "-k", KEY, "-B", "20"][..], args].concat(),
    )
}

// ---------------------------------------------------------------------------------------------
// The wire: DTLS records as the relay saw them

fn ctx(relay: &Relay, run: &Run) -> String {
    format!(
        "{}\n--- wire (DTLS records)\n{}",
        run.describe(),
        relay.dtls_trace()
    )
}

/// The datagrams of one run, read once.
struct Wire {
    dgs: Vec<Datagram>,
}

impl Wire {
    fn read(relay: &Relay) -> Wire {
        Wire {
            dgs: relay.datagrams(),
        }
    }

    /// Records that passed (not dropped) in one direction, with their arrival.
    fn records(&self, to_server: bool) -> Vec<(Instant, DtlsRecord)> {
        self.dgs
            .iter()
            .filter(|d| d.to_server == to_server && !d.dropped)
            .flat_map(|d| d.records().into_iter().map(move |r| (d.at, r)))
            .collect()
    }

    fn count(&self, to_server: bool, content_type: u8) -> usize {
        self.records(to_server)
            .iter()
            .filter(|(_, r)| r.content_type == content_type)
            .count()
    }

    /// Plaintext handshake messages of a type that passed in one direction.
    fn handshakes(&self, to_server: bool, ty: u8) -> Vec<(Instant, DtlsRecord)> {
        self.records(to_server)
            .into_iter()
            .filter(|(_, r)| r.handshake_type() == Some(ty))
            .collect()
    }

    /// Records of the datagrams the relay dropped.
    fn dropped(&self) -> Vec<(bool, Instant, DtlsRecord)> {
        self.dgs
            .iter()
            .filter(|d| d.dropped)
            .flat_map(|d| d.records().into_iter().map(move |r| (d.to_server, d.at, r)))
            .collect()
    }

    /// The cipher suite of the first ServerHello that passed.
    fn suite(&self) -> Option<u16> {
        self.handshakes(false, SERVER_HELLO)
            .iter()
            .find_map(|(_, r)| r.server_hello_suite())
    }

    fn alerts(&self, to_server: bool) -> Vec<DtlsRecord> {
        self.records(to_server)
            .into_iter()
            .filter(|(_, r)| r.content_type == ALERT)
            .map(|(_, r)| r)
            .collect()
    }

    /// Whether `needle` occurs in any datagram of one direction.
    fn carries(&self, to_server: bool, needle: &[u8]) -> bool {
        self.dgs
            .iter()
            .filter(|d| d.to_server == to_server)
            .any(|d| d.bytes.windows(needle.len()).any(|w| w == needle))
    }
}

fn suite_name(s: u16) -> String {
    let name = match s {
        0xC0A8 => "TLS_PSK_WITH_AES_128_CCM_8",
        0xC0A4 => "TLS_PSK_WITH_AES_128_CCM",
        0x00A8 => "TLS_PSK_WITH_AES_128_GCM_SHA256",
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xCCA9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xC0AE => "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
        _ => "",
    };
    format!("{s:#06x} {name}").trim_end().to_string()
}

/// The ECDHE-ECDSA suites of RFC 5289, RFC 7251 and RFC 7905.
fn is_ecdhe_ecdsa(s: u16) -> bool {
    matches!(
        s,
        0xC023 | 0xC024 | 0xC02B | 0xC02C | 0xCCA9 | 0xC0AC..=0xC0AF
    )
}

/// RFC 6066 §7.2 / RFC 5246 §7.2 alert descriptions seen in these cases.
fn alert_name(d: u8) -> String {
    let name = match d {
        0 => "close_notify",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        51 => "decrypt_error",
        115 => "unknown_psk_identity",
        _ => "",
    };
    format!("{d} {name}").trim_end().to_string()
}

fn describe_alerts(alerts: &[DtlsRecord]) -> String {
    if alerts.is_empty() {
        return "none".into();
    }
    alerts
        .iter()
        .map(|r| match r.plain_alert() {
            Some((level, d)) => format!(
                "{} {}",
                if level == 2 { "fatal" } else { "warning" },
                alert_name(d)
            ),
            None => format!("encrypted (epoch {})", r.epoch),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A completed handshake with encrypted CoAP both ways: ClientHello and ServerHello,
/// change_cipher_spec each way, application data each way, and none of `clear` (payload
/// texts) in any datagram. Returns a summary for the note.
#[track_caller]
fn check_secured(w: &Wire, clear: &[&str], c: &str) -> String {
    assert!(
        !w.handshakes(true, CLIENT_HELLO).is_empty(),
        "no ClientHello\n{c}"
    );
    assert!(
        !w.handshakes(false, SERVER_HELLO).is_empty(),
        "no ServerHello\n{c}"
    );
    for to_server in [true, false] {
        assert!(
            w.count(to_server, CHANGE_CIPHER_SPEC) > 0,
            "no change_cipher_spec {}\n{c}",
            if to_server {
                "from the client"
            } else {
                "from the server"
            }
        );
        assert!(
            w.count(to_server, APPLICATION_DATA) > 0,
            "no application data {}\n{c}",
            if to_server {
                "from the client"
            } else {
                "from the server"
            }
        );
    }
    for text in clear {
        // A short text turns up in ciphertext by chance (two bytes in a few kilobytes of
        // records: about one run in a hundred), so only texts that cannot are searched for.
        assert!(
            text.len() >= 12,
            "{text:?} is too short to tell plaintext from chance"
        );
        for to_server in [true, false] {
            assert!(
                !w.carries(to_server, text.as_bytes()),
                "{text:?} crossed the relay in the clear\n{c}"
            );
        }
    }
    let cookie = !w.handshakes(false, HELLO_VERIFY_REQUEST).is_empty();
    format!(
        "suite {}{}; {} application-data record(s) to the server, {} back; no payload in the clear",
        w.suite().map_or("?".into(), suite_name),
        if cookie {
            ", after a HelloVerifyRequest cookie exchange"
        } else {
            ""
        },
        w.count(true, APPLICATION_DATA),
        w.count(false, APPLICATION_DATA)
    )
}

#[track_caller]
fn check_psk_suite(w: &Wire, c: &str) {
    // RFC 7252 §9.1.3.1: TLS_PSK_WITH_AES_128_CCM_8 is the mandatory PSK suite.
    assert_eq!(
        w.suite(),
        Some(0xC0A8),
        "PSK suite TLS_PSK_WITH_AES_128_CCM_8 expected\n{c}"
    );
}

/// A refused handshake: no application data either way, nothing after the refusal.
#[track_caller]
fn check_no_application_data(w: &Wire, c: &str) {
    for to_server in [true, false] {
        assert_eq!(
            w.count(to_server, APPLICATION_DATA),
            0,
            "application data crossed a refused handshake\n{c}"
        );
    }
}

/// The first of libcoap's log lines (its clients log to stdout) at WARN or ERR, for the
/// notes: the message after `tag` (its layer, as `" DTLS: "` or `" TLS : "`) or `ERR`, without
/// the time and addresses.
pub fn libcoap_complaint(r: &Run, tag: &str) -> String {
    format!("{}{}", r.stdout, r.stderr)
        .lines()
        .find(|l| l.contains(" WARN ") || l.contains(" ERR "))
        .map(|l| {
            let l = l.split_once(tag).map_or(l, |(_, m)| m);
            let l = l.split_once(" ERR ").map_or(l, |(_, m)| m);
            format!("`{}`", l.trim())
        })
        .unwrap_or_else(|| "nothing".into())
}

/// A client's exit status for the notes.
pub fn exit(r: &Run) -> String {
    r.code()
        .map_or("none (killed at the limit)".into(), |c| c.to_string())
}

fn der(name: &str) -> Vec<u8> {
    trust_anchors_from_pem_file(std::path::Path::new(&pki(name)))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
        .remove(0)
        .as_ref()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// DTLS_01: PSK

fn psk_ours(t: Tls) -> String {
    let server = libcoap_server(t, &["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    let r = our_psk_client(&[&relay.coaps_uri("")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("libcoap"), "{c}");
    let w = Wire::read(&relay);
    check_psk_suite(&w, &c);
    let secured = check_secured(&w, &[ROOT_TEXT], &c);
    format!("exit 0, libcoap's / text; {secured}")
}

fn psk_libcoap(t: Tls) -> String {
    let server = our_server(&["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    let r = libcoap_psk_client(t, &[&relay.coaps_uri("")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("coap-engine"), "{c}");
    let w = Wire::read(&relay);
    check_psk_suite(&w, &c);
    let secured = check_secured(&w, &[ROOT_TEXT], &c);
    format!("exit 0, our / text; {secured}")
}

// ---------------------------------------------------------------------------------------------
// DTLS_02: a wrong PSK

fn wrong_psk_ours(t: Tls) -> String {
    let server = libcoap_server(t, &["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    let uri = relay.coaps_uri("");
    let r = our_client(&["-u", IDENTITY, "-k", WRONG_KEY, "-B", "3", &uri]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
    let line = r.one_stderr_line(&["DTLS", "pre-shared key"], &c);
    let w = Wire::read(&relay);
    check_no_application_data(&w, &c);
    // The client got as far as its encrypted Finished (epoch 1): the key was tried and
    // refused, the handshake did not just stall.
    assert!(
        w.records(true)
            .iter()
            .any(|(_, r)| r.content_type == HANDSHAKE && r.epoch == 1),
        "our client never sent its Finished\n{c}"
    );
    assert!(
        r.elapsed < Duration::from_secs(3) + SLACK,
        "not within -B 3\n{c}"
    );
    let alerts = w.alerts(false);
    let told = if alerts.is_empty() {
        "the server sent no alert (it drops the Finished it cannot decrypt), so only -B ended the wait".to_string()
    } else {
        format!("the server's alerts: {}", describe_alerts(&alerts))
    };
    format!(
        "exit 3 after {:.1} s (-B 3), `{line}`; {told}; no application data",
        r.elapsed.as_secs_f64()
    )
}

fn wrong_psk_libcoap(t: Tls) -> String {
    let server = our_server(&["-k", KEY, "-v", "4"]);
    let relay = Relay::new(server.dtls_addr());
    let uri = relay.coaps_uri("");
    let r = libcoap_client(t, &["-u", IDENTITY, "-k", WRONG_KEY, "-B", "5", &uri]);
    let c = format!("{}\n--- our server\n{}", ctx(&relay, &r), server.output());
    assert!(r.status.is_some(), "{} did not end\n{c}", t.client());
    assert!(!r.stdout.contains("coap-engine"), "answered anyway\n{c}");
    let w = Wire::read(&relay);
    check_no_application_data(&w, &c);
    // Our server refuses the client's Finished with a fatal alert, in the clear: it has no
    // keys in common with the client to encrypt it with.
    let alerts = w.alerts(false);
    assert!(
        alerts
            .iter()
            .any(|a| a.plain_alert().is_some_and(|(level, _)| level == 2)),
        "our server sent no fatal alert\n{c}"
    );
    assert!(
        server.output().contains("pre-shared key does not match"),
        "our server did not log the refusal\n{c}"
    );
    format!(
        "our server: alert {}, logged `pre-shared key does not match`; {} exit status {} after {:.1} s, printed {}",
        describe_alerts(&alerts),
        t.client(),
        exit(&r),
        r.elapsed.as_secs_f64(),
        libcoap_complaint(&r, " DTLS: ")
    )
}

// ---------------------------------------------------------------------------------------------
// DTLS_03: a lossy link (the relay loses handshake records)

/// Makes the relay lose the client's first ClientHello and the server's first datagram
/// carrying a ServerHello: both sides' retransmission timers (RFC 6347 §4.2.4) must recover.
fn lose_hellos(relay: &Relay) {
    let (mut hello, mut server_hello) = (false, false);
    relay.drop_when(move |to_server, bytes| {
        let has = |ty: u8| {
            dtls_records(bytes)
                .iter()
                .any(|r| r.handshake_type() == Some(ty))
        };
        if to_server && !hello && has(CLIENT_HELLO) {
            hello = true;
            return true;
        }
        if !to_server && !server_hello && has(SERVER_HELLO) {
            server_hello = true;
            return true;
        }
        false
    });
}

/// The checks of DTLS_03 once the client is done; returns the note.
#[track_caller]
fn check_lossy(relay: &Relay, r: &Run, c: &str) -> String {
    if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
        eprintln!("{c}");
    }
    let w = Wire::read(relay);
    let dropped = w.dropped();
    let lost = |to_server: bool, ty: u8| {
        dropped
            .iter()
            .find(|(up, _, r)| *up == to_server && r.handshake_type() == Some(ty))
            .map(|(_, at, r)| (*at, r.clone()))
    };
    let (hello_lost_at, hello_lost) =
        lost(true, CLIENT_HELLO).unwrap_or_else(|| panic!("no ClientHello was lost\n{c}"));
    let (sh_lost_at, _) =
        lost(false, SERVER_HELLO).unwrap_or_else(|| panic!("no ServerHello was lost\n{c}"));
    let hellos = w.handshakes(true, CLIENT_HELLO);
    let (resent_at, resent) = hellos
        .iter()
        .find(|(at, _)| *at > hello_lost_at)
        .unwrap_or_else(|| panic!("the lost ClientHello was never sent again\n{c}"));
    // RFC 6347 §4.1: every record, a retransmitted one too, has a new sequence number.
    assert!(
        resent.sequence > hello_lost.sequence,
        "a retransmitted ClientHello must have a new record sequence number\n{c}"
    );
    let recovered = w
        .handshakes(false, SERVER_HELLO)
        .into_iter()
        .find(|(at, _)| *at > sh_lost_at)
        .map(|(at, _)| at)
        .unwrap_or_else(|| panic!("no ServerHello after the lost one\n{c}"));
    let secured = check_secured(&w, &[ROOT_TEXT], c);
    // Who resent first after the lost ServerHello: the client (its ClientHello again) or
    // the server (its flight, on its own timer).
    let client_first = hellos
        .iter()
        .any(|(at, _)| *at > sh_lost_at && *at < recovered);
    let requests = w.count(true, APPLICATION_DATA);
    format!(
        "exit 0 after {:.1} s, the GET sent {requests} time(s); lost ClientHello resent {:.2} s later (record #{} → #{}); lost ServerHello flight resent {:.2} s later{}; {} ClientHello(s) and {} ServerHello(s) passed; {secured}",
        r.elapsed.as_secs_f64(),
        (*resent_at - hello_lost_at).as_secs_f64(),
        hello_lost.sequence,
        resent.sequence,
        (recovered - sh_lost_at).as_secs_f64(),
        if client_first {
            " (after the client's ClientHello came again)"
        } else {
            " (on the server's own timer)"
        },
        hellos.len(),
        w.handshakes(false, SERVER_HELLO).len()
    )
}

fn lossy_ours(t: Tls) -> String {
    let server = libcoap_server(t, &["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    lose_hellos(&relay);
    let r = our_psk_client(&[&relay.coaps_uri("")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("libcoap"), "{c}");
    check_lossy(&relay, &r, &c)
}

fn lossy_libcoap(t: Tls) -> String {
    let server = our_server(&["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    lose_hellos(&relay);
    let r = libcoap_psk_client(t, &[&relay.coaps_uri("")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("coap-engine"), "{c}");
    check_lossy(&relay, &r, &c)
}

// ---------------------------------------------------------------------------------------------
// DTLS_08: certificates, both ways (the server asks for and checks the client's)

/// ECDHE-ECDSA, each side's Certificate on the wire (the exact DER), a CertificateRequest.
#[track_caller]
fn check_certificates(w: &Wire, c: &str) -> String {
    let suite = w.suite().unwrap_or_else(|| panic!("no ServerHello\n{c}"));
    assert!(
        is_ecdhe_ecdsa(suite),
        "ECDHE-ECDSA suite expected, got {}\n{c}",
        suite_name(suite)
    );
    assert!(
        !w.handshakes(false, CERTIFICATE_REQUEST).is_empty(),
        "the server did not ask for a client certificate\n{c}"
    );
    assert!(
        !w.handshakes(false, CERTIFICATE).is_empty() && w.carries(false, &der("server.pem")),
        "server.pem not sent by the server\n{c}"
    );
    assert!(
        !w.handshakes(true, CERTIFICATE).is_empty() && w.carries(true, &der("client.pem")),
        "client.pem not sent by the client\n{c}"
    );
    check_secured(w, &[ROOT_TEXT], c)
}

fn certificates_ours(t: Tls) -> String {
    let (cert, key, ca) = (pki("server.pem"), pki("server.key"), pki("ca.pem"));
    // libcoap's -C: client certificates are asked for and checked against the CA.
    let server = libcoap_server(t, &["-c", &cert, "-j", &key, "-C", &ca]);
    let relay = Relay::new(server.dtls_addr());
    let (mine, my_key) = (pki("client.pem"), pki("client.key"));
    let uri = relay.coaps_uri("");
    let r = our_client(&["-c", &mine, "-j", &my_key, "-C", &ca, "-B", "20", &uri]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("libcoap"), "{c}");
    let checked = check_certificates(&Wire::read(&relay), &c);
    format!("exit 0, libcoap's / text; server.pem and client.pem exchanged and accepted; {checked}")
}

fn certificates_libcoap(t: Tls) -> String {
    let (cert, key, ca) = (pki("server.pem"), pki("server.key"), pki("ca.pem"));
    let server = our_server(&["-c", &cert, "-j", &key, "-C", &ca]);
    let relay = Relay::new(server.dtls_addr());
    let (mine, my_key) = (pki("client.pem"), pki("client.key"));
    let uri = relay.coaps_uri("");
    let r = libcoap_client(
        t,
        &["-c", &mine, "-j", &my_key, "-C", &ca, "-B", "20", &uri],
    );
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(r.stdout.contains("coap-engine"), "{c}");
    let checked = check_certificates(&Wire::read(&relay), &c);
    format!("exit 0, our / text; server.pem and client.pem exchanged and accepted; {checked}")
}

// ---------------------------------------------------------------------------------------------
// DTLS_09: a server certificate from an unknown CA, or for another name

/// 127.0.0.2 reaches a loopback server whose certificate names localhost, 127.0.0.1 and ::1
/// only: the wrong name.
const OTHER_NAME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn refused_ours(t: Tls) -> String {
    let ca = pki("ca.pem");
    let untrusted = libcoap_server(
        t,
        &[
            "-c",
            &pki("other-server.pem"),
            "-j",
            &pki("other-server.key"),
        ],
    );
    let relay = Relay::new(untrusted.dtls_addr());
    let uri = relay.coaps_uri("");
    let r = our_client(&["-C", &ca, "-B", "5", &uri]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
    let unknown = r.one_stderr_line(&["DTLS", "unknown CA"], &c);
    let w = Wire::read(&relay);
    check_no_application_data(&w, &c);
    // A refusal, told to the server, not a timeout.
    assert!(r.elapsed < Duration::from_secs(3), "{c}");
    let told_ca = describe_alerts(&w.alerts(true));
    assert_ne!(told_ca, "none", "our client sent the server no alert\n{c}");
    drop(relay);

    let named = libcoap_server(t, &["-c", &pki("server.pem"), "-j", &pki("server.key")]);
    let relay = Relay::on(OTHER_NAME, named.dtls_addr());
    let uri = relay.coaps_uri("");
    let r = our_client(&["-C", &ca, "-B", "5", &uri]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(3), "exit status 3 expected\n{c}");
    let mismatch = r.one_stderr_line(&["DTLS", "name mismatch", "127.0.0.2"], &c);
    let w = Wire::read(&relay);
    check_no_application_data(&w, &c);
    assert!(r.elapsed < Duration::from_secs(3), "{c}");
    let told_name = describe_alerts(&w.alerts(true));
    assert_ne!(
        told_name, "none",
        "our client sent the server no alert\n{c}"
    );
    format!(
        "other-server.pem (untrusted CA): exit 3, `{unknown}`, alert {told_ca}; server.pem reached as 127.0.0.2: exit 3, `{mismatch}`, alert {told_name}; no application data"
    )
}

/// What libcoap's client did against one of our servers: exit status, whether it printed our
/// answer, what it logged, the alerts it sent.
fn libcoap_verdict(t: Tls, server: &Server, relay: &Relay) -> (Run, String) {
    let uri = relay.coaps_uri("");
    let r = libcoap_client(t, &["-C", &pki("ca.pem"), "-B", "5", &uri]);
    let c = format!("{}\n--- our server\n{}", ctx(relay, &r), server.output());
    assert!(r.status.is_some(), "{} did not end\n{c}", t.client());
    let w = Wire::read(relay);
    let accepted = r.stdout.contains("coap-engine");
    if !accepted {
        check_no_application_data(&w, &c);
    }
    let note = format!(
        "{} (exit status {}, logged {}, alert {})",
        if accepted {
            "ACCEPTED: printed our answer"
        } else {
            "refused"
        },
        exit(&r),
        libcoap_complaint(&r, " DTLS: "),
        describe_alerts(&w.alerts(true))
    );
    (r, note)
}

fn refused_libcoap(t: Tls) -> String {
    let untrusted = our_server(&[
        "-c",
        &pki("other-server.pem"),
        "-j",
        &pki("other-server.key"),
        "-v",
        "4",
    ]);
    let relay = Relay::new(untrusted.dtls_addr());
    let (_, unknown) = libcoap_verdict(t, &untrusted, &relay);
    let logged = untrusted
        .output()
        .lines()
        .find(|l| l.contains("DTLS"))
        .map(|l| {
            format!(
                "`{}`",
                l.split_once(": DTLS: ").map_or(l, |(_, m)| m).trim()
            )
        })
        .unwrap_or_else(|| "nothing".into());
    drop(relay);

    let named = our_server(&["-c", &pki("server.pem"), "-j", &pki("server.key")]);
    let relay = Relay::on(OTHER_NAME, named.dtls_addr());
    let (_, mismatch) = libcoap_verdict(t, &named, &relay);
    format!(
        "untrusted CA: {unknown}, our server logged {logged}; server.pem reached as 127.0.0.2 (name not in the certificate): {mismatch}"
    )
}

// ---------------------------------------------------------------------------------------------
// DTLS_10: the server restarts; the client notices and its next request re-handshakes

fn get_root() -> Packet {
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get
}

fn psk_engine(keepalive: Option<Keepalive>, transmission: TransmissionParameters) -> Driver {
    let dtls = Dtls::new(
        DtlsConfig {
            psk: Some(PskCredentials {
                identity: IDENTITY.as_bytes().to_vec(),
                key: KEY.as_bytes().to_vec(),
            }),
            ..DtlsConfig::default()
        },
        coap_engine_mio::dtls_entropy(),
    )
    .expect("DTLS configuration");
    let config = Config {
        security: Some(Security::new(dtls)),
        keepalive,
        transmission,
        ..Config::default()
    };
    Driver::bind("127.0.0.1:0".parse().unwrap(), config).expect("bind the engine")
}

/// What one request of the engine ended with, and the session failures seen meanwhile.
struct Outcome {
    response: Result<Packet, ExchangeError>,
    failures: Vec<(Instant, FailureReason)>,
}

/// Drives the engine: ends a GET when it is answered or fails, or an idle wait at the first
/// session failure; gives up at `give_up` either way.
struct Until {
    request: Option<coap_engine::RequestId>,
    give_up: Instant,
    response: Option<Result<Packet, ExchangeError>>,
    failures: Vec<(Instant, FailureReason)>,
}

impl coap_engine_mio::Handler for Until {
    fn on_event(&mut self, _: &mut Driver, event: Event) -> ControlFlow<()> {
        match event {
            Event::Response { id, response, .. } if Some(id) == self.request => {
                self.response = Some(Ok(response));
                ControlFlow::Break(())
            }
            Event::RequestFailed { id, error, .. } if Some(id) == self.request => {
                self.response = Some(Err(error));
                ControlFlow::Break(())
            }
            Event::SessionFailed { reason, .. } => {
                self.failures.push((Instant::now(), reason));
                if self.request.is_none() {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn on_tick(&mut self, _: &mut Driver) -> ControlFlow<(), Option<Instant>> {
        if Instant::now() >= self.give_up {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(self.give_up))
    }
}

fn drive(driver: &mut Driver, request: Option<coap_engine::RequestId>, limit: Duration) -> Until {
    let mut until = Until {
        request,
        give_up: Instant::now() + limit,
        response: None,
        failures: Vec::new(),
    };
    driver.run(&mut until).expect("engine loop");
    until
}

/// Sends GET / and drives the engine until the request ends; panics (with `c()`) after
/// `limit`.
fn engine_get(
    driver: &mut Driver,
    peer: SocketAddr,
    limit: Duration,
    c: &dyn Fn() -> String,
) -> Outcome {
    let id = driver.request(peer, &get_root()).expect("request");
    let until = drive(driver, Some(id), limit);
    let response = until
        .response
        .unwrap_or_else(|| panic!("GET / did not end within {limit:?}\n{}", c()));
    Outcome {
        response,
        failures: until.failures,
    }
}

/// Drives the engine without a request until a session fails; panics after `limit`.
fn engine_idle_until_failure(
    driver: &mut Driver,
    limit: Duration,
    c: &dyn Fn() -> String,
) -> (Instant, FailureReason) {
    drive(driver, None, limit)
        .failures
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no session failure within {limit:?}\n{}", c()))
}

#[track_caller]
fn expect_root(o: &Outcome, c: &dyn Fn() -> String) {
    match &o.response {
        Ok(p) => {
            assert_eq!(p.header.code.to_string(), "2.05", "{}", c());
            assert!(
                String::from_utf8_lossy(&p.payload).contains("libcoap"),
                "{}",
                c()
            );
        }
        Err(e) => panic!("GET / failed: {e}\n{}", c()),
    }
}

/// ClientHellos (without and with the cookie) that passed after `from`.
fn hellos_after(relay: &Relay, from: Instant) -> usize {
    Wire::read(relay)
        .handshakes(true, CLIENT_HELLO)
        .iter()
        .filter(|(at, _)| *at > from)
        .count()
}

/// The engine in-process against a server that restarts, twice: with keepalive, then
/// without. Each phase has its own relay, so the server sees each engine at an address of
/// its own (as a new client, not as one it already has an association with).
fn restart_engine(t: Tls) -> String {
    let mut server = libcoap_server(t, &["-k", KEY]);
    let with = restart_with_keepalive(&mut server);
    let without = restart_without_keepalive(&mut server);
    format!("{with}. {without}")
}

/// With keepalive (1 s + 1 s) the engine notices the restarted server within the bound
/// after the last packet heard and fails the session; its next GET handshakes again and is
/// answered.
fn restart_with_keepalive(server: &mut Server) -> String {
    let relay = Relay::new(server.dtls_addr());
    let peer = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let c = || format!("--- wire (DTLS records)\n{}", relay.dtls_trace());
    let keepalive = Keepalive {
        interval: Duration::from_secs(1).into(),
        timeout: Duration::from_secs(1).into(),
    };
    let bound = Duration::from_secs(2);
    let mut driver = psk_engine(Some(keepalive), TransmissionParameters::default());
    let first = engine_get(&mut driver, peer, Duration::from_secs(10), &c);
    expect_root(&first, &c);
    // Idle long enough for a keepalive ping to be answered before the restart.
    let nothing = drive(&mut driver, None, Duration::from_millis(1500));
    assert!(
        nothing.failures.is_empty(),
        "the session failed before the restart\n{}",
        c()
    );
    let killed = server.restart();
    let (failed_at, reason) = engine_idle_until_failure(&mut driver, Duration::from_secs(10), &c);
    assert!(
        matches!(reason, FailureReason::KeepaliveTimeout { .. }),
        "keepalive failure expected, got {reason:?}\n{}",
        c()
    );
    let w = Wire::read(&relay);
    let last_heard = w
        .dgs
        .iter()
        .filter(|d| !d.to_server && d.at <= killed)
        .map(|d| d.at)
        .next_back()
        .unwrap_or_else(|| panic!("nothing heard before the restart\n{}", c()));
    let after = failed_at.saturating_duration_since(last_heard);
    assert!(
        after <= bound + SLACK,
        "session failed {after:?} after the last packet heard > {bound:?} + {SLACK:?}\n{}",
        c()
    );
    let second = engine_get(&mut driver, peer, Duration::from_secs(10), &c);
    expect_root(&second, &c);
    let rehandshake = hellos_after(&relay, failed_at);
    assert!(
        rehandshake > 0,
        "the next request did not start a new handshake\n{}",
        c()
    );
    format!(
        "keepalive 1+1 s: restart noticed {:.2} s after the last packet heard (bound {} s), `{reason}`; next GET: a new handshake, 2.05",
        after.as_secs_f64(),
        bound.as_secs()
    )
}

/// Without keepalive, a GET sent into the lost association goes unanswered through its
/// retransmissions (ACK_TIMEOUT 300 ms, MAX_RETRANSMIT 2) and fails with `NoResponse`; the
/// next GET handshakes again and is answered.
fn restart_without_keepalive(server: &mut Server) -> String {
    let relay = Relay::new(server.dtls_addr());
    let peer = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let c = || format!("--- wire (DTLS records)\n{}", relay.dtls_trace());
    let quick = TransmissionParameters {
        ack_timeout: Duration::from_millis(300).into(),
        max_retransmit: 2,
        ..TransmissionParameters::default()
    };
    let mut driver = psk_engine(None, quick);
    let first = engine_get(&mut driver, peer, Duration::from_secs(10), &c);
    expect_root(&first, &c);
    let killed = server.restart();
    let sent = Instant::now();
    let lost = engine_get(&mut driver, peer, Duration::from_secs(15), &c);
    let failed_after = sent.elapsed();
    assert!(
        matches!(lost.response, Err(ExchangeError::Timeout)),
        "GET into the lost association: Timeout expected, got {:?}\n{}",
        lost.response.as_ref().map(|p| p.header.code.to_string()),
        c()
    );
    // The session ends with the request (its event may come just after the request's).
    let mut failures = lost.failures;
    if failures.is_empty() {
        failures = drive(&mut driver, None, Duration::from_secs(2)).failures;
    }
    assert!(
        failures
            .iter()
            .any(|(_, r)| matches!(r, FailureReason::NoResponse)),
        "the session must fail with NoResponse, got {failures:?}\n{}",
        c()
    );
    // ACK_TIMEOUT × ACK_RANDOM_FACTOR × (1 + 2 + 4): the last retransmission's wait included.
    let most = Duration::from_millis(300 * 3 / 2 * 7);
    assert!(
        failed_after <= most + SLACK,
        "NoResponse after {failed_after:?} > {most:?} + {SLACK:?}\n{}",
        c()
    );
    let resumed_from = Instant::now();
    let third = engine_get(&mut driver, peer, Duration::from_secs(10), &c);
    expect_root(&third, &c);
    assert!(
        hellos_after(&relay, resumed_from) > 0,
        "no new handshake for the request after NoResponse\n{}",
        c()
    );
    let resent = Wire::read(&relay)
        .records(true)
        .iter()
        .filter(|(at, r)| *at > killed && *at < resumed_from && r.content_type == APPLICATION_DATA)
        .count();
    format!(
        "Without keepalive (ACK_TIMEOUT 300 ms, MAX_RETRANSMIT 2): the GET sent into the lost association ({resent} transmission(s)) timed out after {:.1} s and the session failed with `{}`; next GET: a new handshake, 2.05",
        failed_after.as_secs_f64(),
        FailureReason::NoResponse
    )
}

/// libcoap's client observing `/time` over DTLS with `-K 1` while our server restarts:
/// recorded.
fn restart_libcoap(t: Tls) -> String {
    let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some();
    let mut server = our_server(&["-k", KEY]);
    let relay = Relay::new(server.dtls_addr());
    let uri = relay.coaps_uri("time");
    let observer = Background::spawn(
        &libcoap(t.client()),
        &[
            "-u", IDENTITY, "-k", KEY, "-s", "6", "-K", "1", "-w", "-B", "15", &uri,
        ],
    );
    // The registration's answer and two notifications.
    let give_up = Instant::now() + Duration::from_secs(10);
    while Wire::read(&relay).count(false, APPLICATION_DATA) < 3 {
        assert!(
            Instant::now() < give_up,
            "no notifications over DTLS\n{}\n{}",
            observer.output(),
            relay.dtls_trace()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = server.restart();
    let r = observer.finish(Duration::from_secs(20));
    let ended = Instant::now();
    let c = ctx(&relay, &r);
    if verbose {
        eprintln!("{c}");
    }
    assert!(r.status.is_some(), "{} did not end\n{c}", t.client());
    let w = Wire::read(&relay);
    let last_heard = w
        .records(false)
        .iter()
        .filter(|(at, _)| *at <= killed)
        .map(|(at, _)| *at)
        .next_back()
        .unwrap_or_else(|| panic!("nothing from our server before the restart\n{c}"));
    let secs = |at: Instant| at.saturating_duration_since(last_heard).as_secs_f64();
    let up: Vec<(Instant, DtlsRecord)> = w
        .records(true)
        .into_iter()
        .filter(|(at, _)| *at > killed)
        .collect();
    let into_lost = up
        .iter()
        .filter(|(_, r)| r.content_type == APPLICATION_DATA)
        .count();
    let close = up
        .iter()
        .find(|(_, r)| r.content_type == ALERT && r.epoch > 0)
        .map(|(at, _)| format!(", close_notify (encrypted) at {:.1} s", secs(*at)))
        .unwrap_or_default();
    let down: Vec<String> = w
        .records(false)
        .iter()
        .filter(|(at, _)| *at > killed)
        .map(|(_, r)| r.name())
        .collect();
    let resumed = w
        .records(false)
        .iter()
        .any(|(at, r)| *at > killed && r.content_type == APPLICATION_DATA);
    let hello = match up
        .iter()
        .find(|(_, r)| r.handshake_type() == Some(CLIENT_HELLO))
    {
        Some((at, _)) => format!(
            "a new ClientHello at {:.1} s ({})",
            secs(*at),
            if down.is_empty() {
                "unanswered before it exited".to_string()
            } else {
                format!("our restarted server answered: {}", down.join(", "))
            }
        ),
        None => "no new handshake".into(),
    };
    format!(
        "{} exit status {} at {:.1} s after the last notification heard (restart at {:.1} s); into the lost association {into_lost} application-data record(s){close}; {hello}; observation resumed: {}; logged {}",
        t.client(),
        exit(&r),
        secs(ended),
        secs(killed),
        if resumed { "yes" } else { "no" },
        libcoap_complaint(&r, " DTLS: ")
    )
}

// ---------------------------------------------------------------------------------------------
// DTLS_11: block-wise (5 kB) and observe over DTLS

/// A 5000-byte body with every byte value, never text.
fn body() -> Vec<u8> {
    (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Waits until the observer's `-o` file holds `want`.
#[track_caller]
fn wait_for_file(path: &str, want: &str, observer: &Background) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(path).unwrap_or_default() != want {
        assert!(
            Instant::now() < give_up,
            "{path} never held {want:?} (it holds {:?})\n{}",
            std::fs::read_to_string(path).unwrap_or_default(),
            observer.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Application-data records one way, and the largest of them.
fn app_records(w: &Wire, to_server: bool) -> (usize, usize) {
    let sizes: Vec<usize> = w
        .records(to_server)
        .iter()
        .filter(|(_, r)| r.content_type == APPLICATION_DATA)
        .map(|(_, r)| r.fragment.len())
        .collect();
    (sizes.len(), sizes.iter().copied().max().unwrap_or(0))
}

/// A client of one side: ours or libcoap's build `t`, with the PSK.
#[derive(Clone, Copy)]
enum Side {
    Ours,
    Libcoap(Tls),
}

impl Side {
    fn run(self, args: &[&str]) -> Run {
        match self {
            Side::Ours => our_psk_client(args),
            Side::Libcoap(t) => libcoap_psk_client(t, args),
        }
    }

    fn spawn(self, args: &[&str]) -> Background {
        let psk = ["-u", IDENTITY, "-k", KEY, "-B", "20"];
        match self {
            Side::Ours => Background::spawn(&ours("coap-client"), &[&psk[..], args].concat()),
            Side::Libcoap(t) => Background::spawn(&libcoap(t.client()), &[&psk[..], args].concat()),
        }
    }
}

fn large_and_observe(side: Side, server: &Server) -> String {
    let scratch = Scratch::new("dtls");
    let (input, output, example) = (
        scratch.file("in.bin"),
        scratch.file("out.bin"),
        scratch.file("example.bin"),
    );
    let data = body();
    std::fs::write(&input, &data).expect("write the body");

    // PUT 5 kB (Block1), then GET it back (Block2), through the relay.
    let relay = Relay::new(server.dtls_addr());
    let r = side.run(&["-m", "put", "-f", &input, &relay.coaps_uri("big")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    let (put_records, put_largest) = app_records(&Wire::read(&relay), true);
    assert!(
        put_records >= 5 && put_largest < data.len(),
        "5000 bytes in 1024-byte blocks take at least 5 records, none holding the body\n{c}"
    );
    relay.clear();
    let r = side.run(&["-o", &output, &relay.coaps_uri("big")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    let got = std::fs::read(&output).unwrap_or_default();
    assert!(
        got == data,
        "the body read back differs ({} bytes, {} expected)\n{c}",
        got.len(),
        data.len()
    );
    let (get_records, get_largest) = app_records(&Wire::read(&relay), false);
    assert!(get_records >= 5 && get_largest < data.len(), "{c}");

    // The server's own large resource (two 1024-byte blocks).
    relay.clear();
    let r = side.run(&["-o", &example, &relay.coaps_uri("example_data")]);
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    assert!(
        std::fs::read(&example).unwrap_or_default() == example_data(),
        "/example_data differs from the 1500 generated bytes\n{c}"
    );

    // Observe over DTLS: each PUT (by another client, straight to the server) is notified,
    // in order; the observer deregisters at the end of -s and exits 0.
    drop(relay);
    let relay = Relay::new(server.dtls_addr());
    let notes = scratch.file("notifications.txt");
    let direct = server.coaps_uri("watched");
    let put = |v: &str| {
        let r = side.run(&["-m", "put", "-t", "0", "-e", v, &direct]);
        assert_eq!(r.code(), Some(0), "{}", r.describe());
    };
    put("observed-state-1");
    let observer = side.spawn(&["-s", "5", "-w", "-o", &notes, &relay.coaps_uri("watched")]);
    let mut want = String::from("observed-state-1\n");
    wait_for_file(&notes, &want, &observer);
    for v in ["observed-state-2", "observed-state-3", "observed-state-4"] {
        put(v);
        want.push_str(v);
        want.push('\n');
        wait_for_file(&notes, &want, &observer);
    }
    let r = observer.finish(Duration::from_secs(20));
    let c = ctx(&relay, &r);
    assert_eq!(r.code(), Some(0), "{c}");
    let printed = std::fs::read_to_string(&notes).unwrap_or_default();
    assert_eq!(printed, want, "notifications out of order or extra\n{c}");
    let w = Wire::read(&relay);
    let secured = check_secured(
        &w,
        &[
            "observed-state-1",
            "observed-state-2",
            "observed-state-3",
            "observed-state-4",
        ],
        &c,
    );
    format!(
        "PUT 5000 bytes -f in {put_records} records (largest {put_largest}), GET -o byte-exact in {get_records} (largest {get_largest}), /example_data (1500 bytes) byte-exact; observe: 4 states printed in order from 3 PUTs by another client, exit 0 after -s; {secured}"
    )
}

fn large_ours(t: Tls) -> String {
    let server = libcoap_server(t, &["-k", KEY, "-d", "10"]);
    large_and_observe(Side::Ours, &server)
}

fn large_libcoap(t: Tls) -> String {
    let server = our_server(&["-k", KEY, "-d", "10"]);
    large_and_observe(Side::Libcoap(t), &server)
}

// ---------------------------------------------------------------------------------------------
// Rows

/// The four rows of a case: ours → each build's server, each build's client → ours.
macro_rules! rows {
    ($id:literal, $ours:literal, $theirs:literal, $f_ours:ident, $f_theirs:ident, $record:expr) => {
        [
            Case::new(
                $id,
                Dir::OursToTls(Tls::OpenSsl),
                $ours,
                || $f_ours(Tls::OpenSsl),
                false,
            ),
            Case::new(
                $id,
                Dir::OursToTls(Tls::GnuTls),
                $ours,
                || $f_ours(Tls::GnuTls),
                false,
            ),
            Case::new(
                $id,
                Dir::TlsToOurs(Tls::OpenSsl),
                $theirs,
                || $f_theirs(Tls::OpenSsl),
                $record,
            ),
            Case::new(
                $id,
                Dir::TlsToOurs(Tls::GnuTls),
                $theirs,
                || $f_theirs(Tls::GnuTls),
                $record,
            ),
        ]
    };
}

pub fn cases() -> Vec<Case> {
    [
        rows!(
            "DTLS_01",
            "PSK: GET / over coaps://, exit 0; handshake, CCM_8 suite and encrypted CoAP on the wire",
            "PSK: GET / over coaps://, exit 0; handshake, CCM_8 suite and encrypted CoAP on the wire",
            psk_ours,
            psk_libcoap,
            false
        ),
        rows!(
            "DTLS_02",
            "wrong PSK: exit 3 with one line naming the pre-shared key; no application data",
            "wrong PSK: our server refuses with a fatal alert and logs it, no answer; the client's exit status recorded",
            wrong_psk_ours,
            wrong_psk_libcoap,
            false
        ),
        rows!(
            "DTLS_03",
            "lossy: the relay loses the first ClientHello and ServerHello; retransmitted, exit 0",
            "lossy: the relay loses the first ClientHello and ServerHello; retransmitted, exit 0",
            lossy_ours,
            lossy_libcoap,
            false
        ),
        rows!(
            "DTLS_08",
            "certificates both ways: the server (-C) asks for and checks the client's; ECDHE-ECDSA, both Certificates on the wire, exit 0",
            "certificates both ways: our server (-C) asks for and checks the client's; ECDHE-ECDSA, both Certificates on the wire, exit 0",
            certificates_ours,
            certificates_libcoap,
            false
        ),
        rows!(
            "DTLS_09",
            "unknown CA or wrong name: a server certificate from an untrusted CA, and one reached as 127.0.0.2: refused, exit 3 with one line naming the cause, alert sent",
            "unknown CA or wrong name: a server certificate from an untrusted CA, and one reached as 127.0.0.2: what libcoap's client does, recorded",
            refused_ours,
            refused_libcoap,
            true
        ),
        rows!(
            "DTLS_10",
            "server restart: engine in-process with keepalive, failure within interval+timeout of the last packet heard, then the next GET re-handshakes; without keepalive, NoResponse after the retransmissions, then the same",
            "server restart: libcoap's client observing /time with -K 1 while our server restarts (SIGKILL, same port), recorded",
            restart_engine,
            restart_libcoap,
            true
        ),
        rows!(
            "DTLS_11",
            "block-wise and observe: 5 kB PUT (-f) and GET (-o) byte-exact, /example_data, notifications of 3 PUTs in order",
            "block-wise and observe: 5 kB PUT (-f) and GET (-o) byte-exact, /example_data, notifications of 3 PUTs in order",
            large_ours,
            large_libcoap,
            false
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub const OBSERVATIONS: &str = "
## DTLS: differences observed (DTLS_*, LIVE_06)

- **libcoap's clients exit 0 after a failed handshake**, both builds: a wrong PSK (openssl logs
  `SSL3 alert read:fatal:decrypt error`, gnutls `Alert '51': Decrypt error`), a server
  certificate from an unknown CA (`unable to get local issuer certificate` / `The peer
  certificate's CA is unknown`, after sending alert 48 unknown_ca), then `cannot send CoAP
  pdu`. Our client exits 3 with one line naming the cause (`the peer did not accept our
  pre-shared key`, `unknown CA`, `name mismatch`).
- **Wrong PSK, libcoap's servers send no alert**: the client's Finished does not decrypt and is
  dropped, so a client learns nothing until its own timeout (ours: `-B`, else the 30 s
  handshake timeout). Our server answers at once with a fatal decrypt_error (51) alert in the
  clear and logs `pre-shared key does not match`.
- **libcoap's clients do not check the server's name**: reaching a server whose certificate
  names localhost, 127.0.0.1 and ::1 as 127.0.0.2, both builds complete the handshake and
  print the answer (`-C ca.pem`). Ours refuses it (`name mismatch`, alert 42 bad_certificate).
- **Cipher suites**: PSK is TLS_PSK_WITH_AES_128_CCM_8 (RFC 7252 §9.1.3.1) in every row; with
  certificates libcoap's servers choose TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 with our
  client and our server TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 with libcoap's clients (the
  engine has no TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, see below). Both libcoap servers and ours
  answer a first ClientHello with a HelloVerifyRequest cookie.
- **DTLS_03, libcoap's GnuTLS server**: when the ServerHello is lost, the rest of its flight
  arrives twice (first copy, then its retransmission), and our client resends its final
  flight once on the duplicate (RFC 6347 §4.2.4). coap-server-gnutls has already finished
  its handshake by then; after the repeated flight it drops the next application data
  (`gnutls_record_recv returned -28`, GNUTLS_E_AGAIN, with `-v 7`), so our GET is answered
  only at its third transmission, 10 s or more in. The OpenSSL build is not affected, nor is our
  server with either client.
- **DTLS_10, libcoap's clients** (`-s 6 -K 1`) against our restarted server: the keepalive
  ping goes into the lost association unanswered; at interval + timeout after the last
  notification they send close_notify, start a new handshake and exit 0 at once without
  completing it (`cannot send CoAP pdu`): the observation ends silently. Our engine reports
  the keepalive failure within the bound and its next request handshakes again; without
  keepalive, a request sent into the lost association times out after its retransmissions,
  the session fails with NoResponse, and the next request handshakes again.
- **By hand (not a case): a client restarting on the same address**. libcoap's servers (both
  builds) ignore a new ClientHello from an address that still has an association, so the
  restarted client's handshake times out (31–33 s): `coap-client-openssl -p 40000 -u id -k
  secret -s 10 coaps://127.0.0.1:20001/time` killed with SIGKILL, then the same client again
  from `-p 40000`. RFC 6347 §4.2.8 asks a server to start a new handshake there; ours does,
  and replaces the old session once it completes (`core/tests/dtls.rs`,
  `a_client_that_restarts_gets_a_new_association_which_replaces_the_old_session`).
- **LIVE_06, libcoap's clients over DTLS** end, unlike over plain UDP (LIVE_02): after the
  link goes down the keepalive ping fails with ENETUNREACH, and at interval + timeout after
  the last notification they log `session disconnected (reason 1)` and `cannot send CoAP
  pdu`, try a new handshake (whose send fails too) and exit 0, reporting no keepalive failure.
  Our client reports the keepalive failure within the bound and exits 3.
";

/// Rows of the report's \"Not covered\" table.
pub const NOT_COVERED: &str = "| DTLS_04–07 | both | Raw public keys (RFC 7250): libcoap's OpenSSL build has none, and neither has the engine yet; the certificate rows (DTLS_08) stand in, as the test descriptions allow. |
| DTLS_08 | both | TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, the suite RFC 7252 makes mandatory for raw public keys (§9.1.3.2) and for certificates (§9.1.3.3), is not supported by the engine yet (see `core/src/dtls/mod.rs`); the rows negotiate ECDHE-ECDSA with AES-GCM, which both libcoap builds offer. |
| DTLS_09 | libcoap → ours, server side | Our server refusing a client certificate from an unknown CA: the test PKI (`core/tests/certs`) has no client certificate from `other-ca` (`other-server.pem` is for servers only and is refused for its key usage first). `core/tests/dtls.rs` (`required_client_certificates_are_verified`) covers the unknown issuer. |
| DTLS_03 | both | The lossy rows lose handshake records; a CoAP message lost inside an established association (CORE_15 over DTLS) is left to `core/tests/dtls.rs` (`a_tampered_record_is_dropped_and_the_retransmission_gets_through`). |
| LIVE_06 | server side | LIVE_04 over DTLS (a DTLS server with keepalive dropping a vanished observer) is not a case here: libcoap's servers have no keepalive option, and ours is covered in virtual time by `core/tests/dtls.rs` (`a_dtls_server_with_keepalive_drops_a_vanished_observer_within_the_bound`). |
";
