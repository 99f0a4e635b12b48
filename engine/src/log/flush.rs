//! Flush rounds: getting appended bytes onto the device.
//!
//! Whoever needs data on disk (a `Synced` append, a full chunk, `flush`,
//! `tick`, a roll) leads a *flush round* if none is running, else waits for
//! the running one and checks again: every append that arrives while a round
//! is in flight joins the next round, which does one write per chunk
//! (several in flight) and at most one fdatasync for all of them (group
//! commit).
//!
//! A `Written` (acks=1) append is acknowledged once its bytes are on the
//! device, not before: it leads a *write round* when none runs (else waits
//! for the running one and checks again), which writes the full chunks and,
//! once they are written, the partial tail as one padded write from the
//! tail buffer (a *snapshot*, see `tail.rs`) without an fdatasync. Appends that arrive
//! meanwhile are written together by the next round, so the data path stays
//! batched. `written_offset`, the read bound, moves as these writes
//! complete: a reader never sees a record that a process crash takes back.
//! The active segment's file is preallocated ahead of the writes here, at
//! the start of a round, while no write is in flight: ext4's fallocate
//! waits for every O_DIRECT write of the file to finish, so extending in the
//! middle of a round drained the write pipeline (about 25% of sequential
//! write throughput lost). How far ahead is `prealloc.rs`'s decision.
//! Write-behind rounds run for as long as there are chunks to write,
//! keeping writes in flight, until the preallocated space ends; a sync
//! request or a roll asks the running round to stop.
//!
//! Two rules keep the bytes on disk right however a round ends: a chunk
//! that overlaps a write in flight waits for it (the overlap rule below), and
//! `RoundGuard` un-submits every chunk not known to be written when the
//! round ends, even when its future is dropped.

use std::rc::Rc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::prealloc::refresh_free_space;
use super::segment::segment_bytes;
use super::state::{io_err, Inner, PartitionLog, State};
use super::tail::Chunk;
use crate::error::{EngineError, Result};
use crate::io::{align_down, align_up, Storage, StorageFile, ALIGN_BYTES};

/// O_DIRECT chunk writes in flight at once per log.
const MAX_INFLIGHT_WRITES: usize = 32;

/// What of a chunk still has to be written, and where: snapshots of the
/// partial tail (acks=1 and acks=all appends) have put everything below
/// `written_end` on the device already, so the chunk's write starts at the
/// block holding it (at least its last block is written). Without this,
/// every byte a snapshot wrote was written again when its chunk filled:
/// twice the produced bytes reached the disk. Returns the file position and
/// the range of the chunk's buffer to write from there.
fn unwritten_part<B>(c: &Chunk<B>, written_end: u64) -> (u64, std::ops::Range<usize>) {
    let whole = usize::try_from(c.padded_len()).unwrap_or(usize::MAX);
    let last_block = whole.saturating_sub(ALIGN_BYTES as usize);
    let skip = usize::try_from(align_down(written_end).saturating_sub(c.start))
        .unwrap_or(usize::MAX)
        .min(last_block);
    (c.start.saturating_add(skip as u64), skip..whole)
}

/// What a write in flight completes.
#[derive(Debug, Clone, Copy)]
enum Wrote {
    /// The chunk whose buffer is at this address.
    Chunk(usize),
    /// A snapshot of the partial tail from `start`, holding data to
    /// `data_end`.
    Snapshot { start: u64, data_end: u64 },
}

/// What a flush round is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Round {
    /// Writes full chunks (appends held back by `MAX_UNWRITTEN_BYTES`), and
    /// the partial tail when a `Written` append waits for it, for as long
    /// as there are any.
    Behind,
    /// Led by a `Written` append: a `Behind` round that submits nothing
    /// more once every offset below the target is written.
    Write(i64),
    /// Writes what there is when it starts (the partial tail sealed into a
    /// chunk), then fdatasyncs once.
    Sync,
}

/// Resets `flushing` (and un-submits unfinished chunks) however a round
/// ends, including when its future is dropped.
pub(super) struct RoundGuard<'a, S: Storage> {
    pub(super) inner: &'a Inner<S>,
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

