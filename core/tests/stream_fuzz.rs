//! The stream fuzz harnesses (`harness/stream_framing.rs`, `harness/stream_inputs.rs`, also
//! the cargo-fuzz targets `stream_framing` and `stream_inputs`) under proptest in every
//! `cargo test`, so CI checks the same properties the fuzzer does. Longer runs: see
//! `core/fuzz/README.md`.

#[path = "harness/stream_framing.rs"]
mod stream_framing;
#[cfg(all(
    feature = "tcp",
    feature = "client",
    feature = "server",
    feature = "observe",
    feature = "blockwise"
))]
#[path = "harness/stream_inputs.rs"]
mod stream_inputs;
#[cfg(feature = "tls")]
#[path = "harness/stream_tls.rs"]
mod stream_tls;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Arbitrary bytes, and framed messages, deframed in arbitrary chunks: every result
    /// matches the reference reading of RFC 8323 §3.2, the buffer stays bounded, and messages
    /// come back unchanged.
    #[test]
    fn deframing_matches_the_rfc_on_arbitrary_streams(data in prop::collection::vec(any::<u8>(), 0..600)) {
        stream_framing::run(&data);
    }
}

#[cfg(feature = "tls")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A TLS client and server whose connection is opened, broken and half-opened, whose bytes
    /// are delivered in any pieces or damaged, with strangers replaying the client's bytes:
    /// no panic, every request ends once, the server hears only the client's own requests.
    #[test]
    fn tls_connections_survive_arbitrary_damage(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        stream_tls::run(&data);
    }
}

/// Pseudo-random inputs of growing length (xorshift64*), for the reachability checks.
fn inputs(count: usize, start: usize, step: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count).map(move |i| {
        (0..start + i * step)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    })
}

/// The framing harness must get past the first byte: over a fixed set of pseudo-random
/// inputs it deframes frames of every length form, meets both errors and completes round
/// trips.
#[test]
fn framing_harness_reaches_every_outcome() {
    let mut r = stream_framing::Reached::default();
    for data in inputs(2_000, 8, 1) {
        r.add(&stream_framing::run(&data));
    }
    assert!(r.frames.iter().all(|&n| n > 0), "{r:?}");
    assert!(r.token_length_errors > 0, "{r:?}");
    assert!(r.too_long_errors > 0, "{r:?}");
    assert!(r.round_trips > 100, "{r:?}");
}

/// The TLS harness must get through handshakes to exchanges, and fail some: over a fixed set
/// of pseudo-random inputs each outcome occurs.
#[cfg(feature = "tls")]
#[test]
fn tls_harness_reaches_every_outcome() {
    let mut r = stream_tls::Reached::default();
    for data in inputs(200, 100, 10) {
        r.add(&stream_tls::run(&data));
    }
    for (what, n) in [
        ("sessions", r.sessions),
        ("handshake failures", r.handshake_failures),
        ("requests seen by the server", r.requests_seen),
        ("responses", r.responses),
        ("pongs", r.pongs),
        ("failures", r.failures),
    ] {
        assert!(n > 0, "the TLS harness never produced any {what}: {r:?}");
    }
}

