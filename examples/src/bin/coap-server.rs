//! `coap-server`: a CoAP server on the mio adapter with the flags of libcoap's example
//! servers (`coap-server-notls`, and for DTLS and TLS `coap-server-openssl`).
//!
//! ```text
//! coap-server [-A address] [-p port] [-v level] [-K seconds] [-d max] [-e] [-N]
//!             [-X size] [-x sessions] [-W threads] [-l list|loss%] [-Z list|fail%]
//!             [-k key [-h hint] [-i match_identity_file]]
//!             [-c certfile [-j keyfile] [-C cafile] [-R trust_casfile] [-n]]
//! ```
//!
//! Like libcoap's, the server listens for `coap://` (UDP) and `coap+tcp://` (TCP, RFC 8323)
//! on port `-p`, and with credentials for `coaps://` (DTLS) and `coaps+tcp://` (TLS) on
//! `-p` + 1; `-A` is the address of all of them. Each is a mio driver of its own (a
//! `Driver` for datagrams, a `StreamDriver` for connections) in one poll loop, and all serve
//! the same resources: what a PUT over one stores, a GET over another reads, and a
//! notification goes to the observers on every one. Credentials follow libcoap's server:
//! `-k key` accepts any PSK identity with that key (`-i` lines `hint,identity,key` give
//! chosen identities another key when the hint matches), `-h hint` is the identity hint
//! sent (default `CoAP`, an empty one sends none); `-c certfile [-j keyfile]` is the
//! certificate, and `-C`/`-R` CAs make a client certificate required and verified against
//! them (`-n` turns that off again). A client whose handshake fails is logged at `-v 4`
//! (warning). Credential files that cannot be used stop the server at start with one line
//! and exit status 1.
//!
//! TLS takes certificates only: with `-c` it listens next to DTLS with the same certificate
//! and the same client-certificate rules. libcoap's OpenSSL server also offers TLS-PSK on
//! that port with `-k` alone; the engine's TLS layer has no PSK cipher suites, so with `-k`
//! alone there is no TLS port (said at `-v 4`), and with both `-k` and `-c` TLS clients get
//! certificates. `-X size` is the largest message accepted over TCP and TLS, announced in
//! our Capabilities and Settings Message as Max-Message-Size (libcoap's default 8388864);
//! request bodies sent there in blocks are reassembled up to as much (8388864 bytes, or
//! `-X` if larger) where UDP's stop at 64 KiB. `-l` and `-Z` act on datagrams only, as
//! libcoap's `-l` does: a stream loses nothing.
//!
//! Resources: `/` (text), `/time` (current UTC time; `?ticks` for seconds since the Unix
//! epoch), `/async?N` (a separate response after N seconds: the engine sends the Empty ACK
//! after `empty_ack_delay`), `/.well-known/core` (RFC 6690, filtered by `?name=pattern`
//! queries as in RFC 6690 §4.1: `rt=ticks`, `if=cl*`, `href=/ex*`, `ct=40`, ...),
//! `/example_data` (GET; PUT replaces it; at first it holds the 1500 bytes libcoap's example
//! server generates, `a123456789b123456789...`, text/plain, so a GET of it is block-wise),
//! and, when `-d max` allows, resources created on unknown paths (a path with a query names
//! its own resource, RFC 7252 §5.10.1): by PUT (2.01 Created) or by POST (2.01 with the new
//! URI in Location-Path and Location-Query options, as libcoap's `-d` does); PUT or POST
//! replace them (2.04), DELETE removes them; 4.06 once `max` exist, like libcoap.
//!
//! `/example_data` and the created resources carry an ETag (a hash of the representation):
//! a GET naming the current one in an ETag option is answered 2.03 Valid without payload,
//! and If-Match / If-None-Match make any method conditional (4.12 Precondition Failed,
//! RFC 7252 §5.10.8). Every GET honours Accept: 4.06 Not Acceptable unless the
//! representation has that Content-Format (§5.10.4).
//!
//! Bodies larger than a block go block-wise (RFC 7959) without code here: the engine
//! reassembles Block1 request bodies (up to `Blockwise::max_body_size`, 64 KiB; beyond, 4.13
//! with Size1; libcoap's server has no flag for it) and cuts every answer to the Block2 block
//! asked for. Each GET answers with the whole representation and its ETag, the same for every
//! block of one representation, so the engine adds none of its own. `-e` echoes the stored
//! representation in the answer to a PUT or POST, as libcoap's `-e` does; a large echo is
//! fetched with further requests carrying Block2 and no body (§2.7), which get the same
//! answer again rather than being executed as new writes.
//!
//! Observe (RFC 7641), as on libcoap's server: `/time` (either variant), `/example_data` and
//! the created resources are observable (`obs` in `/.well-known/core`). A GET with Observe = 0
//! answered 2.xx registers the client; `/time` notifies every second (with Max-Age 1), a PUT
//! or POST that changes a resource notifies its new representation, a DELETE sends 4.04 Not
//! Found, which ends the observations (§4.2), and a PUT that changes the Content-Format sends
//! the old format's observers 4.06 Not Acceptable, which ends theirs (§4.2: notifications keep
//! the registration's Content-Format). Notifications are Confirmable, like libcoap's; `-N`
//! makes them Non-confirmable (the engine still sends one Confirmable notification to each
//! observer at least every 24 hours, §4.5). At `-v 6`, observers added and removed are logged
//! with the reason.
//!
//! `-W threads` serves from that many threads (libcoap's server has no such flag; the
//! default, 1, is one poll loop on the main thread). Each thread has an endpoint of its own
//! on every port, every port's sockets bound with `SO_REUSEPORT` (Linux and Android), and
//! the kernel keeps each peer's datagrams, and each connection, on one of them, so a peer's
//! session, deduplication, block-wise transfers and observations stay on one thread. The
//! resources are shared; a change made on one thread is passed to every thread, each
//! notifying its own observers, in the order the changes were made. Logs name the thread
//! (`[thread N]`), and `-x` caps each thread's sessions.
//!
//! `-K seconds` turns on keepalive for every client session, on every transport: a ping
//! after K seconds of silence (an Empty Confirmable message over UDP and DTLS, a 7.02 Ping
//! over TCP and TLS), and the session fails (its state freed, its observers removed, its
//! connection closed) after K more: `Keepalive { interval: K, timeout: K }`. (libcoap
//! 4.3.1's server has no `-K`.)

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant as StdInstant, SystemTime};

use coap_engine::coap_lite::option_value::OptionValueU16;
use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::dtls::{ClientAuth, Dtls, DtlsConfig};
use coap_engine::tls::{Tls, TlsConfig};
use coap_engine::uri::Scheme;
use coap_engine::{
    Config, ConnectionFailure, Endpoint, Error, Event, FailureReason, IncomingRequestId, Instant,
    ResourceId, Transport,
};
use coap_engine_mio::mio::{event::Event as Readiness, Events, Poll, Registry, Token, Waker};
use coap_engine_mio::{Driver, StreamDriver};

#[path = "../cli.rs"]
mod cli;
#[path = "../link_format.rs"]
mod link_format;

use link_format::Link;

const PROG: &str = "coap-server";
const ROOT_TEXT: &str = "This is a test server made with coap-engine (a sans-IO CoAP engine)\n\
                         driven by the mio adapter; flags mirror libcoap's coap-server\n";
