//! Recovery: opening a log's segments after a clean shutdown or a crash.
//!
//! Closed segments with both index files are trusted; a closed segment
//! missing either (a crash while a roll finished it) and the active segment
//! are scanned batch by batch, and the log ends at the first torn, corrupt
//! or out-of-sequence batch. The producer state is then rebuilt from its
//! latest snapshot and the batches after it. See `FORMAT.md` for what is
//! trusted and why.
//!
//! The scan, the cut of a torn tail and the making of the active segment
//! are truncation's core (`truncate.rs`): recovery and `truncate_to` cut a
//! log the same way.

use std::path::Path;
use std::rc::Rc;

use super::files::{write_index_files, SPARE_SEGMENT_FILE};
use super::roll::create_segment;
use super::segment::{segment_name, Segment};
use super::state::{io_err, BufOf, PartitionLog, CLEAN_SHUTDOWN_FILE};
use super::tail::Tail;
use super::truncate::{activate, cut_segment_file, remove_segments, scan_segment};
use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::index;
use crate::io::{Storage, StorageFile};
use crate::producer_state;

/// Bytes read at a time when replaying batches into the producer state.
const PRODUCER_REPLAY_WINDOW_BYTES: usize = 1 << 20;

impl<S: Storage> PartitionLog<S> {
    /// Rebuilds the producer state for the log as it is now (on open, and
    /// after a truncation): the latest snapshot at or below the log end
    /// (later ones cover a tail that was cut and are deleted), then the
    /// batches after it replayed. The directory is synced after the load, so
    /// a deleted snapshot (one past the log end) cannot come back after a
    /// crash and be trusted over the log.
    pub(super) async fn restore_producer_state(&self) -> Result<()> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        let (storage, dir) = (&self.inner.storage, &self.inner.dir);
        let table = producer_state::load_latest(storage, dir, log_start, log_end)
            .await
            .map_err(io_err)?;
        storage.sync_dir(dir).await.map_err(io_err)?;
        *self.inner.producers.borrow_mut() = table;
        self.replay_producer_state().await
    }

    /// Brings the producer state up to the log end by replaying the headers
    /// of the batches past its snapshot (all of the log without one). Read
    /// up to the log end, not the readers' bound: a follower's high
    /// watermark lags its log end, and a truncation between the two must
    /// still replay every batch it keeps.
    async fn replay_producer_state(&self) -> Result<()> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        let mut offset = self.inner.producers.borrow().end_offset().max(log_start);
        let from = offset;
        while offset < log_end {
            let read = self
                .read_to_end(offset, PRODUCER_REPLAY_WINDOW_BYTES)
                .await?;
            let mut headers = Vec::with_capacity(read.batches.len());
            for b in &read.batches {
                headers.push(BatchHeader::parse(b)?);
            }
            let Some(last) = headers.last() else {
                return Err(EngineError::Corrupt(format!(
                    "producer state replay: no batch at offset {offset} below the log end {log_end}"
                )));
            };
            let next = last.last_offset().saturating_add(1);
            assert!(next > offset, "replay must move forward");
            self.inner.producers.borrow_mut().replay(headers);
            offset = next;
        }
        if log_end > from {
            tracing::debug!(dir = %self.inner.dir.display(), from, to = log_end, producers = self.inner.producers.borrow().len(), "producer state replayed");
        }
        Ok(())
    }
}

/// What `recover` found: the segments, the tail state of the active one,
/// and how many bytes of the active segment's file it scanned.
pub(super) type Recovered<S> = (Vec<Segment<<S as Storage>::File>>, Tail<BufOf<S>>, u64);

