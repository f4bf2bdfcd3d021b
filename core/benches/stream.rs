//! In-memory request→response round trips over the stream path (RFC 8323): a client and a
//! server [`Endpoint`] with `Transport::Tcp`, their writes handed straight to each other's
//! `handle_datagram` as connection bytes, with no I/O, so the figure is the engine's own
//! cost per exchange (framing, the stream message layer, write accounting).
//!
//! Groups (every iteration is one round trip, `Throughput::Elements(1)`):
//! - `stream/tcp`: GET with one Uri-Path answered by 2.05 Content, over a plain connection;
//! - `stream/tls` (feature `tls`): the same through TLS 1.3 (AES-GCM records both ways).
//!
//! As an adapter must on a stream, every write is reported done
//! (`handle_send_result(.., Ok(()))`), so the unwritten-bytes accounting runs as in
//! production. Virtual time advances 1 µs per round trip.
//!
//! Run: `cargo bench -p coap-engine --bench stream` (add `--features tls` for the TLS group).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use coap_engine::{Config, Duration, Endpoint, Event, Instant, StreamCommand, Transport};
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BODY: &[u8] = b"22.5 C";

struct Pair {
    client: Endpoint,
    server: Endpoint,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    now: Instant,
    get: Packet,
    content: Packet,
}

/// Hands everything `from` wants to write to `to`, reporting each write done; answers the
/// requests `to` receives if it is the server.
fn deliver(now: Instant, from: &mut Endpoint, from_addr: SocketAddr, to: &mut Endpoint) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit() {
        from.handle_send_result(now, t.id, Ok(()));
        to.handle_datagram(now, from_addr, &t.payload);
        n += 1;
    }
    n
}

impl Pair {
    fn new(client: Config, server: Config) -> Self {
        let mut get = Packet::new();
        get.header.code = MessageClass::Request(RequestType::Get);
        get.add_option(CoapOption::UriPath, b"sensors".to_vec());
        let mut content = Packet::new();
        content.header.code = MessageClass::Response(ResponseType::Content);
        content.payload = BODY.to_vec();
        let mut pair = Pair {
            client: Endpoint::new(client, 1).expect("valid config"),
            server: Endpoint::new(server, 2).expect("valid config"),
            // Loopback: the address the test certificate is issued for.
            client_addr: "127.0.0.1:40000".parse().expect("address"),
            server_addr: "127.0.0.1:5684".parse().expect("address"),
            now: Instant::ZERO,
            get,
            content,
        };
        for ep in [&mut pair.client, &mut pair.server] {
            ep.set_unix_time(Instant::ZERO, 1_800_000_000);
        }
        // Open the connection (and its handshake, if any) with a first exchange.
        let now = pair.now;
        pair.client
            .request(now, pair.server_addr, &pair.get)
            .expect("request accepted");
        assert_eq!(
            pair.client.poll_stream_command(),
            Some(StreamCommand::Connect(pair.server_addr))
        );
        pair.server
            .handle_accepted(now, pair.client_addr)
            .expect("accepted");
        pair.client.handle_connected(now, pair.server_addr);
        let mut answered = false;
        for _ in 0..100 {
            let moved = pair.shuttle(now, &mut answered);
            if answered && moved == 0 {
                break;
            }
        }
        assert!(answered, "the first exchange completed");
        pair
    }

    /// Moves bytes both ways once, answering requests; returns how many writes moved.
    fn shuttle(&mut self, now: Instant, answered: &mut bool) -> usize {
        let mut moved = deliver(now, &mut self.client, self.client_addr, &mut self.server);
        while let Some(event) = self.server.poll_event() {
            if let Event::Request { id, .. } = event {
                self.server
                    .respond(now, id, &self.content)
                    .expect("respond accepted");
            }
        }
        moved += deliver(now, &mut self.server, self.server_addr, &mut self.client);
        while let Some(event) = self.client.poll_event() {
            if let Event::Response { response, .. } = event {
                assert_eq!(response.payload, BODY);
                *answered = true;
            }
        }
        moved
    }

    fn round_trip(&mut self) -> bool {
        self.now += Duration::from_micros(1);
        let now = self.now;
        self.client
            .request(now, self.server_addr, &self.get)
            .expect("request accepted");
        let mut answered = false;
        self.shuttle(now, &mut answered);
        black_box(self.client.poll_timeout());
        black_box(self.server.poll_timeout());
        answered
    }
}

fn tcp() -> Config {
    Config {
        transport: Transport::Tcp,
        ..Config::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Elements(1));
    let pairs = vec![
        ("tcp", Pair::new(tcp(), tcp())),
        #[cfg(feature = "tls")]
        ("tls", tls::pair()),
    ];
    for (name, mut pair) in pairs {
        assert!(pair.round_trip(), "{name}: one round trip per iteration");
        group.bench_function(name, |b| b.iter(|| pair.round_trip()));
        for ep in [&pair.client, &pair.server] {
            assert_eq!(ep.session_count(), 1, "{name}: one connection throughout");
        }
    }
    group.finish();
}

#[cfg(feature = "tls")]
mod tls {
    use coap_engine::credentials::{trust_anchors_from_pem, CertifiedKey, ClientAuth};
    use coap_engine::tls::{Tls, TlsConfig};
    use coap_engine::{Config, Security};

    fn pem(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/certs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(super) fn pair() -> super::Pair {
        let anchors = trust_anchors_from_pem(&pem("ca.pem")).expect("CA");
        let client = TlsConfig {
            trust_anchors: anchors.clone(),
            ..TlsConfig::default()
        };
        let server = TlsConfig {
            certificate: Some(
                CertifiedKey::from_pem(&pem("server.pem"), &pem("server.key")).expect("key"),
            ),
            trust_anchors: anchors,
            client_auth: ClientAuth::NotRequested,
            ..TlsConfig::default()
        };
        let secure = |tls, seed| Config {
            security: Some(Security::new(
                Tls::new(tls, [seed; 32]).expect("TLS config"),
            )),
            ..super::tcp()
        };
        super::Pair::new(secure(client, 1), secure(server, 2))
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
