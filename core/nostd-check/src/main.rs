//! A minimal firmware image using coap-engine on a Cortex-M4F: one endpoint requests, another
//! responds, and the datagrams move between them in memory. It proves the engine needs only
//! `core` and `alloc`, and its size is the engine's footprint in a real image (`size.sh` prints
//! the `.text` size).

#![no_std]
#![no_main]

use core::hint::black_box;
use core::mem::MaybeUninit;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Duration, Endpoint, Event, Instant};

mod caps;
use caps::config;
use cortex_m_rt::entry;
use embedded_alloc::LlffHeap as Heap;

#[global_allocator]
static HEAP: Heap = Heap::empty();

const HEAP_SIZE: usize = 32 * 1024;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // A permanently undefined instruction: the HardFault handler stops the core.
    cortex_m::asm::udf()
}

fn halt() -> ! {
    loop {
        cortex_m::asm::bkpt();
    }
}

/// Formats each record into nothing: the cost of logging, without an output device.
#[cfg(feature = "logger")]
struct Discard;

#[cfg(feature = "logger")]
impl log::Log for Discard {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        struct Sink;
        impl core::fmt::Write for Sink {
            fn write_str(&mut self, s: &str) -> core::fmt::Result {
                black_box(s);
                Ok(())
            }
        }
        let _ = core::fmt::write(&mut Sink, *record.args());
    }

    fn flush(&self) {}
}

#[entry]
fn main() -> ! {
    #[cfg(feature = "logger")]
    {
        let _ = log::set_logger(&Discard);
        log::set_max_level(log::LevelFilter::Trace);
    }
    {
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; the region is used only by the heap.
        unsafe { HEAP.init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_SIZE) }
    }

    let client_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000));
    let server_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 5683));
    let (Ok(mut client), Ok(mut server)) = (Endpoint::new(config(), 1), Endpoint::new(config(), 2))
    else {
        halt()
    };

    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, b"temp".to_vec());
    let mut content = Packet::new();
    content.header.code = MessageClass::Response(ResponseType::Content);
    content.payload = b"21.5".to_vec();

    let mut now = Instant::ZERO;
    let mut answered: u32 = 0;
    for _ in 0..black_box(100) {
        now += Duration::from_millis(10);
        if client.request(now, server_addr, &get).is_err() {
            halt();
        }
        while let Some(t) = client.poll_transmit() {
            server.handle_datagram(now, client_addr, &t.payload);
            while let Some(event) = server.poll_event() {
                if let Event::Request { id, .. } = event {
                    if server.respond(now, id, &content).is_err() {
                        halt();
                    }
                }
            }
            while let Some(t) = server.poll_transmit() {
                client.handle_datagram(now, server_addr, &t.payload);
            }
        }
        while let Some(event) = client.poll_event() {
            if let Event::Response { response, .. } = event {
                answered += u32::from(response.payload == b"21.5");
            }
        }
        black_box((client.poll_timeout(), server.poll_timeout()));
    }
    black_box(answered);
    loop {
        cortex_m::asm::wfi();
    }
}
