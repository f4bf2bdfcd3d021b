//! What a half-open DTLS handshake costs a server, measured with a counting allocator: the
//! figure behind `Limits::max_handshakes`' memory cap. Run it with `--nocapture` to see the
//! numbers.
#![cfg(feature = "dtls")]

mod counting;
mod sim;

use std::net::SocketAddr;

use coap_engine::dtls::ClientAuth;
use coap_engine::{Config, Endpoint, Instant, Limits};
use sim::dtls::*;
use sim::{addr, con_get};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Brings `n` clients to the point where their ClientHello with a valid cookie is ready,
/// then measures what the server keeps for each once it has answered it.
fn bytes_per_half_open_handshake(server: Config, client: impl Fn(u64) -> Config, n: u16) -> isize {
    let sa = addr(5684);
    let now = Instant::ZERO;
    let mut server = Endpoint::new(server, 1).unwrap();
    server.set_unix_time(now, UNIX_NOW);
    let mut second_hellos: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        let ca = addr(42_000 + i);
        let mut c = Endpoint::new(client(u64::from(i)), u64::from(i)).unwrap();
        c.set_unix_time(now, UNIX_NOW);
        c.request(now, sa, &con_get("x", b"")).unwrap();
        let hello = c.poll_transmit().unwrap();
        server.handle_datagram(now, ca, &hello.payload);
        let hvr = server.poll_transmit().unwrap();
        assert!(server.poll_transmit().is_none());
        c.handle_datagram(now, sa, &hvr.payload);
        second_hellos.push((ca, c.poll_transmit().unwrap().payload.to_vec()));
        clients.push(c);
    }
    assert_eq!(
        server.handshakes_in_progress(),
        0,
        "nothing kept before the cookie"
    );
    // Warm up what is allocated once per process (dimpl's static suites, poll buffers).
    let before = counting::live();
    for (ca, hello) in &second_hellos {
        server.handle_datagram(now, *ca, hello);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
    let after = counting::live();
    assert_eq!(server.handshakes_in_progress(), usize::from(n));
    (after - before) / n as isize
}

#[test]
fn a_half_open_handshake_costs_a_bounded_and_documented_amount() {
    let limits = Limits {
        max_handshakes: 1000,
        ..Limits::default()
    };
    let base = Config {
        limits,
        ..Config::default()
    };
    // Warm the per-process allocations (poll buffer, provider tables) with one handshake.
    let _ = bytes_per_half_open_handshake(
        psk_server(base.clone(), 1),
        |s| psk_client(Config::default(), b"client", b"secret", s),
        1,
    );
    let psk = bytes_per_half_open_handshake(
        psk_server(base.clone(), 1),
        |s| psk_client(Config::default(), b"client", b"secret", s),
        200,
    );
    let cert = bytes_per_half_open_handshake(
        cert_server(base, "server", ClientAuth::NotRequested, false, 2),
        |s| cert_client(Config::default(), "ca", None, s),
        200,
    );
    eprintln!("bytes per half-open handshake: PSK {psk}, certificate {cert}");
    // The documented cap (Limits::max_handshakes): under 32 KiB each, so the default 64
    // half-open handshakes stay under 2 MiB.
    assert!(psk > 0 && psk < 32 * 1024, "PSK: {psk}");
    assert!(cert > 0 && cert < 32 * 1024, "certificate: {cert}");
}
