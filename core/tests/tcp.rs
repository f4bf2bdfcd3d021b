//! CoAP over TCP (RFC 8323) on the simulator's stream links.

mod sim;

use coap_engine::{Config, Duration, Event, Transport};
use sim::*;

fn tcp() -> Config {
    Config {
        transport: Transport::Tcp,
        ..Config::default()
    }
}

#[test]
fn smoke() {
    let mut sim = Sim::new(1);
    sim.trace = true;
    let c = sim.add_endpoint(addr(40000), tcp());
    let s = sim.add_endpoint(addr(5683), tcp());
    sim.set_app(s, |sim, node, ev| {
        if let Event::Request { id, .. } = ev {
            sim.respond(node, *id, &content(b"hi")).unwrap();
        }
    });
    let id = sim.request(c, addr(5683), &con_get("x", b"")).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert!(
        matches!(&sim.terminal(c, id).event, Event::Response { response, .. } if response.payload == b"hi")
    );
}
