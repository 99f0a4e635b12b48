//! Idempotent-producer state of one partition: per producer id, its epoch
//! and the metadata of its last [`NUM_BATCHES_TO_RETAIN`] appended batches.
//! The log consults it before assigning offsets, so that a retried batch is
//! answered with its original offsets instead of being appended twice, and a
//! gap or a stale epoch is refused. This mirrors Kafka's
//! `ProducerStateManager` for producers without transactions.
//!
//! Rules (Kafka's, checked in this order for a batch with a producer id):
//! 1. `baseSequence < 0` is an invalid batch (Kafka: INVALID_RECORD).
//! 2. An unknown producer must start at sequence 0 (else UNKNOWN_PRODUCER_ID).
//! 3. An epoch below the producer's current one is stale (INVALID_PRODUCER_EPOCH).
//! 4. Same epoch, and the batch's sequence range equals one of the last five
//!    appended batches: a duplicate, answered with that batch's offsets.
//! 5. Same epoch: the batch must continue the sequence (last + 1, wrapping
//!    from `i32::MAX` to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER.
//! 6. A higher epoch (the producer bumped it) must restart at sequence 0,
//!    else OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! Batches whose producer id is negative (-1: not idempotent) skip all of it.
//!
//! Durability: the table is rebuilt on open from the latest snapshot whose
//! offset is at most the log end, then by replaying the headers of the
//! batches from that offset. A snapshot file is `<offset:020>.snapshot` in
//! the partition directory, where `offset` is the log end offset the table
//! covers (every batch below it has been recorded). Format, big-endian:
//!
//! ```text
//! offset  size  field
//!  0      4     magic "SPST"
//!  4      2     version (1)
//!  6      4     CRC-32C of bytes 10..end
//! 10      8     end offset covered by the snapshot
//! 18      4     producer count N
//! 22      ...   N producers, ascending producer id:
//!                 producer_id i64, epoch i16, last_timestamp_ms i64, batch count u8 (1..=5),
//!                 then per batch, oldest first:
//!                 first_seq i32, last_seq i32, base_offset i64, last_offset i64, max_timestamp i64
//! ```
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed into place and the
//! directory fsynced, so a crash leaves either the old set of snapshots or
//! the new one, never a torn file under the final name. A file whose CRC does
//! not match is skipped in favour of an older one (or a replay from the start).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::batch::BatchHeader;
pub use crate::error::ProducerError;
use crate::io::Storage;

/// Batches remembered per producer for duplicate detection. Kafka's value:
/// a producer has at most five requests in flight per partition with
/// idempotence on, so a retry is always one of these.
pub const NUM_BATCHES_TO_RETAIN: usize = 5;
/// Producers remembered per partition. Past it, the producer that was idle
/// longest is forgotten (as if expired); it gets UNKNOWN_PRODUCER_ID if it
/// comes back mid-sequence.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 100_000;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;
/// Snapshots kept in a partition directory; older ones are deleted.
pub const SNAPSHOTS_RETAINED: usize = 2;
/// Snapshot file suffix.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";

const SNAPSHOT_MAGIC: &[u8; 4] = b"SPST";
const SNAPSHOT_VERSION: u16 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 22;
const SNAPSHOT_CRC_START: usize = 10;
const PRODUCER_HEADER_BYTES: usize = 8 + 2 + 8 + 1;
const BATCH_META_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// Why a snapshot could not be read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot truncated")]
    Truncated,
    #[error("not a producer state snapshot (bad magic or version)")]
    BadHeader,
    #[error("snapshot CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("corrupt snapshot: {0}")]
    Corrupt(&'static str),
    #[error("snapshot I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What is remembered about one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// One producer's state in this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; never empty, at most [`NUM_BATCHES_TO_RETAIN`].
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the producer's last batch, for expiration.
    pub last_timestamp_ms: i64,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// The outcome of checking a batch that may be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Append it (and [`ProducerStateTable::record`] it afterwards).
    Append,
    /// A retry of an appended batch: answer with these offsets, append nothing.
    Duplicate(BatchMetadata),
}

/// The sequence after `seq` advanced by `delta`, wrapping past `i32::MAX` to 0
/// as Kafka's producers do.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    debug_assert!(seq >= 0 && delta >= 0);
    // For seq, delta in 0..=i32::MAX the sum fits an i64; past i32::MAX it
    // wraps to 0, so the result is the sum modulo 2^31.
    let next = i64::from(seq)
        .wrapping_add(i64::from(delta))
        .rem_euclid(1 << 31);
    i32::try_from(next).unwrap_or(0)
}

