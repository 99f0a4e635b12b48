//! `PartitionLog`: the public API of one partition's log.
//!
//! STUB: this in-memory implementation fixes the API for the server while the
//! real segmented O_DIRECT log is built behind it. It keeps nothing on disk.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::batch;
use crate::config::LogConfig;
use crate::error::{BatchError, EngineError, Result};
use crate::notify::Notify;
use crate::producer_state::{self, Decision, ProducerStateTable};

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

struct StoredBatch {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

struct State {
    batches: Vec<StoredBatch>,
    log_start_offset: i64,
    log_end_offset: i64,
    closed: bool,
    /// Idempotent-producer dedup; checked and recorded under the same
    /// borrow as the offset assignment.
    producers: ProducerStateTable,
}

/// One partition's log. Cheap to clone (shared handle); not `Send`: it lives
/// on the shard that owns the partition. Methods take `&self`, so concurrent
/// appends from several tasks join the same group commit.
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: RefCell<LogConfig>,
    state: RefCell<State>,
    appended: Notify,
}

impl PartitionLog {
    /// Opens (recovering if needed) or creates the log in `dir`. Must run
    /// inside a glommio executor.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(EngineError::from_io)?;
        // IDEMPOTENCE: restore the newest snapshot at or below the log end,
        // then replay the headers of the batches past it. The stub keeps no
        // batches, so there is nothing to replay.
        let (log_start_offset, log_end_offset) = (0, 0);
        let mut producers = producer_state::load_latest(&dir, log_start_offset, log_end_offset)?;
        producers.replay(std::iter::empty());
        Ok(PartitionLog {
            inner: Rc::new(Inner {
                dir,
                config: RefCell::new(config),
                state: RefCell::new(State { batches: Vec::new(), log_start_offset, log_end_offset, closed: false, producers }),
                appended: Notify::default(),
            }),
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
    ///
    /// Idempotent producers: a retry of one of a producer's last five batches
    /// appends nothing and returns the original batch's offsets (Kafka
    /// answers it with NONE); a sequence gap, a stale epoch or an unknown
    /// producer mid-sequence fails with [`EngineError::Producer`].
    pub async fn append(&self, records: &[u8], durability: Durability, now_ms: i64) -> Result<AppendInfo> {
        let max = self.inner.config.borrow().max_message_bytes;
        let log_append_time = self.inner.config.borrow().log_append_time;
        let parsed = batch::split_and_validate(records)?;
        for (_, range) in &parsed {
            if range.len() > max {
                return Err(BatchError::TooLarge { bytes: range.len(), max }.into());
            }
        }
        if let Some(original) = self.find_duplicate(&parsed, log_append_time)? {
            // The original may still wait for its fsync: the duplicate's
            // answer promises no less than the original's would.
            if durability == Durability::Synced {
                self.flush().await?;
            }
            return Ok(original);
        }
        // No await between the producer check above and the offset
        // assignment below, so no other append can come in between.
        let mut st = self.inner.state.borrow_mut();
        if st.closed {
            return Err(EngineError::Closed);
        }
        let base = st.log_end_offset;
        let mut next = base;
        for (h, range) in parsed {
            let mut b = records[range].to_vec();
            batch::set_base_offset(&mut b, next);
            let mut max_ts = h.max_timestamp;
            if log_append_time {
                batch::set_log_append_time(&mut b, now_ms);
                max_ts = now_ms;
            }
            let last = next + h.last_offset_delta as i64;
            st.producers.record(&batch::BatchHeader { max_timestamp: max_ts, ..h }, next);
            st.batches.push(StoredBatch { base_offset: next, last_offset: last, max_timestamp: max_ts, bytes: Bytes::from(b) });
            next = last + 1;
        }
        st.log_end_offset = next;
        let info = AppendInfo {
            base_offset: base,
            last_offset: next - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start_offset: st.log_start_offset,
        };
        drop(st);
        self.inner.appended.notify_all();
        Ok(info)
    }

    /// Checks the batches of one request against the producer state: the
    /// original batch's offsets when the request is a retry, `None` when it
    /// is to be appended, an error when it is refused.
    fn find_duplicate(&self, parsed: &[(batch::BatchHeader, std::ops::Range<usize>)], log_append_time: bool) -> Result<Option<AppendInfo>> {
        let st = self.inner.state.borrow();
        if st.closed {
            return Err(EngineError::Closed);
        }
        let headers: Vec<batch::BatchHeader> = parsed.iter().map(|(h, _)| *h).collect();
        Ok(match st.producers.check_all(&headers)? {
            Decision::Append => None,
            Decision::Duplicate(original) => Some(AppendInfo {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                log_append_time_ms: if log_append_time { original.max_timestamp } else { -1 },
                log_start_offset: st.log_start_offset,
            }),
        })
    }

    /// Reads whole batches from the one containing `offset`, up to
    /// `max_bytes`, but always the first batch even when it is larger
    /// (KIP-74). `offset == log_end_offset` gives an empty result.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let st = self.inner.state.borrow();
        if offset < st.log_start_offset || offset > st.log_end_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: st.log_start_offset,
                log_end: st.log_end_offset,
            });
        }
        let mut out = ReadResult {
            batches: Vec::new(),
            high_watermark: st.log_end_offset,
            log_start_offset: st.log_start_offset,
            log_end_offset: st.log_end_offset,
        };
        let start = st.batches.partition_point(|b| b.last_offset < offset);
        let mut total = 0usize;
        for b in &st.batches[start..] {
            if !out.batches.is_empty() && total + b.bytes.len() > max_bytes {
                break;
            }
            total += b.bytes.len();
            out.batches.push(b.bytes.clone());
        }
        Ok(out)
    }

    /// The first offset whose batch max timestamp is >= `timestamp_ms`, with
    /// that timestamp; `None` when no record is that recent.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        let st = self.inner.state.borrow();
        Ok(st
            .batches
            .iter()
            .find(|b| b.max_timestamp >= timestamp_ms)
            .map(|b| (b.base_offset.max(st.log_start_offset), b.max_timestamp)))
    }

    /// The offset and timestamp of the record with the largest timestamp
    /// (ListOffsets -3, KIP-734).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.inner.state.borrow();
        st.batches.iter().max_by_key(|b| b.max_timestamp).map(|b| (b.base_offset, b.max_timestamp))
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

    /// Bytes of all segments of the log.
    pub fn size_bytes(&self) -> u64 {
        self.inner.state.borrow().batches.iter().map(|b| b.bytes.len() as u64).sum()
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
        Ok(())
    }

    /// Periodic work: `flush.ms` syncs, `segment.ms` rolls and retention.
    pub async fn tick(&self, now_ms: i64) -> Result<()> {
        self.inner.state.borrow_mut().producers.remove_expired(now_ms, producer_state::PRODUCER_ID_EXPIRATION_MS);
        Ok(())
    }

    /// Flushes, syncs and writes the clean-shutdown marker. Later calls fail
    /// with `Closed`.
    pub async fn close(&self) -> Result<()> {
        self.flush().await?;
        let mut st = self.inner.state.borrow_mut();
        if !st.closed {
            producer_state::write_snapshot(&self.inner.dir, &st.producers)?;
        }
        st.closed = true;
        drop(st);
        self.inner.appended.notify_all();
        Ok(())
    }

    /// Closes the log and removes its directory (DeleteTopics).
    pub async fn delete(&self) -> Result<()> {
        self.close().await?;
        std::fs::remove_dir_all(&self.inner.dir).map_err(EngineError::from_io)?;
        Ok(())
    }
}
