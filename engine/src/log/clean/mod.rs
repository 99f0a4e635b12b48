//! The log cleaner: compaction of a `cleanup.policy=compact` log, after
//! Kafka's `LogCleaner`, run by the shard that owns the log.
//!
//! What a clean keeps, segment by segment, for the closed segments up to
//! the end of the dirty part it took in (the active segment, and a segment
//! still being finished by a roll, are never touched):
//! - the last record of each key, at its original offset: offsets are never
//!   renumbered, readers step over the gaps;
//! - a tombstone (a null value) until `delete.retention.ms` after the clean
//!   that first saw it (Kafka's KIP-534: that clean stamps the delete
//!   horizon into the batch, see `retain`), so at least until the next one;
//! - whole: control batches, the last batch of each producer the log still
//!   tracks (so idempotent-producer state survives a restart), and batches
//!   whose records it cannot read (an unknown codec, records that do not
//!   parse or inflate past the bound; it reads uncompressed records and
//!   all of Kafka's codecs, `codec.rs`);
//! - a batch with some records gone is rebuilt with the same header fields
//!   (base offset, lastOffsetDelta, timestamps, producer id, epoch, base
//!   sequence) and recompressed with its codec; a batch with none left goes.
//!   Records without a key go, as in Kafka.
//!
//! When: the log's *first dirty offset* (kept in `cleaner-offset-checkpoint`,
//! `checkpoint.rs`; without a usable one every closed segment counts as
//! dirty after an open) splits its closed segments into a clean part and a
//! dirty part. The dirty part ends before the first segment whose
//! newest timestamp is within `min.compaction.lag.ms`. A clean takes only
//! segments wholly below the high watermark (the read bound), as Kafka's
//! cleaner stops at the last stable offset: a leader that cleaned a
//! committed record away because an uncommitted one superseded it, and then
//! lost its uncommitted tail to a new leader, would hold neither. A clean runs when the
//! dirty part is at least `min.cleanable.dirty.ratio` of the closed bytes,
//! when its first segment's newest timestamp is older than
//! `max.compaction.lag.ms`, or when a kept tombstone is due for removal.
//!
//! How: the keys of the dirty segments go into an offset map (key to its
//! last offset), segment by segment while the map fits the dedupe buffer
//! (at least one segment per clean). The map also counts, for each dirty
//! batch, its records that are still their key's last: a dirty segment
//! whose batches all come to none (and none of which must stay whole) is
//! known to clean down to nothing, and is not read again. Then every closed
//! segment up to the map's end is rewritten, consecutive segments grouped while their sizes
//! fit `segment.bytes`, each group into one segment written aside and
//! swapped in by rename (`swap.rs`: a crash at any point leaves a readable,
//! correct log). The pacer the caller gives bounds the I/O rate and yields
//! to the data path.

use std::collections::HashMap;

use super::files::write_index_files_as;
use super::segment::segment_name;
use super::state::{io_err, Inner, PartitionLog};
use crate::batch::BatchHeader;
use crate::config::{CleanerConfig, LogConfig};
use crate::error::{EngineError, Result};
use crate::index;
use crate::io::Storage;
use crate::records::{parse_records, rebuild_batch_with_horizon, records_bytes};

pub(super) mod checkpoint;
mod pacer;
mod rewrite;
pub(crate) mod swap;

pub use pacer::{NoPacing, Pacer};

use rewrite::{CleanedWriter, Cursor};

/// What one clean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// The clean covered the closed segments below this offset.
    pub end_offset: i64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub batches_rebuilt: u64,
    /// Dirty segments the rewrite skipped unread: the offset map showed
    /// that nothing of them stays.
    pub segments_unread: usize,
}

/// Key to the offset of its last record in the dirty part, and the index
/// (in `Lives`) of the batch that holds it.
type OffsetMap = HashMap<Vec<u8>, (i64, u32)>;

