//! Kafka RecordBatch v2 (magic 2) framing: header parsing, validation and the
//! in-place offset assignment. Records are never decoded here.
//!
//! ```text
//! offset  size  field
//!  0      8     baseOffset            \
//!  8      4     batchLength            |  outside the CRC
//! 12      4     partitionLeaderEpoch   |
//! 16      1     magic (= 2)           /
//! 17      4     crc (CRC-32C of bytes 21..end)
//! 21      2     attributes
//! 23      4     lastOffsetDelta
//! 27      8     baseTimestamp
//! 35      8     maxTimestamp
//! 43      8     producerId
//! 51      2     producerEpoch
//! 53      4     baseSequence
//! 57      4     recordCount
//! 61      ...   records
//! ```

use zerocopy::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::BatchError;

/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed RecordBatch v2 header.
pub const HEADER_BYTES: usize = 61;
pub(crate) const CRC_START: usize = 21;
pub(crate) const MAGIC_V2: i8 = 2;

/// Attribute bit: the batch is transactional.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: the batch is a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 1 << 5;
/// Attribute bit 6 (KIP-534): the log cleaner stamped the batch's delete
/// horizon into its base timestamp; its tombstones go from then on.
pub const ATTR_DELETE_HORIZON: i16 = 1 << 6;
/// Attribute bit: timestamps are LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// A batch or record timestamp of -1: none given.
pub const NO_TIMESTAMP: i64 = -1;

/// The fixed header as it lies in the bytes (big-endian, unaligned), so it
/// is read and written in place without an index into the buffer.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    base_offset: I64,
    batch_length: I32,
    partition_leader_epoch: I32,
    magic: i8,
    crc: U32,
    attributes: I16,
    last_offset_delta: I32,
    base_timestamp: I64,
    max_timestamp: I64,
    producer_id: I64,
    producer_epoch: I16,
    base_sequence: I32,
    record_count: I32,
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_BYTES);

/// The header at the start of `buf`, to change in place; `None` when `buf`
/// is shorter than a header (callers pass validated batches).
fn raw_mut(buf: &mut [u8]) -> Option<&mut RawHeader> {
    let raw = RawHeader::mut_from_prefix(buf).ok().map(|(raw, _)| raw);
    debug_assert!(raw.is_some(), "a batch shorter than its header");
    raw
}

/// The CRC-32C of everything after the crc field.
fn crc_of(buf: &[u8]) -> u32 {
    crc32c::crc32c(buf.get(CRC_START..).unwrap_or_default())
}

