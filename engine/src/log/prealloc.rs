//! How far ahead of its data a log preallocates: the sizing policy and the
//! log's claim on the storage's preallocation budget. No I/O but the free
//! space lookup; flush rounds, the spare segment, rolls and the idle trim
//! (`reclaim.rs`) apply what it decides.
//!
//! Preallocation exists because extending an O_DIRECT file in the write
//! path is slow on ext4 and XFS; it costs disk that no data uses yet. The
//! rules, so that disk use follows the data:
//! - a new or recovered segment is not preallocated; its first flush round
//!   preallocates one step past its data;
//! - the step starts at `PREALLOCATE_MIN_STEP_BYTES` and doubles each time
//!   the writes reach the preallocated end within `PREALLOCATE_GROW_MS` of
//!   the previous extension, up to `PREALLOCATE_MAX_STEP_BYTES` (and
//!   `segment.bytes`); it halves for every further `PREALLOCATE_GROW_MS`
//!   an extension waited. A partition so claims about what it writes in
//!   `PREALLOCATE_GROW_MS`: preallocation grows with the write rate, not
//!   with the number of partitions;
//! - the spare segment (the next segment's file, see `files.rs`) is only
//!   prepared for a partition whose step reached `SPARE_MIN_STEP_BYTES`, and
//!   only one step long;
//! - every byte preallocated past the data is claimed from the budget first
//!   (a cap and a share of the free space, summed over all logs); what the
//!   budget refuses is not preallocated, and the writes extend the file;
//! - a log that has not extended its preallocation for
//!   `PREALLOCATE_IDLE_MS` is trimmed back to its data, its spare removed,
//!   and its step starts again from the minimum;
//! - rolls, closes and recovery trim segments to their data (as before).

use std::path::Path;

use crate::io::{PreallocBudget, Storage};

/// The first preallocation step of a segment, and the smallest.
pub(super) const PREALLOCATE_MIN_STEP_BYTES: u64 = 1 << 20;
/// The largest preallocation step. Each extension happens at the start of a
/// flush round with no write in flight (ext4's fallocate waits for every
/// O_DIRECT write of the file), so a write-behind round ends where the
/// preallocated space does: one pipeline drain per step. 256 MiB keeps a
/// fast partition's rounds about as long as before (320 MiB); a first A/B
/// with 64 MiB steps looked 20% slower, within this disk's noise
/// (results/disk-use/README.md). Only a partition writing over 512 MiB/s
/// reaches this step.
pub(super) const PREALLOCATE_MAX_STEP_BYTES: u64 = 256 << 20;
/// Extensions closer together than this double the step; each further
/// interval of this length between two extensions halves it.
pub(super) const PREALLOCATE_GROW_MS: i64 = 500;
/// A log whose preallocation was not extended for this long is idle: what it
/// holds past its data is trimmed at its next tick.
pub(super) const PREALLOCATE_IDLE_MS: i64 = 5_000;
/// The step a partition's writes must have grown to before a spare segment
/// is prepared for it (or the whole segment, when smaller).
pub(super) const SPARE_MIN_STEP_BYTES: u64 = 8 << 20;

/// A log's preallocation state and its claim on the budget.
#[derive(Debug)]
pub(super) struct Prealloc {
    pub(super) step_bytes: u64,
    /// When the active segment's preallocation was last extended (the log's
    /// clock); `None` until its first extension.
    pub(super) last_extend_ms: Option<i64>,
    /// Claimed for the active segment: its preallocation past its data, as
    /// of the last flush round (data written since only makes it smaller).
    pub(super) active_claim_bytes: u64,
    /// Claimed for the spare segment (its whole preallocation).
    pub(super) spare_claim_bytes: u64,
}

impl Default for Prealloc {
    fn default() -> Self {
        Prealloc {
            step_bytes: PREALLOCATE_MIN_STEP_BYTES,
            last_extend_ms: None,
            active_claim_bytes: 0,
            spare_claim_bytes: 0,
        }
    }
}

impl Prealloc {
    /// What this log holds of the budget.
    pub(super) fn claimed_bytes(&self) -> u64 {
        self.active_claim_bytes
            .saturating_add(self.spare_claim_bytes)
    }

    /// Sets the active segment's claim to `want` bytes (as much as the
    /// budget allows when it grows); returns the claim now held.
    pub(super) fn claim_active(&mut self, budget: &PreallocBudget, want: u64) -> u64 {
        let held = self.claimed_bytes();
        let got = budget.resize(held, self.spare_claim_bytes.saturating_add(want));
        self.active_claim_bytes = got.saturating_sub(self.spare_claim_bytes);
        self.active_claim_bytes
    }

