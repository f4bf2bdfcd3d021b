//! CORE_18–23: POST answered with Location-Path / Location-Query, Accept, ETag validation,
//! If-Match, If-None-Match. The same steps run in both directions with the same flags (both
//! clients take `-O num,value`, `-A`, `-t`); every step is one checked exchange on the wire.
//!
//! libcoap 4.3.1's example server ignores Accept, If-Match and If-None-Match and tags a
//! representation only while it sends it block-wise, so the `ours → libcoap` rows of
//! CORE_20–23 record what it does (result "recorded"); the `libcoap → ours` rows judge our
//! server against RFC 7252.

use coap_engine::coap_lite::{CoapOption, Packet, RequestType};
use coap_engine_conformance::{Relay, Run, Server};

use crate::{code, ctx, libcoap_client, our_client, single_exchange, Case, Dir};

/// One request/response, checked like every CON exchange (piggybacked, MID and token).
pub struct Exchange {
    pub req: Packet,
    pub resp: Packet,
    pub run: Run,
    /// Client output and the wire, for failure messages.
    pub ctx: String,
}

impl Exchange {
    pub fn code(&self) -> String {
        code(&self.resp)
    }

    #[track_caller]
    pub fn expect(&self, want: &str) -> &Self {
        assert_eq!(self.code(), want, "response code\n{}", self.ctx);
        self
    }

    pub fn option(&self, o: CoapOption) -> Vec<Vec<u8>> {
        values(&self.resp, o)
    }

    pub fn payload(&self) -> String {
        String::from_utf8_lossy(&self.resp.payload).into_owned()
    }
}

