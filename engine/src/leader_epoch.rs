//! Leader epochs: which leader epoch wrote which offsets, for replication
//! (Kafka's `LeaderEpochFileCache`).
//!
//! The cache maps each epoch to the first offset written in it, epochs and
//! start offsets both increasing. It grows three ways:
//! - a leader records (its epoch, the log end) when it becomes leader at a
//!   new epoch (`PartitionLog::become_leader`), and stamps that epoch into
//!   the `partitionLeaderEpoch` of every batch a client appends;
//! - a follower records (a batch's epoch, its base offset) for every fetched
//!   batch whose epoch is newer than the latest it knows;
//! - truncation (`truncate_to`, and recovery at open) drops the entries
//!   that start at or past the new log end.
//!
//! This module is the cache and its file format, no I/O; `log/epochs.rs`
//! reads and writes `leader-epoch-checkpoint`, which keeps it on disk in Kafka's text format
//! (`0\n<count>\n<epoch> <start>\n...`), written aside and renamed, so it is
//! whole or the previous one. A new entry is on disk before any batch of
//! that epoch is acknowledged (an append awaits the checkpoint before its
//! durability), so after a crash the checkpoint covers every batch the log
//! recovered; entries past the recovered end are dropped at open. A file
//! that does not parse keeps its longest valid prefix. A log written before
//! leader epochs (no checkpoint) starts with an empty cache; its first
//! leader records its epoch at the log end.

const CHECKPOINT_VERSION: &str = "0";
/// Entries read from a checkpoint at most; a leader epoch changes once per
/// election, far fewer times than this over a partition's life.
const MAX_CHECKPOINT_ENTRIES: usize = 1 << 16;