    /// Claims `want` bytes for a spare segment: all of them or nothing.
    pub(super) fn claim_spare(&mut self, budget: &PreallocBudget, want: u64) -> bool {
        debug_assert_eq!(self.spare_claim_bytes, 0, "one spare at a time");
        let held = self.claimed_bytes();
        let all = held.saturating_add(want);
        let got = budget.resize(held, all);
        if got < all {
            budget.resize(got, held);
            return false;
        }
        self.spare_claim_bytes = want;
        true
    }

    /// The spare was not made, or removed: its claim goes back.
    pub(super) fn release_spare(&mut self, budget: &PreallocBudget) {
        let held = self.claimed_bytes();
        budget.resize(held, self.active_claim_bytes);
        self.spare_claim_bytes = 0;
    }

    /// A roll made a new segment active: the old one is trimmed to its
    /// data, and the spare's claim (if it became the new segment) is now the
    /// active segment's.
    pub(super) fn rolled(&mut self, budget: &PreallocBudget, spare_used: bool) {
        let held = self.claimed_bytes();
        let keep = if spare_used {
            self.spare_claim_bytes
        } else {
            0
        };
        budget.resize(held, keep);
        self.active_claim_bytes = keep;
        self.spare_claim_bytes = 0;
    }

    /// Gives back everything and starts again from the smallest step (a
    /// trim, a truncation, a close).
    pub(super) fn reset(&mut self, budget: &PreallocBudget, keep_spare: bool) {
        let held = self.claimed_bytes();
        let spare = if keep_spare {
            self.spare_claim_bytes
        } else {
            0
        };
        budget.resize(held, spare);
        *self = Prealloc {
            spare_claim_bytes: spare,
            ..Prealloc::default()
        };
    }

    /// The step for an extension at `now_ms`, after adjusting it to how soon
    /// after the previous extension this one comes.
    fn next_step(&mut self, now_ms: i64, cap_bytes: u64) -> u64 {
        if let Some(last) = self.last_extend_ms {
            let elapsed = now_ms.saturating_sub(last).max(0);
            if elapsed < PREALLOCATE_GROW_MS {
                self.step_bytes = self.step_bytes.saturating_mul(2);
            } else {
                let halvings = (elapsed / PREALLOCATE_GROW_MS).saturating_sub(1).min(32) as u32;
                self.step_bytes >>= halvings;
            }
        }
        self.last_extend_ms = Some(now_ms);
        self.step_bytes = self
            .step_bytes
            .clamp(PREALLOCATE_MIN_STEP_BYTES, PREALLOCATE_MAX_STEP_BYTES);
        self.step_bytes.min(cap_bytes)
    }

    /// At the start of a flush round: where the active segment should be
    /// preallocated to, if further than `allocated`. `data_end` is the
    /// aligned end of its data (written or not), `reach` the end of the
    /// chunks this round may write, `cap_bytes` the aligned segment size.
    /// Updates the claim (data written since the last round has used part
    /// of it) and claims the extension from the budget first.
    pub(super) fn extension(
        &mut self,
        budget: &PreallocBudget,
        now_ms: i64,
        allocated: u64,
        data_end: u64,
        reach: u64,
        cap_bytes: u64,
    ) -> Option<u64> {
        debug_assert!(reach >= data_end || reach == 0);
        let past_data = allocated.saturating_sub(data_end);
        if past_data < self.active_claim_bytes {
            self.claim_active(budget, past_data);
        }
        if reach <= allocated || allocated >= cap_bytes {
            return None;
        }
        let step = self.next_step(now_ms, cap_bytes);
        let want_end = reach.saturating_add(step).min(cap_bytes);
        let got = self.claim_active(budget, want_end.saturating_sub(data_end));
        let target = data_end.saturating_add(got);
        (target > allocated).then_some(target)
    }

    /// The size of a spare segment to prepare now, if the partition writes
    /// fast enough to want one.
    pub(super) fn spare_bytes(&self, cap_bytes: u64) -> Option<u64> {
        (self.step_bytes >= SPARE_MIN_STEP_BYTES.min(cap_bytes))
            .then(|| self.step_bytes.min(cap_bytes))
    }

