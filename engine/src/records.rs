//! The records inside a RecordBatch v2, for the two places that must look
//! at keys: the log cleaner (which record of a key is the latest) and the
//! keyless-record check that compacted topics apply to produced batches.
//! Everything else in the engine treats batches as opaque bytes.
//!
//! ```text
//! record := length varint          (bytes after this field)
//!           attributes int8
//!           timestampDelta varlong
//!           offsetDelta varint
//!           keyLength varint (-1: null)   key
//!           valueLength varint (-1: null, a tombstone)   value
//!           headerCount varint  headers...
//! ```
//!
//! Records are read uncompressed, or inflated from gzip (codec 1). The other
//! codecs (snappy, lz4, zstd) are not read: such batches are `Unreadable`,
//! the cleaner keeps them whole and the produce check lets them pass.
//!
//! A rebuilt batch keeps every header field of the original (base offset,
//! lastOffsetDelta, timestamps, producer id, epoch, base sequence, codec)
//! but the record count, the length and the CRC: the kept records are copied
//! byte for byte, so their offset and timestamp deltas stay valid.

use std::io::{Read, Write};

use crate::batch::{get_varint, BatchHeader, ATTR_CODEC_MASK, CRC_START, HEADER_BYTES};

/// Codec 1 in the attributes: gzip.
const CODEC_GZIP: i16 = 1;

/// The most bytes a batch's records may inflate to: a gzip bomb stops here
/// (Kafka's own limit is the topic's max.message.bytes for the batch; the
/// inflated size is bounded separately so a shard never allocates without
/// limit).
pub const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// Why a batch's records could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Compressed with a codec the engine does not inflate.
    Codec(i16),
    /// The records do not parse (lengths past the end, a bad varint).
    Malformed,
    /// Inflates past [`MAX_INFLATED_BYTES`].
    TooLarge,
}

/// One record, borrowed from the (inflated) records bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone.
    pub tombstone: bool,
    /// The whole record, its length prefix included.
    pub bytes: &'a [u8],
}

/// The records bytes of a whole batch, inflated when compressed.
pub fn records_bytes(batch: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let h = BatchHeader::parse(batch).map_err(|_| Unreadable::Malformed)?;
    let body = batch
        .get(HEADER_BYTES..h.total_bytes())
        .ok_or(Unreadable::Malformed)?;
    match h.attributes & ATTR_CODEC_MASK {
        0 => Ok(body.to_vec()),
        CODEC_GZIP => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_INFLATED_BYTES.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|_| Unreadable::Malformed)?;
            if out.len() as u64 > MAX_INFLATED_BYTES {
                return Err(Unreadable::TooLarge);
            }
            Ok(out)
        }
        codec => Err(Unreadable::Codec(codec)),
    }
}

/// Parses `count` records from `bytes` (see [`records_bytes`]).
pub fn parse_records(bytes: &[u8], count: i32) -> Result<Vec<Record<'_>>, Unreadable> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 16));
    walk_records(bytes, count, |r| {
        out.push(r);
        true
    })?;
    Ok(out)
}

/// Calls `each` with the records in order until it returns false.
fn walk_records<'a>(
    bytes: &'a [u8],
    count: i32,
    mut each: impl FnMut(Record<'a>) -> bool,
) -> Result<(), Unreadable> {
    let mut rest = bytes;
    for _ in 0..count {
        let (len, n) = get_varint(rest).ok_or(Unreadable::Malformed)?;
        let len = usize::try_from(len).map_err(|_| Unreadable::Malformed)?;
        let total = n.checked_add(len).ok_or(Unreadable::Malformed)?;
        let (whole, after) = rest.split_at_checked(total).ok_or(Unreadable::Malformed)?;
        let body = whole.get(n..).ok_or(Unreadable::Malformed)?;
        if !each(parse_record(body, whole)?) {
            break;
        }
        rest = after;
    }
    Ok(())
}

fn parse_record<'a>(body: &'a [u8], whole: &'a [u8]) -> Result<Record<'a>, Unreadable> {
    let bad = Unreadable::Malformed;
    // attributes (int8), then timestampDelta.
    let mut at = 1usize;
    let (_ts_delta, n) = get_varint(body.get(at..).ok_or(bad)?).ok_or(bad)?;
    at = at.checked_add(n).ok_or(bad)?;
    let (offset_delta, n) = get_varint(body.get(at..).ok_or(bad)?).ok_or(bad)?;
    at = at.checked_add(n).ok_or(bad)?;
    let (key_len, n) = get_varint(body.get(at..).ok_or(bad)?).ok_or(bad)?;
    at = at.checked_add(n).ok_or(bad)?;
    let key = if key_len < 0 {
        None
    } else {
        let len = usize::try_from(key_len).map_err(|_| bad)?;
        let end = at.checked_add(len).ok_or(bad)?;
        let key = body.get(at..end).ok_or(bad)?;
        at = end;
        Some(key)
    };
    let (value_len, _) = get_varint(body.get(at..).ok_or(bad)?).ok_or(bad)?;
    Ok(Record {
        offset_delta: i32::try_from(offset_delta).map_err(|_| bad)?,
        key,
        tombstone: value_len < 0,
        bytes: whole,
    })
}

