//! The process allocator: the system allocator, except that huge
//! allocations are mapped with `MAP_NORESERVE`.
//!
//! Why: the `kafka-protocol` decoders reserve `Vec::with_capacity(n)` from
//! the array length a client sent, before checking that `n` elements could
//! fit in the frame. A hostile length of 2^31 then asks for hundreds of GiB;
//! the system allocator fails and the process aborts. With a non-reserving
//! mapping the reservation only costs address space, the decoder fails at
//! the first missing element, the mapping is dropped and only that
//! connection is closed. Ordinary allocations never reach this path.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped instead of malloc'ed.
pub const HUGE_ALLOCATION_BYTES: usize = 256 << 20;
const PAGE_BYTES: usize = 4096;

pub struct HugeMapAllocator;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE_ALLOCATION_BYTES && align <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to
// it, same layout) or from `map` with the layout's size (and unmapped with
// that size); `is_huge` decides which, from the layout alone, consistently.
unsafe impl GlobalAlloc for HugeMapAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: size is non-zero (>= HUGE_ALLOCATION_BYTES).
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's valid layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's valid layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_huge(layout.size(), layout.align()) && !is_huge(new_size, layout.align()) {
            // SAFETY: both sides are System allocations.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size is valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: new_layout has a non-zero size (one side is huge or new_size > 0 per contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both regions are valid for the smaller size and distinct.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated by this allocator with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_cheap_and_usable() {
        let a = HugeMapAllocator;
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        // SAFETY: valid layout; the pointer is checked, written within bounds and freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            assert_eq!(*p, 7);
            let q = a.realloc(p, layout, 4096);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
    }
}