/// The TCP input harness drives the whole engine (every optional part): its property, its
/// reachability check and the regressions it found, in the builds that have all of it.
#[cfg(all(
    feature = "tcp",
    feature = "client",
    feature = "server",
    feature = "observe",
    feature = "blockwise"
))]
mod input_sequences {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// A TCP endpoint driven by arbitrary connection events, peer bytes, time, write results
        /// and application calls: no panic, whole well-formed frames, connections in step with
        /// the adapter, one terminal event per request, limits and the unwritten-bytes cap held,
        /// no busy loop.
        #[test]
        fn tcp_endpoint_survives_arbitrary_input_sequences(data in prop::collection::vec(any::<u8>(), 0..1500)) {
            stream_inputs::run(&data);
        }
    }

    /// The input harness must reach deep engine states from random input, not stop at the first
    /// frame: over a fixed set of pseudo-random inputs every kind of outcome occurs.
    #[test]
    fn input_harness_reaches_every_outcome() {
        let mut c = stream_inputs::Coverage::default();
        for data in inputs(300, 200, 7) {
            c.add(&stream_inputs::run(&data));
        }
        assert!(c.steps > 10_000, "{c:?}");
        for (what, n) in [
            ("transmits", c.transmits),
            ("connects", c.connects),
            ("closes", c.closes),
            ("accepted connections", c.accepted),
            ("incoming requests", c.requests_received),
            ("responses", c.responses),
            ("request failures", c.request_failures),
            ("notifications", c.notifications),
            ("pongs", c.pongs),
            ("ping failures", c.ping_failures),
            ("established sessions", c.sessions_established),
            ("failed sessions", c.sessions_failed),
            ("closed sessions", c.sessions_closed),
            ("releases", c.released),
            ("aborts sent", c.aborts_sent),
            ("block-wise frames", c.block_frames),
            ("BERT frames", c.bert_frames),
            ("accepted responds", c.responds_ok),
            ("observers added", c.observers_added),
            ("refusals for a write backlog", c.backlog_refusals),
        ] {
            assert!(n > 0, "the harness never produced any {what}: {c:?}");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Core defects the harness found, fixed since: each test runs the minimized input that
    // showed one (or, for the last, the calls that did).

    /// `max_queued_requests` 0, a server session closed at once (idle timeout 0), then a request
    /// to the same peer: refused with `QueueFull`, the engine discarded the session it made for
    /// it (`after_local_call`), but the `StreamCommand::Connect` that `create_local_session`
    /// queued stayed: the adapter opened a connection the engine had forgotten, whose
    /// `handle_connected` it ignored and which nobody ever closed.
    #[test]
    fn regression_a_refused_request_asks_for_no_connection() {
        stream_inputs::run(&REFUSED_REQUEST_CONNECTS);
    }

    #[rustfmt::skip]
    const REFUSED_REQUEST_CONNECTS: [u8; 47] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 21, 0, 0, 1, 0, 0, 0, 0, 0, 0, 21,
    ];

    /// `max_queued_transmits` 1: a ping made before the connection opens waits in `early`; when
    /// the adapter reported the connection open, the CSM and the Ping were written in one input,
    /// and `Outputs::send` dropped the oldest (the CSM) "as if lost on the wire". A stream loses
    /// nothing on the wire: the peer got a Ping as the first message and would abort the
    /// connection (RFC 8323 §5.3). Any input that wrote more frames than the queue held (a
    /// connection opening with queued requests, a read holding many Pings) cut frames out of the
    /// stream.
    #[test]
    fn regression_a_full_transmit_queue_does_not_drop_the_csm() {
        stream_inputs::run(&CSM_DROPPED);
    }

    #[rustfmt::skip]
    const CSM_DROPPED: [u8; 98] = [
        0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 123, 0, 0, 7, 0, 0, 123, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 4,
    ];

    /// `max_confirmables` 1 and three application pings to one peer: all three were accepted.
    /// `Session::ping` checked `other_confirmables()`, which counts the datagram layer's
    /// Confirmable messages; a stream session has none, so on a stream `max_confirmables` never
    /// capped pings (as `Limits::max_confirmables` and `Endpoint::ping` document), and each
    /// added a `Ping` in flight and 6 unwritten bytes whatever the write backlog.
    #[test]
    fn regression_pings_on_a_stream_are_capped_by_max_confirmables() {
        stream_inputs::run(&UNCAPPED_PINGS);
    }

    #[rustfmt::skip]
    const UNCAPPED_PINGS: [u8; 49] = [
        13, 0, 0, 0, 0, 0, 0, 0, 105, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 56, 0, 59, 0, 0, 157, 0, 0, 0, 0, 0, 0, 0, 91, 0, 0,
        27,
    ];

    /// `max_unwritten_bytes` 64: two requests (1012 and 180 bytes) to a peer whose connection is
    /// not open yet were both accepted (nothing is unwritten), and both were written when it
    /// opened: 1221 bytes, past the limit by more than one message, which the mio adapter's
    /// `StreamDriver::unwritten_bytes` documents as the most the engine lets through. The queue
    /// was checked when a request entered it, not when it left (`Session::pump`).
    #[test]
    fn regression_queued_requests_wait_for_the_write_backlog() {
        stream_inputs::run(&QUEUED_PAST_BACKLOG);
    }

    #[rustfmt::skip]
    const QUEUED_PAST_BACKLOG: [u8; 68] = [
        0, 121, 0, 82, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 149, 4, 0, 1, 1, 80, 0, 76, 253, 27, 0, 200, 0, 0, 0, 0, 0, 0, 0,
        0, 62, 0, 0, 85, 53, 0, 1, 57, 11, 0, 108, 45, 1, 0, 0, 0, 0, 34, 4,
    ];

    /// An accepted connection the adapter then reports open (`handle_connected`) again and
    /// again: each report wrote one more CSM, whatever the write backlog, until the unwritten
    /// bytes passed `max_unwritten_bytes` plus one message.
    #[test]
    fn regression_a_connection_reported_open_again_writes_no_more_csms() {
        stream_inputs::run(&CONNECTED_AGAIN);
    }

    #[rustfmt::skip]
    const CONNECTED_AGAIN: [u8; 82] = [
        126, 160, 0, 0, 0, 0, 0, 0, 4, 181, 0, 68, 0, 0, 4, 181,
        181, 181, 0, 4, 181, 181, 181, 181, 181, 181, 181, 162, 162, 162, 0, 162,
        162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162,
        162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162,
        162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162, 162,
        162, 162,
    ];

    /// An observation over a connection whose writes the adapter stops reporting: each time its
    /// Max-Age lapsed, the engine re-registered (the whole registration again) whatever the
    /// write backlog, until the unwritten bytes passed `max_unwritten_bytes` plus one message.
    #[test]
    fn regression_a_reregistration_waits_for_the_write_backlog() {
        stream_inputs::run(&REREGISTERED_PAST_BACKLOG);
    }

    #[rustfmt::skip]
    const REREGISTERED_PAST_BACKLOG: [u8; 73] = [
        126, 221, 255, 255, 221, 0, 255, 255, 255, 255, 255, 255, 7, 8, 174, 35,
        8, 8, 128, 68, 6, 212, 114, 123, 0, 0, 0, 0, 0, 0, 0, 149,
        149, 149, 149, 149, 149, 0, 0, 126, 0, 0, 106, 106, 106, 106, 106, 155,
        240, 255, 155, 240, 255, 106, 106, 106, 106, 240, 240, 1, 0, 0, 0, 240,
        255, 155, 240, 255, 240, 255, 155, 240, 255,
    ];

    /// Pings made before the connection opened that timed out, one after another, while it did
    /// not: each left its frame to be written, and when the connection opened they all were,
    /// past `max_unwritten_bytes` plus one message.
    #[test]
    fn regression_pings_that_ended_before_the_connection_opened_are_not_written() {
        stream_inputs::run(&EARLY_PINGS_AFTER_THEIR_END);
    }

    #[rustfmt::skip]
    const EARLY_PINGS_AFTER_THEIR_END: [u8; 98] = [
        0, 0, 0, 0, 246, 255, 95, 96, 1, 255, 255, 255, 255, 0, 0, 30,
        52, 0, 9, 0, 179, 179, 221, 27, 27, 52, 0, 0, 1, 0, 59, 35,
        59, 59, 59, 59, 59, 181, 181, 177, 255, 0, 27, 52, 0, 59, 35, 59,
        59, 181, 181, 177, 255, 27, 59, 35, 59, 59, 59, 59, 59, 181, 181, 177,
        255, 93, 27, 52, 0, 59, 35, 59, 59, 181, 181, 177, 255, 93, 59, 35,
        59, 59, 181, 181, 177, 30, 0, 59, 35, 59, 59, 59, 59, 59, 181, 73,
        4, 59,
    ];
}