/// The index (within the batch) of the first record without a key, for the
/// check compacted topics apply to produced batches. `Ok(None)`: every
/// record has a key.
pub fn first_keyless_record(batch: &[u8]) -> Result<Option<usize>, Unreadable> {
    let h = BatchHeader::parse(batch).map_err(|_| Unreadable::Malformed)?;
    if h.attributes & ATTR_CODEC_MASK == 0 {
        // The common case reads the records in place, without a copy.
        let body = batch
            .get(HEADER_BYTES..h.total_bytes())
            .ok_or(Unreadable::Malformed)?;
        return first_keyless_in(body, h.record_count);
    }
    let bytes = records_bytes(batch)?;
    first_keyless_in(&bytes, h.record_count)
}

/// Every keyless record's index, for KIP-467's per-record errors.
pub fn keyless_records(batch: &[u8]) -> Result<Vec<usize>, Unreadable> {
    let h = BatchHeader::parse(batch).map_err(|_| Unreadable::Malformed)?;
    let bytes = records_bytes(batch)?;
    Ok(parse_records(&bytes, h.record_count)?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i)
        .collect())
}

fn first_keyless_in(bytes: &[u8], count: i32) -> Result<Option<usize>, Unreadable> {
    let (mut i, mut found) = (0usize, None);
    walk_records(bytes, count, |r| {
        if r.key.is_none() {
            found = Some(i);
            return false;
        }
        i = i.saturating_add(1);
        true
    })?;
    Ok(found)
}

/// The keyless records of a produce request's records for one partition
/// (one or more batches), by index counted over all their records, as
/// Kafka counts within its one batch. Batches are split by their length
/// fields only (the append validates them); what does not split or parse,
/// and batches whose codec the engine does not read, count as keyed.
pub fn keyless_in_batches(records: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut first: i32 = 0;
    let mut rest = records;
    while let Ok(h) = BatchHeader::parse(rest) {
        let Some((batch, after)) = rest.split_at_checked(h.total_bytes()) else {
            break;
        };
        if matches!(first_keyless_record(batch), Ok(Some(_))) {
            if let Ok(idx) = keyless_records(batch) {
                out.extend(
                    idx.into_iter()
                        .filter_map(|i| i32::try_from(i).ok())
                        .map(|i| first.saturating_add(i)),
                );
            }
        }
        first = first.saturating_add(h.record_count);
        rest = after;
    }
    out
}

/// A copy of `batch` holding only `kept` (records of that batch, in order,
/// at least one): same header fields, the records recompressed with the
/// batch's codec, then the record count, length and CRC set.
pub fn rebuild_batch(batch: &[u8], kept: &[Record<'_>]) -> Result<Vec<u8>, Unreadable> {
    let h = BatchHeader::parse(batch).map_err(|_| Unreadable::Malformed)?;
    let header = batch.get(..HEADER_BYTES).ok_or(Unreadable::Malformed)?;
    let mut records = Vec::with_capacity(kept.iter().map(|r| r.bytes.len()).sum());
    for r in kept {
        records.extend_from_slice(r.bytes);
    }
    let records = match h.attributes & ATTR_CODEC_MASK {
        0 => records,
        CODEC_GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&records)
                .and_then(|()| enc.finish())
                .map_err(|_| Unreadable::Malformed)?
        }
        codec => return Err(Unreadable::Codec(codec)),
    };
    let count = i32::try_from(kept.len()).map_err(|_| Unreadable::Malformed)?;
    let length = HEADER_BYTES
        .checked_sub(crate::batch::LOG_OVERHEAD)
        .and_then(|n| n.checked_add(records.len()))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or(Unreadable::TooLarge)?;
    let mut out = Vec::with_capacity(HEADER_BYTES.saturating_add(records.len()));
    out.extend_from_slice(header);
    out.extend_from_slice(&records);
    if let Some(field) = out.get_mut(8..12) {
        field.copy_from_slice(&length.to_be_bytes());
    }
    if let Some(field) = out.get_mut(57..61) {
        field.copy_from_slice(&count.to_be_bytes());
    }
    let crc = crc32c::crc32c(out.get(CRC_START..).unwrap_or_default());
    if let Some(field) = out.get_mut(17..21) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(out)
}

