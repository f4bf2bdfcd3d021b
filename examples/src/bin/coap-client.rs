//! `coap-client`: a CoAP client on the mio adapter with the flags of libcoap's example
//! clients (`coap-client-notls`, and for `coaps://` and `coaps+tcp://`
//! `coap-client-openssl`).
//!
//! ```text
//! coap-client [-m method] [-e text | -f file] [-o file] [-t type] [-A type] [-N]
//!             [-b [num,]size] [-T token] [-O num,text]... [-K seconds] [-B seconds]
//!             [-s seconds] [-w] [-r] [-X size]
//!             [-l list|loss%] [-Z list|fail%] [-v num]
//!             [-k key -u identity] [-c certfile [-j keyfile]] [-C cafile] [-R trust_casfile]
//!             [-n] coap[s][+tcp]://host[:port]/path?query
//! ```
//!
//! The response payload goes to stdout (or `-o file`) as received: a block-wise (RFC 7959)
//! response whole, once the engine has reassembled it. Exit status: 0 on a 2.xx
//! response; 1 on a 4.xx/5.xx response (the code on stderr, the payload still printed); 3
//! when no response came (timeout, reset, send failure, keepalive failure, failed DTLS or
//! TLS handshake, a connection refused, reset or closed: one line on stderr); 2 for bad
//! flags, URIs or credential files.
//!
//! `coaps://` (default port 5684) runs the same request over DTLS 1.2 (RFC 7252 §9); every
//! other flag works as over `coap://`. With `-k key -u identity` the client uses that
//! pre-shared key (libcoap 4.3.1 refuses `-k` without `-u` too: there is no default
//! identity). Without `-k` it uses certificates: the server's is verified against the CAs
//! of `-C` and `-R` (both add to one trusted set) and against the URI's host (its name, also
//! sent as Uri-Host, or its IP address); `-c certfile [-j keyfile]` is our own, sent when
//! the server asks for one. Unlike libcoap, which then skips verification, certificate mode
//! without `-C`/`-R` is refused unless `-n` says to skip it on purpose, and `-n` prints a
//! warning. A handshake that fails (wrong key, unknown CA, name mismatch, no answer) exits
//! 3 with one line naming the cause, where libcoap's client exits 0. The security flags
//! with a `coap://` or `coap+tcp://` URI are a usage error (libcoap ignores them): a
//! request the user meant to protect never goes out in the clear.
//!
//! `coap+tcp://` and `coaps+tcp://` (RFC 8323; default ports 5683 and 5684) carry the same
//! request over one TCP connection, or TLS on it, on the mio adapter's `StreamDriver`; `-r`
//! turns `coap://` and `coaps://` URIs into them, as libcoap's `-r` does. TLS takes the
//! certificate flags with the meanings they have for DTLS; pre-shared keys (`-k`, `-u`) are
//! refused there (libcoap's OpenSSL build would do TLS-PSK; the engine's TLS layer does
//! certificates only). `-X size` is the largest message we accept on the connection (our
//! Capabilities and Settings Message's Max-Message-Size, 64 to 4294967295; libcoap's
//! default 8388864); messages we send are bounded by it and by the server's own. A body
//! larger than what the server accepts in one message goes block-wise (BERT where both
//! sides allow it), whatever `-b` says: on a stream a message is bounded by its size, not
//! cut at the block size, so `-b` only asks for response blocks of its size. A body
//! reassembled from blocks may be as large as a message may be by default (8388864 bytes,
//! or `-X` if larger), where UDP's bodies stop at 64 KiB. Flags about datagrams mean
//! nothing on a stream, as in libcoap: `-N` has no effect (RFC 8323 has no message types)
//! and `-l` drops nothing (libcoap's `-l` only applies to datagrams; at `-v 4` we say so);
//! `-Z`, ours, is refused over TCP. `-K` pings with 7.02 Ping. A connection refused, reset
//! or closed by the server, or one that does not open within `-B`, ends with one line and
//! exit status 3, as a refused certificate does.
//!
//! `-s seconds` observes the resource (RFC 7641), as libcoap's `-s` does: the GET goes out
//! with Observe = 0 and every notification's payload is written as it arrives (one after
//! the other, as libcoap's client writes them; `-w` ends each with a newline). The time
//! counts from the first notification (`-B` bounds the wait for it); when it is up, the
//! client deregisters with a GET carrying Observe = 1 and exits 0. libcoap 4.3.1's client
//! exits as soon as that GET is sent; ours waits up to 5 s for the answer, which lets the
//! Confirmable deregistration be retransmitted once if lost, and prints nothing of it. A
//! server that answers without Observe (it does not notify) ends it at once like a plain
//! request, and so does a notification that ends the observation (4.04 after a DELETE:
//! exit 1) or a failure (exit 3; with `-K`, a server that went silent is a keepalive
//! failure). When Max-Age passes without a notification the engine re-registers.
//!
//! `-K seconds` sets `Keepalive { interval: K, timeout: K }` on the session: a ping after K
//! seconds of silence (an Empty Confirmable message over UDP and DTLS, a 7.02 Ping over TCP
//! and TLS), a failure after K more. A path that dies while the client waits is then
//! reported as "keepalive failure" within 2K seconds instead of after the response timeout.
//!
//! `-b size` (a power of two from 16 to 1024) is the block size of both directions: request
//! bodies larger than it go in Block1 blocks of that size, and the first request asks for
//! response blocks of that size already (early negotiation, RFC 7959 §2.4), as libcoap's `-b`
//! does. `-b num,size` with `num` > 0 asks for that one block of the response only (a
//! Block2 option the engine leaves to us) and prints it. `-v 6` shows a response's Block2,
//! Size2 and Size1 (the server's limit, with 4.13 Request Entity Too Large) when it has them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::ControlFlow;
use std::time::{Duration, Instant as StdInstant};

use coap_engine::coap_lite::option_value::{OptionValueU16, OptionValueU32};
use coap_engine::coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use coap_engine::dtls::{Dtls, DtlsConfig, PskCredentials};
use coap_engine::tls::{Tls, TlsConfig};
use coap_engine::uri::{CoapUri, Host, Scheme};
use coap_engine::{
    CertificateError, Config, ConnectionFailure, Endpoint, Event, ExchangeError, FailureReason,
    Instant, RequestId, SecurityError, SendErrorKind, Transport,
};
use coap_engine_mio::{Driver, Handler, StreamDriver, StreamHandler};

#[path = "../cli.rs"]
mod cli;