/// Found by the harness before its input decoding settled (so written out by hand): an
/// observation's deregistration is a request, but `Endpoint::deregister` sent it whatever
/// the connection's write backlog, where `request` and `observe` are refused with
/// `QueueFull`; it carries the registration's whole payload, so each call could take the
/// connection a whole message further past `max_unwritten_bytes`.
#[cfg(all(feature = "tcp", feature = "client", feature = "observe"))]
#[test]
fn regression_deregister_is_refused_while_the_connection_is_backlogged() {
    use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    use coap_engine::{Config, Endpoint, Error, Instant, Limits, StreamCommand, Transport};

    let config = Config {
        transport: Transport::Tcp,
        limits: Limits {
            max_unwritten_bytes: 64,
            ..Limits::default()
        },
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, 1).unwrap();
    let peer = "192.0.2.1:5683".parse().unwrap();
    let now = Instant::ZERO;
    let mut fetch = Packet::new();
    fetch.header.code = MessageClass::Request(RequestType::Fetch);
    fetch.add_option(CoapOption::UriPath, b"obs".to_vec());
    fetch.payload = vec![7; 200];
    let id = ep.observe(now, peer, &fetch).unwrap();
    assert_eq!(ep.poll_stream_command(), Some(StreamCommand::Connect(peer)));
    ep.handle_connected(now, peer);
    // The adapter writes the CSM, which lets the registration go (it waits while the CSM
    // is unwritten), then takes the registration and never reports it written.
    let csm = ep.poll_transmit().expect("the CSM");
    assert!(
        ep.poll_transmit().is_none(),
        "the registration waits for the CSM"
    );
    ep.handle_send_result(now, csm.id, Ok(()));
    let registration: usize = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| t.payload.len())
        .sum();
    assert!(
        registration > 200,
        "the registration is written: {registration} bytes"
    );
    assert_eq!(
        ep.request(now, peer, &fetch),
        Err(Error::QueueFull),
        "the backlog is in force"
    );
    let deregistered = ep.deregister(now, id);
    let written: usize = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| t.payload.len())
        .sum();
    assert_eq!(
        (deregistered, written),
        (Err(Error::QueueFull), 0),
        "a deregistration went out past the write backlog"
    );
}
