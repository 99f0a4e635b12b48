//! Truncation: removing every record at or past an offset, and the cut that
//! recovery makes at a torn tail. One code path for both: `truncate_to`
//! (which a follower truncating to its leader's epoch will call) and
//! `recover` share the scan that finds a segment's batches
//! (`scan_segment`), the cut of its file (`cut_segment_file`), the removal
//! of the segments past the cut (`remove_segments`), the making of the new
//! active segment (`activate`) and the rebuild of the producer state
//! (`restore_producer_state`, in `recover.rs`).
//!
//! The rule: a log ends at a batch boundary. `truncate_to(offset)` removes
//! every batch that holds an offset at or past `offset`, so when `offset`
//! falls inside a batch the log ends at the start of that batch, below
//! `offset` (Kafka only ever truncates to an offset that starts a batch:
//! a log end or an epoch's end offset, so there both agree).
//!
//! Order of the durable steps, so that a crash at any point recovers to a
//! prefix of the log as it was before (the truncation may or may not have
//! happened; nothing else is lost):
//! 1. everything appended is synced, so the files hold the whole log;
//! 2. the recovery point is removed (the directory synced), and the index
//!    files of the segment that will hold the new end are removed
//!    (and the directory synced) unless it is the active one: recovery then
//!    scans that segment instead of trusting indexes that describe more
//!    than it will hold, and drops any segment after it that does not
//!    continue it;
//! 3. the segments past it are removed, the directory synced;
//! 4. its file is cut at the new end and fdatasynced;
//! 5. producer snapshots past the new end are deleted (the directory
//!    synced), before any append can move the log end past them again;
//! 6. the leader epoch checkpoint loses the epochs that started at or past
//!    the new end (the open after a crash drops them too).
//!
//! While a truncation runs, appends, rolls and other truncations wait
//! (it holds the same `rolling` flag as a roll); reads go on and see the new
//! end as soon as the segments are cut in memory, before the files are.

use std::path::Path;
use std::rc::Rc;

use super::roll::RollGuard;
use super::segment::{segment_name, Segment};
use super::state::{io_err, PartitionLog};
use super::tail::Tail;
use crate::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use crate::error::{EngineError, Result};
use crate::io::{align_down, IoBuf, Storage, StorageFile};

/// Bytes read at a time when scanning a segment's file.
const RECOVERY_WINDOW_BYTES: u64 = 1 << 20;