const HELP: &str = "\
Usage: coap-server [-A address] [-p port] [-v num] [-K seconds] [-d max] [-e] [-N]
                   [-X size] [-x sessions] [-W threads] [-l list|loss%] [-Z list|fail%]
                   [-k key [-h hint] [-i match_identity_file]]
                   [-c certfile [-j keyfile] [-C cafile] [-R trust_casfile] [-n]]
	-A address	Interface address to bind to (default ::, falling back to 0.0.0.0)
	-p port		Listen on specified port for UDP and TCP (default 5683); with
			credentials also on port+1 for DTLS (-k, -c) and TLS (-c)
	-v num		Verbosity level (default 3, maximum 9; 4 logs failed DTLS and TLS
			handshakes, 6 every request)
	-K seconds	Keepalive for client sessions: ping after this much silence (7.02
			Ping over TCP), fail the session after as much again
	-X size		Largest message accepted over TCP and TLS, announced in our CSM as
			Max-Message-Size (64 to 4294967295, default 8388864)
	-x sessions	Peers served at once (1 to 16777216, default 4096; per thread
			with -W); a new peer beyond it gets a Reset for a Confirmable
			message, its connection closed over TCP. Each idle session
			costs memory (see the README's session breakdown)
	-W threads	Serve from this many threads (1 to 1024, default 1), each with its
			own endpoints on the same ports (SO_REUSEPORT, Linux only); the
			kernel keeps each client on one thread, resources are shared
	-d max		Allow dynamic creation of up to max resources by PUT or POST (POST
			answers with Location-Path/-Query); past it 4.06
	-e		Echo back the data stored by a PUT or POST in its answer
	-N		Make observe notifications Non-confirmable (default Confirmable;
			one is still Confirmable at least every 24 hours, RFC 7641)
	-l list		Drop outgoing datagrams: a comma separated list of numbers or ranges
	-l loss%	Drop outgoing datagrams randomly with this probability
	-Z list|fail%	Like -l, but the send fails and the engine is told \"unreachable\"
			(-l and -Z act on UDP and DTLS only: a stream loses nothing)
	-h		This help (with no argument; see -h hint)
DTLS and TLS (coaps:// and coaps+tcp:// on port+1; same resources as coap://)
	-k key		Pre-shared key (text), accepted with any PSK identity (DTLS only:
			without -c there is no TLS port)
	-h hint		PSK identity hint to send (default CoAP; -h '' sends none)
	-i file		Lines hint_to_match,identity_to_match,use_key ('#' comments): that
			identity uses that key when our hint matches; needs -k
	-c certfile	PEM certificate (ECDSA P-256/P-384); its key in the same file or -j
	-j keyfile	PEM private key of -c certfile
	-C cafile	PEM CA certificate(s): clients must present a certificate they issued
	-R trust_casfile	Like -C (a file or a directory of .pem/.crt files)
	-n		Do not ask clients for a certificate even with -C/-R
	With both -k and -c, each DTLS client gets the mode it asks for; TLS clients
	get certificates.";

/// libcoap's default for `-X`: 8 MiB + 256 (its COAP_DEFAULT_MAX_PDU_RX_SIZE).
const DEFAULT_MAX_MESSAGE_SIZE: u32 = 8 * 1024 * 1024 + 256;

#[derive(Clone)]
struct Resource {
    data: Vec<u8>,
    format: Option<u16>,
}

impl Resource {
    fn from_request(request: &Packet) -> Resource {
        Resource {
            data: request.payload.clone(),
            format: format_of(request),
        }
    }

    /// The entity-tag of the representation (RFC 7252 §5.10.6): a 64-bit FNV-1a hash of its
    /// Content-Format and payload, so it changes whenever the representation does and stays
    /// the same across restarts of the server.
    fn etag(&self) -> Vec<u8> {
        let format = match self.format {
            Some(f) => [1, (f >> 8) as u8, f as u8],
            None => [0; 3],
        };
        let hash = format
            .iter()
            .chain(&self.data)
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        hash.to_be_bytes().to_vec()
    }
}

/// The representations, shared by every thread (`-W`): what a PUT on one stores, a GET on
/// another reads.
struct Store {
    example_data: Resource,
    dynamic: BTreeMap<String, Resource>,
    max_dynamic: usize,
    /// `-e`: answer a PUT or POST with the representation it stored.
    echo: bool,
}

/// One thread's server: the shared store, and its own endpoints' bookkeeping.
struct Server {
    store: Arc<Mutex<Store>>,
    /// Separate responses due later: (when, index of the driver, request).
    delayed: Vec<(StdInstant, usize, IncomingRequestId)>,
    observe: Observable,
    fanout: Fanout,
}

/// A stored representation changed: every thread's observers of it are to hear.
#[derive(Clone)]
enum Change {
    Changed {
        key: String,
        old: Option<u16>,
        new: Resource,
    },
    Deleted {
        key: String,
        format: Option<u16>,
    },
}

/// Carries each change to every thread, the one that made it included: a thread applies
/// its own changes in the same order as everyone else's, so the last notification each
/// observer gets is the resource's last representation.
struct Fanout {
    inbox: Receiver<Change>,
    /// Every thread's inbox, with the waker of its poll (none for our own: we drain it
    /// before sleeping).
    threads: Vec<(Sender<Change>, Option<Arc<Waker>>)>,
}

impl Fanout {
    /// Sends `change` to every thread. Called with the store locked, which orders the
    /// changes of all threads.
    fn publish(&self, change: Change) {
        for (inbox, waker) in &self.threads {
            // A thread that is gone has ended the process (see `main`).
            let _ = inbox.send(change.clone());
            if let Some(waker) = waker {
                if let Err(e) = waker.wake() {
                    log::warn!("cannot wake a thread for a notification: {e}");
                }
            }
        }
    }

    /// Turns the changes received so far into pending notifications.
    fn receive(&self, observe: &mut Observable) {
        while let Ok(change) = self.inbox.try_recv() {
            match change {
                Change::Changed { key, old, new } => observe.changed(&key, old, &new),
                Change::Deleted { key, format } => observe.deleted(&key, format),
            }
        }
    }
}

/// The store, whatever another thread did: a panic ends the process (see `main`), so no
/// thread ever sees a half-made change.
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The observable representations (RFC 7641) and their observers' bookkeeping.
struct Observable {
    /// (resource key, Content-Format) → the id the engine files its observers under. The key
    /// is the path (plus `?query` for a created resource with one, and `time?ticks` for the
    /// Unix-time variant of `/time`); the format is part of it because a notification must
    /// keep the registration's Content-Format (RFC 7641 §4.2).
    ids: BTreeMap<(String, Option<u16>), ResourceId>,
    /// id → `/path` for the log, kept until its last observer is gone.
    names: BTreeMap<ResourceId, String>,
    next: u64,
    /// Notifications due once the current request is answered.
    pending: Vec<(ResourceId, Packet)>,
    /// Confirmable notifications (libcoap's default; `-N` clears it).
    confirmable: bool,
    /// The Unix second `/time` last notified (or was current while nobody observed it).
    time_sent: u64,
}

/// The two representations of `/time`: the date text, and `?ticks`, the Unix time.
const TIME_KEYS: [&str; 2] = ["time", "time?ticks"];

impl Observable {
    /// The id of a representation, made on first use.
    fn id(&mut self, key: &str, format: Option<u16>) -> ResourceId {
        if let Some(id) = self.ids.get(&(key.to_string(), format)) {
            return *id;
        }
        self.next += 1;
        let id = ResourceId(self.next);
        self.ids.insert((key.to_string(), format), id);
        let name = match format {
            Some(ct) => format!("/{key} [ct={ct}]"),
            None => format!("/{key}"),
        };
        self.names.insert(id, name);
        id
    }

    fn name(&self, id: ResourceId) -> &str {
        self.names.get(&id).map_or("(gone)", String::as_str)
    }

    /// The representation under `key` was replaced by `new` (RFC 7641 §4.2): its observers
    /// get the new one; those that registered for another Content-Format get 4.06 Not
    /// Acceptable, which ends their observation.
    fn changed(&mut self, key: &str, old: Option<u16>, new: &Resource) {
        if old != new.format {
            if let Some(id) = self.ids.remove(&(key.to_string(), old)) {
                let gone = response(ResponseType::NotAcceptable, None, Vec::new());
                self.pending.push((id, gone));
            }
        }
        if let Some(&id) = self.ids.get(&(key.to_string(), new.format)) {
            let mut p = response(ResponseType::Content, new.format, new.data.clone());
            p.add_option(CoapOption::ETag, new.etag());
            self.pending.push((id, p));
        }
    }

    /// The resource under `key` was deleted: its observers get 4.04 Not Found, which ends
    /// their observation (RFC 7641 §4.2).
    fn deleted(&mut self, key: &str, format: Option<u16>) {
        if let Some(id) = self.ids.remove(&(key.to_string(), format)) {
            let gone = response(ResponseType::NotFound, None, Vec::new());
            self.pending.push((id, gone));
        }
    }

    /// Sends the pending notifications to the observers on every endpoint (the observers of
    /// one resource share its id over every transport).
    fn flush(&mut self, drivers: &mut [Listener]) {
        for (id, p) in std::mem::take(&mut self.pending) {
            let mut sent = Ok(0);
            for driver in drivers.iter_mut() {
                let now = driver.now();
                match driver.endpoint_mut().notify(now, id, &p, self.confirmable) {
                    Ok(n) => sent = sent.map(|total| total + n),
                    Err(e) => sent = Err(e),
                }
                driver.drive();
            }
            match sent {
                Ok(0) => {}
                // A final (non-2.xx) notification ends observations: worth a line at -v 6.
                Ok(n) if u8::from(p.header.code) >> 5 != 2 => log::info!(
                    "{}: {} notified to {n} observer(s), ending their observation",
                    self.name(id),
                    p.header.code
                ),
                Ok(n) => log::debug!(
                    "{}: {} notified to {n} observer(s)",
                    self.name(id),
                    p.header.code
                ),
                Err(ref e) => log::warn!("{}: notification not sent: {e}", self.name(id)),
            }
            // Observers that a final notification removed are still to be reported (their
            // events are queued), and that handler forgets the name once it has logged it.
            if !matches!(sent, Ok(n) if n > 0) {
                self.forget_if_unused(drivers, id);
            }
        }
    }

    /// Drops the name of an id no representation has and no observer uses any more.
    fn forget_if_unused(&mut self, drivers: &[Listener], id: ResourceId) {
        if observers(drivers, id) == 0 && !self.ids.values().any(|v| *v == id) {
            self.names.remove(&id);
        }
    }

    /// Notifies `/time`'s observers once per second; returns when to come back (the next
    /// second boundary while anyone observes it).
    fn tick_time(&mut self, drivers: &mut [Listener]) -> Option<StdInstant> {
        let ids: Vec<(ResourceId, bool)> = TIME_KEYS
            .iter()
            .filter_map(|k| {
                self.ids
                    .get(&(k.to_string(), Some(0)))
                    .map(|id| (*id, k.ends_with("ticks")))
            })
            .filter(|(id, _)| observers(drivers, *id) > 0)
            .collect();
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since_epoch.as_secs();
        if ids.is_empty() {
            self.time_sent = secs;
            return None;
        }
        if secs != self.time_sent {
            self.time_sent = secs;
            for (id, ticks) in ids {
                self.pending.push((id, time_response(secs, ticks)));
            }
            self.flush(drivers);
        }
        // Just past the next second boundary, as libcoap's server does.
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(since_epoch.subsec_nanos()));
        Some(StdInstant::now() + to_next + Duration::from_millis(1))
    }
}

/// The command line's settings.
struct Options {
    /// `-A`: the address to listen on (else the wildcard).
    address: Option<IpAddr>,
    /// `-p`: the UDP and TCP port; DTLS and TLS take the next.
    port: u16,
    /// `-K`, `-x`: the endpoint configuration (UDP's; TCP's is made from it).
    config: Config,
    /// `-X`.
    max_message_size: u32,
    /// `-d`: how many resources PUT may create.
    max_dynamic: usize,
    /// `-e`: echo the payload of POSTs.
    echo: bool,
    /// Not `-N`: notify with Confirmable messages.
    confirmable: bool,
    /// `-l`, `-Z`.
    loss: Option<cli::Selector>,
    fail: Option<cli::Selector>,
    /// `-v`, checked when the logger is installed.
    verbosity: String,
    /// `-W`.
    n_threads: usize,
    dtls: DtlsFlags,
}

fn parse_args(args: Vec<OsString>) -> Result<Options, String> {
    use cli::Arg::Short;
    let mut o = Options {
        address: None,
        port: 5683,
        config: Config::default(),
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        max_dynamic: 0,
        echo: false,
        confirmable: true,
        loss: None,
        fail: None,
        verbosity: "3".to_string(),
        n_threads: 1,
        dtls: DtlsFlags::default(),
    };
    let mut p = cli::parser(args);
    while let Some(arg) = p.next().map_err(cli::message)? {
        match arg {
            Short('A') => {
                let value = cli::value(&mut p)?;
                let v = value.trim_start_matches('[').trim_end_matches(']');
                o.address = Some(
                    v.parse()
                        .map_err(|_| format!("-A needs an IP address, not {value:?}"))?,
                )
            }
            Short('p') => {
                let value = cli::value(&mut p)?;
                o.port = value
                    .parse()
                    .map_err(|_| format!("-p needs a port number, not {value:?}"))?
            }
            Short('v') => o.verbosity = cli::value(&mut p)?,
            Short('K') => {
                let k = cli::parse_seconds('K', &cli::value(&mut p)?)?;
                o.config.keepalive = (!k.is_zero()).then(|| cli::keepalive(k));
            }
            Short('d') => {
                let value = cli::value(&mut p)?;
                o.max_dynamic = value
                    .parse()
                    .map_err(|_| format!("-d needs a number, not {value:?}"))?
            }
            Short('e') => o.echo = true,
            Short('N') => o.confirmable = false,
            Short('X') => o.max_message_size = cli::max_message_size(&cli::value(&mut p)?)?,
            Short('x') => {
                let value = cli::value(&mut p)?;
                o.config.limits.max_sessions = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1 << 24).contains(n))
                    .ok_or_else(|| format!("-x needs 1 to 16777216 sessions, not {value:?}"))?
            }
            Short('W') => {
                let value = cli::value(&mut p)?;
                o.n_threads = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| format!("-W needs 1 to 1024 threads, not {value:?}"))?
            }
            Short('l') => o.loss = Some(cli::Selector::parse('l', &cli::value(&mut p)?)?),
            Short('Z') => o.fail = Some(cli::Selector::parse('Z', &cli::value(&mut p)?)?),
            Short(flag @ ('k' | 'h' | 'i' | 'c' | 'j' | 'C' | 'R')) => {
                o.dtls.set(flag, cli::value(&mut p)?)?
            }
            Short('n') => o.dtls.set('n', String::new())?,
            // The server takes no positional argument: a stray one is a mistake, said so.
            _ => return Err(cli::unexpected(arg)),
        }
    }
    Ok(o)
}