/// A test record: key and value, `None` for null.
#[cfg(any(test, feature = "test-util"))]
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A batch of keyed records for tests: `(key, value)` pairs, `None` for a
/// null key or a null value (a tombstone), with producer fields and codec.
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    reason = "a test-only builder of small batches"
)]
pub fn build_keyed_batch(
    base_timestamp: i64,
    records: &[KeyValue<'_>],
    producer: (i64, i16, i32),
    gzip: bool,
) -> Vec<u8> {
    use crate::batch::put_varint;
    let values: Vec<&[u8]> = vec![&b""[..]; records.len()];
    let mut b = crate::batch::build_batch_with_producer(
        base_timestamp,
        &values,
        producer.0,
        producer.1,
        producer.2,
    );
    b.truncate(HEADER_BYTES);
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        put_varint(&mut r, 0);
        put_varint(&mut r, i as i64);
        match k {
            Some(k) => {
                put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k);
            }
            None => put_varint(&mut r, -1),
        }
        match v {
            Some(v) => {
                put_varint(&mut r, v.len() as i64);
                r.extend_from_slice(v);
            }
            None => put_varint(&mut r, -1),
        }
        put_varint(&mut r, 0);
        put_varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&body).unwrap();
        body = enc.finish().unwrap();
        let attrs = i16::from_be_bytes([b[21], b[22]]) | CODEC_GZIP;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
    }
    b.extend_from_slice(&body);
    let len = (b.len() - crate::batch::LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate;

    fn sample(gzip: bool) -> Vec<u8> {
        build_keyed_batch(
            1_000,
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (None, Some(b"x")),
                (Some(b"a"), Some(b"2")),
            ],
            (7, 1, 10),
            gzip,
        )
    }

    #[test]
    fn keys_values_and_offsets_parse_plain_and_gzip() {
        for gzip in [false, true] {
            let b = sample(gzip);
            let h = validate(&b).unwrap();
            let bytes = records_bytes(&b).unwrap();
            let recs = parse_records(&bytes, h.record_count).unwrap();
            let seen: Vec<(i32, Option<&[u8]>, bool)> = recs
                .iter()
                .map(|r| (r.offset_delta, r.key, r.tombstone))
                .collect();
            assert_eq!(
                seen,
                vec![
                    (0, Some(&b"a"[..]), false),
                    (1, Some(&b"b"[..]), true),
                    (2, None, false),
                    (3, Some(&b"a"[..]), false)
                ]
            );
            assert_eq!(first_keyless_record(&b).unwrap(), Some(2));
            assert_eq!(keyless_records(&b).unwrap(), vec![2]);
        }
    }

    #[test]
    fn a_rebuilt_batch_keeps_its_header_and_validates() {
        for gzip in [false, true] {
            let b = sample(gzip);
            let h = validate(&b).unwrap();
            let bytes = records_bytes(&b).unwrap();
            let recs = parse_records(&bytes, h.record_count).unwrap();
            let kept = [recs[1], recs[3]];
            let nb = rebuild_batch(&b, &kept).unwrap();
            let nh = validate(&nb).unwrap();
            assert_eq!(nh.record_count, 2);
            assert_eq!(
                (nh.base_offset, nh.last_offset_delta, nh.base_timestamp),
                (h.base_offset, h.last_offset_delta, h.base_timestamp)
            );
            assert_eq!(
                (nh.producer_id, nh.producer_epoch, nh.base_sequence),
                (7, 1, 10)
            );
            assert_eq!(nh.attributes, h.attributes, "same codec");
            let again = records_bytes(&nb).unwrap();
            let deltas: Vec<i32> = parse_records(&again, 2)
                .unwrap()
                .iter()
                .map(|r| r.offset_delta)
                .collect();
            assert_eq!(deltas, vec![1, 3]);
        }
    }

    #[test]
    fn keyless_records_are_counted_over_the_batches() {
        let keyed = build_keyed_batch(1, &[(Some(b"a"), Some(b"1"))], (-1, -1, -1), false);
        let mut two = keyed.clone();
        two.extend_from_slice(&sample(true));
        assert_eq!(keyless_in_batches(&keyed), Vec::<i32>::new());
        // The sample's keyless record is its third: index 1 + 2.
        assert_eq!(keyless_in_batches(&two), vec![3]);
        assert_eq!(keyless_in_batches(&two[..two.len() - 1]), Vec::<i32>::new());
    }

    #[test]
    fn malformed_and_unsupported_records_are_refused_not_panicked() {
        let b = sample(false);
        let h = validate(&b).unwrap();
        let bytes = records_bytes(&b).unwrap();
        for cut in 0..bytes.len() {
            let _ = parse_records(&bytes[..cut], h.record_count);
        }
        assert_eq!(
            parse_records(&bytes, h.record_count + 1),
            Err(Unreadable::Malformed)
        );
        let mut zstd = b.clone();
        zstd[22] |= 4;
        assert_eq!(records_bytes(&zstd), Err(Unreadable::Codec(4)));
        let mut gz = b.clone();
        gz[22] |= 1;
        assert_eq!(records_bytes(&gz), Err(Unreadable::Malformed));
    }
}
