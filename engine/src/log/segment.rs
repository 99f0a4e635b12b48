//! A segment of the log as the rest of the log sees it: its base offset,
//! logical length, next offset and in-memory indexes, the file names derived
//! from the base offset, and the limits that follow from relative offsets
//! and positions being u32. No I/O happens here: the file handle is only
//! carried, and the callers (append, roll, recover, truncate) do the writes.

use std::rc::Rc;

use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::index::{OffsetEntry, TimeEntry};
use crate::io::{StorageFile, ALIGN_BYTES};

/// Segments are addressed with u32 positions in the index.
pub(super) const MAX_SEGMENT_BYTES: u64 = 1 << 31;
pub(super) const MIN_SEGMENT_BYTES: u64 = 4 * ALIGN_BYTES;

/// `segment.bytes` within the limits a segment can have.
pub(super) fn segment_bytes(config: &LogConfig) -> u64 {
    config
        .segment_bytes
        .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
}

/// `<base:020>.<ext>`: the name of a segment's `.log`, `.index` or
/// `.timeindex` file.
pub(super) fn segment_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// One segment: `<base_offset:020>.log` and what the log knows about it.
pub(super) struct Segment<F: StorageFile> {
    pub(super) base_offset: i64,
    pub(super) file: Rc<F>,
    /// Logical length: bytes of whole batches. The file may be longer
    /// (preallocation, padding); those bytes are never served.
    pub(super) len: u64,
    pub(super) next_offset: i64,
    pub(super) index: Vec<OffsetEntry>,
    pub(super) time_index: Vec<TimeEntry>,
    pub(super) bytes_since_index: u64,
    pub(super) max_timestamp: i64,
    pub(super) max_timestamp_offset: i64,
    /// When the first batch was appended in this process (segment.ms).
    pub(super) first_append_ms: Option<i64>,
    /// File bytes preallocated so far (0 without preallocation).
    pub(super) allocated_bytes: u64,
    /// Written by the log cleaner: its batches may have gaps between them.
    pub(super) cleaned: bool,
}

impl<F: StorageFile> Segment<F> {
    pub(super) fn new(base_offset: i64, file: Rc<F>) -> Segment<F> {
        Segment {
            base_offset,
            file,
            len: 0,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            max_timestamp: -1,
            max_timestamp_offset: -1,
            first_append_ms: None,
            allocated_bytes: 0,
            cleaned: false,
        }
    }

    /// Records a batch stored at `pos` in the indexes.
    pub(super) fn track_batch(&mut self, pos: u64, h: &BatchHeader, max_ts: i64, interval: u64) {
        debug_assert_eq!(h.base_offset, self.next_offset);
        if pos > 0 && self.bytes_since_index >= interval {
            // Appends roll before a segment's offsets pass a u32; a wrapped
            // relative offset would unsort the index and misdirect reads.
            let rel = h.base_offset.checked_sub(self.base_offset);
            let Some(rel) = rel.and_then(|r| u32::try_from(r).ok()) else {
                panic!("relative offset {rel:?} out of the index's range");
            };
            self.index.push(OffsetEntry::new(rel, pos as u32));
            self.push_time_entry();
            self.bytes_since_index = 0;
        }
        self.bytes_since_index = self
            .bytes_since_index
            .saturating_add(h.total_bytes() as u64);
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.max_timestamp_offset = h.base_offset;
        }
        self.next_offset = h.last_offset().saturating_add(1);
    }

    pub(super) fn push_time_entry(&mut self) {
        if self.max_timestamp < 0 {
            return;
        }
        if self
            .time_index
            .last()
            .is_some_and(|e| e.ts() >= self.max_timestamp)
        {
            return;
        }
        // The offset is this segment's, so it fits a u32 (see track_batch).
        let rel = self.max_timestamp_offset.saturating_sub(self.base_offset) as u32;
        self.time_index
            .push(TimeEntry::new(self.max_timestamp, rel));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{SimFile, SimStorage};
    use crate::io::Storage;

    fn header(base_offset: i64, records: i32, bytes: usize) -> BatchHeader {
        let b = crate::batch::build_batch(7, &vec![&[0u8; 10][..]; records as usize]);
        let h = BatchHeader::parse(&b).unwrap();
        BatchHeader {
            base_offset,
            batch_length: (bytes - crate::batch::LOG_OVERHEAD) as i32,
            ..h
        }
    }

    fn segment(base: i64) -> Segment<SimFile> {
        let fs = SimStorage::new(1);
        let file = futures_lite::future::block_on(fs.open("/sim/seg".as_ref())).unwrap();
        Segment::new(base, Rc::new(file))
    }

    #[test]
    fn names_are_the_base_offset_in_twenty_digits() {
        assert_eq!(segment_name(42, "log"), "00000000000000000042.log");
        assert_eq!(
            segment_name(0, "timeindex"),
            "00000000000000000000.timeindex"
        );
    }

    #[test]
    fn an_index_entry_follows_each_interval_of_batch_bytes() {
        let mut seg = segment(100);
        let mut pos = 0u64;
        for i in 0..10i64 {
            let h = header(100 + 3 * i, 3, 400);
            seg.track_batch(pos, &h, 1_000 + i, 1000);
            pos += 400;
        }
        // Position 0 is implicit; then an entry once 1000 bytes have passed.
        let entries: Vec<(u32, u32)> = seg.index.iter().map(|e| (e.rel(), e.pos())).collect();
        assert_eq!(entries, vec![(9, 1200), (18, 2400), (27, 3600)]);
        assert_eq!(seg.next_offset, 130);
        assert_eq!((seg.max_timestamp, seg.max_timestamp_offset), (1_009, 127));
        // The time index is pushed with each offset entry, holding the
        // largest timestamp before it.
        let times: Vec<(i64, u32)> = seg.time_index.iter().map(|e| (e.ts(), e.rel())).collect();
        assert_eq!(times, vec![(1_002, 6), (1_005, 15), (1_008, 24)]);
    }
}
