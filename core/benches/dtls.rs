//! DTLS (feature `dtls`) in memory, no I/O: what a handshake costs in each mode, and what
//! DTLS adds to a round trip, measured side by side with the plain round trip.
//!
//! - `dtls_handshake/psk`: a fresh client and server endpoint, from the client's request to
//!   its response: the cookie exchange, a PSK_AES128_CCM_8 handshake, one CON GET.
//! - `dtls_handshake/certificate`: the same with ECDHE-ECDSA (X25519, a P-256 certificate
//!   verified by webpki against the test CA).
//! - `dtls_round_trip/{plain,psk}`: one CON GET → piggybacked 2.05 between long-lived
//!   endpoints, without and with a DTLS association (AES-128-CCM-8 both ways).
//!
//! Run: `cargo bench -p coap-engine --features dtls --bench dtls`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use coap_engine::dtls::{trust_anchors_from_pem, CertifiedKey, Dtls, DtlsConfig, PskCredentials};
use coap_engine::{Config, Duration, Endpoint, Event, Instant, Security};
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/");

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{CERTS}{name}")).expect("test PKI")
}

fn secure(dtls: DtlsConfig, entropy: u8) -> Config {
    Config {
        security: Some(Security::new(
            Dtls::new(dtls, [entropy; 32]).expect("valid"),
        )),
        ..Config::default()
    }
}

fn psk_pair() -> (Config, Config) {
    let mut table = std::collections::BTreeMap::new();
    table.insert(b"client".to_vec(), b"secret".to_vec());
    let client = DtlsConfig {
        psk: Some(PskCredentials {
            identity: b"client".to_vec(),
            key: b"secret".to_vec(),
        }),
        ..DtlsConfig::default()
    };
    let server = DtlsConfig {
        psk_store: Some(Arc::new(table)),
        ..DtlsConfig::default()
    };
    (secure(client, 1), secure(server, 2))
}

fn certificate_pair() -> (Config, Config) {
    let client = DtlsConfig {
        trust_anchors: trust_anchors_from_pem(&pem("ca.pem")).expect("CA"),
        ..DtlsConfig::default()
    };
    let server = DtlsConfig {
        certificate: Some(
            CertifiedKey::from_pem(&pem("server.pem"), &pem("server.key")).expect("cert"),
        ),
        ..DtlsConfig::default()
    };
    (secure(client, 3), secure(server, 4))
}

struct Pair {
    client: Endpoint,
    server: Endpoint,
    ca: SocketAddr,
    sa: SocketAddr,
    now: Instant,
    get: Packet,
    content: Packet,
}

impl Pair {
    fn new((client, server): (Config, Config), seed: u64) -> Self {
        let mut get = Packet::new();
        get.header.code = MessageClass::Request(RequestType::Get);
        get.add_option(CoapOption::UriPath, b"sensors".to_vec());
        let mut content = Packet::new();
        content.header.code = MessageClass::Response(ResponseType::Content);
        content.payload = b"22.5 C".to_vec();
        let mut pair = Pair {
            client: Endpoint::new(client, seed).expect("valid"),
            server: Endpoint::new(server, seed + 1).expect("valid"),
            ca: "127.0.0.1:40000".parse().expect("address"),
            sa: "127.0.0.1:5684".parse().expect("address"),
            now: Instant::ZERO,
            get,
            content,
        };
        pair.client.set_unix_time(Instant::ZERO, 1_800_000_000);
        pair.server.set_unix_time(Instant::ZERO, 1_800_000_000);
        pair
    }

    /// One request, delivered back and forth (handshake first if there is none) until its
    /// response arrives.
    fn round_trip(&mut self) -> usize {
        self.now += Duration::from_micros(1);
        let now = self.now;
        let id = self
            .client
            .request(now, self.sa, &self.get)
            .expect("request accepted");
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                self.server.handle_datagram(now, self.ca, &t.payload);
                moved = true;
            }
            while let Some(event) = self.server.poll_event() {
                if let Event::Request { id, .. } = event {
                    self.server
                        .respond(now, id, &self.content)
                        .expect("respond accepted");
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                self.client.handle_datagram(now, self.sa, &t.payload);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                if let Event::Response {
                    id: rid, response, ..
                } = event
                {
                    assert_eq!(rid, id);
                    return black_box(response.payload.len());
                }
            }
            assert!(moved, "the exchange stalled");
        }
        panic!("no response after 16 flights");
    }
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("dtls_handshake");
    group.throughput(Throughput::Elements(1));
    for (name, configs) in [("psk", psk_pair()), ("certificate", certificate_pair())] {
        let mut seed = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                seed += 2;
                Pair::new(configs.clone(), seed).round_trip()
            })
        });
    }
    group.finish();
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("dtls_round_trip");
    group.throughput(Throughput::Elements(1));
    for (name, configs) in [
        ("plain", (Config::default(), Config::default())),
        ("psk", psk_pair()),
    ] {
        let mut pair = Pair::new(configs, 10);
        assert_eq!(pair.round_trip(), 6); // the handshake, outside the measurement
        group.bench_function(name, |b| b.iter(|| pair.round_trip()));
        assert_eq!(pair.server.session_count(), 1, "one association throughout");
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = handshakes, round_trips
}
criterion_main!(benches);
