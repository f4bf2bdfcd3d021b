//! A real ENETUNREACH: a client and a server in two network namespaces this test creates,
//! joined by a veth pair; the client's link is taken down mid-session and its sends fail with
//! "network unreachable" from the kernel. Needs root and iproute2 (`ip`); it fails, never
//! skips, without them. Every non-loopback address lives inside those namespaces.
//!
//! The test re-runs this test binary inside each namespace (`ip netns exec`), selecting the
//! ignored `netns_role` test with `COAP_SMOL_NETNS_ROLE=server|client`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{
    Config, Duration, Event, ExchangeError, FailureReason, Keepalive, SendErrorKind,
};
use coap_engine_smol::{Driver, Error};
use smol::future::FutureExt as _;

const ROLE: &str = "COAP_SMOL_NETNS_ROLE";
const SERVER: &str = "10.203.0.2:5683";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("this test needs iproute2 (the `ip` command) and root: cannot run `ip`: {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (this test needs iproute2 and root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespaces (and so the veth pair) and kills the children, whatever happens.
struct Cleanup {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn role_in(ns: &str, role: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "netns_role", "--ignored", "--nocapture"])
        .env(ROLE, role);
    cmd
}

#[test]
fn link_down_gives_real_enetunreach_and_a_keepalive_failure() {
    let tag = format!("coapsmol{}", std::process::id());
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    let mut cleanup = Cleanup {
        namespaces: Vec::new(),
        children: Vec::new(),
    };
    for ns in [&a, &b] {
        ip(&["netns", "add", ns]);
        cleanup.namespaces.push(ns.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.203.0.1/24", "dev", "va"]);
    ip(&["-n", &b, "addr", "add", "10.203.0.2/24", "dev", "vb"]);
    ip(&["-n", &a, "link", "set", "va", "up"]);
    ip(&["-n", &b, "link", "set", "vb", "up"]);

    let mut server = role_in(&b, "server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server inside its namespace");
    let stdout = server.stdout.take().unwrap();
    cleanup.children.push(server);
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("SERVER READY"));
    assert!(ready, "the server never became ready");

    let mut client = role_in(&a, "client").spawn().expect("spawn the client");
    let deadline = StdInstant::now() + StdDuration::from_secs(15);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if StdInstant::now() > deadline {
            let _ = client.kill();
            panic!("the client did not finish within 15 s");
        }
        std::thread::sleep(StdDuration::from_millis(20));
    };
    assert!(status.success(), "the client role failed: {status}");
}

#[test]
#[ignore = "run inside a namespace by link_down_gives_real_enetunreach_and_a_keepalive_failure"]
fn netns_role() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => server(),
        Ok("client") => client(),
        _ => panic!("set {ROLE}=server|client (the namespace test does)"),
    }
}

fn server() {
    smol::block_on(async {
        let driver = Driver::bind(SERVER.parse().unwrap(), Config::default()).unwrap();
        let incoming = driver.incoming();
        let _task = driver.spawn();
        println!("SERVER READY");
        incoming
            .serve(|_, _| async {
                let mut response = Packet::new();
                response.header.code = MessageClass::Response(ResponseType::Content);
                response.payload = b"up".to_vec();
                response
            })
            .await;
    });
}

fn client() {
    let keepalive = Keepalive {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
    };
    let config = Config {
        keepalive: Some(keepalive),
        ..Config::default()
    };
    let server: SocketAddr = SERVER.parse().unwrap();
    let run = async {
        let driver = Driver::bind("0.0.0.0:0".parse().unwrap(), config).unwrap();
        let (client, events, _task) = (driver.client(), driver.events(), driver.spawn());
        let mut get = Packet::new();
        get.header.code = MessageClass::Request(RequestType::Get);
        get.add_option(CoapOption::UriPath, b"x".to_vec());
        let response = client.request(server, get.clone()).await.unwrap();
        assert_eq!(response.payload, b"up");

        ip(&["link", "set", "va", "down"]); // our namespace's only route to the server goes
        let cut = StdInstant::now();
        let result = client.request(server, get).await;
        assert!(
            matches!(
                result,
                Err(Error::Exchange(ExchangeError::SessionFailed(
                    FailureReason::KeepaliveTimeout { .. }
                )))
            ),
            "{result:?}"
        );
        let mut unreachable = false;
        loop {
            match events.recv().await.unwrap() {
                Event::SendFailed { kind, .. } => {
                    assert_eq!(kind, SendErrorKind::Unreachable, "ENETUNREACH expected");
                    unreachable = true;
                }
                Event::SessionFailed { .. } => break,
                _ => {}
            }
        }
        let bound = StdDuration::from(keepalive.bound()) + StdDuration::from_millis(1500);
        assert!(cut.elapsed() <= bound, "{:?} > {bound:?}", cut.elapsed());
        assert!(unreachable, "no send failed with ENETUNREACH");
    };
    smol::block_on(run.or(async {
        smol::Timer::after(StdDuration::from_secs(10)).await;
        panic!("client role timed out");
    }));
}
