use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use coap_lite::{CoapOption, Packet, RequestType};
use proptest::prelude::*;

use super::*;
use crate::config::Transport;

fn ok(uri: &str) -> CoapUri {
    parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

fn bytes(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn options(p: &Packet, option: CoapOption) -> Vec<Vec<u8>> {
    p.get_option(option)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn schemes_pick_transport_security_and_default_port() {
    let table = [
        ("coap", Transport::Udp, false, 5683),
        ("coaps", Transport::Udp, true, 5684),
        ("coap+tcp", Transport::Tcp, false, 5683),
        ("coaps+tcp", Transport::Tcp, true, 5684),
    ];
    for (name, transport, secure, port) in table {
        let scheme: Scheme = name.to_ascii_uppercase().parse().unwrap();
        assert_eq!(scheme.as_str(), name);
        assert_eq!(scheme.transport(), transport);
        assert_eq!(scheme.is_secure(), secure);
        assert_eq!(scheme.default_port(), port);
        assert_eq!(Scheme::new(transport, secure), scheme);
        let uri = ok(&alloc::format!("{}://h/", name.to_ascii_uppercase()));
        assert_eq!((uri.scheme(), uri.port()), (scheme, port));
    }
    for other in ["http", "coap+ws", "coaps+ws", "coap+udp", ""] {
        assert_eq!(other.parse::<Scheme>(), Err(UriError::UnsupportedScheme));
    }
}

/// RFC 7252 §6.3: three URIs of one resource.
#[test]
fn equivalent_uris_of_section_6_3_decompose_alike() {
    let a = ok("coap://example.com:5683/~sensors/temp.xml");
    let b = ok("coap://EXAMPLE.com/%7Esensors/temp.xml");
    let c = ok("coap://EXAMPLE.com:/%7esensors/temp.xml");
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert_eq!(a.host(), &Host::Name("example.com".into()));
    assert_eq!(a.path_segments(), bytes(&["~sensors", "temp.xml"]));
    assert_eq!(a.to_string(), "coap://example.com/~sensors/temp.xml");
    // Equivalent over UDP does not mean equivalent across schemes (§6.3).
    assert_ne!(a, ok("coaps://example.com:5683/~sensors/temp.xml"));
}

#[test]
fn hosts_are_ip_literals_ipv4_addresses_or_names() {
    let v6 = ok("coap://[2001:DB8::1]:5684/");
    assert_eq!(v6.host(), &Host::Ip("2001:db8::1".parse().unwrap()));
    assert_eq!(v6.socket_addr(), Some(addr("[2001:db8::1]:5684")));
    let v4 = ok("coap://192.0.2.1");
    assert_eq!(v4.socket_addr(), Some(addr("192.0.2.1:5683")));
    assert_eq!(
        ok("coap://[::ffff:192.0.2.1]/").host().to_string(),
        "[::ffff:192.0.2.1]"
    );
    // Not RFC 3986 IPv4addresses, so names (and sent as Uri-Host).
    for name in ["127.1", "192.0.2.01", "1.2.3.4.5", "256.0.0.1"] {
        let uri = ok(&alloc::format!("coap://{name}/"));
        assert_eq!(uri.host(), &Host::Name(name.into()), "{name}");
        assert_eq!(uri.socket_addr(), None);
    }
    // Lower-cased, then decoded: an encoded capital stays one (§6.4 step 5).
    assert_eq!(
        ok("coap://Ex%41mple/").host(),
        &Host::Name("exAmple".into())
    );
    assert_eq!(ok("coap://Ex%41mple/").to_string(), "coap://ex%41mple/");
    assert_eq!(
        ok("coap://%C3%A9t%C3%A9/").host(),
        &Host::Name("été".into())
    );
    assert_eq!(ok("coap://a%2Fb/").host(), &Host::Name("a/b".into()));
    assert_eq!(parse("coap://%FF/"), Err(UriError::HostNotUtf8));
    // A name that decodes to the text of an IPv4 address is still a name.
    let odd = ok("coap://1.2.3.%34/");
    assert_eq!(odd.host(), &Host::Name("1.2.3.4".into()));
    assert_eq!(odd.to_string(), "coap://%31.2.3.4/");
    assert_eq!(ok(&odd.to_string()), odd);
}

#[test]
fn ports_default_per_scheme_and_are_checked() {
    assert_eq!(ok("coap://h:1/").port(), 1);
    assert_eq!(ok("coap://h:65535/").port(), 65535);
    assert_eq!(ok("coap://h:00080/").port(), 80);
    assert_eq!(ok("coaps://h:/").port(), 5684);
    assert_eq!(ok("coaps://[::1]:7/").port(), 7);
    for bad in [
        "coap://h:0/",
        "coap://h:65536/",
        "coap://h:99999999999999999999/",
        "coap://h:x/",
        "coap://h:-1/",
        "coap://h:1:2/",
        "coap://[::1]:/x:",
    ] {
        let got = parse(bad);
        if bad.ends_with("x:") {
            // `:` is a pchar: only the authority holds the port.
            assert_eq!(got.map(|u| u.port()), Ok(5683));
        } else {
            assert_eq!(got, Err(UriError::InvalidPort), "{bad}");
        }
    }
    assert_eq!(
        parse("coap://[::1]x/"),
        Err(UriError::InvalidCharacter { at: 12 })
    );
}

#[test]
fn paths_give_one_uri_path_per_segment() {
    assert!(ok("coap://h").path_segments().is_empty());
    assert!(ok("coap://h/").path_segments().is_empty());
    assert!(ok("coap://h?q").path_segments().is_empty());
    assert_eq!(ok("coap://h/a/").path_segments(), bytes(&["a", ""]));
    assert_eq!(ok("coap://h//").path_segments(), bytes(&["", ""]));
    assert_eq!(ok("coap://h/a//b").path_segments(), bytes(&["a", "", "b"]));
    assert_eq!(ok("coap://h/a%20b/c").path_segments(), bytes(&["a b", "c"]));
    assert_eq!(ok("coap://h/a%2Fb").path_segments(), bytes(&["a/b"]));
    assert_eq!(
        ok("coap://h/a:b@c;d=e&f").path_segments(),
        bytes(&["a:b@c;d=e&f"])
    );
    assert_eq!(ok("coap://h/%FF").path_segments(), [vec![0xff]]);
}

/// §6.4 step 2: reference resolution removes dot segments (RFC 3986 §5.2.4), literal ones
/// only.
#[test]
fn dot_segments_are_resolved() {
    let cases: [(&str, &[&str]); 9] = [
        ("/a/./b/../c", &["a", "c"]),
        ("/a/b/..", &["a", ""]),
        ("/a/b/.", &["a", "b", ""]),
        ("/..", &[]),
        ("/../../a", &["a"]),
        ("/a/..", &[]),
        ("/./", &[]),
        ("/.//a", &["", "a"]),
        ("/a/%2E%2E/b", &["a", "..", "b"]),
    ];
    for (path, want) in cases {
        let uri = ok(&alloc::format!("coap://h{path}"));
        assert_eq!(uri.path_segments(), bytes(want), "{path}");
    }
}

#[test]
fn queries_give_one_uri_query_per_argument() {
    assert!(ok("coap://h/").query_arguments().is_empty());
    assert_eq!(ok("coap://h/?").query_arguments(), bytes(&[""]));
    assert_eq!(
        ok("coap://h/?a&&b").query_arguments(),
        bytes(&["a", "", "b"])
    );
    assert_eq!(
        ok("coap://h/?x=1&y%3D2").query_arguments(),
        bytes(&["x=1", "y=2"])
    );
    assert_eq!(ok("coap://h/?a/b?c").query_arguments(), bytes(&["a/b?c"]));
    assert_eq!(ok("coap://h/?a%26b").query_arguments(), bytes(&["a&b"]));
}

/// The cases of the CLI's former parser.
#[test]
fn uris_parse_like_rfc7252() {
    let u = ok("coap://[::1]:5684/a%20b/c?x=1&y%3D2");
    assert_eq!(
        (u.host().to_string(), u.port()),
        ("[::1]".to_string(), 5684)
    );
    assert_eq!(u.path_segments(), bytes(&["a b", "c"]));
    assert_eq!(u.query_arguments(), bytes(&["x=1", "y=2"]));
    let u = ok("coap://127.0.0.1");
    assert_eq!(
        (u.port(), u.path_segments().len(), u.query_arguments().len()),
        (5683, 0, 0)
    );
    let u = ok("COAP://h:1/?q");
    assert_eq!((u.host(), u.port()), (&Host::Name("h".into()), 1));
    assert_eq!(u.query_arguments().len(), 1);
    let u = ok("coaps://h/x");
    assert_eq!((u.scheme().is_secure(), u.port()), (true, 5684));
}

#[test]
fn errors_say_what_is_wrong_in_one_line() {
    let cases = [
        ("", UriError::NotAbsolute),
        ("x", UriError::NotAbsolute),
        ("/a/b", UriError::NotAbsolute),
        ("//h/a", UriError::NotAbsolute),
        ("1coap://h/", UriError::NotAbsolute),
        ("a/b:c", UriError::NotAbsolute),
        ("http://127.0.0.1/", UriError::UnsupportedScheme),
        ("coap+ws://h/", UriError::UnsupportedScheme),
        ("coap://h/#f", UriError::Fragment),
        ("coap://h#", UriError::Fragment),
        ("coap:", UriError::MissingHost),
        ("coap:/h/a", UriError::MissingHost),
        ("coap://", UriError::MissingHost),
        ("coap:///a", UriError::MissingHost),
        ("coap://:5683/", UriError::MissingHost),
        ("coap://::1/", UriError::MissingHost),
        ("coap://u@h/", UriError::UserInfo),
        ("coap://u:p@h/", UriError::UserInfo),
        ("coap://h/a b", UriError::InvalidCharacter { at: 10 }),
        ("coap://h/é", UriError::InvalidCharacter { at: 9 }),
        ("coap://h/a[", UriError::InvalidCharacter { at: 10 }),
        ("coap://h/?a b", UriError::InvalidCharacter { at: 11 }),
        ("coap://h/#a b", UriError::InvalidCharacter { at: 11 }),
        ("coap://h_ h/", UriError::InvalidCharacter { at: 9 }),
        ("coap://h/%zz", UriError::InvalidPercentEncoding { at: 9 }),
        ("coap://h/%4", UriError::InvalidPercentEncoding { at: 9 }),
        ("coap://h/%", UriError::InvalidPercentEncoding { at: 9 }),
        ("coap://h/?%4g", UriError::InvalidPercentEncoding { at: 10 }),
        ("coap://h%/", UriError::InvalidPercentEncoding { at: 8 }),
        ("coap://[::1/x", UriError::InvalidIpLiteral),
        ("coap://[]/", UriError::InvalidIpLiteral),
        ("coap://[1.2.3.4]/", UriError::InvalidIpLiteral),
        ("coap://[::g]/", UriError::InvalidIpLiteral),
        ("coap://[v1.x]/", UriError::UnsupportedIpLiteral),
        ("coap://[fe80::1%eth0]/", UriError::InvalidIpLiteral),
        ("coap://[fe80::1%25]/", UriError::InvalidIpLiteral),
        ("coap://[fe80::1%25%FF]/", UriError::InvalidIpLiteral),
        (
            "coap://[fe80::1%25a:b]/",
            UriError::InvalidCharacter { at: 19 },
        ),
        ("coap://host:99999/", UriError::InvalidPort),
    ];
    for (uri, want) in cases {
        let got = parse(uri);
        assert_eq!(got, Err(want), "{uri}");
        let line = want.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }
}

/// RFC 6874: a zone names an interface of this host; it is kept, never sent.
#[test]
fn ipv6_zones_are_kept_apart() {
    let named = ok("coap://[fe80::1%25eth0]:61616/x");
    assert_eq!(named.host(), &Host::Ip("fe80::1".parse().unwrap()));
    assert_eq!(named.zone(), Some("eth0"));
    assert_eq!(named.socket_addr(), None);
    assert_eq!(named.to_string(), "coap://[fe80::1%25eth0]:61616/x");
    let numbered = ok("coap://[fe80::1%253]/");
    assert_eq!(numbered.socket_addr(), Some(addr("[fe80::1%3]:5683")));
    assert_eq!(ok("coap://[fe80::1%25en%2D1]/").zone(), Some("en-1"));
    let request = named.request(RequestType::Get);
    assert!(options(&request, CoapOption::UriHost).is_empty());
    // The scope of a destination comes back as its zone.
    let uri =
        CoapUri::from_options(Scheme::Coap, addr("[fe80::1%7]:5683"), &Packet::new()).unwrap();
    assert_eq!(uri.to_string(), "coap://[fe80::1%257]/");
    assert_eq!(uri.socket_addr(), Some(addr("[fe80::1%7]:5683")));
}

#[test]
fn options_follow_section_6_4_steps_5_to_9() {
    let uri = ok("coap://Example.ORG:61616/a%20b/./c?x&y=%31");
    let request = uri.request(RequestType::Put);
    assert_eq!(
        options(&request, CoapOption::UriHost),
        bytes(&["example.org"])
    );
    assert!(options(&request, CoapOption::UriPort).is_empty());
    assert_eq!(options(&request, CoapOption::UriPath), bytes(&["a b", "c"]));
    assert_eq!(
        options(&request, CoapOption::UriQuery),
        bytes(&["x", "y=1"])
    );
    assert_eq!(
        request.header.code,
        coap_lite::MessageClass::Request(RequestType::Put)
    );

    // An IP host is the destination: no Uri-Host.
    let request = ok("coap://[::1]/").request(RequestType::Get);
    assert!(options(&request, CoapOption::UriHost).is_empty());
    assert!(options(&request, CoapOption::UriPath).is_empty());

    // Other options stay; the URI's replace the request's own Uri-* options.
    let mut request = Packet::new();
    request.add_option(CoapOption::UriPath, b"old".to_vec());
    request.add_option(CoapOption::UriHost, b"old".to_vec());
    request.add_option(CoapOption::ContentFormat, vec![50]);
    ok("coap://10.0.0.1/new").apply_to(&mut request);
    assert_eq!(options(&request, CoapOption::UriPath), bytes(&["new"]));
    assert!(options(&request, CoapOption::UriHost).is_empty());
    assert_eq!(options(&request, CoapOption::ContentFormat), [vec![50]]);
}

#[test]
fn a_destination_other_than_the_uri_gets_uri_host_and_uri_port() {
    let uri = ok("coap://[2001:db8::1]:5683/");
    let mut request = Packet::new();
    uri.apply_to_destination(&mut request, addr("[2001:db8::1]:5683"));
    assert!(options(&request, CoapOption::UriHost).is_empty());
    assert!(options(&request, CoapOption::UriPort).is_empty());
    uri.apply_to_destination(&mut request, addr("[2001:db8::2]:80"));
    assert_eq!(
        options(&request, CoapOption::UriHost),
        bytes(&["[2001:db8::1]"])
    );
    assert_eq!(options(&request, CoapOption::UriPort), [vec![0x16, 0x33]]);
    // A small port takes one byte (uint, RFC 7252 §3.2).
    ok("coap://h:7/").apply_to_destination(&mut request, addr("192.0.2.1:5683"));
    assert_eq!(options(&request, CoapOption::UriPort), [vec![7]]);
    assert_eq!(options(&request, CoapOption::UriHost), bytes(&["h"]));
    // An IPv4 destination seen through a dual-stack socket is the same address.
    ok("coap://192.0.2.1/").apply_to_destination(&mut request, addr("[::ffff:192.0.2.1]:5683"));
    assert!(options(&request, CoapOption::UriHost).is_empty());
}

#[test]
fn options_compose_into_uris() {
    let destination = addr("[2001:db8::1]:5683");
    assert_eq!(
        compose(Scheme::Coap, destination, &Packet::new()).unwrap(),
        "coap://[2001:db8::1]/"
    );
    assert_eq!(
        compose(Scheme::Coaps, destination, &Packet::new()).unwrap(),
        "coaps://[2001:db8::1]:5683/"
    );
    assert_eq!(
        compose(Scheme::CoapTcp, addr("192.0.2.1:5683"), &Packet::new()).unwrap(),
        "coap+tcp://192.0.2.1/"
    );

    let mut p = Packet::new();
    p.add_option(CoapOption::UriHost, "Ex Ample.été".as_bytes().to_vec());
    p.add_option(CoapOption::UriPort, vec![0x16, 0x34]);
    for segment in ["a/b", "c&d:e@f", ".", "..", "...", "%", "x y?"] {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    for argument in ["k=v/w?", "a&b", "#", ""] {
        p.add_option(CoapOption::UriQuery, argument.as_bytes().to_vec());
    }
    let uri = compose(Scheme::Coaps, destination, &p).unwrap();
    assert_eq!(
        uri,
        "coaps://ex%20ample.%C3%A9t%C3%A9/a%2Fb/c&d:e@f/%2E/%2E%2E/.../%25/x%20y%3F\
         ?k=v/w?&a%26b&%23&"
    );
    let back = ok(&uri);
    assert_eq!(back.port(), 5684);
    assert_eq!(back.host(), &Host::Name("ex ample.été".into()));
    assert_eq!(
        back.path_segments(),
        bytes(&["a/b", "c&d:e@f", ".", "..", "...", "%", "x y?"])
    );
    assert_eq!(back.query_arguments(), bytes(&["k=v/w?", "a&b", "#", ""]));

    // An IP address in Uri-Host is a host like the destination's.
    let mut p = Packet::new();
    p.add_option(CoapOption::UriHost, b"[2001:DB8::2]".to_vec());
    p.add_option(CoapOption::UriPath, Vec::new());
    assert_eq!(
        compose(Scheme::Coap, destination, &p).unwrap(),
        "coap://[2001:db8::2]/"
    );
    p.set_option(CoapOption::UriHost, [b"192.0.2.9".to_vec()].into());
    assert_eq!(
        compose(Scheme::Coap, destination, &p).unwrap(),
        "coap://192.0.2.9/"
    );
}

#[test]
fn options_that_make_no_uri_are_errors() {
    let d = addr("192.0.2.1:5683");
    let with = |option, value: &[u8]| {
        let mut p = Packet::new();
        p.add_option(option, value.to_vec());
        CoapUri::from_options(Scheme::Coap, d, &p)
    };
    assert_eq!(
        with(CoapOption::UriHost, b""),
        Err(UriError::InvalidUriHost)
    );
    assert_eq!(
        with(CoapOption::UriHost, &[0xff]),
        Err(UriError::InvalidUriHost)
    );
    assert_eq!(
        with(CoapOption::UriHost, b"[::1"),
        Err(UriError::InvalidUriHost)
    );
    assert_eq!(
        with(CoapOption::UriHost, b"[fe80::1%25x]"),
        Err(UriError::InvalidUriHost)
    );
    assert_eq!(
        with(CoapOption::UriPort, &[0]),
        Err(UriError::InvalidUriPort)
    );
    assert_eq!(
        with(CoapOption::UriPort, &[]),
        Err(UriError::InvalidUriPort)
    );
    assert_eq!(
        with(CoapOption::UriPort, &[1, 2, 3]),
        Err(UriError::InvalidUriPort)
    );
    assert_eq!(
        CoapUri::from_options(Scheme::Coap, addr("192.0.2.1:0"), &Packet::new()),
        Err(UriError::InvalidPort)
    );
}

fn host_name() -> impl Strategy<Value = String> {
    // Names the way §6.4 step 5 leaves them: lower-case (a capital is only ever written
    // percent-encoded, and case is not significant in a host).
    "[a-z0-9.~_!$&'()*+,;= %/:@\\[\\]é-]{1,20}"
        .prop_filter("not an IPv4address", |n| {
            n.parse::<core::net::Ipv4Addr>().is_err()
        })
        .prop_filter("not an IP-literal", |n| !n.starts_with('['))
}

fn destination() -> impl Strategy<Value = SocketAddr> {
    (any::<bool>(), any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(v4, b, port)| {
        let ip = if v4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(b)
        };
        SocketAddr::new(ip, port)
    })
}

/// URI-looking text, so that the parser's deeper paths see the malformed inputs too.
fn uri_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["coap://", "COAPS://", "coap+tcp://", "coaps+TCP://", "coap:", "x://", ""][..]),
        prop_oneof![
            "[a-zA-Z0-9:\\[\\]%@/?#&=.~_!$'()*+,;é -]{0,40}",
            "([a-zA-Z0-9.]|%[2-7][0-9a-fA-F]){0,8}(:[0-9]{0,6})?(/([a-zA-Z.0-9]|%[0-9A-F]{2}){0,4}){0,4}(\\?([a-z=&/?0-9]|%[0-9A-F]{2}){0,8})?",
            "\\[(::1|fe80::[0-9a-f]{1,4}|::ffff:1.2.3.4|[0-9a-fA-F:.]{0,16})(%25([a-z0-9]|%[0-9a-f]{2}){0,3})?\\](:[0-9]{0,6})?(/[a-z.0-9]{0,3}){0,3}",
        ],
    )
        .prop_map(|(scheme, rest)| alloc::format!("{scheme}{rest}"))
}

