//! The smol adapter over real UDP sockets on loopback (IPv4 and IPv6).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine::{
    Config, Duration, Event, ExchangeError, FailureReason, Keepalive, SendErrorKind,
    TransmissionParameters,
};
use coap_engine_smol::{Client, Driver, Error, Events};
use smol::future::FutureExt as _;
use smol::Timer;

/// Fails the test if `fut` takes longer than `secs` (a hang guard, not a performance check).
async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    fut.or(async {
        Timer::after(StdDuration::from_secs(secs)).await;
        panic!("timed out after {secs} s")
    })
    .await
}

fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    p
}

fn path_of(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .and_then(|l| l.front())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

/// A server whose `/slow` answers after 300 ms and every other path echoes itself.
fn server(addr: &str) -> (SocketAddr, smol::Task<io::Result<()>>) {
    let config = Config {
        empty_ack_delay: Duration::from_millis(50),
        ..Config::default()
    };
    let driver = Driver::bind(addr.parse().unwrap(), config).unwrap();
    let local = driver.local_addr().unwrap();
    smol::spawn(driver.incoming().serve(|_peer, request| async move {
        let path = path_of(&request);
        if path == "slow" {
            Timer::after(StdDuration::from_millis(300)).await;
        }
        let mut response = Packet::new();
        response.header.code = MessageClass::Response(ResponseType::Content);
        response.payload = format!("echo {path}").into_bytes();
        response
    }))
    .detach();
    (local, driver.spawn())
}

fn client_of(driver: Driver) -> (Client, Events, smol::Task<io::Result<()>>) {
    (driver.client(), driver.events(), driver.spawn())
}

fn client_with(addr: &str, config: Config) -> (Client, Events, smol::Task<io::Result<()>>) {
    client_of(Driver::bind(addr.parse().unwrap(), config).unwrap())
}

fn client(addr: &str) -> (Client, Events, smol::Task<io::Result<()>>) {
    client_with(addr, Config::default())
}

fn round_trip(local: &str) {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server(local);
        let (client, events, _task) = client(local);
        let response = client.request(server_addr, get("hello")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::Content)
        );
        assert_eq!(response.payload, b"echo hello");
        assert_eq!(response.header.get_type(), MessageType::Acknowledgement); // piggybacked
        assert!(
            matches!(events.recv().await, Some(Event::SessionNew { peer }) if peer == server_addr)
        );
        assert!(matches!(
            events.recv().await,
            Some(Event::SessionEstablished { .. })
        ));
    }));
}

#[test]
fn request_response_ipv4() {
    round_trip("127.0.0.1:0");
}

#[test]
fn request_response_ipv6() {
    round_trip("[::1]:0");
}

#[test]
fn late_answer_goes_out_as_a_separate_response() {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server("127.0.0.1:0");
        let (client, _events, _task) = client("127.0.0.1:0");
        let response = client.request(server_addr, get("slow")).await.unwrap();
        assert_eq!(response.payload, b"echo slow");
        // Not piggybacked: the server's engine sent an Empty ACK, then a CON response.
        assert_eq!(response.header.get_type(), MessageType::Confirmable);
    }));
}

#[test]
fn non_confirmable_request_gets_a_non_response() {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server("[::1]:0");
        let (client, _events, _task) = client("[::1]:0");
        let mut request = get("non");
        request.header.set_type(MessageType::NonConfirmable);
        let response = client.request(server_addr, request).await.unwrap();
        assert_eq!(response.payload, b"echo non");
        assert_eq!(response.header.get_type(), MessageType::NonConfirmable);
    }));
}

#[test]
fn concurrent_requests_each_get_their_own_answer() {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server("127.0.0.1:0");
        let (client, _events, _task) = client("127.0.0.1:0");
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let client = client.clone();
                let path = if i % 5 == 0 {
                    "slow".to_string()
                } else {
                    format!("r{i}")
                };
                smol::spawn(async move {
                    let response = client.request(server_addr, get(&path)).await.unwrap();
                    assert_eq!(response.payload, format!("echo {path}").into_bytes());
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }));
}

fn fast_retransmit() -> Config {
    Config {
        transmission: TransmissionParameters {
            ack_timeout: Duration::from_millis(50),
            max_retransmit: 1,
            ..TransmissionParameters::default()
        },
        ..Config::default()
    }
}

#[test]
fn silent_peer_times_out() {
    smol::block_on(within(10, async {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (client, _events, _task) = client_with("127.0.0.1:0", fast_retransmit());
        let result = client.request(silent.local_addr().unwrap(), get("x")).await;
        assert_eq!(result, Err(Error::Exchange(ExchangeError::Timeout)));
    }));
}