/// The parsed fixed header of one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Length of everything after the batchLength field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch on disk, header included.
    pub fn total_bytes(&self) -> usize {
        // `parse` refuses a negative batchLength; an i32 plus 12 fits a usize.
        LOG_OVERHEAD.saturating_add(usize::try_from(self.batch_length).unwrap_or(0))
    }

    /// The batch's last offset (saturating: a base offset near `i64::MAX`
    /// is no valid offset, and the log refuses what it cannot hold).
    pub fn last_offset(&self) -> i64 {
        self.last_offset_from(self.base_offset)
    }

    /// The last offset of this batch once it starts at `base_offset`.
    pub fn last_offset_from(&self, base_offset: i64) -> i64 {
        base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The delete horizon a clean stamped into the batch (KIP-534): its
    /// tombstones may go from this time on.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }

    pub fn is_compressed(&self) -> bool {
        self.attributes & ATTR_CODEC_MASK != 0
    }

    /// Parses the fixed header without checking the CRC. `buf` must hold at
    /// least the header; the batch body may be cut short.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let Ok((raw, _)) = RawHeader::ref_from_prefix(buf) else {
            return Err(BatchError::Truncated {
                need: HEADER_BYTES,
                have: buf.len(),
            });
        };
        let h = BatchHeader {
            base_offset: raw.base_offset.get(),
            batch_length: raw.batch_length.get(),
            partition_leader_epoch: raw.partition_leader_epoch.get(),
            magic: raw.magic,
            crc: raw.crc.get(),
            attributes: raw.attributes.get(),
            last_offset_delta: raw.last_offset_delta.get(),
            base_timestamp: raw.base_timestamp.get(),
            max_timestamp: raw.max_timestamp.get(),
            producer_id: raw.producer_id.get(),
            producer_epoch: raw.producer_epoch.get(),
            base_sequence: raw.base_sequence.get(),
            record_count: raw.record_count.get(),
        };
        if h.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(h.magic));
        }
        if usize::try_from(h.batch_length).map_or(true, |len| len < HEADER_BYTES - LOG_OVERHEAD) {
            return Err(BatchError::BadLength(h.batch_length));
        }
        if h.record_count < 0 || h.last_offset_delta < 0 {
            return Err(BatchError::BadCount {
                record_count: h.record_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        Ok(h)
    }
}

/// Checks one complete batch's header, length, magic and record count, but
/// not its CRC: for bytes that were fully validated before.
pub fn validate_framing(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    if h.total_bytes() != buf.len() {
        return Err(BatchError::Truncated {
            need: h.total_bytes(),
            have: buf.len(),
        });
    }
    if h.record_count == 0 {
        return Err(BatchError::Empty);
    }
    Ok(h)
}

/// Validates one complete batch (`buf` is exactly the batch): header, length,
/// magic, CRC32C, and a non-empty offset span.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = validate_framing(buf)?;
    let crc = crc_of(buf);
    if crc != h.crc {
        return Err(BatchError::BadCrc {
            stored: h.crc,
            computed: crc,
        });
    }
    Ok(h)
}

/// [`validate`] (with the CRC when `check_crc`, else [`validate_framing`])
/// for a batch held in consecutive parts, without joining them.
pub fn validate_parts<B: AsRef<[u8]>>(
    parts: &[B],
    check_crc: bool,
) -> Result<BatchHeader, BatchError> {
    if let [one] = parts {
        return if check_crc {
            validate(one.as_ref())
        } else {
            validate_framing(one.as_ref())
        };
    }
    let mut head = [0u8; HEADER_BYTES];
    let mut filled = 0usize;
    let mut total = 0usize;
    for p in parts {
        let p = p.as_ref();
        total = total.saturating_add(p.len());
        let take = HEADER_BYTES.saturating_sub(filled).min(p.len());
        if let (Some(dest), Some(src)) = (
            head.get_mut(filled..filled.saturating_add(take)),
            p.get(..take),
        ) {
            dest.copy_from_slice(src);
        }
        filled = filled.saturating_add(take);
    }
    let h = BatchHeader::parse(head.get(..filled).unwrap_or_default())?;
    if h.total_bytes() != total {
        return Err(BatchError::Truncated {
            need: h.total_bytes(),
            have: total,
        });
    }
    if h.record_count == 0 {
        return Err(BatchError::Empty);
    }
    if check_crc {
        let mut crc = 0u32;
        let mut skip = CRC_START;
        for p in parts {
            let p = p.as_ref();
            let s = skip.min(p.len());
            skip = skip.saturating_sub(s);
            crc = crc32c::crc32c_append(crc, p.get(s..).unwrap_or_default());
        }
        if crc != h.crc {
            return Err(BatchError::BadCrc {
                stored: h.crc,
                computed: crc,
            });
        }
    }
    Ok(h)
}

