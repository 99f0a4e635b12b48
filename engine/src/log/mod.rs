//! `PartitionLog`: the public API of one partition's log, and the segmented
//! log behind it (see `FORMAT.md` for the bytes on disk).
//!
//! The files of this module follow the data path:
//! - `mod.rs` (this file): the `PartitionLog` handle's open, close, delete,
//!   the periodic `tick` and accessors;
//! - `state`: the public types, the handle and the state the steps share
//!   (each step imports it, none imports `mod.rs`);
//! - `files`: the spare segment's name, index files written aside;
//! - `segment`: a segment's in-memory state, file names, size limits; no I/O;
//! - `tail`: the active segment's aligned tail buffer and its chunks; no I/O;
//! - `append`: validate, assign offsets (or keep a leader's: the append
//!   origin), wait for durability;
//! - `flush`: flush rounds (group commit), write-behind, preallocation
//!   ahead of the writes;
//! - `prealloc`: how far ahead to preallocate, and the log's claim on the
//!   storage's preallocation budget; no I/O;
//! - `reclaim`: trimming an idle log's preallocation back to its data;
//! - `roll`: rolling to a new segment, the spare segment, finishing the
//!   rolled one;
//! - `read`: reads by offset and timestamp lookup, up to the read bound;
//! - `truncate`: `truncate_to`, and the cut of a segment that recovery
//!   shares;
//! - `recover`: opening the segments after a clean shutdown or a crash;
//! - `retention`: deleting old segments;
//! - `epochs`: the leader epoch checkpoint, becoming leader, an epoch's
//!   end offset;
//! - `delete_records`: moving the log start offset on request (DeleteRecords)
//!   and keeping it in `log-start-offset`;
//! - `clean`: the log cleaner (compaction), its segment rewrite and the
//!   swap of cleaned segments by rename.
//!
//! Write path: `append` validates the batches, assigns offsets in place and
//! copies them into the active segment's 4096-aligned tail buffer. Full tail
//! buffers are sealed into chunks. Whoever needs data on disk (a `Written`
//! append: on the device; a `Synced` one: also fdatasynced; `flush`, `tick`)
//! leads a *flush round* if none is running, else waits for the running one
//! and checks again: every append that arrives while a round is in flight
//! joins the next round, which does one write per chunk (several in flight),
//! writes the partial tail for `Written` appends, and does at most one
//! fdatasync for all of them (group commit).
//!
//! What readers see: up to the *written offset*, below which every batch is
//! on the device, so no reader sees a record that a process crash takes
//! back (`high_watermark`).
//!
//! Read path: segment by base offset, position by the sparse index, then
//! batch headers are scanned; bytes come from the tail buffer and recently
//! written chunks when hot, else from an O_DIRECT read.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::index;
use crate::io::dma::DmaStorage;
use crate::io::{align_up, Storage, StorageFile, CHUNK_BYTES};
use crate::leader_epoch::Epochs;
use crate::notify::Notify;
use crate::producer_state::{self, ProducerStateTable};

mod append;
pub mod clean;
mod delete_records;
mod epochs;
mod files;
mod flush;
mod prealloc;
mod read;
mod readahead;
mod reclaim;
mod recover;
mod recovery_point;
mod retention;
mod roll;
mod rope;
mod segment;
mod state;
mod tail;
mod truncate;

#[cfg(any(test, feature = "test-util"))]
pub use append::validate_for_append;

pub use clean::{CleanStats, NoPacing, Pacer};
use files::{write_index_files, SPARE_SEGMENT_FILE};
pub use readahead::{read_ahead_held_bytes, READ_AHEAD_BUDGET_BYTES};
use state::{io_err, BufOf, Inner, State};
pub use state::{
    time_waits, AppendInfo, AppendOrigin, AppendWaits, Durability, PartitionLog, ReadLimit,
    ReadResult, Spawner, CLEAN_SHUTDOWN_FILE,
};

impl PartitionLog<DmaStorage> {
    /// Opens (recovering if needed) or creates the log in `dir`. Must run
    /// inside a glommio executor.
    /// Full chunks are written by background tasks on that executor.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        let spawn: Spawner = Rc::new(|f| {
            glommio::spawn_local(f).detach();
        });
        PartitionLog::open_inner(DmaStorage, dir.as_ref(), config, Some(spawn)).await
    }
}

impl PartitionLog<DmaStorage> {
    /// Creates an empty log in `dir` whose first offset is `offset`, and
    /// opens it: a follower whose leader's log starts past this replica's
    /// end starts again there (Kafka's `truncateFullyAndStartAt`). `dir`
    /// must hold no log.
    pub async fn create_empty_at(
        dir: impl AsRef<Path>,
        config: LogConfig,
        offset: i64,
    ) -> Result<PartitionLog> {
        create_empty_segment(&DmaStorage, dir.as_ref(), offset).await?;
        PartitionLog::open(dir, config).await
    }
}