fn main() {
    let args = cli::args();
    if cli::help_asked(&args) {
        println!("{HELP}");
        std::process::exit(0);
    }
    let Options {
        address,
        port,
        config,
        max_message_size,
        max_dynamic,
        echo,
        confirmable,
        loss,
        fail,
        verbosity,
        n_threads,
        dtls,
    } = parse_args(args).unwrap_or_else(|e| cli::usage_error(PROG, e));
    cli::init_logging(PROG, &verbosity).unwrap_or_else(|e| cli::usage_error(PROG, e));
    dtls.check().unwrap_or_else(|e| cli::usage_error(PROG, e));
    let (dtls, tls) = dtls.security().unwrap_or_else(|e| {
        eprintln!("{PROG}: {e}");
        std::process::exit(1);
    });
    let tcp = Config {
        transport: Transport::Tcp,
        max_message_size: max_message_size as usize,
        blockwise: coap_engine::Blockwise {
            // Bodies as large as a message may be by default, whole or in blocks.
            max_body_size: max_message_size.max(DEFAULT_MAX_MESSAGE_SIZE) as usize,
            ..config.blockwise.clone()
        },
        ..config.clone()
    };
    let secure = |security: coap_engine::Security, config: &Config| Config {
        security: Some(security),
        ..config.clone()
    };

    let bind = |scheme: Scheme, port: u16, config: &Config| {
        let bind = |ip: IpAddr| listen(scheme, SocketAddr::new(ip, port), config, n_threads > 1);
        let io = match address {
            Some(ip) => bind(ip),
            // Like libcoap: the IPv6 wildcard (dual stack on Linux), else IPv4.
            None => bind("::".parse().unwrap()).or_else(|_| bind("0.0.0.0".parse().unwrap())),
        };
        io.unwrap_or_else(|e| {
            eprintln!("{PROG}: cannot listen for {scheme}:// on port {port}: {e}");
            std::process::exit(1);
        })
    };
    let mut drivers = vec![bind(Scheme::Coap, port, &config)];
    // With -p 0 the system picks the UDP port; TCP takes the same number, as it would
    // with -p given.
    let port = drivers[0].local_addr().map_or(port, |a| a.port());
    drivers.push(bind(Scheme::CoapTcp, port, &tcp));
    if dtls.is_some() || tls.is_some() {
        // libcoap's server puts DTLS and TLS on the next port (5684 next to 5683, RFC 7252
        // §6.2, RFC 8323 §8.2).
        let mut secure_port = match port {
            0 => 0,
            p => p.checked_add(1).unwrap_or_else(|| {
                eprintln!("{PROG}: -p {p}: no port+1 left for DTLS and TLS");
                std::process::exit(1);
            }),
        };
        if let Some(security) = dtls {
            let listener = bind(Scheme::Coaps, secure_port, &secure(security, &config));
            secure_port = listener.local_addr().map_or(secure_port, |a| a.port());
            drivers.push(listener);
        }
        if let Some(security) = tls {
            drivers.push(bind(Scheme::CoapsTcp, secure_port, &secure(security, &tcp)));
        }
    }
    // Every other thread listens where the first does, its endpoints configured alike
    // (a secure layer is shared: it only makes associations, each endpoint keeps its own).
    let mut threads: Vec<Vec<Listener>> = vec![drivers];
    for _ in 1..n_threads {
        let listeners = threads[0]
            .iter()
            .map(|first| {
                let at = first.local_addr().expect("a listener has an address");
                let config = first.endpoint().config().clone();
                listen(first.scheme, at, &config, true).unwrap_or_else(|e| {
                    eprintln!("{PROG}: cannot listen for {}:// at {at}: {e}", first.scheme);
                    std::process::exit(1);
                })
            })
            .collect();
        threads.push(listeners);
    }
    for listener in threads.iter_mut().flatten() {
        if let Io::Datagram(driver) = &mut listener.io {
            if loss.is_some() || fail.is_some() {
                // Each socket counts its own datagrams for -l/-Z lists.
                let seed = coap_engine_mio::random_seed();
                driver.set_send_filter(cli::send_filter(loss.clone(), fail.clone(), seed));
            }
        }
    }
    for listener in &threads[0] {
        match listener.local_addr() {
            Ok(addr) => log::info!("listening on {}://{addr}/", listener.scheme),
            Err(e) => log::warn!("local address unknown: {e}"),
        }
    }
    if n_threads > 1 {
        log::info!("{n_threads} threads, each with an endpoint on every port");
    }
    let store = Store {
        example_data: Resource {
            data: libcoap_example_data(),
            format: Some(0),
        },
        dynamic: BTreeMap::new(),
        max_dynamic,
        echo,
    };
    run(threads, store, confirmable);
}

