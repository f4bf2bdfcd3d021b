//! `coap-server`: a CoAP server on the mio adapter with the flags of libcoap's example
//! server (`coap-server-notls`).
//!
//! ```text
//! coap-server [-A address] [-p port] [-v level] [-K seconds] [-d max]
//!             [-l list|loss%] [-Z list|fail%]
//! ```
//!
//! Resources: `/` (text), `/time` (current UTC time; `?ticks` for seconds since the Unix
//! epoch), `/async?N` (a separate response after N seconds: the engine sends the Empty ACK
//! after `empty_ack_delay`), `/.well-known/core` (RFC 6690), `/example_data` (GET; PUT
//! replaces it), and resources created by PUT on unknown paths when `-d max` allows
//! (2.01 Created; DELETE removes them; 4.06 once `max` exist, like libcoap).
//!
//! `-K seconds` turns on keepalive for every client session: a ping after K seconds of
//! silence, and the session fails (its state freed) after K more: `Keepalive { interval: K,
//! timeout: K }`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Event, IncomingRequestId};
use coap_engine_mio::{Driver, Handler};

#[path = "../cli.rs"]
mod cli;

const PROG: &str = "coap-server";
const ROOT_TEXT: &str = "This is a test server made with coap-engine (a sans-IO CoAP engine)\n\
                         driven by the mio adapter; flags mirror libcoap's coap-server\n";
const HELP: &str = "\
Usage: coap-server [-A address] [-p port] [-v num] [-K seconds] [-d max]
                   [-l list|loss%] [-Z list|fail%]
	-A address	Interface address to bind to (default ::, falling back to 0.0.0.0)
	-p port		Listen on specified port (default 5683)
	-v num		Verbosity level (default 3, maximum 9; 6 logs every request)
	-K seconds	Keepalive for client sessions: ping after this much silence, fail the
			session after as much again
	-d max		Allow dynamic creation of up to max resources by PUT; past it 4.06
	-l list		Drop outgoing datagrams: a comma separated list of numbers or ranges
	-l loss%	Drop outgoing datagrams randomly with this probability
	-Z list|fail%	Like -l, but the send fails and the engine is told \"unreachable\"
	-h		This help";

struct Resource {
    data: Vec<u8>,
    format: Option<u16>,
}

struct Server {
    example_data: Resource,
    dynamic: BTreeMap<String, Resource>,
    max_dynamic: usize,
    /// Separate responses due later: (when, request).
    delayed: Vec<(StdInstant, IncomingRequestId)>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (flags, positional) =
        cli::getopt(args, "A:p:v:K:d:l:Z:h").unwrap_or_else(|e| cli::usage_error(PROG, e));
    if let Some(extra) = positional.first() {
        cli::usage_error(PROG, format!("unexpected argument {extra:?}"));
    }
    let mut address: Option<IpAddr> = None;
    let mut port: u16 = 5683;
    let mut config = Config::default();
    let mut max_dynamic = 0;
    let (mut loss, mut fail) = (None, None);
    let mut verbosity = "3".to_string();
    for (flag, value) in flags {
        let result: Result<(), String> = (|| {
            match flag {
                'A' => {
                    let v = value.trim_start_matches('[').trim_end_matches(']');
                    address = Some(
                        v.parse()
                            .map_err(|_| format!("-A needs an IP address, not {value:?}"))?,
                    )
                }
                'p' => {
                    port = value
                        .parse()
                        .map_err(|_| format!("-p needs a port number, not {value:?}"))?
                }
                'v' => verbosity = value,
                'K' => {
                    let k = cli::parse_seconds('K', &value)?;
                    config.keepalive = (!k.is_zero()).then(|| cli::keepalive(k));
                }
                'd' => {
                    max_dynamic = value
                        .parse()
                        .map_err(|_| format!("-d needs a number, not {value:?}"))?
                }
                'l' => loss = Some(cli::Selector::parse('l', &value)?),
                'Z' => fail = Some(cli::Selector::parse('Z', &value)?),
                'h' => {
                    println!("{HELP}");
                    std::process::exit(0);
                }
                _ => unreachable!("getopt returns only known flags"),
            }
            Ok(())
        })();
        if let Err(e) = result {
            cli::usage_error(PROG, e);
        }
    }
    cli::init_logging(PROG, &verbosity).unwrap_or_else(|e| cli::usage_error(PROG, e));