/// The last sequence number of a batch.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    increment_sequence(h.base_sequence, h.last_offset_delta)
}

/// Whether a batch carries idempotent-producer fields.
pub fn has_producer_id(h: &BatchHeader) -> bool {
    h.producer_id >= 0
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Every batch below this offset has been recorded.
    end_offset: i64,
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// An empty table for a log that starts at `offset` (nothing below it
    /// needs replaying).
    pub fn starting_at(offset: i64) -> ProducerStateTable {
        ProducerStateTable {
            producers: BTreeMap::new(),
            end_offset: offset,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer with its state, by producer id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Every batch below this offset has been recorded.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Checks one batch against the table (see the module doc for the rules).
    pub fn check(&self, h: &BatchHeader) -> Result<Decision, ProducerError> {
        check_entry(self.producers.get(&h.producer_id), h)
    }

    /// Checks the batches of one produce request in order, as if each were
    /// recorded before the next is checked. A duplicate anywhere answers the
    /// whole request (Kafka's rule); any error refuses it.
    pub fn check_all(&self, headers: &[BatchHeader]) -> Result<Decision, ProducerError> {
        if let [h] = headers {
            return self.check(h);
        }
        // Several batches: later ones must see earlier ones. Work on copies
        // of the few entries involved; the offsets recorded there are never
        // reported.
        let mut scratch: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        for h in headers {
            if !has_producer_id(h) {
                continue;
            }
            let entry = scratch
                .get(&h.producer_id)
                .or_else(|| self.producers.get(&h.producer_id));
            match check_entry(entry, h)? {
                // A batch repeated within the request itself was never
                // appended: it has no offsets to answer with.
                Decision::Duplicate(meta) if meta.base_offset < 0 => {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        sequence: h.base_sequence,
                        expected: entry.map_or(0, |e| increment_sequence(e.last_seq(), 1)),
                    });
                }
                Decision::Duplicate(meta) => return Ok(Decision::Duplicate(meta)),
                Decision::Append => {
                    let mut e = entry.cloned();
                    apply(&mut e, h, -1);
                    if let Some(e) = e {
                        scratch.insert(h.producer_id, e);
                    }
                }
            }
        }
        Ok(Decision::Append)
    }

    /// Records a batch the log has just appended at `base_offset` (or, on
    /// rebuild, one read back from the log). Must follow a successful
    /// [`check`](Self::check) on the live path.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        debug_assert!(
            base_offset >= self.end_offset,
            "producer state would go backwards: {base_offset} < {}",
            self.end_offset
        );
        self.end_offset = self
            .end_offset
            .max(h.last_offset_from(base_offset).saturating_add(1));
        if !has_producer_id(h) {
            return;
        }
        if !self.producers.contains_key(&h.producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            self.evict_idlest();
        }
        let mut entry = self.producers.remove(&h.producer_id);
        apply(&mut entry, &BatchHeader { base_offset, ..*h }, base_offset);
        if let Some(e) = entry {
            self.producers.insert(h.producer_id, e);
        }
    }

    /// Records every batch at or past [`end_offset`](Self::end_offset) from
    /// headers read back from the log, in offset order; earlier ones are
    /// skipped, so replaying from before the snapshot is harmless.
    pub fn replay<I: IntoIterator<Item = BatchHeader>>(&mut self, headers: I) {
        for h in headers {
            if h.base_offset >= self.end_offset {
                self.record(&h, h.base_offset);
            }
        }
    }

    /// Forgets producers whose last batch is older than `expiration_ms`
    /// (Kafka's `producer.id.expiration.ms`).
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
    }

    /// The log was truncated to `offset` (a torn tail was cut on recovery):
    /// state past it is unknown. Callers rebuild from an older snapshot; this
    /// only guards against using a table that claims more than the log holds.
    pub fn covers(&self, log_end_offset: i64) -> bool {
        self.end_offset <= log_end_offset
    }

    fn evict_idlest(&mut self) {
        if let Some((&pid, _)) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_timestamp_ms)
        {
            self.producers.remove(&pid);
        }
    }

    /// Serializes the table (format in the module doc).
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        const PRODUCER_MAX_BYTES: usize =
            PRODUCER_HEADER_BYTES + NUM_BATCHES_TO_RETAIN * BATCH_META_BYTES;
        let mut out = Vec::with_capacity(
            self.producers
                .len()
                .saturating_mul(PRODUCER_MAX_BYTES)
                .saturating_add(SNAPSHOT_HEADER_BYTES),
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&self.end_offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            assert!(!e.batches.is_empty() && e.batches.len() <= NUM_BATCHES_TO_RETAIN);
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(out.get(SNAPSHOT_CRC_START..).unwrap_or_default());
        if let Some(field) = out.get_mut(6..10) {
            field.copy_from_slice(&crc.to_be_bytes());
        }
        out
    }

    /// Parses a snapshot, checking magic, version, CRC and structure.
    pub fn from_snapshot_bytes(buf: &[u8]) -> Result<ProducerStateTable, SnapshotError> {
        if buf.len() < SNAPSHOT_HEADER_BYTES {
            return Err(SnapshotError::Truncated);
        }
        let mut r = Reader { buf, pos: 0 };
        if r.take(4)? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return Err(SnapshotError::BadHeader);
        }
        let stored = r.u32()?;
        let computed = crc32c::crc32c(buf.get(SNAPSHOT_CRC_START..).unwrap_or_default());
        if stored != computed {
            return Err(SnapshotError::BadCrc { stored, computed });
        }
        let end_offset = r.i64()?;
        let count = r.u32()? as usize;
        // Bound the count by what the bytes can hold before trusting it.
        let body_bytes = buf.len().saturating_sub(SNAPSHOT_HEADER_BYTES);
        if count > body_bytes / (PRODUCER_HEADER_BYTES + BATCH_META_BYTES) {
            return Err(SnapshotError::Corrupt("producer count exceeds file size"));
        }
        let mut producers = BTreeMap::new();
        let mut previous_pid = -1i64;
        for _ in 0..count {
            let pid = r.i64()?;
            if pid <= previous_pid {
                return Err(SnapshotError::Corrupt("producer ids not ascending"));
            }
            previous_pid = pid;
            let epoch = r.i16()?;
            let last_timestamp_ms = r.i64()?;
            let n = r.u8()? as usize;
            if n == 0 || n > NUM_BATCHES_TO_RETAIN {
                return Err(SnapshotError::Corrupt("batch count out of range"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let b = BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                };
                if b.first_seq < 0
                    || b.last_seq < 0
                    || b.last_offset < b.base_offset
                    || b.last_offset >= end_offset
                {
                    return Err(SnapshotError::Corrupt("batch metadata out of range"));
                }
                batches.push_back(b);
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                },
            );
        }
        if r.pos != buf.len() {
            return Err(SnapshotError::Corrupt("trailing bytes"));
        }
        Ok(ProducerStateTable {
            producers,
            end_offset,
        })
    }
}

