//! The recovery point: what recovery needs to skip the synced part of the
//! active segment after a crash.
//!
//! Without it, an unclean open scans the whole active segment (up to
//! `segment.bytes`, 1 GiB by default) and then reads it again to rebuild
//! the producer state from the last roll's snapshot. With it, a sync round
//! that finds the active segment grown by `recovery_point_bytes` since the
//! last point writes, once its fdatasync has returned:
//! 1. a producer snapshot at the round's end offset (as a roll does, but
//!    not synced), then
//! 2. `recovery-point`: the segment's base offset, the synced length, and
//!    its offset and time index entries, with a CRC-32C over all of it,
//!    written as `recovery-point.tmp` and renamed, not synced either.
//!
//! On an unclean open the active segment takes the entries of a valid point
//! for its base offset; the scan then starts at the last entry (whose batch
//! header is checked, as after a clean close) instead of at position 0, and
//! the producer replay starts at the snapshot. Only entries strictly below
//! the last 4096-byte block the point covers are kept: that block was
//! written partially and is rewritten by the next write, which a power loss
//! may tear, so its bytes are scanned again. Bytes below it were synced and
//! are never written again until a truncation, which removes the point (and
//! syncs the directory) before it cuts anything.
//!
//! A point that does not parse, fails its CRC, names another segment or
//! claims more than the file holds is ignored: the segment is scanned
//! whole, as without one. The file is never trusted for anything but where
//! the scan starts, so losing it costs time, never data.

use std::path::Path;

use super::segment::Segment;
use super::state::{io_err, PartitionLog, State};
use crate::error::Result;
use crate::index::{self, OffsetEntry, TimeEntry};
use crate::io::{Storage, StorageFile, ALIGN_BYTES};
use crate::producer_state;

/// The file's name in the partition directory.
pub(super) const RECOVERY_POINT_FILE: &str = "recovery-point";
pub(super) const RECOVERY_POINT_TMP_FILE: &str = "recovery-point.tmp";

const MAGIC: &[u8; 4] = b"SRP1";
/// Magic, base offset, length, next offset, two entry counts.
const HEADER_BYTES: usize = 4 + 8 + 8 + 8 + 4 + 4;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// A point: the active segment's state at a synced length.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RecoveryPoint {
    pub(super) base_offset: i64,
    /// Logical length covered by the fdatasync before the point was written.
    pub(super) len: u64,
    pub(super) next_offset: i64,
    pub(super) index: Vec<OffsetEntry>,
    pub(super) time_index: Vec<TimeEntry>,
}

impl RecoveryPoint {
    /// The segment's state now; the caller takes it when the segment's
    /// whole length is what the round it belongs to syncs.
    pub(super) fn of<F: StorageFile>(seg: &Segment<F>) -> RecoveryPoint {
        RecoveryPoint {
            base_offset: seg.base_offset,
            len: seg.len,
            next_offset: seg.next_offset,
            index: seg.index.clone(),
            time_index: seg.time_index.clone(),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let index = index::encode_offset_index(&self.index);
        let time = index::encode_time_index(&self.time_index);
        let mut out = Vec::with_capacity(
            HEADER_BYTES
                .saturating_add(index.len())
                .saturating_add(time.len())
                .saturating_add(4),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.time_index.len() as u32).to_le_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&time);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// `None` for anything but a whole, valid point.
    pub(super) fn decode(bytes: &[u8]) -> Option<RecoveryPoint> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return None;
        }
        let base_offset = i64::from_le_bytes(r.array()?);
        let len = u64::from_le_bytes(r.array()?);
        let next_offset = i64::from_le_bytes(r.array()?);
        let n_index = usize::try_from(u32::from_le_bytes(r.array()?)).ok()?;
        let n_time = usize::try_from(u32::from_le_bytes(r.array()?)).ok()?;
        let index_bytes = r.take(n_index.checked_mul(OFFSET_ENTRY_BYTES)?)?;
        let time_bytes = r.take(n_time.checked_mul(TIME_ENTRY_BYTES)?)?;
        if !r.0.is_empty() || base_offset < 0 || next_offset < base_offset {
            return None;
        }
        let index = index::parse_offset_index(index_bytes, len);
        let next_rel = u64::try_from(next_offset.checked_sub(base_offset)?).ok()?;
        let time_index = index::parse_time_index(time_bytes, next_rel);
        // The parsers keep the longest valid prefix; a point whose entries
        // are not all valid was not written by this code.
        if index.len() != n_index || time_index.len() != n_time {
            return None;
        }
        Some(RecoveryPoint {
            base_offset,
            len,
            next_offset,
            index,
            time_index,
        })
    }

    /// Gives `seg` (the active segment, just opened, `file_len` bytes) the
    /// entries that let its scan start past the synced part. Returns
    /// whether it did; the scan then trusts them (`scan_segment` checks the
    /// last entry's batch header before it does).
    pub(super) fn apply<F: StorageFile>(&self, seg: &mut Segment<F>, file_len: u64) -> bool {
        if self.base_offset != seg.base_offset || self.len > file_len {
            return false;
        }
        // Entries at or past the last block's start: that block is written
        // again by the next write (see the module doc).
        let stable = self.len.saturating_sub(self.len % ALIGN_BYTES);
        let index: Vec<OffsetEntry> = self
            .index
            .iter()
            .copied()
            .take_while(|e| u64::from(e.pos()) < stable)
            .collect();
        let Some(last) = index.last() else {
            return false;
        };
        let last_rel = last.rel();
        seg.index = index;
        seg.time_index = self
            .time_index
            .iter()
            .copied()
            .take_while(|e| e.rel() < last_rel)
            .collect();
        true
    }
}

