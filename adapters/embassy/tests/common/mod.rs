//! Test support: the in-memory link, socket buffers and a single-threaded executor that runs
//! on embassy-time's mock driver (virtual time).

pub mod libcoap;
pub mod link;
pub mod pair;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};

use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::Stack;
use embassy_time::{Duration, MockDriver};

/// Buffers for one UDP socket.
pub struct SocketBuffers {
    rx_meta: [PacketMetadata; 8],
    rx: [u8; 4096],
    tx_meta: [PacketMetadata; 8],
    tx: [u8; 4096],
}

impl SocketBuffers {
    pub fn new() -> Self {
        SocketBuffers {
            rx_meta: [PacketMetadata::EMPTY; 8],
            rx: [0; 4096],
            tx_meta: [PacketMetadata::EMPTY; 8],
            tx: [0; 4096],
        }
    }

    /// A socket on `stack` bound to `port`.
    pub fn socket<'a>(&'a mut self, stack: Stack<'a>, port: u16) -> UdpSocket<'a> {
        let mut s = UdpSocket::new(
            stack,
            &mut self.rx_meta,
            &mut self.rx,
            &mut self.tx_meta,
            &mut self.tx,
        );
        s.bind(port).expect("bind");
        s
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A task for [`run_virtual`].
pub type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Wraps a future (e.g. a runner's `run()`, which never ends) as a [`Task`].
pub fn task<'a, F: Future + 'a>(future: F) -> Task<'a> {
    Box::pin(async move {
        future.await;
    })
}

/// The mock clock is global: tests that use it take this lock.
static CLOCK: Mutex<()> = Mutex::new(());

/// Step of virtual time when nothing is ready to run.
pub const STEP: Duration = Duration::from_millis(1);

/// Runs `main` to completion in virtual time, with `tasks` beside it. Like embassy-executor,
/// each task is polled only when its own waker fired (the embassy-net runner and a socket user
/// wake each other, so polling them together would never go idle). When no task is ready the
/// mock clock advances by [`STEP`], firing due timers. Deterministic: no thread, no wall
/// clock. Panics after `limit` of virtual time, or 30 s of wall time.
pub fn run_virtual<'a, T: 'a>(
    limit: Duration,
    main: impl Future<Output = T> + 'a,
    tasks: Vec<Task<'a>>,
) -> T {
    run(limit, main, tasks, |driver| driver.advance(STEP))
}

/// [`run_virtual`], but the mock clock follows the wall clock: when no task is ready the
/// thread sleeps for [`STEP`] and the clock advances by the time that really passed. For
/// tests that talk to a real process (libcoap's server), whose timers run in real time.
#[allow(dead_code)] // only the libcoap test runs in real time
pub fn run_real<'a, T: 'a>(
    limit: Duration,
    main: impl Future<Output = T> + 'a,
    tasks: Vec<Task<'a>>,
) -> T {
    let mut last = std::time::Instant::now();
    run(limit, main, tasks, move |driver| {
        std::thread::sleep(std::time::Duration::from_micros(STEP.as_micros()));
        let passed = last.elapsed();
        last += passed;
        driver.advance(Duration::from_micros(passed.as_micros() as u64));
    })
}

fn run<'a, T: 'a>(
    limit: Duration,
    main: impl Future<Output = T> + 'a,
    tasks: Vec<Task<'a>>,
    mut idle_step: impl FnMut(&MockDriver),
) -> T {
    let _clock: MutexGuard<'_, ()> = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    let driver = MockDriver::get();
    driver.reset();
    driver.advance(Duration::from_secs(1)); // start away from the epoch
    let result = Rc::new(RefCell::new(None));
    let out = result.clone();
    let mut tasks = tasks;
    tasks.insert(0, task(async move { *out.borrow_mut() = Some(main.await) }));
    let flags: Vec<Arc<Flag>> = tasks
        .iter()
        .map(|_| Arc::new(Flag(AtomicBool::new(true))))
        .collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| Waker::from(f.clone())).collect();
    let end = embassy_time::Instant::now() + limit;
    let watchdog = std::time::Instant::now();
    while embassy_time::Instant::now() < end {
        assert!(
            watchdog.elapsed() < std::time::Duration::from_secs(30),
            "stuck at {:?} of virtual time",
            embassy_time::Instant::now()
        );
        let mut idle = true;
        for (i, task) in tasks.iter_mut().enumerate() {
            if flags[i].0.swap(false, Ordering::SeqCst) {
                idle = false;
                let _ = task.as_mut().poll(&mut Context::from_waker(&wakers[i]));
            }
        }
        if let Some(v) = result.borrow_mut().take() {
            return v;
        }
        if idle {
            idle_step(driver);
        }
    }
    panic!("not done after {limit:?} of virtual time");
}