/// What the map costs per key beyond the key's bytes (the offset, the
/// batch index, the vector and the table's slot).
const MAP_ENTRY_OVERHEAD_BYTES: u64 = 56;

/// What the map costs per dirty batch (its `BatchLife`).
const BATCH_LIFE_BYTES: u64 = 32;

/// A dirty batch as the offset map saw it.
#[derive(Debug, Clone, Copy)]
struct BatchLife {
    /// Base offset of its segment.
    segment: i64,
    base_offset: i64,
    producer_id: i64,
    /// Its records that are their key's last record so far.
    live: u32,
    records: u32,
    /// Kept whole whatever its records: a control batch, or one whose
    /// records cannot be read.
    whole: bool,
}

/// Every dirty batch the offset map covers, in offset order.
type Lives = Vec<BatchLife>;

/// A record of batch `batch` is no longer its key's last.
fn superseded(lives: &mut Lives, batch: u32) {
    if let Some(b) = lives.get_mut(batch as usize) {
        b.live = b.live.saturating_sub(1);
    }
}

/// A closed segment as the planner saw it.
#[derive(Debug, Clone, Copy)]
struct SegmentInfo {
    base: i64,
    len: u64,
    next_offset: i64,
    max_timestamp: i64,
}

/// Resets `cleaning` however a clean ends and wakes whoever waits for it.
struct CleaningGuard<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<S: Storage> Drop for CleaningGuard<'_, S> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().cleaning = false;
        self.inner.progress.notify_all();
    }
}

/// Which batches of a segment a clean keeps.
enum Kept {
    Whole,
    Rebuilt(Vec<u8>),
    Nothing,
}

impl<S: Storage> PartitionLog<S> {
    /// The cleaner's first dirty offset (see the module doc).
    pub fn first_dirty_offset(&self) -> i64 {
        self.inner
            .cleaner
            .borrow()
            .first_dirty
            .max(self.log_start_offset())
    }

