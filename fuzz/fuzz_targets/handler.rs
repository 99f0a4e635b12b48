//! Sequences of request frames through the broker's request handlers, in
//! process, against a one-shard broker on a fresh data directory
//! (`strom_server::fuzzing`). Nothing may panic or hang, every reply must
//! be a well-formed response frame, and the memory an input allocates is
//! capped: at no point while an input runs may its ordinary heap
//! allocations exceed `HEAP_PER_INPUT_CAP_BYTES` above what was live when
//! it started, plus one chunk (`CHUNK_BYTES`, 1 MiB) for each partition log
//! open at once (its tail buffer: allocated when the log opens, resident
//! only as far as it is written; the fuzzer found a CreateTopics of 515
//! partitions that took 533 MB so), and everything it allocated must be freed once its broker
//! has stopped (allowing `HEAP_LEFT_OVER_CAP_BYTES` for caches that stay
//! warm, such as glommio's buffers).
//!
//! A single allocation of `RESERVATION_BYTES` or more is counted apart, as
//! a reservation. The `kafka-protocol` decoders reserve
//! `Vec::with_capacity(n)` from an array count the client sent before they
//! find the elements missing (the fuzzer's first finding here was a
//! DescribeGroups whose count reserved 212 MB). Such a reservation is
//! address space, not memory: glibc maps anything this large lazily, and
//! the broker's allocator maps `HUGE_ALLOCATION_BYTES` and up with
//! `MAP_NORESERVE` (`strom_server::alloc`), so only the pages the decoder
//! writes before it fails are touched. Reservations must be released by the
//! end of the input; libFuzzer's `-rss_limit_mb` (`scripts/fuzz`) bounds
//! the memory actually touched.
#![no_main]

use std::alloc::{GlobalAlloc, Layout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use strom_engine::io::CHUNK_BYTES;
use strom_server::alloc::HugeMapAllocator;

const HEAP_PER_INPUT_CAP_BYTES: usize = 64 << 20;
/// Single allocations at least this large are counted as reservations.
const RESERVATION_BYTES: usize = 16 << 20;
const HEAP_LEFT_OVER_CAP_BYTES: usize = 4 << 20;

/// The broker's allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static RESERVATIONS_LIVE: AtomicUsize = AtomicUsize::new(0);

fn counted(size: usize) -> bool {
    size < RESERVATION_BYTES
}

fn grow(size: usize) {
    if counted(size) {
        let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
    } else {
        RESERVATIONS_LIVE.fetch_add(1, Ordering::Relaxed);
    }
}

fn shrink(size: usize) {
    if counted(size) {
        LIVE_BYTES.fetch_sub(size, Ordering::Relaxed);
    } else {
        RESERVATIONS_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `HugeMapAllocator` with the caller's
// arguments; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { HugeMapAllocator.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { HugeMapAllocator.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { HugeMapAllocator.dealloc(ptr, layout) };
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { HugeMapAllocator.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor");
    static SCRATCH: PathBuf = {
        let dir = strom_server::fuzzing::scratch_parent()
            .join(format!("strom-fuzz-handler-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    };
}

static INPUTS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let n = INPUTS.fetch_add(1, Ordering::Relaxed);
    let dir = SCRATCH.with(|s| strom_server::fuzzing::input_dir(s, n));
    // The executor is made on the first input, before the count starts.
    EXECUTOR.with(|_| ());
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(before, Ordering::Relaxed);
    let logs = EXECUTOR.with(|ex| ex.run(strom_server::fuzzing::run_input(&dir, data)));
    let peak = PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    let cap = HEAP_PER_INPUT_CAP_BYTES + logs * CHUNK_BYTES as usize;
    assert!(
        peak <= cap,
        "an input's heap peaked {peak} bytes above its start (cap {cap}: {logs} logs open)"
    );
    let left = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        left <= HEAP_LEFT_OVER_CAP_BYTES,
        "an input left {left} bytes allocated after its broker stopped"
    );
    assert_eq!(
        RESERVATIONS_LIVE.load(Ordering::Relaxed),
        0,
        "a reservation of {RESERVATION_BYTES} bytes or more outlived its input"
    );
});
