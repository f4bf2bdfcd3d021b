//! The adapter's conversions between embassy and coap-engine types.

use std::net::SocketAddr;

use coap_engine::SendErrorKind;
use coap_engine_embassy::{
    send_error_kind, to_embassy_instant, to_engine_instant, to_ip_endpoint, to_socket_addr,
};
use embassy_net::udp::SendError;

#[test]
fn send_errors_map_to_engine_kinds() {
    assert_eq!(
        send_error_kind(SendError::NoRoute),
        SendErrorKind::Unreachable
    );
    assert_eq!(
        send_error_kind(SendError::PacketTooLarge),
        SendErrorKind::TooBig
    );
    assert_eq!(
        send_error_kind(SendError::SocketNotBound),
        SendErrorKind::Other
    );
}

#[test]
fn addresses_round_trip() {
    let v4: SocketAddr = "192.0.2.7:5683".parse().unwrap();
    let endpoint = to_ip_endpoint(v4).expect("IPv4 is on by default");
    assert_eq!(endpoint.port, 5683);
    assert_eq!(to_socket_addr(endpoint), v4);
    let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
    // IPv6 needs the `proto-ipv6` feature; without it the address is refused, not mangled.
    #[cfg(feature = "proto-ipv6")]
    assert_eq!(to_ip_endpoint(v6).map(to_socket_addr), Some(v6));
    #[cfg(not(feature = "proto-ipv6"))]
    assert_eq!(to_ip_endpoint(v6), None);
}

#[test]
fn instants_convert_in_microseconds() {
    let t = embassy_time::Instant::from_micros(1_234_567);
    assert_eq!(to_engine_instant(t).as_micros(), 1_234_567);
    assert_eq!(to_embassy_instant(to_engine_instant(t)), t);
    let far = coap_engine::Instant::from_micros(u64::MAX);
    assert_eq!(to_embassy_instant(far), embassy_time::Instant::MAX);
}

#[cfg(feature = "tcp")]
#[test]
fn tcp_errors_map_to_engine_inputs() {
    use coap_engine::StreamClosed;
    use coap_engine_embassy::tcp::{connect_error_kind, stream_closed};
    use embassy_net::tcp::{ConnectError, Error};

    // A SYN answered with RST is the peer refusing; no route is the network's doing.
    assert_eq!(
        connect_error_kind(ConnectError::ConnectionReset),
        SendErrorKind::Refused
    );
    assert_eq!(
        connect_error_kind(ConnectError::TimedOut),
        SendErrorKind::TimedOut
    );
    assert_eq!(
        connect_error_kind(ConnectError::NoRoute),
        SendErrorKind::Unreachable
    );
    assert_eq!(
        connect_error_kind(ConnectError::InvalidState),
        SendErrorKind::Other
    );
    assert_eq!(stream_closed(Error::ConnectionReset), StreamClosed::Reset);
}

#[test]
fn every_exchange_error_reaches_the_application_as_itself() {
    use coap_engine::{ExchangeError, FailureReason};
    use coap_engine_embassy::RequestError;

    let all = [
        ExchangeError::Timeout,
        ExchangeError::Reset,
        ExchangeError::SendFailed(SendErrorKind::TooBig),
        ExchangeError::SessionFailed(FailureReason::NoResponse),
        ExchangeError::SessionClosed,
        ExchangeError::Cancelled,
        ExchangeError::BodyTooLarge,
        ExchangeError::UnexpectedBlock,
        ExchangeError::RepresentationChanged,
    ];
    for e in all {
        let converted = RequestError::from(e);
        assert_eq!(converted, RequestError::Exchange(e));
        assert_eq!(converted.to_string(), e.to_string());
    }
}
