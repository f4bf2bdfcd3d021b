//! RFC 6690 link format for `coap-server`'s `/.well-known/core` (included with `#[path]`):
//! links with their attributes, and the query filtering of RFC 6690 §4.1.

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
            if !*quoted && value.is_empty() {
                out.push_str(&format!(";{name}"));
            } else if *quoted {
                out.push_str(&format!(";{name}=\"{value}\""));
            } else {
                out.push_str(&format!(";{name}={value}"));
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

    fn hrefs(queries: &[&str]) -> String {
        let q: Vec<String> = queries.iter().map(|s| s.to_string()).collect();
        filtered(&links(), &q)
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| &l[..l.find('>').unwrap() + 1])
            .collect::<Vec<_>>()
            .join(" ")
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
