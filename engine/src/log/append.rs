//! Appends: validate, assign offsets, wait for durability.
//!
//! An append validates the batches (length, magic, CRC-32C, size) before
//! anything is copied, waits for room (no roll in progress, bounded
//! unwritten bytes, space in the active segment), checks the idempotent
//! producers, assigns offsets in place and copies the batches into the
//! active segment's tail buffer. Then it waits for what the caller asked:
//! the O_DIRECT write that puts them on the device (`Written`, a write
//! round) or the fdatasync of a flush round (`Synced`). Readers see them
//! once they are written (the read bound is the written offset), so no
//! reader sees what a process crash takes back.
//!
//! The [`AppendOrigin`] says who gives the batches their offsets. A client's
//! batches get theirs here, from the log end. A replica's batches (a
//! follower appending what it fetched from its leader) keep the leader's:
//! they must continue the log exactly, or nothing is written. A replica's
//! batches are not checked against the idempotent-producer rules (the
//! leader did that) but are recorded, so the follower can answer retries
//! if it becomes the leader; their bytes, LogAppendTime included, are kept
//! as the leader wrote them.
//!
//! Leader epochs: a client's batches get the log's leader epoch (when the
//! broker made it leader, see `epochs.rs`) in `partitionLeaderEpoch`, which
//! is outside the CRC; a replica's keep their leader's, and a batch with an
//! epoch newer than the cache's latest records that epoch as starting at
//! its base offset. The checkpoint is written before the append returns.

use std::ops::Range;

use super::flush::Round;
use super::segment;
use super::state::{
    timed_now, AppendInfo, AppendOrigin, AppendWaits, Durability, PartitionLog, State,
};
use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::{BatchError, EngineError, Result};
use crate::io::{Storage, StorageFile};
use crate::producer_state::{BatchMetadata, Decision};

/// Appended-but-unwritten bytes above which appends wait for the disk.
const MAX_UNWRITTEN_BYTES: u64 = 128 << 20;

/// The largest offset span of one segment: index entries hold offsets
/// relative to the segment's base as u32.
const MAX_RELATIVE_OFFSET: i64 = u32::MAX as i64;

/// The batches of one append: each header with its byte range.
type Batches = Vec<(BatchHeader, Range<usize>)>;

