//! The adapter's client against libcoap's `coap-server-notls` (4.3): an embassy-net stack
//! whose driver bridges its IPv4/UDP packets to the server on 127.0.0.1, the mock clock
//! following the wall clock (libcoap's timers are real). Needs `coap-server-notls` on the
//! PATH; the test fails, naming it, without.

#[allow(dead_code)] // the in-memory link's helpers are for other tests
mod common;

use std::net::SocketAddr;

use coap_engine::coap_lite::{MessageClass, Packet, ResponseType};
use coap_engine::Config;
use coap_engine_embassy::{Client, Observed};
use embassy_net::StackResources;
use embassy_time::Duration;

use common::libcoap::{Bridge, LibcoapServer, BRIDGED_SERVER};
use common::pair::{get, leak, udp_runner};
use common::{run_real, task};

/// This helper's share of the ports for fixed-port servers.
const PORTS: std::ops::Range<u16> = 47210..47220;

fn observe_value(p: &Packet) -> Option<u32> {
    p.get_observe_value()
        .map(|v| v.expect("a valid Observe value"))
}

#[test]
fn observe_libcoap_time_then_deregister() {
    let server = LibcoapServer::start(PORTS);
    let bridge = Bridge::new(server.addr);
    let (stack, net) = bridge.stack(leak(StackResources::new()));
    let net = leak(net);
    let (channels, runner) = udp_runner(stack, 40000, Config::default(), 5);
    let client = Client::new(channels);
    let tasks = vec![task(net.run()), bridge.pump_task(), runner];
    run_real(
        Duration::from_secs(20),
        async {
            let peer = SocketAddr::V4(BRIDGED_SERVER);
            // libcoap's /time is observable and notifies once a second.
            let mut observation = client.observe(peer, get("time")).await.unwrap();
            let mut sequence = Vec::new();
            for _ in 0..2 {
                match observation.next().await {
                    Ok(Observed::Notification(n)) => {
                        assert_eq!(n.header.code, MessageClass::Response(ResponseType::Content));
                        assert!(!n.payload.is_empty(), "a time without text");
                        sequence.push(observe_value(&n).expect("a notification has Observe"));
                    }
                    other => panic!("expected a notification of /time, got {other:?}"),
                }
            }
            assert!(sequence[1] > sequence[0], "not in order: {sequence:?}");
            // RFC 7641 §3.6: a GET with Observe = 1, answered without Observe.
            let answer = observation.deregister().await.unwrap();
            assert_eq!(
                answer.header.code,
                MessageClass::Response(ResponseType::Content)
            );
            assert_eq!(observe_value(&answer), None, "still observing: {answer:?}");
        },
        tasks,
    );
    drop(server); // killed
}
