//! Shared by `coap-server`, `coap-client` and `coap-bench` (included with `#[path]`):
//! libcoap-style options (split by lexopt, their values parsed here), the `-l`/`-Z` datagram
//! selectors, `-v` logging, DTLS credential files and small helpers.

#![allow(dead_code)] // each binary uses a different subset

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use coap_engine::dtls::{CertificateDer, CertifiedKey};
use coap_engine::{SendErrorKind, Transmit};
use coap_engine_mio::SendAction;
pub use lexopt::{Arg, Parser};

/// Prints `prog: message` on stderr and exits with status 2 (usage error).
pub fn usage_error(prog: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{prog}: {message} (try -h)");
    std::process::exit(2)
}

/// The command line after the program name.
pub fn args() -> Vec<OsString> {
    std::env::args_os().skip(1).collect()
}

/// Whether the command line ends with a bare `-h`. libcoap's `-h` takes an argument (a hint
/// file for its client, the PSK identity hint for its server) and prints the usage when it
/// has none; ours does the same, so `-h` alone still shows the help.
pub fn help_asked(args: &[OsString]) -> bool {
    args.last().is_some_and(|a| a == "-h")
}

/// A parser reading `args` (without the program name) as libcoap's getopt does: a letter's
/// value joined (`-B5`, `-mget`) or in the next argument (`-B 5`, even when that starts
/// with `-`), letters without a value clustered (`-Nv7` is `-N -v 7`), `--` ending the
/// options, positional arguments anywhere. `-e=x` gives the value `=x`, as getopt does.
pub fn parser(args: Vec<OsString>) -> Parser {
    let mut parser = Parser::from_args(args);
    parser.set_short_equals(false);
    parser
}

/// The value of the option [`Parser::next`] just gave, as text.
pub fn value(parser: &mut Parser) -> Result<String, String> {
    text(parser.value().map_err(message)?)
}

/// A value or positional argument as text (file names included: the binaries pass them on
/// as `&str`).
pub fn text(value: OsString) -> Result<String, String> {
    value
        .into_string()
        .map_err(|v| format!("argument {v:?} is not UTF-8"))
}

/// The one-line message for a command-line error, in the binaries' own words.
pub fn message(error: lexopt::Error) -> String {
    use lexopt::Error::*;
    match error {
        MissingValue {
            option: Some(option),
        } => format!("option {option} needs an argument"),
        UnexpectedOption(option) => format!("unknown option {option}"),
        UnexpectedArgument(value) => format!("unexpected argument {value:?}"),
        UnexpectedValue { option, value } => {
            format!("option {option} takes no argument, not {value:?}")
        }
        NonUnicodeValue(value) => format!("argument {value:?} is not UTF-8"),
        other => other.to_string(),
    }
}

/// The error for an option or argument the binary does not take.
pub fn unexpected(arg: Arg<'_>) -> String {
    message(arg.unexpected())
}

/// Parses a non-negative number of seconds (fractions allowed) for `flag`.
pub fn parse_seconds(flag: char, value: &str) -> Result<std::time::Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("-{flag} needs a number of seconds, not {value:?}"))
}

/// libcoap's `-l`/`-Z` argument: `N%` picks datagrams at random with that probability;
/// `1,3,5-7` picks the 1st, 3rd, 5th to 7th datagram sent (counting from 1).
#[derive(Clone)]
pub enum Selector {
    /// Probability in [0, 1].
    Random(f64),
    /// Inclusive ranges of datagram numbers.
    List(Vec<(u64, u64)>),
}

impl Selector {
    /// Parses a `-l`/`-Z` value.
    pub fn parse(flag: char, value: &str) -> Result<Selector, String> {
        let bad = || format!("-{flag} needs N% or a list like 1,2,5-7, not {value:?}");
        if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            return Ok(Selector::Random(p / 100.0));
        }
        let mut ranges = Vec::new();
        for part in value.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            if a == 0 || b < a {
                return Err(bad());
            }
            ranges.push((a, b));
        }
        Ok(Selector::List(ranges))
    }
}

/// The send filter for `-l` (drop silently) and `-Z` (fail as unreachable); `-Z` is checked
/// first. Datagrams are numbered from 1 in the order the engine asks for them.
pub fn send_filter(
    loss: Option<Selector>,
    fail: Option<Selector>,
    seed: u64,
) -> impl FnMut(&Transmit) -> SendAction + Send + 'static {
    let mut n = 0u64;
    let mut rng = seed | 1;
    move |_t| {
        n += 1;
        let mut hit = |s: &Option<Selector>| match s {
            None => false,
            Some(Selector::List(r)) => r.iter().any(|&(a, b)| (a..=b).contains(&n)),
            Some(Selector::Random(p)) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 11) as f64 / (1u64 << 53) as f64) < *p
            }
        };
        if hit(&fail) {
            log::info!("datagram {n}: send failure injected (-Z)");
            SendAction::Fail(SendErrorKind::Unreachable)
        } else if hit(&loss) {
            log::info!("datagram {n}: dropped (-l)");
            SendAction::Drop
        } else {
            SendAction::Send
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(3);

struct StderrLogger(&'static str);

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= max_level(LEVEL.load(Ordering::Relaxed))
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            // Named threads (coap-server's -W) say which one speaks.
            let thread = std::thread::current();
            let _ = match thread.name().filter(|n| *n != "main") {
                Some(name) => writeln!(
                    std::io::stderr(),
                    "{} [{name}] {}: {}",
                    self.0,
                    record.level(),
                    record.args()
                ),
                None => writeln!(
                    std::io::stderr(),
                    "{} {}: {}",
                    self.0,
                    record.level(),
                    record.args()
                ),
            };
        }
    }
    fn flush(&self) {}
}