    let bind = |ip: IpAddr| Driver::bind(SocketAddr::new(ip, port), config.clone());
    let driver = match address {
        Some(ip) => bind(ip),
        // Like libcoap: the IPv6 wildcard (dual stack on Linux), else IPv4.
        None => bind("::".parse().unwrap()).or_else(|_| bind("0.0.0.0".parse().unwrap())),
    };
    let mut driver = driver.unwrap_or_else(|e| {
        eprintln!("{PROG}: cannot listen on port {port}: {e}");
        std::process::exit(1);
    });
    if loss.is_some() || fail.is_some() {
        driver.set_send_filter(cli::send_filter(loss, fail, coap_engine_mio::random_seed()));
    }
    match driver.local_addr() {
        Ok(addr) => log::info!("listening on coap://{addr}/"),
        Err(e) => log::warn!("local address unknown: {e}"),
    }
    let mut server = Server {
        example_data: Resource {
            data: b"Hello World!".to_vec(),
            format: Some(0),
        },
        dynamic: BTreeMap::new(),
        max_dynamic,
        delayed: Vec::new(),
    };
    if let Err(e) = driver.run(&mut server) {
        eprintln!("{PROG}: {e}");
        std::process::exit(1);
    }
}

impl Handler for Server {
    fn on_event(&mut self, driver: &mut Driver, event: Event) -> ControlFlow<()> {
        match event {
            Event::Request { id, peer, request } => {
                let path = segments(&request, CoapOption::UriPath).join("/");
                match self.answer(&request, &path) {
                    Answer::Now(response) => {
                        log::info!(
                            "{peer} {} /{path} -> {}",
                            request.header.code,
                            response.header.code
                        );
                        if let Err(e) = driver.respond(id, &response) {
                            log::warn!("{peer}: cannot respond: {e}");
                        }
                    }
                    Answer::Later(delay) => {
                        log::info!("{peer} GET /{path} -> separate response in {delay:?}");
                        self.delayed.push((StdInstant::now() + delay, id));
                    }
                }
            }
            Event::SessionFailed { peer, reason } => log::warn!("{peer}: session failed: {reason}"),
            Event::SendFailed { peer, kind, .. } => log::info!("{peer}: send failed: {kind}"),
            other => log::debug!("{other:?}"),
        }
        ControlFlow::Continue(())
    }

    fn on_tick(&mut self, driver: &mut Driver) -> ControlFlow<(), Option<StdInstant>> {
        let now = StdInstant::now();
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, id) = self.delayed.swap_remove(i);
                let response = response(ResponseType::Content, Some(0), b"done".to_vec());
                if let Err(e) = driver.respond(id, &response) {
                    // The client's session may have ended meanwhile.
                    log::info!("separate response not sent: {e}");
                }
            } else {
                i += 1;
            }
        }
        ControlFlow::Continue(self.delayed.iter().map(|d| d.0).min())
    }
}

enum Answer {
    Now(Packet),
    Later(Duration),
}

fn response(code: ResponseType, format: Option<u16>, payload: Vec<u8>) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    if let Some(f) = format {
        p.add_option(CoapOption::ContentFormat, cli::uint_option(f.into()));
    }
    p.payload = payload;
    p
}

fn empty(code: ResponseType) -> Answer {
    Answer::Now(response(code, None, Vec::new()))
}