/// Splits a produce request's `records` bytes into batches, validating each.
/// Returns the headers with the byte range of each batch. Nothing partial is
/// accepted: one bad batch rejects the whole set.
pub fn split_and_validate(
    buf: &[u8],
) -> Result<Vec<(BatchHeader, std::ops::Range<usize>)>, BatchError> {
    let mut out = Vec::new();
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut pos = 0usize;
    while let Some(rest) = buf.get(pos..).filter(|rest| !rest.is_empty()) {
        let Some(length_field) = rest.get(8..LOG_OVERHEAD) else {
            return Err(BatchError::Truncated {
                need: LOG_OVERHEAD,
                have: rest.len(),
            });
        };
        let len = i32::from_be_bytes(<[u8; 4]>::try_from(length_field).unwrap_or_default());
        let total = match usize::try_from(len) {
            Ok(len) if len >= HEADER_BYTES - LOG_OVERHEAD => LOG_OVERHEAD.saturating_add(len),
            _ => return Err(BatchError::BadLength(len)),
        };
        let Some(batch) = rest.get(..total) else {
            return Err(BatchError::Truncated {
                need: total,
                have: rest.len(),
            });
        };
        let h = validate(batch)?;
        let end = pos.saturating_add(total);
        out.push((h, pos..end));
        pos = end;
    }
    Ok(out)
}

/// The fewest bytes one record takes: its length, attributes, timestamp
/// delta, offset delta, key length, value length and header count, each at
/// least one byte.
pub const MIN_RECORD_BYTES: usize = 7;

/// Writes the broker-assigned base offset into a batch in place. The field
/// lies outside the CRC range, so the CRC stays valid.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    if let Some(raw) = raw_mut(buf) {
        raw.base_offset.set(base_offset);
    }
}

/// Writes the partition leader epoch in place (outside the CRC range).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    if let Some(raw) = raw_mut(buf) {
        raw.partition_leader_epoch.set(epoch);
    }
}

/// Recomputes and stores the CRC of a batch whose CRC-covered bytes were
/// written or changed.
pub fn set_crc(buf: &mut [u8]) {
    let crc = crc_of(buf);
    if let Some(raw) = raw_mut(buf) {
        raw.crc.set(crc);
    }
}

/// Sets LogAppendTime: the timestamp-type bit and maxTimestamp, which are
/// inside the CRC range, so the CRC is recomputed.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) {
    if let Some(raw) = raw_mut(buf) {
        raw.attributes
            .set(raw.attributes.get() | ATTR_LOG_APPEND_TIME);
        raw.max_timestamp.set(now_ms);
    }
    set_crc(buf);
}

/// Builds a valid uncompressed batch of `records` with the given values, for
/// tests. Keys are null, no headers.
#[cfg(any(test, feature = "test-util"))]
pub fn build_batch(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    build_batch_with_producer(base_timestamp, values, -1, -1, -1)
}

/// Like [`build_batch`] with the idempotent-producer fields set.
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "a test-only builder of small batches"
)]
pub fn build_batch_with_producer(
    base_timestamp: i64,
    values: &[&[u8]],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
        put_varint(&mut body, 0); // header count
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&((values.len() as i32 - 1).max(0)).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&base_sequence.to_be_bytes());
    b.extend_from_slice(&(values.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// For an uncompressed CreateTime batch, the offset delta and timestamp of
/// the first record whose timestamp is at or after `timestamp_ms`. `None`
/// when the records cannot be read without decompressing, the batch uses
/// LogAppendTime (every record then has the batch's timestamp), or no record
/// qualifies. `batch` starts at the batch header and holds the whole batch.
pub fn first_record_at_or_after(batch: &[u8], timestamp_ms: i64) -> Option<(i32, i64)> {
    let h = BatchHeader::parse(batch).ok()?;
    if h.attributes & (ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME) != 0 {
        return None;
    }
    let mut records = batch.get(HEADER_BYTES..h.total_bytes())?;
    for _ in 0..h.record_count {
        let (len, n) = get_varint(records)?;
        let (record, rest) = records
            .get(n..)?
            .split_at_checked(usize::try_from(len).ok()?)?;
        // attributes (int8), timestampDelta (varlong), offsetDelta (varint)
        let (ts_delta, n) = get_varint(record.get(1..)?)?;
        let (offset_delta, _) = get_varint(record.get(n.checked_add(1)?..)?)?;
        let ts = h.base_timestamp.checked_add(ts_delta)?;
        if ts >= timestamp_ms {
            return Some((i32::try_from(offset_delta).ok()?, ts));
        }
        records = rest;
    }
    None
}

/// Attribute bits 0-2: the compression codec.
pub const ATTR_CODEC_MASK: i16 = 0x7;

/// Reads a zigzag varint (up to 64 bits); returns the value and its length.
pub(crate) fn get_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut z = 0u64;
    let mut shift = 0u32;
    for (len, b) in (1..=10).zip(buf) {
        z |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            // Zigzag: 0, -1, 1, -2, ... (the sign is the low bit).
            let magnitude = (z >> 1) as i64;
            return Some((if z & 1 == 0 { magnitude } else { !magnitude }, len));
        }
        shift = shift.checked_add(7)?;
    }
    None
}