    /// Whether the log holds preallocated space past its data and has not
    /// extended its preallocation for `PREALLOCATE_IDLE_MS`.
    pub(super) fn idle_and_holding(&self, now_ms: i64, allocated: u64, data_end: u64) -> bool {
        let holding = allocated
            .saturating_sub(data_end)
            .saturating_add(self.spare_claim_bytes);
        holding > 0
            && self
                .last_extend_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= PREALLOCATE_IDLE_MS)
    }
}

/// Looks the free space of `dir`'s file system up again when the budget's
/// figure is stale. A failed lookup keeps the old figure.
pub(super) fn refresh_free_space<S: Storage>(storage: &S, dir: &Path, now_ms: i64) {
    let budget = storage.preallocation_budget();
    if !budget.free_space_stale(now_ms) {
        return;
    }
    match storage.free_bytes(dir) {
        Ok(free) => budget.note_free_bytes(free, now_ms),
        Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "free space lookup failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_step_follows_the_write_rate() {
        let budget = PreallocBudget::new(u64::MAX);
        let mut p = Prealloc::default();
        let cap = 1 << 30;
        // The first extension: one minimum step past the chunks.
        assert_eq!(
            p.extension(&budget, 0, 0, 4096, 4096, cap),
            Some(4096 + MIB)
        );
        // Extensions in quick succession double the step up to the maximum.
        let mut end = 4096 + MIB;
        let mut steps = Vec::new();
        for i in 1..10 {
            let target = p.extension(&budget, i, end, end, end + 1, cap).unwrap();
            steps.push((target - end - 1) / MIB);
            end = target;
        }
        assert_eq!(steps, vec![2, 4, 8, 16, 32, 64, 128, 256, 256]);
        assert_eq!(budget.claimed_bytes(), 256 * MIB + 1);
        // A slow writer's extensions come seconds apart: back to the minimum.
        let target = p
            .extension(&budget, 10 + 10_000, end, end, end + 1, cap)
            .unwrap();
        assert_eq!(target - end - 1, MIB);
        // Data filling the preallocation gives its claim back.
        assert_eq!(
            p.extension(&budget, 20_000, target, target, target, cap),
            None
        );
        assert_eq!(budget.claimed_bytes(), 0);
    }

    #[test]
    fn the_budget_bounds_the_extension() {
        let budget = PreallocBudget::new(3 * MIB);
        let (mut a, mut b) = (Prealloc::default(), Prealloc::default());
        let cap = 1 << 30;
        assert_eq!(a.extension(&budget, 0, 0, 0, 4096, cap), Some(4096 + MIB));
        let end = 4096 + MIB;
        // Soon after: a 2 MiB step past the chunks; the data filled the
        // first claim, which went back first.
        assert_eq!(
            a.extension(&budget, 1, end, end, end + 4096, cap),
            Some(end + 4096 + 2 * MIB)
        );
        assert_eq!(budget.claimed_bytes(), 4096 + 2 * MIB);
        // b gets what is left, a part of its step.
        assert_eq!(b.extension(&budget, 1, 0, 0, 4096, cap), Some(MIB - 4096));
        assert_eq!(budget.claimed_bytes(), 3 * MIB);
        assert!(!b.claim_spare(&budget, MIB), "nothing left for a spare");
        a.reset(&budget, false);
        assert_eq!(budget.claimed_bytes(), MIB - 4096);
        assert!(
            !b.claim_spare(&budget, 3 * MIB),
            "a spare is all or nothing"
        );
        assert_eq!(budget.claimed_bytes(), MIB - 4096);
        assert!(b.claim_spare(&budget, 2 * MIB));
        b.rolled(&budget, true);
        assert_eq!((b.active_claim_bytes, b.spare_claim_bytes), (2 * MIB, 0));
        assert_eq!(budget.claimed_bytes(), 2 * MIB);
    }

    #[test]
    fn an_idle_log_holding_space_past_its_data_is_trimmed() {
        let budget = PreallocBudget::new(u64::MAX);
        let mut p = Prealloc::default();
        p.extension(&budget, 0, 0, 0, 4096, 1 << 30);
        assert!(!p.idle_and_holding(PREALLOCATE_IDLE_MS - 1, 4096 + MIB, 4096));
        assert!(p.idle_and_holding(PREALLOCATE_IDLE_MS, 4096 + MIB, 4096));
        assert!(
            !p.idle_and_holding(PREALLOCATE_IDLE_MS, 4096, 4096),
            "nothing to trim"
        );
    }
}