const PROG: &str = "coap-client";
const HELP: &str = "\
Usage: coap-client [-m method] [-e text | -f file] [-o file] [-t type] [-A type] [-N]
                   [-b [num,]size] [-T token] [-O num,text]... [-K seconds] [-B seconds]
                   [-s seconds] [-w] [-r] [-X size] [-l list|loss%] [-Z list|fail%]
                   [-v num] [-k key -u identity] [-c certfile [-j keyfile]] [-C cafile]
                   [-R trust_casfile] [-n] URI
	URI		coap://host[:port]/path?query (IPv6 literals as coap://[::1]/path),
			coaps:// for DTLS (default port 5684), coap+tcp:// for TCP and
			coaps+tcp:// for TLS (RFC 8323; default ports 5683 and 5684)
	-m method	get|post|put|delete|fetch|patch|ipatch (default get)
	-e text		Payload text
	-f file		Payload from file ('-' for stdin)
	-o file		Write the response payload to file instead of stdout
	-t type		Content format of the payload (number or text, link, xml, binary, json, cbor)
	-A type		Accepted media type
	-N		Send a Non-confirmable request (no effect over TCP: RFC 8323 has no
			message types)
	-b [num,]size	Block size (16, 32, ... 1024) for request bodies and, asked for from
			the first request on, responses; with num > 0 get only block num
			(over TCP a request body goes whole when the server takes it)
	-T token	Token: text, or hex with a 0x prefix (up to 8 bytes)
	-O num,text	Add option num with text (hex if it starts with 0x); repeatable
	-K seconds	Keepalive: ping after this much silence (7.02 Ping over TCP), fail
			after as much again
	-B seconds	Give up after this many seconds (default 90)
	-s seconds	Observe the resource (RFC 7641) for this many seconds: print every
			notification, then deregister (GET with Observe 1)
	-w		Append a newline to the received data (each notification's)
	-r		Use a reliable transport: coap:// as coap+tcp://, coaps:// as
			coaps+tcp://
	-X size		Largest message to accept over TCP/TLS, announced in our CSM as
			Max-Message-Size (64 to 4294967295, default 8388864)
	-l list|loss%	Drop outgoing datagrams (list of numbers/ranges, or a probability);
			as libcoap's, it drops nothing over TCP
	-Z list|fail%	Like -l, but the send fails and the engine is told \"unreachable\"
			(UDP and DTLS only)
	-v num		Verbosity level (default 3, maximum 9)
	-h		This help
DTLS and TLS (coaps:// and coaps+tcp:// only; with coap:// or coap+tcp:// these
flags are an error)
	-k key		Pre-shared key (text); needs -u, as in libcoap 4.3.1 (DTLS only)
	-u identity	PSK identity to send (DTLS only)
	-c certfile	PEM certificate to present when the server asks for one (its key
			in the same file, or in -j)
	-j keyfile	PEM private key (ECDSA P-256 or P-384) of -c certfile
	-C cafile	PEM CA certificate(s) trusted to issue the server's certificate
	-R trust_casfile	Like -C (a file or a directory of .pem/.crt files)
	-n		Do not verify the server's certificate (encrypted, but anyone can
			pose as the server); without -k, one of -C, -R or -n is required
	The server's certificate must name the URI's host (DNS name or IP address).
	libcoap's -h match_hint_file is not supported.
Exit status: 0 on 2.xx, 1 on 4.xx/5.xx, 3 when no response came (a failed DTLS or
TLS handshake, a refused, reset or closed connection too), 2 on bad usage or
unreadable credentials.";

/// libcoap's default for `-X`: 8 MiB + 256 (its COAP_DEFAULT_MAX_PDU_RX_SIZE).
const DEFAULT_MAX_MESSAGE_SIZE: u32 = 8 * 1024 * 1024 + 256;

struct Request {
    peer: SocketAddr,
    /// The URI's (or `-r`'s): the transport, and whether it is secured.
    scheme: Scheme,
    /// `coaps://` and `coaps+tcp://`: the DTLS or TLS layer (credentials already loaded).
    security: Option<coap_engine::Security>,
    /// `-c` was given.
    have_certificate: bool,
    packet: Packet,
    keepalive: Option<Duration>,
    give_up: Duration,
    /// `-s`: observe for this long.
    observe: Option<Duration>,
    output: Option<String>,
    newline: bool,
    loss: Option<cli::Selector>,
    fail: Option<cli::Selector>,
    /// `-b [num,]size`: (block number, block size in bytes).
    block: Option<(u32, usize)>,
    /// `-X`: the largest message we accept over TCP.
    max_message_size: u32,
}

struct Client {
    id: Option<RequestId>,
    peer: SocketAddr,
    /// A request that gets nowhere may be stuck in the DTLS or TLS handshake, or in the
    /// TCP connection.
    scheme: Scheme,
    /// The server sent a 7.04 Release (RFC 8323 §5.5): the connection is ending.
    released: bool,
    /// The name the server's certificate must carry: the Uri-Host, else the address.
    server_name: String,
    /// `-c`: we have a certificate to show a server that asks for one.
    have_certificate: bool,
    deadline: StdInstant,
    give_up: Duration,
    output: Option<String>,
    newline: bool,
    /// Something was written to `output` (later notifications are appended).
    wrote: bool,
    /// `-s`: how long to observe once the first notification came.
    observe: Option<Duration>,
    /// When the observation is to end (set by its first notification).
    observe_until: Option<StdInstant>,
    /// Deregistered: how long to wait for the answer.
    deregistered_until: Option<StdInstant>,
    notifications: usize,
    /// Exit status and the line for stderr, once decided.
    outcome: Option<(i32, Option<String>)>,
}

/// How long the client waits for the answer to its deregistration at the end of `-s`: time
/// for one retransmission of the Confirmable GET (ACK_TIMEOUT × ACK_RANDOM_FACTOR = 3 s)
/// and its answer, so a lost one does not leave the server notifying a closed port.
const DEREGISTER_GRACE: Duration = Duration::from_secs(5);

fn main() {
    let args = cli::args();
    if cli::help_asked(&args) {
        println!("{HELP}");
        std::process::exit(0);
    }
    let request = parse_args(args).unwrap_or_else(|e| cli::usage_error(PROG, e));
    let (status, message) = run(request);
    if let Some(m) = message {
        eprintln!("{PROG}: {m}");
    }
    std::process::exit(status);
}

