//! The types the steps of the data path share: the public result and
//! option types, the `PartitionLog` handle, and the state behind it. Imports
//! only `segment` and `tail` from the log, so every step (and `mod.rs`) can
//! use it without an import circle.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

use super::prealloc::Prealloc;
use super::readahead::ReadAheads;
use super::segment::Segment;
use super::tail::Tail;
use crate::config::LogConfig;
use crate::error::EngineError;
use crate::io::dma::DmaStorage;
use crate::io::{Storage, StorageFile};
use crate::leader_epoch::Epochs;
use crate::notify::Notify;
use crate::producer_state::ProducerStateTable;

/// Written by `close`, removed by `open`: its presence means the last
/// shutdown was clean.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// What an append waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the log's memory (acks=0: the producer is told nothing). A write
    /// round is started in the background; readers see the batches once it
    /// has written them, as for `Written`. Where the log cannot spawn (the
    /// simulated disk), waits like `Written`.
    Buffered,
    /// On the device: the O_DIRECT write covering the batches completed
    /// (acks=1). A process crash cannot take it back; a power loss can until
    /// an fdatasync (`flush.ms`, `flush.messages` or the next sync) covers it.
    Written,
    /// On disk: covered by an fdatasync (acks=all).
    Synced,
}

/// Who gives an append's batches their offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer: the log assigns offsets from its end (the base offsets
    /// the batches carry are overwritten) and applies the
    /// idempotent-producer rules.
    Client,
    /// A follower appending what it fetched from its leader: the batches
    /// keep their base offsets, which must continue the log exactly.
    Replica,
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// How long the append waited for room (a write round behind, a
    /// roll) before its batches got their offsets, and from then until
    /// they were as durable as asked: where a slow append's time went.
    /// Zero unless [`time_waits`] is on for this thread.
    pub waited: AppendWaits,
}

/// See [`AppendInfo::waited`]. Zero unless [`time_waits`] turned timing
/// on for the thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendWaits {
    pub room: std::time::Duration,
    pub durable: std::time::Duration,
}

thread_local! {
    static TIME_WAITS: Cell<bool> = const { Cell::new(false) };
}

/// Whether the logs of this thread time their appends' waits
/// ([`AppendInfo::waited`]) and stamp each wake of their readers
/// ([`PartitionLog::readers_woken_at`]). Off by default, so the data path
/// reads no clock for them; a server's stage breakdown turns it on for each
/// shard's thread.
pub fn time_waits(on: bool) {
    TIME_WAITS.with(|t| t.set(on));
}

/// Now, while [`time_waits`] is on for this thread.
pub(super) fn timed_now() -> Option<std::time::Instant> {
    TIME_WAITS.with(Cell::get).then(std::time::Instant::now)
}

/// Whole stored batches starting at or before the requested offset.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole batches, one `Bytes` each, in offset order; with
    /// `ReadLimit::split_batches` a batch may come in consecutive parts.
    pub batches: Vec<Bytes>,
    /// The read bound the read stopped at (see `PartitionLog::high_watermark`).
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// The read asked its first batch only if it fits, and it did not: no
    /// batch was returned (see `PartitionLog::read_limited`).
    pub first_batch_did_not_fit: bool,
}

/// What a read may return (see `PartitionLog::read_limited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Bytes of whole batches, at most.
    pub max_bytes: usize,
    /// The first batch is returned whole even when it is larger than
    /// `max_bytes` (KIP-74); else only if it fits.
    pub first_batch_whole: bool,
    /// Up to the log end (a follower's read), else up to the high watermark.
    pub to_end: bool,
    /// The result's `batches` may split a batch into consecutive parts
    /// where it straddles two of the buffers it was read from, instead of
    /// copying it whole into one (for a reader that only sends the bytes
    /// on, as Fetch does).
    pub split_batches: bool,
}

impl ReadLimit {
    /// A consumer's read that returns at least the first batch.
    pub fn whole_first_batch(max_bytes: usize) -> ReadLimit {
        ReadLimit {
            max_bytes,
            first_batch_whole: true,
            to_end: false,
            split_batches: false,
        }
    }
}