/// Serves each thread's listeners in a poll loop of its own, all on the one `store` (on
/// the main thread if there is only one), until an I/O error ends the process.
fn run(threads: Vec<Vec<Listener>>, store: Store, confirmable: bool) {
    let n_threads = threads.len();
    let store = Arc::new(Mutex::new(store));
    let (mut polls, mut inboxes, mut addresses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n_threads {
        let poll = Poll::new().unwrap_or_else(|e| fail_with(e));
        let waker = Waker::new(poll.registry(), WAKE).unwrap_or_else(|e| fail_with(e));
        let (tx, rx) = mpsc::channel();
        polls.push(poll);
        inboxes.push(rx);
        addresses.push((tx, Arc::new(waker)));
    }
    let servers = inboxes.into_iter().enumerate().map(|(me, inbox)| {
        let threads = addresses
            .iter()
            .enumerate()
            .map(|(i, (tx, waker))| (tx.clone(), (i != me).then(|| waker.clone())))
            .collect();
        Server {
            store: store.clone(),
            delayed: Vec::new(),
            observe: Observable {
                ids: BTreeMap::new(),
                names: BTreeMap::new(),
                next: 0,
                pending: Vec::new(),
                confirmable,
                time_sent: 0,
            },
            fanout: Fanout { inbox, threads },
        }
    });
    let mut loops =
        threads
            .into_iter()
            .zip(polls)
            .zip(servers)
            .map(|((mut drivers, poll), mut server)| {
                move || {
                    if let Err(e) = serve(&mut server, &mut drivers, poll) {
                        fail_with(e);
                    }
                }
            });
    if n_threads == 1 {
        return loops.next().expect("one thread")();
    }
    // One thread's panic ends the server, rather than leaving its peers unanswered.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let handles: Vec<_> = loops
        .enumerate()
        .map(|(i, run)| {
            std::thread::Builder::new()
                .name(format!("thread {i}"))
                .spawn(run)
                .unwrap_or_else(|e| fail_with(e))
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}

fn fail_with(e: std::io::Error) -> ! {
    eprintln!("{PROG}: {e}");
    std::process::exit(1);
}

/// Binds one listener of `scheme` on `at`; with `shared`, one of a `SO_REUSEPORT` group
/// (`-W`), where the kernel keeps each peer on one thread's endpoint.
fn listen(
    scheme: Scheme,
    at: SocketAddr,
    config: &Config,
    shared: bool,
) -> std::io::Result<Listener> {
    let config = config.clone();
    let io = match (scheme.transport(), shared) {
        (Transport::Udp, false) => Io::Datagram(Driver::bind(at, config)?),
        (Transport::Udp, true) => Io::Datagram(Driver::bind_reuseport(at, config)?),
        (Transport::Tcp, false) => Io::Stream(StreamDriver::bind(at, config)?),
        (Transport::Tcp, true) => Io::Stream(StreamDriver::bind_reuseport(at, config)?),
    };
    Ok(Listener { scheme, io })
}

/// One of the server's endpoints: its scheme, and the driver that moves its messages.
struct Listener {
    scheme: Scheme,
    io: Io,
}

enum Io {
    Datagram(Driver),
    Stream(StreamDriver),
}

/// Each listener's tokens in the one poll: listener `i` has `i << TOKEN_BITS` and the
/// tokens above it, a stream driver one per connection.
const TOKEN_BITS: u32 = 24;

/// The token of the poll's waker: another thread changed a resource (see [`Fanout`]).
const WAKE: Token = Token(usize::MAX);

impl Listener {
    fn now(&self) -> Instant {
        match &self.io {
            Io::Datagram(d) => d.now(),
            Io::Stream(d) => d.now(),
        }
    }

    fn endpoint(&self) -> &Endpoint {
        match &self.io {
            Io::Datagram(d) => d.endpoint(),
            Io::Stream(d) => d.endpoint(),
        }
    }

    fn endpoint_mut(&mut self) -> &mut Endpoint {
        match &mut self.io {
            Io::Datagram(d) => d.endpoint_mut(),
            Io::Stream(d) => d.endpoint_mut(),
        }
    }

    /// Holds a stream listener's writes back while a burst of events is answered (see
    /// `StreamDriver::cork`); datagrams leave as they come.
    fn cork(&mut self) {
        if let Io::Stream(d) = &mut self.io {
            d.cork();
        }
    }

    fn uncork(&mut self) {
        if let Io::Stream(d) = &mut self.io {
            d.uncork();
        }
    }

    fn drive(&mut self) {
        match &mut self.io {
            Io::Datagram(d) => d.drive(),
            Io::Stream(d) => d.drive(),
        }
    }

    fn respond(&mut self, id: IncomingRequestId, response: &Packet) -> Result<(), Error> {
        match &mut self.io {
            Io::Datagram(d) => d.respond(id, response),
            Io::Stream(d) => d.respond(id, response),
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        match &mut self.io {
            Io::Datagram(d) => d.poll_event(),
            Io::Stream(d) => d.poll_event(),
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.io {
            Io::Datagram(d) => d.local_addr(),
            Io::Stream(d) => d.local_addr(),
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        match &self.io {
            Io::Datagram(d) => d.next_timeout(),
            Io::Stream(d) => d.next_timeout(),
        }
    }

    /// Registers the listener as number `index` of the poll (see [`TOKEN_BITS`]).
    fn register(&mut self, registry: &Registry, index: usize) -> std::io::Result<()> {
        let first = index << TOKEN_BITS;
        match &mut self.io {
            Io::Datagram(d) => d.register(registry, Token(first)),
            Io::Stream(d) => d.register(registry, Token(first)..Token(first + (1 << TOKEN_BITS))),
        }
    }

    fn handle_event(&mut self, event: &Readiness) {
        match &mut self.io {
            Io::Datagram(d) => d.handle_event(event),
            Io::Stream(d) => d.handle_event(event),
        }
    }

    fn handle_timeout(&mut self) {
        match &mut self.io {
            Io::Datagram(d) => d.handle_timeout(),
            Io::Stream(d) => d.handle_timeout(),
        }
    }

    /// What its secure sessions' handshakes are, for the log.
    fn layer(&self) -> &'static str {
        match self.scheme {
            Scheme::Coaps => "DTLS",
            _ => "TLS",
        }
    }
}

/// Logs why a request went unanswered. A client that sent its last request and closed its
/// connection at once (libcoap's client does, after deregistering) is gone before the
/// answer: not worth a warning.
fn not_answered(peer: Who, e: Error) {
    if e == Error::UnknownRequest {
        log::info!("{peer}: not answered, the session ended first");
    } else {
        log::warn!("{peer}: cannot respond: {e}");
    }
}

/// How many clients observe `id`, over every endpoint.
fn observers(drivers: &[Listener], id: ResourceId) -> usize {
    drivers.iter().map(|d| d.endpoint().observers(id)).sum()
}

/// A peer for the log: its address, and the transport unless it is plain UDP.
fn who(listener: &Listener, peer: SocketAddr) -> Who {
    Who(listener.scheme, peer)
}

/// A peer as log lines name it, with its transport when not plain UDP. Formatted only when
/// a line is actually written: building the text for every request cost more than a tenth of
/// the server's own (non-kernel) time under load.
#[derive(Clone, Copy)]
struct Who(Scheme, SocketAddr);

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Who(scheme, peer) = self;
        match scheme {
            Scheme::Coap => write!(f, "{peer}"),
            Scheme::Coaps => write!(f, "{peer} (DTLS)"),
            Scheme::CoapTcp => write!(f, "{peer} (TCP)"),
            Scheme::CoapsTcp => write!(f, "{peer} (TLS)"),
        }
    }
}

/// The libcoap server's DTLS flags as given, checked together after parsing.
#[derive(Default)]
struct DtlsFlags {
    key: Option<String>,
    hint: Option<String>,
    identities: Option<String>,
    certificate: Option<String>,
    private_key: Option<String>,
    /// `-C` and `-R` files, in order.
    trust: Vec<(char, String)>,
    no_verify: bool,
}

impl DtlsFlags {
    fn set(&mut self, flag: char, value: String) -> Result<(), String> {
        match flag {
            'k' if value.is_empty() => return Err("-k key must not be empty".into()),
            'k' => self.key = Some(value),
            'h' => self.hint = Some(value),
            'i' => self.identities = Some(value),
            'c' => self.certificate = Some(value),
            'j' => self.private_key = Some(value),
            'C' | 'R' => self.trust.push((flag, value)),
            'n' => self.no_verify = true,
            _ => unreachable!("only DTLS flags come here"),
        }
        Ok(())
    }

    /// Flags that make no sense together (a usage error, before any file is read).
    fn check(&self) -> Result<(), String> {
        let psk_only = [
            (self.hint.is_some(), "-h hint"),
            (self.identities.is_some(), "-i match_identity_file"),
        ];
        let cert_only = [
            (self.private_key.is_some(), "-j keyfile"),
            (!self.trust.is_empty(), "-C/-R"),
            (self.no_verify, "-n"),
        ];
        if self.key.is_none() {
            if let Some((_, what)) = psk_only.iter().find(|(given, _)| *given) {
                return Err(format!("{what} needs -k key (the default pre-shared key)"));
            }
        }
        if self.certificate.is_none() {
            if let Some((_, what)) = cert_only.iter().find(|(given, _)| *given) {
                return Err(format!("{what} needs -c certfile (certificate mode)"));
            }
        }
        Ok(())
    }

    /// The DTLS layer if any credentials were given, and the TLS layer if a certificate
    /// was; an error is a credentials file that cannot be used.
    fn security(
        self,
    ) -> Result<(Option<coap_engine::Security>, Option<coap_engine::Security>), String> {
        if self.key.is_none() && self.certificate.is_none() {
            return Ok((None, None));
        }
        let mut config = DtlsConfig::default();
        if let Some(key) = self.key {
            let overrides = match &self.identities {
                Some(file) => identity_keys(file, self.hint.as_deref().unwrap_or("CoAP"))?,
                None => BTreeMap::new(),
            };
            let key = key.into_bytes();
            // libcoap's verify_id_callback: a listed identity gets its key, any other the -k
            // key.
            let store =
                move |identity: &[u8]| Some(overrides.get(identity).unwrap_or(&key).clone());
            config.psk_store = Some(Arc::new(store));
            config.psk_hint = match self.hint {
                None => Some(b"CoAP".to_vec()),
                Some(h) if h.is_empty() => None,
                Some(h) => Some(h.into_bytes()),
            };
        }
        if let Some(cert) = &self.certificate {
            config.certificate = Some(cli::load_certificate(cert, self.private_key.as_deref())?);
            config.trust_anchors = cli::load_trust_anchors(&self.trust)?;
            // libcoap: -C or -R turns on the check of client certificates, -n turns it off.
            if !config.trust_anchors.is_empty() && !self.no_verify {
                config.client_auth = ClientAuth::Required;
            }
        }
        let tls = match &config.certificate {
            Some(certificate) => {
                let tls = TlsConfig {
                    certificate: Some(certificate.clone()),
                    trust_anchors: config.trust_anchors.clone(),
                    client_auth: config.client_auth,
                    ..TlsConfig::default()
                };
                let tls = Tls::new(tls, coap_engine_mio::security_entropy())
                    .map_err(|e| format!("TLS credentials: {e}"))?;
                Some(coap_engine::Security::new(tls))
            }
            None => {
                log::warn!(
                    "no coaps+tcp:// port: TLS takes a certificate (-c certfile), pre-shared \
                     keys are for DTLS only"
                );
                None
            }
        };
        let dtls = Dtls::new(config, coap_engine_mio::dtls_entropy())
            .map_err(|e| format!("DTLS credentials: {e}"))?;
        Ok((Some(coap_engine::Security::new(dtls)), tls))
    }
}

/// libcoap's `-i match_identity_file`: lines `hint_to_match,identity_to_match,use_key`
/// (`#` starts a comment line). Only the lines for our hint apply, since ours never changes
/// (libcoap's changes with SNI matches, which are not supported here).
fn identity_keys(file: &str, hint: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("-i {file}: {e}"))?;
    let mut keys = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(3, ',').collect();
        let [hint_match, identity, key] = fields[..] else {
            return Err(format!(
                "-i {file}:{}: expected hint_to_match,identity_to_match,use_key",
                n + 1
            ));
        };
        if identity.is_empty() || key.is_empty() {
            return Err(format!("-i {file}:{}: empty identity or key", n + 1));
        }
        if hint_match == hint || hint.is_empty() {
            keys.entry(identity.as_bytes().to_vec())
                .or_insert_with(|| key.as_bytes().to_vec());
        }
    }
    Ok(keys)
}

/// Runs every endpoint of one thread in its `mio::Poll` (tokens by index in `drivers`, see
/// [`TOKEN_BITS`], and [`WAKE`]) until an I/O error, the way `Driver::run` runs one: timed
/// work (changes from other threads first), then every queued event, then sleep until the
/// earliest deadline of any endpoint or of the application.
fn serve(server: &mut Server, drivers: &mut [Listener], mut poll: Poll) -> std::io::Result<()> {
    let mut events = Events::with_capacity(256);
    for (i, driver) in drivers.iter_mut().enumerate() {
        driver.register(poll.registry(), i)?;
        driver.drive();
    }
    loop {
        let wake = server.on_tick(drivers);
        let mut any = false;
        // Answers (and notifications, which may go to any listener) leave together once
        // every waiting event is handled: one write per connection for a burst.
        drivers.iter_mut().for_each(Listener::cork);
        // Datagrams likewise: the answers to a burst of requests leave in one sendmmsg.
        for from in 0..drivers.len() {
            while let Some(event) = drivers[from].poll_event() {
                any = true;
                server.on_event(drivers, from, event);
            }
        }
        drivers.iter_mut().for_each(Listener::drive);
        drivers.iter_mut().for_each(Listener::uncork);
        if any {
            // The handlers may have scheduled work: tick again before sleeping.
            continue;
        }
        let now = StdInstant::now();
        let timeout = drivers
            .iter()
            .filter_map(Listener::next_timeout)
            .chain(wake.map(|w| w.saturating_duration_since(now)))
            .min();
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if let Some(driver) = drivers.get_mut(event.token().0 >> TOKEN_BITS) {
                driver.handle_event(event);
            }
        }
        for driver in drivers.iter_mut() {
            driver.handle_timeout();
        }
    }
}

