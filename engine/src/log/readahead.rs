//! Read-ahead for consumers reading from the disk.
//!
//! A consumer catching up reads one partition in steps of its fetch size
//! (the Java client's `max.partition.fetch.bytes`, 1 MiB). Each step is an
//! O_DIRECT read, and between two steps the disk idles while the response
//! travels, the client decodes it and its next fetch comes back: Apache
//! Kafka hides that behind the page cache's read-ahead, which O_DIRECT
//! bypasses. So after a read that went to the disk, the log starts the
//! read the next step will make, from the position the next step's index
//! lookup will give, of the size it will ask. The next step finds those
//! bytes in memory, or waits for the rest of that I/O instead of starting
//! its own.
//!
//! Rules:
//! - A log keeps one run of read-aheads: contiguous pieces of one segment
//!   file, reaching `READ_AHEAD_STEPS` steps past where the next step
//!   starts, so a step's I/O is on its way one step before it is wanted
//!   (one step ahead is too shallow for a disk that takes several ms a read
//!   while the consumer turns its fetches around faster). A read elsewhere
//!   starts a new run. Only with a spawner (the glommio executor): a log
//!   driven by a plain `block_on` reads as before.
//! - A step's bytes past its last whole batch (the start of the next batch)
//!   were read already: they become the run's first piece, with no I/O, so
//!   no byte is read from the disk twice by one reader going through.
//! - A read takes what it wants of the pieces and leaves them in the run:
//!   a read that stopped early (a fetch whose budget ran out) is followed by
//!   one from the same offset. A piece is dropped once the reader has moved
//!   past it (the next step starts at or after its end).
//! - Only bytes the file holds for good: a closed segment, or the active
//!   segment below the tail's memory. At most `READ_AHEAD_MAX_BYTES` ahead,
//!   and the process holds at most `READ_AHEAD_BUDGET_BYTES` in read-aheads.
//! - A piece belongs to one segment file (`Rc::ptr_eq`), so a segment the
//!   cleaner swapped never serves it; `truncate_to` drops the run, because
//!   the bytes past the cut are written again, and so do retention and a
//!   clean's swap, so a deleted segment's file is not kept open by it.
//! - Bytes from a read-ahead count as read from the file: they are checked
//!   (CRC-32C, offsets chain) like any other.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::io::StorageFile;
use crate::notify::Notify;

/// How far a run reaches past the next step's start, at most.
pub(super) const READ_AHEAD_MAX_BYTES: u64 = 4 << 20;
/// How many steps ahead a run reaches (within `READ_AHEAD_MAX_BYTES`).
pub(super) const READ_AHEAD_STEPS: u64 = 2;
/// Smaller than this, a read-ahead is not worth its own I/O.
pub(super) const READ_AHEAD_MIN_BYTES: u64 = 64 << 10;
/// What all the process's read-aheads hold at most (fetched and not yet
/// read, or on their way): 128 partitions two 1 MiB steps ahead (the Java
/// consumer's `max.partition.fetch.bytes`), with room for what each step
/// read past its last batch.
pub const READ_AHEAD_BUDGET_BYTES: u64 = 512 << 20;

static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the process's read-aheads hold now.
pub fn read_ahead_held_bytes() -> u64 {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// One piece of a read-ahead run: `[pos, pos + len)` of segment `base`,
/// from `file`.
pub(super) struct Prefetch<F> {
    base: i64,
    file: Rc<F>,
    pos: u64,
    len: u64,
    /// Bytes of the budget it holds.
    held: u64,
    result: RefCell<Option<io::Result<Bytes>>>,
    done: Notify,
}

impl<F> Drop for Prefetch<F> {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// Takes `len` bytes of the read-ahead budget; false when it is spent.
fn claim(len: u64) -> bool {
    HELD_BYTES
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(len)
                .filter(|&total| total <= READ_AHEAD_BUDGET_BYTES)
        })
        .is_ok()
}

impl<F: StorageFile> Prefetch<F> {
    /// Starts reading `[pos, pos + len)` of `file` (segment `base`) with
    /// `spawn`; `None` when the budget is spent.
    pub(super) fn start(
        base: i64,
        file: Rc<F>,
        pos: u64,
        len: u64,
        spawn: &dyn Fn(Pin<Box<dyn Future<Output = ()>>>),
    ) -> Option<Rc<Prefetch<F>>> {
        if !claim(len) {
            return None;
        }
        let p = Rc::new(Prefetch {
            base,
            file,
            pos,
            len,
            held: len,
            result: RefCell::new(None),
            done: Notify::default(),
        });
        let task = p.clone();
        spawn(Box::pin(async move {
            let r = task.file.read_at(task.pos, task.len as usize).await;
            *task.result.borrow_mut() = Some(r);
            task.done.notify_all();
        }));
        Some(p)
    }

