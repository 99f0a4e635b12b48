//! `PartitionLog`: the public API of one partition's log, and the segmented
//! log behind it (see `FORMAT.md` for the bytes on disk).
//!
//! Write path: `append` validates the batches, assigns offsets in place and
//! copies them into the active segment's 4096-aligned tail buffer (they are
//! readable from there at once). Full tail buffers are sealed into chunks.
//! Whoever needs data on disk (a `Synced` append, a full chunk, `flush`,
//! `tick`) leads a *flush round* if none is running, else waits for the
//! running one and checks again: every append that arrives while a round is
//! in flight joins the next round, which does one write per chunk (several in
//! flight) and at most one fdatasync for all of them (group commit).
//!
//! Read path: segment by base offset, position by the sparse index, then
//! batch headers are scanned; bytes come from the tail buffer and recently
//! written chunks when hot, else from an O_DIRECT read.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use crate::config::LogConfig;
use crate::error::{BatchError, EngineError, Result};
use crate::index::{self, OffsetEntry, TimeEntry};
use crate::io::dma::DmaStorage;
use crate::io::{align_down, align_up, IoBuf, Storage, StorageFile, ALIGN_BYTES, CHUNK_BYTES};
use crate::notify::Notify;
use crate::producer_state::{self, BatchMetadata, Decision, ProducerStateTable};

/// O_DIRECT chunk writes in flight at once per log.
const MAX_INFLIGHT_WRITES: usize = 32;
/// How far ahead of its first chunk a write-behind round preallocates
/// (the round ends where the preallocated space does). Write-behind rounds
/// otherwise run for as long as there are chunks to write, keeping writes in
/// flight; a sync request or a roll asks the running round to stop.
const PREALLOCATE_ROUND_CHUNKS: usize = 256;
/// Appended-but-unwritten bytes above which appends wait for the disk.
const MAX_UNWRITTEN_BYTES: u64 = 128 << 20;
/// Preallocation of a new segment, and how far ahead of the writes it is
/// extended (never past `segment.bytes`). Preallocating a whole 1 GiB
/// segment per partition up front fills a disk with idle partitions.
/// The extension happens only when a flush round starts, with no write in
/// flight: ext4's fallocate waits for every O_DIRECT write of the file to
/// finish, so extending in the middle of a round drained the write pipeline
/// (about 25% of sequential write throughput lost).
const PREALLOCATE_FIRST_BYTES: u64 = 4 << 20;
const PREALLOCATE_STEP_BYTES: u64 = 64 << 20;
/// Written chunks kept in memory as the hot-read cache.
const CACHE_CHUNKS: usize = 4;
/// Bytes read at a time when scanning batch headers.
const SCAN_WINDOW_BYTES: u64 = 64 * 1024;
/// Bytes read at a time when replaying batches into the producer state.
const PRODUCER_REPLAY_WINDOW_BYTES: usize = 1 << 20;
/// Bytes read at a time when recovering a segment.
const RECOVERY_WINDOW_BYTES: u64 = 1 << 20;
/// Segments are addressed with u32 positions in the index.
const MAX_SEGMENT_BYTES: u64 = 1 << 31;
const MIN_SEGMENT_BYTES: u64 = 4 * ALIGN_BYTES;
/// Written by `close`, removed by `open`: its presence means the last
/// shutdown was clean.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// The next segment's file, created and preallocated whole in the
/// background while the active segment fills, and renamed to `<base>.log`
/// at the roll: the new segment then needs no preallocation step, each of
/// which drains the write queue (see PREALLOCATE_STEP_BYTES), and the roll
/// creates no file. A leftover one is removed when the log opens.
const SPARE_SEGMENT_FILE: &str = ".next-segment";

