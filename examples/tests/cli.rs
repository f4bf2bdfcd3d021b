//! End to end: our `coap-client` against our `coap-server`, and each against libcoap's
//! (`coap-server-notls`, `coap-client-notls`, and for `coaps://` and `coaps+tcp://` the
//! `-openssl` and `-gnutls` builds, from the Debian package `libcoap3-bin`). Servers run on
//! free loopback ports (UDP and TCP on one, DTLS and TLS on the next) and are killed by a
//! guard.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{start_logging, Server};

const CLIENT: &str = env!("CARGO_BIN_EXE_coap-client");
const SERVER: &str = env!("CARGO_BIN_EXE_coap-server");

fn libcoap(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: install the Debian package libcoap3-bin")
        })
}

/// Starts `program` with `args` plus `-A 127.0.0.1 -p PORT` on a free port and waits until
/// it answers a CoAP ping (retrying on another port if the one picked was taken meanwhile).
fn start(program: &str, args: &[&str]) -> Server {
    start_logging(program, args, None)
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn client(args: &[&str]) -> Output {
    run(CLIENT, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn uri(server: &Server, path: &str) -> String {
    format!("coap://127.0.0.1:{}/{path}", server.port)
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn get_root() {
    let s = start(SERVER, &[]);
    let out = client(&[&uri(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
}

#[test]
fn put_then_get_example_data_and_non() {
    let s = start(SERVER, &[]);
    let out = client(&[
        "-m",
        "put",
        "-e",
        "hello e2e",
        "-t",
        "text",
        &uri(&s, "example_data"),
    ]);
    assert_status(&out, 0);
    let out = client(&[&uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "hello e2e");
    let out = client(&["-N", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "hello e2e");
}

#[test]
fn async_answers_with_a_separate_response() {
    let s = start(SERVER, &[]);
    let out = client(&["-B", "10", &uri(&s, "async?1")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "done");
}

#[test]
fn not_found_and_method_not_allowed_exit_1_with_the_code() {
    let s = start(SERVER, &[]);
    let out = client(&[&uri(&s, "nothing/here")]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.04 Not Found"));
    let out = client(&["-m", "delete", &uri(&s, "time")]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.05"));
}

#[test]
fn dynamic_resources_are_created_listed_and_deleted() {
    let s = start(SERVER, &["-d", "1"]);
    assert_status(&client(&["-m", "put", "-e", "x", &uri(&s, "a%20b")]), 0);
    let out = client(&[&uri(&s, ".well-known/core")]);
    assert!(text(&out.stdout).contains("</a b>"));
    let full = client(&["-m", "put", "-e", "y", &uri(&s, "second")]);
    assert_status(&full, 1);
    assert!(text(&full.stderr).contains("4.06"));
    assert_status(&client(&["-m", "delete", &uri(&s, "a%20b")]), 0);
    assert_status(&client(&[&uri(&s, "a%20b")]), 1);
}

#[test]
fn post_creates_a_resource_at_its_location() {
    let s = start(SERVER, &["-d", "2"]);
    let out = client(&["-v", "6", "-m", "post", "-e", "made", &uri(&s, "new?x=1")]);
    assert_status(&out, 0);
    assert!(
        text(&out.stderr).contains("2.01 Created; Location: /new?x=1;"),
        "{}",
        text(&out.stderr)
    );
    let out = client(&[&uri(&s, "new?x=1")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "made");
    // The query is part of the resource's URI (RFC 7252 §5.10.1).
    assert_status(&client(&[&uri(&s, "new")]), 1);
    let out = client(&["-v", "6", "-m", "post", "-e", "again", &uri(&s, "new?x=1")]);
    assert!(text(&out.stderr).contains("2.04 Changed"));
    assert_eq!(text(&client(&[&uri(&s, "new?x=1")]).stdout), "again");
    let out = client(&["-m", "post", "-e", "x", &uri(&s, "example_data")]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.05"));
}

/// The ETag our client logs at -v 6 for a GET of `path`.
fn etag_of(s: &Server, path: &str) -> String {
    let out = client(&["-v", "6", &uri(s, path)]);
    assert_status(&out, 0);
    let err = text(&out.stderr);
    err.split("ETag: ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap_or_else(|| panic!("no ETag logged: {err}"))
        .trim()
        .to_string()
}

#[test]
fn etags_validate_and_make_requests_conditional() {
    let s = start(SERVER, &["-d", "1"]);
    let data = uri(&s, "example_data");
    let etag = etag_of(&s, "example_data");
    let etag_opt = format!("4,{etag}");
    let out = client(&["-v", "6", "-O", "4,0x00", "-O", &etag_opt, &data]);
    assert_status(&out, 0);
    assert!(text(&out.stderr).contains("2.03 Valid"));
    assert!(out.stdout.is_empty(), "2.03 has no payload");
    // If-Match with the current ETag: done; with the old one afterwards: 4.12.
    let if_match = format!("1,{etag}");
    assert_status(
        &client(&["-m", "put", "-e", "v2", "-O", &if_match, &data]),
        0,
    );
    assert_ne!(etag_of(&s, "example_data"), etag);
    let out = client(&["-m", "put", "-e", "v3", "-O", &if_match, &data]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.12 Precondition Failed"));
    assert_eq!(text(&client(&[&data]).stdout), "v2");
    // An old ETag no longer validates.
    let out = client(&["-v", "6", "-O", &etag_opt, &data]);
    assert!(text(&out.stderr).contains("2.05 Content"));
    // Empty If-Match: the resource must exist. If-None-Match: it must not.
    assert_status(&client(&["-m", "put", "-e", "v4", "-O", "1,", &data]), 0);
    assert_status(&client(&["-m", "put", "-e", "v5", "-O", "5,", &data]), 1);
    assert_status(
        &client(&["-m", "put", "-e", "n", "-O", "1,", &uri(&s, "n")]),
        1,
    );
    assert_status(
        &client(&["-m", "put", "-e", "n", "-O", "5,", &uri(&s, "n")]),
        0,
    );
    assert_status(
        &client(&["-m", "put", "-e", "m", "-O", "5,", &uri(&s, "n")]),
        1,
    );
    assert_eq!(text(&client(&[&uri(&s, "n")]).stdout), "n");
}

#[test]
fn accept_selects_the_content_format_or_4_06() {
    let s = start(SERVER, &[]);
    assert_status(&client(&["-A", "text", &uri(&s, "example_data")]), 0);
    let out = client(&["-A", "json", &uri(&s, "example_data")]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.06 Not Acceptable"));
    assert_status(&client(&["-A", "link", &uri(&s, ".well-known/core")]), 0);
    assert_status(&client(&["-A", "text", &uri(&s, ".well-known/core")]), 1);
}

#[test]
fn well_known_core_is_filtered_by_query() {
    let s = start(SERVER, &[]);
    let get = |q: &str| text(&client(&[&uri(&s, &format!(".well-known/core?{q}"))]).stdout);
    assert_eq!(
        get("rt=ticks"),
        "</time>;if=\"clock\";rt=\"ticks\";title=\"Internal Clock\";ct=0;obs"
    );
    assert!(get("href=/ex*").starts_with("</example_data>"));
    assert!(!get("href=/ex*").contains("</time>"));
    assert_eq!(get("sz=*"), "");
    assert_eq!(get("rt=*"), get("rt=ticks"));
}

#[test]
fn bad_flags_and_uris_exit_2_with_one_line() {
    for args in [
        &["http://127.0.0.1/"][..],
        &["coap://[::1/x"],
        &["coap://host:99999/"],
        &["-x", "coap://127.0.0.1/"],
        &["-m", "brew", "coap://127.0.0.1/"],
        &["-s", "0", "coap://127.0.0.1/"],
        &["-s", "soon", "coap://127.0.0.1/"],
        &["-s", "5", "-m", "put", "coap://127.0.0.1/"],
        &["-b", "48", "coap://127.0.0.1/"],
        &["-T", "123456789", "coap://127.0.0.1/"],
        &["-l", "150%", "coap://127.0.0.1/"],
        &[],
    ] {
        let out = client(args);
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
    assert_status(&run(SERVER, &["-p", "notaport"]), 2);
    assert_status(&run(SERVER, &["-q"]), 2);
}

#[test]
fn command_line_mistakes_get_one_exact_line() {
    let u = "coap://127.0.0.1/";
    for (args, line) in [
        (&["-q", u][..], "unknown option -q"),
        (&["--help"], "unknown option --help"),
        (&[u, "-m"], "option -m needs an argument"),
        (
            &["-B", "soon", u],
            "-B needs a number of seconds, not \"soon\"",
        ),
        (&["-s0", u], "-s needs a number of seconds greater than 0"),
        (&[u, u], "unexpected argument \"coap://127.0.0.1/\""),
        (&["--", u, "-N"], "unexpected argument \"-N\""),
    ] {
        let out = run_briefly(CLIENT, args);
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr), format!("coap-client: {line} (try -h)\n"));
    }
    for (args, line) in [
        (&["-q"][..], "unknown option -q"),
        (&["-eNp"], "option -p needs an argument"),
        (
            &["-p", "notaport"],
            "-p needs a port number, not \"notaport\"",
        ),
        (&["-W0"], "-W needs 1 to 1024 threads, not \"0\""),
        (&["-p", "0", "stray"], "unexpected argument \"stray\""),
    ] {
        let out = run_briefly(SERVER, args);
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr), format!("coap-server: {line} (try -h)\n"));
    }
}

#[test]
fn arguments_that_are_not_utf8_are_a_usage_error() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"coap://127.0.0.1/\xff");
    for (program, args) in [
        (CLIENT, &[OsStr::new("-e"), bad][..]),
        (CLIENT, &[bad]),
        (SERVER, &[OsStr::new("-v"), bad]),
    ] {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert_status(&out, 2);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("is not UTF-8"), "{err}");
    }
}

#[test]
fn joined_values_work_end_to_end() {
    let s = start(SERVER, &["-d1"]);
    let res = uri(&s, "joined");
    assert_status(&client(&["-mput", "-t0", "-ehello", "-B5", &res]), 0);
    let out = client(&["-B5", "-A0", &res]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "hello");
}

/// The body libcoap's example server generates for `/example_data`, which ours serves too
/// until the first PUT: a letter every ten bytes, the digits 1-9 between.
fn libcoap_example_data() -> Vec<u8> {
    (0..1500u32)
        .map(|i| match i % 10 {
            0 => b'a' + (i / 10 % 26) as u8,
            d => b'0' + d as u8,
        })
        .collect()
}

/// A file of bytes of every value in the temporary directory, removed on drop.
struct Scratch {
    path: PathBuf,
    data: Vec<u8>,
}

impl Scratch {
    fn new(name: &str, len: usize) -> Scratch {
        let path = std::env::temp_dir().join(format!("coap-cli-{}-{name}", std::process::id()));
        let data: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        Scratch { path, data }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn example_data_is_fetched_block_wise_byte_exact() {
    let s = start(SERVER, &[]);
    let want = libcoap_example_data();
    let out = client(&["-v", "6", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, want, "{}", text(&out.stderr));
    // -b 64: the same body in 64-byte blocks, asked for from the first request on.
    let out = client(&["-b", "64", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, want);
    // -b 2,64: block 2 only, as received.
    let out = client(&["-v", "6", "-b", "2,64", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, &want[128..192]);
    assert!(
        text(&out.stderr).contains("Block2: 2/M/64"),
        "{}",
        text(&out.stderr)
    );
    let out = client(&["-b", "5,256", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, &want[1280..]);
}

#[test]
fn a_10_kib_put_is_stored_and_read_back_byte_exact() {
    let s = start(SERVER, &["-d", "1"]);
    let scratch = Scratch::new("put.bin", 10_000);
    let (file, data) = (scratch.path(), &scratch.data);
    let out = client(&["-m", "put", "-f", file, &uri(&s, "example_data")]);
    assert_status(&out, 0);
    let out = client(&[&uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == *data, "the body read back differs");
    // In 64-byte blocks both ways, to a resource POST creates.
    let out = client(&["-b", "64", "-m", "post", "-f", file, &uri(&s, "big")]);
    assert_status(&out, 0);
    let out = client(&["-b", "64", &uri(&s, "big")]);
    assert_status(&out, 0);
    assert!(out.stdout == *data, "the body read back differs");
}

#[test]
fn a_body_over_64_kib_gets_4_13_with_the_limit() {
    let s = start(SERVER, &[]);
    let file = Scratch::new("huge.bin", 70_000);
    let out = client(&[
        "-v",
        "6",
        "-m",
        "put",
        "-f",
        file.path(),
        &uri(&s, "example_data"),
    ]);
    assert_status(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("4.13 Request Entity Too Large; Size1: 65536"),
        "{err}"
    );
    // Nothing was stored.
    assert_eq!(client(&[&uri(&s, "example_data")]).stdout.len(), 1500);
}

#[test]
fn echoed_posts_come_back_whole() {
    let s = start(SERVER, &["-d", "1", "-e"]);
    let file = Scratch::new("echo.bin", 3000);
    let out = client(&["-m", "post", "-f", file.path(), &uri(&s, "echoed")]);
    assert_status(&out, 0);
    assert!(out.stdout == file.data, "the echoed body differs");
    let out = client(&[&uri(&s, "echoed")]);
    assert!(out.stdout == file.data, "the stored body differs");
}

#[test]
fn bad_block_sizes_exit_2_with_one_line() {
    for b in [
        "8",
        "48",
        "2048",
        "0",
        "x",
        "1,",
        ",64",
        "-1,64",
        "1048576,64",
    ] {
        let out = client(&["-b", b, "coap://127.0.0.1/"]);
        assert_status(&out, 2);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "-b {b}: {err}");
        assert!(err.contains("-b"), "-b {b}: {err}");
    }
}

#[test]
fn failing_sends_end_in_keepalive_failure() {
    let s = start(SERVER, &[]);
    // Every send fails as unreachable; keepalive (1 s + 1 s) declares the failure long
    // before -B would give up.
    let out = client(&["-Z", "100%", "-K", "1", "-B", "20", &uri(&s, "")]);
    assert_status(&out, 3);
    assert!(
        text(&out.stderr).contains("keepalive failure"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_dropped_first_datagram_is_retransmitted() {
    let s = start(SERVER, &["-l", "1"]);
    let out = client(&["-l", "1", "-B", "20", &uri(&s, "")]);
    assert_status(&out, 0);
}

#[test]
fn our_client_against_libcoap_server() {
    let s = start(libcoap("coap-server-notls").to_str().unwrap(), &[]);
    let out = client(&[&uri(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("libcoap"));
    let out = client(&[
        "-m",
        "put",
        "-e",
        "from coap-engine",
        &uri(&s, "example_data"),
    ]);
    assert_status(&out, 0);
    let out = client(&["-N", &uri(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "from coap-engine");
    let out = client(&["-B", "10", &uri(&s, "async?1")]);
    assert_status(&out, 0);
    assert_status(&client(&[&uri(&s, "missing")]), 1);
}

#[test]
fn libcoap_client_against_our_server() {
    let coap_client = libcoap("coap-client-notls");
    let coap_client = coap_client.to_str().unwrap();
    let s = start(SERVER, &[]);
    let out = run(coap_client, &["-B", "10", &uri(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    let out = run(
        coap_client,
        &["-m", "put", "-e", "via libcoap", &uri(&s, "example_data")],
    );
    assert_status(&out, 0);
    let out = run(coap_client, &["-N", "-B", "10", &uri(&s, "example_data")]);
    assert!(text(&out.stdout).contains("via libcoap"));
    let out = run(coap_client, &["-B", "10", &uri(&s, "async?1")]);
    assert!(text(&out.stdout).contains("done"));
    let out = run(coap_client, &["-B", "10", &uri(&s, ".well-known/core")]);
    assert!(text(&out.stdout).contains("</example_data>"));
    let out = run(coap_client, &["-B", "10", &uri(&s, "missing")]);
    assert!(text(&out.stderr).contains("4.04"));
}

/// Starts our client in the background, its output captured.
fn spawn_client(args: &[&str]) -> Child {
    Command::new(CLIENT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {CLIENT}: {e}"))
}

/// Waits for a background client to exit (killing it after `limit`, which fails the test).
fn finish(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "client still running after {limit:?}\nstdout: {}\nstderr: {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(ok.success(), "kill {sig} failed");
}

#[test]
fn observing_time_prints_every_notification_then_deregisters() {
    let s = start(SERVER, &[]);
    let started = Instant::now();
    let out = client(&["-s", "3", "-w", "-v", "6", &uri(&s, "time?ticks")]);
    assert_status(&out, 0);
    let stdout = text(&out.stdout);
    let ticks: Vec<u64> = stdout
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("{l:?} in {stdout}")))
        .collect();
    // The registration's answer, then one notification a second for 3 s.
    assert!(ticks.len() >= 3, "{stdout}");
    assert!(ticks.windows(2).all(|w| w[0] <= w[1]), "{stdout}");
    assert!(ticks[ticks.len() - 1] - ticks[0] >= 2, "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("deregistered after"), "{stderr}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(25),
        "-s 3 took {elapsed:?}"
    );
}

#[test]
fn observing_a_resource_that_does_not_notify_prints_the_response() {
    let s = start(SERVER, &[]);
    let out = client(&["-s", "30", &uri(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    let out = client(&["-s", "30", &uri(&s, "missing")]);
    assert_status(&out, 1);
    assert!(text(&out.stderr).contains("4.04 Not Found"));
}

#[test]
fn updates_notify_and_a_delete_or_format_change_ends_the_observation() {
    let s = start(SERVER, &["-d", "2"]);
    let res = uri(&s, "watched");
    assert_status(&client(&["-m", "put", "-t", "text", "-e", "one", &res]), 0);
    let observer = spawn_client(&["-s", "30", "-w", &res]);
    std::thread::sleep(Duration::from_millis(500));
    assert_status(&client(&["-m", "put", "-t", "text", "-e", "two", &res]), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_status(&client(&["-m", "delete", &res]), 0);
    let (out, took) = finish(observer, Duration::from_secs(10));
    // RFC 7641 §4.2: the DELETE's 4.04 notification ends the observation at once.
    assert_status(&out, 1);
    assert_eq!(text(&out.stdout), "one\ntwo\n\n");
    assert!(text(&out.stderr).contains("4.04 Not Found"));
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A new Content-Format cannot be notified to an observer of the old one: 4.06 (§4.2).
    let data = uri(&s, "example_data");
    let observer = spawn_client(&["-s", "30", "-w", &data]);
    std::thread::sleep(Duration::from_millis(500));
    assert_status(&client(&["-m", "put", "-t", "json", "-e", "{}", &data]), 0);
    let (out, _) = finish(observer, Duration::from_secs(10));
    assert_status(&out, 1);
    // The initial representation (1500 bytes, fetched block-wise), then the end.
    let initial = String::from_utf8(libcoap_example_data()).unwrap();
    assert_eq!(text(&out.stdout), format!("{initial}\n\n"));
    assert!(text(&out.stderr).contains("4.06 Not Acceptable"));
}

#[test]
fn a_server_gone_silent_mid_observation_is_a_keepalive_failure() {
    let s = start(SERVER, &[]);
    let observer = spawn_client(&["-s", "60", "-K", "1", "-w", &uri(&s, "time")]);
    std::thread::sleep(Duration::from_millis(2500));
    signal(&s.child, "-STOP");
    let frozen = Instant::now();
    let (out, _) = finish(observer, Duration::from_secs(15));
    let after = frozen.elapsed();
    signal(&s.child, "-CONT");
    assert_status(&out, 3);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("keepalive failure"), "{stderr}");
    // Notifications came until the freeze; the failure within interval + timeout (2 s) of
    // the last one heard, plus timer slack.
    assert!(
        text(&out.stdout).lines().count() >= 2,
        "{}",
        text(&out.stdout)
    );
    assert!(after <= Duration::from_millis(2750), "{after:?}");
}

// ---- coaps:// (DTLS 1.2) ----

/// The PSK identity and key of the DTLS tests.
const IDENTITY: &str = "cli-test";
const KEY: &str = "cli-test-secret";

/// A file of the test PKI in `core/tests/certs` (CA `ca.pem`; `server.pem` for localhost,
/// 127.0.0.1 and ::1; `client.pem`; `other-server.pem` from the untrusted `other-ca.pem`).
fn pki(name: &str) -> String {
    format!("{}/../core/tests/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The server's `coaps://` URI: libcoap's servers and ours put DTLS on port + 1.
fn coaps(server: &Server, path: &str) -> String {
    format!("coaps://127.0.0.1:{}/{path}", server.port + 1)
}

/// Our client with the test PSK.
fn psk_client(args: &[&str]) -> Output {
    client(&[&["-u", IDENTITY, "-k", KEY][..], args].concat())
}

/// Exactly one line on stderr, containing each of `words`.
#[track_caller]
fn assert_one_line(out: &Output, words: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
}

/// Runs `program`, which must exit within 10 s.
fn run_briefly(program: &str, args: &[&str]) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    finish(child, Duration::from_secs(10)).0
}

#[test]
fn coaps_psk_between_our_client_and_server_with_the_usual_flags() {
    let s = start(SERVER, &["-k", KEY, "-d", "2"]);
    let out = psk_client(&[&coaps(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // -N, -T, -A, -v 6: the initial example_data, block-wise in 64-byte blocks.
    let out = psk_client(&[
        "-N",
        "-T",
        "0xbeef",
        "-A",
        "text",
        "-b",
        "64",
        "-v",
        "6",
        &coaps(&s, "example_data"),
    ]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, libcoap_example_data());
    assert!(text(&out.stderr).contains("2.05 Content"));
    // A body larger than a block goes block-wise over DTLS and is what a plain GET reads:
    // both endpoints serve the same resources.
    let file = Scratch::new("dtls-put.bin", 3000);
    let put = ["-m", "put", "-b", "64", "-f", file.path()];
    assert_status(&psk_client(&[&put[..], &[&coaps(&s, "big")]].concat()), 0);
    let out = client(&[&uri(&s, "big")]);
    assert_status(&out, 0);
    assert!(out.stdout == file.data, "the body read back differs");
    // -o, and a dropped first datagram (the ClientHello: the handshake retransmits it).
    let saved = Scratch::new("dtls-out.bin", 0);
    let out = psk_client(&["-l", "1", "-B", "10", "-o", saved.path(), &coaps(&s, "big")]);
    assert_status(&out, 0);
    assert!(std::fs::read(saved.path()).unwrap() == file.data);
    // -K opens the session first: the handshake, then the request.
    let out = psk_client(&["-K", "1", "-m", "delete", &coaps(&s, "big")]);
    assert_status(&out, 0);
    assert_status(&client(&[&uri(&s, "big")]), 1);
}

/// Waits until the file at `path` holds `want` (an observer's `-o` output so far).
#[track_caller]
fn wait_for_file(path: &str, want: &str) {
    let start = Instant::now();
    while std::fs::read_to_string(path).unwrap_or_default() != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} never held {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn coap_and_coaps_observers_get_the_same_notifications() {
    let s = start(SERVER, &["-k", KEY, "-d", "1"]);
    let (plain, secure) = (uri(&s, "watched"), coaps(&s, "watched"));
    assert_status(
        &client(&["-m", "put", "-t", "text", "-e", "one", &plain]),
        0,
    );
    let files = [
        Scratch::new("observe-coaps.txt", 0),
        Scratch::new("observe-coap.txt", 0),
    ];
    let psk = ["-u", IDENTITY, "-k", KEY];
    let observe = ["-s", "30", "-w", "-o"];
    let observers = [
        spawn_client(&[&psk[..], &observe, &[files[0].path(), &secure]].concat()),
        spawn_client(&[&observe[..], &[files[1].path(), &plain]].concat()),
    ];
    for f in &files {
        wait_for_file(f.path(), "one\n");
    }
    let put = ["-m", "put", "-t", "text", "-e", "two", &secure];
    assert_status(&psk_client(&put), 0);
    for f in &files {
        wait_for_file(f.path(), "one\ntwo\n");
    }
    assert_status(&client(&["-m", "delete", &plain]), 0);
    for (observer, f) in observers.into_iter().zip(&files) {
        let (out, _) = finish(observer, Duration::from_secs(10));
        // The DELETE's 4.04 (no payload) ends both observations.
        assert_status(&out, 1);
        assert!(text(&out.stderr).contains("4.04 Not Found"));
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "one\ntwo\n\n");
    }
}

#[test]
fn a_wrong_psk_fails_with_one_line_and_the_server_logs_it() {
    let log_path = std::env::temp_dir().join(format!("coap-cli-{}-psk.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let s = start_logging(SERVER, &["-k", KEY, "-v", "4"], Some(&log));
    let started = Instant::now();
    let out = client(&[
        "-u",
        IDENTITY,
        "-k",
        "not-the-key",
        "-B",
        "60",
        &coaps(&s, ""),
    ]);
    assert_status(&out, 3);
    assert_one_line(&out, &["DTLS", "pre-shared key"]);
    // The server's alert ended it, not -B (a margin no loaded machine eats).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The server logs once it has sent its alert, so possibly after the client is gone.
    let waited = Instant::now();
    let logged = loop {
        let logged = std::fs::read_to_string(&log_path).unwrap();
        if logged.contains("pre-shared key does not match")
            || waited.elapsed() > Duration::from_secs(20)
        {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&log_path);
    assert!(
        logged.contains("WARN") && logged.contains("pre-shared key does not match"),
        "{logged}"
    );
}

#[test]
fn coaps_certificates_are_verified_by_ca_and_name() {
    let s = start(
        SERVER,
        &["-c", &pki("server.pem"), "-j", &pki("server.key")],
    );
    let out = client(&["-C", &pki("ca.pem"), &coaps(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    // The name checked is the Uri-Host when there is one (a coaps://name/ URI sends it).
    let out = client(&["-R", &pki("ca.pem"), "-O", "3,localhost", &coaps(&s, "")]);
    assert_status(&out, 0);
    let out = client(&["-C", &pki("ca.pem"), "-O", "3,example.org", &coaps(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["name mismatch", "example.org"]);
    let out = client(&["-R", &pki("other-ca.pem"), &coaps(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["unknown CA"]);
    // A certificate-only server has no key for a PSK client.
    let out = psk_client(&["-B", "2", &coaps(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["DTLS"]);
}

#[test]
fn an_untrusted_server_is_refused_unless_n_which_warns() {
    let s = start(
        SERVER,
        &[
            "-c",
            &pki("other-server.pem"),
            "-j",
            &pki("other-server.key"),
        ],
    );
    let out = client(&["-C", &pki("ca.pem"), &coaps(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["unknown CA"]);
    let out = client(&["-n", &coaps(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    assert_one_line(&out, &["WARNING", "-n", "NOT verified"]);
    // Its own CA trusts it, without a warning.
    let out = client(&["-R", &pki("other-ca.pem"), &coaps(&s, "")]);
    assert_status(&out, 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn c_or_r_on_the_server_requires_client_certificates() {
    let server_cert = ["-c", &pki("server.pem"), "-j", &pki("server.key")];
    let ca = pki("ca.pem");
    let s = start(SERVER, &[&server_cert[..], &["-R", &ca]].concat());
    let mine = [
        "-c",
        &pki("client.pem"),
        "-j",
        &pki("client.key"),
        "-C",
        &ca,
    ];
    let out = client(&[&mine[..], &[&coaps(&s, "")]].concat());
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    // Without -c: refused (the server does not answer; the client says what it suspects).
    let out = client(&["-C", &ca, "-B", "2", &coaps(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["DTLS", "certificate"]);
    // -n: no client certificate asked for.
    let s = start(SERVER, &[&server_cert[..], &["-R", &ca, "-n"]].concat());
    assert_status(&client(&["-C", &ca, &coaps(&s, "")]), 0);
}

#[test]
fn a_silent_coaps_server_is_a_handshake_timeout() {
    // A bound socket that never answers (nothing is listening for DTLS there).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let out = psk_client(&["-B", "1", &format!("coaps://127.0.0.1:{port}/")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["handshake timed out"]);
    // -B bounded the wait, not the layer's own 30 s handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn dtls_flags_misused_exit_2_with_one_line() {
    let ca = pki("ca.pem");
    for args in [
        &["-k", KEY, "coaps://127.0.0.1/"][..],
        &["-u", IDENTITY, "coaps://127.0.0.1/"],
        &["coaps://127.0.0.1/"],
        &["-c", &pki("client.pem"), "coaps://127.0.0.1/"],
        &["-j", &pki("client.key"), "-C", &ca, "coaps://127.0.0.1/"],
        &["-u", IDENTITY, "-k", KEY, "coap://127.0.0.1/"],
        &["-C", &ca, "coap://127.0.0.1/"],
        &["-n", "coap://127.0.0.1/"],
        &["-h", "hints.txt", "coaps://127.0.0.1/"],
        // Credential files that cannot be used.
        &["-C", "/nonexistent/ca.pem", "coaps://127.0.0.1/"],
        &["-C", &pki("ca.key"), "coaps://127.0.0.1/"],
        &[
            "-c",
            &pki("client.pem"),
            "-j",
            &ca,
            "-n",
            "coaps://127.0.0.1/",
        ],
    ] {
        let out = client(args);
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
    for args in [
        &["-h", "CoAP"][..],
        &["-i", "ids.txt"],
        &["-R", &ca],
        &["-k", KEY, "-j", &pki("server.key")],
        &["-n"],
    ] {
        let out = run_briefly(SERVER, &[args, &["-p", "0"]].concat());
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
    // -h alone is still the help.
    for program in [CLIENT, SERVER] {
        let out = run_briefly(program, &["-h"]);
        assert_status(&out, 0);
        assert!(text(&out.stdout).contains("-k key"));
    }
}

#[test]
fn a_server_with_unusable_credential_files_exits_1_with_one_line() {
    for args in [
        &["-c", "/nonexistent/server.pem"][..],
        &["-c", &pki("server.pem"), "-j", &pki("ca.pem")],
        &["-c", &pki("ca.key")],
        &[
            "-c",
            &pki("server.pem"),
            "-j",
            &pki("server.key"),
            "-C",
            "/nonexistent",
        ],
        &["-k", KEY, "-i", "/nonexistent/ids.txt"],
    ] {
        let out = run_briefly(SERVER, &[args, &["-p", "0"]].concat());
        assert_status(&out, 1);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn identity_files_give_chosen_identities_their_own_key() {
    let ids = Scratch::new("ids.txt", 0);
    std::fs::write(
        ids.path(),
        "# hint,identity,key\nCoAP,special,special-key\nOther,ignored,never\n",
    )
    .unwrap();
    let s = start(SERVER, &["-k", KEY, "-i", ids.path()]);
    let special = ["-u", "special", "-k", "special-key", "-B", "2"];
    assert_status(&client(&[&special[..], &[&coaps(&s, "")]].concat()), 0);
    // Other identities use the -k key; a listed one no longer does.
    assert_status(&psk_client(&[&coaps(&s, "")]), 0);
    let out = client(&["-u", "special", "-k", KEY, "-B", "2", &coaps(&s, "")]);
    assert_status(&out, 3);
    // A line for another hint does not apply.
    let out = client(&["-u", "ignored", "-k", "never", "-B", "2", &coaps(&s, "")]);
    assert_status(&out, 3);
}

#[test]
fn our_client_against_libcoap_dtls_servers() {
    for flavour in ["openssl", "gnutls"] {
        let server = libcoap(&format!("coap-server-{flavour}"));
        let server = server.to_str().unwrap();
        let s = start(server, &["-k", KEY]);
        let out = psk_client(&[&coaps(&s, "")]);
        assert_status(&out, 0);
        assert!(text(&out.stdout).contains("libcoap"), "{flavour}");
        let put = ["-m", "put", "-e", "over DTLS", &coaps(&s, "example_data")];
        assert_status(&psk_client(&put), 0);
        let out = psk_client(&["-N", &coaps(&s, "example_data")]);
        assert_eq!(text(&out.stdout), "over DTLS", "{flavour}");
        let out = client(&["-u", IDENTITY, "-k", "wrong", "-B", "2", &coaps(&s, "")]);
        assert_status(&out, 3);
        assert_one_line(&out, &["pre-shared key"]);
        drop(s);

        let cert = ["-c", &pki("server.pem"), "-j", &pki("server.key")];
        let s = start(server, &cert);
        let out = client(&["-C", &pki("ca.pem"), &coaps(&s, "")]);
        assert_status(&out, 0);
        assert!(text(&out.stdout).contains("libcoap"), "{flavour}");
        let out = client(&["-R", &pki("other-ca.pem"), &coaps(&s, "")]);
        assert_status(&out, 3);
        assert_one_line(&out, &["unknown CA"]);
        drop(s);

        // libcoap's -C: client certificates are required and checked.
        let s = start(server, &[&cert[..], &["-C", &pki("ca.pem")]].concat());
        let mine = ["-c", &pki("client.pem"), "-j", &pki("client.key")];
        let out = client(&[&mine[..], &["-C", &pki("ca.pem"), &coaps(&s, "")]].concat());
        assert_status(&out, 0);
        let out = client(&["-C", &pki("ca.pem"), &coaps(&s, "")]);
        assert_status(&out, 3);
        assert_one_line(&out, &["unknown_ca", "-c certfile"]);
    }
}

#[test]
fn libcoap_dtls_clients_against_our_server() {
    let cert = ["-c", &pki("server.pem"), "-j", &pki("server.key")];
    // PSK and certificates on one port: each client gets the mode it asks for.
    let s = start(SERVER, &[&cert[..], &["-k", KEY]].concat());
    for flavour in ["openssl", "gnutls"] {
        let coap_client = libcoap(&format!("coap-client-{flavour}"));
        let coap_client = coap_client.to_str().unwrap();
        let psk = ["-u", IDENTITY, "-k", KEY, "-B", "5"];
        let out = run(coap_client, &[&psk[..], &[&coaps(&s, "")]].concat());
        assert!(text(&out.stdout).contains("coap-engine"), "{flavour} PSK");
        let body = format!("via {flavour}");
        let put = ["-C", &pki("ca.pem"), "-B", "5", "-m", "put", "-e", &body];
        let out = run(
            coap_client,
            &[&put[..], &[&coaps(&s, "example_data")]].concat(),
        );
        assert_status(&out, 0);
        // Stored by the DTLS endpoint, read over plain UDP.
        assert_eq!(text(&client(&[&uri(&s, "example_data")]).stdout), body);
    }
    drop(s);
    let s = start(SERVER, &[&cert[..], &["-C", &pki("ca.pem")]].concat());
    for flavour in ["openssl", "gnutls"] {
        let coap_client = libcoap(&format!("coap-client-{flavour}"));
        let mine = ["-c", &pki("client.pem"), "-j", &pki("client.key")];
        let (ca, target) = (pki("ca.pem"), coaps(&s, ""));
        let args = [&mine[..], &["-C", &ca, "-B", "5", &target]].concat();
        let out = run(coap_client.to_str().unwrap(), &args);
        assert!(
            text(&out.stdout).contains("coap-engine"),
            "{flavour} certificate"
        );
    }
}

// ---- coap+tcp:// and coaps+tcp:// (RFC 8323) ----

/// The server's `coap+tcp://` URI: TCP listens on the UDP port.
fn tcp(server: &Server, path: &str) -> String {
    format!("coap+tcp://127.0.0.1:{}/{path}", server.port)
}

/// The server's `coaps+tcp://` URI: TLS listens next to DTLS, on port + 1.
fn tls(server: &Server, path: &str) -> String {
    format!("coaps+tcp://127.0.0.1:{}/{path}", server.port + 1)
}

/// Our server with the test PKI's server certificate (and `extra` flags).
fn start_with_certificate(program: &str, extra: &[&str]) -> Server {
    let cert = ["-c", &pki("server.pem"), "-j", &pki("server.key")];
    start(program, &[&cert[..], extra].concat())
}

/// Lines of `log` (a server's stderr) containing `what`.
fn count_lines(log: &std::path::Path, what: &str) -> usize {
    let logged = std::fs::read_to_string(log).unwrap();
    logged.lines().filter(|l| l.contains(what)).count()
}

/// Waits until `log` has a line containing each of `words` (the server logs after it
/// answered, so possibly after the client is gone); returns the log.
#[track_caller]
fn wait_for_log(log: &std::path::Path, words: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let logged = std::fs::read_to_string(log).unwrap();
        if words.iter().all(|w| logged.contains(w)) {
            return logged;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{words:?} never logged:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A log file for a server's stderr, removed on drop.
fn log_file(name: &str) -> (Scratch, std::fs::File) {
    let scratch = Scratch::new(name, 0);
    let file = std::fs::File::create(&scratch.path).unwrap();
    (scratch, file)
}

#[test]
fn coap_tcp_between_our_client_and_server_with_the_usual_flags() {
    let s = start(SERVER, &["-d", "2"]);
    let out = client(&[&tcp(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // A 100 kB body goes up as one message (Max-Message-Size 8388864 on both sides) and
    // comes back byte-exact, also into a file (-o).
    let body = Scratch::new("tcp-put.bin", 100_000);
    let put = ["-m", "put", "-f", body.path(), &tcp(&s, "big")];
    let out = client(&[&["-v", "6"][..], &put].concat());
    assert_status(&out, 0);
    assert!(text(&out.stderr).contains("2.01 Created"));
    let out = client(&[&tcp(&s, "big")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    let saved = Scratch::new("tcp-out.bin", 0);
    assert_status(&client(&["-o", saved.path(), &tcp(&s, "big")]), 0);
    assert!(std::fs::read(saved.path()).unwrap() == body.data);
    // -N (no message types on a stream: no effect), -T, -A, -O, -v 6, and -b 64: the
    // initial example_data in 64-byte blocks, asked for from the first request on.
    let out = client(&[
        "-N",
        "-T",
        "0xbeef",
        "-A",
        "text",
        "-O",
        "2048,ignored",
        "-b",
        "64",
        "-v",
        "6",
        &tcp(&s, "example_data"),
    ]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, libcoap_example_data());
    assert!(text(&out.stderr).contains("2.05 Content"));
    let out = client(&["-v", "6", "-b", "2,64", &tcp(&s, "example_data")]);
    assert_status(&out, 0);
    assert_eq!(out.stdout, &libcoap_example_data()[128..192]);
    assert!(text(&out.stderr).contains("Block2: 2/M/64"));
    // -e, -t, POST creating a resource; -r makes a coap:// URI go over TCP; -l drops
    // nothing from a stream (as libcoap's -l), and says so at -v 4.
    let post = ["-m", "post", "-t", "json", "-e", "{}", &tcp(&s, "made")];
    assert_status(&client(&post), 0);
    let out = client(&["-r", "-v", "6", &uri(&s, "made")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "{}");
    assert!(text(&out.stderr).contains("Content-Format: 50"));
    let out = client(&["-l", "1", "-v", "4", &tcp(&s, "made")]);
    assert_status(&out, 0);
    assert_one_line(&out, &["-l", "drops nothing"]);
    // What one transport stored, the others read: UDP reads the small one.
    assert_eq!(text(&client(&[&uri(&s, "made")]).stdout), "{}");
    assert_status(&client(&["-m", "delete", &tcp(&s, "made")]), 0);
    assert_status(&client(&[&tcp(&s, "made")]), 1);
    assert_status(&client(&[&tcp(&s, "nothing/here")]), 1);
}

#[test]
fn x_bounds_the_messages_of_a_connection_and_bodies_go_block_wise() {
    // The server takes messages of 1152 bytes at most (and aborts a connection that sends
    // a larger one): a 100 kB body gets there in blocks, and its answers go in blocks too,
    // each block a GET of its own (the application answers every one: -v 6 logs them).
    let (log_path, log) = log_file("x.log");
    let s = start_logging(SERVER, &["-X", "1152", "-v", "6"], Some(&log));
    let body = Scratch::new("x-put.bin", 100_000);
    let put = ["-m", "put", "-f", body.path(), &tcp(&s, "example_data")];
    assert_status(&client(&put), 0);
    let out = client(&[&tcp(&s, "example_data")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    wait_for_log(&log_path.path, &["0.01 /example_data"]);
    let gets = count_lines(&log_path.path, "0.01 /example_data");
    assert!(gets >= 98, "{gets} GETs");
    drop(s);

    // The client's -X: a server with the default sends it blocks too.
    let (log_path, log) = log_file("x-client.log");
    let s = start_logging(SERVER, &["-v", "6"], Some(&log));
    let put = ["-m", "put", "-f", body.path(), &tcp(&s, "example_data")];
    assert_status(&client(&put), 0);
    let out = client(&["-X", "1152", &tcp(&s, "example_data")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    wait_for_log(&log_path.path, &["0.01 /example_data"]);
    let gets = count_lines(&log_path.path, "0.01 /example_data");
    assert!(gets >= 98, "{gets} GETs");
    // Without -X: one message, one GET.
    let out = client(&[&tcp(&s, "example_data")]);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count_lines(&log_path.path, "0.01 /example_data"), gets + 1);
}

#[test]
fn observing_over_tcp_and_tls_prints_every_notification_then_deregisters() {
    let s = start_with_certificate(SERVER, &[]);
    let ca = pki("ca.pem");
    let plain = tcp(&s, "time?ticks");
    let secure = tls(&s, "time?ticks");
    for args in [&[&plain[..]][..], &["-C", &ca, &secure]] {
        let out = client(&[&["-s", "3", "-w", "-v", "6"][..], args].concat());
        assert_status(&out, 0);
        let stdout = text(&out.stdout);
        let ticks: Vec<u64> = stdout
            .lines()
            .map(|l| l.parse().unwrap_or_else(|_| panic!("{l:?} in {stdout}")))
            .collect();
        // The registration's answer, then one notification a second for 3 s.
        assert!(ticks.len() >= 3, "{args:?}: {stdout}");
        assert!(ticks.windows(2).all(|w| w[0] <= w[1]), "{stdout}");
        assert!(ticks[ticks.len() - 1] - ticks[0] >= 2, "{stdout}");
        assert!(text(&out.stderr).contains("deregistered after"), "{args:?}");
    }
}

#[test]
fn coaps_tcp_between_our_client_and_server() {
    let s = start_with_certificate(SERVER, &["-d", "1"]);
    let ca = pki("ca.pem");
    let out = client(&["-C", &ca, &tls(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // -r: coaps:// as coaps+tcp:// (the same port, next to DTLS).
    let secure = format!("coaps://127.0.0.1:{}/", s.port + 1);
    assert_status(&client(&["-r", "-R", &ca, &secure]), 0);
    // 100 kB up over TLS, read back over TCP and TLS.
    let body = Scratch::new("tls-put.bin", 100_000);
    let put = ["-C", &ca, "-m", "put", "-f", body.path(), &tls(&s, "big")];
    assert_status(&client(&put), 0);
    let out = client(&[&tcp(&s, "big")]);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    let out = client(&["-C", &ca, "-X", "1152", &tls(&s, "big")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    // A host name is the name checked (and sent as Uri-Host).
    let named = format!("coaps+tcp://localhost:{}/", s.port + 1);
    assert_status(&client(&["-C", &ca, "-K", "1", &named]), 0);
}

#[test]
fn refused_certificates_end_tls_with_one_line_and_status_3() {
    let s = start_with_certificate(SERVER, &[]);
    let ca = pki("ca.pem");
    let out = client(&["-R", &pki("other-ca.pem"), &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "unknown CA"]);
    let out = client(&["-C", &ca, "-O", "3,example.org", &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "name mismatch", "example.org"]);
    // With -K too: keepalive does not open the session without the request's name.
    let out = client(&["-K", "1", "-C", &ca, "-O", "3,example.org", &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "name mismatch", "example.org"]);
    drop(s);

    // An untrusted server: refused, unless -n (which warns).
    let other = [
        "-c",
        &pki("other-server.pem"),
        "-j",
        &pki("other-server.key"),
    ];
    let s = start(SERVER, &other);
    let out = client(&["-C", &ca, &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["unknown CA"]);
    let out = client(&["-n", &tls(&s, "")]);
    assert_status(&out, 0);
    assert_one_line(&out, &["WARNING", "-n", "NOT verified"]);
    drop(s);

    // -C on the server requires client certificates.
    let (log_path, log) = log_file("tls-client-cert.log");
    let cert = ["-c", &pki("server.pem"), "-j", &pki("server.key")];
    let required = [&cert[..], &["-C", &ca, "-v", "4"]].concat();
    let s = start_logging(SERVER, &required, Some(&log));
    let mine = [
        "-c",
        &pki("client.pem"),
        "-j",
        &pki("client.key"),
        "-C",
        &ca,
    ];
    let out = client(&[&mine[..], &[&tls(&s, "")]].concat());
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    let out = client(&["-C", &ca, "-B", "10", &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "certificate_required", "-c certfile"]);
    wait_for_log(&log_path.path, &["WARN", "TLS: peer certificate refused"]);
}

/// A TCP listener on a free loopback port that answers each connection as `serve` says,
/// one connection at a time, until the test ends.
fn fake_tcp_server(serve: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve(stream);
        }
    });
    port
}

#[test]
fn connections_refused_reset_or_closed_end_with_one_line_and_status_3() {
    // Refused: nothing listens (the port was free a moment ago).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = client(&[&format!("coap+tcp://127.0.0.1:{port}/")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["connection refused"]);
    // Closed: a server that reads our CSM and request, then ends the connection.
    let closing = fake_tcp_server(|mut stream| {
        std::thread::sleep(Duration::from_millis(200));
        let _ = stream.set_nonblocking(true);
        let _ = stream.read(&mut [0; 4096]);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    });
    let out = client(&["-B", "30", &format!("coap+tcp://127.0.0.1:{closing}/")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["closed the connection"]);
    // Reset: one that drops the connection with our bytes unread (the kernel resets it).
    let resetting = fake_tcp_server(|stream| {
        std::thread::sleep(Duration::from_millis(200));
        drop(stream);
    });
    let out = client(&["-B", "30", &format!("coap+tcp://127.0.0.1:{resetting}/")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["connection reset"]);
    // A TLS client against a plain TCP server that says nothing: the handshake never
    // completes, and -B says so.
    let silent = fake_tcp_server(|mut stream| {
        let _ = stream.read(&mut [0; 4096]);
        std::thread::sleep(Duration::from_secs(30));
    });
    let out = client(&["-n", "-B", "2", &format!("coaps+tcp://127.0.0.1:{silent}/")]);
    assert_status(&out, 3);
    let err = text(&out.stderr);
    // The -n warning, then the one line of the failure.
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.lines().nth(1).unwrap().contains("timed out"), "{err}");
}

#[test]
fn keepalive_over_tcp_pings_a_quiet_server_and_detects_a_frozen_one() {
    let s = start(SERVER, &[]);
    // /async?3 answers after 3 s: the pings after 1 s of silence are answered with Pongs,
    // which keep the session alive past its 2 s bound.
    let out = client(&["-K", "1", "-B", "20", &tcp(&s, "async?3")]);
    assert_status(&out, 0);
    assert_eq!(text(&out.stdout), "done");
    // A server frozen mid-observation: its kernel still takes our Pings, nothing answers.
    let observer = spawn_client(&["-s", "60", "-K", "1", "-w", &tcp(&s, "time")]);
    std::thread::sleep(Duration::from_millis(2500));
    signal(&s.child, "-STOP");
    let frozen = Instant::now();
    let (out, _) = finish(observer, Duration::from_secs(30));
    let after = frozen.elapsed();
    signal(&s.child, "-CONT");
    assert_status(&out, 3);
    assert_one_line(&out, &["keepalive failure"]);
    assert!(
        text(&out.stdout).lines().count() >= 2,
        "{}",
        text(&out.stdout)
    );
    // Within interval + timeout (2 s) of the last notification, with a generous margin.
    assert!(after < Duration::from_secs(10), "{after:?}");
}

#[test]
fn a_server_killed_mid_observation_over_tcp_is_one_line_and_status_3() {
    let mut s = start(SERVER, &[]);
    let observer = spawn_client(&["-s", "60", "-w", &tcp(&s, "time")]);
    std::thread::sleep(Duration::from_millis(2500));
    // Its kernel closes the connection: the observation ends at once, not at -B.
    let _ = s.child.kill();
    let (out, took) = finish(observer, Duration::from_secs(30));
    assert_status(&out, 3);
    // A FIN, or a reset if a notification was still unread.
    assert_one_line(&out, &["during the observation"]);
    assert!(
        text(&out.stdout).lines().count() >= 2,
        "{}",
        text(&out.stdout)
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn our_server_ends_a_frozen_tcp_observer_with_keepalive() {
    let (log_path, log) = log_file("tcp-keepalive.log");
    let s = start_logging(SERVER, &["-K", "1", "-v", "6"], Some(&log));
    let observer = spawn_client(&["-s", "60", "-w", &tcp(&s, "time")]);
    wait_for_log(&log_path.path, &["observer added"]);
    signal(&observer, "-STOP");
    let logged = wait_for_log(&log_path.path, &["keepalive failure", "observer removed"]);
    signal(&observer, "-CONT");
    let _ = finish(observer, Duration::from_secs(30));
    assert!(
        logged.contains("(TCP): session failed: keepalive failure"),
        "{logged}"
    );
    drop(s);
}

#[test]
fn tcp_and_tls_flags_misused_exit_2_with_one_line() {
    let ca = pki("ca.pem");
    for args in [
        // Pre-shared keys are DTLS's here.
        &["-u", IDENTITY, "-k", KEY, "coaps+tcp://127.0.0.1/"][..],
        &["-k", KEY, "-C", &ca, "coaps+tcp://127.0.0.1/"],
        // Nothing to verify the server with.
        &["coaps+tcp://127.0.0.1/"],
        &["-c", &pki("client.pem"), "coaps+tcp://127.0.0.1/"],
        &[
            "-j",
            &pki("client.key"),
            "-C",
            &ca,
            "coaps+tcp://127.0.0.1/",
        ],
        // Security flags over plain TCP.
        &["-C", &ca, "coap+tcp://127.0.0.1/"],
        &["-n", "-r", "coap://127.0.0.1/"],
        // -Z fails datagrams.
        &["-Z", "1", "coap+tcp://127.0.0.1/"],
        &["-X", "63", "coap+tcp://127.0.0.1/"],
        &["-X", "4294967296", "coap+tcp://127.0.0.1/"],
        &["-X", "big", "coap+tcp://127.0.0.1/"],
        &["-C", "/nonexistent/ca.pem", "coaps+tcp://127.0.0.1/"],
    ] {
        let out = client(args);
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
    for args in [&["-X", "10"][..], &["-X", "-1"]] {
        let out = run_briefly(SERVER, &[args, &["-p", "0"]].concat());
        assert_status(&out, 2);
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
}

#[test]
fn our_client_against_libcoap_server_over_tcp_and_tls() {
    let server = libcoap("coap-server-openssl");
    let s = start_with_certificate(server.to_str().unwrap(), &[]);
    let out = client(&[&tcp(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("libcoap"));
    let body = Scratch::new("libcoap-tcp.bin", 100_000);
    let put = ["-m", "put", "-f", body.path(), &tcp(&s, "example_data")];
    assert_status(&client(&put), 0);
    let out = client(&[&tcp(&s, "example_data")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    let out = client(&["-X", "1152", &tcp(&s, "example_data")]);
    assert_status(&out, 0);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    let out = client(&["-s", "2", "-w", "-K", "1", &tcp(&s, "time")]);
    assert_status(&out, 0);
    assert!(
        text(&out.stdout).lines().count() >= 2,
        "{}",
        text(&out.stdout)
    );
    assert_status(&client(&[&tcp(&s, "missing")]), 1);

    let ca = pki("ca.pem");
    let out = client(&["-C", &ca, &tls(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("libcoap"));
    let put = [
        "-C",
        &ca,
        "-m",
        "put",
        "-e",
        "over TLS",
        &tls(&s, "example_data"),
    ];
    assert_status(&client(&put), 0);
    assert_eq!(
        text(&client(&["-C", &ca, &tls(&s, "example_data")]).stdout),
        "over TLS"
    );
    let out = client(&["-R", &pki("other-ca.pem"), &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "unknown CA"]);
    drop(s);

    // libcoap's -C: client certificates required.
    let s = start_with_certificate(server.to_str().unwrap(), &["-C", &ca]);
    let mine = [
        "-c",
        &pki("client.pem"),
        "-j",
        &pki("client.key"),
        "-C",
        &ca,
    ];
    assert_status(&client(&[&mine[..], &[&tls(&s, "")]].concat()), 0);
    let out = client(&["-C", &ca, "-B", "10", &tls(&s, "")]);
    assert_status(&out, 3);
    assert_one_line(&out, &["TLS", "certificate_required", "-c certfile"]);
}

#[test]
fn libcoap_client_against_our_server_over_tcp_and_tls() {
    let coap_client = libcoap("coap-client-openssl");
    let coap_client = coap_client.to_str().unwrap();
    let s = start_with_certificate(SERVER, &["-d", "1"]);
    let out = run(coap_client, &["-B", "10", &tcp(&s, "")]);
    assert_status(&out, 0);
    assert!(text(&out.stdout).contains("coap-engine"));
    let body = Scratch::new("from-libcoap.bin", 100_000);
    let put = ["-B", "10", "-m", "put", "-f", body.path(), &tcp(&s, "big")];
    assert_status(&run(coap_client, &put), 0);
    // Read back with ours, byte-exact.
    let out = client(&[&tcp(&s, "big")]);
    assert!(out.stdout == body.data, "{} bytes back", out.stdout.len());
    let out = run(coap_client, &["-B", "10", &tcp(&s, ".well-known/core")]);
    assert!(text(&out.stdout).contains("</example_data>"));
    let out = run(coap_client, &["-B", "10", "-s", "2", &tcp(&s, "time")]);
    assert_status(&out, 0);
    assert!(!out.stdout.is_empty());

    let ca = pki("ca.pem");
    let out = run(coap_client, &["-B", "10", "-C", &ca, &tls(&s, "")]);
    assert!(
        text(&out.stdout).contains("coap-engine"),
        "{}",
        text(&out.stdout)
    );
    let put = [
        "-B",
        "10",
        "-C",
        &ca,
        "-m",
        "put",
        "-e",
        "via TLS",
        &tls(&s, "example_data"),
    ];
    assert_status(&run(coap_client, &put), 0);
    // Stored over TLS, read over UDP.
    assert_eq!(text(&client(&[&uri(&s, "example_data")]).stdout), "via TLS");
    // libcoap's client exits 0 after a failed handshake and says so on stdout.
    let out = run(
        coap_client,
        &["-B", "5", "-R", &pki("other-ca.pem"), &tls(&s, "")],
    );
    assert!(
        !text(&out.stdout).contains("coap-engine"),
        "{}",
        text(&out.stdout)
    );
    drop(s);

    // Client certificates required: libcoap's presents one.
    let s = start_with_certificate(SERVER, &["-C", &ca]);
    let mine = [
        "-c",
        &pki("client.pem"),
        "-j",
        &pki("client.key"),
        "-C",
        &ca,
    ];
    let out = run(
        coap_client,
        &[&mine[..], &["-B", "10", &tls(&s, "")]].concat(),
    );
    assert!(
        text(&out.stdout).contains("coap-engine"),
        "{}",
        text(&out.stdout)
    );
}
