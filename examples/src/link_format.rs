//! RFC 6690 link format for `coap-server`'s `/.well-known/core` (included with `#[path]`):
//! links with their attributes, and the query filtering of RFC 6690 §4.1.
//!
//! The writing stays here rather than on coap-lite's `LinkFormatWrite`: that writer has no
//! parameter without a value (it writes `obs` as `obs=`, which RFC 6690 §2 does not allow,
//! where libcoap and we write `;obs`). coap-lite's parser reads our output back in the
//! tests below.

/// One link-value: `<href>;name="value";...`.
pub struct Link {
    /// The URI-reference between `<` and `>`, e.g. `/time`.
    pub href: String,
    /// Attributes in output order: (name, value, quoted in the output).
    pub attrs: Vec<(&'static str, String, bool)>,
}

impl Link {
    pub fn new(href: impl Into<String>) -> Link {
        Link {
            href: href.into(),
            attrs: Vec::new(),
        }
    }

    /// A quoted attribute (`rt="ticks"`): rt, if and title are quoted-strings in RFC 6690 §5.
    pub fn quoted(mut self, name: &'static str, value: &str) -> Link {
        self.attrs.push((name, value.to_string(), true));
        self
    }

    /// A token attribute (`ct=0`).
    pub fn token(mut self, name: &'static str, value: impl ToString) -> Link {
        self.attrs.push((name, value.to_string(), false));
        self
    }