fn segments(p: &Packet, option: CoapOption) -> Vec<String> {
    p.get_option(option)
        .map(|l| {
            l.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn format_of(p: &Packet) -> Option<u16> {
    p.get_option(CoapOption::ContentFormat)
        .and_then(|l| l.front())
        .map(|v| cli::decode_uint(v) as u16)
}

impl Server {
    fn answer(&mut self, request: &Packet, path: &str) -> Answer {
        use RequestType::{Delete, Get, Put};
        let MessageClass::Request(method) = request.header.code else {
            return empty(ResponseType::MethodNotAllowed);
        };
        if !matches!(
            method,
            Get | RequestType::Post
                | Put
                | Delete
                | RequestType::Fetch
                | RequestType::Patch
                | RequestType::IPatch
        ) {
            return empty(ResponseType::MethodNotAllowed); // an unknown method code
        }
        match (method, path) {
            (Get, "") => Answer::Now(response(
                ResponseType::Content,
                Some(0),
                ROOT_TEXT.as_bytes().to_vec(),
            )),
            (Get, "time") => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let query = segments(request, CoapOption::UriQuery);
                let text = if query.iter().any(|q| q == "ticks") {
                    now.to_string()
                } else {
                    utc_time(now)
                };
                Answer::Now(response(ResponseType::Content, Some(0), text.into_bytes()))
            }
            (Get, "async") => {
                let query = segments(request, CoapOption::UriQuery);
                match query.first().map(|q| q.parse::<u64>()) {
                    None => Answer::Now(response(ResponseType::Content, Some(0), b"done".to_vec())),
                    Some(Ok(n)) if n <= 3600 => Answer::Later(Duration::from_secs(n)),
                    Some(_) => Answer::Now(response(
                        ResponseType::BadRequest,
                        Some(0),
                        b"async?N needs a delay of 0 to 3600 seconds".to_vec(),
                    )),
                }
            }
            (Get, ".well-known/core") => {
                let mut links = String::from(
                    "</>;title=\"General Info\";ct=0,</time>;if=\"clock\";rt=\"ticks\";\
                     title=\"Internal Clock\";ct=0,</async>;ct=0,\
                     </example_data>;title=\"Example Data\";ct=0",
                );
                for (name, r) in &self.dynamic {
                    links.push_str(&format!(",</{name}>"));
                    if let Some(ct) = r.format {
                        links.push_str(&format!(";ct={ct}"));
                    }
                }
                Answer::Now(response(
                    ResponseType::Content,
                    Some(40),
                    links.into_bytes(),
                ))
            }
            (Get, "example_data") => {
                let r = &self.example_data;
                Answer::Now(response(ResponseType::Content, r.format, r.data.clone()))
            }
            (Put, "example_data") => {
                self.example_data = Resource {
                    data: request.payload.clone(),
                    format: format_of(request),
                };
                empty(ResponseType::Changed)
            }
            (_, "" | "time" | "async" | ".well-known/core" | "example_data") => {
                empty(ResponseType::MethodNotAllowed)
            }
            (Get, p) if self.dynamic.contains_key(p) => {
                let r = &self.dynamic[p];
                Answer::Now(response(ResponseType::Content, r.format, r.data.clone()))
            }
            (Put, p) if self.dynamic.contains_key(p) => {
                let resource = Resource {
                    data: request.payload.clone(),
                    format: format_of(request),
                };
                self.dynamic.insert(p.to_string(), resource);
                empty(ResponseType::Changed)
            }
            (Delete, p) if self.dynamic.contains_key(p) => {
                self.dynamic.remove(p);
                empty(ResponseType::Deleted)
            }
            (_, p) if self.dynamic.contains_key(p) => empty(ResponseType::MethodNotAllowed),
            (Put, p) if self.max_dynamic > 0 => {
                if self.dynamic.len() >= self.max_dynamic {
                    return empty(ResponseType::NotAcceptable);
                }
                let resource = Resource {
                    data: request.payload.clone(),
                    format: format_of(request),
                };
                self.dynamic.insert(p.to_string(), resource);
                empty(ResponseType::Created)
            }
            _ => empty(ResponseType::NotFound),
        }
    }
}

/// `Mon DD HH:MM:SS` in UTC, the format of libcoap's `/time`.
fn utc_time(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let _year = era * 400 + yoe + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:02} {:02}:{:02}:{:02}",
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(super::utc_time(0), "Jan 01 00:00:00");
        assert_eq!(super::utc_time(951_782_400), "Feb 29 00:00:00"); // 2000-02-29
        assert_eq!(super::utc_time(1_700_000_000), "Nov 14 22:13:20");
    }
}
