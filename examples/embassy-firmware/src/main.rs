//! A CoAP client and server on a Cortex-M4F with embassy: one embassy-net stack on a loopback
//! network driver (what it sends comes back to it), a [`CoapRunner`] per socket, and a client
//! that GETs `/temp` from the server every 5 s with a keepalive on the session. Replace the
//! loopback driver with your HAL's Ethernet/Wi-Fi driver (and the SysTick time driver with the
//! HAL's) for a real device; everything else stays. With feature `tcp` the same client and
//! server speak CoAP over TCP, a `TcpRunner` with one socket each.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::MaybeUninit;
use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Waker};

use coap_engine::coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use coap_engine::{Config, Duration, Endpoint, Keepalive, Limits};
#[cfg(not(feature = "tcp"))]
use coap_engine_embassy::CoapRunner;
#[cfg(feature = "tcp")]
use coap_engine_embassy::TcpRunner;
use coap_engine_embassy::{Client, CoapChannels, Server};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use critical_section::Mutex;
use embassy_executor::{Executor, Spawner};
use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
#[cfg(feature = "tcp")]
use embassy_net::tcp::TcpSocket;
#[cfg(not(feature = "tcp"))]
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::Timer;
use embassy_time_queue_utils::Queue;
use embedded_alloc::LlffHeap as Heap;
use static_cell::StaticCell;

#[global_allocator]
static HEAP: Heap = Heap::empty();
const HEAP_SIZE: usize = 64 * 1024;

/// Core clock of the imagined part; SysTick interrupts at 1 kHz (embassy-time `tick-hz-1_000`).
const CORE_HZ: u32 = 16_000_000;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::asm::udf()
}

// ---------------------------------------------------------------- embassy-time driver (SysTick)

struct SysTickDriver {
    ticks: AtomicU32,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: AtomicU32::new(0),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl embassy_time_driver::Driver for SysTickDriver {
    fn now(&self) -> u64 {
        u64::from(self.ticks.load(Ordering::Relaxed))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            queue.schedule_wake(at, waker);
            queue.next_expiration(self.now()); // wakes it now if already due
        });
    }
}

#[exception]
fn SysTick() {
    let now = DRIVER.ticks.fetch_add(1, Ordering::Relaxed) + 1;
    critical_section::with(|cs| {
        DRIVER
            .queue
            .borrow_ref_mut(cs)
            .next_expiration(u64::from(now));
    });
}

// ---------------------------------------------------------------- loopback network driver

/// An IP-medium driver whose transmitted packets are received back.
#[derive(Default)]
struct Loopback {
    queue: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
}

struct Rx(Vec<u8>);

struct Tx<'a>(&'a mut Loopback);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        if self.0.queue.len() < 8 {
            self.0.queue.push_back(packet);
        }
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
        r
    }
}

impl Driver for Loopback {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx<'_>)> {
        self.waker = Some(cx.waker().clone());
        let packet = self.queue.pop_front()?;
        Some((Rx(packet), Tx(self)))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1280;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ip
    }
}

// ---------------------------------------------------------------- the application

type Channels = CoapChannels<NoopRawMutex, 4>;
const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Caps sized for a microcontroller (see core/nostd-check).
fn config() -> Config {
    Config {
        limits: Limits {
            max_sessions: 4,
            max_queued_requests: 4,
            max_exchanges: 4,
            max_confirmables: 4,
            max_pending_requests: 4,
            max_dedup_entries: 16,
            max_remembered_peers: 4,
            // (Not applied to a TCP endpoint, whose writes `max_unwritten_bytes` bounds.)
            max_queued_transmits: 8,
            tracked_transmits: 8,
            max_observers: 2,
            max_block_transfers: 1,
            // What may wait for room in a TCP socket, per connection.
            #[cfg(feature = "tcp")]
            max_unwritten_bytes: 4096,
            ..Limits::default()
        },
        max_message_size: 1152,
        #[cfg(feature = "tcp")]
        transport: coap_engine::Transport::Tcp,
        ..Config::default()
    }
}