fn parse_args(args: Vec<OsString>) -> Result<Request, String> {
    use cli::Arg::{Short, Value};
    let mut method = RequestType::Get;
    let mut payload: Option<Vec<u8>> = None;
    let mut payload_file: Option<String> = None;
    let mut options: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut token = None;
    let mut non = false;
    let mut verbosity = "3".to_string();
    let mut reliable = false;
    let mut security = SecurityFlags::default();
    let mut positional = Vec::new();
    let mut r = Request {
        peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        scheme: Scheme::Coap,
        security: None,
        have_certificate: false,
        packet: Packet::new(),
        keepalive: None,
        give_up: Duration::from_secs(90),
        observe: None,
        output: None,
        newline: false,
        loss: None,
        fail: None,
        block: None,
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
    };
    let mut p = cli::parser(args);
    while let Some(arg) = p.next().map_err(cli::message)? {
        match arg {
            Short('m') => method = parse_method(&cli::value(&mut p)?)?,
            Short('e' | 'f') if payload.is_some() || payload_file.is_some() => {
                return Err("give at most one of -e and -f".into())
            }
            Short('e') => payload = Some(cli::value(&mut p)?.into_bytes()),
            // Read once the whole command line is known to be good: `-f -` waits for the
            // end of standard input.
            Short('f') => payload_file = Some(cli::value(&mut p)?),
            Short('o') => r.output = Some(cli::value(&mut p)?),
            Short(flag @ ('t' | 'A')) => {
                let format = cli::content_format(flag, &cli::value(&mut p)?)?;
                let number = if flag == 't' { 12 } else { 17 };
                options.push((number, OptionValueU16(format).into()));
            }
            Short('N') => non = true,
            Short('T') => {
                let value = cli::value(&mut p)?;
                let t = bytes_or_hex(&value).map_err(|e| format!("-T: {e}"))?;
                if t.len() > 8 {
                    return Err(format!(
                        "-T: a token has at most 8 bytes, {value:?} has {}",
                        t.len()
                    ));
                }
                token = Some(t);
            }
            Short('O') => options.push(parse_option(&cli::value(&mut p)?)?),
            Short('K') => {
                let k = cli::parse_seconds('K', &cli::value(&mut p)?)?;
                r.keepalive = (!k.is_zero()).then_some(k);
            }
            Short('B') => {
                r.give_up = cli::parse_seconds('B', &cli::value(&mut p)?)?;
                if r.give_up.is_zero() {
                    return Err("-B needs a number of seconds greater than 0".into());
                }
            }
            Short('w') => r.newline = true,
            Short('l') => r.loss = Some(cli::Selector::parse('l', &cli::value(&mut p)?)?),
            Short('Z') => r.fail = Some(cli::Selector::parse('Z', &cli::value(&mut p)?)?),
            Short('v') => verbosity = cli::value(&mut p)?,
            Short('s') => {
                let s = cli::parse_seconds('s', &cli::value(&mut p)?)?;
                if s.is_zero() {
                    return Err("-s needs a number of seconds greater than 0".into());
                }
                r.observe = Some(s);
            }
            Short('b') => r.block = Some(parse_block(&cli::value(&mut p)?)?),
            Short('r') => reliable = true,
            Short('X') => r.max_message_size = cli::max_message_size(&cli::value(&mut p)?)?,
            Short('h') => {
                return Err(format!(
                    "-h {}: libcoap's match_hint_file is not supported (use -u and -k)",
                    cli::value(&mut p)?
                ))
            }
            Short(flag @ ('k' | 'u' | 'c' | 'j' | 'C' | 'R')) => {
                security.set(flag, cli::value(&mut p)?)?
            }
            Short('n') => security.set('n', String::new())?,
            Value(v) => positional.push(cli::text(v)?),
            _ => return Err(cli::unexpected(arg)),
        }
    }
    let uri = match positional.as_slice() {
        [uri] => uri,
        [] => return Err("missing URI (coap[s][+tcp]://host[:port]/path)".into()),
        [_, extra, ..] => return Err(format!("unexpected argument {extra:?}")),
    };
    if r.observe.is_some() && !matches!(method, RequestType::Get | RequestType::Fetch) {
        return Err("-s observes with GET or FETCH only (RFC 7641 §2)".into());
    }
    let uri = coap_engine::uri::parse(uri).map_err(|e| format!("bad URI {uri:?}: {e}"))?;
    // libcoap's -r: the same URI over the reliable transport (the default ports are the
    // same, RFC 8323 §8).
    r.scheme = match uri.scheme() {
        s if !reliable => s,
        Scheme::Coap => Scheme::CoapTcp,
        Scheme::Coaps => Scheme::CoapsTcp,
        s => s,
    };
    let secure = r.scheme.is_secure();
    if let Some(flag) = security.first.filter(|_| !secure) {
        return Err(format!(
            "-{flag} is a security flag: use a coaps:// or coaps+tcp:// URI (the request \
             would go unprotected)"
        ));
    }
    let tcp = r.scheme.transport() == Transport::Tcp;
    if tcp && r.fail.is_some() {
        return Err(format!(
            "-Z fails datagram sends: it applies to coap:// and coaps://, not {}://",
            r.scheme
        ));
    }
    cli::init_logging(PROG, &verbosity)?;
    if tcp && r.loss.take().is_some() {
        // As libcoap's -l, which applies to datagrams only: a stream cannot lose a message.
        log::warn!("-l drops datagrams; over {}:// it drops nothing", r.scheme);
    }
    r.peer = resolve(&uri)?;
    if secure {
        r.have_certificate = security.certificate.is_some();
        r.security = Some(if tcp {
            security.tls(r.give_up)?
        } else {
            security.dtls(r.give_up)?
        });
    }

    let p = &mut r.packet;
    p.header.code = MessageClass::Request(method);
    if non {
        p.header.set_type(MessageType::NonConfirmable);
    }
    if let Some(t) = token {
        p.set_token(t);
    }
    // RFC 7252 §6.4: a host name travels as Uri-Host, as libcoap's client sends it; over
    // coaps:// it is also the name the server's certificate must carry.
    uri.apply_to(p);
    if options.iter().any(|(num, _)| *num == 3) {
        // An explicit `-O 3,name` takes the place of the URI's (one Uri-Host at most).
        p.clear_option(CoapOption::UriHost);
    }
    for (num, value) in options {
        p.add_option(CoapOption::from(num), value);
    }
    if let Some((num, size)) = r.block.filter(|(num, _)| *num > 0) {
        // One block of the response: the engine sends a request with its own Block2 (NUM >
        // 0) as it is and delivers the response as received (RFC 7959 §2.4).
        let szx = size.trailing_zeros() - 4;
        p.add_option_as(CoapOption::Block2, OptionValueU32(num << 4 | szx));
    }
    if let Some(file) = payload_file {
        let mut data = Vec::new();
        let read = if file == "-" {
            std::io::stdin().read_to_end(&mut data).map(drop)
        } else {
            std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut data).map(drop))
        };
        read.map_err(|e| format!("-f {file}: {e}"))?;
        payload = Some(data);
    }
    p.payload = payload.unwrap_or_default();
    Ok(r)
}

/// The DTLS and TLS flags as given (libcoap's client's names), checked together once the
/// URI says whether they apply, and which.
#[derive(Default)]
struct SecurityFlags {
    /// The first security flag given, for the error when the URI is not a secure one.
    first: Option<char>,
    key: Option<String>,
    identity: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
    /// `-C` and `-R` files, in order.
    trust: Vec<(char, String)>,
    no_verify: bool,
}

