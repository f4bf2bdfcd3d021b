//! The firmware's engine caps, shared by `main.rs` and the `ram` measurement so that the
//! RAM figures describe the firmware that is measured for size.

use coap_engine::{Config, Limits};

/// Caps sized for a microcontroller. With them the two endpoints below peak at about 10 KiB of
/// heap on a 64-bit host (less with 32-bit pointers), the same after 100 or 100,000 round trips,
/// so `HEAP_SIZE` leaves room for allocator overhead.
pub fn config() -> Config {
    Config {
        limits: Limits {
            max_sessions: 4,
            max_queued_requests: 4,
            max_exchanges: 4,
            max_confirmables: 4,
            max_pending_requests: 4,
            max_dedup_entries: 16,
            max_remembered_peers: 4,
            max_queued_transmits: 8,
            tracked_transmits: 8,
            max_observers: 2,
            max_block_transfers: 1,
            ..Limits::default()
        },
        ..Config::default()
    }
}