/// The check of one batch against one producer's entry.
fn check_entry(entry: Option<&ProducerEntry>, h: &BatchHeader) -> Result<Decision, ProducerError> {
    if !has_producer_id(h) {
        return Ok(Decision::Append);
    }
    let producer_id = h.producer_id;
    let sequence = h.base_sequence;
    if sequence < 0 {
        return Err(ProducerError::InvalidSequence {
            producer_id,
            sequence,
        });
    }
    let Some(entry) = entry else {
        if sequence != 0 {
            return Err(ProducerError::UnknownProducerId {
                producer_id,
                epoch: h.producer_epoch,
                sequence,
            });
        }
        return Ok(Decision::Append);
    };
    if h.producer_epoch < entry.epoch {
        return Err(ProducerError::InvalidProducerEpoch {
            producer_id,
            epoch: h.producer_epoch,
            current_epoch: entry.epoch,
        });
    }
    if let Some(meta) = entry.find_duplicate(h.producer_epoch, sequence, last_sequence(h)) {
        return Ok(Decision::Duplicate(meta));
    }
    let expected = if h.producer_epoch == entry.epoch {
        increment_sequence(entry.last_seq(), 1)
    } else {
        0
    };
    if sequence != expected {
        return Err(ProducerError::OutOfOrderSequence {
            producer_id,
            epoch: h.producer_epoch,
            sequence,
            expected,
        });
    }
    Ok(Decision::Append)
}