impl SecurityFlags {
    fn set(&mut self, flag: char, value: String) -> Result<(), String> {
        self.first.get_or_insert(flag);
        let slot = match flag {
            'k' => &mut self.key,
            'u' => &mut self.identity,
            'c' => &mut self.certificate,
            'j' => &mut self.private_key,
            'C' | 'R' => {
                self.trust.push((flag, value));
                return Ok(());
            }
            'n' => {
                self.no_verify = true;
                return Ok(());
            }
            _ => unreachable!("only security flags come here"),
        };
        if value.is_empty() {
            return Err(format!("-{flag} must not be empty"));
        }
        *slot = Some(value);
        Ok(())
    }

    /// The DTLS layer for a `coaps://` request: PSK with `-k`, else certificates.
    fn dtls(self, give_up: Duration) -> Result<coap_engine::Security, String> {
        let mut config = DtlsConfig {
            handshake_timeout: early(give_up).into(),
            ..DtlsConfig::default()
        };
        if self.private_key.is_some() && self.certificate.is_none() {
            return Err("-j keyfile is the key of -c certfile: give -c too".into());
        }
        match (self.key, self.identity) {
            (Some(key), Some(identity)) => {
                config.psk = Some(PskCredentials {
                    identity: identity.into_bytes(),
                    key: key.into_bytes(),
                });
            }
            (Some(_), None) => return Err("-k key needs -u identity (the PSK identity)".into()),
            (None, Some(_)) => return Err("-u identity needs -k key (the pre-shared key)".into()),
            (None, None) => {
                if self.trust.is_empty() && !self.no_verify {
                    return Err(
                        "coaps:// needs -k key -u identity (PSK), or -C cafile / -R \
                                trust_casfile to verify the server's certificate (-n skips \
                                the check)"
                            .into(),
                    );
                }
            }
        }
        if let Some(cert) = &self.certificate {
            config.certificate = Some(cli::load_certificate(cert, self.private_key.as_deref())?);
        }
        config.trust_anchors = cli::load_trust_anchors(&self.trust)?;
        config.verify_peer = !self.no_verify;
        let unverified = config.psk.is_none() && self.no_verify;
        let dtls = Dtls::new(config, coap_engine_mio::dtls_entropy())
            .map_err(|e| format!("DTLS credentials: {e}"))?;
        if unverified {
            warn_unverified();
        }
        Ok(coap_engine::Security::new(dtls))
    }

    /// The TLS layer for a `coaps+tcp://` request: certificates only.
    fn tls(self, give_up: Duration) -> Result<coap_engine::Security, String> {
        if let Some(flag) = [('k', &self.key), ('u', &self.identity)]
            .into_iter()
            .find_map(|(flag, given)| given.as_ref().map(|_| flag))
        {
            return Err(format!(
                "-{flag}: pre-shared keys work over coaps:// (DTLS) only; coaps+tcp:// (TLS) \
                 takes certificates: -C cafile or -R trust_casfile (-n skips the check)"
            ));
        }
        if self.private_key.is_some() && self.certificate.is_none() {
            return Err("-j keyfile is the key of -c certfile: give -c too".into());
        }
        if self.trust.is_empty() && !self.no_verify {
            return Err(
                "coaps+tcp:// needs -C cafile or -R trust_casfile to verify the server's \
                 certificate (-n skips the check)"
                    .into(),
            );
        }
        let certificate = match &self.certificate {
            Some(cert) => Some(cli::load_certificate(cert, self.private_key.as_deref())?),
            None => None,
        };
        let config = TlsConfig {
            certificate,
            trust_anchors: cli::load_trust_anchors(&self.trust)?,
            verify_peer: !self.no_verify,
            handshake_timeout: early(give_up).into(),
            ..TlsConfig::default()
        };
        let tls = Tls::new(config, coap_engine_mio::security_entropy())
            .map_err(|e| format!("TLS credentials: {e}"))?;
        if self.no_verify {
            warn_unverified();
        }
        Ok(coap_engine::Security::new(tls))
    }
}

/// Said every time `-n` skips the check of a certificate: nothing else would tell the user
/// that the server may not be the one the URI names. (With a PSK the key itself
/// authenticates the server.)
fn warn_unverified() {
    eprintln!(
        "{PROG}: WARNING: -n: the server's certificate is NOT verified; the connection is \
         encrypted, but anyone can pose as the server"
    );
}

/// When a handshake or a connect that stalls gives up: a little before -B does (by a
/// tenth of it, at most a second), so the user reads its own cause (a server that never
/// answers our Finished has most likely refused our key). At most 30 s, the engine's and
/// the stream driver's default.
fn early(give_up: Duration) -> Duration {
    give_up
        .saturating_sub((give_up / 10).min(Duration::from_secs(1)))
        .clamp(Duration::from_millis(1), Duration::from_secs(30))
}

/// libcoap's `-O num,text`: an option by number, its value text or `0x` hex (`-O 1,` is an
/// empty value).
fn parse_option(value: &str) -> Result<(u16, Vec<u8>), String> {
    let (num, text) = value
        .split_once(',')
        .ok_or_else(|| format!("-O needs num,text, not {value:?}"))?;
    let num: u16 = num
        .trim()
        .parse()
        .map_err(|_| format!("-O: bad option number {num:?}"))?;
    Ok((num, bytes_or_hex(text).map_err(|e| format!("-O: {e}"))?))
}

/// libcoap's `-b [num,]size`: a block size that is a power of two from 16 to 1024 (SZX 0-6,
/// RFC 7959 §2.2) and an optional block number (20 bits).
fn parse_block(value: &str) -> Result<(u32, usize), String> {
    let (num, size) = match value.split_once(',') {
        Some((num, size)) => {
            let num = num
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n < 1 << 20)
                .ok_or_else(|| format!("-b: bad block number {num:?} (0 to 1048575)"))?;
            (num, size)
        }
        None => (0, value),
    };
    let size = size
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|s| s.is_power_of_two() && (16..=1024).contains(s))
        .ok_or_else(|| {
            format!("-b: the block size must be 16, 32, 64, 128, 256, 512 or 1024, not {size:?}")
        })?;
    Ok((num, size))
}