impl<S: Storage> PartitionLog<S> {
    /// Removes every record at offset `offset` or later (see the module doc
    /// for the rule when `offset` falls inside a batch) and makes that
    /// durable: dropped segments are deleted, the segment holding the new
    /// end is cut and becomes the active one, the tail buffer starts at the
    /// new end, the producer state is rebuilt as recovery does. Returns the
    /// new log end offset. An `offset` at or past the log end changes
    /// nothing; one below the log start is out of range.
    ///
    /// A failure after the first segment changed leaves the log refusing
    /// appends until it is reopened; recovery then finds a prefix of the
    /// log as it was, cut or not.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        if let Some(log_end) = self.nothing_to_truncate(offset)? {
            return Ok(log_end);
        }
        // Appends, rolls and other truncations wait from here.
        loop {
            let progressed = self.inner.progress.notified();
            {
                let mut st = self.inner.state.borrow_mut();
                self.check_open(&st)?;
                if !st.rolling && !st.cleaning {
                    st.rolling = true;
                    break;
                }
            }
            progressed.await;
        }
        let _guard = RollGuard { inner: &self.inner };
        self.settle().await?;
        if let Some(log_end) = self.nothing_to_truncate(offset)? {
            return Ok(log_end);
        }
        // The recovery point describes bytes the cut is about to change.
        self.forget_recovery_point().await?;
        self.lower_first_dirty(offset).await?;
        let segment = self.cut_segment(offset).await?;
        let end_offset = segment.next_offset;
        let base = segment.base_offset;
        self.forget_index_files(base).await?;
        let (file, len) = (segment.file.clone(), segment.len);
        let dropped = self.cut_in_memory(segment).await?;
        // What a read-ahead holds past the cut is about to be written again.
        self.drop_read_ahead();
        // From here memory and disk differ until the cut is on disk.
        let cut = self.cut_on_disk(&file, len, &dropped).await;
        if let Err(e) = &cut {
            let mut st = self.inner.state.borrow_mut();
            st.failed
                .get_or_insert_with(|| format!("truncation failed: {e}"));
            tracing::error!(dir = %self.inner.dir.display(), offset, error = %e, "truncation failed; log refuses appends until reopened");
        }
        cut?;
        // Epochs that started past the new end are gone with their batches
        // (a crash before this write drops them at the next open).
        {
            let mut e = self.inner.epochs.borrow_mut();
            if e.cache.truncate_from_end(end_offset) {
                e.changed();
            }
        }
        self.save_epochs().await?;
        tracing::info!(dir = %self.inner.dir.display(), offset, log_end_offset = end_offset, base_offset = base, "log truncated");
        Ok(end_offset)
    }

    /// `Some(log end)` when `offset` is at or past the log end (nothing to
    /// do); an error when it is below the log start or the log is closed.
    fn nothing_to_truncate(&self, offset: i64) -> Result<Option<i64>> {
        let st = self.inner.state.borrow();
        self.check_open(&st)?;
        if offset >= st.log_end_offset {
            return Ok(Some(st.log_end_offset));
        }
        if offset < st.log_start_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: st.log_start_offset,
                log_end: st.log_end_offset,
            });
        }
        Ok(None)
    }

    /// The segment that holds `offset`, as it is once cut before the batch
    /// holding `offset`: its length, next offset and indexes rebuilt by the
    /// scan recovery uses. Reads only.
    async fn cut_segment(&self, offset: i64) -> Result<Segment<S::File>> {
        let Some((base, seg_len, pos, first)) = self.locate(offset) else {
            return Err(EngineError::Corrupt(format!(
                "truncation: no segment holds offset {offset}"
            )));
        };
        let found = self
            .scan(base, seg_len, pos, first, 0, true, |h| {
                h.last_offset() >= offset
            })
            .await?;
        let Some((cut_pos, batch, _, _)) = found else {
            return Err(EngineError::Corrupt(format!(
                "truncation: no batch holds offset {offset} in segment {base}"
            )));
        };
        let (file, index, time_index) = {
            let st = self.inner.state.borrow();
            let seg = st
                .segments
                .iter()
                .find(|s| s.base_offset == base)
                .ok_or_else(|| EngineError::Corrupt(format!("segment {base} went away")))?;
            let index = seg
                .index
                .iter()
                .copied()
                .filter(|e| (e.pos() as u64) < cut_pos)
                .collect();
            (seg.file.clone(), index, seg.time_index.clone())
        };
        let mut segment = Segment::new(base, file);
        segment.index = index;
        segment.time_index = time_index;
        let interval = self.inner.config.borrow().index_interval_bytes as u64;
        scan_segment(&mut segment, cut_pos, interval, true).await?;
        if segment.len != cut_pos || segment.next_offset != batch.base_offset {
            return Err(EngineError::Corrupt(format!(
                "truncation: segment {base} holds {} bytes up to offset {}, expected {cut_pos} up to {}",
                segment.len, segment.next_offset, batch.base_offset
            )));
        }
        Ok(segment)
    }

    /// Removes the index files of segment `base` unless it is the active
    /// one (which has none): they describe more than it will hold, and
    /// without them recovery scans it (step 2 of the module doc).
    async fn forget_index_files(&self, base: i64) -> Result<()> {
        let active = self
            .inner
            .state
            .borrow()
            .segments
            .last()
            .map(|s| s.base_offset);
        if active == Some(base) {
            return Ok(());
        }
        let (storage, dir) = (&self.inner.storage, &self.inner.dir);
        for ext in ["index", "timeindex"] {
            storage
                .remove_file(&dir.join(segment_name(base, ext)))
                .await
                .map_err(io_err)?;
        }
        storage.sync_dir(dir).await.map_err(io_err)
    }

    /// Makes `segment` (cut by `cut_segment`) the end of the log in memory,
    /// so readers see the new end at once; returns the base offsets of the
    /// segments dropped after it. The tail buffer goes: reads go to the
    /// file until `cut_on_disk` loads the new one. Fails, changing nothing,
    /// when retention deleted the segment meanwhile.
    async fn cut_in_memory(&self, segment: Segment<S::File>) -> Result<Vec<i64>> {
        // No flush round may run while the segments change under it. None
        // has anything to write after `settle`, but one may have started
        // since: wait it out, then change the state with no await between.
        loop {
            let progressed = self.inner.progress.notified();
            if !self.inner.state.borrow().flushing {
                break;
            }
            progressed.await;
        }
        let (base, end_offset) = (segment.base_offset, segment.next_offset);
        let file = segment.file.clone();
        let mut st = self.inner.state.borrow_mut();
        let Some(i) = st.segments.iter().position(|s| s.base_offset == base) else {
            return Err(EngineError::OffsetOutOfRange {
                offset: end_offset,
                log_start: st.log_start_offset,
                log_end: st.log_end_offset,
            });
        };
        let dropped = st
            .segments
            .drain(i.saturating_add(1)..)
            .map(|s| s.base_offset)
            .collect();
        if let Some(slot) = st.segments.get_mut(i) {
            *slot = segment;
        }
        st.log_end_offset = end_offset;
        st.synced_offset = st.synced_offset.min(end_offset);
        // Everything was written by `settle`; the new tail starts written.
        st.written_offset = st.written_offset.min(end_offset);
        st.replicated_hw = st.replicated_hw.map(|hw| hw.min(end_offset));
        st.write_wanted = st.write_wanted.min(end_offset);
        st.written_ends.clear();
        st.messages_since_sync = 0;
        // Everything was written by `settle`: the buffers go back to the
        // storage.
        if let Some(old) = st.tail.take() {
            debug_assert!(old.chunks.iter().all(|c| c.written));
            old.give_back(|buf| file.recycle_buf(buf));
        }
        Ok(dropped)
    }

    /// Makes the cut durable (steps 3 to 5 of the module doc): removes the
    /// `dropped` segments, cuts `file` at `len`, loads the new tail and
    /// rebuilds the producer state.
    async fn cut_on_disk(&self, file: &S::File, len: u64, dropped: &[i64]) -> Result<()> {
        let (storage, dir) = (&self.inner.storage, &self.inner.dir);
        remove_segments(storage, dir, dropped).await?;
        let file_len = file.len().await.map_err(io_err)?;
        cut_segment_file(file, len, file_len, true).await?;
        let tail = activate(file, len, self.inner.chunk_bytes).await?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.tail = Some(tail);
            if let Some(seg) = st.segments.last_mut() {
                seg.allocated_bytes = 0;
            }
        }
        // The cut gave back what the segment held past its data.
        let budget = self.inner.storage.preallocation_budget();
        self.inner.prealloc.borrow_mut().reset(budget, true);
        self.restore_producer_state().await?;
        storage.sync_dir(dir).await.map_err(io_err)
    }
}

