//! The engine's RAM on a Cortex-M4F: heap bytes per endpoint, per idle session and per
//! outstanding exchange, and the stack depth of a request round trip, measured on the target
//! (thumbv7em, 32-bit pointers) and printed over semihosting. Run it under QEMU with `ram.sh`
//! (`qemu-system-arm -machine netduinoplus2`, an STM32F405 whose flash and RAM are where
//! `memory.x` puts them).
//!
//! Heap: the global allocator wraps embedded-alloc's heap and counts the bytes the program
//! asked for (live and peak) and the calls to `alloc` and `realloc`; `heap used` is what the
//! allocator itself holds, rounding and block headers included. Stack: the unused stack is
//! painted with a pattern, one round trip runs, and the deepest word no longer holding the
//! pattern marks how deep the round trip went below its caller's stack pointer.

#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::mem::MaybeUninit;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use coap_engine::coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coap_engine::{Config, Duration, Endpoint, Event, IncomingRequestId, Instant, Limits};

#[path = "../caps.rs"]
mod caps;
use caps::config;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use embedded_alloc::LlffHeap as Heap;

/// embedded-alloc's heap, counting what passes through it. One core and no interrupt handler
/// allocates, so relaxed atomics are exact.
struct Counting {
    heap: Heap,
    live: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

impl Counting {
    fn grew(&self, bytes: usize) {
        let live = self.live.fetch_add(bytes, Relaxed) + bytes;
        self.peak.fetch_max(live, Relaxed);
        self.calls.fetch_add(1, Relaxed);
    }
}

// SAFETY: every call goes to the wrapped heap unchanged; only the counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.heap.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.heap.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.live.fetch_sub(layout.size(), Relaxed);
            self.grew(new_size);
        }
        p
    }
}

#[global_allocator]
static HEAP: Counting = Counting {
    heap: Heap::empty(),
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    calls: AtomicUsize::new(0),
};

const HEAP_SIZE: usize = 64 * 1024;

fn live() -> usize {
    HEAP.live.load(Relaxed)
}

fn calls() -> usize {
    HEAP.calls.load(Relaxed)
}

/// ARM semihosting (the host debugger's, here QEMU's, system calls): `bkpt 0xab` with the
/// operation in r0 and its argument in r1.
mod semihosting {
    const SYS_WRITE0: u32 = 0x04;
    const SYS_EXIT: u32 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u32 = 0x2_0026;
    const ADP_STOPPED_RUN_TIME_ERROR: u32 = 0x2_0023;

    fn call(op: u32, arg: u32) {
        // SAFETY: a breakpoint the semihosting host handles; it reads only what `arg` points to.
        unsafe {
            core::arch::asm!("bkpt #0xab", inout("r0") op => _, in("r1") arg, options(nostack))
        }
    }

    /// Writes a NUL-terminated string to the host's stdout.
    pub fn write0(s: &[u8]) {
        debug_assert_eq!(s.last(), Some(&0));
        call(SYS_WRITE0, s.as_ptr() as u32);
    }

    /// Ends the emulation: QEMU exits with status 0 on success, 1 otherwise.
    pub fn exit(success: bool) -> ! {
        let reason = if success {
            ADP_STOPPED_APPLICATION_EXIT
        } else {
            ADP_STOPPED_RUN_TIME_ERROR
        };
        call(SYS_EXIT, reason);
        loop {
            cortex_m::asm::bkpt();
        }
    }
}

/// One line of output, formatted on the stack (formatting must not allocate: it would count).
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // Two bytes stay free for the newline and the NUL.
        let end = self.len + s.len();
        if end > self.buf.len() - 2 {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn print(args: core::fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; 160],
        len: 0,
    };
    // A line too long is cut, not lost.
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    line.buf[line.len + 1] = 0;
    semihosting::write0(&line.buf[..line.len + 2]);
}

macro_rules! println {
    ($($arg:tt)*) => { print(format_args!($($arg)*)) };
}

fn fail(what: &str) -> ! {
    println!("ram: measurement failed: {what}");
    semihosting::exit(false)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    fail("panic")
}

#[exception]
unsafe fn HardFault(_: &ExceptionFrame) -> ! {
    fail("hard fault")
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, host), port))
}

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

fn get() -> Packet {
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, b"temp".to_vec());
    get
}

fn content() -> Packet {
    let mut content = Packet::new();
    content.header.code = MessageClass::Response(ResponseType::Content);
    content.payload = b"21.5".to_vec();
    content
}

/// A Confirmable GET as a peer's client would send it: Message ID and token `i`.
fn request_bytes(i: u16) -> alloc::vec::Vec<u8> {
    let mut p = get();
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = i;
    p.set_token(i.to_be_bytes().to_vec());
    p.to_bytes().unwrap_or_else(|_| fail("encode"))
}