fn run(r: Request) -> (i32, Option<String>) {
    let transport = r.scheme.transport();
    let mut config = Config {
        keepalive: r.keepalive.map(cli::keepalive),
        security: r.security,
        transport,
        ..Config::default()
    };
    if let Some((_, size)) = r.block {
        config.blockwise.block_size = size;
        config.blockwise.early_negotiation = true;
    }
    if transport == Transport::Tcp {
        config.max_message_size = r.max_message_size as usize;
        // A body may be as large as a message may be by default, whether it comes whole
        // or, because -X asked for smaller messages, in blocks.
        config.blockwise.max_body_size = r.max_message_size.max(DEFAULT_MAX_MESSAGE_SIZE) as usize;
    }
    let server_name = r
        .packet
        .get_first_option(CoapOption::UriHost)
        .map_or(r.peer.ip().to_string(), |h| {
            String::from_utf8_lossy(h).into_owned()
        });
    let mut client = Client {
        id: None,
        peer: r.peer,
        scheme: r.scheme,
        released: false,
        server_name,
        have_certificate: r.have_certificate,
        deadline: StdInstant::now() + r.give_up,
        give_up: r.give_up,
        output: r.output,
        newline: r.newline,
        wrote: false,
        observe: r.observe,
        observe_until: None,
        deregistered_until: None,
        notifications: 0,
        outcome: None,
    };
    let started = match transport {
        Transport::Udp => {
            let local: SocketAddr = match r.peer {
                SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
                SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
            };
            Driver::bind(local, config).map(|mut driver| {
                if r.loss.is_some() || r.fail.is_some() {
                    let seed = coap_engine_mio::random_seed();
                    driver.set_send_filter(cli::send_filter(r.loss, r.fail, seed));
                }
                exchange(&mut driver, &mut client, &r.packet)
            })
        }
        Transport::Tcp => StreamDriver::new(config).map(|mut driver| {
            // A server that never accepts fails with its own words before -B ends it.
            driver.set_connect_timeout(early(r.give_up));
            exchange(&mut driver, &mut client, &r.packet)
        }),
    };
    match started {
        Err(e) => (3, Some(format!("cannot open a socket: {e}"))),
        Ok(Err(failed)) => failed,
        Ok(Ok(())) => client
            .outcome
            .unwrap_or((3, Some("stopped without an answer".into()))),
    }
}

/// Sends the request (or registers the observation) and runs the driver until the client
/// has its outcome; then ends the session the way its transport ends one in order.
fn exchange<D: Io>(
    driver: &mut D,
    client: &mut Client,
    packet: &Packet,
) -> Result<(), (i32, Option<String>)> {
    let peer = client.peer;
    let now = driver.now();
    // Keepalive (-K) is in the endpoint's config, so it watches the session this opens
    // from now on, whatever happens to the request; the session gets the request's
    // Uri-Host as the name the server's certificate must carry.
    let sent = if client.observe.is_some() {
        driver.endpoint_mut().observe(now, peer, packet)
    } else {
        driver.endpoint_mut().request(now, peer, packet)
    };
    driver.drive();
    match sent {
        Ok(id) => client.id = Some(id),
        Err(e) => return Err((3, Some(format!("cannot send the request: {e}")))),
    }
    if let Err(e) = driver.run_client(client) {
        return Err((3, Some(format!("I/O error: {e}"))));
    }
    if client.scheme != Scheme::Coap {
        // A close_notify (DTLS), or a 7.04 Release then a FIN (TCP, TLS): the server can
        // free the session now rather than when it times out or finds the connection gone.
        let now = driver.now();
        if driver.endpoint_mut().close_session(now, peer).is_ok() {
            driver.drive();
        }
    }
    Ok(())
}

/// What the client needs of its driver, whichever transport it moves: a datagram [`Driver`]
/// or a [`StreamDriver`].
trait Io {
    fn now(&self) -> Instant;
    fn endpoint(&self) -> &Endpoint;
    fn endpoint_mut(&mut self) -> &mut Endpoint;
    fn drive(&mut self);
    fn run_client(&mut self, client: &mut Client) -> std::io::Result<()>;
}

impl Io for Driver {
    fn now(&self) -> Instant {
        Driver::now(self)
    }
    fn endpoint(&self) -> &Endpoint {
        Driver::endpoint(self)
    }
    fn endpoint_mut(&mut self) -> &mut Endpoint {
        Driver::endpoint_mut(self)
    }
    fn drive(&mut self) {
        Driver::drive(self)
    }
    fn run_client(&mut self, client: &mut Client) -> std::io::Result<()> {
        self.run(client)
    }
}

impl Io for StreamDriver {
    fn now(&self) -> Instant {
        StreamDriver::now(self)
    }
    fn endpoint(&self) -> &Endpoint {
        StreamDriver::endpoint(self)
    }
    fn endpoint_mut(&mut self) -> &mut Endpoint {
        StreamDriver::endpoint_mut(self)
    }
    fn drive(&mut self) {
        StreamDriver::drive(self)
    }
    fn run_client(&mut self, client: &mut Client) -> std::io::Result<()> {
        self.run(client)
    }
}

impl Client {
    /// What to add to a handshake failure for the user to act on it.
    fn hint(&self, e: SecurityError) -> String {
        match e {
            SecurityError::Certificate(CertificateError::NameMismatch) => {
                format!(" (wanted {:?})", self.server_name)
            }
            // Alerts about a certificate are about ours: without -c the server was shown
            // only a placeholder nobody trusts.
            // 116: TLS 1.3's certificate_required.
            SecurityError::Alert(42..=46 | 48 | 49 | 116) if !self.have_certificate => {
                " (the server wants a client certificate: -c certfile [-j keyfile])".into()
            }
            _ => String::new(),
        }
    }

    /// Writes a payload (plus the `-w` newline) to stdout or the `-o` file, which the first
    /// write creates and later ones append to.
    fn write(&mut self, payload: Vec<u8>) -> std::io::Result<()> {
        let mut data = payload;
        if self.newline {
            data.push(b'\n');
        }
        let written = match &self.output {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(self.wrote)
                .truncate(!self.wrote)
                .open(path)
                .and_then(|mut f| f.write_all(&data)),
            None => std::io::stdout()
                .write_all(&data)
                .and_then(|_| std::io::stdout().flush()),
        };
        self.wrote = true;
        written
    }
}

impl Handler for Client {
    fn on_event(&mut self, _driver: &mut Driver, event: Event) -> ControlFlow<()> {
        self.event(event)
    }

    fn on_tick(&mut self, driver: &mut Driver) -> ControlFlow<(), Option<StdInstant>> {
        self.tick(driver)
    }
}

impl StreamHandler for Client {
    fn on_event(&mut self, _driver: &mut StreamDriver, event: Event) -> ControlFlow<()> {
        self.event(event)
    }

    fn on_tick(&mut self, driver: &mut StreamDriver) -> ControlFlow<(), Option<StdInstant>> {
        self.tick(driver)
    }
}