/// Removes the files of the segments with these base offsets (taken off the
/// end of the log) and syncs the directory.
pub(super) async fn remove_segments<S: Storage>(
    storage: &S,
    dir: &Path,
    bases: &[i64],
) -> Result<()> {
    if bases.is_empty() {
        return Ok(());
    }
    for &base in bases {
        for ext in ["log", "index", "timeindex"] {
            storage
                .remove_file(&dir.join(segment_name(base, ext)))
                .await
                .map_err(io_err)?;
        }
    }
    storage.sync_dir(dir).await.map_err(io_err)
}

/// Cuts a segment's file (now `file_len` bytes) at `len`, the end of its
/// last whole batch, and makes that durable. With `sync_anyway` the file is
/// synced even when nothing is cut: what a scan found may have been visible
/// without being durable.
pub(super) async fn cut_segment_file<F: StorageFile>(
    file: &F,
    len: u64,
    file_len: u64,
    sync_anyway: bool,
) -> Result<()> {
    if len != file_len {
        file.truncate(len).await.map_err(io_err)?;
    }
    if len != file_len || sync_anyway {
        file.fdatasync().await.map_err(io_err)?;
    }
    Ok(())
}

/// Makes a segment `len` bytes long the active one, after recovery or a
/// truncation: loads its last partial block into a new tail buffer, which
/// the next write rewrites. The file is not preallocated here (its first
/// flush round does that, see `prealloc.rs`), so opening a log claims no
/// disk.
pub(super) async fn activate<F: StorageFile>(
    file: &F,
    len: u64,
    chunk_bytes: u64,
) -> Result<Tail<F::Buf>> {
    let loaded_end = len;
    let buf_start = align_down(len);
    let mut buf = file.alloc_buf(chunk_bytes as usize);
    let partial = len.saturating_sub(buf_start) as usize;
    if partial > 0 {
        let head = file.read_at(buf_start, partial).await.map_err(io_err)?;
        let Some(dest) = buf.as_mut_slice().get_mut(..head.len()) else {
            return Err(EngineError::Corrupt(
                "the last block exceeds a chunk".into(),
            ));
        };
        if head.len() != partial {
            return Err(EngineError::Corrupt("short read of the last block".into()));
        }
        dest.copy_from_slice(&head);
    }
    let tail = Tail {
        buf: Rc::new(buf),
        buf_start,
        chunks: std::collections::VecDeque::new(),
        loaded_end,
        // What was read back from the file is on the device.
        written_end: len,
    };
    Ok(tail)
}