    /// A piece of bytes already read: `bytes`, at `pos` of `file`, a slice
    /// of a buffer of `buffer_len` bytes (what it holds of the budget);
    /// `None` when the budget is spent.
    pub(super) fn ready(
        base: i64,
        file: Rc<F>,
        pos: u64,
        bytes: Bytes,
        buffer_len: u64,
    ) -> Option<Rc<Prefetch<F>>> {
        let held = buffer_len.max(bytes.len() as u64);
        if !claim(held) {
            return None;
        }
        let done = Notify::default();
        Some(Rc::new(Prefetch {
            base,
            file,
            pos,
            len: bytes.len() as u64,
            held,
            result: RefCell::new(Some(Ok(bytes))),
            done,
        }))
    }

    /// Where this piece ends.
    pub(super) fn end(&self) -> u64 {
        self.pos.saturating_add(self.len)
    }

    /// Whether this piece is of segment `base` in `file`.
    fn of(&self, base: i64, file: &Rc<F>) -> bool {
        self.base == base && Rc::ptr_eq(&self.file, file)
    }

    /// Whether this piece holds `pos` of `file`.
    pub(super) fn covers(&self, base: i64, file: &Rc<F>, pos: u64) -> bool {
        self.base == base
            && Rc::ptr_eq(&self.file, file)
            && self.pos <= pos
            && pos < self.pos.saturating_add(self.len)
    }

    /// The bytes of `[pos, pos + len)` it holds from `pos` on, once read
    /// (the piece keeps them for a later read of what follows);
    /// `None` if the read failed (the caller reads again and reports its
    /// own error).
    pub(super) async fn bytes(&self, pos: u64, len: u64) -> Option<Bytes> {
        loop {
            let done = self.done.notified();
            if self.result.borrow().is_some() {
                break;
            }
            done.await;
        }
        let bytes = self.result.borrow().as_ref()?.as_ref().ok()?.clone();
        let from = pos.saturating_sub(self.pos) as usize;
        let to = (pos.saturating_add(len).saturating_sub(self.pos) as usize).min(bytes.len());
        (from < to).then(|| bytes.slice(from..to))
    }
}

/// A log's read-aheads: contiguous pieces of one segment file, in order.
pub(super) struct ReadAheads<F> {
    run: VecDeque<Rc<Prefetch<F>>>,
}

impl<F> Default for ReadAheads<F> {
    fn default() -> Self {
        ReadAheads {
            run: VecDeque::new(),
        }
    }
}

impl<F: StorageFile> ReadAheads<F> {
    /// Forgets every piece (their I/O, if on its way, gives its budget
    /// back when it ends).
    pub(super) fn clear(&mut self) {
        self.run.clear();
    }

    /// The piece holding `pos` of segment `base` in `file`.
    pub(super) fn piece_at(&self, base: i64, file: &Rc<F>, pos: u64) -> Option<Rc<Prefetch<F>>> {
        self.run.iter().find(|p| p.covers(base, file, pos)).cloned()
    }

    /// Drops `piece`, whose read failed, and what follows it.
    pub(super) fn failed(&mut self, piece: &Rc<Prefetch<F>>) {
        if let Some(i) = self.run.iter().position(|p| Rc::ptr_eq(p, piece)) {
            self.run.truncate(i);
        }
    }

    /// Makes the run reach from `next` to `target` of segment `base` in
    /// `file`: keeps the pieces from `next` on when the run holds `next`
    /// (or ends there), else starts anew, first with `leftover`'s bytes
    /// (already read: `(pos, bytes, held)`) when they hold `next` (the
    /// piece holds `held` bytes of the budget, at least all of `bytes`: the
    /// buffers they are a slice of);
    /// then reads the rest with `spawn` when it is at least
    /// `READ_AHEAD_MIN_BYTES`.
    /// Returns the bytes of the read it started.
    pub(super) fn extend(
        &mut self,
        base: i64,
        file: &Rc<F>,
        next: u64,
        target: u64,
        leftover: Option<(u64, Bytes, u64)>,
        spawn: &dyn Fn(Pin<Box<dyn Future<Output = ()>>>),
    ) -> u64 {
        let holds_next = self
            .run
            .front()
            .is_some_and(|p| p.of(base, file) && p.pos <= next)
            && self.run.back().is_some_and(|p| next <= p.end());
        if !holds_next {
            self.run.clear();
        }
        while self.run.front().is_some_and(|p| p.end() <= next) {
            self.run.pop_front();
        }
        if self.run.is_empty() {
            let ready = leftover.and_then(|(pos, bytes, held)| {
                let from = usize::try_from(next.checked_sub(pos)?).ok()?;
                (from < bytes.len()).then(|| (bytes.slice(from..), held.max(bytes.len() as u64)))
            });
            if let Some((bytes, buffer_len)) = ready {
                let piece = Prefetch::ready(base, file.clone(), next, bytes, buffer_len);
                self.run.extend(piece);
            }
        }
        let from = self.run.back().map_or(next, |p| p.end());
        let len = target.saturating_sub(from);
        if len < READ_AHEAD_MIN_BYTES {
            return 0;
        }
        match Prefetch::start(base, file.clone(), from, len, spawn) {
            Some(piece) => {
                self.run.push_back(piece);
                len
            }
            None => 0,
        }
    }
}