fn check_canonical(uri: &CoapUri) -> Result<(), TestCaseError> {
    let text = uri.to_string();
    let again = parse(&text).map_err(|e| TestCaseError::fail(alloc::format!("{text}: {e}")))?;
    prop_assert_eq!(&again, uri, "{}", text);
    prop_assert_eq!(again.to_string(), text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Options → URI (§6.5) → options (§6.4) gives back the options, sent to the same
    /// destination.
    #[test]
    fn options_round_trip_through_uris(
        scheme in prop::sample::select(Scheme::ALL.to_vec()),
        destination in destination(),
        host in prop::option::of(host_name()),
        port in prop::option::of(1..=u16::MAX),
        path in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..5),
        query in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..4),
    ) {
        prop_assume!(path != [Vec::<u8>::new()]);
        let port = port.filter(|p| *p != destination.port());
        let mut request = Packet::new();
        if let Some(host) = &host {
            request.add_option(CoapOption::UriHost, host.clone().into_bytes());
        }
        if let Some(port) = port {
            request.add_option(CoapOption::UriPort, port.to_be_bytes().to_vec());
        }
        for segment in &path {
            request.add_option(CoapOption::UriPath, segment.clone());
        }
        for argument in &query {
            request.add_option(CoapOption::UriQuery, argument.clone());
        }
        let text = compose(scheme, destination, &request).unwrap();
        let uri = parse(&text).map_err(|e| TestCaseError::fail(alloc::format!("{text}: {e}")))?;
        prop_assert_eq!(uri.scheme(), scheme);
        let mut again = Packet::new();
        uri.apply_to_destination(&mut again, destination);
        prop_assert_eq!(options(&again, CoapOption::UriHost), host.map(String::into_bytes).into_iter().collect::<Vec<_>>(), "{}", text);
        let port_bytes = |p: u16| p.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect::<Vec<u8>>();
        prop_assert_eq!(options(&again, CoapOption::UriPort), port.map(port_bytes).into_iter().collect::<Vec<_>>(), "{}", text);
        prop_assert_eq!(options(&again, CoapOption::UriPath), path, "{}", text);
        prop_assert_eq!(options(&again, CoapOption::UriQuery), query, "{}", text);
        check_canonical(&uri)?;
    }

    /// No string makes the parser panic; whatever it accepts, its composition parses back
    /// to the same URI.
    #[test]
    fn any_string_parses_or_fails_cleanly(s in any::<String>()) {
        if let Ok(uri) = parse(&s) {
            check_canonical(&uri)?;
        }
    }

    #[test]
    fn uri_like_strings_parse_or_fail_cleanly(s in uri_like()) {
        match parse(&s) {
            Ok(uri) => check_canonical(&uri)?,
            Err(e) => prop_assert!(!e.to_string().contains('\n')),
        }
    }

    /// Any options: a URI or an error, never a panic.
    #[test]
    fn any_options_compose_or_fail_cleanly(
        destination in destination(),
        host in prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        port in prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
    ) {
        let mut request = Packet::new();
        if let Some(host) = host {
            request.add_option(CoapOption::UriHost, host);
        }
        if let Some(port) = port {
            request.add_option(CoapOption::UriPort, port);
        }
        if let Ok(uri) = CoapUri::from_options(Scheme::Coap, destination, &request) {
            check_canonical(&uri)?;
        }
    }
}