/// Scans `seg` from its last trusted index entry to the first torn, corrupt
/// or out-of-sequence batch (or to `file_len`) and sets its logical length,
/// next offset and index tail accordingly. Recovery cuts a segment where
/// this ends; `truncate_to` uses it to rebuild the indexes below its cut.
///
/// The active segment's index files are only known to be complete and in
/// agreement after a clean shutdown (they are written at roll and close).
/// After a crash they may be left over from a roll that failed half way
/// (the `.index` written, the `.timeindex` not), so both are rebuilt from
/// the first batch: starting at a stale index entry would lose the maximum
/// timestamp of the batches before it. The exception is a recovery point
/// (`recovery_point.rs`): its entries and time entries were taken together
/// and cover only synced bytes, so a crash recovery may trust them.
///
/// Returns the position the scan started at.
pub(super) async fn scan_segment<F: StorageFile>(
    seg: &mut Segment<F>,
    file_len: u64,
    interval: u64,
    indexes_trusted: bool,
) -> Result<u64> {
    if !indexes_trusted {
        seg.index.clear();
        seg.time_index.clear();
    }
    // Trust the last index entry only if a batch with the expected offset
    // starts there; otherwise rebuild the whole index.
    let mut start = (0u64, seg.base_offset);
    while let Some(last) = seg.index.last().copied() {
        let expect = seg.base_offset.saturating_add(i64::from(last.rel()));
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
    let started_at = pos;
    seg.next_offset = expected;
    seg.time_index
        .retain(|e| seg.base_offset.saturating_add(i64::from(e.rel())) < expected);
    seg.bytes_since_index = 0;
    seg.max_timestamp = seg.time_index.last().map(|e| e.ts()).unwrap_or(-1);
    seg.max_timestamp_offset = seg
        .time_index
        .last()
        .map(|e| seg.base_offset.saturating_add(i64::from(e.rel())))
        .unwrap_or(-1);
    let mut valid_end = pos;
    'scan: while pos < file_len {
        let window = seg
            .file
            .read_at(
                pos,
                RECOVERY_WINDOW_BYTES.min(file_len.saturating_sub(pos)) as usize,
            )
            .await
            .map_err(io_err)?;
        let mut at = 0usize;
        loop {
            let rest = window.get(at..).unwrap_or_default();
            let Some(length_field) = rest.get(8..LOG_OVERHEAD) else {
                break;
            };
            let len = i32::from_be_bytes(<[u8; 4]>::try_from(length_field).unwrap_or_default());
            let total = match usize::try_from(len) {
                Ok(len) if len >= HEADER_BYTES - LOG_OVERHEAD => LOG_OVERHEAD.saturating_add(len),
                _ => break 'scan,
            };
            let batch_pos = pos.saturating_add(at as u64);
            if batch_pos.saturating_add(total as u64) > file_len {
                break 'scan;
            }
            let Some(batch) = rest.get(..total) else {
                if at == 0 {
                    // One batch larger than the window: read it whole.
                    let whole = seg.file.read_at(pos, total).await.map_err(io_err)?;
                    match check_stored(&whole, seg.next_offset) {
                        Some(h) => {
                            seg.track_batch(pos, &h, h.max_timestamp, interval);
                            pos = pos.saturating_add(total as u64);
                            valid_end = pos;
                            continue 'scan;
                        }
                        None => break 'scan,
                    }
                }
                break;
            };
            match check_stored(batch, seg.next_offset) {
                Some(h) => {
                    seg.track_batch(batch_pos, &h, h.max_timestamp, interval);
                    at = at.saturating_add(total);
                    valid_end = pos.saturating_add(at as u64);
                }
                None => break 'scan,
            }
        }
        if at == 0 {
            break;
        }
        pos = pos.saturating_add(at as u64);
    }
    seg.len = valid_end;
    if seg.len == 0 {
        seg.next_offset = seg.base_offset;
    }
    Ok(started_at)
}

/// A stored batch is valid when it validates (length, magic, CRC32C, not
/// empty) and carries the next expected offset.
fn check_stored(buf: &[u8], expected_offset: i64) -> Option<BatchHeader> {
    let h = batch::validate(buf).ok()?;
    (h.base_offset == expected_offset).then_some(h)
}