impl Client {
    fn event(&mut self, event: Event) -> ControlFlow<()> {
        match event {
            Event::Notification { id, response, .. } if Some(id) == self.id => {
                self.notifications += 1;
                let code = u8::from(response.header.code);
                log::info!(
                    "notification {} ({}.{:02}, Observe {}){}",
                    self.notifications,
                    code >> 5,
                    code & 0x1f,
                    response
                        .get_observe_value()
                        .and_then(Result::ok)
                        .map_or("?".to_string(), |v| v.to_string()),
                    response_options(&response)
                );
                if self.observe_until.is_none() {
                    // libcoap counts -s from the observation's establishment.
                    self.observe_until = self.observe.map(|s| StdInstant::now() + s);
                }
                if let Err(e) = self.write(response.payload) {
                    self.outcome = Some((3, Some(format!("cannot write the payload: {e}"))));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Event::Response { id, response, .. }
                if Some(id) == self.id && self.deregistered_until.is_some() =>
            {
                log::info!(
                    "deregistered after {} notification(s): {}",
                    self.notifications,
                    response.header.code
                );
                self.outcome = Some((0, None));
                ControlFlow::Break(())
            }
            Event::RequestFailed { id, error, .. }
                if Some(id) == self.id && self.deregistered_until.is_some() =>
            {
                log::info!("deregistration unanswered ({error}); the observation is over");
                self.outcome = Some((0, None));
                ControlFlow::Break(())
            }
            Event::Response { id, response, .. } if Some(id) == self.id => {
                let code = u8::from(response.header.code);
                let (class, detail) = (code >> 5, code & 0x1f);
                // What a user needs to go on from here (libcoap's client shows the whole
                // response at -v 6): where a created resource is, its ETag for If-Match or
                // a 2.03 revalidation, its Content-Format.
                log::info!(
                    "{class}.{detail:02} {}{}",
                    code_name(class, detail),
                    response_options(&response)
                );
                if self.observe.is_some() {
                    // The observation ended (or never started: no Observe in the answer).
                    log::info!(
                        "observation ended after {} notification(s)",
                        self.notifications
                    );
                }
                let written = self.write(response.payload);
                self.outcome = Some(if let Err(e) = written {
                    (3, Some(format!("cannot write the payload: {e}")))
                } else if class == 2 {
                    (0, None)
                } else {
                    (
                        1,
                        Some(format!("{class}.{detail:02} {}", code_name(class, detail))),
                    )
                });
                ControlFlow::Break(())
            }
            Event::RequestFailed { id, peer, error } if Some(id) == self.id => {
                let reason = match error {
                    ExchangeError::SessionFailed(FailureReason::KeepaliveTimeout {
                        silent_for,
                    }) => {
                        format!("keepalive failure: nothing heard from {peer} for {silent_for:?}")
                    }
                    ExchangeError::Timeout => format!("timeout: no response from {peer}"),
                    ExchangeError::Reset => format!("reset: {peer} answered with Reset"),
                    ExchangeError::SendFailed(kind) => format!("send failure: {kind}"),
                    // The handshake's own words: wrong key, unknown CA, name mismatch, ...
                    ExchangeError::SessionFailed(FailureReason::Security(e)) => {
                        let layer = if self.scheme == Scheme::Coaps {
                            "DTLS"
                        } else {
                            "TLS"
                        };
                        format!("{layer} with {peer}: {e}{}", self.hint(e))
                    }
                    ExchangeError::SessionFailed(FailureReason::Connection(c)) => {
                        connection_failure(peer, c, self.notifications > 0)
                    }
                    ExchangeError::SessionClosed if self.released => {
                        let when = if self.notifications > 0 {
                            "during the observation"
                        } else {
                            "before answering"
                        };
                        format!("{peer} released the connection (7.04 Release) {when}")
                    }
                    other => format!("request failed: {other}"),
                };
                self.outcome = Some((3, Some(reason)));
                ControlFlow::Break(())
            }
            Event::Released { peer, .. } if peer == self.peer => {
                log::info!("{peer} sent 7.04 Release: it is closing the connection");
                self.released = true;
                ControlFlow::Continue(())
            }
            Event::SendFailed { peer, kind, .. } => {
                log::info!("send to {peer} failed: {kind}");
                ControlFlow::Continue(())
            }
            other => {
                log::debug!("{other:?}");
                ControlFlow::Continue(())
            }
        }
    }

    fn tick<D: Io>(&mut self, driver: &mut D) -> ControlFlow<(), Option<StdInstant>> {
        let now = StdInstant::now();
        if let Some(until) = self.deregistered_until {
            if now >= until {
                log::info!("no answer to the deregistration; the observation is over");
                self.outcome = Some((0, None));
                return ControlFlow::Break(());
            }
            return ControlFlow::Continue(Some(until));
        }
        if let Some(until) = self.observe_until {
            if now < until {
                return ControlFlow::Continue(Some(until));
            }
            // -s is up: deregister (RFC 7641 §3.6), as libcoap's client does.
            let id = self.id.expect("an observation has an id");
            let t = driver.now();
            if let Err(e) = driver.endpoint_mut().deregister(t, id) {
                log::info!("cannot deregister ({e}); the observation is over");
                self.outcome = Some((0, None));
                return ControlFlow::Break(());
            }
            driver.drive();
            let until = now + DEREGISTER_GRACE;
            self.deregistered_until = Some(until);
            return ControlFlow::Continue(Some(until));
        }
        if now >= self.deadline {
            let s = self.give_up.as_secs_f64();
            let opening = self.scheme != Scheme::Coap
                && !driver
                    .endpoint()
                    .session_info(self.peer)
                    .is_some_and(|i| i.established);
            let what = match self.scheme {
                Scheme::Coap => "",
                Scheme::Coaps => "the DTLS handshake",
                Scheme::CoapTcp => "the connection (TCP, then the server's CSM)",
                Scheme::CoapsTcp => "the connection (TCP, TLS, then the server's CSM)",
            };
            let message = if opening {
                format!(
                    "timeout: {what} with {} did not complete within -B {s} s",
                    self.peer
                )
            } else {
                format!("timeout: no response within -B {s} s")
            };
            self.outcome = Some((3, Some(message)));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(Some(self.deadline))
    }
}

/// One line for a connection that failed: refused, reset, closed, aborted. `observing`:
/// notifications came before it did.
fn connection_failure(peer: SocketAddr, failure: ConnectionFailure, observing: bool) -> String {
    let when = if observing {
        "during the observation"
    } else {
        "before answering"
    };
    match failure {
        ConnectionFailure::ConnectFailed(SendErrorKind::Refused) => {
            format!("connection refused by {peer} (nothing listens on that port?)")
        }
        ConnectionFailure::ConnectFailed(kind) => format!("cannot connect to {peer}: {kind}"),
        ConnectionFailure::Reset => format!("connection reset by {peer} {when}"),
        ConnectionFailure::Closed => format!("{peer} closed the connection {when}"),
        other => format!("connection to {peer}: {other}"),
    }
}

fn parse_method(m: &str) -> Result<RequestType, String> {
    Ok(match m.to_ascii_lowercase().as_str() {
        "get" => RequestType::Get,
        "post" => RequestType::Post,
        "put" => RequestType::Put,
        "delete" => RequestType::Delete,
        "fetch" => RequestType::Fetch,
        "patch" => RequestType::Patch,
        "ipatch" => RequestType::IPatch,
        _ => {
            return Err(format!(
                "-m: unknown method {m:?} (get|post|put|delete|fetch|patch|ipatch)"
            ))
        }
    })
}

/// Text as bytes, or hex after a `0x` prefix (libcoap's `-O` convention, also used for `-T`).
fn bytes_or_hex(s: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) else {
        return Ok(s.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad hex {s:?} (two hex digits per byte)"));
    }
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
        .collect())
}

/// The address of the URI's host: its IP address, or the first its name (or its zone's
/// interface name, which the system's resolver knows) resolves to.
fn resolve(uri: &CoapUri) -> Result<SocketAddr, String> {
    if let Some(address) = uri.socket_addr() {
        return Ok(address);
    }
    let host = match (uri.host(), uri.zone()) {
        (Host::Name(name), _) => name.clone(),
        (Host::Ip(ip), Some(zone)) => format!("{ip}%{zone}"),
        (Host::Ip(ip), None) => ip.to_string(),
    };
    (host.as_str(), uri.port())
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve host {host:?}"))
}

/// `; Location: /a/b?x=1; ETag: 0x..; Content-Format: N` for the options a response carries
/// (Location-Path and Location-Query joined into one relative URI, RFC 7252 §5.10.7).
fn response_options(p: &Packet) -> String {
    let values = |o: CoapOption| -> Vec<Vec<u8>> {
        p.get_option(o)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let (path, query) = (
        values(CoapOption::LocationPath),
        values(CoapOption::LocationQuery),
    );
    if !path.is_empty() || !query.is_empty() {
        out.push_str("; Location: ");
        for s in &path {
            out.push('/');
            out.push_str(&percent_encode(s, b"&"));
        }
        for (i, q) in query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(q, b"/?"));
        }
    }
    if let Some(etag) = values(CoapOption::ETag).first() {
        let hex: String = etag.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("; ETag: 0x{hex}"));
    }
    if let Some(cf) = values(CoapOption::ContentFormat).first() {
        out.push_str(&format!("; Content-Format: {}", cli::decode_uint(cf)));
    }
    // Only a response to `-b num,size` keeps its Block2 (the engine takes it off the whole
    // bodies it reassembles).
    if let Some(b) = values(CoapOption::Block2).first() {
        let v = cli::decode_uint(b);
        let more = if v & 8 != 0 { "M" } else { "_" };
        out.push_str(&format!("; Block2: {}/{more}/{}", v >> 4, 16 << (v & 7)));
    }
    // Size2: the whole body's size (with one block); Size1: the largest request body the
    // server takes (with 4.13, RFC 7959 §2.9.3).
    for (o, name) in [(CoapOption::Size2, "Size2"), (CoapOption::Size1, "Size1")] {
        if let Some(v) = values(o).first() {
            out.push_str(&format!("; {name}: {}", cli::decode_uint(v)));
        }
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters, the sub-delims other than `&`,
/// `:`, `@` and `extra`: `&` for a path segment, `/?` for a query (the sets of RFC 7252
/// §6.5 steps 8–9).
fn percent_encode(bytes: &[u8], extra: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=:@".contains(&b) || extra.contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// RFC 7252 §12.1.2 response code names.
fn code_name(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (2, 1) => "Created",
        (2, 2) => "Deleted",
        (2, 3) => "Valid",
        (2, 4) => "Changed",
        (2, 5) => "Content",
        (2, 31) => "Continue",
        (4, 0) => "Bad Request",
        (4, 1) => "Unauthorized",
        (4, 2) => "Bad Option",
        (4, 3) => "Forbidden",
        (4, 4) => "Not Found",
        (4, 5) => "Method Not Allowed",
        (4, 6) => "Not Acceptable",
        (4, 8) => "Request Entity Incomplete",
        (4, 12) => "Precondition Failed",
        (4, 13) => "Request Entity Too Large",
        (4, 15) => "Unsupported Content-Format",
        (5, 0) => "Internal Server Error",
        (5, 1) => "Not Implemented",
        (5, 2) => "Bad Gateway",
        (5, 3) => "Service Unavailable",
        (5, 4) => "Gateway Timeout",
        (5, 5) => "Proxying Not Supported",
        (2, _) => "success",
        _ => "error response",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Request, String> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    const URI: &str = "coap://127.0.0.1/";

    #[test]
    fn values_come_joined_or_separate_as_with_libcoaps_getopt() {
        for (joined, separate) in [
            (&["-B5", URI][..], &["-B", "5", URI][..]),
            (&["-mput", URI], &["-m", "put", URI]),
            (&["-O1,0x0a", URI], &["-O", "1,0x0a", URI]),
            (&["-b2,64", URI], &["-b", "2,64", URI]),
            (&["-s10", URI], &["-s", "10", URI]),
        ] {
            let (a, b) = (parse(joined).unwrap(), parse(separate).unwrap());
            assert_eq!(a.give_up, b.give_up, "{joined:?}");
            assert_eq!(a.observe, b.observe, "{joined:?}");
            assert_eq!(a.block, b.block, "{joined:?}");
            assert_eq!(a.packet.to_bytes(), b.packet.to_bytes(), "{joined:?}");
        }
        let r = parse(&["-B5", "-mput", "-O1,0x0a", URI]).unwrap();
        assert_eq!(r.give_up, Duration::from_secs(5));
        assert_eq!(
            r.packet.header.code,
            MessageClass::Request(RequestType::Put)
        );
        let if_match = r.packet.get_option(CoapOption::IfMatch).unwrap();
        assert_eq!(if_match.iter().collect::<Vec<_>>(), [&vec![0x0a]]);
        assert_eq!(
            parse(&["-s10", URI]).unwrap().observe,
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse(&["-b2,64", URI]).unwrap().block, Some((2, 64)));
    }

    #[test]
    fn letters_without_a_value_cluster_before_one_with() {
        // -N, -w and -r take no value: `-NwB5` is `-N -w -B 5`.
        let r = parse(&["-NwB5", URI]).unwrap();
        assert_eq!(r.packet.header.get_type(), MessageType::NonConfirmable);
        assert!(r.newline);
        assert_eq!(r.give_up, Duration::from_secs(5));
        let r = parse(&["-rN", URI]).unwrap();
        assert_eq!(r.scheme, Scheme::CoapTcp);
        assert_eq!(r.packet.header.get_type(), MessageType::NonConfirmable);
        // A letter that takes a value takes the rest of the cluster: `-Bw` is `-B w`.
        let err = parse(&["-Bw", URI]).err().unwrap();
        assert!(err.contains("-B needs a number of seconds"), "{err}");
    }

    #[test]
    fn a_value_is_taken_as_given_even_with_a_dash_or_equals_sign() {
        assert_eq!(parse(&["-e", "-x", URI]).unwrap().packet.payload, b"-x");
        assert_eq!(parse(&["-e", "--", URI]).unwrap().packet.payload, b"--");
        // getopt's reading: the `=` is part of the value.
        assert_eq!(parse(&["-e=x", URI]).unwrap().packet.payload, b"=x");
        assert_eq!(parse(&["-e", "", URI]).unwrap().packet.payload, b"");
    }

    #[test]
    fn the_uri_is_the_one_positional_argument_wherever_it_stands() {
        let after = parse(&[URI, "-m", "put"]).unwrap();
        assert_eq!(
            after.packet.header.code,
            MessageClass::Request(RequestType::Put)
        );
        let r = parse(&["-m", "put", "--", URI]).unwrap();
        assert_eq!(
            r.packet.header.code,
            MessageClass::Request(RequestType::Put)
        );
        // After `--` nothing is an option.
        assert_eq!(
            parse(&["--", URI, "-m"]).err().unwrap(),
            "unexpected argument \"-m\""
        );
        // `-q` after `--` is the URI, not an unknown option.
        let err = parse(&["--", "-q"]).err().unwrap();
        assert!(err.starts_with("bad URI \"-q\": "), "{err}");
        assert_eq!(
            parse(&[URI, URI]).err().unwrap(),
            format!("unexpected argument {URI:?}")
        );
        assert!(parse(&["-m", "put"])
            .err()
            .unwrap()
            .starts_with("missing URI"));
    }

    #[test]
    fn command_line_errors_are_one_line_naming_the_flag() {
        for (args, want) in [
            (&["-q", URI][..], "unknown option -q"),
            (&["-Nq", URI], "unknown option -q"),
            (&["--verbose", URI], "unknown option --verbose"),
            (&["--m=put", URI], "unknown option --m"),
            (&[URI, "-m"], "option -m needs an argument"),
            (&[URI, "-NB"], "option -B needs an argument"),
            (
                &["-B", "soon", URI],
                "-B needs a number of seconds, not \"soon\"",
            ),
            (
                &["-K", "-1", URI],
                "-K needs a number of seconds, not \"-1\"",
            ),
            (&["-O", "x,y", URI], "-O: bad option number \"x\""),
            (&["-O", "1", URI], "-O needs num,text, not \"1\""),
            (
                &["-v", "10", URI],
                "-v needs a level from 0 to 9, not \"10\"",
            ),
        ] {
            assert_eq!(parse(args).err().as_deref(), Some(want), "{args:?}");
        }
    }

    #[test]
    fn the_body_file_is_read_only_once_the_command_line_is_good() {
        let missing = "/nonexistent/body";
        let err = parse(&["-f", missing, URI]).err().unwrap();
        assert!(err.starts_with("-f /nonexistent/body: "), "{err}");
        // A mistake later on the line is reported first (`-f -` would wait for stdin).
        for (args, want) in [
            (&["-f", missing, "-q", URI][..], "unknown option -q"),
            (&["-f", missing, URI, "-B"], "option -B needs an argument"),
            (
                &["-f", missing, "-e", "x", URI],
                "give at most one of -e and -f",
            ),
            (
                &["-e", "x", "-f", missing, URI],
                "give at most one of -e and -f",
            ),
        ] {
            assert_eq!(parse(args).err().as_deref(), Some(want), "{args:?}");
        }
    }

    #[test]
    fn an_argument_that_is_not_utf8_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0x2d, 0x65, 0xff]);
        let err = parse_args(vec![bad, URI.into()]).err().unwrap();
        assert_eq!(err, "argument \"\\xFF\" is not UTF-8");
        let bad = OsString::from_vec(vec![b'c', 0xff]);
        let err = parse_args(vec![bad]).err().unwrap();
        assert!(err.ends_with("is not UTF-8"), "{err}");
    }