pub fn values(p: &Packet, o: CoapOption) -> Vec<Vec<u8>> {
    p.get_option(o)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

/// `0x0a1b` for `-O num,0x...` (both clients read hex after 0x).
pub fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// The client and server of a direction, with a relay between them.
pub struct Pair {
    pub ours_client: bool,
    pub relay: Relay,
    _server: Server,
}

impl Pair {
    /// Both servers with `-d 10` (dynamic resources).
    pub fn new(dir: Dir) -> Pair {
        let ours_client = crate::ours_client(dir);
        let server = crate::server_for(ours_client, &["-d", "10"]);
        let relay = Relay::new(server.addr());
        Pair {
            ours_client,
            relay,
            _server: server,
        }
    }

    pub fn uri(&self, path: &str) -> String {
        self.relay.uri(path)
    }

    /// Runs the client with `args` and the URI of `path`, expecting one CON exchange of
    /// `method`. Our client's exit status must follow the response class (0 for 2.xx, 1
    /// for 4.xx/5.xx); libcoap's is its own business, but it must have ended by itself.
    #[track_caller]
    pub fn exchange(&self, method: RequestType, args: &[&str], path: &str) -> Exchange {
        self.relay.clear();
        let uri = self.uri(path);
        let mut a = args.to_vec();
        a.push(&uri);
        let run = if self.ours_client {
            our_client(&a)
        } else {
            libcoap_client(&a)
        };
        let c = ctx(&self.relay, &run);
        assert!(run.status.is_some(), "the client hung\n{c}");
        let (req, resp) = single_exchange(&self.relay, &run, method, true);
        if self.ours_client {
            let want = if code(&resp).starts_with('2') { 0 } else { 1 };
            assert_eq!(run.code(), Some(want), "exit status\n{c}");
        }
        Exchange {
            req,
            resp,
            run,
            ctx: c,
        }
    }

    #[track_caller]
    pub fn get(&self, args: &[&str], path: &str) -> Exchange {
        self.exchange(RequestType::Get, args, path)
    }

    #[track_caller]
    pub fn put(&self, args: &[&str], path: &str) -> Exchange {
        self.exchange(RequestType::Put, &[&["-m", "put"], args].concat(), path)
    }

    #[track_caller]
    pub fn post(&self, args: &[&str], path: &str) -> Exchange {
        self.exchange(RequestType::Post, &[&["-m", "post"], args].concat(), path)
    }
}

fn segments(values: &[Vec<u8>]) -> Vec<String> {
    values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// CORE_18, CORE_19: POST creating a resource, its URI in Location-* options

/// POST to a new multi-segment path: 2.01 with one Location-Path per segment; GET there
/// returns the payload; a second POST to it replaces it (2.04).
fn location_path(dir: Dir) -> String {
    let p = Pair::new(dir);
    let created = p.post(&["-e", "located"], "loc/a/b");
    created.expect("2.01");
    let loc = segments(&created.option(CoapOption::LocationPath));
    assert_eq!(loc, ["loc", "a", "b"], "Location-Path\n{}", created.ctx);
    assert!(
        created.option(CoapOption::LocationQuery).is_empty(),
        "no query, no Location-Query\n{}",
        created.ctx
    );
    let at = loc.join("/");
    let got = p.get(&[], &at);
    got.expect("2.05");
    assert_eq!(got.payload(), "located", "{}", got.ctx);
    let again = p.post(&["-e", "replaced"], &at);
    again.expect("2.04");
    let got = p.get(&[], &at);
    assert_eq!(got.payload(), "replaced", "{}", got.ctx);
    format!(
        "2.01 with Location-Path {loc:?}; GET there returns the payload; a second POST \
         there answers {} and replaces it",
        again.code()
    )
}

/// POST with two Uri-Query options: 2.01 with the URI of the new resource in Location-Path
/// and Location-Query; GET at that URI returns the payload; the client shows the location.
fn location_query(dir: Dir) -> String {
    let p = Pair::new(dir);
    let verbose: &[&str] = if p.ours_client { &["-v", "6"] } else { &[] };
    let created = p.post(
        &[verbose, &["-e", "queried"]].concat(),
        "locq?first=1&second=2",
    );
    created.expect("2.01");
    let path = segments(&created.option(CoapOption::LocationPath));
    let query = segments(&created.option(CoapOption::LocationQuery));
    assert_eq!(path, ["locq"], "Location-Path\n{}", created.ctx);
    assert_eq!(
        query,
        ["first=1", "second=2"],
        "Location-Query\n{}",
        created.ctx
    );
    // Each client shows the location it got: ours in its -v 6 summary line, libcoap's in
    // its dump of the response (the suite runs it with -v 7).
    let shown = if p.ours_client {
        "Location: /locq?first=1&second=2"
    } else {
        "Location-Query:first=1, Location-Query:second=2"
    };
    let out = format!("{}{}", created.run.stdout, created.run.stderr);
    assert!(
        out.contains(shown),
        "client output lacks {shown:?}\n{}",
        created.ctx
    );
    let location = format!("{}?{}", path.join("/"), query.join("&"));
    let got = p.get(&[], &location);
    got.expect("2.05");
    assert_eq!(got.payload(), "queried", "{}", got.ctx);
    // Without the query: a different URI (RFC 7252 §5.10.1). Ours has no resource there;
    // libcoap's dynamic resources ignore the query.
    let bare = p.get(&[], "locq");
    if !p.ours_client {
        bare.expect("4.04");
    }
    format!(
        "2.01 with Location-Path {path:?} and Location-Query {query:?}, shown by the client; \
         GET {location} returns the payload; GET locq (no query) {}",
        bare.code()
    )
}

// ---------------------------------------------------------------------------------------------
// CORE_20: Accept

fn format_of(e: &Exchange) -> String {
    match e.option(CoapOption::ContentFormat).first() {
        Some(v) => format!("ct={}", v.iter().fold(0u32, |a, b| a << 8 | u32::from(*b))),
        None => "no Content-Format".into(),
    }
}

/// GET /example_data (text/plain after a PUT with -t 0) with Accept text/plain, then with
/// Accept application/json: RFC 7252 §5.10.4 wants 2.05 with ct=0, then 4.06.
fn accept(dir: Dir) -> String {
    let p = Pair::new(dir);
    p.put(&["-t", "0", "-e", "plain text"], "example_data");
    let text = p.get(&["-A", "0"], "example_data");
    assert_eq!(
        values(&text.req, CoapOption::Accept),
        [Vec::<u8>::new()],
        "{}",
        text.ctx
    );
    let json = p.get(&["-A", "50"], "example_data");
    assert_eq!(
        values(&json.req, CoapOption::Accept),
        [vec![50]],
        "{}",
        json.ctx
    );
    let note = format!(
        "Accept text/plain: {} ({}); Accept application/json: {} ({})",
        text.code(),
        format_of(&text),
        json.code(),
        format_of(&json)
    );
    if !p.ours_client {
        text.expect("2.05");
        assert_eq!(format_of(&text), "ct=0", "{}", text.ctx);
        assert_eq!(text.payload(), "plain text");
        json.expect("4.06");
        assert!(json.resp.payload.is_empty(), "{}", json.ctx);
    }
    note
}

// ---------------------------------------------------------------------------------------------
// CORE_21: ETag validation

/// GET, then GET with the ETag received: 2.03 Valid with that ETag and no payload
/// (§5.10.6.2, §5.9.1.3); after a PUT changes the resource, the old ETag gets 2.05 with the
/// new representation and a new ETag.
fn etag_ours() -> String {
    let p = Pair::new(Dir::LibcoapToOurs);
    let first = p.get(&[], "example_data");
    first.expect("2.05");
    let etag = first.option(CoapOption::ETag);
    assert_eq!(etag.len(), 1, "one ETag in a 2.05\n{}", first.ctx);
    let etag = etag[0].clone();
    assert!((1..=8).contains(&etag.len()), "ETag length\n{}", first.ctx);
    let opt = format!("4,{}", hex(&etag));
    let valid = p.get(&["-O", &opt], "example_data");
    assert_eq!(
        values(&valid.req, CoapOption::ETag),
        std::slice::from_ref(&etag),
        "{}",
        valid.ctx
    );
    valid.expect("2.03");
    assert_eq!(
        valid.option(CoapOption::ETag),
        std::slice::from_ref(&etag),
        "{}",
        valid.ctx
    );
    assert!(
        valid.resp.payload.is_empty(),
        "2.03 has no payload\n{}",
        valid.ctx
    );
    p.put(&["-t", "0", "-e", "changed"], "example_data")
        .expect("2.04");
    let stale = p.get(&["-O", &opt], "example_data");
    stale.expect("2.05");
    assert_eq!(stale.payload(), "changed", "{}", stale.ctx);
    let new = stale.option(CoapOption::ETag);
    assert!(
        new.len() == 1 && new[0] != etag,
        "a new ETag\n{}",
        stale.ctx
    );
    format!(
        "ETag {} on 2.05; GET with it: 2.03 Valid, same ETag, no payload; after a PUT the \
         old ETag gets 2.05 with the new payload and ETag {}",
        hex(&etag),
        hex(&new[0])
    )
}

/// The same steps against libcoap: its /example_data starts with a 1500-byte representation
/// sent block-wise (our client fetches every block), and that is when it sends ETags.
fn etag_libcoap() -> String {
    let p = Pair::new(Dir::OursToLibcoap);
    let first = p.get(&[], "example_data");
    first.expect("2.05");
    let etag = first.option(CoapOption::ETag);
    let block = !first.option(CoapOption::Block2).is_empty();
    let mut note = format!(
        "fresh /example_data ({} bytes{}): ETag {}",
        first.run.stdout.len(),
        if block { ", Block2" } else { "" },
        etag.first().map_or("none".into(), |e| hex(e))
    );
    if let Some(e) = etag.first() {
        note.push_str(&format!("; GET with it: {}", revalidate(&p, e)));
    }
    p.put(&["-t", "0", "-e", "small"], "example_data");
    let small = p.get(&[], "example_data");
    small.expect("2.05");
    note.push_str(&format!(
        "; after a PUT of 5 bytes: ETag {}",
        small
            .option(CoapOption::ETag)
            .first()
            .map_or("none".into(), |e| hex(e))
    ));
    let probe = p.get(&["-O", "4,0x0123"], "example_data");
    note.push_str(&format!(
        "; GET with ETag 0x0123: {} with the payload",
        probe.code()
    ));
    note
}

/// GET /example_data with `etag` in an ETag option: libcoap answers block by block, tagging
/// only block 0; our client must still fetch the whole body.
fn revalidate(p: &Pair, etag: &[u8]) -> String {
    p.relay.clear();
    let uri = p.uri("example_data");
    let opt = format!("4,{}", hex(etag));
    let run = our_client(&["-O", &opt, &uri]);
    let c = ctx(&p.relay, &run);
    assert!(run.status.is_some(), "the client hung\n{c}");
    // Block 0 tagged, later blocks untagged: nothing to compare, so the body is whole (RFC
    // 7959 §2.4 compares ETags "if available").
    assert_eq!(
        run.code(),
        Some(0),
        "the revalidating GET must succeed\n{c}"
    );
    let answers: Vec<String> = crate::responses(&p.relay)
        .iter()
        .map(|r| {
            let num = r
                .get_first_option(CoapOption::Block2)
                .map_or("-".into(), |v| {
                    (v.iter().fold(0u32, |a, b| a << 8 | u32::from(*b)) >> 4).to_string()
                });
            let tag = r
                .get_first_option(CoapOption::ETag)
                .map_or("no ETag".into(), |e| hex(e));
            format!("{} block {num} {tag}", code(r))
        })
        .collect();
    let ending = match run.code() {
        Some(0) => "exit 0".to_string(),
        other => format!(
            "exit {}: {}",
            other.map_or("by signal".into(), |c| c.to_string()),
            run.stderr.lines().last().unwrap_or_default()
        ),
    };
    format!("answers {}; our client: {ending}", answers.join(", "))
}

// ---------------------------------------------------------------------------------------------
// CORE_22: If-Match

/// PUT with If-Match: the current ETag → 2.04 (RFC 7252 §5.10.8.1); the now stale one →
/// 4.12 and nothing changes; an empty If-Match → 2.04 (the resource exists); empty
/// If-Match on a path with no resource → 4.12 and nothing is created.
fn if_match(dir: Dir) -> String {
    let p = Pair::new(dir);
    p.put(&["-t", "0", "-e", "v1"], "example_data");
    let got = p.get(&[], "example_data");
    let etag = got.option(CoapOption::ETag);
    // libcoap's small representation has no ETag: a made-up one stands in, matching nothing.
    let etag = etag.first().cloned().unwrap_or(vec![0x99]);
    let if_match = format!("1,{}", hex(&etag));
    let current = p.put(&["-O", &if_match, "-e", "v2"], "example_data");
    assert_eq!(
        values(&current.req, CoapOption::IfMatch),
        std::slice::from_ref(&etag),
        "{}",
        current.ctx
    );
    let stale = p.put(&["-O", &if_match, "-e", "v3"], "example_data");
    let after_stale = p.get(&[], "example_data");
    let empty = p.put(&["-O", "1,", "-e", "v4"], "example_data");
    assert_eq!(
        values(&empty.req, CoapOption::IfMatch),
        [Vec::<u8>::new()],
        "{}",
        empty.ctx
    );
    let absent = p.put(&["-O", "1,", "-e", "new"], "if-match-absent");
    let absent_get = p.get(&[], "if-match-absent");
    if !p.ours_client {
        current.expect("2.04");
        stale.expect("4.12");
        assert_eq!(after_stale.payload(), "v2", "{}", after_stale.ctx);
        empty.expect("2.04");
        absent.expect("4.12");
        absent_get.expect("4.04");
    }
    format!(
        "If-Match {} ({}): {}; again, now stale: {} (GET then returns {:?}); empty If-Match: \
         {}; empty If-Match on a path with no resource: {}, then GET {}",
        hex(&etag),
        if got.option(CoapOption::ETag).is_empty() {
            "no ETag was sent: a made-up one"
        } else {
            "the ETag of the GET"
        },
        current.code(),
        stale.code(),
        after_stale.payload(),
        empty.code(),
        absent.code(),
        absent_get.code()
    )
}

// ---------------------------------------------------------------------------------------------
// CORE_23: If-None-Match

/// PUT with If-None-Match to a new path: 2.01; the same again: 4.12 (the resource exists,
/// RFC 7252 §5.10.8.2) and the first payload stays.
fn if_none_match(dir: Dir) -> String {
    let p = Pair::new(dir);
    let first = p.put(&["-O", "5,", "-e", "first"], "inm");
    assert_eq!(
        values(&first.req, CoapOption::IfNoneMatch),
        [Vec::<u8>::new()],
        "{}",
        first.ctx
    );
    let second = p.put(&["-O", "5,", "-e", "second"], "inm");
    let got = p.get(&[], "inm");
    if !p.ours_client {
        first.expect("2.01");
        second.expect("4.12");
        assert_eq!(got.payload(), "first", "{}", got.ctx);
    }
    format!(
        "first PUT with If-None-Match: {}; second: {}; GET then returns {:?}",
        first.code(),
        second.code(),
        got.payload()
    )
}

pub fn cases() -> Vec<Case> {
    use Dir::*;
    vec![
        Case::new(
            "CORE_18",
            OursToLibcoap,
            "POST creating a resource: 2.01 with Location-Path",
            || location_path(Dir::OursToLibcoap),
            false,
        ),
        Case::new(
            "CORE_18",
            LibcoapToOurs,
            "POST creating a resource: 2.01 with Location-Path",
            || location_path(Dir::LibcoapToOurs),
            false,
        ),
        Case::new(
            "CORE_19",
            OursToLibcoap,
            "POST with Uri-Query: 2.01 with Location-Path and Location-Query",
            || location_query(Dir::OursToLibcoap),
            false,
        ),
        Case::new(
            "CORE_19",
            LibcoapToOurs,
            "POST with Uri-Query: 2.01 with Location-Path and Location-Query",
            || location_query(Dir::LibcoapToOurs),
            false,
        ),
        Case::new(
            "CORE_20",
            OursToLibcoap,
            "Accept: the accepted Content-Format or 4.06 (libcoap's behaviour recorded)",
            || accept(Dir::OursToLibcoap),
            true,
        ),
        Case::new(
            "CORE_20",
            LibcoapToOurs,
            "Accept: the accepted Content-Format or 4.06",
            || accept(Dir::LibcoapToOurs),
            false,
        ),
        Case::new(
            "CORE_21",
            OursToLibcoap,
            "ETag validation: 2.03 Valid (libcoap's behaviour recorded)",
            etag_libcoap,
            true,
        ),
        Case::new(
            "CORE_21",
            LibcoapToOurs,
            "ETag validation: 2.03 Valid for the current ETag, 2.05 after a change",
            etag_ours,
            false,
        ),
        Case::new(
            "CORE_22",
            OursToLibcoap,
            "PUT with If-Match (libcoap's behaviour recorded)",
            || if_match(Dir::OursToLibcoap),
            true,
        ),
        Case::new(
            "CORE_22",
            LibcoapToOurs,
            "PUT with If-Match: 2.04 when it matches, 4.12 when not",
            || if_match(Dir::LibcoapToOurs),
            false,
        ),
        Case::new(
            "CORE_23",
            OursToLibcoap,
            "PUT with If-None-Match (libcoap's behaviour recorded)",
            || if_none_match(Dir::OursToLibcoap),
            true,
        ),
        Case::new(
            "CORE_23",
            LibcoapToOurs,
            "PUT with If-None-Match: 2.01, then 4.12",
            || if_none_match(Dir::LibcoapToOurs),
            false,
        ),
    ]
}
