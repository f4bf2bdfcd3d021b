//! LINK_02–09: `/.well-known/core` filtered by a query (RFC 6690 §4.1). Both servers list
//! `/`, `/time` (if="clock", rt="ticks"), `/async`, `/example_data`; the plugtest's
//! `/link1..3` and `/path` + `/path/sub1` are made by the client under test with PUT on a
//! server started with `-d` (`/path` holds a link-format document, ct=40). Each case checks
//! the request's single Uri-Query option on the wire and the exact set of links returned.

use coap_engine::coap_lite::link_format::LinkFormatParser;
use coap_engine::coap_lite::CoapOption;

use crate::options::{values, Exchange, Pair};
use crate::{Case, Dir};

/// The hrefs of a link-format document, sorted (the servers list in different orders); a
/// document coap-lite's RFC 6690 parser cannot read fails the case.
fn hrefs(body: &str) -> Vec<String> {
    let mut out: Vec<String> = LinkFormatParser::new(body)
        .map(|link| match link {
            Ok((href, _)) => href.to_string(),
            Err(e) => panic!("not an RFC 6690 document ({e:?}): {body:?}"),
        })
        .collect();
    out.sort();
    out
}

/// The resources the plugtest filters on, made by the client under test.
fn populate(p: &Pair) {
    for l in ["link1", "link2", "link3"] {
        p.put(&["-t", "0", "-e", l], l);
    }
    p.put(&["-t", "40", "-e", "</path/sub1>;title=\"sub1\""], "path");
    p.put(&["-t", "0", "-e", "sub1"], "path/sub1");
}

#[track_caller]
fn filtered(p: &Pair, query: &str, want: &[&str]) -> (Exchange, String) {
    let e = p.get(&[], &format!(".well-known/core?{query}"));
    e.expect("2.05");
    assert_eq!(
        values(&e.req, CoapOption::UriQuery),
        [query.as_bytes().to_vec()],
        "one Uri-Query option\n{}",
        e.ctx
    );
    let got = hrefs(&e.payload());
    assert_eq!(got, want, "links for ?{query}\n{}", e.ctx);
    let ct = e.option(CoapOption::ContentFormat);
    if !want.is_empty() || !p.ours_client {
        // An empty result is still an (empty) link-format document; our server says so.
        assert_eq!(ct, [vec![40]], "Content-Format 40\n{}", e.ctx);
    }
    let format = if ct.is_empty() {
        "no Content-Format"
    } else {
        "ct=40"
    };
    let note = if want.is_empty() {
        format!("?{query}: 2.05, empty payload, {format}")
    } else {
        format!("?{query}: 2.05, ct=40, exactly {}", want.join(" "))
    };
    (e, note)
}

fn filter_case(dir: Dir, query: &str, want: &[&str]) -> String {
    let p = Pair::new(dir);
    populate(&p);
    filtered(&p, query, want).1
}

/// LINK_09: `?ct=40` finds `/path`, whose link-format document leads to `/path/sub1`.
fn hierarchy(dir: Dir) -> String {
    let p = Pair::new(dir);
    populate(&p);
    let (_, note) = filtered(&p, "ct=40", &["/path"]);
    let path = p.get(&[], "path");
    path.expect("2.05");
    assert_eq!(
        path.option(CoapOption::ContentFormat),
        [vec![40]],
        "{}",
        path.ctx
    );
    let below = hrefs(&path.payload());
    assert_eq!(below, ["/path/sub1"], "{}", path.ctx);
    let sub = p.get(&[], below[0].trim_start_matches('/'));
    sub.expect("2.05");
    assert_eq!(sub.payload(), "sub1", "{}", sub.ctx);
    format!("{note}; GET /path: ct=40 listing </path/sub1>; GET /path/sub1: 2.05 \"sub1\"")
}

pub fn cases() -> Vec<Case> {
    [
        both!("LINK_02", "filter ?rt=ticks", |d| filter_case(
            d,
            "rt=ticks",
            &["/time"]
        )),
        both!("LINK_03", "empty prefix ?rt=*: links with any rt", |d| {
            filter_case(d, "rt=*", &["/time"])
        }),
        both!("LINK_05", "if prefix ?if=cl*", |d| filter_case(
            d,
            "if=cl*",
            &["/time"]
        )),
        both!("LINK_06", "sz prefix ?sz=*: no link has sz", |d| {
            filter_case(d, "sz=*", &[])
        }),
        both!("LINK_07", "href complete value ?href=/link1", |d| {
            filter_case(d, "href=/link1", &["/link1"])
        }),
        both!("LINK_08", "href prefix ?href=/link*", |d| filter_case(
            d,
            "href=/link*",
            &["/link1", "/link2", "/link3"]
        )),
        both!(
            "LINK_09",
            "hierarchical links: ?ct=40, then /path, then /path/sub1",
            hierarchy
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}