    #[test]
    fn uint_options_are_sent_in_their_shortest_form() {
        let option = |args: &[&str], o: CoapOption| {
            let r = parse(&[args, &[URI]].concat()).unwrap();
            r.packet.get_first_option(o).cloned()
        };
        assert_eq!(
            option(&["-t", "text"], CoapOption::ContentFormat),
            Some(vec![])
        );
        assert_eq!(
            option(&["-t", "json"], CoapOption::ContentFormat),
            Some(vec![50])
        );
        assert_eq!(
            option(&["-A", "11542"], CoapOption::Accept),
            Some(vec![0x2d, 0x16])
        );
        // Block2 NUM 2, SZX 2 (64 bytes).
        assert_eq!(
            option(&["-b", "2,64"], CoapOption::Block2),
            Some(vec![0x22])
        );
        assert_eq!(
            option(&["-b", "4096,16"], CoapOption::Block2),
            Some(vec![0x01, 0x00, 0x00])
        );
    }

    #[test]
    fn tokens_and_options_take_text_or_hex() {
        assert_eq!(bytes_or_hex("ab").unwrap(), b"ab");
        assert_eq!(bytes_or_hex("0x0aff").unwrap(), vec![0x0a, 0xff]);
        assert!(bytes_or_hex("0xabc").is_err());
    }