/// What an append waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the log: readable by consumers, not yet known to be on disk
    /// (acks=1). Synced by `flush.ms` / `flush.messages` or the next sync.
    Written,
    /// On disk: covered by an fdatasync (acks=all).
    Synced,
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Whole stored batches starting at or before the requested offset.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl ReadResult {
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

type BufOf<S> = <<S as Storage>::File as StorageFile>::Buf;

/// A sealed tail buffer: `[start, start + data_bytes)` of the active segment,
/// padded with zeros to a multiple of 4096.
struct Chunk<B> {
    start: u64,
    data_bytes: u64,
    buf: Rc<B>,
    submitted: bool,
    written: bool,
}

/// Write state of the active segment.
struct Tail<B> {
    /// Holds `[buf_start, segment.len)`; `buf_start` is 4096-aligned.
    buf: B,
    buf_start: u64,
    chunks: VecDeque<Chunk<B>>,
    /// Bytes below this position were read back from the file when the log
    /// was opened, not appended through this process: reads check them as
    /// they check bytes read from disk.
    loaded_end: u64,
}

struct Segment<F: StorageFile> {
    base_offset: i64,
    file: Rc<F>,
    /// Logical length: bytes of whole batches. The file may be longer
    /// (preallocation, padding); those bytes are never served.
    len: u64,
    next_offset: i64,
    index: Vec<OffsetEntry>,
    time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    max_timestamp: i64,
    max_timestamp_offset: i64,
    /// When the first batch was appended in this process (segment.ms).
    first_append_ms: Option<i64>,
    /// File bytes preallocated so far (0 without preallocation).
    allocated_bytes: u64,
}

impl<F: StorageFile> Segment<F> {
    fn new(base_offset: i64, file: Rc<F>) -> Segment<F> {
        Segment {
            base_offset,
            file,
            len: 0,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            max_timestamp: -1,
            max_timestamp_offset: -1,
            first_append_ms: None,
            allocated_bytes: 0,
        }
    }

    /// Records a batch stored at `pos` in the indexes.
    fn track_batch(&mut self, pos: u64, h: &BatchHeader, max_ts: i64, interval: u64) {
        debug_assert_eq!(h.base_offset, self.next_offset);
        if pos > 0 && self.bytes_since_index >= interval {
            let rel = (h.base_offset - self.base_offset) as u32;
            self.index.push(OffsetEntry::new(rel, pos as u32));
            self.push_time_entry();
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_bytes() as u64;
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.max_timestamp_offset = h.base_offset;
        }
        self.next_offset = h.last_offset() + 1;
    }

    fn push_time_entry(&mut self) {
        if self.max_timestamp < 0 {
            return;
        }
        if self
            .time_index
            .last()
            .is_some_and(|e| e.ts() >= self.max_timestamp)
        {
            return;
        }
        let rel = (self.max_timestamp_offset - self.base_offset) as u32;
        self.time_index
            .push(TimeEntry::new(self.max_timestamp, rel));
    }
}

struct State<S: Storage> {
    /// Oldest first; the last one is active.
    segments: Vec<Segment<S::File>>,
    tail: Option<Tail<BufOf<S>>>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Every offset below is covered by an fdatasync.
    synced_offset: i64,
    messages_since_sync: u64,
    last_sync_ms: i64,
    clock_ms: i64,
    flushing: bool,
    /// Set by a sync request or a roll while a round runs: the round submits
    /// nothing more, and the next round syncs (whoever leads it).
    stop_round: bool,
    rolling: bool,
    /// Base offset of a rolled segment whose file is still being trimmed and
    /// indexed in the background (`finish_segment`).
    finishing: Option<i64>,
    closed: bool,
    /// Set when an fdatasync failed: what was acknowledged as written may be
    /// lost, so the log refuses appends until it is reopened.
    failed: Option<String>,
}

/// One partition's log. Cheap to clone (shared handle); not `Send`: it lives
/// on the shard that owns the partition. Methods take `&self`, so concurrent
/// appends from several tasks join the same group commit.
///
/// `S` is the storage under it: O_DIRECT files in production, the simulated
/// file system in tests.
pub struct PartitionLog<S: Storage = DmaStorage> {
    inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for PartitionLog<S> {
    fn clone(&self) -> Self {
        PartitionLog {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: Storage> {
    storage: S,
    dir: PathBuf,
    chunk_bytes: u64,
    config: RefCell<LogConfig>,
    state: RefCell<State<S>>,
    appended: Notify,
    /// Fired when a flush round or a roll ends.
    progress: Notify,
    rounds: Cell<u64>,
    /// Idempotent-producer dedup. Checked and recorded with no await
    /// between the check and the offset assignment.
    producers: RefCell<ProducerStateTable>,
    /// Runs full-chunk writes in the background, so an append that only
    /// needs to be in the log does not wait for the disk. Without one
    /// (storage driven by a plain `block_on`), the append awaits the write.
    write_behind: Option<Spawner>,
    /// The preallocated file the next roll renames into place, and how far
    /// it is preallocated.
    spare: RefCell<Option<(Rc<S::File>, u64)>>,
    /// Base offset of the active segment a spare was last started for: one
    /// attempt per segment, so a full disk is not retried on every append.
    spare_started_for: Cell<Option<i64>>,
    /// A spare is being prepared.
    spare_busy: Cell<bool>,
}

/// What `finish_segment` needs of a segment the roll closed.
struct ClosedSegment<F> {
    file: Rc<F>,
    base: i64,
    len: u64,
    index_bytes: Vec<u8>,
    time_bytes: Vec<u8>,
    /// The producer state at the roll: (end offset, snapshot bytes).
    snapshot: (i64, Vec<u8>),
}

/// Starts a future on the log's executor without waiting for it.
pub type Spawner = Rc<dyn Fn(Pin<Box<dyn Future<Output = ()>>>)>;

fn segment_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

fn io_err(e: std::io::Error) -> EngineError {
    EngineError::from_io(e)
}

/// Resets `flushing` (and un-submits unfinished chunks) however a round
/// ends, including when its future is dropped.
struct RoundGuard<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<S: Storage> Drop for RoundGuard<'_, S> {
    fn drop(&mut self) {
        let mut st = self.inner.state.borrow_mut();
        st.flushing = false;
        if let Some(tail) = st.tail.as_mut() {
            for c in tail.chunks.iter_mut() {
                if !c.written {
                    c.submitted = false;
                }
            }
        }
        drop(st);
        self.inner.progress.notify_all();
    }
}

struct RollGuard<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<S: Storage> Drop for RollGuard<'_, S> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().rolling = false;
        self.inner.progress.notify_all();
    }
}

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

    async fn open_inner(
        storage: S,
        dir: &Path,
        config: LogConfig,
        write_behind: Option<Spawner>,
    ) -> Result<PartitionLog<S>> {
        let dir = dir.to_path_buf();
        let segment_bytes = config
            .segment_bytes
            .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let chunk_bytes = align_up(segment_bytes).min(CHUNK_BYTES);
        let (segments, tail) = recover::<S>(&storage, &dir, &config, chunk_bytes).await?;
        let log_start_offset = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let log_end_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        tracing::debug!(dir = %dir.display(), log_start_offset, log_end_offset, segments = segments.len(), "log opened");
        let producers =
            producer_state::load_latest(&storage, &dir, log_start_offset, log_end_offset)
                .await
                .map_err(io_err)?;
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
                    synced_offset: log_end_offset,
                    messages_since_sync: 0,
                    last_sync_ms: 0,
                    clock_ms: 0,
                    flushing: false,
                    stop_round: false,
                    rolling: false,
                    finishing: None,
                    closed: false,
                    failed: None,
                }),
                appended: Notify::default(),
                progress: Notify::default(),
                rounds: Cell::new(0),
                spare: RefCell::new(None),
                spare_started_for: Cell::new(None),
                spare_busy: Cell::new(false),
                producers: RefCell::new(producers),
                write_behind,
            }),
        };
        log.replay_producer_state().await?;
        Ok(log)
    }

    /// Brings the producer state up to the log end by replaying the headers
    /// of the batches past its snapshot (all of the log without one).
    async fn replay_producer_state(&self) -> Result<()> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        let mut offset = self.inner.producers.borrow().end_offset().max(log_start);
        let from = offset;
        while offset < log_end {
            let read = self.read(offset, PRODUCER_REPLAY_WINDOW_BYTES).await?;
            let mut headers = Vec::with_capacity(read.batches.len());
            for b in &read.batches {
                headers.push(BatchHeader::parse(b)?);
            }
            let Some(last) = headers.last() else {
                return Err(EngineError::Corrupt(format!(
                    "producer state replay: no batch at offset {offset} below the log end {log_end}"
                )));
            };
            let next = last.last_offset() + 1;
            assert!(next > offset, "replay must move forward");
            self.inner.producers.borrow_mut().replay(headers);
            offset = next;
        }
        if log_end > from {
            tracing::debug!(dir = %self.inner.dir.display(), from, to = log_end, producers = self.inner.producers.borrow().len(), "producer state replayed");
        }
        Ok(())
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

    /// The answer to a retried batch: the original's offsets, once the
    /// original is as durable as this request asks.
    async fn answer_duplicate(
        &self,
        original: BatchMetadata,
        durability: Durability,
        log_append_time: bool,
    ) -> Result<AppendInfo> {
        tracing::debug!(dir = %self.inner.dir.display(), base_offset = original.base_offset, first_seq = original.first_seq, "duplicate batch answered with its original offsets");
        if durability == Durability::Synced {
            self.sync_to(original.last_offset + 1).await?;
        }
        Ok(AppendInfo {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            log_append_time_ms: if log_append_time {
                original.max_timestamp
            } else {
                -1
            },
            log_start_offset: self.log_start_offset(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Replaces the configuration (topic config change); takes effect for
    /// the next append, roll and retention pass.
    pub fn set_config(&self, config: LogConfig) {
        *self.inner.config.borrow_mut() = config;
    }

    /// Validates and appends the batches in `records` (one or more complete
    /// RecordBatch v2), assigning offsets. All or nothing.
    pub async fn append(
        &self,
        records: &[u8],
        durability: Durability,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let (max, log_append_time, segment_bytes, flush_messages) = {
            let c = self.inner.config.borrow();
            (
                c.max_message_bytes,
                c.log_append_time,
                c.segment_bytes.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
                c.flush_messages,
            )
        };
        let parsed = batch::split_and_validate(records)?;
        for (_, range) in &parsed {
            if range.len() > max {
                return Err(BatchError::TooLarge {
                    bytes: range.len(),
                    max,
                }
                .into());
            }
        }
        // Wait for room: no roll in progress, bounded unwritten bytes, and a
        // segment with space for the whole append.
        enum Next {
            Go,
            Wait,
            Write,
            Roll,
        }
        loop {
            let progressed = self.inner.progress.notified();
            let next = {
                let st = self.inner.state.borrow();
                self.check_open(&st)?;
                let seg = st
                    .segments
                    .last()
                    .ok_or_else(|| EngineError::Corrupt("no active segment".into()))?;
                let unwritten = self.unwritten_bytes(&st);
                if st.rolling || (st.flushing && unwritten >= MAX_UNWRITTEN_BYTES) {
                    Next::Wait
                } else if unwritten >= MAX_UNWRITTEN_BYTES {
                    Next::Write
                } else if seg.len > 0 && seg.len + records.len() as u64 > segment_bytes {
                    Next::Roll
                } else {
                    Next::Go
                }
            };
            match next {
                Next::Go => break,
                Next::Wait => progressed.await,
                Next::Write => self.flush_round(false).await?,
                Next::Roll => self.roll().await?,
            }
        }
        // No await from here to the offset assignment: the producer check
        // and the record of the appended batches see the same log end.
        let headers: Vec<BatchHeader> = parsed.iter().map(|(h, _)| *h).collect();
        let decision = self.inner.producers.borrow().check_all(&headers)?;
        if let Decision::Duplicate(original) = decision {
            return self
                .answer_duplicate(original, durability, log_append_time)
                .await;
        }
        let info = {
            let mut st = self.inner.state.borrow_mut();
            let mut producers = self.inner.producers.borrow_mut();
            st.clock_ms = st.clock_ms.max(now_ms);
            let interval = self.inner.config.borrow().index_interval_bytes as u64;
            let base = st.log_end_offset;
            let mut next = base;
            let mut messages = 0u64;
            for (h, range) in &parsed {
                let src = &records[range.clone()];
                let mut header = [0u8; HEADER_BYTES];
                header.copy_from_slice(&src[..HEADER_BYTES]);
                batch::set_base_offset(&mut header, next);
                let mut max_ts = h.max_timestamp;
                let owned;
                let (head, body): (&[u8], &[u8]) = if log_append_time {
                    let mut b = src.to_vec();
                    batch::set_base_offset(&mut b, next);
                    batch::set_log_append_time(&mut b, now_ms);
                    max_ts = now_ms;
                    owned = b;
                    (&owned[..], &[])
                } else {
                    (&header[..], &src[HEADER_BYTES..])
                };
                let pos = self.tail_write(&mut st, head, body);
                let stored = BatchHeader {
                    base_offset: next,
                    ..*h
                };
                let seg = st
                    .segments
                    .last_mut()
                    .ok_or_else(|| EngineError::Corrupt("no active segment".into()))?;
                seg.first_append_ms.get_or_insert(now_ms);
                seg.track_batch(pos, &stored, max_ts, interval);
                producers.record(
                    &BatchHeader {
                        max_timestamp: max_ts,
                        ..stored
                    },
                    next,
                );
                next = stored.last_offset() + 1;
                messages += h.record_count as u64;
            }
            debug_assert!(next > base, "offsets must move forward");
            st.log_end_offset = next;
            st.messages_since_sync += messages;
            AppendInfo {
                base_offset: base,
                last_offset: next - 1,
                log_append_time_ms: if log_append_time { now_ms } else { -1 },
                log_start_offset: st.log_start_offset,
            }
        };
        self.inner.appended.notify_all();
        self.maybe_prepare_spare(segment_bytes).await;
        let must_sync = durability == Durability::Synced
            || self.inner.state.borrow().messages_since_sync >= flush_messages;
        if must_sync {
            self.sync_to(info.last_offset + 1).await?;
        } else if self.has_unsubmitted_chunks() && !self.inner.state.borrow().flushing {
            // A full chunk is waiting: write it now so the disk keeps busy,
            // in the background when the log can spawn.
            match &self.inner.write_behind {
                Some(spawn) => {
                    let log = self.clone();
                    spawn(Box::pin(async move { log.write_full_chunks().await }));
                }
                None => self.write_full_chunks().await,
            }
        }
        Ok(info)
    }

    /// Writes the full chunks not yet submitted (and those sealed while it
    /// runs). The batches are in the log already, so a failed write is not
    /// an append's failure; the chunk stays in memory for a retry.
    async fn write_full_chunks(&self) {
        {
            let st = self.inner.state.borrow();
            if st.closed || st.failed.is_some() || st.flushing {
                return;
            }
        }
        if let Err(e) = self.flush_round(false).await {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "background chunk write failed");
        }
    }

    /// Starts preparing the spare segment once the active one is half full
    /// (so idle partitions never hold one), in the background when the log
    /// can spawn.
    async fn maybe_prepare_spare(&self, segment_bytes: u64) {
        if !self.inner.config.borrow().preallocate {
            return;
        }
        let base = {
            let st = self.inner.state.borrow();
            match st.segments.last() {
                Some(seg) if seg.len >= segment_bytes / 2 => seg.base_offset,
                _ => return,
            }
        };
        // One preparation at a time, and none while a spare waits for the
        // roll: a second one would truncate the file the roll may be
        // renaming into place.
        if self.inner.spare_started_for.get() == Some(base)
            || self.inner.spare_busy.get()
            || self.inner.spare.borrow().is_some()
        {
            return;
        }
        self.inner.spare_busy.set(true);
        self.inner.spare_started_for.set(Some(base));
        match &self.inner.write_behind {
            Some(spawn) => {
                let log = self.clone();
                spawn(Box::pin(
                    async move { log.prepare_spare(segment_bytes).await },
                ));
            }
            None => self.prepare_spare(segment_bytes).await,
        }
    }

    /// Creates the spare segment file, preallocated to `segment.bytes`.
    /// Failure (a full disk) only means the roll creates the file itself.
    async fn prepare_spare(&self, segment_bytes: u64) {
        let storage = &self.inner.storage;
        let path = self.inner.dir.join(SPARE_SEGMENT_FILE);
        let made = async {
            let file = storage.open(&path).await?;
            file.truncate(0).await?;
            file.preallocate(align_up(segment_bytes)).await?;
            Ok::<_, std::io::Error>((file, align_up(segment_bytes)))
        }
        .await;
        let closed = self.inner.state.borrow().closed;
        self.inner.spare_busy.set(false);
        match made {
            Ok((file, allocated)) if !closed => {
                *self.inner.spare.borrow_mut() = Some((Rc::new(file), allocated));
            }
            Ok(_) => {
                let _ = storage.remove_file(&path).await;
            }
            Err(e) => {
                tracing::warn!(dir = %self.inner.dir.display(), error = %e, "preparing the next segment failed; the roll will create it");
                let _ = storage.remove_file(&path).await;
            }
        }
    }

    /// The next segment at `base_offset`: the spare renamed into place when
    /// there is one, else a new file.
    async fn next_segment(&self, base_offset: i64) -> Result<(Segment<S::File>, Tail<BufOf<S>>)> {
        let storage = &self.inner.storage;
        let dir = &self.inner.dir;
        let config = self.config();
        let spare = self.inner.spare.borrow_mut().take();
        if let Some((file, allocated)) = spare {
            let path = dir.join(segment_name(base_offset, "log"));
            let renamed = storage.rename(&dir.join(SPARE_SEGMENT_FILE), &path).await;
            match renamed {
                Ok(()) => {
                    for ext in ["index", "timeindex"] {
                        storage
                            .remove_file(&dir.join(segment_name(base_offset, ext)))
                            .await
                            .map_err(io_err)?;
                    }
                    let tail = Tail {
                        buf: self.take_buf(&file),
                        buf_start: 0,
                        chunks: VecDeque::new(),
                        loaded_end: 0,
                    };
                    let mut segment = Segment::new(base_offset, file);
                    segment.allocated_bytes = allocated;
                    return Ok((segment, tail));
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "renaming the prepared segment failed; creating it");
                }
            }
        }
        create_segment::<S>(storage, dir, base_offset, &config, self.inner.chunk_bytes).await
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

    fn unwritten_bytes(&self, st: &State<S>) -> u64 {
        match &st.tail {
            Some(t) => t
                .chunks
                .iter()
                .filter(|c| !c.written)
                .map(|c| c.data_bytes)
                .sum(),
            None => 0,
        }
    }

    /// A chunk-sized buffer (the storage reuses freed ones).
    fn take_buf(&self, file: &S::File) -> BufOf<S> {
        file.alloc_buf(self.inner.chunk_bytes as usize)
    }

    fn has_unsubmitted_chunks(&self) -> bool {
        let st = self.inner.state.borrow();
        st.tail
            .as_ref()
            .is_some_and(|t| t.chunks.iter().any(|c| !c.submitted))
    }

    /// Copies `head` then `body` to the end of the active segment's tail,
    /// sealing full buffers into chunks. Returns the batch's position.
    fn tail_write(&self, st: &mut State<S>, head: &[u8], body: &[u8]) -> u64 {
        let chunk_bytes = self.inner.chunk_bytes;
        let State { segments, tail, .. } = st;
        let (Some(seg), Some(tail)) = (segments.last_mut(), tail.as_mut()) else {
            unreachable!("append on a log without an active segment")
        };
        let pos = seg.len;
        for part in [head, body] {
            let mut rest = part;
            while !rest.is_empty() {
                let used = (seg.len - tail.buf_start) as usize;
                let n = (chunk_bytes as usize - used).min(rest.len());
                tail.buf.as_mut_slice()[used..used + n].copy_from_slice(&rest[..n]);
                seg.len += n as u64;
                rest = &rest[n..];
                if used + n == chunk_bytes as usize {
                    let next = self.take_buf(&seg.file);
                    let full = std::mem::replace(&mut tail.buf, next);
                    tail.chunks.push_back(Chunk {
                        start: tail.buf_start,
                        data_bytes: chunk_bytes,
                        buf: Rc::new(full),
                        submitted: false,
                        written: false,
                    });
                    tail.buf_start += chunk_bytes;
                }
            }
        }
        pos
    }

    /// Seals the partial tail buffer into a chunk padded with zeros; the new
    /// tail buffer starts with a copy of the last partial block, which the
    /// next write rewrites.
    fn seal_partial(&self, st: &mut State<S>) {
        let State { segments, tail, .. } = st;
        let (Some(seg), Some(tail)) = (segments.last_mut(), tail.as_mut()) else {
            return;
        };
        let used = (seg.len - tail.buf_start) as usize;
        if used == 0 {
            return;
        }
        let padded = align_up(used as u64) as usize;
        let new_start = align_down(seg.len);
        let mut next = self.take_buf(&seg.file);
        let keep = (seg.len - new_start) as usize;
        let from = (new_start - tail.buf_start) as usize;
        next.as_mut_slice()[..keep].copy_from_slice(&tail.buf.as_slice()[from..from + keep]);
        let mut full = std::mem::replace(&mut tail.buf, next);
        full.as_mut_slice()[used..padded].fill(0);
        full.trim_to(padded);
        tail.chunks.push_back(Chunk {
            start: tail.buf_start,
            data_bytes: used as u64,
            buf: Rc::new(full),
            submitted: false,
            written: false,
        });
        tail.buf_start = new_start;
    }

    /// Waits until every offset below `end_offset` is synced, leading flush
    /// rounds as needed.
    async fn sync_to(&self, end_offset: i64) -> Result<()> {
        loop {
            let progressed = self.inner.progress.notified();
            let busy = {
                let st = self.inner.state.borrow();
                if st.synced_offset >= end_offset {
                    return Ok(());
                }
                if let Some(msg) = &st.failed {
                    return Err(EngineError::Io(std::io::Error::other(format!(
                        "fdatasync failed: {msg}"
                    ))));
                }
                st.flushing || st.rolling
            };
            if busy {
                self.inner.state.borrow_mut().stop_round = true;
                progressed.await;
                continue;
            }
            self.flush_round(true).await?;
        }
    }

    /// One flush round: writes the unsubmitted chunks with several O_DIRECT
    /// writes in flight. A sync round writes the chunks there are when it
    /// starts (and the partial tail), then fdatasyncs once. A write-behind
    /// round (`sync == false`) goes on with chunks sealed while it runs until
    /// there are none, the preallocated space ends or `stop_round` is set; a
    /// round started while `stop_round` is set syncs. The caller must have
    /// seen `flushing == false`.
    async fn flush_round(&self, sync: bool) -> Result<()> {
        let (file, end_offset, sync) = {
            let mut st = self.inner.state.borrow_mut();
            if st.flushing {
                return Ok(());
            }
            st.flushing = true;
            let sync = sync || st.stop_round;
            if sync {
                st.stop_round = false;
                self.seal_partial(&mut st);
            }
            let Some(seg) = st.segments.last() else {
                return Ok(());
            };
            (seg.file.clone(), st.log_end_offset, sync)
        };
        let _guard = RoundGuard { inner: &self.inner };
        let started = std::time::Instant::now();
        self.inner.rounds.set(self.inner.rounds.get() + 1);
        let mut inflight = FuturesUnordered::new();
        // File ranges of writes in flight: a chunk overlapping one of them
        // (the rewritten last block of a partial chunk) waits, so that an
        // older write can never land after a newer one.
        let mut busy: Vec<(usize, u64, u64)> = Vec::new();
        let limit = if sync {
            let st = self.inner.state.borrow();
            st.tail
                .as_ref()
                .map(|t| t.chunks.iter().filter(|c| !c.submitted).count())
                .unwrap_or(0)
        } else {
            usize::MAX
        };
        // Writes stay below this file position (preallocated space).
        let mut write_limit = u64::MAX;
        let (preallocate, cap_bytes) = {
            let c = self.inner.config.borrow();
            (
                c.preallocate,
                align_up(c.segment_bytes.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)),
            )
        };
        if preallocate {
            // Ahead of everything this round may write, before any write
            // is in flight (see PREALLOCATE_STEP_BYTES): the chunks there
            // are, and PREALLOCATE_ROUND_CHUNKS from the first unsubmitted.
            let (allocated, reach) = {
                let st = self.inner.state.borrow();
                let allocated = st.segments.last().map_or(0, |s| s.allocated_bytes);
                let reach = st.tail.as_ref().and_then(|t| {
                    let unsubmitted = t.chunks.iter().filter(|c| !c.submitted);
                    let first = unsubmitted.clone().map(|c| c.start).min()?;
                    let data_end = unsubmitted
                        .map(|c| c.start + c.buf.as_slice().len() as u64)
                        .max()?;
                    let ahead = limit.min(PREALLOCATE_ROUND_CHUNKS) as u64;
                    Some(data_end.max(first + ahead * self.inner.chunk_bytes))
                });
                (allocated, reach)
            };
            let mut allocated = allocated;
            if let Some(end) = reach.filter(|&e| e > allocated && allocated < cap_bytes) {
                let target = (end + PREALLOCATE_STEP_BYTES).min(cap_bytes);
                file.preallocate(target).await.map_err(io_err)?;
                if let Some(seg) = self.inner.state.borrow_mut().segments.last_mut() {
                    seg.allocated_bytes = seg.allocated_bytes.max(target);
                }
                allocated = target;
            }
            if allocated < cap_bytes {
                write_limit = allocated;
            }
        }
        let mut submitted = 0usize;
        // The first failed write: nothing more is submitted, and the writes
        // in flight are waited for (a dropped write could still land after
        // a later round's rewrite of the same block). RoundGuard then
        // resubmits every chunk not written.
        let mut failure: Option<std::io::Error> = None;
        loop {
            while failure.is_none() && inflight.len() < MAX_INFLIGHT_WRITES && submitted < limit {
                let next = {
                    let mut st = self.inner.state.borrow_mut();
                    if !sync && st.stop_round {
                        break;
                    }
                    let Some(tail) = st.tail.as_mut() else {
                        break;
                    };
                    let Some(c) = tail.chunks.iter_mut().find(|c| !c.submitted) else {
                        break;
                    };
                    let end = c.start + c.buf.as_slice().len() as u64;
                    // A sync round's chunks are all below the preallocation
                    // made above; only a write-behind round can outrun it.
                    let outruns = !sync && end > write_limit;
                    if outruns || busy.iter().any(|&(_, s, e)| c.start < e && s < end) {
                        break;
                    }
                    c.submitted = true;
                    (c.start, end, c.buf.clone())
                };
                let (start, end, buf) = next;
                let id = Rc::as_ptr(&buf) as usize;
                busy.push((id, start, end));
                let file = file.clone();
                inflight.push(async move { (id, file.write_at(buf, start).await) });
                submitted += 1;
            }
            let Some(done) = inflight.next().await else {
                break;
            };
            let (id, result) = done;
            busy.retain(|&(b, _, _)| b != id);
            if let Err(e) = result {
                failure.get_or_insert(e);
                continue;
            }
            let mut st = self.inner.state.borrow_mut();
            if let Some(tail) = st.tail.as_mut() {
                if let Some(c) = tail
                    .chunks
                    .iter_mut()
                    .find(|c| Rc::as_ptr(&c.buf) as usize == id)
                {
                    c.written = true;
                }
                trim_written(tail, &*file);
            }
            drop(st);
            // Appends held back by MAX_UNWRITTEN_BYTES may go on now.
            self.inner.progress.notify_all();
        }
        if let Some(e) = failure {
            return Err(io_err(e));
        }
        tracing::trace!(dir = %self.inner.dir.display(), sync, chunks = submitted, write_ms = started.elapsed().as_secs_f64() * 1e3, "flush round written");
        if sync {
            if let Err(e) = file.fdatasync().await {
                let mut st = self.inner.state.borrow_mut();
                st.failed = Some(e.to_string());
                tracing::error!(dir = %self.inner.dir.display(), error = %e, "fdatasync failed; log refuses appends until reopened");
                return Err(io_err(e));
            }
            let mut st = self.inner.state.borrow_mut();
            st.synced_offset = st.synced_offset.max(end_offset);
            st.messages_since_sync = 0;
            st.last_sync_ms = st.clock_ms;
        }
        Ok(())
    }

    /// Rolls to a new segment at the log end offset: syncs the active one,
    /// writes its indexes and trims its file to the logical length.
    async fn roll(&self) -> Result<()> {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.rolling {
                return Ok(());
            }
            st.rolling = true;
        }
        let _guard = RollGuard { inner: &self.inner };
        let started = std::time::Instant::now();
        // Wait out any running round, then sync everything.
        loop {
            let progressed = self.inner.progress.notified();
            let (flushing, finishing, end, has_chunks) = {
                let st = self.inner.state.borrow();
                self.check_open(&st)?;
                let has = st
                    .tail
                    .as_ref()
                    .is_some_and(|t| t.chunks.iter().any(|c| !c.written));
                (st.flushing, st.finishing.is_some(), st.log_end_offset, has)
            };
            if flushing {
                self.inner.state.borrow_mut().stop_round = true;
                progressed.await;
                continue;
            }
            if finishing {
                // One segment is finished at a time.
                progressed.await;
                continue;
            }
            if self.inner.state.borrow().synced_offset >= end && !has_chunks {
                break;
            }
            self.flush_round(true).await?;
        }
        // Everything is synced and appends wait for the roll: the producer
        // state covers exactly the synced log. Idle producers are forgotten
        // here (Kafka's `producer.id.expiration.ms`), not on every tick.
        let clock_ms = self.inner.state.borrow().clock_ms;
        let snapshot = {
            let mut producers = self.inner.producers.borrow_mut();
            producers.remove_expired(clock_ms, producer_state::PRODUCER_ID_EXPIRATION_MS);
            (producers.end_offset(), producers.to_snapshot_bytes())
        };
        let closed = {
            let mut st = self.inner.state.borrow_mut();
            let Some(seg) = st.segments.last_mut() else {
                return Ok(());
            };
            if seg.len == 0 {
                return Ok(());
            }
            seg.push_time_entry();
            ClosedSegment {
                file: seg.file.clone(),
                base: seg.base_offset,
                len: seg.len,
                index_bytes: index::encode_offset_index(&seg.index),
                time_bytes: index::encode_time_index(&seg.time_index),
                snapshot,
            }
        };
        let next_offset = self.inner.state.borrow().log_end_offset;
        let dir = &self.inner.dir;
        let storage = &self.inner.storage;
        let (segment, tail) = self.next_segment(next_offset).await?;
        storage.sync_dir(dir).await.map_err(io_err)?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.segments.push(segment);
            st.finishing = Some(closed.base);
            if let Some(old) = st.tail.replace(tail) {
                closed.file.recycle_buf(old.buf);
                for c in old.chunks {
                    if let Ok(buf) = Rc::try_unwrap(c.buf) {
                        closed.file.recycle_buf(buf);
                    }
                }
            }
        }
        // Appends go on in the new segment while the old one is finished.
        drop(_guard);
        match &self.inner.write_behind {
            Some(spawn) => {
                let log = self.clone();
                spawn(Box::pin(async move { log.finish_segment(closed).await }));
            }
            None => self.finish_segment(closed).await,
        }
        tracing::debug!(dir = %dir.display(), base_offset = next_offset, roll_ms = started.elapsed().as_secs_f64() * 1e3, "segment rolled");
        Ok(())
    }

    /// Finishes a segment the roll closed (its data synced, the next
    /// segment already active): trims the file to its logical length and
    /// syncs that, then writes its index files (each under a temporary name,
    /// renamed when complete) and the producer snapshot taken at the roll.
    /// Until both index files exist, recovery scans the segment as it scans
    /// the active one. A failure is logged, not returned: the data is safe
    /// and recovery rebuilds what is missing.
    async fn finish_segment(&self, closed: ClosedSegment<S::File>) {
        let dir = &self.inner.dir;
        let storage = &self.inner.storage;
        let base = closed.base;
        let done = async {
            closed.file.truncate(closed.len).await?;
            closed.file.fdatasync().await?;
            write_index_files(storage, dir, base, &closed.index_bytes, &closed.time_bytes).await?;
            let (offset, bytes) = &closed.snapshot;
            producer_state::write_snapshot(storage, dir, *offset, bytes).await
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(dir = %dir.display(), base_offset = base, error = %e, "finishing a rolled segment failed; recovery will rebuild its indexes");
        }
        self.inner.state.borrow_mut().finishing = None;
        self.inner.progress.notify_all();
    }

    /// Reads bytes `[pos, pos + len)` of the segment with base `base`
    /// (clamped to its logical length), from memory when hot, else from disk.
    /// Also returns how many leading bytes came from the file (now, or when
    /// the log was opened): the rest were validated when they were appended
    /// and have not left memory since.
    async fn read_range(&self, base: i64, pos: u64, len: u64) -> Result<(Bytes, usize)> {
        let (file, disk_end, mem, unchecked_end) = {
            let st = self.inner.state.borrow();
            let i = st
                .segments
                .binary_search_by_key(&base, |s| s.base_offset)
                .map_err(|_| EngineError::OffsetOutOfRange {
                    offset: base,
                    log_start: st.log_start_offset,
                    log_end: st.log_end_offset,
                })?;
            let seg = &st.segments[i];
            let end = (pos + len).min(seg.len);
            if pos >= end {
                return Ok((Bytes::new(), 0));
            }
            let is_active = i + 1 == st.segments.len();
            match (&st.tail, is_active) {
                (Some(tail), true) => {
                    let mem_start = tail
                        .chunks
                        .front()
                        .map(|c| c.start)
                        .unwrap_or(tail.buf_start)
                        .min(tail.buf_start);
                    let from = pos.max(mem_start);
                    // One allocation of the final size: growing by doubling
                    // would copy a large read several times.
                    let mut out = BytesMut::with_capacity(end.saturating_sub(from) as usize);
                    if from < end {
                        copy_from_memory(tail, from, end, &mut out);
                    }
                    let unchecked_end = tail.loaded_end.min(end);
                    (seg.file.clone(), mem_start.min(end), out, unchecked_end)
                }
                _ => (seg.file.clone(), end, BytesMut::new(), end),
            }
        };
        // Leading bytes that come from the file, now or at open.
        let from_file = unchecked_end.max(disk_end).saturating_sub(pos) as usize;
        if pos >= disk_end {
            return Ok((mem.freeze(), from_file));
        }
        let disk = file
            .read_at(pos, (disk_end - pos) as usize)
            .await
            .map_err(io_err)?;
        if disk.len() as u64 != disk_end - pos {
            return Err(EngineError::Corrupt(format!(
                "short read at {pos}: {} of {} bytes",
                disk.len(),
                disk_end - pos
            )));
        }
        if mem.is_empty() {
            return Ok((disk, from_file));
        }
        let mut out = BytesMut::with_capacity(disk.len() + mem.len());
        out.extend_from_slice(&disk);
        out.extend_from_slice(&mem);
        Ok((out.freeze(), from_file))
    }

    /// Finds the segment holding `offset`: its base, length and the index
    /// position to scan from.
    fn locate(&self, offset: i64) -> Option<(i64, u64, u64, i64)> {
        let st = self.inner.state.borrow();
        let i = st
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)?;
        let seg = &st.segments[i];
        let rel = u32::try_from(offset - seg.base_offset).unwrap_or(u32::MAX);
        let (pos, first) = index::lookup_offset(&seg.index, rel)
            .map(|e| (e.pos() as u64, seg.base_offset + e.rel() as i64))
            .unwrap_or((0, seg.base_offset));
        Some((seg.base_offset, seg.len, pos, first))
    }

    /// Scans batch headers of segment `base` from `pos` and returns the
    /// first batch for which `stop` holds, with its position and the bytes
    /// read from there on (at least `want` when available).
    async fn scan(
        &self,
        base: i64,
        seg_len: u64,
        mut pos: u64,
        mut expect_offset: i64,
        want: u64,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader, Bytes, usize)>> {
        while pos < seg_len {
            let (window, disk_bytes) = self
                .read_range(base, pos, SCAN_WINDOW_BYTES.max(want + 2 * ALIGN_BYTES))
                .await?;
            let mut at = 0usize;
            while at + HEADER_BYTES <= window.len() {
                let h = BatchHeader::parse(&window[at..]).map_err(|e| {
                    EngineError::Corrupt(format!(
                        "segment {base} position {}: {e}",
                        pos + at as u64
                    ))
                })?;
                if h.base_offset != expect_offset {
                    return Err(EngineError::Corrupt(format!(
                        "segment {base} position {}: batch has offset {}, expected {expect_offset}",
                        pos + at as u64,
                        h.base_offset
                    )));
                }
                expect_offset = h.last_offset() + 1;
                if stop(&h) {
                    let here = pos + at as u64;
                    let rest = window.slice(at..);
                    if rest.len() as u64 >= want.max(h.total_bytes() as u64).min(seg_len - here) {
                        return Ok(Some((here, h, rest, disk_bytes.saturating_sub(at))));
                    }
                    let (more, more_disk_bytes) = self
                        .read_range(base, here, want.max(h.total_bytes() as u64))
                        .await?;
                    return Ok(Some((here, h, more, more_disk_bytes)));
                }
                at += h.total_bytes();
            }
            if at == 0 && window.len() < HEADER_BYTES {
                return Err(EngineError::Corrupt(format!(
                    "segment {base}: truncated header at {pos}"
                )));
            }
            pos += at as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from the one containing `offset`, up to
    /// `max_bytes`, but always the first batch even when it is larger
    /// (KIP-74). `offset == log_end_offset` gives an empty result.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let mut out = {
            let st = self.inner.state.borrow();
            if offset < st.log_start_offset || offset > st.log_end_offset {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start: st.log_start_offset,
                    log_end: st.log_end_offset,
                });
            }
            ReadResult {
                batches: Vec::new(),
                high_watermark: st.log_end_offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            }
        };
        if offset == out.log_end_offset {
            return Ok(out);
        }
        let Some((base, seg_len, pos, first)) = self.locate(offset) else {
            return Ok(out);
        };
        let found = self
            .scan(base, seg_len, pos, first, max_bytes as u64, |h| {
                h.last_offset() >= offset
            })
            .await?;
        let Some((pos, _, bytes, disk_bytes)) = found else {
            return Ok(out);
        };
        let mut at = 0usize;
        let mut total = 0usize;
        let mut expect_offset: Option<i64> = None;
        while at + LOG_OVERHEAD <= bytes.len() {
            let len =
                i32::from_be_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
            let size = LOG_OVERHEAD + len.max(0) as usize;
            if at + size > bytes.len() || (!out.batches.is_empty() && total + size > max_bytes) {
                break;
            }
            let b = bytes.slice(at..at + size);
            // What came from disk is checked (CRC included) before it is
            // returned; bytes still in memory were checked at append.
            let checked = if at < disk_bytes {
                batch::validate(&b)
            } else {
                batch::validate_framing(&b)
            };
            let h = checked.map_err(|e| {
                EngineError::Corrupt(format!("segment {base} position {}: {e}", pos + at as u64))
            })?;
            // The CRC does not cover baseOffset: check the offsets chain.
            if expect_offset.is_some_and(|e| e != h.base_offset) {
                return Err(EngineError::Corrupt(format!(
                    "segment {base} position {}: offset {} out of sequence",
                    pos + at as u64,
                    h.base_offset
                )));
            }
            expect_offset = Some(h.last_offset() + 1);
            total += size;
            out.batches.push(b);
            at += size;
        }
        if out.batches.is_empty() {
            return Err(EngineError::Corrupt(format!(
                "segment {base}: batch at offset {offset} cut short"
            )));
        }
        Ok(out)
    }

    /// The first offset whose batch max timestamp is >= `timestamp_ms`, with
    /// that timestamp; `None` when no record is that recent.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let (base, seg_len, pos, first, log_start) = {
            let st = self.inner.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= timestamp_ms) else {
                return Ok(None);
            };
            let start_rel = index::lookup_time(&seg.time_index, timestamp_ms)
                .map(|e| e.rel())
                .unwrap_or(0);
            let (pos, first) = index::lookup_offset(&seg.index, start_rel)
                .map(|e| (e.pos() as u64, seg.base_offset + e.rel() as i64))
                .unwrap_or((0, seg.base_offset));
            (seg.base_offset, seg.len, pos, first, st.log_start_offset)
        };
        let found = self
            .scan(base, seg_len, pos, first, 0, |h| {
                h.max_timestamp >= timestamp_ms
            })
            .await?;
        // Within the batch, the first record at or after the timestamp when
        // the records are readable without decompressing; else the batch.
        Ok(found.map(|(_, h, bytes, _)| {
            match crate::batch::first_record_at_or_after(&bytes, timestamp_ms) {
                Some((delta, ts)) => ((h.base_offset + i64::from(delta)).max(log_start), ts),
                None => (h.base_offset.max(log_start), h.max_timestamp),
            }
        }))
    }

    /// The offset and timestamp of the record with the largest timestamp
    /// (ListOffsets -3, KIP-734).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.inner.state.borrow();
        st.segments
            .iter()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.max_timestamp_offset, s.max_timestamp))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().log_end_offset
    }

    /// Single node: everything appended is committed.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
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

    /// Resolves once the log end offset is past `offset` or the log closes.
    /// Callers bound the wait with their own timer.
    pub async fn wait_for_offset(&self, offset: i64) {
        loop {
            let notified = self.inner.appended.notified();
            {
                let st = self.inner.state.borrow();
                if st.log_end_offset > offset || st.closed {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Writes and fdatasyncs everything appended so far.
    pub async fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.sync_to(end).await
    }

    /// Starts a new segment now (as `segment.ms` would).
    pub async fn roll_now(&self) -> Result<()> {
        self.roll().await
    }

    /// Periodic work: `flush.ms` syncs, `segment.ms` rolls and retention.
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
                s.len > 0 && s.first_append_ms.is_some_and(|t| now_ms - t >= segment_ms)
            });
            let sync = st.synced_offset < st.log_end_offset && now_ms - st.last_sync_ms >= flush_ms;
            if sync && st.flushing {
                // The running round ends soon, and the next one syncs.
                st.stop_round = true;
            }
            (roll, sync && !st.flushing)
        };
        let work = if roll {
            self.roll().await
        } else if sync {
            self.flush_round(true).await
        } else {
            Ok(())
        };
        // Retention runs even when the roll or sync failed: on a full disk,
        // deleting old segments is what frees the space they need.
        self.apply_retention(now_ms).await?;
        work
    }

    /// Deletes closed segments past `retention.ms` / `retention.bytes`,
    /// oldest first, moving the log start offset. Returns how many.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let (retention_ms, retention_bytes) = {
            let c = self.inner.config.borrow();
            (c.retention_ms, c.retention_bytes)
        };
        let mut doomed = Vec::new();
        {
            let mut st = self.inner.state.borrow_mut();
            let mut total: u64 = st.segments.iter().map(|s| s.len).sum();
            while st.segments.len() > 1 {
                let seg = &st.segments[0];
                if st.finishing == Some(seg.base_offset) {
                    break;
                }
                let by_time = retention_ms >= 0
                    && seg.max_timestamp >= 0
                    && now_ms - seg.max_timestamp > retention_ms;
                let by_size = retention_bytes >= 0 && total - seg.len >= retention_bytes as u64;
                if !(by_time || by_size) {
                    break;
                }
                total -= seg.len;
                let seg = st.segments.remove(0);
                doomed.push(seg.base_offset);
                st.log_start_offset = st.segments[0].base_offset;
            }
        }
        for base in &doomed {
            for ext in ["log", "index", "timeindex"] {
                self.inner
                    .storage
                    .remove_file(&self.inner.dir.join(segment_name(*base, ext)))
                    .await
                    .map_err(io_err)?;
            }
        }
        if !doomed.is_empty() {
            self.inner
                .storage
                .sync_dir(&self.inner.dir)
                .await
                .map_err(io_err)?;
            tracing::debug!(dir = %self.inner.dir.display(), segments = doomed.len(), log_start_offset = self.log_start_offset(), "retention deleted segments");
        }
        Ok(doomed.len())
    }

    /// Flushes, syncs and writes the clean-shutdown marker. Later calls fail
    /// with `Closed`.
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
        let healthy = self.inner.state.borrow().failed.is_none();
        if healthy {
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
        self.inner.appended.notify_all();
        self.inner.progress.notify_all();
        Ok(())
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
        Ok(())
    }
}