/// Moves every datagram between the two endpoints until both are quiet, answering every
/// request with `content`; returns how many responses the client got.
fn shuttle(now: Instant, client: &mut Endpoint, server: &mut Endpoint, content: &Packet) -> u32 {
    let mut answered = 0;
    loop {
        let mut moved = false;
        while let Some(t) = client.poll_transmit() {
            server.handle_datagram(now, addr(CLIENT, 40000), &t.payload);
            moved = true;
        }
        while let Some(event) = server.poll_event() {
            if let Event::Request { id, .. } = event {
                if server.respond(now, id, content).is_err() {
                    fail("respond");
                }
            }
        }
        while let Some(t) = server.poll_transmit() {
            client.handle_datagram(now, addr(SERVER, 5683), &t.payload);
            moved = true;
        }
        while let Some(event) = client.poll_event() {
            if let Event::Response { response, .. } = event {
                answered += u32::from(response.payload == b"21.5");
            }
        }
        if !moved {
            return answered;
        }
    }
}

/// One request round trip, as in `main.rs`: the function whose stack depth is measured.
#[inline(never)]
fn round_trip(
    now: Instant,
    client: &mut Endpoint,
    server: &mut Endpoint,
    get: &Packet,
    content: &Packet,
) -> u32 {
    if client.request(now, addr(SERVER, 5683), get).is_err() {
        fail("request");
    }
    shuttle(now, client, server, content)
}

const PAINT: u32 = 0x5aa5_c33c;

extern "C" {
    /// cortex-m-rt's lowest stack address (the end of .bss and .uninit).
    static _stack_end: u32;
}