/// Writes a zigzag varint (up to 64 bits).
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = (v.wrapping_shl(1) ^ v.wrapping_shr(63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z = z.wrapping_shr(7);
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_validates_and_offset_rewrite_keeps_crc() {
        let mut b = build_batch(1000, &[b"a", b"bc", b"def"]);
        let h = validate(&b).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        set_base_offset(&mut b, 42);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
    }

    #[test]
    fn a_batch_in_parts_validates_as_it_does_whole() {
        let b = build_batch(7, &[b"first record", b"second", b"third one"]);
        let whole = validate(&b).unwrap();
        // Cut inside the header, at the CRC's start, and in the records.
        for cuts in [
            vec![3],
            vec![CRC_START],
            vec![20, 40, b.len() - 1],
            vec![HEADER_BYTES],
        ] {
            let mut parts = Vec::new();
            let mut from = 0;
            for &c in cuts.iter().chain([b.len()].iter()) {
                parts.push(&b[from..c]);
                from = c;
            }
            assert_eq!(
                validate_parts(&parts, true).unwrap(),
                whole,
                "cut at {cuts:?}"
            );
            let mut bad = b.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let (head, tail) = bad.split_at(cuts[0]);
            assert!(matches!(
                validate_parts(&[head, tail], true),
                Err(BatchError::BadCrc { .. })
            ));
            assert!(validate_parts(&[head, tail], false).is_ok(), "framing only");
            assert!(matches!(
                validate_parts(&[head, &tail[..tail.len() - 1]], false),
                Err(BatchError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn bad_crc_magic_length_and_empty_are_rejected() {
        let good = build_batch(1, &[b"x"]);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(validate(&bad), Err(BatchError::BadCrc { .. })));
        let mut bad = good.clone();
        bad[16] = 1;
        assert!(matches!(validate(&bad), Err(BatchError::BadMagic(1))));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&10_000i32.to_be_bytes());
        assert!(matches!(
            split_and_validate(&bad),
            Err(BatchError::Truncated { .. })
        ));
        let empty = build_batch(1, &[]);
        assert!(matches!(validate(&empty), Err(BatchError::Empty)));
        assert!(matches!(split_and_validate(&[]), Err(BatchError::Empty)));
    }

    #[test]
    fn first_record_at_or_after_walks_uncompressed_records() {
        let b = build_batch(1000, &[b"a", b"b", b"c"]);
        // build_batch gives every record timestamp delta 0.
        assert_eq!(first_record_at_or_after(&b, 999), Some((0, 1000)));
        assert_eq!(first_record_at_or_after(&b, 1000), Some((0, 1000)));
        assert_eq!(first_record_at_or_after(&b, 1001), None);
        let mut gz = b.clone();
        gz[22] |= 1; // codec gzip: records are not readable without inflating
        assert_eq!(first_record_at_or_after(&gz, 0), None);
        assert_eq!(first_record_at_or_after(&b[..b.len() - 1], 0), None);
    }

    #[test]
    fn log_append_time_recomputes_crc() {
        let mut b = build_batch(5, &[b"x"]);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).unwrap();
        assert_eq!(h.max_timestamp, 99);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
    }
}
