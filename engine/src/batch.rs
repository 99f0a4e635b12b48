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

use crate::error::BatchError;

/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed RecordBatch v2 header.
pub const HEADER_BYTES: usize = 61;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;

/// Attribute bit: the batch is transactional.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: the batch is a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 1 << 5;
/// Attribute bit: timestamps are LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// A batch or record timestamp of -1: none given.
pub const NO_TIMESTAMP: i64 = -1;

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
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_compressed(&self) -> bool {
        self.attributes & ATTR_CODEC_MASK != 0
    }

    /// Parses the fixed header without checking the CRC. `buf` must hold at
    /// least the header; the batch body may be cut short.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                need: HEADER_BYTES,
                have: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: i64::from_be_bytes(buf[0..8].try_into().unwrap()),
            batch_length: i32::from_be_bytes(buf[8..12].try_into().unwrap()),
            partition_leader_epoch: i32::from_be_bytes(buf[12..16].try_into().unwrap()),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[17..21].try_into().unwrap()),
            attributes: i16::from_be_bytes(buf[21..23].try_into().unwrap()),
            last_offset_delta: i32::from_be_bytes(buf[23..27].try_into().unwrap()),
            base_timestamp: i64::from_be_bytes(buf[27..35].try_into().unwrap()),
            max_timestamp: i64::from_be_bytes(buf[35..43].try_into().unwrap()),
            producer_id: i64::from_be_bytes(buf[43..51].try_into().unwrap()),
            producer_epoch: i16::from_be_bytes(buf[51..53].try_into().unwrap()),
            base_sequence: i32::from_be_bytes(buf[53..57].try_into().unwrap()),
            record_count: i32::from_be_bytes(buf[57..61].try_into().unwrap()),
        };
        if h.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(h.magic));
        }
        if (h.batch_length as i64) < (HEADER_BYTES - LOG_OVERHEAD) as i64 {
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
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    if crc != h.crc {
        return Err(BatchError::BadCrc {
            stored: h.crc,
            computed: crc,
        });
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
    let mut pos = 0usize;
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                need: LOG_OVERHEAD,
                have: rest.len(),
            });
        }
        let len = i32::from_be_bytes(rest[8..12].try_into().unwrap());
        if len < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(len));
        }
        let total = LOG_OVERHEAD + len as usize;
        if total > rest.len() {
            return Err(BatchError::Truncated {
                need: total,
                have: rest.len(),
            });
        }
        let h = validate(&rest[..total])?;
        out.push((h, pos..pos + total));
        pos += total;
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
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch in place (outside the CRC range).
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Sets LogAppendTime: the timestamp-type bit and maxTimestamp, which are
/// inside the CRC range, so the CRC is recomputed.
pub fn set_log_append_time(buf: &mut [u8], now_ms: i64) {
    let attrs = i16::from_be_bytes(buf[21..23].try_into().unwrap()) | ATTR_LOG_APPEND_TIME;
    buf[21..23].copy_from_slice(&attrs.to_be_bytes());
    buf[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Builds a valid uncompressed batch of `records` with the given values, for
/// tests. Keys are null, no headers.
#[cfg(any(test, feature = "test-util"))]
pub fn build_batch(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    build_batch_with_producer(base_timestamp, values, -1, -1, -1)
}

/// Like [`build_batch`] with the idempotent-producer fields set.
#[cfg(any(test, feature = "test-util"))]
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
    if h.attributes & (ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME) != 0 || batch.len() < h.total_bytes()
    {
        return None;
    }
    let body = &batch[HEADER_BYTES..h.total_bytes()];
    let mut at = 0usize;
    for _ in 0..h.record_count {
        let (len, n) = get_varint(&body[at..])?;
        at += n;
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        let record = body.get(at..end)?;
        // attributes (int8), timestampDelta (varlong), offsetDelta (varint)
        let (ts_delta, n) = get_varint(record.get(1..)?)?;
        let (offset_delta, _) = get_varint(record.get(1 + n..)?)?;
        let ts = h.base_timestamp.checked_add(ts_delta)?;
        if ts >= timestamp_ms {
            return Some((i32::try_from(offset_delta).ok()?, ts));
        }
        at = end;
    }
    None
}

/// Attribute bits 0-2: the compression codec.
const ATTR_CODEC_MASK: i16 = 0x7;

/// Reads a zigzag varint (up to 64 bits); returns the value and its length.
fn get_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut z = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

#[cfg(any(test, feature = "test-util"))]
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
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
