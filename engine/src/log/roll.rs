//! Rolling to a new segment, the spare segment prepared for it, and the
//! finishing of the segment a roll closed.
//!
//! A roll (appends wait) syncs the active segment, captures its indexes and
//! the producer state, and makes the next segment active: the spare
//! `.next-segment`, preallocated one step in the background once the active
//! segment was half full (for partitions writing fast, see `prealloc.rs`),
//! renamed into place, or a new file. The old segment
//! is then finished in the background (trimmed, synced, index files and
//! producer snapshot written) while appends go on in the new one.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use super::files::{write_index_files, SPARE_SEGMENT_FILE};
use super::flush::Round;
use super::segment::{segment_name, Segment};
use super::state::{io_err, BufOf, Inner, PartitionLog};
use super::tail::Tail;
use crate::error::Result;
use crate::index;
use crate::io::{align_up, Storage, StorageFile};
use crate::producer_state;

/// Resets `rolling` however a roll ends, including when its future is
/// dropped, and wakes whoever waits for it.
pub(super) struct RollGuard<'a, S: Storage> {
    pub(super) inner: &'a Inner<S>,
}

impl<S: Storage> Drop for RollGuard<'_, S> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().rolling = false;
        self.inner.progress.notify_all();
    }
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

impl<S: Storage> PartitionLog<S> {
    /// Starts a new segment now (as `segment.ms` would).
    pub async fn roll_now(&self) -> Result<()> {
        self.roll().await
    }

    /// Rolls to a new segment at the log end offset: syncs the active one,
    /// writes its indexes and trims its file to the logical length.
    pub(super) async fn roll(&self) -> Result<()> {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.rolling {
                return Ok(());
            }
            st.rolling = true;
        }
        let _guard = RollGuard { inner: &self.inner };
        let started = std::time::Instant::now();
        self.settle().await?;
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
            // `settle` wrote everything: no append of the old segment waits
            // for its bytes to reach the device.
            debug_assert!(st.written_ends.is_empty() && st.written_offset == next_offset);
            st.segments.push(segment);
            st.finishing = Some(closed.base);
            if let Some(old) = st.tail.replace(tail) {
                old.give_back(|buf| closed.file.recycle_buf(buf));
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

    /// With `rolling` set (appends wait): waits out a running flush round
    /// and the finishing of a rolled segment, then writes and syncs
    /// everything appended, so the files hold the whole log.
    pub(super) async fn settle(&self) -> Result<()> {
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
            self.flush_round(Round::Sync).await?;
        }
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

    /// Starts preparing the spare segment once the active one is half full
    /// and the partition writes fast enough (its preallocation step grew to
    /// `SPARE_MIN_STEP_BYTES`), so idle and slow partitions never hold one;
    /// in the background when the log can spawn. The spare is one step
    /// long, claimed from the preallocation budget first.
    pub(super) async fn maybe_prepare_spare(&self, segment_bytes: u64) {
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
        let Some(bytes) = self
            .inner
            .prealloc
            .borrow()
            .spare_bytes(align_up(segment_bytes))
        else {
            return;
        };
        self.inner.spare_started_for.set(Some(base));
        let budget = self.inner.storage.preallocation_budget();
        if !self.inner.prealloc.borrow_mut().claim_spare(budget, bytes) {
            return;
        }
        self.inner.spare_busy.set(true);
        match &self.inner.write_behind {
            Some(spawn) => {
                let log = self.clone();
                spawn(Box::pin(async move { log.prepare_spare(bytes).await }));
            }
            None => self.prepare_spare(bytes).await,
        }
    }

    /// Creates the spare segment file, preallocated to `bytes` (claimed).
    /// Failure (a full disk) only means the roll creates the file itself.
    async fn prepare_spare(&self, bytes: u64) {
        let storage = &self.inner.storage;
        let path = self.inner.dir.join(SPARE_SEGMENT_FILE);
        let made = async {
            let file = storage.open(&path).await?;
            file.truncate(0).await?;
            file.preallocate(bytes).await?;
            Ok::<_, std::io::Error>(file)
        }
        .await;
        let closed = self.inner.state.borrow().closed;
        self.inner.spare_busy.set(false);
        let made = match made {
            Ok(file) if !closed => {
                *self.inner.spare.borrow_mut() = Some((Rc::new(file), bytes));
                return;
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "preparing the next segment failed; the roll will create it");
        }
        let _ = storage.remove_file(&path).await;
        let budget = storage.preallocation_budget();
        self.inner.prealloc.borrow_mut().release_spare(budget);
    }

    /// The next segment at `base_offset`: the spare renamed into place when
    /// there is one, else a new file.
    async fn next_segment(&self, base_offset: i64) -> Result<(Segment<S::File>, Tail<BufOf<S>>)> {
        let storage = &self.inner.storage;
        let dir = &self.inner.dir;
        let spare = self.inner.spare.borrow_mut().take();
        let budget = storage.preallocation_budget();
        if let Some((file, allocated)) = spare {
            let path = dir.join(segment_name(base_offset, "log"));
            let renamed = storage.rename(&dir.join(SPARE_SEGMENT_FILE), &path).await;
            match renamed {
                Ok(()) => {
                    // The old segment is trimmed to its data when finished;
                    // the spare's claim is now the active segment's.
                    self.inner.prealloc.borrow_mut().rolled(budget, true);
                    for ext in ["index", "timeindex"] {
                        storage
                            .remove_file(&dir.join(segment_name(base_offset, ext)))
                            .await
                            .map_err(io_err)?;
                    }
                    let tail = Tail {
                        buf: Rc::new(self.take_buf(&file)),
                        buf_start: 0,
                        chunks: VecDeque::new(),
                        loaded_end: 0,
                        written_end: 0,
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
        self.inner.prealloc.borrow_mut().rolled(budget, false);
        create_segment::<S>(storage, dir, base_offset, self.inner.chunk_bytes).await
    }
}

/// Creates a new, empty segment file. It is not preallocated: its first
/// flush round preallocates what its writes need (see `prealloc.rs`), so a
/// partition that is created and never written holds no disk.
pub(super) async fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    base_offset: i64,
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
    let buf = file.alloc_buf(chunk_bytes as usize);
    let tail = Tail {
        buf: Rc::new(buf),
        buf_start: 0,
        chunks: VecDeque::new(),
        loaded_end: 0,
        written_end: 0,
    };
    Ok((Segment::new(base_offset, Rc::new(file)), tail))
}