impl Server {
    /// One event of the endpoint `drivers[from]`.
    fn on_event(&mut self, drivers: &mut [Listener], from: usize, event: Event) {
        let driver = &mut drivers[from];
        match event {
            Event::Request { id, peer, request } => {
                let path = segments(&request, CoapOption::UriPath).join("/");
                let peer = who(driver, peer);
                match self.answer(&request, &path) {
                    Answer::Now(response) => {
                        log::info!(
                            "{peer} {} /{path} -> {}",
                            request.header.code,
                            response.header.code
                        );
                        if let Err(e) = driver.respond(id, &response) {
                            not_answered(peer, e);
                        }
                    }
                    Answer::Observable(response, resource) => {
                        log::info!(
                            "{peer} {} /{path} -> {}",
                            request.header.code,
                            response.header.code
                        );
                        let now = driver.now();
                        let added = driver
                            .endpoint_mut()
                            .respond_observe(now, id, resource, &response);
                        driver.drive();
                        match added {
                            Ok(true) => log::info!(
                                "{peer}: observer added: {} ({} observing)",
                                self.observe.name(resource),
                                observers(drivers, resource)
                            ),
                            Ok(false) => {}
                            Err(e) => not_answered(peer, e),
                        }
                    }
                    Answer::Later(delay) => {
                        log::info!("{peer} GET /{path} -> separate response in {delay:?}");
                        self.delayed.push((StdInstant::now() + delay, from, id));
                    }
                }
                self.fanout.receive(&mut self.observe);
                self.observe.flush(drivers);
            }
            Event::ObserverRemoved {
                peer,
                resource,
                reason,
            } => {
                log::info!(
                    "{}: observer removed: {reason} ({})",
                    who(driver, peer),
                    self.observe.name(resource)
                );
                self.observe.forget_if_unused(drivers, resource);
            }
            // A client that closes its connection without a Release, or resets it, is
            // how many TCP clients say goodbye: not worth a warning.
            Event::SessionFailed {
                peer,
                reason:
                    reason @ FailureReason::Connection(
                        ConnectionFailure::Closed | ConnectionFailure::Reset,
                    ),
            } => log::info!("{}: {reason}", who(driver, peer)),
            Event::SessionFailed { peer, reason } => {
                log::warn!("{}: session failed: {reason}", who(driver, peer))
            }
            Event::SendFailed { peer, kind, .. } => {
                log::info!("{}: send failed: {kind}", who(driver, peer))
            }
            // A wrong key, an unknown identity, a refused certificate, a client that went
            // away mid-handshake: the client's problem, worth a line at -v 4.
            Event::HandshakeFailed { peer, error } => {
                log::warn!("{peer}: {}: {error}", driver.layer())
            }
            other => log::debug!("{other:?}"),
        }
    }