/// Copies `[from, end)` of the active segment out of the tail buffer and
/// chunks (which together hold everything from the first chunk's start).
/// Writes a segment's `.index` and `.timeindex`, each under a temporary name
/// renamed when complete: an index file that exists is whole.
async fn write_index_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    index_bytes: &[u8],
    time_bytes: &[u8],
) -> std::io::Result<()> {
    for (ext, bytes) in [("index", index_bytes), ("timeindex", time_bytes)] {
        let tmp = dir.join(format!("{}.tmp", segment_name(base, ext)));
        crate::io::write_whole_file(storage, &tmp, bytes).await?;
        storage
            .rename(&tmp, &dir.join(segment_name(base, ext)))
            .await?;
    }
    Ok(())
}

/// Drops written chunks beyond the hot cache (the oldest first), handing
/// their buffers back to the storage. Only a written prefix is dropped:
/// writes finish out of order.
fn trim_written<F: StorageFile>(tail: &mut Tail<F::Buf>, file: &F) {
    let written = tail.chunks.iter().take_while(|c| c.written).count();
    for _ in 0..written.saturating_sub(CACHE_CHUNKS) {
        let Some(c) = tail.chunks.pop_front() else {
            break;
        };
        if let Ok(buf) = Rc::try_unwrap(c.buf) {
            file.recycle_buf(buf);
        }
    }
}

