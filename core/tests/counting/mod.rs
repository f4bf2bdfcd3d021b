//! A global allocator that counts the bytes live on the heap, for the memory tests: each
//! test crate that uses it installs it with
//! `#[global_allocator] static GLOBAL: counting::Counting = counting::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

pub struct Counting;

/// Bytes allocated and not yet freed (as requested, before the allocator's own overhead).
pub static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Allocations (and reallocations) made so far.
pub static ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// The current value of [`ALLOCS`].
#[allow(dead_code)] // not every test crate counts calls
pub fn allocs() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}

/// The current value of [`LIVE`].
#[allow(dead_code)] // not every test crate weighs bytes
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}