    /// Before a truncation to `offset`: the first dirty offset comes down
    /// to it, on disk first, so that records appended again past `offset`
    /// never count as clean (a crash after this and before the cut leaves
    /// a checkpoint behind the log, which is safe).
    pub(super) async fn lower_first_dirty(&self, offset: i64) -> Result<()> {
        let lowered = {
            let mut c = self.inner.cleaner.borrow_mut();
            let lowered = c.first_dirty > offset;
            c.first_dirty = c.first_dirty.min(offset);
            lowered
        };
        if lowered {
            checkpoint::save(&self.inner.storage, &self.inner.dir, offset)
                .await
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// Cleans the log when it is due (see the module doc). `None`: nothing
    /// to do (not compacted, not due, or a clean already running).
    pub async fn clean(
        &self,
        now_ms: i64,
        cleaner: &CleanerConfig,
        pacer: &mut impl Pacer,
    ) -> Result<Option<CleanStats>> {
        let config = self.inner.config.borrow().clone();
        if !config.cleanup_compact {
            return Ok(None);
        }
        let Some((closed, dirty_from)) = self.plan(now_ms, &config) else {
            return Ok(None);
        };
        {
            let mut st = self.inner.state.borrow_mut();
            self.check_open(&st)?;
            if st.cleaning {
                return Ok(None);
            }
            st.cleaning = true;
        }
        let _guard = CleaningGuard { inner: &self.inner };
        let first_dirty = self.first_dirty_offset();
        let (map, lives, map_end) = self
            .build_offset_map(&closed, dirty_from, cleaner.dedupe_buffer_bytes, pacer)
            .await?;
        let dead = self.dead_segments(&lives);
        let map_end = map_end.max(first_dirty);
        let targets: Vec<SegmentInfo> = closed
            .iter()
            .copied()
            .filter(|s| s.next_offset <= map_end)
            .collect();
        let mut stats = CleanStats {
            end_offset: map_end,
            segments_before: targets.len(),
            bytes_before: targets.iter().map(|s| s.len).sum(),
            ..CleanStats::default()
        };
        let mut due: Option<i64> = None;
        for group in groups(&targets, &config) {
            let ctx = GroupCtx {
                map: &map,
                dead: &dead,
                now_ms,
                delete_retention_ms: config.delete_retention_ms,
                interval: u64::from(config.index_interval_bytes),
            };
            let len = self
                .clean_group(group, &ctx, &mut stats, &mut due, pacer)
                .await?;
            stats.segments_after = stats.segments_after.saturating_add(1);
            stats.bytes_after = stats.bytes_after.saturating_add(len);
        }
        let (before, after) = {
            let mut c = self.inner.cleaner.borrow_mut();
            let before = c.first_dirty;
            c.first_dirty = c.first_dirty.max(map_end);
            c.tombstones_due_ms = due;
            (before, c.first_dirty)
        };
        // After the swaps: the file never claims more than is on disk. A
        // failed write only costs a rewrite after the next open.
        let saved = if after == before {
            Ok(())
        } else {
            checkpoint::save(&self.inner.storage, &self.inner.dir, after).await
        };
        if let Err(e) = saved {
            tracing::warn!(dir = %self.inner.dir.display(), first_dirty = after, error = %e, "writing the cleaner checkpoint failed");
        }
        tracing::debug!(dir = %self.inner.dir.display(), ?stats, "log cleaned");
        Ok(Some(stats))
    }

    /// The closed segments a clean may touch and the index of the first
    /// dirty one, when a clean is due.
    fn plan(&self, now_ms: i64, config: &LogConfig) -> Option<(Vec<SegmentInfo>, usize)> {
        let first_dirty = self.first_dirty_offset();
        let tombstones_due = self
            .inner
            .cleaner
            .borrow()
            .tombstones_due_ms
            .is_some_and(|t| now_ms >= t);
        let st = self.inner.state.borrow();
        if st.closed || st.failed.is_some() || st.cleaning {
            return None;
        }
        let count = st.segments.len().saturating_sub(1);
        let read_bound = st.read_bound();
        let mut closed = Vec::new();
        for s in st.segments.iter().take(count) {
            if st.finishing == Some(s.base_offset) || s.next_offset > read_bound {
                break;
            }
            // Only segments all of whose records are older than the lag.
            let young = config.min_compaction_lag_ms > 0
                && s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) < config.min_compaction_lag_ms;
            if young && s.next_offset > first_dirty {
                break;
            }
            closed.push(SegmentInfo {
                base: s.base_offset,
                len: s.len,
                next_offset: s.next_offset,
                max_timestamp: s.max_timestamp,
            });
        }
        let dirty_from = closed.partition_point(|s| s.next_offset <= first_dirty);
        let (clean, dirty) = closed.split_at(dirty_from);
        let clean_bytes: u64 = clean.iter().map(|s| s.len).sum();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.len).sum();
        let total = clean_bytes.saturating_add(dirty_bytes);
        let ratio_due = dirty_bytes > 0
            && (dirty_bytes as f64) >= config.min_cleanable_dirty_ratio * (total as f64);
        let lag_due = dirty.first().is_some_and(|s| {
            dirty_bytes > 0
                && s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) > config.max_compaction_lag_ms
        });
        let due = ratio_due || lag_due || (tombstones_due && !closed.is_empty());
        due.then_some((closed, dirty_from))
    }

    /// Reads the keys of the dirty segments into the offset map while it
    /// fits `budget_bytes` (at least one segment); returns it with the
    /// dirty batches it covers and the end offset of the last segment it
    /// holds.
    async fn build_offset_map(
        &self,
        closed: &[SegmentInfo],
        dirty_from: usize,
        budget_bytes: u64,
        pacer: &mut impl Pacer,
    ) -> Result<(OffsetMap, Lives, i64)> {
        let mut map = OffsetMap::new();
        let mut lives = Lives::new();
        let mut map_bytes = 0u64;
        let mut end = 0i64;
        for seg in closed.iter().skip(dirty_from) {
            let first_life = lives.len();
            let mut keys = OffsetMap::new();
            let mut cur = Cursor::new(seg.base, seg.len);
            while !cur.done() {
                for (h, bytes) in self.next_batches(&mut cur, pacer).await? {
                    pacer.breathe().await;
                    let index = u32::try_from(lives.len()).unwrap_or(u32::MAX);
                    let mut life = BatchLife {
                        segment: seg.base,
                        base_offset: h.base_offset,
                        producer_id: h.producer_id,
                        live: 0,
                        records: u32::try_from(h.record_count).unwrap_or(0),
                        whole: true,
                    };
                    // A batch whose records cannot be read adds no key: the
                    // records it may supersede elsewhere are kept.
                    let records = (!h.is_control())
                        .then(|| records_bytes(&bytes).ok())
                        .flatten();
                    let parsed = records
                        .as_ref()
                        .and_then(|r| parse_records(r, h.record_count).ok());
                    if let Some(parsed) = parsed {
                        life.whole = false;
                        for r in parsed {
                            let Some(k) = r.key else {
                                continue;
                            };
                            let offset = h.base_offset.saturating_add(i64::from(r.offset_delta));
                            life.live = life.live.saturating_add(1);
                            match keys.get_mut(k) {
                                Some(last) => {
                                    let before = last.1;
                                    *last = (offset, index);
                                    if before == index {
                                        life.live = life.live.saturating_sub(1);
                                    } else {
                                        superseded(&mut lives, before);
                                    }
                                }
                                None => {
                                    keys.insert(k.to_vec(), (offset, index));
                                }
                            }
                        }
                    }
                    lives.push(life);
                }
            }
            let added: u64 = keys
                .keys()
                .filter(|k| !map.contains_key(*k))
                .map(|k| (k.len() as u64).saturating_add(MAP_ENTRY_OVERHEAD_BYTES))
                .sum::<u64>()
                .saturating_add(
                    (lives.len().saturating_sub(first_life) as u64)
                        .saturating_mul(BATCH_LIFE_BYTES),
                );
            if !map.is_empty() && map_bytes.saturating_add(added) > budget_bytes {
                lives.truncate(first_life);
                break;
            }
            map_bytes = map_bytes.saturating_add(added);
            for (k, v) in keys {
                if let Some((_, before)) = map.insert(k, v) {
                    superseded(&mut lives, before);
                }
            }
            end = seg.next_offset;
        }
        Ok((map, lives, end))
    }

    /// The dirty segments the offset map covers whose batches all clean
    /// down to nothing (see `retain`): no record is its key's last, none is
    /// kept whole, none is the last batch of a producer the log tracks.
    /// The rewrite does not read them.
    fn dead_segments(&self, lives: &Lives) -> HashMap<i64, u64> {
        let mut dead: HashMap<i64, u64> = HashMap::new();
        let mut alive: Vec<i64> = Vec::new();
        for b in lives {
            let keeps = b.whole
                || b.live > 0
                || (b.producer_id >= 0 && self.is_last_of_producer(b.producer_id, b.base_offset));
            if keeps {
                alive.push(b.segment);
            } else {
                let records = dead.entry(b.segment).or_default();
                *records = records.saturating_add(u64::from(b.records));
            }
        }
        for s in alive {
            dead.remove(&s);
        }
        dead
    }

    /// Writes one group of segments cleaned, then swaps it in. Returns the
    /// cleaned segment's length.
    async fn clean_group(
        &self,
        group: &[SegmentInfo],
        ctx: &GroupCtx<'_>,
        stats: &mut CleanStats,
        due: &mut Option<i64>,
        pacer: &mut impl Pacer,
    ) -> Result<u64> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(0);
        };
        let (storage, dir) = (&self.inner.storage, &self.inner.dir);
        let base = first.base;
        swap::discard(storage, dir, base).await;
        let file = storage
            .open(&dir.join(swap::cleaned_name(base, "log")))
            .await
            .map_err(io_err)?;
        let mut w = CleanedWriter::new(base, file, ctx.interval);
        for seg in group {
            if let Some(records) = ctx.dead.get(&seg.base) {
                stats.records_removed = stats.records_removed.saturating_add(*records);
                stats.segments_unread = stats.segments_unread.saturating_add(1);
                continue;
            }
            let mut cur = Cursor::new(seg.base, seg.len);
            while !cur.done() {
                for (h, bytes) in self.next_batches(&mut cur, pacer).await? {
                    pacer.breathe().await;
                    let last_of_producer = self.is_last_batch_of_producer(&h);
                    let (kept, removed, horizon) = retain(&h, &bytes, ctx, last_of_producer);
                    stats.records_removed = stats.records_removed.saturating_add(removed);
                    if let Some(at) = horizon {
                        *due = Some(due.map_or(at, |d| d.min(at)));
                    }
                    match kept {
                        Kept::Whole => w.push(&h, &bytes, pacer).await?,
                        Kept::Rebuilt(b) => {
                            stats.batches_rebuilt = stats.batches_rebuilt.saturating_add(1);
                            let nh = BatchHeader::parse(&b)?;
                            w.push(&nh, &b, pacer).await?;
                        }
                        Kept::Nothing => {}
                    }
                }
            }
        }
        let mut seg = w.finish(pacer).await?;
        seg.next_offset = last.next_offset;
        let end = last.next_offset;
        write_index_files_as(
            storage,
            dir,
            &swap::cleaned_name(base, "index"),
            &swap::cleaned_name(base, "timeindex"),
            &index::encode_offset_index(&seg.index),
            &index::encode_time_index(&seg.time_index),
        )
        .await
        .map_err(io_err)?;
        if !self.group_unchanged(group) {
            swap::discard(storage, dir, base).await;
            return Err(EngineError::Io(std::io::Error::other(format!(
                "clean of segments {base}..{end}: the segments changed meanwhile"
            ))));
        }
        swap::commit(storage, dir, base, end)
            .await
            .map_err(io_err)?;
        swap::finish(storage, dir, base, end)
            .await
            .map_err(io_err)?;
        let len = seg.len;
        let mut st = self.inner.state.borrow_mut();
        let Some(i) = st.segments.iter().position(|s| s.base_offset == base) else {
            unreachable!("segment {base} vanished while the log was being cleaned");
        };
        let k = group.len();
        let replaced: Vec<_> = st
            .segments
            .splice(i..i.saturating_add(k), std::iter::once(seg))
            .collect();
        debug_assert!(replaced
            .iter()
            .zip(group)
            .all(|(s, g)| s.base_offset == g.base));
        drop(st);
        // A read-ahead of a replaced segment would keep its file open.
        self.drop_read_ahead();
        for old in replaced {
            storage.retire(old.file);
        }
        tracing::trace!(dir = %dir.display(), base, end, file = %segment_name(base, "log"), len, "segments swapped for their clean");
        Ok(len)
    }

    /// The group's segments are still in the log as planned (nothing
    /// deletes or cuts closed segments while `cleaning` is set; this is the
    /// check that it held).
    fn group_unchanged(&self, group: &[SegmentInfo]) -> bool {
        let st = self.inner.state.borrow();
        if st.closed {
            return false;
        }
        let Some(i) = group
            .first()
            .and_then(|g| st.segments.iter().position(|s| s.base_offset == g.base))
        else {
            return false;
        };
        group.iter().enumerate().all(|(j, g)| {
            st.segments
                .get(i.saturating_add(j))
                .is_some_and(|s| s.base_offset == g.base && s.len == g.len)
        })
    }

    fn is_last_batch_of_producer(&self, h: &BatchHeader) -> bool {
        h.producer_id >= 0 && self.is_last_of_producer(h.producer_id, h.base_offset)
    }

    fn is_last_of_producer(&self, producer_id: i64, base_offset: i64) -> bool {
        self.inner
            .producers
            .borrow()
            .get(producer_id)
            .and_then(|e| e.batches.back())
            .is_some_and(|b| b.base_offset == base_offset)
    }
}

