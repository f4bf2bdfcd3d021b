#![cfg(feature = "dtls")]
mod sim;

use std::collections::BTreeMap;
use std::sync::Arc;

use coap_engine::dtls::{CertifiedKey, Dtls, DtlsConfig, PskCredentials};
use coap_engine::{Config, Event, Security};
use sim::*;

fn psk_client(key: &[u8]) -> Config {
    let dtls = Dtls::new(
        DtlsConfig {
            psk: Some(PskCredentials {
                identity: b"client".to_vec(),
                key: key.to_vec(),
            }),
            ..DtlsConfig::default()
        },
        [1; 32],
    )
    .unwrap();
    Config {
        security: Some(Security::new(dtls)),
        ..Config::default()
    }
}

fn psk_server() -> Config {
    let mut table = BTreeMap::new();
    table.insert(b"client".to_vec(), b"secretkey".to_vec());
    let dtls = Dtls::new(
        DtlsConfig {
            psk_store: Some(Arc::new(table)),
            ..DtlsConfig::default()
        },
        [2; 32],
    )
    .unwrap();
    Config {
        security: Some(Security::new(dtls)),
        ..Config::default()
    }
}

#[test]
fn psk_get() {
    let mut sim = Sim::new(1);
    sim.trace = true;
    let c = sim.add_endpoint(addr(40000), psk_client(b"secretkey"));
    let s = sim.add_endpoint(addr(5684), psk_server());
    sim.set_app(s, |sim, node, ev| {
        if let Event::Request { id, .. } = ev {
            sim.respond(node, *id, &content(b"hi")).unwrap();
        }
    });
    sim.request(c, addr(5684), &con_get("x", b"")).unwrap();
    sim.run_until(at_secs(5));
    assert!(
        sim.events(c).iter().any(
            |l| matches!(&l.event, Event::Response { response, .. } if response.payload == b"hi")
        ),
        "{:#?}",
        sim.events(c)
    );
}

#[test]
fn cert_get() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/");
    let read = |f: &str| std::fs::read(format!("{dir}{f}")).unwrap();
    let server = Dtls::new(
        DtlsConfig {
            certificate: Some(
                CertifiedKey::from_pem(&read("server.pem"), &read("server.key")).unwrap(),
            ),
            ..DtlsConfig::default()
        },
        [3; 32],
    )
    .unwrap();
    let client = Dtls::new(
        DtlsConfig {
            trust_anchors: coap_engine::dtls::trust_anchors_from_pem(&read("ca.pem")).unwrap(),
            ..DtlsConfig::default()
        },
        [4; 32],
    )
    .unwrap();
    let mut sim = Sim::new(2);
    sim.trace = true;
    let c = sim.add_endpoint(
        addr(40000),
        Config {
            security: Some(Security::new(client)),
            ..Config::default()
        },
    );
    let s = sim.add_endpoint(
        addr(5684),
        Config {
            security: Some(Security::new(server)),
            ..Config::default()
        },
    );
    sim.input(c, |ep, now| ep.set_unix_time(now, 1_800_000_000));
    sim.set_app(s, |sim, node, ev| {
        if let Event::Request { id, .. } = ev {
            sim.respond(node, *id, &content(b"hi")).unwrap();
        }
    });
    sim.request(c, addr(5684), &con_get("x", b"")).unwrap();
    sim.run_until(at_secs(5));
    assert!(
        sim.events(c).iter().any(
            |l| matches!(&l.event, Event::Response { response, .. } if response.payload == b"hi")
        ),
        "{:#?}",
        sim.events(c)
    );
}

#[test]
fn wrong_psk() {
    let mut sim = Sim::new(3);
    sim.trace = true;
    let c = sim.add_endpoint(addr(40000), psk_client(b"wrong"));
    let s = sim.add_endpoint(addr(5684), psk_server());
    sim.request(c, addr(5684), &con_get("x", b"")).unwrap();
    sim.run_until(at_secs(60));
    eprintln!("{:#?}", sim.events(c));
    eprintln!("{:#?}", sim.events(s));
    panic!();
}