/// `append_staged`'s signal: called once, when fired or at the latest when
/// dropped.
struct OnAssigned<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnAssigned<F> {
    fn fire(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl<F: FnOnce()> Drop for OnAssigned<F> {
    fn drop(&mut self) {
        self.fire();
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Validates and appends the batches in `records` (one or more complete
    /// RecordBatch v2), assigning offsets. All or nothing.
    pub async fn append(
        &self,
        records: &[u8],
        durability: Durability,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.append_with_origin(records, durability, now_ms, AppendOrigin::Client)
            .await
    }

    /// Appends batches that keep the offsets their leader gave them:
    /// [`append_with_origin`](Self::append_with_origin) with
    /// [`AppendOrigin::Replica`].
    pub async fn append_replica(
        &self,
        records: &[u8],
        durability: Durability,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.append_with_origin(records, durability, now_ms, AppendOrigin::Replica)
            .await
    }

    /// Validates and appends the batches in `records` (one or more complete
    /// RecordBatch v2). All or nothing. A client append assigns offsets from
    /// the log end; a replica append keeps the batches' base offsets, and
    /// fails with [`BatchError::NotAtLogEnd`] or [`BatchError::NotContiguous`]
    /// unless the first starts at the log end offset and each next one
    /// starts right after the one before, and with
    /// [`EngineError::LedHere`] while the log is led here.
    pub async fn append_with_origin(
        &self,
        records: &[u8],
        durability: Durability,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo> {
        self.append_staged(records, durability, now_ms, origin, || {})
            .await
    }

    /// [`append_with_origin`](Self::append_with_origin) that calls
    /// `assigned` once the batches have their offsets (or the append has
    /// ended without them: refused, a duplicate, or the future dropped),
    /// before it waits for durability. From then on a later append cannot
    /// come before this one, so a caller that keeps appends in order (a
    /// connection's produce requests) may start the next one.
    pub async fn append_staged(
        &self,
        records: &[u8],
        durability: Durability,
        now_ms: i64,
        origin: AppendOrigin,
        assigned: impl FnOnce(),
    ) -> Result<AppendInfo> {
        let mut on_assigned = OnAssigned(Some(assigned));
        let (rules, log_append_time, segment_bytes, flush_messages) = {
            let c = self.inner.config.borrow();
            (
                Rules::new(&c, origin, now_ms),
                c.log_append_time,
                segment::segment_bytes(&c),
                c.flush_messages,
            )
        };
        // A replica's timestamps are the leader's, LogAppendTime included.
        let log_append_time = log_append_time && origin == AppendOrigin::Client;
        let parsed = validate(records, &rules)?;
        let offsets: i64 = parsed
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta).saturating_add(1))
            .sum();
        let waiting = timed_now();
        self.wait_for_room(records.len() as u64, offsets, segment_bytes)
            .await?;
        let assigned = timed_now();
        // No await from here to the offset assignment: the producer check
        // and the record of the appended batches see the same log end.
        if origin == AppendOrigin::Client {
            let headers: Vec<BatchHeader> = parsed.iter().map(|(h, _)| *h).collect();
            let decision = self.inner.producers.borrow().check_all(&headers)?;
            if let Decision::Duplicate(original) = decision {
                // Its offsets were given when the original was appended.
                on_assigned.fire();
                return self
                    .answer_duplicate(original, durability, log_append_time)
                    .await;
            }
        }
        let mut info = self.assign(records, &parsed, now_ms, log_append_time, origin)?;
        on_assigned.fire();
        self.maybe_prepare_spare(segment_bytes).await;
        // A new epoch this append started is on disk before the append is
        // acknowledged (a no-op when the cache did not change).
        self.save_epochs().await?;
        self.wait_for_durability(
            info.last_offset.saturating_add(1),
            durability,
            flush_messages,
        )
        .await?;
        if let (Some(waiting), Some(assigned)) = (waiting, assigned) {
            info.waited = AppendWaits {
                room: assigned.saturating_duration_since(waiting),
                durable: assigned.elapsed(),
            };
        }
        Ok(info)
    }

    /// Waits for room: no roll in progress, bounded unwritten bytes, and a
    /// segment with space for the whole append (`append_bytes`, spanning
    /// `append_offsets` offsets), writing or rolling as needed. A segment
    /// rolls before its offsets would pass a u32 from its base offset, so the
    /// index's relative offsets stay exact and sorted.
    async fn wait_for_room(
        &self,
        append_bytes: u64,
        append_offsets: i64,
        segment_bytes: u64,
    ) -> Result<()> {
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
                let unwritten = st.tail.as_ref().map_or(0, |t| t.unwritten_bytes());
                if st.rolling || (st.flushing && unwritten >= MAX_UNWRITTEN_BYTES) {
                    Next::Wait
                } else if unwritten >= MAX_UNWRITTEN_BYTES {
                    Next::Write
                } else if seg.len > 0
                    && (seg.len.saturating_add(append_bytes) > segment_bytes
                        || st
                            .log_end_offset
                            .saturating_add(append_offsets)
                            .saturating_sub(seg.base_offset)
                            > MAX_RELATIVE_OFFSET)
                {
                    Next::Roll
                } else {
                    Next::Go
                }
            };
            match next {
                Next::Go => break,
                Next::Wait => progressed.await,
                Next::Write => self.flush_round(Round::Behind).await?,
                Next::Roll => self.roll().await?,
            }
        }
        Ok(())
    }

    /// Gives the batches their offsets (a client's from the log end; a
    /// replica's are checked to start there) and copies them into the tail,
    /// recording them in the indexes and the producer state. Synchronous:
    /// nothing runs between the checks and the copy, and a refused replica
    /// append has written nothing.
    fn assign(
        &self,
        records: &[u8],
        parsed: &Batches,
        now_ms: i64,
        log_append_time: bool,
        origin: AppendOrigin,
    ) -> Result<AppendInfo> {
        let mut st = self.inner.state.borrow_mut();
        let base = st.log_end_offset;
        if origin == AppendOrigin::Replica {
            // Checked here, not before the awaits above: the broker may
            // have become leader while this append waited, and recorded
            // its epoch as starting at `base`.
            if let Some(epoch) = self.inner.epochs.borrow().leader_epoch {
                return Err(EngineError::LedHere { epoch });
            }
            // The leader's offsets must continue this log exactly; the
            // batches were checked to continue one another.
            if let Some((first, _)) = parsed.first() {
                if first.base_offset != base {
                    return Err(BatchError::NotAtLogEnd {
                        base_offset: first.base_offset,
                        log_end_offset: base,
                    }
                    .into());
                }
            }
        }
        let mut producers = self.inner.producers.borrow_mut();
        let mut epochs = self.inner.epochs.borrow_mut();
        // A client's batches carry this leader's epoch; a replica's carry
        // their leader's, and a newer one starts an epoch here.
        let stamp = match origin {
            AppendOrigin::Client => epochs.leader_epoch,
            AppendOrigin::Replica => None,
        };
        st.clock_ms = st.clock_ms.max(now_ms);
        let interval = self.inner.config.borrow().index_interval_bytes as u64;
        let mut next = base;
        let mut messages = 0u64;
        for (h, range) in parsed {
            debug_assert!(
                origin == AppendOrigin::Client || h.base_offset == next,
                "a replica's offsets are kept as sent"
            );
            // `validate` cut every range from `records`, each at least a
            // header long.
            let Some((src_header, src_body)) = records
                .get(range.clone())
                .and_then(|src| src.split_at_checked(HEADER_BYTES))
            else {
                unreachable!("a validated batch range {range:?} outside the request");
            };
            let mut header = [0u8; HEADER_BYTES];
            header.copy_from_slice(src_header);
            batch::set_base_offset(&mut header, next);
            let epoch = stamp.unwrap_or(h.partition_leader_epoch);
            batch::set_partition_leader_epoch(&mut header, epoch);
            if origin == AppendOrigin::Replica && epochs.cache.assign(epoch, next) {
                epochs.changed();
            }
            let mut max_ts = h.max_timestamp;
            let owned;
            let (head, body): (&[u8], &[u8]) = if log_append_time {
                let mut b = [src_header, src_body].concat();
                batch::set_base_offset(&mut b, next);
                batch::set_partition_leader_epoch(&mut b, epoch);
                batch::set_log_append_time(&mut b, now_ms);
                max_ts = now_ms;
                owned = b;
                (&owned[..], &[])
            } else {
                (&header[..], src_body)
            };
            let pos = self.tail_write(&mut st, head, body);
            let stored = BatchHeader {
                base_offset: next,
                partition_leader_epoch: epoch,
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
            next = stored.last_offset().saturating_add(1);
            messages = messages.saturating_add(h.record_count as u64);
        }
        debug_assert!(next > base, "offsets must move forward");
        st.log_end_offset = next;
        // The written offset reaches `next` once the device holds the
        // segment up to here.
        let end_pos = st.segments.last().map_or(0, |s| s.len);
        debug_assert!(st.written_ends.back().is_none_or(|&(p, _)| p <= end_pos));
        st.written_ends.push_back((end_pos, next));
        st.messages_since_sync = st.messages_since_sync.saturating_add(messages);
        Ok(AppendInfo {
            base_offset: base,
            last_offset: next.saturating_sub(1),
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start_offset: st.log_start_offset,
            waited: AppendWaits::default(),
        })
    }

    /// Waits until the batches below `end_offset` are as durable as asked:
    /// written to the device, or synced (also when `flush.messages` asks a
    /// sync anyway).
    async fn wait_for_durability(
        &self,
        end_offset: i64,
        durability: Durability,
        flush_messages: u64,
    ) -> Result<()> {
        let must_sync = durability == Durability::Synced
            || self.inner.state.borrow().messages_since_sync >= flush_messages;
        if must_sync {
            self.sync_to(end_offset).await
        } else if durability == Durability::Buffered && self.inner.write_behind.is_some() {
            self.write_in_background(end_offset);
            Ok(())
        } else {
            self.write_to(end_offset).await
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
        match durability {
            Durability::Synced => self.sync_to(original.last_offset.saturating_add(1)).await?,
            Durability::Written | Durability::Buffered => {
                self.write_to(original.last_offset.saturating_add(1))
                    .await?
            }
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
            waited: AppendWaits::default(),
        })
    }

    /// Copies `head` then `body` to the end of the active segment's tail,
    /// sealing full buffers into chunks. Returns the batch's position.
    fn tail_write(&self, st: &mut State<S>, head: &[u8], body: &[u8]) -> u64 {
        let chunk_bytes = self.inner.chunk_bytes;
        let State { segments, tail, .. } = st;
        let (Some(seg), Some(tail)) = (segments.last_mut(), tail.as_mut()) else {
            unreachable!("append on a log without an active segment")
        };
        let file = &seg.file;
        tail.write(&mut seg.len, head, body, chunk_bytes, || {
            file.alloc_buf(chunk_bytes as usize)
        })
    }
}

/// What a batch must satisfy, beyond its framing and CRC, to be appended.
struct Rules {
    origin: AppendOrigin,
    /// `max.message.bytes`.
    max_bytes: usize,
    /// The accepted CreateTime window; `None` when the log stamps
    /// LogAppendTime or the batches are a replica's (the leader checked).
    timestamps: Option<std::ops::RangeInclusive<i64>>,
}

impl Rules {
    fn new(config: &crate::config::LogConfig, origin: AppendOrigin, now_ms: i64) -> Rules {
        let checks_timestamps = origin == AppendOrigin::Client && !config.log_append_time;
        Rules {
            origin,
            max_bytes: config.max_message_bytes,
            timestamps: checks_timestamps.then(|| {
                now_ms.saturating_sub(config.timestamp_before_max_ms)
                    ..=now_ms.saturating_add(config.timestamp_after_max_ms)
            }),
        }
    }
}

/// Checks the batches before anything is copied, as Kafka's log validator
/// does at the batch header (records are never decoded):
/// - framing, magic and CRC-32C, and `max.message.bytes`;
/// - `recordCount == lastOffsetDelta + 1`, so a batch spans exactly the
///   offsets its records take, and for uncompressed batches no more records
///   than the bytes can hold (Kafka decodes the records to count them; a
///   compressed batch's count is trusted, and the segment roll keeps the
///   index exact whatever it claims);
/// - a producer id (>= 0) comes with an epoch and a sequence, and no id is
///   below -1 ("none");
/// - from a client, no control batch (clients may not write transaction
///   markers) and no transactional batch (no transactions yet), and CreateTime
///   timestamps (first and max; -1 is "none") within
///   `message.timestamp.before.max.ms` / `after.max.ms` of now;
/// - for a replica, that each batch starts right after the one before (so
///   offsets never go backwards or skip).
fn validate(records: &[u8], rules: &Rules) -> Result<Batches> {
    let parsed = batch::split_and_validate(records)?;
    for (h, range) in &parsed {
        check_batch(h, range.len(), rules)?;
    }
    if rules.origin == AppendOrigin::Replica {
        for pair in parsed.windows(2) {
            let [(previous, _), (next, _)] = pair else {
                continue;
            };
            // A leader's base offset is not checked until `assign`: near
            // i64::MAX, the offset after a batch does not exist.
            let expected = previous
                .base_offset
                .checked_add(i64::from(previous.last_offset_delta).saturating_add(1));
            if expected != Some(next.base_offset) {
                return Err(BatchError::NotContiguous {
                    base_offset: next.base_offset,
                    expected: expected.unwrap_or(i64::MAX),
                }
                .into());
            }
        }
    }
    Ok(parsed)
}

fn check_batch(
    h: &BatchHeader,
    bytes: usize,
    rules: &Rules,
) -> std::result::Result<(), BatchError> {
    if bytes > rules.max_bytes {
        return Err(BatchError::TooLarge {
            bytes,
            max: rules.max_bytes,
        });
    }
    if i64::from(h.record_count) != i64::from(h.last_offset_delta).saturating_add(1) {
        return Err(BatchError::InconsistentOffsetRange {
            record_count: h.record_count,
            last_offset_delta: h.last_offset_delta,
        });
    }
    let records_bytes = bytes.saturating_sub(HEADER_BYTES);
    if !h.is_compressed() && h.record_count as usize > records_bytes / batch::MIN_RECORD_BYTES {
        return Err(BatchError::RecordCountTooLarge {
            record_count: h.record_count,
            records_bytes,
        });
    }
    let has_producer = h.producer_id >= 0;
    if h.producer_id < -1 || (has_producer && (h.producer_epoch < 0 || h.base_sequence < 0)) {
        return Err(BatchError::InvalidProducerFields {
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        });
    }
    if rules.origin == AppendOrigin::Client && h.is_control() {
        return Err(BatchError::ControlBatch);
    }
    if rules.origin == AppendOrigin::Client && h.is_transactional() {
        return Err(BatchError::Transactional);
    }
    if let Some(window) = &rules.timestamps {
        // -1 is "no timestamp", which Kafka lets through.
        for timestamp in [h.base_timestamp, h.max_timestamp] {
            if timestamp != batch::NO_TIMESTAMP && !window.contains(&timestamp) {
                return Err(BatchError::TimestampOutOfRange {
                    timestamp,
                    earliest: *window.start(),
                    latest: *window.end(),
                });
            }
        }
    }
    Ok(())
}

/// [`validate`] for the fuzz targets (`fuzz/`) and their regression replay:
/// the checks an append makes before anything is copied (all but the
/// timestamp window, which depends on the clock), with the batches' headers
/// and byte ranges on success.
#[cfg(any(test, feature = "test-util"))]
pub fn validate_for_append(
    records: &[u8],
    max_message_bytes: usize,
    origin: AppendOrigin,
) -> Result<Vec<(BatchHeader, Range<usize>)>> {
    let rules = Rules {
        origin,
        max_bytes: max_message_bytes,
        timestamps: None,
    };
    validate(records, &rules)
}