/// Opens the segments in `dir`, recovering the active one, and returns them
/// with the tail state of the active segment.
pub(super) async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &LogConfig,
    chunk_bytes: u64,
) -> Result<Recovered<S>> {
    storage.create_dir_all(dir).await.map_err(io_err)?;
    // A clean that committed is finished before the segments are read, one
    // that did not is dropped (see `clean/swap.rs`).
    super::clean::swap::recover_swaps(storage, dir)
        .await
        .map_err(io_err)?;
    let names = storage.list_dir(dir).await.map_err(io_err)?;
    // Leftovers of a crash: the spare segment, index files not yet renamed.
    for n in &names {
        if n == SPARE_SEGMENT_FILE
            || n == super::epochs::CHECKPOINT_TMP_FILE
            || n == super::recovery_point::RECOVERY_POINT_TMP_FILE
            || n == super::clean::checkpoint::CLEANER_CHECKPOINT_TMP_FILE
            || n.ends_with(".index.tmp")
            || n.ends_with(".timeindex.tmp")
        {
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
    let point = if clean {
        None
    } else {
        super::recovery_point::load(storage, dir).await
    };
    let mut scanned = 0u64;
    let mut segments: Vec<Segment<S::File>> = Vec::new();
    // Closed segments whose index files were not both written: a crash
    // while `finish_segment` ran. They are scanned like the active one.
    let mut unfinished = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i.saturating_add(1)).copied();
        if next_base.is_some() {
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
        seg.next_offset = next_base.unwrap_or(base);
        let idx = crate::io::read_whole_file(storage, &dir.join(segment_name(base, "index")))
            .await
            .unwrap_or_default();
        seg.index = index::parse_offset_index(&idx, len);
        let tidx = crate::io::read_whole_file(storage, &dir.join(segment_name(base, "timeindex")))
            .await
            .unwrap_or_default();
        let next_rel = seg.next_offset.saturating_sub(base).max(0) as u64;
        seg.time_index = index::parse_time_index(
            &tidx,
            if next_base.is_some() {
                next_rel
            } else {
                u64::MAX
            },
        );
        if let Some(last) = seg.time_index.last() {
            seg.max_timestamp = last.ts();
            seg.max_timestamp_offset = base.saturating_add(i64::from(last.rel()));
        }
        segments.push(seg);
    }
    let mut i = 0usize;
    // Every segment but the last, with the base offset of the one after it.
    while let Some(next_base) = segments.get(i.saturating_add(1)).map(|s| s.base_offset) {
        let Some(seg) = segments.get_mut(i) else {
            break;
        };
        if !unfinished.contains(&seg.base_offset) {
            i = i.saturating_add(1);
            continue;
        }
        let file_len = seg.file.len().await.map_err(io_err)?;
        scan_segment(seg, file_len, interval, false).await?;
        seg.push_time_entry();
        let base = seg.base_offset;
        tracing::info!(dir = %dir.display(), base_offset = base, logical_bytes = seg.len, file_bytes = file_len, "recovered a segment rolled just before the crash");
        // Always synced: what the scan found (and the file's length) may not
        // have been durable before, and the index files must not outlive it.
        cut_segment_file(&*seg.file, seg.len, file_len, true).await?;
        write_index_files(
            storage,
            dir,
            base,
            &index::encode_offset_index(&seg.index),
            &index::encode_time_index(&seg.time_index),
        )
        .await
        .map_err(io_err)?;
        let next_offset = seg.next_offset;
        if next_offset != next_base {
            // Its data was synced before the next segment existed, so only
            // a disk that lost synced writes gets here. Nothing after a gap
            // can be served: the log ends where this segment's data does.
            tracing::error!(dir = %dir.display(), base_offset = base, next_offset, next_base, "a rolled segment ends before the next one starts; the segments after it are removed");
            let dropped: Vec<i64> = segments
                .drain(i.saturating_add(1)..)
                .map(|s| s.base_offset)
                .collect();
            remove_segments(storage, dir, &dropped).await?;
            break;
        }
        i = i.saturating_add(1);
    }
    // Recover the active segment: scan from its last index entry, checking
    // every batch; an empty last segment after one whose roll did not
    // finish (a crash during a roll) is dropped and the one before becomes
    // active again. After a finished segment it stays: that one may have
    // been cleaned, and a cleaned segment ends where the next one starts
    // only by its base offset, not by its batches.
    loop {
        let count = segments.len();
        let prev_unfinished = count
            .checked_sub(2)
            .and_then(|i| segments.get(i))
            .is_some_and(|s| unfinished.contains(&s.base_offset));
        let Some(seg) = segments.last_mut() else {
            break;
        };
        let file_len = seg.file.len().await.map_err(io_err)?;
        // After a crash, a recovery point lets the scan start past what was
        // synced (see `recovery_point.rs`).
        let from_point = !clean
            && !unfinished.contains(&seg.base_offset)
            && point.as_ref().is_some_and(|p| p.apply(seg, file_len));
        let start = scan_segment(seg, file_len, interval, clean || from_point).await?;
        scanned = file_len.saturating_sub(start);
        if let Some(p) = point.as_ref().filter(|p| p.base_offset == seg.base_offset) {
            if seg.len < p.len {
                // Synced data is gone (a disk that lost it): appends will
                // write over what the point describes.
                tracing::error!(dir = %dir.display(), base_offset = seg.base_offset, logical_bytes = seg.len, point_bytes = p.len, "the active segment ends before its recovery point; removing the point");
                super::recovery_point::remove(storage, dir)
                    .await
                    .map_err(io_err)?;
            }
        }
        if seg.len == 0 && count > 1 && prev_unfinished {
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
            tracing::info!(dir = %dir.display(), base_offset = seg.base_offset, logical_bytes = seg.len, file_bytes = file_len, scanned_bytes = scanned, from_point, clean, "recovered active segment");
        }
        // After an unclean shutdown the file is synced even when nothing is
        // cut: what the scan found may be visible without being durable (the
        // process died, the machine did not; or an earlier open failed half
        // way), and the log reports it synced from here on.
        cut_segment_file(&*seg.file, seg.len, file_len, !clean).await?;
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
        let (seg, tail) = create_segment::<S>(storage, dir, 0, chunk_bytes).await?;
        storage.sync_dir(dir).await.map_err(io_err)?;
        return Ok((vec![seg], tail, scanned));
    }
    let Some(seg) = segments.last_mut() else {
        unreachable!()
    };
    let tail = activate(&*seg.file, seg.len, chunk_bytes).await?;
    Ok((segments, tail, scanned))
}