    /// Timed work: separate responses that are due, `/time` notifications. Returns when
    /// to come back.
    fn on_tick(&mut self, drivers: &mut [Listener]) -> Option<StdInstant> {
        // Changes made by other threads.
        self.fanout.receive(&mut self.observe);
        self.observe.flush(drivers);
        let now = StdInstant::now();
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, from, id) = self.delayed.swap_remove(i);
                let response = response(ResponseType::Content, Some(0), b"done".to_vec());
                if let Err(e) = drivers[from].respond(id, &response) {
                    // The client's session may have ended meanwhile.
                    log::info!("separate response not sent: {e}");
                }
            } else {
                i += 1;
            }
        }
        let time = self.observe.tick_time(drivers);
        self.delayed.iter().map(|d| d.0).chain(time).min()
    }
}

enum Answer {
    Now(Packet),
    /// The answer to a GET of an observable representation: a registration (Observe = 0)
    /// answered 2.xx makes the client an observer of it.
    Observable(Packet, ResourceId),
    Later(Duration),
}

impl Answer {
    fn observable(self, id: ResourceId) -> Answer {
        match self {
            Answer::Now(p) => Answer::Observable(p, id),
            other => other,
        }
    }
}

/// `/time`'s representation at `unix` seconds: the date text or, with `?ticks`, the number;
/// Max-Age 1, since it changes every second (as libcoap's).
fn time_response(unix: u64, ticks: bool) -> Packet {
    let text = if ticks {
        unix.to_string()
    } else {
        utc_time(unix)
    };
    let mut p = response(ResponseType::Content, Some(0), text.into_bytes());
    p.add_option(CoapOption::MaxAge, vec![1]);
    p
}