fn copy_from_memory<B: IoBuf>(tail: &Tail<B>, from: u64, end: u64, out: &mut BytesMut) {
    let mut p = from;
    while p < end {
        let (start, data, avail_end) = if p >= tail.buf_start {
            (tail.buf_start, tail.buf.as_slice(), end)
        } else {
            match tail
                .chunks
                .iter()
                .find(|c| c.start <= p && p < c.start + c.data_bytes)
            {
                Some(c) => (c.start, c.buf.as_slice(), c.start + c.data_bytes),
                None => {
                    unreachable!("active segment bytes at {p} are neither in memory nor below it")
                }
            }
        };
        let stop = end.min(avail_end);
        out.extend_from_slice(&data[(p - start) as usize..(stop - start) as usize]);
        p = stop;
    }
}

/// Creates a new, empty segment file (preallocated when configured).
async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base_offset: i64,
    config: &LogConfig,
    chunk_bytes: u64,
) -> Result<(Segment<S::File>, Tail<BufOf<S>>)> {
    let path = dir.join(segment_name(base_offset, "log"));
    let file = storage.open(&path).await.map_err(io_err)?;
    file.truncate(0).await.map_err(io_err)?;
    for ext in ["index", "timeindex"] {
        storage
            .remove_file(&dir.join(segment_name(base_offset, ext)))
            .await
            .map_err(io_err)?;
    }
    let mut allocated_bytes = 0;
    if config.preallocate {
        let bytes = align_up(
            config
                .segment_bytes
                .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
        )
        .min(PREALLOCATE_FIRST_BYTES);
        if let Err(e) = file.preallocate(bytes).await {
            let _ = storage.remove_file(&path).await;
            return Err(io_err(e));
        }
        allocated_bytes = bytes;
    }
    let buf = file.alloc_buf(chunk_bytes as usize);
    let tail = Tail {
        buf,
        buf_start: 0,
        chunks: VecDeque::new(),
        loaded_end: 0,
    };
    let mut segment = Segment::new(base_offset, Rc::new(file));
    segment.allocated_bytes = allocated_bytes;
    Ok((segment, tail))
}

