//! `coap-bench`: loopback throughput of our `coap-server` against libcoap's
//! `coap-server-notls`. A load generator on the engine's client side (mio driver) keeps W
//! Confirmable GETs in flight from each of P client sockets for D seconds and reports
//! responses/s and p50/p99 latency; the two servers run on other ports in the same run,
//! measured alternately, R rounds each (medians reported).
//!
//! ```text
//! cargo build --release -p coap-engine-examples
//! target/release/coap-bench [-P 16] [-W 4] [-D 3] [-R 3] [-p path/to/coap-server]
//! ```
//! Only 127.0.0.1 is used; every run is bounded in time and the servers are killed at exit.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coap_engine::coap_lite::{MessageClass, Packet, RequestType};
use coap_engine::{Config, Event, RequestId};
use coap_engine_mio::mio::{Events, Poll, Token};
use coap_engine_mio::Driver;

#[path = "../cli.rs"]
mod cli;

const PROG: &str = "coap-bench";

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &str, port: u16) -> Server {
    let child = Command::new(program)
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("{PROG}: cannot start {program}: {e}");
            std::process::exit(1)
        });
    std::thread::sleep(Duration::from_millis(300));
    Server(child)
}

struct Result {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn load(server: SocketAddr, p: usize, w: usize, secs: f64) -> Result {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(1024);
    let config = Config {
        transmission: coap_engine::TransmissionParameters {
            nstart: w,
            ..Default::default()
        },
        ..Config::default()
    };
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    let mut clients: Vec<Driver> = (0..p)
        .map(|i| {
            let mut d = Driver::bind("127.0.0.1:0".parse().unwrap(), config.clone()).unwrap();
            d.register(poll.registry(), Token(i)).unwrap();
            d
        })
        .collect();
    let mut sent: HashMap<(usize, RequestId), Instant> = HashMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in 0..w {
            let id = c.request(server, &get).unwrap();
            sent.insert((i, id), Instant::now());
        }
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut last_sweep = Instant::now();
    while Instant::now() < end {
        let timeout = end.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(timeout.min(Duration::from_millis(50))))
            .unwrap();
        let mut ready: Vec<usize> = Vec::new();
        for event in events.iter() {
            clients[event.token().0].handle_event(event);
            ready.push(event.token().0);
        }
        // Timers (retransmissions) are swept every 50 ms; otherwise only ready sockets.
        if last_sweep.elapsed() >= Duration::from_millis(50) {
            last_sweep = Instant::now();
            ready = (0..p).collect();
        }
        for i in ready {
            let c = &mut clients[i];
            c.handle_timeout();
            while let Some(event) = c.poll_event() {
                let done = match event {
                    Event::Response { id, .. } => {
                        if let Some(t) = sent.remove(&(i, id)) {
                            latencies.push(t.elapsed());
                        }
                        true
                    }
                    Event::RequestFailed { id, .. } => {
                        sent.remove(&(i, id));
                        failures += 1;
                        true
                    }
                    _ => false,
                };
                if done && Instant::now() < end {
                    if let Ok(id) = c.request(server, &get) {
                        sent.insert((i, id), Instant::now());
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if failures > 0 {
        eprintln!("{PROG}: {failures} requests failed");
    }
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Result {
        rate: latencies.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (flags, _) = cli::getopt(args, "P:W:D:R:p:").unwrap_or_else(|e| cli::usage_error(PROG, e));
    let (mut p, mut w, mut d, mut r) = (16usize, 4usize, 3.0f64, 3usize);
    let mut ours = std::env::current_exe()
        .unwrap()
        .with_file_name("coap-server")
        .to_string_lossy()
        .into_owned();
    for (flag, value) in flags {
        let num = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && *v <= 100_000.0)
                .unwrap_or_else(|| cli::usage_error(PROG, format!("-{flag}: bad number")))
        };
        match flag {
            'P' => p = num() as usize,
            'W' => w = num() as usize,
            'D' => d = num().min(60.0),
            'R' => r = num() as usize,
            'p' => ours = value,
            _ => unreachable!(),
        }
    }
    let targets = [
        ("coap-engine coap-server", ours.as_str()),
        ("libcoap coap-server-notls", "coap-server-notls"),
    ];
    let servers: Vec<(Server, SocketAddr)> = targets
        .iter()
        .map(|(_, prog)| {
            let port = free_port();
            (spawn(prog, port), SocketAddr::from(([127, 0, 0, 1], port)))
        })
        .collect();
    let mut results: Vec<Vec<Result>> = vec![Vec::new(), Vec::new()];
    for round in 0..r {
        for (k, (_, addr)) in servers.iter().enumerate() {
            let res = load(*addr, p, w, d);
            eprintln!(
                "round {round}: {:<26} {:>9.0} resp/s  p50 {:?}  p99 {:?}",
                targets[k].0, res.rate, res.p50, res.p99
            );
            results[k].push(res);
        }
    }
    println!("P={p} W={w} D={d}s, medians of {r} runs");
    println!("| server | responses/s | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    let mut rates = Vec::new();
    for (k, res) in results.iter().enumerate() {
        let rate = median(res.iter().map(|x| x.rate).collect());
        let p50 = median(res.iter().map(|x| x.p50.as_secs_f64() * 1e6).collect());
        let p99 = median(res.iter().map(|x| x.p99.as_secs_f64() * 1e6).collect());
        println!(
            "| {} | {rate:.0} | {p50:.0} µs | {p99:.0} µs |",
            targets[k].0
        );
        rates.push(rate);
    }
    println!(
        "ratio (ours / libcoap): {:.2}",
        rates[0] / rates[1].max(1e-9)
    );
}
