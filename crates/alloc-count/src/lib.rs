//! A counting global allocator, for tests that pin allocation behaviour
//! by operation counts instead of time (which is noisy and machine-bound).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: relay_alloc_count::Counting = relay_alloc_count::Counting;
//!
//! let before = relay_alloc_count::snapshot();
//! work();
//! let used = relay_alloc_count::snapshot().since(&before);
//! ```
//!
//! Counts are process-wide: a test binary that measures should hold one
//! test, or measure under a lock, so other threads do not add to them.
//!
//! **Boundary:** the only `unsafe` in the repository: the `GlobalAlloc`
//! methods forward to [`System`] unchanged and only add atomic counters.
//! Test support only; no shipped binary links this crate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The counting allocator: [`System`] plus counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

/// One allocation of `size` bytes made.
fn counted(size: u64) {
    ALLOCATIONS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size, Relaxed);
    grew(size);
}

fn grew(by: u64) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

#[allow(unsafe_code)]
// SAFETY: every method forwards its arguments to `System` unchanged and
// returns its result; the counters (updated after a successful call) have
// no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted(layout.size() as u64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(layout.size() as u64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
        // SAFETY: `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A reallocation counts as one allocation of the new size.
            ALLOCATIONS.fetch_add(1, Relaxed);
            BYTES.fetch_add(new_size as u64, Relaxed);
            let old = layout.size() as u64;
            if new_size as u64 >= old {
                grew(new_size as u64 - old);
            } else {
                LIVE.fetch_sub(old - new_size as u64, Relaxed);
            }
        }
        p
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Allocations and reallocations so far.
    pub allocations: u64,
    /// Bytes requested by them.
    pub bytes: u64,
    /// Bytes live now.
    pub live: u64,
    /// Most bytes live at once since the last [`reset_peak`].
    pub peak: u64,
}

impl Snapshot {
    /// What happened between `before` and `self`: allocations and bytes
    /// since, and the peak above what was live at `before`.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        Snapshot {
            allocations: self.allocations - before.allocations,
            bytes: self.bytes - before.bytes,
            live: self.live.saturating_sub(before.live),
            peak: self.peak.saturating_sub(before.live),
        }
    }
}

/// The counters now.
pub fn snapshot() -> Snapshot {
    Snapshot {
        allocations: ALLOCATIONS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
        live: LIVE.load(Relaxed),
        peak: PEAK.load(Relaxed),
    }
}

/// Starts a new peak from what is live now; returns the counters.
pub fn reset_peak() -> Snapshot {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    snapshot()
}