/// Kafka's answer for an epoch the log cannot place.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epoch-to-start-offset map, plain data (no I/O), with Kafka's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Epochs strictly increasing, start offsets non-decreasing.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. An epoch at or below
    /// the latest is ignored unless it is the latest with an earlier start
    /// (never: an epoch's start only moves by truncation). Entries that a
    /// newer epoch supersedes (a later or equal start: an epoch that wrote
    /// nothing) are dropped, as Kafka's `assign` does. Returns whether the
    /// cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops every entry starting at or past `end_offset` (a truncation or
    /// a recovered log end). Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= end_offset)
        {
            self.entries.pop();
        }
        self.entries.len() != before
    }

    /// Kafka's `endOffsetFor`: (the largest epoch at or below `requested`,
    /// the end offset of that epoch), where an epoch ends where the next
    /// larger one starts, and the latest ends at `log_end_offset`.
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` for an epoch newer than
    /// every known one, an undefined request, or an empty cache.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested < 0 {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        let floor = self.entries.iter().rev().find(|e| e.epoch <= requested);
        // An epoch older than every entry: it ended where the first known
        // one starts (Kafka answers the requested epoch itself then).
        let epoch = floor.map_or(requested, |f| f.epoch);
        (epoch, higher.start_offset)
    }

    /// The epoch that wrote `offset`: the latest entry starting at or
    /// before it (Kafka's `epochForOffset`, which ListOffsets answers with),
    /// `None` before the first entry or with an empty cache.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Kafka's checkpoint text.
    pub fn to_checkpoint(&self) -> String {
        let mut s = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        s
    }

    /// Parses a checkpoint, keeping the longest valid prefix of its
    /// entries (a wrong version keeps none). Returns the cache and whether
    /// the whole file was valid.
    pub fn from_checkpoint(text: &str) -> (LeaderEpochCache, bool) {
        let mut cache = LeaderEpochCache::default();
        let mut lines = text.lines();
        if lines.next() != Some(CHECKPOINT_VERSION) {
            return (cache, false);
        }
        let Some(count) = lines
            .next()
            .and_then(|l| l.trim().parse::<usize>().ok())
            .filter(|c| *c <= MAX_CHECKPOINT_ENTRIES)
        else {
            return (cache, false);
        };
        for _ in 0..count {
            let Some(entry) = lines.next().and_then(parse_entry) else {
                return (cache, false);
            };
            let ordered = cache.entries.last().is_none_or(|last| {
                entry.epoch > last.epoch && entry.start_offset >= last.start_offset
            });
            if !ordered {
                return (cache, false);
            }
            cache.entries.push(entry);
        }
        let whole = lines.all(|l| l.trim().is_empty());
        (cache, whole)
    }
}

fn parse_entry(line: &str) -> Option<EpochEntry> {
    let mut parts = line.split_whitespace();
    let epoch = parts.next()?.parse::<i32>().ok().filter(|e| *e >= 0)?;
    let start_offset = parts.next()?.parse::<i64>().ok().filter(|o| *o >= 0)?;
    if parts.next().is_some() {
        return None;
    }
    Some(EpochEntry {
        epoch,
        start_offset,
    })
}

/// The cache, the epoch this log stamps on client appends, and how many
/// changes the cache has seen (to tell whether the file is behind).
#[derive(Debug, Default)]
pub struct Epochs {
    pub cache: LeaderEpochCache,
    /// The leader epoch stamped into client batches; `None` until the
    /// broker says this log is led here at some epoch.
    pub leader_epoch: Option<i32>,
    pub version: u64,
}

impl Epochs {
    pub fn changed(&mut self) {
        self.version = self.version.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, s) in entries {
            assert!(c.assign(e, s));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(6, 40), (6, 40));
        // A known epoch ends where the next larger one starts.
        assert_eq!(c.end_offset_for(1, 40), (1, 10));
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        // An unknown epoch between two: the largest known below it.
        assert_eq!(c.end_offset_for(2, 40), (1, 10));
        assert_eq!(c.end_offset_for(5, 40), (3, 25));
        // Older than all: itself, ending where the first starts.
        assert_eq!(c.end_offset_for(0, 40), (0, 0));
        // Which epoch wrote an offset: the entry it falls in.
        assert_eq!(c.epoch_for_offset(-1), None);
        assert_eq!(c.epoch_for_offset(0), Some(1));
        assert_eq!(c.epoch_for_offset(9), Some(1));
        assert_eq!(c.epoch_for_offset(10), Some(3));
        assert_eq!(c.epoch_for_offset(24), Some(3));
        assert_eq!(c.epoch_for_offset(1_000), Some(6));
        // Newer than all, undefined, or an empty cache: undefined.
        assert_eq!(c.end_offset_for(7, 40), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 40), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 5), (-1, -1));
    }

    #[test]
    fn assign_ignores_old_epochs_and_drops_empty_ones() {
        let mut c = cache(&[(1, 0), (2, 10)]);
        assert!(!c.assign(2, 12), "same epoch again");
        assert!(!c.assign(1, 20), "older epoch");
        // Epoch 3 at the same start as epoch 2: epoch 2 wrote nothing.
        assert!(c.assign(3, 10));
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        assert!(!c.assign(-1, 30), "an unstamped batch");
    }

    #[test]
    fn truncation_drops_entries_at_or_past_the_end() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!c.truncate_from_end(26));
        assert!(c.truncate_from_end(25));
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        assert!(c.truncate_from_end(0));
        assert_eq!(c, LeaderEpochCache::default());
    }

    #[test]
    fn the_checkpoint_round_trips_and_keeps_a_valid_prefix() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        let text = c.to_checkpoint();
        assert_eq!(text, "0\n3\n1 0\n3 10\n6 25\n");
        assert_eq!(LeaderEpochCache::from_checkpoint(&text), (c, true));
        let (p, whole) = LeaderEpochCache::from_checkpoint("0\n3\n1 0\n3 10\n2 30\n");
        assert!(!whole);
        assert_eq!(p, cache(&[(1, 0), (3, 10)]));
        let (p, whole) = LeaderEpochCache::from_checkpoint("0\n2\n1 0\n3 x\n");
        assert!(!whole);
        assert_eq!(p, cache(&[(1, 0)]));
        let (p, whole) = LeaderEpochCache::from_checkpoint("1\n1\n1 0\n");
        assert!(!whole);
        assert_eq!(p, LeaderEpochCache::default());
        let (_, whole) = LeaderEpochCache::from_checkpoint("0\n99999999999\n");
        assert!(!whole);
    }
}