fn response(code: ResponseType, format: Option<u16>, payload: Vec<u8>) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(code);
    if let Some(f) = format {
        p.add_option_as(CoapOption::ContentFormat, OptionValueU16(f));
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

/// What a request's path names.
enum Target {
    Root,
    Time,
    Async,
    WellKnown,
    ExampleData,
    /// A resource created by PUT or POST (`-d`), existing or not; the key is its path plus
    /// `?query` when it has one, since Uri-Path and Uri-Query together name the target
    /// resource (RFC 7252 §5.10.1).
    Dynamic(String),
}

impl Server {
    fn answer(&mut self, request: &Packet, path: &str) -> Answer {
        use RequestType::{Delete, Get, Post, Put};
        let MessageClass::Request(method) = request.header.code else {
            return empty(ResponseType::MethodNotAllowed);
        };
        if !matches!(
            method,
            Get | Post
                | Put
                | Delete
                | RequestType::Fetch
                | RequestType::Patch
                | RequestType::IPatch
        ) {
            return empty(ResponseType::MethodNotAllowed); // an unknown method code
        }
        let query = segments(request, CoapOption::UriQuery);
        let mut store = lock(&self.store);
        let target = match path {
            "" => Target::Root,
            "time" => Target::Time,
            "async" => Target::Async,
            ".well-known/core" => Target::WellKnown,
            "example_data" => Target::ExampleData,
            _ if query.is_empty() => Target::Dynamic(path.to_string()),
            _ => Target::Dynamic(format!("{path}?{}", query.join("&"))),
        };
        let stored = match &target {
            Target::ExampleData => Some(&store.example_data),
            Target::Dynamic(key) => store.dynamic.get(key),
            _ => None,
        };
        let exists = stored.is_some() || !matches!(target, Target::Dynamic(_));
        let etag = stored.map(Resource::etag);
        let allowed = match (&target, method) {
            (Target::Root | Target::Time | Target::Async | Target::WellKnown, Get) => true,
            (Target::ExampleData, Get | Put) => true,
            (Target::Dynamic(_), Get | Put | Post | Delete) if exists => true,
            // Creation, like libcoap's -d: PUT at the request URI (RFC 7252 §5.8.3), POST
            // creating the target resource (§5.8.2).
            (Target::Dynamic(_), Put | Post) => store.max_dynamic > 0,
            _ => false,
        };
        if !allowed {
            return empty(if exists {
                ResponseType::MethodNotAllowed
            } else {
                ResponseType::NotFound
            });
        }
        if !exists && store.dynamic.len() >= store.max_dynamic {
            return empty(ResponseType::NotAcceptable); // full, as libcoap answers
        }
        // The method would succeed, so the preconditions decide (RFC 7252 §5.10.8).
        if !preconditions_hold(request, exists, etag.as_deref()) {
            return empty(ResponseType::PreconditionFailed);
        }
        match (target, method) {
            (Target::Root, _) => content(request, Some(0), ROOT_TEXT.as_bytes().to_vec(), None),
            (Target::Time, _) => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let ticks = query.iter().any(|q| q == "ticks");
                if !acceptable(request, Some(0)) {
                    return empty(ResponseType::NotAcceptable);
                }
                let id = self.observe.id(TIME_KEYS[usize::from(ticks)], Some(0));
                Answer::Now(time_response(now, ticks)).observable(id)
            }
            (Target::Async, _) => match query.first().map(|q| q.parse::<u64>()) {
                None => content(request, Some(0), b"done".to_vec(), None),
                Some(Ok(n)) if n <= 3600 => {
                    // The separate response will be text/plain: refuse now what it cannot
                    // satisfy.
                    if !acceptable(request, Some(0)) {
                        return empty(ResponseType::NotAcceptable);
                    }
                    Answer::Later(Duration::from_secs(n))
                }
                Some(_) => Answer::Now(response(
                    ResponseType::BadRequest,
                    Some(0),
                    b"async?N needs a delay of 0 to 3600 seconds".to_vec(),
                )),
            },
            (Target::WellKnown, _) => {
                let links = link_format::filtered(&store.links(), &query);
                content(request, Some(40), links.into_bytes(), None)
            }
            (Target::ExampleData, Get) => {
                let r = &store.example_data;
                let id = self.observe.id("example_data", r.format);
                content(request, r.format, r.data.clone(), etag).observable(id)
            }
            (Target::ExampleData, _) => {
                let old = store.example_data.format;
                store.example_data = Resource::from_request(request);
                // Published with the store locked, so every thread applies the changes in
                // the order they were made.
                self.fanout.publish(Change::Changed {
                    key: "example_data".to_string(),
                    old,
                    new: store.example_data.clone(),
                });
                let p = stored_response(ResponseType::Changed, &store.example_data, store.echo);
                Answer::Now(p)
            }
            (Target::Dynamic(key), Get) => {
                let r = &store.dynamic[&key];
                let id = self.observe.id(&key, r.format);
                content(request, r.format, r.data.clone(), etag).observable(id)
            }
            (Target::Dynamic(key), Delete) => {
                if let Some(r) = store.dynamic.remove(&key) {
                    self.fanout.publish(Change::Deleted {
                        key: key.clone(),
                        format: r.format,
                    });
                }
                empty(ResponseType::Deleted)
            }
            (Target::Dynamic(key), _) => {
                let resource = Resource::from_request(request);
                // A POST to an existing dynamic resource replaces it, as libcoap's does
                // (§5.8.2 leaves the function of POST to the server).
                let code = if exists {
                    ResponseType::Changed
                } else {
                    ResponseType::Created
                };
                let mut p = stored_response(code, &resource, store.echo);
                if !exists && method == Post {
                    // §5.8.2: the URI of the new resource in Location-Path and
                    // Location-Query options: the request's own path and query.
                    let options = |o| request.get_option(o).into_iter().flatten();
                    for s in options(CoapOption::UriPath) {
                        p.add_option(CoapOption::LocationPath, s.clone());
                    }
                    for q in options(CoapOption::UriQuery) {
                        p.add_option(CoapOption::LocationQuery, q.clone());
                    }
                }
                if let Some(old) = store.dynamic.get(&key) {
                    self.fanout.publish(Change::Changed {
                        key: key.clone(),
                        old: old.format,
                        new: resource.clone(),
                    });
                }
                store.dynamic.insert(key, resource);
                Answer::Now(p)
            }
        }
    }
}