/// Paints the free stack, from its lowest address to just below this function's frame.
#[inline(never)]
fn paint() {
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let top = cortex_m::register::msp::read() as usize - 64;
    let mut p = bottom;
    while p < top {
        // SAFETY: between the end of .bss and the live stack: memory no one uses.
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
}

/// The lowest address whose paint was overwritten.
fn deepest() -> usize {
    let mut p = core::ptr::addr_of!(_stack_end) as usize;
    // SAFETY: reads of painted stack memory, below the live stack.
    while unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    p
}

/// Stack bytes `round_trip` used below its caller's stack pointer.
fn round_trip_stack(
    now: Instant,
    client: &mut Endpoint,
    server: &mut Endpoint,
    get: &Packet,
    content: &Packet,
) -> usize {
    paint();
    let sp = cortex_m::register::msp::read() as usize;
    if round_trip(now, client, server, get, content) != 1 {
        fail("round trip unanswered");
    }
    let deepest = deepest();
    if deepest == core::ptr::addr_of!(_stack_end) as usize {
        fail("the stack went past its painted part");
    }
    sp - deepest
}

/// Runs `endpoint`'s timers up to `until`; returns `until`.
fn advance(endpoint: &mut Endpoint, mut now: Instant, until: Instant) -> Instant {
    while let Some(t) = endpoint.poll_timeout() {
        if t > until {
            break;
        }
        now = t.max(now);
        endpoint.handle_timeout(now);
        while endpoint.poll_transmit().is_some() {}
        while endpoint.poll_event().is_some() {}
    }
    endpoint.handle_timeout(until);
    until
}

#[entry]
fn main() -> ! {
    {
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; the region is used only by the heap.
        unsafe {
            HEAP.heap
                .init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_SIZE)
        }
    }
    let (get, content) = (get(), content());
    let start = live();
    let mut now = Instant::ZERO;
    println!("coap-engine RAM on thumbv7em (bytes; heap = bytes requested, alloc+realloc calls)");

    // An endpoint with the firmware's caps, before any peer.
    let before = live();
    let Ok(mut server) = Endpoint::new(config(), 2) else {
        fail("server")
    };
    let Ok(mut client) = Endpoint::new(config(), 1) else {
        fail("client")
    };
    println!("endpoint, no session: heap {}", (live() - before) / 2);

    // Stack and the first round trip, which opens a session on both sides.
    now += Duration::from_millis(10);
    let (before, calls_before) = (live(), calls());
    let first = round_trip_stack(now, &mut client, &mut server, &get, &content);
    println!(
        "first round trip (opens both sessions): stack {first}, heap after +{} ({} calls)",
        live() - before,
        calls() - calls_before
    );
    now += Duration::from_millis(10);
    let (before, calls_before) = (live(), calls());
    let again = round_trip_stack(now, &mut client, &mut server, &get, &content);
    println!(
        "round trip on open sessions: stack {again}, heap after +{} ({} calls)",
        live() - before,
        calls() - calls_before
    );

    // The rest of main.rs's 100 round trips: the heap's peak since the start.
    let calls_before = calls();
    for _ in 2..100 {
        now += Duration::from_millis(10);
        if round_trip(now, &mut client, &mut server, &get, &content) != 1 {
            fail("round trip unanswered");
        }
    }
    println!(
        "main.rs's 100 round trips: heap peak {}, live {} ({} calls per round trip in the last 98)",
        HEAP.peak.load(Relaxed) - start,
        live() - start,
        (calls() - calls_before) / 98
    );

    // Outstanding exchanges between the open sessions. With NSTART = 1 one client request is
    // in flight (sent, its Confirmable kept for retransmission) and the rest wait in the queue.
    let (before, calls_before) = (live(), calls());
    if client.request(now, addr(SERVER, 5683), &get).is_err() {
        fail("request");
    }
    let Some(sent) = client.poll_transmit() else {
        fail("no transmit")
    };
    // The datagram is shared with the engine, which keeps it for retransmission; in a steady
    // exchange it is a recycled one (see `Limits::recycled_datagrams`).
    let in_flight = live() - before;
    let in_flight_calls = calls() - calls_before;
    let before = live();
    for _ in 0..3 {
        if client.request(now, addr(SERVER, 5683), &get).is_err() {
            fail("queued request");
        }
    }
    let queued = (live() - before) / 3;
    println!(
        "client: request in flight +{in_flight} ({in_flight_calls} calls), queued request +{queued} each"
    );
    server.handle_datagram(now, addr(CLIENT, 40000), &sent.payload);
    drop(sent);
    if shuttle(now, &mut client, &mut server, &content) != 4 {
        fail("outstanding requests unanswered");
    }

    // The server's side: requests heard and not answered yet (each an exchange the application
    // holds), from a peer with an open session.
    let peer = addr(3, 40000);
    let mut ids: [Option<IncomingRequestId>; 4] = [None; 4];
    let mut datagrams = [
        request_bytes(100),
        request_bytes(101),
        request_bytes(102),
        request_bytes(103),
    ];
    server.handle_datagram(now, peer, &datagrams[0]);
    while let Some(event) = server.poll_event() {
        if let Event::Request { id, .. } = event {
            if server.respond(now, id, &content).is_err() {
                fail("respond");
            }
        }
    }
    while server.poll_transmit().is_some() {}
    datagrams[0] = request_bytes(104);
    let before = live();
    for (d, slot) in datagrams.iter().zip(ids.iter_mut()) {
        server.handle_datagram(now, peer, d);
        while let Some(event) = server.poll_event() {
            if let Event::Request { id, .. } = event {
                *slot = Some(id);
            }
        }
    }
    if ids.iter().any(Option::is_none) {
        fail("requests not delivered");
    }
    let held = (live() - before) / ids.len();
    let before = live();
    for id in ids.iter().flatten() {
        if server.respond(now, *id, &content).is_err() {
            fail("respond");
        }
    }
    while server.poll_transmit().is_some() {}
    println!(
        "server: request awaiting its response +{held} each; answered, +{} each until EXCHANGE_LIFETIME",
        (live() - before) / ids.len()
    );
    drop((client, server, datagrams));
    if live() != start {
        fail("the endpoints did not return all their heap");
    }

    // Idle sessions: N peers each had one Confirmable GET answered (piggybacked), as
    // core/tests/session_memory.rs measures on the host.
    const N: u16 = 32;
    let config = Config {
        limits: Limits {
            max_sessions: N as usize + 1,
            ..config().limits
        },
        ..Config::default()
    };
    let Ok(mut server) = Endpoint::new(config, 3) else {
        fail("server")
    };
    let before = live();
    for i in 0..N {
        let bytes = request_bytes(i);
        server.handle_datagram(now, addr(10, 1000 + i), &bytes);
        drop(bytes);
        while let Some(event) = server.poll_event() {
            if let Event::Request { id, .. } = event {
                if server.respond(now, id, &content).is_err() {
                    fail("respond");
                }
            }
        }
        while server.poll_transmit().is_some() {}
    }
    if server.session_count() != usize::from(N) {
        fail("sessions");
    }
    let idle = (live() - before) / usize::from(N);
    // Past EXCHANGE_LIFETIME the deduplication entries and cached answers are gone; the
    // sessions stay until idle_timeout (300 s).
    let lifetime = server.config().transmission.exchange_lifetime();
    let idle_timeout = server.config().idle_timeout;
    let past_lifetime = advance(&mut server, now, now + lifetime + Duration::from_secs(1));
    if server.session_count() != usize::from(N) {
        fail("sessions ended before idle_timeout");
    }
    let after_lifetime = live();
    let closed = advance(
        &mut server,
        past_lifetime,
        now + idle_timeout + Duration::from_secs(1),
    );
    now = closed;
    println!(
        "server, {N} idle sessions: +{idle} each; past EXCHANGE_LIFETIME +{} each; closed (idle_timeout) +{} each kept, {} sessions",
        (after_lifetime - before) / usize::from(N),
        (live() - before) / usize::from(N),
        server.session_count()
    );
    let _ = now;
    println!(
        "heap peak of the whole run {} of {HEAP_SIZE}; allocator's own use now {} for {} requested",
        HEAP.peak.load(Relaxed),
        HEAP.heap.used(),
        live()
    );
    semihosting::exit(true)
}