impl<S: Storage> PartitionLog<S> {
    /// Writes and fdatasyncs everything appended so far.
    pub async fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.sync_to(end).await
    }

    /// Waits until every offset below `end_offset` is on the device,
    /// leading write rounds as needed. A failed write fails the caller
    /// that led the round; the chunk stays in memory for the next round.
    pub(super) async fn write_to(&self, end_offset: i64) -> Result<()> {
        let mut yielded = false;
        loop {
            let progressed = self.inner.progress.notified();
            let busy = {
                let mut st = self.inner.state.borrow_mut();
                if st.written_offset >= end_offset {
                    return Ok(());
                }
                self.check_open(&st)?;
                // A running round writes the partial tail for it too.
                st.write_wanted = st.write_wanted.max(end_offset);
                st.flushing || st.rolling
            };
            if busy {
                progressed.await;
                continue;
            }
            if !yielded {
                // Before leading: the appenders the last round woke (each
                // about to append its next batch) copy theirs first, so the
                // round writes all of them at once instead of this one alone.
                yielded = true;
                futures_lite::future::yield_now().await;
                continue;
            }
            self.flush_round(Round::Write(end_offset)).await?;
        }
    }

    /// Makes sure everything below `end_offset` gets written without
    /// waiting for it (a `Buffered` append): raises `write_wanted` and, unless
    /// one runs, spawns a writer that leads write rounds until every offset
    /// wanted is written (or the log fails: the error is the next append's).
    pub(super) fn write_in_background(&self, end_offset: i64) {
        {
            let mut st = self.inner.state.borrow_mut();
            st.write_wanted = st.write_wanted.max(end_offset);
        }
        let Some(spawn) = &self.inner.write_behind else {
            return;
        };
        if self.inner.buffered_writer.replace(true) {
            return;
        }
        let log = self.clone();
        spawn(Box::pin(async move {
            loop {
                let target = {
                    let st = log.inner.state.borrow();
                    // Never past the log end (a truncation may cut it).
                    let wanted = st.write_wanted.min(st.log_end_offset);
                    (st.written_offset < wanted).then_some(wanted)
                };
                // Cleared where the last check found nothing to write, so
                // an append after it spawns a new writer.
                let Some(target) = target else {
                    log.inner.buffered_writer.set(false);
                    return;
                };
                if let Err(e) = log.write_to(target).await {
                    tracing::warn!(dir = %log.inner.dir.display(), error = %e, "background write for acks=0 appends failed");
                    log.inner.buffered_writer.set(false);
                    return;
                }
            }
        }));
    }

    /// Seals the partial tail buffer into a chunk (see `Tail::seal_partial`).
    fn seal_partial(&self, st: &mut State<S>) {
        let chunk_bytes = self.inner.chunk_bytes as usize;
        let State { segments, tail, .. } = st;
        let (Some(seg), Some(tail)) = (segments.last_mut(), tail.as_mut()) else {
            return;
        };
        let file = &seg.file;
        tail.seal_partial(seg.len, || file.alloc_buf(chunk_bytes));
    }

    /// Waits until every offset below `end_offset` is synced, leading flush
    /// rounds as needed.
    pub(super) async fn sync_to(&self, end_offset: i64) -> Result<()> {
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
            self.flush_round(Round::Sync).await?;
        }
    }

    /// One flush round: writes the unsubmitted chunks with several O_DIRECT
    /// writes in flight. A sync round writes the chunks there are when it
    /// starts (and the partial tail), then fdatasyncs once. Other rounds go
    /// on with chunks sealed while they run, and with snapshots of the
    /// partial tail while a `Written` append waits for it, until there are
    /// none, the preallocated space ends, `stop_round` is set or (a `Write`
    /// round) its target is written; a round started while `stop_round` is
    /// set syncs. The caller must have seen `flushing == false`.
    pub(super) async fn flush_round(&self, kind: Round) -> Result<()> {
        let (file, end_offset, kind, point) = {
            let mut st = self.inner.state.borrow_mut();
            if st.flushing {
                return Ok(());
            }
            st.flushing = true;
            let kind = if st.stop_round { Round::Sync } else { kind };
            let mut point = None;
            if kind == Round::Sync {
                st.stop_round = false;
                self.seal_partial(&mut st);
                point = self.take_recovery_point(&st);
            }
            let Some(seg) = st.segments.last() else {
                return Ok(());
            };
            (seg.file.clone(), st.log_end_offset, kind, point)
        };
        let sync = kind == Round::Sync;
        let _guard = RoundGuard { inner: &self.inner };
        let started = std::time::Instant::now();
        self.inner
            .rounds
            .set(self.inner.rounds.get().wrapping_add(1));
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
            (c.preallocate, align_up(segment_bytes(&c)))
        };
        if preallocate {
            // Ahead of everything this round may write (the chunks there
            // are), before any write is in flight (see above).
            let (allocated, data_end, reach, now_ms) = {
                let st = self.inner.state.borrow();
                let allocated = st.segments.last().map_or(0, |s| s.allocated_bytes);
                let data_end = st.segments.last().map_or(0, |s| align_up(s.len));
                let reach = st.tail.as_ref().and_then(|t| {
                    t.chunks
                        .iter()
                        .filter(|c| !c.submitted)
                        .map(|c| c.start.saturating_add(c.padded_len()))
                        .max()
                });
                // A snapshot of the partial tail, for a waiting `Written`
                // append, writes up to the data's end.
                let tail_end = (!sync && st.write_wanted > st.written_offset).then_some(data_end);
                (allocated, data_end, reach.max(tail_end), st.clock_ms)
            };
            let storage = &self.inner.storage;
            refresh_free_space(storage, &self.inner.dir, now_ms);
            let target = self.inner.prealloc.borrow_mut().extension(
                storage.preallocation_budget(),
                now_ms,
                allocated,
                data_end,
                reach.unwrap_or(0).max(data_end),
                cap_bytes,
            );
            let mut allocated = allocated;
            if let Some(target) = target {
                file.preallocate(target).await.map_err(io_err)?;
                if let Some(seg) = self.inner.state.borrow_mut().segments.last_mut() {
                    seg.allocated_bytes = seg.allocated_bytes.max(target);
                }
                allocated = target;
            }
            // Where the budget left the chunks past the preallocated space,
            // the writes extend the file, and the round does not stop there.
            if allocated < cap_bytes && reach.is_none_or(|e| e <= allocated) {
                write_limit = allocated;
            }
        }
        let mut submitted = 0usize;
        // Names the writes in flight (`busy`, and what completes).
        let mut next_id = 0usize;
        // The first failed write: nothing more is submitted, and the writes
        // in flight are waited for (a dropped write could still land after
        // a later round's rewrite of the same block). RoundGuard then
        // resubmits every chunk not written.
        let mut failure: Option<std::io::Error> = None;
        loop {
            while failure.is_none() && inflight.len() < MAX_INFLIGHT_WRITES {
                let next = {
                    let mut st = self.inner.state.borrow_mut();
                    if !sync && st.stop_round {
                        break;
                    }
                    if matches!(kind, Round::Write(target) if st.written_offset >= target) {
                        break;
                    }
                    let wants_tail = st.write_wanted > st.written_offset;
                    let len = st.segments.last().map_or(0, |s| s.len);
                    let Some(tail) = st.tail.as_mut() else {
                        break;
                    };
                    let written_end = tail.written_end;
                    match tail.chunks.iter_mut().find(|c| !c.submitted) {
                        Some(c) if submitted < limit => {
                            let end = c.start.saturating_add(c.padded_len());
                            // A sync round writes its chunks wherever the
                            // preallocation ends; only other rounds stop
                            // there.
                            let outruns = !sync && end > write_limit;
                            if outruns || busy.iter().any(|&(_, s, e)| c.start < e && s < end) {
                                break;
                            }
                            c.submitted = true;
                            submitted = submitted.saturating_add(1);
                            let (start, range) = unwritten_part(c, written_end);
                            let done = Wrote::Chunk(Rc::as_ptr(&c.buf) as usize);
                            (done, start, end, c.buf.clone(), range)
                        }
                        Some(_) => break,
                        None => {
                            // The partial tail, for the `Written` appends
                            // waiting for it: once nothing is in flight and
                            // every chunk is written (see `Tail::snapshot`).
                            if sync || !wants_tail || !inflight.is_empty() {
                                break;
                            }
                            // A snapshot ends at the data's end padded.
                            if align_up(len) > write_limit {
                                break;
                            }
                            let Some((start, buf, range)) = tail.snapshot(len) else {
                                break;
                            };
                            let end = start.saturating_add(range.len() as u64);
                            (
                                Wrote::Snapshot {
                                    start,
                                    data_end: len,
                                },
                                start,
                                end,
                                buf,
                                range,
                            )
                        }
                    }
                };
                let (done, start, end, buf, range) = next;
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                busy.push((id, start, end));
                let file = file.clone();
                inflight.push(async move {
                    let result = file.write_range_at(buf, range, start).await;
                    (id, done, result)
                });
            }
            let Some((id, done, result)) = inflight.next().await else {
                break;
            };
            busy.retain(|&(b, _, _)| b != id);
            if let Err(e) = result {
                failure.get_or_insert(e);
                continue;
            }
            let mut st = self.inner.state.borrow_mut();
            if let Some(tail) = st.tail.as_mut() {
                match done {
                    Wrote::Snapshot { start, data_end } => tail.snapshot_written(start, data_end),
                    Wrote::Chunk(buf) => {
                        if let Some(c) = tail
                            .chunks
                            .iter_mut()
                            .find(|c| Rc::as_ptr(&c.buf) as usize == buf)
                        {
                            c.written = true;
                        }
                    }
                }
                tail.trim_written(|buf| file.recycle_buf(buf));
            }
            let moved = st.advance_written();
            drop(st);
            if moved {
                self.wake_readers();
            }
            // Written appends may return, and appends held back by
            // MAX_UNWRITTEN_BYTES may go on now.
            self.inner.progress.notify_all();
        }
        if let Some(e) = failure {
            return Err(io_err(e));
        }
        tracing::trace!(dir = %self.inner.dir.display(), ?kind, chunks = submitted, write_ms = started.elapsed().as_secs_f64() * 1e3, "flush round written");
        if sync {
            if let Err(e) = file.fdatasync().await {
                let mut st = self.inner.state.borrow_mut();
                st.failed = Some(e.to_string());
                tracing::error!(dir = %self.inner.dir.display(), error = %e, "fdatasync failed; log refuses appends until reopened");
                return Err(io_err(e));
            }
            {
                let mut st = self.inner.state.borrow_mut();
                // Everything the round synced was written by it.
                debug_assert!(
                    st.written_offset >= end_offset,
                    "synced past the written offset"
                );
                st.synced_offset = st.synced_offset.max(end_offset);
                st.messages_since_sync = 0;
                st.last_sync_ms = st.clock_ms;
            }
            if let Some(point) = point {
                self.save_recovery_point(point).await;
            }
        }
        Ok(())
    }
}
