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
//! - One read-ahead per log; a new one replaces it. Only with a spawner
//!   (the glommio executor): a log driven by a plain `block_on` reads as
//!   before.
//! - Only bytes the file holds for good: a closed segment, or the active
//!   segment below the tail's memory. At most `READ_AHEAD_MAX_BYTES`, and
//!   the process holds at most `READ_AHEAD_BUDGET_BYTES` in read-aheads.
//! - A read-ahead belongs to one segment file (`Rc::ptr_eq`), so a segment
//!   the cleaner swapped never serves it; `truncate_to` drops it, because
//!   the bytes past the cut are written again, and so do retention and a
//!   clean's swap, so a deleted segment's file is not kept open by it.
//! - Bytes from a read-ahead count as read from the file: they are checked
//!   (CRC-32C, offsets chain) like any other.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::io::StorageFile;
use crate::notify::Notify;

/// The largest read-ahead; a larger next read reads the rest itself.
pub(super) const READ_AHEAD_MAX_BYTES: u64 = 4 << 20;
/// Smaller than this, a read-ahead is not worth its own I/O.
pub(super) const READ_AHEAD_MIN_BYTES: u64 = 64 << 10;
/// What all the process's read-aheads hold at most (fetched and not yet
/// read, or on their way): 64 partitions at the largest read-ahead.
pub const READ_AHEAD_BUDGET_BYTES: u64 = 256 << 20;

static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the process's read-aheads hold now.
pub fn read_ahead_held_bytes() -> u64 {
    HELD_BYTES.load(Ordering::Relaxed)
}

/// One read-ahead: `[pos, pos + len)` of segment `base`, from `file`.
pub(super) struct Prefetch<F> {
    base: i64,
    file: Rc<F>,
    pos: u64,
    len: u64,
    result: RefCell<Option<io::Result<Bytes>>>,
    done: Notify,
}

impl<F> Drop for Prefetch<F> {
    fn drop(&mut self) {
        HELD_BYTES.fetch_sub(self.len, Ordering::Relaxed);
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

    /// Whether this read-ahead starts at `pos` of `file`.
    pub(super) fn starts_at(&self, base: i64, file: &Rc<F>, pos: u64) -> bool {
        self.base == base && self.pos == pos && Rc::ptr_eq(&self.file, file)
    }

    /// Whether this read-ahead holds `pos` of `file`.
    pub(super) fn covers(&self, base: i64, file: &Rc<F>, pos: u64) -> bool {
        self.base == base
            && Rc::ptr_eq(&self.file, file)
            && self.pos <= pos
            && pos < self.pos.saturating_add(self.len)
    }

    /// The bytes of `[pos, pos + len)` it holds from `pos` on, once read;
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
        let bytes = self.result.borrow_mut().take()?.ok()?;
        let from = pos.saturating_sub(self.pos) as usize;
        let to = (pos.saturating_add(len).saturating_sub(self.pos) as usize).min(bytes.len());
        (from < to).then(|| bytes.slice(from..to))
    }
}