/// Applies an appended batch to a producer's entry (creating it, or resetting
/// it on a new epoch).
fn apply(entry: &mut Option<ProducerEntry>, h: &BatchHeader, base_offset: i64) {
    let meta = BatchMetadata {
        first_seq: h.base_sequence,
        last_seq: last_sequence(h),
        base_offset,
        last_offset: h.last_offset_from(base_offset),
        max_timestamp: h.max_timestamp,
    };
    match entry {
        Some(e) if e.epoch == h.producer_epoch => {
            if e.batches.len() == NUM_BATCHES_TO_RETAIN {
                e.batches.pop_front();
            }
            e.batches.push_back(meta);
            e.last_timestamp_ms = h.max_timestamp;
        }
        _ => {
            *entry = Some(ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::from([meta]),
                last_timestamp_ms: h.max_timestamp,
            });
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).ok_or(SnapshotError::Truncated)?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(SnapshotError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
}

// ---------------------------------------------------------------------------
// Snapshot files, through the log's storage seam (O_DIRECT files in
// production, the simulated file system in tests). A snapshot is small (at
// most a few MiB at MAX_PRODUCERS_PER_PARTITION) and is written on segment
// roll and on close, never on the append path.

/// Path of the snapshot covering the log below `offset`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The offsets of the snapshot files among `names` (file names in a
/// partition directory), ascending. Temporary files and names that do not
/// parse are ignored.
pub fn snapshot_offsets(names: &[String]) -> Vec<i64> {
    let mut out: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
        .filter(|stem| stem.len() == 20)
        .filter_map(|stem| stem.parse::<i64>().ok())
        .collect();
    out.sort_unstable();
    out
}

/// Writes `bytes` (a serialized table) as `<offset:020>.snapshot`
/// atomically: tmp file, fdatasync, rename, directory sync. Then deletes all
/// but the newest [`SNAPSHOTS_RETAINED`] snapshots. Callers pass a table that
/// covers only synced data, so a snapshot never claims more than a crash keeps.
pub async fn write_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
    offset: i64,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    write_snapshot_as(storage, dir, offset, bytes, true).await
}

/// Like [`write_snapshot`], with nothing synced when `durable` is false: a
/// snapshot lost or torn by a crash (its CRC) is skipped at the next load
/// in favour of an older one, which costs a longer replay, never state.
/// The recovery point's snapshots are written so, keeping their
/// fdatasyncs off the device the data path syncs on.
pub async fn write_snapshot_as<S: Storage>(
    storage: &S,
    dir: &Path,
    offset: i64,
    bytes: &[u8],
    durable: bool,
) -> std::io::Result<PathBuf> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    if durable {
        crate::io::write_whole_file(storage, &tmp, bytes).await?;
        storage.rename(&tmp, &path).await?;
        storage.sync_dir(dir).await?;
    } else {
        crate::io::write_whole_file_unsynced(storage, &tmp, bytes).await?;
        storage.rename(&tmp, &path).await?;
    }
    let all = snapshot_offsets(&storage.list_dir(dir).await?);
    let stale = all.len().saturating_sub(SNAPSHOTS_RETAINED);
    for old in all.iter().take(stale) {
        // A roll's snapshot and a recovery point's may be written at the
        // same time, each pruning: the other may have removed it already.
        match storage.remove_file(&snapshot_path(dir, *old)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(path)
}

/// Loads the newest valid snapshot that covers at most `log_end_offset`.
/// Snapshots past the log end (the log's tail was cut on recovery) are
/// deleted; corrupt ones are skipped (and deleted) in favour of older ones.
/// Without any, the table starts empty at `log_start_offset`. The caller
/// then replays the log's batch headers from the returned table's
/// [`end_offset`](ProducerStateTable::end_offset).
pub async fn load_latest<S: Storage>(
    storage: &S,
    dir: &Path,
    log_start_offset: i64,
    log_end_offset: i64,
) -> std::io::Result<ProducerStateTable> {
    let mut offsets = snapshot_offsets(&storage.list_dir(dir).await?);
    while let Some(offset) = offsets.pop() {
        let path = snapshot_path(dir, offset);
        if offset > log_end_offset {
            tracing::warn!(
                ?path,
                log_end_offset,
                "producer state snapshot is past the log end; deleting it"
            );
            storage.remove_file(&path).await?;
            continue;
        }
        let parsed = match crate::io::read_whole_file(storage, &path).await {
            Ok(bytes) => ProducerStateTable::from_snapshot_bytes(&bytes),
            Err(e) => Err(SnapshotError::Io(e)),
        };
        match parsed {
            Ok(table) if table.end_offset == offset => return Ok(table),
            Ok(_) => tracing::warn!(
                ?path,
                "producer state snapshot offset does not match its name; skipping it"
            ),
            Err(e) => {
                tracing::warn!(?path, error = %e, "unreadable producer state snapshot; skipping it")
            }
        }
        storage.remove_file(&path).await?;
    }
    Ok(ProducerStateTable::starting_at(log_start_offset))
}

#[cfg(test)]
mod tests;