/// Opens the segments in `dir`, recovering the active one, and returns them
/// with the tail state of the active segment.
async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    chunk_bytes: u64,
) -> Result<(Vec<Segment<S::File>>, Tail<BufOf<S>>)> {
    storage.create_dir_all(dir).await.map_err(io_err)?;
    let names = storage.list_dir(dir).await.map_err(io_err)?;
    // Leftovers of a crash: the spare segment, index files not yet renamed.
    for n in &names {
        if n == SPARE_SEGMENT_FILE || n.ends_with(".index.tmp") || n.ends_with(".timeindex.tmp") {
            storage.remove_file(&dir.join(n)).await.map_err(io_err)?;
        }
    }
    let mut bases: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .filter(|stem| stem.len() == 20)
        .filter_map(|stem| stem.parse::<i64>().ok())
        .collect();
    bases.sort_unstable();
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = storage.exists(&marker).await.map_err(io_err)?;
    let interval = config.index_interval_bytes as u64;
    let mut segments: Vec<Segment<S::File>> = Vec::new();
    // Closed segments whose index files were not both written: a crash
    // while `finish_segment` ran. They are scanned like the active one.
    let mut unfinished = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        if i + 1 < bases.len() {
            let mut finished = true;
            for ext in ["index", "timeindex"] {
                finished &= storage
                    .exists(&dir.join(segment_name(base, ext)))
                    .await
                    .map_err(io_err)?;
            }
            if !finished {
                unfinished.push(base);
            }
        }
        let file = storage
            .open(&dir.join(segment_name(base, "log")))
            .await
            .map_err(io_err)?;
        let len = file.len().await.map_err(io_err)?;
        let mut seg = Segment::new(base, Rc::new(file));
        seg.len = len;
        seg.next_offset = bases.get(i + 1).copied().unwrap_or(base);
        let idx = crate::io::read_whole_file(storage, &dir.join(segment_name(base, "index")))
            .await
            .unwrap_or_default();
        seg.index = index::parse_offset_index(&idx, len);
        let tidx = crate::io::read_whole_file(storage, &dir.join(segment_name(base, "timeindex")))
            .await
            .unwrap_or_default();
        let next_rel = (seg.next_offset - base).max(0) as u64;
        seg.time_index = index::parse_time_index(
            &tidx,
            if i + 1 < bases.len() {
                next_rel
            } else {
                u64::MAX
            },
        );
        if let Some(last) = seg.time_index.last() {
            seg.max_timestamp = last.ts();
            seg.max_timestamp_offset = base + last.rel() as i64;
        }
        segments.push(seg);
    }
    let mut i = 0;
    while i + 1 < segments.len() {
        if !unfinished.contains(&segments[i].base_offset) {
            i += 1;
            continue;
        }
        let seg = &mut segments[i];
        let file_len = seg.file.len().await.map_err(io_err)?;
        recover_segment(seg, file_len, interval, false).await?;
        seg.push_time_entry();
        let base = seg.base_offset;
        tracing::info!(dir = %dir.display(), base_offset = base, logical_bytes = seg.len, file_bytes = file_len, "recovered a segment rolled just before the crash");
        // Always: what the scan found (and the file's length) may not have
        // been durable before, and the index files must not outlive it.
        seg.file.truncate(seg.len).await.map_err(io_err)?;
        seg.file.fdatasync().await.map_err(io_err)?;
        write_index_files(
            storage,
            dir,
            base,
            &index::encode_offset_index(&seg.index),
            &index::encode_time_index(&seg.time_index),
        )
        .await
        .map_err(io_err)?;
        let next_base = segments[i + 1].base_offset;
        if segments[i].next_offset != next_base {
            // Its data was synced before the next segment existed, so only
            // a disk that lost synced writes gets here. Nothing after a gap
            // can be served: the log ends where this segment's data does.
            tracing::error!(dir = %dir.display(), base_offset = base, next_offset = segments[i].next_offset, next_base, "a rolled segment ends before the next one starts; the segments after it are removed");
            for dropped in segments.drain(i + 1..) {
                for ext in ["log", "index", "timeindex"] {
                    storage
                        .remove_file(&dir.join(segment_name(dropped.base_offset, ext)))
                        .await
                        .map_err(io_err)?;
                }
            }
            storage.sync_dir(dir).await.map_err(io_err)?;
            break;
        }
        i += 1;
    }
    // Recover the active segment: scan from its last index entry, checking
    // every batch; an empty last segment (a crash during a roll) is dropped
    // and the one before becomes active again.
    loop {
        let count = segments.len();
        let Some(seg) = segments.last_mut() else {
            break;
        };
        let file_len = seg.file.len().await.map_err(io_err)?;
        recover_segment(seg, file_len, interval, clean).await?;
        if seg.len == 0 && count > 1 {
            let base = seg.base_offset;
            segments.pop();
            for ext in ["log", "index", "timeindex"] {
                storage
                    .remove_file(&dir.join(segment_name(base, ext)))
                    .await
                    .map_err(io_err)?;
            }
            continue;
        }
        if seg.len != file_len || !clean {
            tracing::info!(dir = %dir.display(), base_offset = seg.base_offset, logical_bytes = seg.len, file_bytes = file_len, clean, "recovered active segment");
        }
        if seg.len != file_len {
            seg.file.truncate(seg.len).await.map_err(io_err)?;
        }
        if seg.len != file_len || !clean {
            // What the scan found may be visible without being durable (the
            // process died, the machine did not; or an earlier open failed
            // half way): the log reports it synced from here on.
            seg.file.fdatasync().await.map_err(io_err)?;
        }
        break;
    }
    // The active segment's index files (from a clean close) go stale with
    // its next append. Removed now, so that a segment's index files on disk
    // always describe it whole: a rolled segment without both is scanned.
    let mut removed = false;
    if let Some(seg) = segments.last() {
        for ext in ["index", "timeindex"] {
            let path = dir.join(segment_name(seg.base_offset, ext));
            if storage.exists(&path).await.map_err(io_err)? {
                storage.remove_file(&path).await.map_err(io_err)?;
                removed = true;
            }
        }
    }
    if clean {
        storage.remove_file(&marker).await.map_err(io_err)?;
    }
    if clean || removed {
        storage.sync_dir(dir).await.map_err(io_err)?;
    }
    if segments.is_empty() {
        let (seg, tail) = create_segment::<S>(storage, dir, 0, config, chunk_bytes).await?;
        storage.sync_dir(dir).await.map_err(io_err)?;
        return Ok((vec![seg], tail));
    }
    let Some(seg) = segments.last_mut() else {
        unreachable!()
    };
    if config.preallocate {
        let bytes = align_up(
            config
                .segment_bytes
                .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
        )
        .min(align_up(seg.len) + PREALLOCATE_FIRST_BYTES);
        if seg.len < bytes {
            // Best effort: a full disk still lets the log open and serve reads.
            match seg.file.preallocate(bytes).await {
                Ok(()) => seg.allocated_bytes = bytes,
                Err(e) => tracing::warn!(error = %e, "preallocation failed"),
            }
        }
    }
    let loaded_end = seg.len;
    let buf_start = align_down(seg.len);
    let mut buf = seg.file.alloc_buf(chunk_bytes as usize);
    if seg.len > buf_start {
        let head = seg
            .file
            .read_at(buf_start, (seg.len - buf_start) as usize)
            .await
            .map_err(io_err)?;
        if head.len() as u64 != seg.len - buf_start {
            return Err(EngineError::Corrupt("short read of the last block".into()));
        }
        buf.as_mut_slice()[..head.len()].copy_from_slice(&head);
    }
    Ok((
        segments,
        Tail {
            buf,
            buf_start,
            chunks: VecDeque::new(),
            loaded_end,
        },
    ))
}