fn max_level(v: u8) -> log::LevelFilter {
    // libcoap: 3 err, 4 warning, 5 notice, 6 info, 7 debug, 8+ more debug.
    match v {
        0..=3 => log::LevelFilter::Error,
        4 => log::LevelFilter::Warn,
        5 | 6 => log::LevelFilter::Info,
        7 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Installs a stderr logger for libcoap's `-v` level (default 3: errors only).
pub fn init_logging(prog: &'static str, verbosity: &str) -> Result<(), String> {
    let v: u8 = verbosity
        .parse()
        .ok()
        .filter(|v| *v <= 9)
        .ok_or_else(|| format!("-v needs a level from 0 to 9, not {verbosity:?}"))?;
    LEVEL.store(v, Ordering::Relaxed);
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger(prog)));
    let _ = log::set_logger(logger);
    log::set_max_level(max_level(v));
    Ok(())
}

/// The libcoap keepalive choice of both binaries for `-K seconds`: ping after K seconds of
/// silence, fail the session after K more.
pub fn keepalive(k: std::time::Duration) -> coap_engine::Keepalive {
    coap_engine::Keepalive {
        interval: k.into(),
        timeout: k.into(),
    }
}

/// libcoap's `-X size`, the largest message to take over TCP and TLS: at least 64 bytes
/// (libcoap asserts as much), at most what the CSM's Max-Message-Size option can say.
pub fn max_message_size(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|x| *x >= 64)
        .ok_or_else(|| {
            format!("-X needs a message size from 64 to 4294967295 bytes, not {value:?}")
        })
}

/// Content-format names accepted by `-t`/`-A` (libcoap's short names) or a number.
pub fn content_format(flag: char, value: &str) -> Result<u16, String> {
    let known = [
        ("text", 0),
        ("text/plain", 0),
        ("link", 40),
        ("link-format", 40),
        ("application/link-format", 40),
        ("xml", 41),
        ("application/xml", 41),
        ("binary", 42),
        ("octet-stream", 42),
        ("application/octet-stream", 42),
        ("exi", 47),
        ("json", 50),
        ("application/json", 50),
        ("cbor", 60),
        ("application/cbor", 60),
    ];
    let lower = value.to_ascii_lowercase();
    if let Some(&(_, n)) = known.iter().find(|(name, _)| *name == lower) {
        return Ok(n);
    }
    value
        .parse()
        .map_err(|_| format!("-{flag}: unknown content format {value:?} (a number or text, link, xml, binary, exi, json, cbor)"))
}

/// Decodes an RFC 7252 `uint` option value, leniently (a value over 4 bytes keeps its low
/// 32 bits): for display and for checks that only compare. coap-lite's `OptionValueU32`,
/// which encodes the values sent, refuses such a value and takes it only by owned `Vec`.
pub fn decode_uint(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

/// libcoap's `-c certfile [-j keyfile]`: our certificate and its key (in the certificate
/// file when there is no `-j`, as libcoap allows). The error names the flags, so a bad file
/// is one clear line.
pub fn load_certificate(cert: &str, key: Option<&str>) -> Result<CertifiedKey, String> {
    CertifiedKey::from_pem_files(Path::new(cert), key.map(Path::new)).map_err(|e| match key {
        Some(key) => format!("-c {cert} -j {key}: {e}"),
        None => format!("-c {cert}: {e}"),
    })
}

/// The trust anchors of libcoap's `-C cafile` and `-R trust_casfile` flags, in the order
/// given. Both add CAs to one trusted set here: libcoap's `-C` also restricts a peer to the
/// CA that issued our own certificate (its "common CA" check), which a set of anchors that
/// each issue end-entity certificates directly makes moot. `-R` may name a directory, whose
/// `.pem` and `.crt` files are read, as libcoap's can.
pub fn load_trust_anchors(
    files: &[(char, String)],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut anchors = Vec::new();
    for (flag, file) in files {
        let path = Path::new(file);
        let mut paths = vec![path.to_path_buf()];
        if *flag == 'R' && path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| format!("-R {file}: {e}"))?;
            paths = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
                .collect();
            paths.sort();
            if paths.is_empty() {
                return Err(format!("-R {file}: no .pem or .crt file in this directory"));
            }
        }
        for p in paths {
            let found = coap_engine::dtls::trust_anchors_from_pem_file(&p)
                .map_err(|e| format!("-{flag} {}: {e}", p.display()))?;
            anchors.extend(found);
        }
    }
    Ok(anchors)
}