    /// An attribute without a value (`obs`, RFC 7641 §6).
    pub fn flag(mut self, name: &'static str) -> Link {
        self.attrs.push((name, String::new(), false));
        self
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.href);
        out.push('>');
        for (name, value, quoted) in &self.attrs {
            out.push(';');
            out.push_str(name);
            if *quoted {
                // A quoted-string (RFC 6690 §2 by RFC 2616 §2.2): `"` and `\` as quoted-pairs.
                out.push_str("=\"");
                for c in value.chars() {
                    if matches!(c, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else if !value.is_empty() {
                out.push('=');
                out.push_str(value);
            }
        }
    }

    /// RFC 6690 §4.1: `href` compares against the URI-reference; any other name against
    /// the attribute of that name. A pattern ending in `*` is a prefix, else the whole value
    /// must be byte-wise identical. rt, if and rel hold space-separated lists (§3.1–3.2,
    /// RFC 5988 §5.3): matching any one value of the list is enough.
    fn matches(&self, name: &str, pattern: &str) -> bool {
        let (prefix, exact) = match pattern.strip_suffix('*') {
            Some(p) => (p, false),
            None => (pattern, true),
        };
        let hit = |v: &str| {
            if exact {
                v == prefix
            } else {
                v.starts_with(prefix)
            }
        };
        if name == "href" {
            return hit(&self.href);
        }
        let list = matches!(name, "rt" | "if" | "rel");
        self.attrs
            .iter()
            .filter(|(n, _, _)| *n == name)
            .any(
                |(_, v, _)| {
                    if list {
                        v.split(' ').any(hit)
                    } else {
                        hit(v)
                    }
                },
            )
    }
}

/// The links that pass every `name=pattern` filter among `queries` (Uri-Query option values,
/// already percent-decoded), serialized as an RFC 6690 document. RFC 6690 §4.1 defines one
/// filter per request; several are applied together (a link must pass all), and a query
/// that is not `name=pattern` is no filter and is ignored, as §4.1 asks of servers that do
/// not filter.
pub fn filtered(links: &[Link], queries: &[String]) -> String {
    let filters: Vec<(&str, &str)> = queries.iter().filter_map(|q| q.split_once('=')).collect();
    let mut out = String::new();
    for link in links {
        if filters.iter().all(|(n, p)| link.matches(n, p)) {
            if !out.is_empty() {
                out.push(',');
            }
            link.write(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_engine::coap_lite::link_format::{LinkFormatParser, LinkFormatWrite};

    fn links() -> Vec<Link> {
        vec![
            Link::new("/")
                .quoted("title", "General Info")
                .token("ct", 0),
            Link::new("/time")
                .quoted("if", "clock")
                .quoted("rt", "ticks")
                .quoted("title", "Internal Clock")
                .token("ct", 0)
                .flag("obs"),
            Link::new("/sensors/a")
                .quoted("rt", "Type2 Type3")
                .token("ct", 40),
        ]
    }

    /// Each link of an RFC 6690 document as coap-lite's parser reads it: the URI-reference
    /// and the parameters, their values unquoted (empty for a parameter without one).
    fn parse(document: &str) -> Vec<(String, Vec<(String, String)>)> {
        LinkFormatParser::new(document)
            .map(|link| {
                let (href, attrs) = link.unwrap_or_else(|e| panic!("{e:?} in {document}"));
                // `Unquote`'s `Display` walks its iterator; its `to_cow` can panic on a
                // lone `"` (see below).
                let attrs = attrs.map(|(k, v)| (k.to_string(), v.to_string()));
                (href.to_string(), attrs.collect())
            })
            .collect()
    }

    fn hrefs(queries: &[&str]) -> String {
        let q: Vec<String> = queries.iter().map(|s| s.to_string()).collect();
        parse(&filtered(&links(), &q))
            .into_iter()
            .map(|(href, _)| format!("<{href}>"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn pairs(attrs: &[(&str, &str)]) -> Vec<(String, String)> {
        attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quoted_values_are_escaped_and_read_back_whole() {
        let links = [
            Link::new("/a")
                .quoted("title", "say \"hi\", then \\ and ;")
                .token("ct", 0)
                .flag("obs"),
            Link::new("/b").quoted("rt", "x,y").quoted("if", ""),
        ];
        let document = filtered(&links, &[]);
        assert_eq!(
            document,
            r#"</a>;title="say \"hi\", then \\ and ;";ct=0;obs,</b>;rt="x,y";if="""#
        );
        assert_eq!(
            parse(&document),
            [
                (
                    "/a".to_string(),
                    pairs(&[
                        ("title", "say \"hi\", then \\ and ;"),
                        ("ct", "0"),
                        ("obs", ""),
                    ])
                ),
                ("/b".to_string(), pairs(&[("rt", "x,y"), ("if", "")])),
            ]
        );
    }

    /// Why the writing is ours: coap-lite's writer cannot write a parameter without a value.
    /// RFC 6690 §2 has `link-param = parmname [ BWS "=" BWS ( token / quoted-string ) ]`
    /// with a token of one character at least, so `obs=` is no link-param; libcoap writes
    /// `;obs`, and so do we.
    #[test]
    fn coap_lites_writer_writes_a_parameter_without_value_as_name_equals() {
        let mut theirs = String::new();
        let mut w = LinkFormatWrite::new(&mut theirs);
        w.link("/time").attr("obs", "").finish().unwrap();
        w.finish().unwrap();
        assert_eq!(theirs, "</time>;obs=");
        assert_eq!(
            filtered(&[Link::new("/time").flag("obs")], &[]),
            "</time>;obs"
        );
    }

    /// Why `parse` takes values through `Unquote`'s iterator: its `to_cow` slices a lone
    /// `"` as `[1..0]`, a panic on a malformed document from a peer.
    #[test]
    fn coap_lites_to_cow_panics_on_a_lone_quote_where_its_iterator_does_not() {
        let document = "</a>;t=\"";
        let (_, mut attrs) = LinkFormatParser::new(document).next().unwrap().unwrap();
        let (name, value) = attrs.next().unwrap();
        assert_eq!((name, value.to_string()), ("t", String::new()));
        let caught = std::panic::catch_unwind(move || value.to_cow().into_owned());
        assert!(caught.is_err(), "to_cow of a lone quote: {caught:?}");
    }

    #[test]
    fn unfiltered_output_is_rfc6690_link_format() {
        assert_eq!(
            filtered(&links()[..2], &[]),
            "</>;title=\"General Info\";ct=0,</time>;if=\"clock\";rt=\"ticks\";\
             title=\"Internal Clock\";ct=0;obs"
        );
    }

    #[test]
    fn filters_follow_rfc6690_section_4_1() {
        assert_eq!(hrefs(&["rt=ticks"]), "</time>");
        assert_eq!(hrefs(&["rt=tick"]), "", "no prefix match without *");
        assert_eq!(hrefs(&["rt=*"]), "</time> </sensors/a>", "empty prefix");
        assert_eq!(hrefs(&["rt=Type3"]), "</sensors/a>", "any value of a list");
        assert_eq!(hrefs(&["rt=Type2 Type3"]), "", "one value, not the list");
        assert_eq!(hrefs(&["if=cl*"]), "</time>");
        assert_eq!(hrefs(&["sz=*"]), "", "no link has sz");
        assert_eq!(hrefs(&["href=/time"]), "</time>");
        assert_eq!(
            hrefs(&["href=time"]),
            "",
            "href is the URI-reference as written"
        );
        assert_eq!(hrefs(&["href=/*"]), "</> </time> </sensors/a>");
        assert_eq!(hrefs(&["href=/s*"]), "</sensors/a>");
        assert_eq!(hrefs(&["ct=40"]), "</sensors/a>");
        assert_eq!(hrefs(&["title=Internal Clock"]), "</time>");
        assert_eq!(hrefs(&["title=Internal"]), "", "title is not a list");
        assert_eq!(hrefs(&["ct=0", "rt=ticks"]), "</time>", "all filters apply");
        assert_eq!(
            hrefs(&["obs=*"]),
            "</time>",
            "a flag is there, with an empty value"
        );
        assert_eq!(
            hrefs(&["rt"]),
            "</> </time> </sensors/a>",
            "not a filter: ignored"
        );
    }
}