/// What a group's clean needs to decide about each record.
struct GroupCtx<'a> {
    map: &'a OffsetMap,
    /// Dirty segments that clean down to nothing, with their record counts.
    dead: &'a HashMap<i64, u64>,
    now_ms: i64,
    delete_retention_ms: i64,
    interval: u64,
}

/// Decides what of one batch stays. Returns it with the number of records
/// removed and, when tombstones stay, the delete horizon from which they
/// may go.
///
/// Tombstones follow Kafka's KIP-534 rule: the first clean that keeps a
/// batch with a tombstone stamps the batch's delete horizon (`now_ms` plus
/// `delete.retention.ms`) into it; a later clean removes the batch's
/// tombstones (that are still their key's last record) once its time is
/// past the stamped horizon. A batch without the stamp keeps its
/// tombstones, whatever their record timestamps say.
fn retain(
    h: &BatchHeader,
    bytes: &[u8],
    ctx: &GroupCtx<'_>,
    last_of_producer: bool,
) -> (Kept, u64, Option<i64>) {
    if h.is_control() {
        return (Kept::Whole, 0, None);
    }
    let Ok(records) = records_bytes(bytes) else {
        return (Kept::Whole, 0, None);
    };
    let Ok(parsed) = parse_records(&records, h.record_count) else {
        return (Kept::Whole, 0, None);
    };
    let stamped = h.delete_horizon_ms();
    let tombstones_go = stamped.is_some_and(|t| ctx.now_ms >= t);
    let mut kept = Vec::with_capacity(parsed.len());
    for r in &parsed {
        let Some(key) = r.key else {
            continue;
        };
        let offset = h.base_offset.saturating_add(i64::from(r.offset_delta));
        if ctx.map.get(key).is_some_and(|&(last, _)| last > offset) {
            continue;
        }
        if r.tombstone && tombstones_go {
            continue;
        }
        kept.push(*r);
    }
    if last_of_producer {
        // Kept whole: the producer's sequence state is rebuilt from it.
        kept.clone_from(&parsed);
    }
    let removed = parsed.len().saturating_sub(kept.len()) as u64;
    let tombstones = kept.iter().any(|r| r.tombstone);
    let stamp = (tombstones && stamped.is_none())
        .then(|| ctx.now_ms.saturating_add(ctx.delete_retention_ms.max(0)));
    // When a clean is due for the kept tombstones. A stamped horizon that
    // is already past (tombstones kept in a producer's last batch) makes
    // none due: another clean would keep them too.
    let horizon = match stamped {
        _ if !tombstones => None,
        Some(t) => Some(t).filter(|t| *t > ctx.now_ms),
        None => stamp,
    };
    if removed == 0 && stamp.is_none() {
        return (Kept::Whole, 0, horizon);
    }
    if kept.is_empty() {
        return (Kept::Nothing, removed, None);
    }
    match rebuild_batch_with_horizon(bytes, &kept, stamp) {
        Ok(b) => (Kept::Rebuilt(b), removed, horizon),
        Err(_) => (Kept::Whole, 0, None),
    }
}

/// Consecutive segments grouped while their sizes fit `segment.bytes` and
/// their offsets a segment's relative range.
fn groups<'a>(segments: &'a [SegmentInfo], config: &LogConfig) -> Vec<&'a [SegmentInfo]> {
    let limit = super::segment::segment_bytes(config);
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let span_ok = segments
            .get(start)
            .is_some_and(|f| s.next_offset.saturating_sub(f.base) <= i64::from(i32::MAX));
        if i > start && (bytes.saturating_add(s.len) > limit || !span_ok) {
            if let Some(g) = segments.get(start..i) {
                out.push(g);
            }
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(s.len);
    }
    if let Some(g) = segments.get(start..).filter(|g| !g.is_empty()) {
        out.push(g);
    }
    out
}