/// Scans `seg` from its last trusted index entry to the first torn, corrupt
/// or out-of-sequence batch and sets its logical length, next offset and
/// index tail accordingly.
///
/// The active segment's index files are only known to be complete and in
/// agreement after a clean shutdown (they are written at roll and close).
/// After a crash they may be left over from a roll that failed half way
/// (the `.index` written, the `.timeindex` not), so both are rebuilt from
/// the first batch: starting at a stale index entry would lose the maximum
/// timestamp of the batches before it.
async fn recover_segment<F: StorageFile>(
    seg: &mut Segment<F>,
    file_len: u64,
    interval: u64,
    indexes_trusted: bool,
) -> Result<()> {
    if !indexes_trusted {
        seg.index.clear();
        seg.time_index.clear();
    }
    // Trust the last index entry only if a batch with the expected offset
    // starts there; otherwise rebuild the whole index.
    let mut start = (0u64, seg.base_offset);
    while let Some(last) = seg.index.last().copied() {
        let expect = seg.base_offset + last.rel() as i64;
        let head = seg
            .file
            .read_at(last.pos() as u64, HEADER_BYTES)
            .await
            .map_err(io_err)?;
        match BatchHeader::parse(&head) {
            Ok(h) if h.base_offset == expect => {
                start = (last.pos() as u64, expect);
                break;
            }
            _ => {
                seg.index.clear();
                seg.time_index.clear();
            }
        }
    }
    let (mut pos, expected) = start;
    seg.next_offset = expected;
    seg.time_index
        .retain(|e| seg.base_offset + (e.rel() as i64) < expected);
    seg.bytes_since_index = 0;
    seg.max_timestamp = seg.time_index.last().map(|e| e.ts()).unwrap_or(-1);
    seg.max_timestamp_offset = seg
        .time_index
        .last()
        .map(|e| seg.base_offset + e.rel() as i64)
        .unwrap_or(-1);
    let mut valid_end = pos;
    'scan: while pos < file_len {
        let window = seg
            .file
            .read_at(pos, RECOVERY_WINDOW_BYTES.min(file_len - pos) as usize)
            .await
            .map_err(io_err)?;
        let mut at = 0usize;
        loop {
            let rest = &window[at..];
            if rest.len() < LOG_OVERHEAD {
                break;
            }
            let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
                break 'scan;
            }
            let total = LOG_OVERHEAD + len as usize;
            if pos + at as u64 + total as u64 > file_len {
                break 'scan;
            }
            if total > rest.len() {
                if at == 0 {
                    // One batch larger than the window: read it whole.
                    let whole = seg.file.read_at(pos, total).await.map_err(io_err)?;
                    match check_stored(&whole, seg.next_offset) {
                        Some(h) => {
                            seg.track_batch(pos, &h, h.max_timestamp, interval);
                            pos += total as u64;
                            valid_end = pos;
                            continue 'scan;
                        }
                        None => break 'scan,
                    }
                }
                break;
            }
            match check_stored(&rest[..total], seg.next_offset) {
                Some(h) => {
                    seg.track_batch(pos + at as u64, &h, h.max_timestamp, interval);
                    at += total;
                    valid_end = pos + at as u64;
                }
                None => break 'scan,
            }
        }
        if at == 0 {
            break;
        }
        pos += at as u64;
    }
    seg.len = valid_end;
    if seg.len == 0 {
        seg.next_offset = seg.base_offset;
    }
    Ok(())
}

/// A stored batch is valid when it validates (length, magic, CRC32C, not
/// empty) and carries the next expected offset.
fn check_stored(buf: &[u8], expected_offset: i64) -> Option<BatchHeader> {
    let h = batch::validate(buf).ok()?;
    (h.base_offset == expected_offset).then_some(h)
}
