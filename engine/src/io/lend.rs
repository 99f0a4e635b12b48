//! Buffers lent out as [`Bytes`] without copying them.
//!
//! A shard's read buffers (an O_DIRECT read's result, a sealed chunk of the
//! active segment, the unsealed tail buffer below the segment's end) are
//! `!Send`: they belong to the shard's thread and its
//! I/O allocator. A fetch's bytes, though, leave the shard: the connection
//! that sends them may live on another shard, and `Bytes` must be `Send`.
//! Before this, every read was copied into a fresh `Bytes`.
//!
//! [`lend`] gives a `Bytes` that points into the buffer itself. The buffer
//! stays in this thread's list of loans; the `Bytes` (and its clones, on any
//! thread) hold a token. The buffer is dropped here, on its own thread, by
//! the first [`lend`] or [`sweep`] after the last token is gone. Nothing
//! mutates a lent buffer: [`Stable`] promises that for what it is
//! implemented on.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::IoBuf;

/// Loans kept before a lend sweeps: below this, sweeping every lend would
/// only cost time; the bytes they pin are bounded by the reads in flight.
const SWEEP_EVERY_LOANS: usize = 16;

/// Memory that may be read from any thread while its owner lives, even after
/// the owner is moved, and that nothing writes while the owner lives.
///
/// # Safety
/// `stable_bytes` must return a slice of heap memory that moving `self` does
/// not move, that stays valid until `self` is dropped, and that no one
/// mutates (through this owner or another) while `self` lives.
pub unsafe trait Stable: 'static {
    fn stable_bytes(&self) -> &[u8];
    /// Called on the owner's thread once every `Bytes` lent from it is gone.
    fn give_back(self: Box<Self>) {}
}

// SAFETY: an `IoBuf` is heap memory (an aligned allocation, or a `Vec` in
// the simulator); it is mutated through `&mut B`, which an `Rc<B>` gives
// only when it is the one reference (`Rc::get_mut`, `try_unwrap`), and this
// `Rc` is another one for as long as it lives. The one exception is the
// active segment's unsealed tail buffer, which appends write through
// `IoBuf::base_ptr` while it is shared: it is never lent as an `Rc<B>`, only
// as a `TailPart` (`log/tail.rs`) of bytes nothing writes any more.
unsafe impl<B: IoBuf> Stable for Rc<B> {
    fn stable_bytes(&self) -> &[u8] {
        self.as_slice()
    }
    /// The last reference goes back to the buffer pool (a lent chunk
    /// trimmed from the tail while lent is not lost to it).
    fn give_back(self: Box<Self>) {
        if let Ok(buf) = Rc::try_unwrap(*self) {
            buf.recycle();
        }
    }
}

/// What the `Bytes` own: a view of a lent buffer and the loan's token.
struct Lent {
    ptr: *const u8,
    len: usize,
    _token: Arc<()>,
}

// SAFETY: `Lent` only reads `[ptr, ptr + len)`, which the loan's owner keeps
// valid and unchanged (`Stable`) until the token is unique again, and the
// owner is dropped only on its own thread, after that (`Loans`).
unsafe impl Send for Lent {}
// SAFETY: as above; shared reads only.
unsafe impl Sync for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `unsafe impl Send for Lent`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

struct Loan {
    token: Arc<()>,
    owner: Box<dyn Stable>,
}

impl Loan {
    /// Whether every `Bytes` of this loan is gone. `Arc::get_mut` reads the
    /// count with Acquire: the other threads' reads of the bytes happen
    /// before the owner is dropped here.
    fn returned(&mut self) -> bool {
        Arc::get_mut(&mut self.token).is_some()
    }
}

/// This thread's loans.
#[derive(Default)]
struct Loans(Vec<Loan>);

impl Loans {
    /// Gives back the owners whose `Bytes` are all gone.
    fn sweep(&mut self) {
        let mut i = 0;
        while i < self.0.len() {
            if self.0.get_mut(i).is_some_and(Loan::returned) {
                self.0.swap_remove(i).owner.give_back();
            } else {
                i = i.saturating_add(1);
            }
        }
    }
}

impl Drop for Loans {
    /// The thread is ending. A buffer still lent is leaked, not dropped:
    /// another thread may still read it.
    fn drop(&mut self) {
        for mut loan in self.0.drain(..) {
            if !loan.returned() {
                std::mem::forget(loan.owner);
            }
        }
    }
}

thread_local! {
    static LOANS: RefCell<Loans> = RefCell::new(Loans::default());
}

/// `owner`'s bytes `[from, to)` (clamped to its length) as `Bytes`, without
/// a copy. An empty range gives an empty `Bytes` and keeps nothing.
pub fn lend<O: Stable>(owner: O, from: usize, to: usize) -> Bytes {
    let all = owner.stable_bytes();
    let to = to.min(all.len());
    let Some(view) = all.get(from..to).filter(|v| !v.is_empty()) else {
        return Bytes::new();
    };
    let token = Arc::new(());
    let lent = Lent {
        ptr: view.as_ptr(),
        len: view.len(),
        _token: token.clone(),
    };
    LOANS.with(|l| {
        let mut l = l.borrow_mut();
        if l.0.len() >= SWEEP_EVERY_LOANS {
            l.sweep();
        }
        l.0.push(Loan {
            token,
            owner: Box::new(owner),
        });
    });
    Bytes::from_owner(lent)
}

/// Gives back this thread's buffers whose `Bytes` are all gone; returns how many
/// loans are still out.
pub fn sweep() -> usize {
    LOANS.with(|l| {
        let mut l = l.borrow_mut();
        l.sweep();
        l.0.len()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A buffer that counts its drops.
    struct Counted(Vec<u8>, Rc<std::cell::Cell<usize>>);
    impl IoBuf for Counted {
        fn as_slice(&self) -> &[u8] {
            &self.0
        }
        fn as_mut_slice(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn base_ptr(&self) -> *mut u8 {
            self.0.as_ptr().cast_mut()
        }
        fn recycle(self) {
            RECYCLED.with(|r| r.set(r.get() + 1));
        }
    }

    thread_local! {
        static RECYCLED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
        }
    }

    #[test]
    fn a_lent_buffer_lives_until_its_last_bytes_are_dropped_on_another_thread() {
        let drops = Rc::new(std::cell::Cell::new(0));
        let buf = Rc::new(Counted((0..=255).collect(), drops.clone()));
        let b = lend(buf.clone(), 10, 20);
        drop(buf);
        assert_eq!(&b[..], &(10..20).collect::<Vec<u8>>()[..]);
        let clone = b.slice(2..4);
        let (b, clone) = std::thread::spawn(move || {
            assert_eq!(&clone[..], &[12, 13]);
            (b, clone)
        })
        .join()
        .unwrap();
        drop(b);
        assert_eq!(sweep(), 1, "a slice of it is still out");
        assert_eq!(drops.get(), 0);
        std::thread::spawn(move || drop(clone)).join().unwrap();
        assert_eq!(
            drops.get(),
            0,
            "dropped by the sweep, not by the other thread"
        );
        assert_eq!(sweep(), 0);
        assert_eq!(drops.get(), 1);
        assert_eq!(RECYCLED.with(|r| r.get()), 1, "given back to the pool");
    }

    #[test]
    fn an_empty_range_lends_nothing() {
        let before = sweep();
        let b = lend(Rc::new(Counted(vec![1, 2, 3], Default::default())), 3, 9);
        assert!(b.is_empty());
        assert_eq!(sweep(), before);
    }
}