#[cfg(not(feature = "tcp"))]
fn socket(stack: Stack<'static>, port: u16) -> UdpSocket<'static> {
    let mut s = UdpSocket::new(
        stack,
        Box::leak(Box::new([PacketMetadata::EMPTY; 4])),
        Box::leak(Box::new([0; 1536])),
        Box::leak(Box::new([PacketMetadata::EMPTY; 4])),
        Box::leak(Box::new([0; 1536])),
    );
    if s.bind(port).is_err() {
        panic!()
    }
    s
}

#[cfg(feature = "tcp")]
fn tcp_socket(stack: Stack<'static>) -> TcpSocket<'static> {
    TcpSocket::new(
        stack,
        Box::leak(Box::new([0; 1536])),
        Box::leak(Box::new([0; 1536])),
    )
}

#[cfg(not(feature = "tcp"))]
type CoapTaskRunner = CoapRunner<'static, NoopRawMutex, 4>;
#[cfg(feature = "tcp")]
type CoapTaskRunner = TcpRunner<'static, NoopRawMutex, 4>;

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Loopback>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = 2)]
async fn coap_task(mut runner: CoapTaskRunner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn server_task(server: Server<'static, NoopRawMutex, 4>) -> ! {
    loop {
        let incoming = server.next_request().await;
        let mut response = Packet::new();
        let temp = incoming
            .request
            .get_option(CoapOption::UriPath)
            .is_some_and(|p| p.front().is_some_and(|s| s == b"temp"));
        if temp {
            response.header.code = MessageClass::Response(ResponseType::Content);
            response.payload = b"21.5".to_vec();
        } else {
            response.header.code = MessageClass::Response(ResponseType::NotFound);
        }
        server.respond(incoming.id, response).await;
    }
}

/// Answers counted, so the work is observable in a debugger and not optimised away.
static ANSWERED: AtomicU32 = AtomicU32::new(0);

#[embassy_executor::task]
async fn main_task(spawner: Spawner) {
    static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();
    static CHANNELS: StaticCell<[Channels; 2]> = StaticCell::new();
    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ADDRESS, 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let resources = RESOURCES.init(StackResources::new());
    let (stack, net) = embassy_net::new(Loopback::default(), net_config, resources, 0x5eed);
    let [client_ch, server_ch] = CHANNELS.init([Channels::new(), Channels::new()]);
    // On a real device the seeds come from the hardware RNG, different at every boot.
    let (Ok(client_ep), Ok(server_ep)) = (Endpoint::new(config(), 1), Endpoint::new(config(), 2))
    else {
        panic!()
    };
    spawner.spawn(net_task(net).unwrap_or_else(|_| panic!()));
    #[cfg(not(feature = "tcp"))]
    let runners = [
        coap_task(CoapRunner::new(client_ep, socket(stack, 40000), client_ch)),
        coap_task(CoapRunner::new(server_ep, socket(stack, 5683), server_ch)),
    ];
    #[cfg(feature = "tcp")]
    let runners = {
        let client = TcpRunner::new(client_ep, [tcp_socket(stack)], client_ch);
        let server = TcpRunner::new(server_ep, [tcp_socket(stack)], server_ch);
        let (Ok(client), Ok(mut server)) = (client, server) else {
            panic!()
        };
        if server.listen(5683).is_err() {
            panic!()
        }
        [coap_task(client), coap_task(server)]
    };
    for t in runners {
        spawner.spawn(t.unwrap_or_else(|_| panic!()));
    }
    spawner.spawn(server_task(Server::new(server_ch)).unwrap_or_else(|_| panic!()));

    let client = Client::new(client_ch);
    let server = SocketAddr::new(ADDRESS.into(), 5683);
    let keepalive = Keepalive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };
    client.open_session(server, Some(keepalive)).await;
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.add_option(CoapOption::UriPath, b"temp".to_vec());
    loop {
        if let Ok(response) = client.request(server, get.clone()).await {
            if response.payload == b"21.5" {
                ANSWERED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Timer::after_secs(5).await;
    }
}

#[entry]
fn main() -> ! {
    {
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; the region is used only by the heap.
        unsafe { HEAP.init(core::ptr::addr_of_mut!(HEAP_MEM) as usize, HEAP_SIZE) }
    }
    let Some(mut core) = cortex_m::Peripherals::take() else {
        panic!()
    };
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(CORE_HZ / 1_000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_counter();
    core.SYST.enable_interrupt();

    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR
        .init(Executor::new())
        .run(|spawner| spawner.spawn(main_task(spawner).unwrap_or_else(|_| panic!())))
}
