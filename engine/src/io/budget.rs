//! The preallocation budget: a bound on the disk space that logs claim
//! ahead of their data (preallocated and not yet written), summed over every
//! log on one storage (the whole process, for `DmaStorage`).
//!
//! Logs claim from it before they preallocate and give back what their data
//! filled, what a trim or a roll returned, and everything when they close.
//! The bound is the smaller of a fixed cap and a share of the space the file
//! system has free (plus what is claimed already, which it counts as used):
//! with a disk nearly full, logs stop preallocating and their writes extend
//! the files instead, which is slower but claims nothing.
//!
//! Atomics, so one budget can be shared by the shards of a process; a race
//! between two claims can only make one of them smaller.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The fixed cap on what all logs of a process claim ahead of their data.
/// A partition writing at full speed claims up to two of its largest steps
/// (256 MiB in its active segment, 256 MiB of spare segment), so this
/// leaves full-speed preallocation to four such partitions, one per shard
/// on a 4-core machine; past the cap, writes extend the files.
pub const PREALLOCATE_BUDGET_BYTES: u64 = 2 << 30;
/// At most this fraction (1/n) of the file system's free space is claimed.
pub const PREALLOCATE_FREE_SPACE_DIVISOR: u64 = 8;
/// How often (by the logs' clock) the free space is looked up again.
pub const FREE_SPACE_CHECK_MS: i64 = 1000;

#[derive(Debug)]
pub struct PreallocBudget {
    cap_bytes: AtomicU64,
    claimed_bytes: AtomicU64,
    /// The share of the free space, as of `free_checked_ms`.
    free_share_bytes: AtomicU64,
    /// When the free space was last looked up (`i64::MIN`: never).
    free_checked_ms: AtomicI64,
}

impl PreallocBudget {
    pub const fn new(cap_bytes: u64) -> PreallocBudget {
        PreallocBudget {
            cap_bytes: AtomicU64::new(cap_bytes),
            claimed_bytes: AtomicU64::new(0),
            free_share_bytes: AtomicU64::new(u64::MAX),
            free_checked_ms: AtomicI64::new(i64::MIN),
        }
    }

    pub fn set_cap_bytes(&self, cap_bytes: u64) {
        self.cap_bytes.store(cap_bytes, Ordering::Relaxed);
    }

    /// Bytes claimed now by all logs on this budget.
    pub fn claimed_bytes(&self) -> u64 {
        self.claimed_bytes.load(Ordering::Relaxed)
    }

    /// The bound on the claims now.
    pub fn limit_bytes(&self) -> u64 {
        self.cap_bytes
            .load(Ordering::Relaxed)
            .min(self.free_share_bytes.load(Ordering::Relaxed))
    }

    /// Whether the free space should be looked up again at `now_ms`.
    pub fn free_space_stale(&self, now_ms: i64) -> bool {
        let checked = self.free_checked_ms.load(Ordering::Relaxed);
        checked == i64::MIN || now_ms.saturating_sub(checked) >= FREE_SPACE_CHECK_MS
    }

    /// Records the file system's free space, looked up at `now_ms`.
    pub fn note_free_bytes(&self, free_bytes: u64, now_ms: i64) {
        // Claimed space is allocated, so the file system counts it as used;
        // the share is of what would be free without the claims.
        let share =
            free_bytes.saturating_add(self.claimed_bytes()) / PREALLOCATE_FREE_SPACE_DIVISOR;
        self.free_share_bytes.store(share, Ordering::Relaxed);
        self.free_checked_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Changes a claim of `held` bytes to `want` bytes and returns the claim
    /// now held: `want` when it shrinks or fits under the limit, else as
    /// much as fits (never less than `held`: preallocated space cannot be
    /// taken back by the budget, only by its log).
    pub fn resize(&self, held: u64, want: u64) -> u64 {
        if want <= held {
            self.claimed_bytes
                .fetch_sub(held.saturating_sub(want), Ordering::Relaxed);
            return want;
        }
        let limit = self.limit_bytes();
        let mut got = held;
        let _ = self
            .claimed_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |claimed| {
                debug_assert!(claimed >= held, "a claim larger than the total");
                let others = claimed.saturating_sub(held);
                got = want.min(limit.saturating_sub(others).max(held));
                Some(others.saturating_add(got))
            });
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stay_under_the_cap_and_the_free_share() {
        let b = PreallocBudget::new(100);
        assert_eq!(b.resize(0, 60), 60);
        assert_eq!(b.resize(0, 60), 40, "only what is left under the cap");
        assert_eq!(b.resize(40, 50), 40, "nothing left: the claim stays");
        assert_eq!(b.resize(60, 10), 10, "a shrinking claim is given back");
        assert_eq!(b.claimed_bytes(), 50);
        // 750 free + 50 claimed, an eighth of it: 100, the cap again.
        b.note_free_bytes(750, 0);
        assert_eq!(b.limit_bytes(), 100);
        b.note_free_bytes(350, 0);
        assert_eq!(b.limit_bytes(), 50);
        assert_eq!(b.resize(10, 30), 10, "over the free share");
        assert!(!b.free_space_stale(FREE_SPACE_CHECK_MS - 1));
        assert!(b.free_space_stale(FREE_SPACE_CHECK_MS));
        assert_eq!(b.resize(10, 0), 0);
        assert_eq!(b.resize(40, 0), 0);
        assert_eq!(b.claimed_bytes(), 0);
    }
}
