//! Reads: whole batches by offset, and the offset for a timestamp.
//!
//! Read path: the segment by base offset, the position by the sparse index,
//! then batch headers are scanned; bytes come from the tail buffer and
//! recently written chunks when hot, else from an O_DIRECT read. Every batch
//! that comes from the file is checked (CRC-32C and the chain of base
//! offsets) before it is returned.

use std::rc::Rc;

use bytes::Bytes;

use super::readahead::{READ_AHEAD_MAX_BYTES, READ_AHEAD_STEPS};
use super::rope::Rope;
use super::state::{io_err, PartitionLog, ReadLimit, ReadResult};
use crate::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use crate::error::{EngineError, Result};
use crate::index;
use crate::io::{Storage, StorageFile, ALIGN_BYTES};

/// Bytes read at a time when scanning batch headers.
const SCAN_WINDOW_BYTES: u64 = 64 * 1024;

/// What a scan reads first for a read that wants `want` bytes: the batch
/// it looks for and the bytes after it, from an index entry up to a page
/// before the batch, to an aligned end.
fn scan_window(want: u64) -> u64 {
    SCAN_WINDOW_BYTES.max(want.saturating_add(2 * ALIGN_BYTES))
}

impl<S: Storage> PartitionLog<S> {
    /// Reads bytes `[pos, pos + len)` of the segment with base `base`
    /// (clamped to its logical length), from memory when hot, else from disk,
    /// as the pieces it was read in (no copy joins them). Also returns how
    /// many leading bytes came from the file (now, or when the log was
    /// opened): the rest were validated when they were appended and have
    /// not left memory since.
    pub(super) async fn read_range(&self, base: i64, pos: u64, len: u64) -> Result<(Rope, usize)> {
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
            let Some(seg) = st.segments.get(i) else {
                unreachable!("binary_search returned a segment index out of range");
            };
            let end = pos.saturating_add(len).min(seg.len);
            if pos >= end {
                return Ok((Rope::default(), 0));
            }
            let is_active = i.saturating_add(1) == st.segments.len();
            match (&st.tail, is_active) {
                (Some(tail), true) => {
                    let mem_start = tail.mem_start();
                    let from = pos.max(mem_start);
                    let mut out = Rope::default();
                    if from < end {
                        for piece in tail.range(from, end) {
                            out.push(piece);
                        }
                    }
                    let unchecked_end = tail.loaded_end.min(end);
                    (seg.file.clone(), mem_start.min(end), out, unchecked_end)
                }
                _ => (seg.file.clone(), end, Rope::default(), end),
            }
        };
        // Leading bytes that come from the file, now or at open.
        let from_file = unchecked_end.max(disk_end).saturating_sub(pos) as usize;
        if pos >= disk_end {
            return Ok((mem, from_file));
        }
        let from_disk = disk_end.saturating_sub(pos);
        let disk = self
            .read_file(base, &file, pos, from_disk)
            .await
            .map_err(io_err)?;
        if disk.len() as u64 != from_disk {
            return Err(EngineError::Corrupt(format!(
                "short read at {pos}: {} of {from_disk} bytes",
                disk.len(),
            )));
        }
        let mut out = disk;
        out.append(mem);
        Ok((out, from_file))
    }

    /// Makes this log's read-ahead run reach `READ_AHEAD_STEPS` steps of
    /// `step` bytes past `pos` of segment `base` (clamped to what the file
    /// holds for good and to `READ_AHEAD_MAX_BYTES`), starting with the
    /// bytes of `leftover` (already read from the file) that lie from `pos`
    /// on (see `readahead.rs`).
    fn start_read_ahead(
        &self,
        base: i64,
        pos: u64,
        step: u64,
        leftover: Option<(u64, Bytes, u64)>,
    ) {
        let Some(spawn) = self.inner.write_behind.clone() else {
            return;
        };
        let (file, end) = {
            let st = self.inner.state.borrow();
            let Ok(i) = st.segments.binary_search_by_key(&base, |s| s.base_offset) else {
                return;
            };
            let Some(seg) = st.segments.get(i) else {
                return;
            };
            let is_active = i.saturating_add(1) == st.segments.len();
            let file_end = match (&st.tail, is_active) {
                (Some(tail), true) => tail.mem_start().min(seg.len),
                _ => seg.len,
            };
            let ahead = step
                .saturating_mul(READ_AHEAD_STEPS)
                .min(READ_AHEAD_MAX_BYTES);
            (seg.file.clone(), pos.saturating_add(ahead).min(file_end))
        };
        let started = self
            .inner
            .read_ahead
            .borrow_mut()
            .extend(base, &file, pos, end, leftover, &*spawn);
        let asked = &self.inner.file_read_bytes;
        asked.set(asked.get().saturating_add(started));
    }

    /// Reads `[pos, pos + len)` of segment `base` from `file`: the leading
    /// part the read-ahead run holds (waiting for it when it is on its
    /// way), the rest with a read of its own. Short at the end of the file.
    /// The pieces stay in the run until the reader moves past them.
    async fn read_file(
        &self,
        base: i64,
        file: &Rc<S::File>,
        pos: u64,
        len: u64,
    ) -> std::io::Result<Rope> {
        let end = pos.saturating_add(len);
        let mut parts = Rope::default();
        let mut at = pos;
        while at < end {
            let piece = self.inner.read_ahead.borrow().piece_at(base, file, at);
            let Some(piece) = piece else {
                break;
            };
            match piece.bytes(at, end.saturating_sub(at)).await {
                Some(b) => {
                    at = at.saturating_add(b.len() as u64);
                    parts.push(b);
                }
                None => {
                    self.inner.read_ahead.borrow_mut().failed(&piece);
                    break;
                }
            }
        }
        if !parts.is_empty() {
            let hits = &self.inner.read_ahead_hits;
            hits.set(hits.get().saturating_add(1));
        }
        if at < end {
            let rest = file.read_at(at, end.saturating_sub(at) as usize).await?;
            let asked = &self.inner.file_read_bytes;
            asked.set(asked.get().saturating_add(end.saturating_sub(at)));
            parts.push(rest);
        }
        Ok(parts)
    }

    /// Reads from the file that a read-ahead served, in whole or in part.
    pub fn read_ahead_hits(&self) -> u64 {
        self.inner.read_ahead_hits.get()
    }

    /// Bytes this log's reads asked of its files: their own reads and
    /// their read-aheads (what went to the disk, before alignment).
    pub fn file_read_bytes(&self) -> u64 {
        self.inner.file_read_bytes.get()
    }

    /// Forgets this log's read-aheads: the bytes they read may be rewritten.
    pub(super) fn drop_read_ahead(&self) {
        self.inner.read_ahead.borrow_mut().clear();
        let drops = &self.inner.read_ahead_drops;
        drops.set(drops.get().wrapping_add(1));
    }

    /// Finds the segment holding `offset`: its base, length and the index
    /// position to scan from.
    pub(super) fn locate(&self, offset: i64) -> Option<(i64, u64, u64, i64)> {
        let st = self.inner.state.borrow();
        let i = st
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)?;
        let seg = st.segments.get(i)?;
        let rel = u32::try_from(offset.saturating_sub(seg.base_offset)).unwrap_or(u32::MAX);
        let (pos, first) = index::lookup_offset(&seg.index, rel)
            .map(|e| {
                let first = seg.base_offset.saturating_add(i64::from(e.rel()));
                (u64::from(e.pos()), first)
            })
            .unwrap_or((0, seg.base_offset));
        Some((seg.base_offset, seg.len, pos, first))
    }

    /// Scans batch headers of segment `base` from `pos` and returns the
    /// first batch for which `stop` holds, with its position and the bytes
    /// read from there on: at least `want` when available, and the whole
    /// batch when `whole` (else, for a batch larger than `want`, what was
    /// read of it: its header).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn scan(
        &self,
        base: i64,
        seg_len: u64,
        mut pos: u64,
        mut expect_offset: i64,
        want: u64,
        whole: bool,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader, Rope, usize)>> {
        let gaps = self.may_have_gaps(base);
        while pos < seg_len {
            let (window, disk_bytes) = self.read_range(base, pos, scan_window(want)).await?;
            let mut at = 0usize;
            while window.len().saturating_sub(at) >= HEADER_BYTES {
                let here = pos.saturating_add(at as u64);
                let h = BatchHeader::parse(&window.peek(at, HEADER_BYTES)).map_err(|e| {
                    EngineError::Corrupt(format!("segment {base} position {here}: {e}"))
                })?;
                // The offsets chain: a batch starts where the one before
                // ended, or later in a segment the cleaner may have thinned.
                if h.base_offset < expect_offset || (h.base_offset != expect_offset && !gaps) {
                    return Err(EngineError::Corrupt(format!(
                        "segment {base} position {here}: batch has offset {}, expected at least {expect_offset}",
                        h.base_offset
                    )));
                }
                expect_offset = h.last_offset().saturating_add(1);
                if stop(&h) {
                    let rest = window.suffix(at);
                    let batch_bytes = h.total_bytes() as u64;
                    let needed = if whole || batch_bytes <= want {
                        want.max(batch_bytes).min(seg_len.saturating_sub(here))
                    } else {
                        0
                    };
                    if rest.len() as u64 >= needed {
                        return Ok(Some((here, h, rest, disk_bytes.saturating_sub(at))));
                    }
                    let (more, more_disk_bytes) = self
                        .read_range(base, here, want.max(h.total_bytes() as u64))
                        .await?;
                    return Ok(Some((here, h, more, more_disk_bytes)));
                }
                at = at.saturating_add(h.total_bytes());
            }
            if at == 0 && window.len() < HEADER_BYTES {
                return Err(EngineError::Corrupt(format!(
                    "segment {base}: truncated header at {pos}"
                )));
            }
            pos = pos.saturating_add(at as u64);
        }
        Ok(None)
    }

    /// Reads whole batches from the one containing `offset`, up to
    /// `max_bytes`, but always the first batch even when it is larger
    /// (KIP-74), and nothing at or past the read bound, the
    /// [`high_watermark`](Self::high_watermark). `offset == log_end_offset`
    /// gives an empty result.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_limited(offset, ReadLimit::whole_first_batch(max_bytes))
            .await
    }

    /// [`read`](Self::read) within `limit`: up to the high watermark or the
    /// log end, and with the first batch returned whole or only if it fits.
    /// A first batch that does not fit gives no batch and
    /// `ReadResult::first_batch_did_not_fit`, and only its header is read.
    pub async fn read_limited(&self, offset: i64, limit: ReadLimit) -> Result<ReadResult> {
        let bound = if limit.to_end {
            self.log_end_offset()
        } else {
            self.high_watermark()
        };
        self.read_bounded(
            offset,
            limit.max_bytes,
            bound,
            limit.first_batch_whole,
            limit.split_batches,
        )
        .await
    }

    /// [`read`](Self::read) with the read bound as a parameter: no batch
    /// whose base offset is at or past `bound` is returned, and an `offset`
    /// at or past it gives an empty result. `bound` is a batch boundary
    /// (a log end offset, here or on the replicas); one past the log end
    /// reads up to the log end. The result's `high_watermark` is the bound.
    /// Offsets outside `[log start, log end]` are out of range whatever the
    /// bound, as in Kafka: a follower may fetch past a consumer's bound.
    pub(crate) async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: i64,
        first_whole: bool,
        split: bool,
    ) -> Result<ReadResult> {
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
                high_watermark: bound.min(st.log_end_offset),
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
                first_batch_did_not_fit: false,
            }
        };
        let bound = out.high_watermark;
        if offset >= bound {
            return Ok(out);
        }
        let drops = self.inner.read_ahead_drops.get();
        let Some((base, pos, bytes, disk_bytes)) = self
            .find_batch(offset, max_bytes, first_whole, bound)
            .await?
        else {
            return Ok(out);
        };
        if !first_whole {
            let first_bytes = <[u8; 4]>::try_from(&*bytes.peek(8, 4)).ok().map_or(0, |b| {
                LOG_OVERHEAD.saturating_add(i32::from_be_bytes(b).max(0) as usize)
            });
            if first_bytes > max_bytes {
                out.first_batch_did_not_fit = true;
                return Ok(out);
            }
        }
        let mut at = 0usize;
        let mut total = 0usize;
        let mut expect_offset: Option<i64> = None;
        let gaps = self.may_have_gaps(base);
        let seg_end = self.segment_end(base);
        while bytes.len().saturating_sub(at) >= LOG_OVERHEAD {
            let length_field = bytes.peek(at.saturating_add(8), 4);
            let len = i32::from_be_bytes(<[u8; 4]>::try_from(&*length_field).unwrap_or_default());
            let size = LOG_OVERHEAD.saturating_add(len.max(0) as usize);
            let end = at.saturating_add(size);
            if end > bytes.len()
                || (!out.batches.is_empty() && total.saturating_add(size) > max_bytes)
            {
                break;
            }
            let here = pos.saturating_add(at as u64);
            // Nothing at or past the read bound is served. Read from the
            // header before the batch is checked: what lies past the bound
            // may still be on its way to the disk or the replicas.
            let base_offset =
                <[u8; 8]>::try_from(&*bytes.peek(at, 8)).map_or(i64::MAX, i64::from_be_bytes);
            // Nor anything at or past the segment's end: bytes a closed
            // segment holds past the next segment's base are not part of
            // the log (its index files, not a scan, gave its length).
            if base_offset >= bound || base_offset >= seg_end {
                break;
            }
            // A batch straddling two pieces comes as its parts when the
            // caller takes them (`split`), else as one copy.
            let parts = if split {
                bytes.slices(at..end)
            } else {
                vec![bytes.slice(at..end)]
            };
            // What came from disk is checked (CRC included) before it is
            // returned; bytes still in memory were checked at append.
            let h = batch::validate_parts(&parts, at < disk_bytes).map_err(|e| {
                EngineError::Corrupt(format!("segment {base} position {here}: {e}"))
            })?;
            // The CRC does not cover baseOffset: check the offsets chain
            // (with gaps only where the cleaner may have made them).
            if expect_offset.is_some_and(|e| h.base_offset < e || (h.base_offset != e && !gaps)) {
                return Err(EngineError::Corrupt(format!(
                    "segment {base} position {here}: offset {} out of sequence",
                    h.base_offset
                )));
            }
            // A batch never crosses into the next segment, nor past the log
            // end: only this check keeps a damaged closed segment from
            // serving an offset twice.
            if h.last_offset() >= seg_end {
                return Err(EngineError::Corrupt(format!(
                    "segment {base} position {here}: batch ends at offset {}, past the segment's end {seg_end}",
                    h.last_offset()
                )));
            }
            expect_offset = Some(h.last_offset().saturating_add(1));
            total = total.saturating_add(size);
            out.batches.extend(parts);
            at = end;
        }
        if out.batches.is_empty() {
            return Err(EngineError::Corrupt(format!(
                "segment {base}: batch at offset {offset} cut short"
            )));
        }
        if disk_bytes > 0 {
            // A reader going through the log from the disk: start its next
            // steps' reads now, from what this one read past its last batch
            // on (see `readahead.rs`). Not with bytes read before a
            // truncation, retention or clean dropped the read-aheads.
            if let Some((next_base, _, next_pos, _)) =
                expect_offset.and_then(|next| self.locate(next))
            {
                let unchanged = self.inner.read_ahead_drops.get() == drops;
                // Only what lies past the last batch is kept (a copy only
                // where it straddles two pieces). It still holds what this
                // read took from the file of the budget: its slices keep
                // those buffers.
                let past = next_pos.saturating_sub(pos) as usize;
                let leftover = (unchanged && next_base == base && next_pos >= pos)
                    .then(|| (next_pos, bytes.slice(past..disk_bytes), disk_bytes as u64));
                self.start_read_ahead(next_base, next_pos, scan_window(max_bytes as u64), leftover);
            }
        }
        Ok(out)
    }

    /// The offset segment `base` ends before: the next segment's base
    /// offset, or the log end offset for the last one.
    fn segment_end(&self, base: i64) -> i64 {
        let st = self.inner.state.borrow();
        st.segments
            .iter()
            .map(|s| s.base_offset)
            .find(|&b| b > base)
            .unwrap_or(st.log_end_offset)
    }

    /// Whether segment `base` may have gaps between its batches: it was
    /// cleaned by this process, or the log is compacted (a segment cleaned
    /// before the last open). Elsewhere a batch must start where the one
    /// before it ended, which catches a corrupt base offset (outside the CRC).
    fn may_have_gaps(&self, base: i64) -> bool {
        if self.inner.config.borrow().cleanup_compact {
            return true;
        }
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .any(|s| s.base_offset == base && s.cleaned)
    }

    /// The first batch holding `offset` or, when `offset` lies in a gap a
    /// clean left, the first batch after it, below `bound`: its segment, its
    /// position and the bytes from there (the whole batch when
    /// `first_whole` or it fits in `max_bytes`). A compacted segment may end
    /// before the next one starts, so the search goes on into the next.
    async fn find_batch(
        &self,
        offset: i64,
        max_bytes: usize,
        first_whole: bool,
        bound: i64,
    ) -> Result<Option<(i64, u64, Rope, usize)>> {
        let mut at = offset;
        loop {
            let Some((base, seg_len, pos, first)) = self.locate(at) else {
                return Ok(None);
            };
            let found = self
                .scan(
                    base,
                    seg_len,
                    pos,
                    first,
                    max_bytes as u64,
                    first_whole,
                    |h| h.last_offset() >= offset,
                )
                .await?;
            if let Some((pos, h, bytes, disk_bytes)) = found {
                if h.base_offset >= bound {
                    return Ok(None);
                }
                return Ok(Some((base, pos, bytes, disk_bytes)));
            }
            // Only a cleaned segment may end before the next one starts (or
            // before the read bound). Elsewhere the offsets from `at` on are
            // lost (a damaged closed segment): an error, not a silent jump
            // over them nor an empty read below the log end.
            if !self.may_have_gaps(base) {
                return Err(EngineError::Corrupt(format!(
                    "segment {base} has no batch at or after offset {at}, below the read bound {bound}"
                )));
            }
            // The next segment's base; the log end when this one is last.
            at = self.segment_end(base);
            if at >= bound {
                return Ok(None);
            }
        }
    }

    /// The first offset whose batch max timestamp is >= `timestamp_ms`, with
    /// that timestamp; `None` when no record below the read bound (the
    /// [`high_watermark`](Self::high_watermark)) is that recent.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        self.offset_for_timestamp_bounded(timestamp_ms, self.high_watermark())
            .await
    }

    /// [`offset_for_timestamp`](Self::offset_for_timestamp) with the read
    /// bound as a parameter: an offset at or past `bound` is not returned
    /// (Kafka's ListOffsets filters by the last fetchable offset the same way).
    pub(crate) async fn offset_for_timestamp_bounded(
        &self,
        timestamp_ms: i64,
        bound: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (base, seg_len, pos, first, log_start) = {
            let st = self.inner.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= timestamp_ms) else {
                return Ok(None);
            };
            let start_rel = index::lookup_time(&seg.time_index, timestamp_ms)
                .map(|e| e.rel())
                .unwrap_or(0);
            let (pos, first) = index::lookup_offset(&seg.index, start_rel)
                .map(|e| {
                    let first = seg.base_offset.saturating_add(i64::from(e.rel()));
                    (u64::from(e.pos()), first)
                })
                .unwrap_or((0, seg.base_offset));
            (seg.base_offset, seg.len, pos, first, st.log_start_offset)
        };
        let found = self
            .scan(base, seg_len, pos, first, 0, true, |h| {
                h.max_timestamp >= timestamp_ms
            })
            .await?;
        // Within the batch, the first record at or after the timestamp when
        // the records are readable without decompressing; else the batch.
        let found = found.map(|(_, h, bytes, _)| {
            let batch = bytes.slice(0..h.total_bytes());
            match crate::batch::first_record_at_or_after(&batch, timestamp_ms) {
                Some((delta, ts)) => (
                    h.base_offset
                        .saturating_add(i64::from(delta))
                        .max(log_start),
                    ts,
                ),
                None => (h.base_offset.max(log_start), h.max_timestamp),
            }
        });
        Ok(found.filter(|&(offset, _)| offset < bound))
    }

    /// The offset and timestamp of the record with the largest timestamp
    /// (ListOffsets -3, KIP-734); `None` when that record is not below the
    /// read bound yet.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.inner.state.borrow();
        st.segments
            .iter()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.max_timestamp_offset, s.max_timestamp))
            // Kafka filters by the last fetchable offset the same way.
            .filter(|&(offset, _)| offset < st.read_bound())
    }

    /// The read bound: readers see the offsets below it, and `read`,
    /// `offset_for_timestamp`, `max_timestamp` and `wait_for_offset` stop
    /// there. On one node it is the [written offset](Self::written_offset):
    /// what the device holds, so a process crash never takes back a record
    /// a reader saw (batches are still served from the tail buffer when
    /// hot, once written). In a cluster, the high watermark (what the
    /// in-sync replicas hold, this one counting up to its written offset),
    /// set by the broker with [`set_high_watermark`](Self::set_high_watermark)
    /// (and still never past the written offset).
    pub fn high_watermark(&self) -> i64 {
        self.inner.state.borrow().read_bound()
    }

    /// Makes this log replicated: from now on readers see up to `hw` (the
    /// high watermark its leader computed over the in-sync replicas, or a
    /// follower's from its leader), capped at the written offset. The
    /// high watermark never moves backwards, nor past the log end; long
    /// polls waiting for it wake. Returns the read bound then.
    pub fn set_high_watermark(&self, hw: i64) -> i64 {
        let (before, after) = {
            let mut st = self.inner.state.borrow_mut();
            let before = st.read_bound();
            let capped = hw.min(st.log_end_offset);
            let next = st.replicated_hw.map_or(capped, |old| old.max(capped));
            st.replicated_hw = Some(next);
            (before, st.read_bound())
        };
        if after != before {
            self.wake_readers();
        }
        after
    }

    /// Whether readers are bound by a high watermark from the replicas
    /// ([`set_high_watermark`](Self::set_high_watermark)) rather than by the
    /// written offset alone.
    pub fn is_replicated(&self) -> bool {
        self.inner.state.borrow().replicated_hw.is_some()
    }

    /// Makes this log unreplicated again: readers see up to the written
    /// offset, as on one node. A leader whose in-sync replicas are itself
    /// alone reads so (a follower's high watermark from its old leader
    /// would hold readers back otherwise). Long polls wake.
    pub fn clear_high_watermark(&self) {
        let moved = {
            let mut st = self.inner.state.borrow_mut();
            let before = st.read_bound();
            st.replicated_hw = None;
            st.read_bound() != before
        };
        if moved {
            self.wake_readers();
        }
    }

    /// A follower's read (Fetch from a replica): like [`read`](Self::read)
    /// but up to the log end, past the high watermark, as Kafka's leader
    /// serves its followers.
    pub async fn read_to_end(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let end = self.log_end_offset();
        self.read_bounded(offset, max_bytes, end, true, false).await
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use super::*;
    use crate::batch::build_batch;
    use crate::config::LogConfig;
    use crate::io::sim::SimStorage;
    use crate::log::Durability;

    /// Three batches of three records: offsets 0..3, 3..6, 6..9, with
    /// timestamps 100, 200, 300.
    async fn three_batches() -> PartitionLog<SimStorage> {
        let log = PartitionLog::open_with(SimStorage::new(1), "/sim/bound", LogConfig::default())
            .await
            .unwrap();
        for ts in [100, 200, 300] {
            let b = build_batch(ts, &[b"a", b"b", b"c"]);
            log.append(&b, Durability::Written, ts).await.unwrap();
        }
        log
    }

    fn bases(r: &ReadResult) -> Vec<i64> {
        r.batches
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap().base_offset)
            .collect()
    }

    /// A cleared high watermark gives readers the written offset again
    /// (a follower's from its old leader no longer holds them back).
    #[test]
    fn a_cleared_high_watermark_reads_to_the_written_offset() {
        block_on(async {
            let log = three_batches().await;
            assert_eq!(log.set_high_watermark(3), 3);
            let r = log.read(0, 1 << 20).await.unwrap();
            assert_eq!(bases(&r), vec![0]);
            log.clear_high_watermark();
            assert_eq!(log.high_watermark(), 9);
            let r = log.read(0, 1 << 20).await.unwrap();
            assert_eq!(bases(&r), vec![0, 3, 6]);
        });
    }

    #[test]
    fn nothing_at_or_past_the_read_bound_is_read() {
        block_on(async {
            let log = three_batches().await;
            let r = log.read_bounded(0, 1 << 20, 6, true, false).await.unwrap();
            assert_eq!(
                (bases(&r), r.high_watermark, r.log_end_offset),
                (vec![0, 3], 6, 9)
            );
            let r = log.read_bounded(4, 1 << 20, 6, true, false).await.unwrap();
            assert_eq!(bases(&r), vec![3]);
            for offset in [6, 7, 9] {
                let r = log
                    .read_bounded(offset, 1 << 20, 6, true, false)
                    .await
                    .unwrap();
                assert!(r.batches.is_empty(), "read at {offset} past the bound");
            }
            assert!(matches!(
                log.read_bounded(10, 1 << 20, 6, true, false).await,
                Err(EngineError::OffsetOutOfRange { .. })
            ));
            // A bound past the log end reads to the log end.
            let r = log
                .read_bounded(0, 1 << 20, 100, true, false)
                .await
                .unwrap();
            assert_eq!((bases(&r), r.high_watermark), (vec![0, 3, 6], 9));
            // The public read's bound is the written offset: all of it here.
            assert_eq!(log.high_watermark(), log.written_offset());
            assert_eq!(log.high_watermark(), log.log_end_offset());
            let r = log.read(0, 1 << 20).await.unwrap();
            assert_eq!((bases(&r), r.high_watermark), (vec![0, 3, 6], 9));
        });
    }

    /// An append is readable once its write to the device completed, not
    /// when it is copied into the tail buffer: reads, timestamp lookups and
    /// long polls stop at the written offset, and a process crash (the log
    /// dropped, the files kept as written) keeps everything below it.
    #[test]
    fn the_read_bound_is_the_written_offset() {
        use futures_lite::future::poll_once;
        block_on(async {
            let fs = SimStorage::new(2);
            let dir = "/sim/written";
            let log = PartitionLog::open_with(fs.clone(), dir, LogConfig::default())
                .await
                .unwrap();
            let first = build_batch(100, &[b"a"]);
            log.append(&first, Durability::Written, 100).await.unwrap();
            assert_eq!((log.written_offset(), log.high_watermark()), (1, 1));
            let mut wait = Box::pin(log.wait_for_offset(1));
            assert!(poll_once(&mut wait).await.is_none());
            // In the log (offsets assigned), its write not completed.
            let second = build_batch(200, &[b"b", b"c"]);
            let mut pending = Box::pin(log.append(&second, Durability::Written, 200));
            assert!(poll_once(&mut pending).await.is_none());
            assert_eq!((log.log_end_offset(), log.high_watermark()), (3, 1));
            let r = log.read(1, 1 << 20).await.unwrap();
            assert_eq!((r.batches.len(), r.high_watermark), (0, 1));
            assert_eq!(log.offset_for_timestamp(150).await.unwrap(), None);
            assert_eq!(log.max_timestamp(), None, "max timestamp past the bound");
            assert!(
                poll_once(&mut wait).await.is_none(),
                "woke before the write"
            );
            // Once written: readable, and the long poll wakes.
            let info = pending.await.unwrap();
            assert_eq!(info.base_offset, 1);
            assert_eq!(log.high_watermark(), 3);
            assert!(poll_once(&mut wait).await.is_some());
            assert_eq!(bases(&log.read(1, 1 << 20).await.unwrap()), vec![1]);
            assert_eq!(log.max_timestamp(), Some((1, 200)));
            // A third append in flight when the process dies: what a reader
            // saw survives, however far the unwritten append got.
            let third = build_batch(300, &[b"d"]);
            let mut pending = Box::pin(log.append(&third, Durability::Written, 300));
            assert!(poll_once(&mut pending).await.is_none());
            let seen = log.high_watermark();
            drop(pending);
            drop(wait);
            drop(log);
            let log = PartitionLog::open_with(fs, dir, LogConfig::default())
                .await
                .unwrap();
            assert!(log.log_end_offset() >= seen);
            let r = log.read(0, 1 << 20).await.unwrap();
            assert_eq!(&bases(&r)[..2], &[0, 1]);
        });
    }

    #[test]
    fn timestamp_lookup_stops_at_the_read_bound() {
        block_on(async {
            let log = three_batches().await;
            let found = log.offset_for_timestamp_bounded(150, 6).await.unwrap();
            assert_eq!(found, Some((3, 200)));
            assert_eq!(
                log.offset_for_timestamp_bounded(250, 6).await.unwrap(),
                None
            );
            assert_eq!(log.offset_for_timestamp(250).await.unwrap(), Some((6, 300)));
        });
    }
}