/// An empty segment file named for `offset` in the empty (or new) `dir`,
/// synced: the whole of a log that starts at `offset`. A crash before it
/// is whole leaves an empty directory, a log at 0, and the follower
/// starts again.
async fn create_empty_segment<S: Storage>(storage: &S, dir: &Path, offset: i64) -> Result<()> {
    if offset < 0 {
        return Err(EngineError::OffsetOutOfRange {
            offset,
            log_start: 0,
            log_end: 0,
        });
    }
    storage.create_dir_all(dir).await.map_err(io_err)?;
    if !storage.list_dir(dir).await.map_err(io_err)?.is_empty() {
        return Err(EngineError::Corrupt(format!(
            "{} is not empty: no new log there",
            dir.display()
        )));
    }
    let file = storage
        .open(&dir.join(segment::segment_name(offset, "log")))
        .await
        .map_err(io_err)?;
    file.fdatasync().await.map_err(io_err)?;
    storage.sync_dir(dir).await.map_err(io_err)
}

impl<S: Storage> PartitionLog<S> {
    /// Opens the log in `dir` on the given storage.
    /// Appends that fill a chunk await its write themselves.
    pub async fn open_with(
        storage: S,
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<PartitionLog<S>> {
        PartitionLog::open_inner(storage, dir.as_ref(), config, None).await
    }

    /// [`PartitionLog::create_empty_at`] on the given storage.
    pub async fn create_empty_at_with(
        storage: S,
        dir: impl AsRef<Path>,
        config: LogConfig,
        offset: i64,
    ) -> Result<PartitionLog<S>> {
        create_empty_segment(&storage, dir.as_ref(), offset).await?;
        PartitionLog::open_inner(storage, dir.as_ref(), config, None).await
    }

    async fn open_inner(
        storage: S,
        dir: &Path,
        config: LogConfig,
        write_behind: Option<Spawner>,
    ) -> Result<PartitionLog<S>> {
        let dir = dir.to_path_buf();
        let chunk_bytes = align_up(segment::segment_bytes(&config)).min(CHUNK_BYTES);
        let (segments, tail, scanned) =
            recover::recover::<S>(&storage, &dir, &config, chunk_bytes).await?;
        let log_end_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let saved_log_start = delete_records::read_log_start(&storage, &dir).await?;
        let log_start_offset = segments
            .first()
            .map(|s| s.base_offset)
            .unwrap_or(0)
            .max(saved_log_start.unwrap_or(0).min(log_end_offset));
        let epoch_cache = epochs::load(&storage, &dir, log_end_offset).await?;
        let first_dirty = clean::checkpoint::load(&storage, &dir, log_end_offset)
            .await
            .unwrap_or(0);
        tracing::debug!(dir = %dir.display(), log_start_offset, log_end_offset, segments = segments.len(), "log opened");
        let log = PartitionLog {
            inner: Rc::new(Inner {
                storage,
                dir,
                chunk_bytes,
                config: RefCell::new(config),
                state: RefCell::new(State {
                    segments,
                    tail: Some(tail),
                    log_start_offset,
                    log_end_offset,
                    written_offset: log_end_offset,
                    written_ends: std::collections::VecDeque::new(),
                    write_wanted: log_end_offset,
                    synced_offset: log_end_offset,
                    replicated_hw: None,
                    messages_since_sync: 0,
                    last_sync_ms: 0,
                    clock_ms: 0,
                    flushing: false,
                    stop_round: false,
                    rolling: false,
                    finishing: None,
                    closed: false,
                    cleaning: false,
                    failed: None,
                }),
                written: Notify::default(),
                written_fired_at: Cell::new(None),
                progress: Notify::default(),
                rounds: Cell::new(0),
                spare: RefCell::new(None),
                spare_started_for: Cell::new(None),
                spare_busy: Cell::new(false),
                buffered_writer: Cell::new(false),
                prealloc: RefCell::new(prealloc::Prealloc::default()),
                read_ahead: RefCell::default(),
                read_ahead_hits: Cell::new(0),
                file_read_bytes: Cell::new(0),
                read_ahead_drops: Cell::new(0),
                point_taken: Cell::new((-1, 0)),
                point_generation: Cell::new(0),
                point_lock: futures_util::lock::Mutex::new(()),
                recovery_scanned_bytes: Cell::new(scanned),
                cleaner: RefCell::new(state::CleanerState {
                    first_dirty,
                    tombstones_due_ms: None,
                }),
                log_start_saved: futures_util::lock::Mutex::new(saved_log_start.unwrap_or(0)),
                producers: RefCell::new(ProducerStateTable::starting_at(log_start_offset)),
                epochs: RefCell::new(Epochs {
                    cache: epoch_cache,
                    leader_epoch: None,
                    version: 0,
                }),
                // Version 0 is what was loaded: a cache cut at open is
                // written with the next change.
                epochs_saved: futures_util::lock::Mutex::new(0),
                write_behind,
            }),
        };
        log.restore_producer_state().await?;
        Ok(log)
    }

    /// Writes a snapshot of the producer state. Only called when every
    /// appended batch is synced (on roll and on close), so the snapshot
    /// never covers data a crash could lose. A failure only costs a longer
    /// replay on the next open, so it is logged, not returned.
    async fn snapshot_producer_state(&self) {
        let (offset, bytes) = {
            let t = self.inner.producers.borrow();
            (t.end_offset(), t.to_snapshot_bytes())
        };
        debug_assert!(offset <= self.inner.state.borrow().synced_offset);
        if let Err(e) =
            producer_state::write_snapshot(&self.inner.storage, &self.inner.dir, offset, &bytes)
                .await
        {
            tracing::warn!(dir = %self.inner.dir.display(), offset, error = %e, "writing the producer state snapshot failed");
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Whether the log is compacted (`cleanup.policy` includes `compact`).
    pub fn compacted(&self) -> bool {
        self.inner.config.borrow().cleanup_compact
    }

    /// Replaces the configuration (topic config change); takes effect for
    /// the next append, roll and retention pass.
    pub fn set_config(&self, config: LogConfig) {
        *self.inner.config.borrow_mut() = config;
    }

    fn check_open(&self, st: &State<S>) -> Result<()> {
        if st.closed {
            return Err(EngineError::Closed);
        }
        if let Some(msg) = &st.failed {
            return Err(EngineError::Io(std::io::Error::other(format!(
                "log failed earlier: {msg}"
            ))));
        }
        Ok(())
    }

    /// A chunk-sized buffer (the storage reuses freed ones).
    fn take_buf(&self, file: &S::File) -> BufOf<S> {
        file.alloc_buf(self.inner.chunk_bytes as usize)
    }

    /// The idempotent producers this partition knows (DescribeProducers):
    /// a copy of each one's state, by producer id.
    pub fn producers(&self) -> Vec<(i64, producer_state::ProducerEntry)> {
        self.inner
            .producers
            .borrow()
            .iter()
            .map(|(id, e)| (id, e.clone()))
            .collect()
    }

    /// Whether the log was closed (its topic deleted, the broker stopping).
    pub fn is_closed(&self) -> bool {
        self.inner.state.borrow().closed
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().log_end_offset
    }

    /// Every offset below this is on the device (the O_DIRECT writes
    /// covering it completed): a process crash cannot take it back. The
    /// read bound on one node (see [`high_watermark`](Self::high_watermark)).
    pub fn written_offset(&self) -> i64 {
        self.inner.state.borrow().written_offset
    }

    /// Every offset below this is covered by an fdatasync.
    pub fn synced_offset(&self) -> i64 {
        self.inner.state.borrow().synced_offset
    }

    /// Number of segments (closed and active).
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Flush rounds run so far (each is one group commit).
    pub fn flush_rounds(&self) -> u64 {
        self.inner.rounds.get()
    }

    /// Bytes of all segments of the log.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.len)
            .sum()
    }

    /// Resolves once the read bound (the written offset or the high
    /// watermark, see
    /// [`high_watermark`](Self::high_watermark)) is past `offset` or the log
    /// closes: a long poll wakes when there is something it may read, not
    /// when it is only appended. Callers bound the wait with their own timer.
    pub async fn wait_for_offset(&self, offset: i64) {
        self.wait_until(|st| st.read_bound() > offset).await;
    }

    /// Resolves once the [written offset](Self::written_offset) is past
    /// `offset` or the log closes: a follower's fetch reads past the high
    /// watermark, so its long poll wakes on what the leader wrote, not on
    /// what the replicas hold (which waits for that very follower).
    pub async fn wait_for_written(&self, offset: i64) {
        self.wait_until(|st| st.written_offset > offset).await;
    }

    /// When long polls on this log were last woken (the written offset or
    /// the read bound moved, or the log closed): how long a woken poll
    /// took to run is measured from here. `None` unless [`time_waits`] is
    /// on for this thread.
    pub fn readers_woken_at(&self) -> Option<std::time::Instant> {
        self.inner.written_fired_at.get()
    }

    /// Wakes the long polls waiting on this log.
    pub(super) fn wake_readers(&self) {
        if let Some(now) = state::timed_now() {
            self.inner.written_fired_at.set(Some(now));
        }
        self.inner.written.notify_all();
    }

    async fn wait_until(&self, ready: impl Fn(&State<S>) -> bool) {
        loop {
            let notified = self.inner.written.notified();
            {
                let st = self.inner.state.borrow();
                if ready(&st) || st.closed {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Periodic work: `flush.ms` syncs, `segment.ms` rolls, retention, and
    /// the trim of what an idle log preallocated past its data.
    pub async fn tick(&self, now_ms: i64) -> Result<()> {
        let (segment_ms, flush_ms) = {
            let c = self.inner.config.borrow();
            (c.segment_ms, c.flush_ms)
        };
        let (roll, sync) = {
            let mut st = self.inner.state.borrow_mut();
            if st.closed || st.failed.is_some() {
                return Ok(());
            }
            st.clock_ms = st.clock_ms.max(now_ms);
            let seg = st.segments.last();
            let roll = seg.is_some_and(|s| {
                s.len > 0
                    && s.first_append_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= segment_ms)
            });
            let sync = st.synced_offset < st.log_end_offset
                && now_ms.saturating_sub(st.last_sync_ms) >= flush_ms;
            if sync && st.flushing {
                // The running round ends soon, and the next one syncs.
                st.stop_round = true;
            }
            (roll, sync && !st.flushing)
        };
        let work = if roll {
            self.roll().await
        } else if sync {
            self.flush_round(flush::Round::Sync).await
        } else {
            self.trim_if_idle(now_ms).await
        };
        // Retention runs even when the roll or sync failed: on a full disk,
        // deleting old segments is what frees the space they need.
        self.apply_retention(now_ms).await?;
        work
    }

    /// Flushes, syncs and writes the clean-shutdown marker. Later calls fail
    /// with `Closed`. A log that failed earlier (a failed fdatasync) is closed
    /// without the marker and the call fails: what was not synced before the
    /// failure may be lost, and recovery at the next open decides.
    pub async fn close(&self) -> Result<()> {
        if self.inner.state.borrow().closed {
            return Ok(());
        }
        loop {
            let progressed = self.inner.progress.notified();
            let busy = {
                let st = self.inner.state.borrow();
                st.rolling || st.finishing.is_some()
            };
            if busy {
                progressed.await;
                continue;
            }
            break;
        }
        let failed = self.inner.state.borrow().failed.clone();
        if failed.is_none() {
            self.flush().await?;
            let (file, base, len, index_bytes, time_bytes) = {
                let mut st = self.inner.state.borrow_mut();
                st.closed = true;
                let Some(seg) = st.segments.last_mut() else {
                    return Ok(());
                };
                seg.push_time_entry();
                (
                    seg.file.clone(),
                    seg.base_offset,
                    seg.len,
                    index::encode_offset_index(&seg.index),
                    index::encode_time_index(&seg.time_index),
                )
            };
            let dir = &self.inner.dir;
            let storage = &self.inner.storage;
            write_index_files(storage, dir, base, &index_bytes, &time_bytes)
                .await
                .map_err(io_err)?;
            file.truncate(len).await.map_err(io_err)?;
            file.fdatasync().await.map_err(io_err)?;
            self.snapshot_producer_state().await;
            crate::io::write_whole_file(storage, &dir.join(CLEAN_SHUTDOWN_FILE), b"clean\n")
                .await
                .map_err(io_err)?;
            storage.sync_dir(dir).await.map_err(io_err)?;
        }
        self.inner.state.borrow_mut().closed = true;
        if self.inner.spare.borrow_mut().take().is_some() {
            let _ = self
                .inner
                .storage
                .remove_file(&self.inner.dir.join(SPARE_SEGMENT_FILE))
                .await;
        }
        // The active segment was trimmed to its data above (unless the log
        // failed earlier; then the next open cuts it).
        let budget = self.inner.storage.preallocation_budget();
        self.inner.prealloc.borrow_mut().reset(budget, false);
        self.inner.written.notify_all();
        self.inner.progress.notify_all();
        match failed {
            None => Ok(()),
            Some(msg) => Err(EngineError::Io(std::io::Error::other(format!(
                "log failed earlier ({msg}); closed without a clean-shutdown marker"
            )))),
        }
    }

    /// Closes the log and removes its directory (DeleteTopics).
    pub async fn delete(&self) -> Result<()> {
        let _ = self.close().await;
        self.inner.state.borrow_mut().closed = true;
        self.inner
            .storage
            .remove_dir_all(&self.inner.dir)
            .await
            .map_err(io_err)?;
        // Their blocks are freed once the log itself lets go of them.
        let files: Vec<_> = self
            .inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.file.clone())
            .collect();
        for file in files {
            self.inner.storage.retire(file);
        }
        Ok(())
    }
}