impl ReadResult {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

pub(super) type BufOf<S> = <<S as Storage>::File as StorageFile>::Buf;

/// The log's mutable state, shared by the steps of the data path. Borrowed
/// briefly, never across an await.
pub(super) struct State<S: Storage> {
    /// Oldest first; the last one is active.
    pub(super) segments: Vec<Segment<S::File>>,
    pub(super) tail: Option<Tail<BufOf<S>>>,
    pub(super) log_start_offset: i64,
    pub(super) log_end_offset: i64,
    /// Every offset below is on the device: the O_DIRECT writes covering
    /// it completed, so a process crash cannot take it back. The read bound
    /// on one node. Never below `synced_offset`, never above the log end.
    pub(super) written_offset: i64,
    /// (segment position, next offset) at the end of each append to the
    /// active segment not yet known written, oldest first: how far
    /// `written_offset` moves when the tail's written position does.
    pub(super) written_ends: VecDeque<(u64, i64)>,
    /// The largest end offset a `Written` append waits for: a round that
    /// sees it above `written_offset` writes the partial tail too.
    pub(super) write_wanted: i64,
    /// Every offset below is covered by an fdatasync.
    pub(super) synced_offset: i64,
    /// The high watermark its replicas give this log, once the broker
    /// replicates it (`set_high_watermark`); `None` on one node. Never
    /// past the log end, never backwards except by truncation.
    pub(super) replicated_hw: Option<i64>,
    pub(super) messages_since_sync: u64,
    pub(super) last_sync_ms: i64,
    pub(super) clock_ms: i64,
    pub(super) flushing: bool,
    /// Set by a sync request or a roll while a round runs: the round submits
    /// nothing more, and the next round syncs (whoever leads it).
    pub(super) stop_round: bool,
    /// Set while a roll or a truncation changes the segments: appends (and
    /// other rolls and truncations) wait.
    pub(super) rolling: bool,
    /// Base offset of a rolled segment whose file is still being trimmed and
    /// indexed in the background (`finish_segment`).
    pub(super) finishing: Option<i64>,
    pub(super) closed: bool,
    /// Set while the cleaner rewrites closed segments: retention and
    /// truncation, which would delete or cut them, wait.
    pub(super) cleaning: bool,
    /// Set when an fdatasync failed: what was acknowledged as written may be
    /// lost, so the log refuses appends until it is reopened.
    pub(super) failed: Option<String>,
}

/// One partition's log. Cheap to clone (shared handle); not `Send`: it lives
/// on the shard that owns the partition. Methods take `&self`, so concurrent
/// appends from several tasks join the same group commit.
///
/// `S` is the storage under it: O_DIRECT files in production, the simulated
/// file system in tests.
pub struct PartitionLog<S: Storage = DmaStorage> {
    pub(super) inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for PartitionLog<S> {
    fn clone(&self) -> Self {
        PartitionLog {
            inner: self.inner.clone(),
        }
    }
}

pub(super) struct Inner<S: Storage> {
    pub(super) storage: S,
    pub(super) dir: PathBuf,
    pub(super) chunk_bytes: u64,
    pub(super) config: RefCell<LogConfig>,
    pub(super) state: RefCell<State<S>>,
    /// Fired when `written_offset` moves (and at close): long polls wait
    /// on it.
    pub(super) written: Notify,
    /// When `written` last fired.
    pub(super) written_fired_at: Cell<Option<std::time::Instant>>,
    /// Fired when a flush round or a roll ends.
    pub(super) progress: Notify,
    pub(super) rounds: Cell<u64>,
    /// Idempotent-producer dedup. Checked and recorded with no await
    /// between the check and the offset assignment.
    pub(super) producers: RefCell<ProducerStateTable>,
    /// The leader epoch cache and the epoch stamped on client appends.
    /// Changed with no await between a check and the change.
    pub(super) epochs: RefCell<Epochs>,
    /// The cache version the checkpoint file holds; held while writing it.
    pub(super) epochs_saved: futures_util::lock::Mutex<u64>,
    /// Runs the finishing of a rolled segment and the preparation of the
    /// spare in the background. Without one (storage driven by a plain
    /// `block_on`), the roll or append awaits them.
    pub(super) write_behind: Option<Spawner>,
    /// The preallocated file the next roll renames into place, and how far
    /// it is preallocated.
    pub(super) spare: RefCell<Option<(Rc<S::File>, u64)>>,
    /// Base offset of the active segment a spare was last started for: one
    /// attempt per segment, so a full disk is not retried on every append.
    pub(super) spare_started_for: Cell<Option<i64>>,
    /// A spare is being prepared.
    pub(super) spare_busy: Cell<bool>,
    /// A background writer for `Buffered` appends is spawned and has not
    /// finished: later ones only raise `write_wanted`.
    pub(super) buffered_writer: Cell<bool>,
    /// The preallocation step and this log's claim on the storage's
    /// preallocation budget (see `prealloc.rs`).
    pub(super) prealloc: RefCell<Prealloc>,
    /// The log cleaner's progress through this log.
    pub(super) cleaner: RefCell<CleanerState>,
    /// The log start offset last written to `log-start-offset` (see
    /// `delete_records.rs`); held while it is written.
    pub(super) log_start_saved: futures_util::lock::Mutex<i64>,
    /// The reads the next sequential reads from the disk will make,
    /// started ahead of them (see `readahead.rs`).
    pub(super) read_ahead: RefCell<ReadAheads<S::File>>,
    /// Reads from the file that a read-ahead served, in whole or in part.
    pub(super) read_ahead_hits: Cell<u64>,
    /// Bytes reads asked of the file: their own I/O and their read-aheads'.
    pub(super) file_read_bytes: Cell<u64>,
    /// Times the read-aheads were dropped (truncation, retention, a clean's
    /// swap): bytes a read got before one are not kept for the next.
    pub(super) read_ahead_drops: Cell<u64>,
    /// The recovery point last taken: (segment base offset, length). See
    /// `recovery_point.rs`.
    pub(super) point_taken: Cell<(i64, u64)>,
    /// Bumped (under `point_lock`) when the point is removed: a point taken
    /// before is not written after.
    pub(super) point_generation: Cell<u64>,
    /// Held while the point is written or removed.
    pub(super) point_lock: futures_util::lock::Mutex<()>,
    /// Bytes of the active segment the last open scanned.
    pub(super) recovery_scanned_bytes: Cell<u64>,
}

impl<S: Storage> Drop for Inner<S> {
    /// A log dropped without `close` (a failed open, a shard stopping) gives
    /// its claim back too.
    fn drop(&mut self) {
        let budget = self.storage.preallocation_budget();
        self.prealloc.get_mut().reset(budget, false);
    }
}

/// The log cleaner's state of one log (`clean/`); the first dirty offset
/// is also kept in `cleaner-offset-checkpoint` (`clean/checkpoint.rs`).
#[derive(Debug, Default)]
pub(super) struct CleanerState {
    /// Below this, the closed segments were cleaned (with every key up to
    /// here in the offset map).
    pub(super) first_dirty: i64,
    /// When a kept tombstone may go: a clean is due then.
    pub(super) tombstones_due_ms: Option<i64>,
}

/// Starts a future on the log's executor without waiting for it.
pub type Spawner = Rc<dyn Fn(Pin<Box<dyn Future<Output = ()>>>)>;

impl<S: Storage> State<S> {
    /// The read bound: the written offset, and in a replicated log also
    /// the high watermark, whichever is lower.
    pub(super) fn read_bound(&self) -> i64 {
        self.replicated_hw
            .map_or(self.written_offset, |hw| hw.min(self.written_offset))
    }

    /// Moves `written_offset` over the appends whose bytes are all on the
    /// device (see `Tail::advance_written`). Returns whether it moved.
    pub(super) fn advance_written(&mut self) -> bool {
        let Some(tail) = self.tail.as_mut() else {
            return false;
        };
        tail.advance_written();
        let written_end = tail.written_end;
        let before = self.written_offset;
        while let Some(&(pos, next_offset)) = self.written_ends.front() {
            if pos > written_end {
                break;
            }
            // Never backwards, never past the log end.
            assert!(
                next_offset >= self.written_offset && next_offset <= self.log_end_offset,
                "written offset {} would move to {next_offset} (log end {})",
                self.written_offset,
                self.log_end_offset
            );
            self.written_offset = next_offset;
            self.written_ends.pop_front();
        }
        self.written_offset > before
    }
}

pub(super) fn io_err(e: std::io::Error) -> EngineError {
    EngineError::from_io(e)
}