#[test]
fn dropping_the_request_future_cancels_it() {
    smol::block_on(within(10, async {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (client, _events, _task) = client_with("127.0.0.1:0", fast_retransmit());
        let request = client.request(silent.local_addr().unwrap(), get("x"));
        let gave_up = async {
            Timer::after(StdDuration::from_millis(20)).await;
            Err(Error::Exchange(ExchangeError::Cancelled))
        };
        assert_eq!(
            request.or(gave_up).await,
            Err(Error::Exchange(ExchangeError::Cancelled))
        );
        // Cancelled before the first retransmission (≥ 50 ms): only one datagram ever arrives.
        Timer::after(StdDuration::from_millis(300)).await;
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(silent.recv_from(&mut buf).is_ok());
        assert_eq!(
            silent.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }));
}

#[test]
fn ping_is_answered() {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server("127.0.0.1:0");
        let (client, _events, _task) = client("127.0.0.1:0");
        let rtt = client.ping(server_addr).await.unwrap();
        assert!(rtt < StdDuration::from_secs(5));
    }));
}

#[test]
fn rejected_calls_are_typed() {
    smol::block_on(within(10, async {
        let (client, _events, _task) = client("127.0.0.1:0");
        let mut not_a_request = Packet::new();
        not_a_request.header.code = MessageClass::Response(ResponseType::Content);
        let peer = "127.0.0.1:9".parse().unwrap();
        let result = client.request(peer, not_a_request).await;
        assert_eq!(
            result,
            Err(Error::Rejected(coap_engine::Error::NotARequest))
        );
        let result = client.set_keepalive(peer, None).await;
        assert_eq!(
            result,
            Err(Error::Rejected(coap_engine::Error::UnknownSession))
        );
    }));
}

/// The liveness contract through the adapter: once every send fails, a pending request ends
/// with a keepalive failure and the event stream reports it no later than
/// `last_heard + interval + timeout` (checked with generous slack, as an upper bound only).
#[test]
fn failing_sends_end_in_a_keepalive_failure_within_the_bound() {
    smol::block_on(within(10, async {
        let (server_addr, _server) = server("127.0.0.1:0");
        let keepalive = Keepalive {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(200),
        };
        let config = Config {
            keepalive: Some(keepalive),
            ..Config::default()
        };
        let fail = Arc::new(AtomicBool::new(false));
        let flag = fail.clone();
        let mut driver = Driver::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        driver.set_send_filter(move |_, _| {
            if flag.load(Ordering::SeqCst) {
                Err(io::ErrorKind::NetworkUnreachable.into())
            } else {
                Ok(())
            }
        });
        let (client, events, _task) = client_of(driver);
        client.request(server_addr, get("hello")).await.unwrap();

        fail.store(true, Ordering::SeqCst); // last_heard is before this instant
        let cut = StdInstant::now();
        let result = client.request(server_addr, get("hello")).await;
        assert!(
            matches!(
                result,
                Err(Error::Exchange(ExchangeError::SessionFailed(
                    FailureReason::KeepaliveTimeout { .. }
                )))
            ),
            "{result:?}"
        );
        let (mut send_failed, mut failed_at) = (false, None);
        while failed_at.is_none() {
            match events.recv().await.unwrap() {
                Event::SendFailed { kind, .. } => {
                    assert_eq!(kind, SendErrorKind::Unreachable);
                    send_failed = true;
                }
                Event::SessionFailed { peer, reason } => {
                    assert_eq!(peer, server_addr);
                    assert!(matches!(reason, FailureReason::KeepaliveTimeout { .. }));
                    failed_at = Some(cut.elapsed());
                }
                _ => {}
            }
        }
        assert!(send_failed, "the failed sends were reported");
        let bound = StdDuration::from(keepalive.bound()) + StdDuration::from_millis(1500);
        assert!(failed_at.unwrap() <= bound, "{failed_at:?} > {bound:?}");
    }));
}

#[test]
fn driver_stops_when_every_handle_is_gone() {
    smol::block_on(within(10, async {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        let client = driver.client();
        let task = driver.spawn();
        drop(client);
        task.await.unwrap();
    }));
}

#[test]
fn unserved_requests_get_4_04_and_dropped_responders_5_00() {
    smol::block_on(within(10, async {
        let (client, _events, _task) = client("127.0.0.1:0");
        // An endpoint whose incoming stream nobody took: every request gets 4.04.
        let no_server = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        let (addr, _keep) = (no_server.local_addr().unwrap(), no_server.client());
        let _no_server = no_server.spawn();
        let response = client.request(addr, get("x")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
        // A server that drops its responders unanswered: 5.00.
        let rude = Driver::bind("127.0.0.1:0".parse().unwrap(), Config::default()).unwrap();
        let (addr, incoming) = (rude.local_addr().unwrap(), rude.incoming());
        let _rude = rude.spawn();
        smol::spawn(async move { while incoming.next().await.is_some() {} }).detach();
        let response = client.request(addr, get("x")).await.unwrap();
        assert_eq!(
            response.header.code,
            MessageClass::Response(ResponseType::InternalServerError)
        );
    }));
}
