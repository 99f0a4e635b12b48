//! Sparse offset index and time index entries: fixed-size little-endian
//! structs (zerocopy), read from a file's bytes without parsing.

use zerocopy::little_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `.index` entry: the batch starting at `position` in the segment has base
/// offset `segment_base + relative_offset`. 8 bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct OffsetEntry {
    pub relative_offset: U32,
    pub position: U32,
}

/// `.timeindex` entry: the largest batch max timestamp of the segment up to
/// this point, and the relative offset of the batch holding it. 12 bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct TimeEntry {
    pub timestamp_ms: I64,
    pub relative_offset: U32,
}

pub const OFFSET_ENTRY_BYTES: usize = std::mem::size_of::<OffsetEntry>();
pub const TIME_ENTRY_BYTES: usize = std::mem::size_of::<TimeEntry>();

impl OffsetEntry {
    pub fn new(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset: U32::new(relative_offset),
            position: U32::new(position),
        }
    }
    pub fn rel(&self) -> u32 {
        self.relative_offset.get()
    }
    pub fn pos(&self) -> u32 {
        self.position.get()
    }
}

impl TimeEntry {
    pub fn new(timestamp_ms: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            timestamp_ms: I64::new(timestamp_ms),
            relative_offset: U32::new(relative_offset),
        }
    }
    pub fn ts(&self) -> i64 {
        self.timestamp_ms.get()
    }
    pub fn rel(&self) -> u32 {
        self.relative_offset.get()
    }
}

/// Parses an `.index` file: keeps the longest prefix whose entries strictly
/// increase in both fields and lie inside the segment (`segment_len`). A torn
/// or stale tail is dropped, never trusted.
pub fn parse_offset_index(bytes: &[u8], segment_len: u64) -> Vec<OffsetEntry> {
    let mut out: Vec<OffsetEntry> = Vec::new();
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
        let Ok(e) = OffsetEntry::read_from_bytes(chunk) else {
            break;
        };
        let ok = match out.last() {
            Some(prev) => e.rel() > prev.rel() && e.pos() > prev.pos(),
            None => e.pos() > 0,
        };
        if !ok || e.pos() as u64 >= segment_len {
            break;
        }
        out.push(e);
    }
    out
}

/// Parses a `.timeindex` file: the prefix with strictly increasing
/// timestamps and non-decreasing offsets below `next_relative_offset`.
pub fn parse_time_index(bytes: &[u8], next_relative_offset: u64) -> Vec<TimeEntry> {
    let mut out: Vec<TimeEntry> = Vec::new();
    for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
        let Ok(e) = TimeEntry::read_from_bytes(chunk) else {
            break;
        };
        let ok = match out.last() {
            Some(prev) => e.ts() > prev.ts() && e.rel() >= prev.rel(),
            None => true,
        };
        if !ok || e.rel() as u64 >= next_relative_offset {
            break;
        }
        out.push(e);
    }
    out
}

pub fn encode_offset_index(entries: &[OffsetEntry]) -> Vec<u8> {
    entries.as_bytes().to_vec()
}

pub fn encode_time_index(entries: &[TimeEntry]) -> Vec<u8> {
    entries.as_bytes().to_vec()
}

/// The last entry with `relative_offset <= rel`, by binary search.
pub fn lookup_offset(entries: &[OffsetEntry], rel: u32) -> Option<OffsetEntry> {
    let i = entries.partition_point(|e| e.rel() <= rel);
    entries.get(i.checked_sub(1)?).copied()
}

/// The last entry with `timestamp_ms < ts`.
pub fn lookup_time(entries: &[TimeEntry], ts: i64) -> Option<TimeEntry> {
    let i = entries.partition_point(|e| e.ts() < ts);
    entries.get(i.checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_torn_tail() {
        let e = vec![OffsetEntry::new(3, 4100), OffsetEntry::new(9, 8300)];
        let mut b = encode_offset_index(&e);
        assert_eq!(parse_offset_index(&b, 10_000), e);
        b.extend_from_slice(&[0u8; 8]);
        b.extend_from_slice(&[1u8; 3]);
        assert_eq!(parse_offset_index(&b, 10_000), e);
        assert_eq!(parse_offset_index(&b, 5000), e[..1].to_vec());
        assert_eq!(lookup_offset(&e, 2), None);
        assert_eq!(lookup_offset(&e, 3), Some(e[0]));
        assert_eq!(lookup_offset(&e, 100), Some(e[1]));
        let t = vec![TimeEntry::new(10, 0), TimeEntry::new(20, 5)];
        assert_eq!(parse_time_index(&encode_time_index(&t), 6), t);
        assert_eq!(parse_time_index(&encode_time_index(&t), 5), t[..1].to_vec());
        assert_eq!(lookup_time(&t, 10), None);
        assert_eq!(lookup_time(&t, 11), Some(t[0]));
    }
}