impl Store {
    /// `/.well-known/core`, with attributes like libcoap's example server: `obs` marks the
    /// observable resources (RFC 7641 §6).
    fn links(&self) -> Vec<Link> {
        let with_ct = |link: Link, format: Option<u16>| match format {
            Some(ct) => link.token("ct", ct),
            None => link,
        };
        let mut links = vec![
            Link::new("/")
                .quoted("title", "General Info")
                .token("ct", 0),
            Link::new("/time")
                .quoted("if", "clock")
                .quoted("rt", "ticks")
                .quoted("title", "Internal Clock")
                .token("ct", 0)
                .flag("obs"),
            Link::new("/async").token("ct", 0),
            with_ct(
                Link::new("/example_data").quoted("title", "Example Data"),
                self.example_data.format,
            )
            .flag("obs"),
        ];
        for (name, r) in &self.dynamic {
            links.push(
                with_ct(Link::new(format!("/{name}")), r.format)
                    .quoted("title", "Dynamic")
                    .flag("obs"),
            );
        }
        links
    }
}

/// RFC 7252 §5.10.8: If-Match holds when the resource exists and one of its values is the
/// current ETag, or is empty (then any current representation will do); If-None-Match
/// holds when the resource does not exist.
fn preconditions_hold(request: &Packet, exists: bool, etag: Option<&[u8]>) -> bool {
    if let Some(values) = request.get_option(CoapOption::IfMatch) {
        if !exists
            || !values
                .iter()
                .any(|v| v.is_empty() || Some(v.as_slice()) == etag)
        {
            return false;
        }
    }
    !(exists && request.get_option(CoapOption::IfNoneMatch).is_some())
}

/// RFC 7252 §5.10.4: with an Accept option, only a representation in that Content-Format
/// will do. One without a known Content-Format cannot be promised to match.
fn acceptable(request: &Packet, format: Option<u16>) -> bool {
    match request
        .get_option(CoapOption::Accept)
        .and_then(|l| l.front())
    {
        Some(v) => format.is_some_and(|f| u32::from(f) == cli::decode_uint(v)),
        None => true,
    }
}

/// The answer to a GET: 4.06 if the Accept option asks for another Content-Format; 2.03
/// Valid with the ETag and no payload if one of the request's ETags is the current one
/// (§5.10.6.2, §5.9.1.3); else 2.05 with the representation (and its ETag, if it has one).
fn content(
    request: &Packet,
    format: Option<u16>,
    payload: Vec<u8>,
    etag: Option<Vec<u8>>,
) -> Answer {
    if !acceptable(request, format) {
        return empty(ResponseType::NotAcceptable);
    }
    let Some(etag) = etag else {
        return Answer::Now(response(ResponseType::Content, format, payload));
    };
    let valid = request
        .get_option(CoapOption::ETag)
        .is_some_and(|l| l.iter().any(|v| *v == etag));
    let mut p = if valid {
        response(ResponseType::Valid, None, Vec::new())
    } else {
        response(ResponseType::Content, format, payload)
    };
    p.add_option(CoapOption::ETag, etag);
    Answer::Now(p)
}

/// 2.01/2.04 after a PUT or POST stored `r`, with the new representation's ETag: without
/// Location-* options it tags the target's representation, with them the one at the
/// location, which is the same here (§5.10.6.1). A client can use it in If-Match at once.
/// With `echo` (`-e`) it carries the representation too.
fn stored_response(code: ResponseType, r: &Resource, echo: bool) -> Packet {
    let mut p = if echo {
        response(code, r.format, r.data.clone())
    } else {
        response(code, None, Vec::new())
    };
    p.add_option(CoapOption::ETag, r.etag());
    p
}

/// The body libcoap's example server generates for its `/example_data` until the first PUT:
/// 1500 bytes, `a123456789b123456789...`, a letter every ten bytes (`a`..`z`, wrapping).
fn libcoap_example_data() -> Vec<u8> {
    (0..1500u32)
        .map(|i| match i % 10 {
            0 => b'a' + (i / 10 % 26) as u8,
            d => b'0' + d as u8,
        })
        .collect()
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
    use std::ffi::OsString;

    use super::{parse_args, Options};

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn values_come_joined_or_separate_as_with_libcoaps_getopt() {
        for args in [
            &["-p5684", "-d3", "-W2"][..],
            &["-p", "5684", "-d", "3", "-W", "2"],
        ] {
            let o = parse(args).unwrap();
            assert_eq!(
                (o.port, o.max_dynamic, o.n_threads),
                (5684, 3, 2),
                "{args:?}"
            );
        }
        let o = parse(&["-A[::1]", "-x", "10", "-X1024"]).unwrap();
        assert_eq!(o.address, Some("::1".parse().unwrap()));
        assert_eq!(o.config.limits.max_sessions, 10);
        assert_eq!(o.max_message_size, 1024);
    }

    #[test]
    fn letters_without_a_value_cluster_before_one_with() {
        // -e, -N and -n take no value: `-eNv7` is `-e -N -v 7`.
        let o = parse(&["-eNv7"]).unwrap();
        assert!(o.echo);
        assert!(!o.confirmable);
        assert_eq!(o.verbosity, "7");
        let o = parse(&["-Nnc", "server.pem"]).unwrap();
        assert!(!o.confirmable);
        assert!(o.dtls.no_verify);
        assert_eq!(o.dtls.certificate.as_deref(), Some("server.pem"));
        let o = parse(&["-k", "-secret-"]).unwrap();
        assert_eq!(
            o.dtls.key.as_deref(),
            Some("-secret-"),
            "a value may start with -"
        );
    }

    #[test]
    fn command_line_errors_are_one_line_naming_the_flag() {
        for (args, want) in [
            (&["-q"][..], "unknown option -q"),
            (&["-eq"], "unknown option -q"),
            (&["--port=5683"], "unknown option --port"),
            (&["-p"], "option -p needs an argument"),
            (&["-eNp"], "option -p needs an argument"),
            (
                &["-p", "notaport"],
                "-p needs a port number, not \"notaport\"",
            ),
            (&["-p70000"], "-p needs a port number, not \"70000\""),
            (&["-W", "0"], "-W needs 1 to 1024 threads, not \"0\""),
            (&["-K", "x"], "-K needs a number of seconds, not \"x\""),
            (&["-k", ""], "-k key must not be empty"),
            // The server takes no positional argument, before `--` or after.
            (&["5683"], "unexpected argument \"5683\""),
            (&["-p", "5683", "--", "-e"], "unexpected argument \"-e\""),
        ] {
            assert_eq!(parse(args).err().as_deref(), Some(want), "{args:?}");
        }
    }

    #[test]
    fn example_data_starts_like_libcoaps() {
        let data = super::libcoap_example_data();
        assert_eq!(data.len(), 1500);
        assert_eq!(&data[..22], b"a123456789b123456789c1");
        assert_eq!(&data[250..262], b"z123456789a1");
        assert_eq!(&data[1490..], b"t123456789");
    }

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(super::utc_time(0), "Jan 01 00:00:00");
        assert_eq!(super::utc_time(951_782_400), "Feb 29 00:00:00"); // 2000-02-29
        assert_eq!(super::utc_time(1_700_000_000), "Nov 14 22:13:20");
    }
}