    #[test]
    fn block_flags_take_libcoaps_num_and_size() {
        assert_eq!(parse_block("64").unwrap(), (0, 64));
        assert_eq!(parse_block("2,16").unwrap(), (2, 16));
        assert_eq!(parse_block("1024").unwrap(), (0, 1024));
        for bad in [
            "",
            "8",
            "48",
            "2048",
            "x",
            "1,",
            ",64",
            "-1,64",
            "1048576,64",
        ] {
            assert!(parse_block(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn response_options_show_location_etag_and_format() {
        let mut p = Packet::new();
        assert_eq!(response_options(&p), "");
        p.add_option(CoapOption::LocationPath, b"a b".to_vec());
        p.add_option(CoapOption::LocationPath, b"x&y".to_vec());
        p.add_option(CoapOption::LocationQuery, b"k=v/w".to_vec());
        p.add_option(CoapOption::LocationQuery, b"c&d".to_vec());
        p.add_option(CoapOption::ETag, vec![0x0b, 0xad]);
        p.add_option(CoapOption::ContentFormat, vec![50]);
        assert_eq!(
            response_options(&p),
            "; Location: /a%20b/x&y?k=v/w&c%26d; ETag: 0x0bad; Content-Format: 50"
        );
        let mut q = Packet::new();
        q.add_option(CoapOption::LocationQuery, b"only".to_vec());
        assert_eq!(response_options(&q), "; Location: ?only");
        let mut b = Packet::new();
        b.add_option(CoapOption::Block2, vec![0x2a]);
        b.add_option(CoapOption::Size2, vec![0x05, 0xdc]);
        assert_eq!(response_options(&b), "; Block2: 2/M/64; Size2: 1500");
        let mut t = Packet::new();
        t.add_option(CoapOption::Size1, vec![0x01, 0x00, 0x00]);
        assert_eq!(response_options(&t), "; Size1: 65536");
    }
}