/// A point taken at the start of a sync round, written once its fdatasync
/// returned.
pub(super) struct PendingPoint {
    point: RecoveryPoint,
    /// The producer state at the round's end offset: (offset, snapshot).
    producers: (i64, Vec<u8>),
    generation: u64,
}

impl<S: Storage> PartitionLog<S> {
    /// At the start of a sync round (the partial tail sealed, so the round
    /// covers the active segment's whole length): a point to write after
    /// its fdatasync, when the segment grew `recovery_point_bytes` since the
    /// last one. None during a roll or truncation.
    pub(super) fn take_recovery_point(&self, st: &State<S>) -> Option<PendingPoint> {
        let every = self.inner.config.borrow().recovery_point_bytes;
        let seg = st.segments.last()?;
        let (base, len) = self.inner.point_taken.get();
        let since = if base == seg.base_offset {
            seg.len.saturating_sub(len)
        } else {
            seg.len
        };
        if st.rolling || since < every || seg.index.is_empty() {
            return None;
        }
        let producers = self.inner.producers.borrow();
        if producers.end_offset() != st.log_end_offset || seg.next_offset != st.log_end_offset {
            return None;
        }
        self.inner.point_taken.set((seg.base_offset, seg.len));
        Some(PendingPoint {
            point: RecoveryPoint::of(seg),
            producers: (producers.end_offset(), producers.to_snapshot_bytes()),
            generation: self.inner.point_generation.get(),
        })
    }

    /// Writes a point whose round's fdatasync returned: the producer
    /// snapshot first, then the point. In the background where the log can
    /// spawn (the acknowledgements of the round do not wait for it), else
    /// awaited. A failure costs only a longer recovery, so it is logged.
    pub(super) async fn save_recovery_point(&self, pending: PendingPoint) {
        let log = self.clone();
        let save = async move {
            let _held = log.inner.point_lock.lock().await;
            if log.inner.point_generation.get() != pending.generation
                || log.inner.state.borrow().closed
            {
                return;
            }
            let (storage, dir) = (&log.inner.storage, &log.inner.dir);
            let (offset, bytes) = &pending.producers;
            let written = match producer_state::write_snapshot_as(
                storage, dir, *offset, bytes, false,
            )
            .await
            {
                Ok(_) => save(storage, dir, &pending.point).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), base_offset = pending.point.base_offset, bytes = pending.point.len, "recovery point written")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "writing the recovery point failed; the next unclean open scans more")
                }
            }
        };
        match &self.inner.write_behind {
            Some(spawn) => spawn(Box::pin(save)),
            None => save.await,
        }
    }

    /// Removes the point and keeps any point taken before from being
    /// written (a truncation, a close).
    pub(super) async fn forget_recovery_point(&self) -> Result<()> {
        let _held = self.inner.point_lock.lock().await;
        let g = self.inner.point_generation.get();
        self.inner.point_generation.set(g.wrapping_add(1));
        self.inner.point_taken.set((-1, 0));
        remove(&self.inner.storage, &self.inner.dir)
            .await
            .map_err(io_err)
    }

    /// Bytes of the active segment's file the last open scanned (all of it
    /// after a crash without a recovery point; from the last index entry
    /// after a clean close or with one).
    pub fn recovery_scanned_bytes(&self) -> u64 {
        self.inner.recovery_scanned_bytes.get()
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// Reads the directory's point; `None` when there is none or it is invalid
/// (logged).
pub(super) async fn load<S: Storage>(storage: &S, dir: &Path) -> Option<RecoveryPoint> {
    let path = dir.join(RECOVERY_POINT_FILE);
    if !storage.exists(&path).await.ok()? {
        return None;
    }
    let bytes = match crate::io::read_whole_file(storage, &path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable recovery point; the active segment is scanned whole");
            return None;
        }
    };
    let point = RecoveryPoint::decode(&bytes);
    if point.is_none() {
        tracing::warn!(path = %path.display(), "invalid recovery point; the active segment is scanned whole");
    }
    point
}

/// Writes the point aside and renames it over the old one, synced neither:
/// a point lost or torn by a crash is ignored at the next open (CRC), and
/// costs only a longer scan. Keeping fdatasyncs of their own off the point
/// (and its snapshot) keeps them off the device the data path syncs on.
pub(super) async fn save<S: Storage>(
    storage: &S,
    dir: &Path,
    point: &RecoveryPoint,
) -> std::io::Result<()> {
    let tmp = dir.join(RECOVERY_POINT_TMP_FILE);
    crate::io::write_whole_file_unsynced(storage, &tmp, &point.encode()).await?;
    storage.rename(&tmp, &dir.join(RECOVERY_POINT_FILE)).await
}

/// Removes the point, durably, before a truncation cuts what it describes.
pub(super) async fn remove<S: Storage>(storage: &S, dir: &Path) -> std::io::Result<()> {
    let path = dir.join(RECOVERY_POINT_FILE);
    if storage.exists(&path).await? {
        storage.remove_file(&path).await?;
        storage.sync_dir(dir).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point() -> RecoveryPoint {
        RecoveryPoint {
            base_offset: 100,
            len: 20_000,
            next_offset: 180,
            index: vec![OffsetEntry::new(10, 4100), OffsetEntry::new(40, 16_500)],
            time_index: vec![TimeEntry::new(5, 9), TimeEntry::new(7, 39)],
        }
    }

    #[test]
    fn round_trips() {
        let p = point();
        assert_eq!(RecoveryPoint::decode(&p.encode()), Some(p));
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = point().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert_eq!(RecoveryPoint::decode(&b), None, "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert_eq!(RecoveryPoint::decode(&bytes[..n]), None, "cut at {n}");
        }
    }
}
