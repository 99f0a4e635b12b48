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
//! Records are read uncompressed or inflated with any of Kafka's codecs
//! (gzip, snappy, lz4, zstd: `codec.rs`). A batch with an unknown codec is
//! `Unreadable`: the cleaner keeps it whole and the produce check lets it
//! pass (the append refuses such a batch before either sees it).
//!
//! A rebuilt batch keeps every header field of the original (base offset,
//! lastOffsetDelta, timestamps, producer id, epoch, base sequence, codec)
//! but the record count, the length and the CRC: the kept records are copied
//! byte for byte, so their offset and timestamp deltas stay valid. A clean
//! that stamps a delete horizon (KIP-534) also sets the base timestamp to it
//! and attribute bit 6, and rewrites each record's timestampDelta so every
//! record keeps its timestamp.

use crate::batch::{
    get_varint, put_varint, BatchHeader, ATTR_CODEC_MASK, ATTR_DELETE_HORIZON, CRC_START,
    HEADER_BYTES,
};
use crate::codec;

pub use crate::codec::{Unreadable, MAX_INFLATED_BYTES};

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
    codec::inflate(h.attributes & ATTR_CODEC_MASK, body)
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

/// The batch with only the `kept` records (see the module doc).
pub fn rebuild_batch(batch: &[u8], kept: &[Record<'_>]) -> Result<Vec<u8>, Unreadable> {
    rebuild_batch_with_horizon(batch, kept, None)
}

/// [`rebuild_batch`], stamping `delete_horizon_ms` into the batch when given
/// (KIP-534: base timestamp and attribute bit 6; each record's
/// timestampDelta is rewritten so its timestamp stays).
pub fn rebuild_batch_with_horizon(
    batch: &[u8],
    kept: &[Record<'_>],
    delete_horizon_ms: Option<i64>,
) -> Result<Vec<u8>, Unreadable> {
    let h = BatchHeader::parse(batch).map_err(|_| Unreadable::Malformed)?;
    let header = batch.get(..HEADER_BYTES).ok_or(Unreadable::Malformed)?;
    let mut records = Vec::with_capacity(kept.iter().map(|r| r.bytes.len()).sum());
    for r in kept {
        match delete_horizon_ms {
            None => records.extend_from_slice(r.bytes),
            Some(base) => restamp_record(&mut records, r.bytes, h.base_timestamp, base)?,
        }
    }
    let records = match h.attributes & ATTR_CODEC_MASK {
        codec::CODEC_NONE => records,
        codec => codec::deflate(codec, &records)?,
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
    if let Some(horizon) = delete_horizon_ms {
        let attributes = h.attributes | ATTR_DELETE_HORIZON;
        if let Some(field) = out.get_mut(21..23) {
            field.copy_from_slice(&attributes.to_be_bytes());
        }
        if let Some(field) = out.get_mut(27..35) {
            field.copy_from_slice(&horizon.to_be_bytes());
        }
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

/// Appends `record` (length prefix included) to `out` with its
/// timestampDelta moved from `old_base` to `new_base`.
fn restamp_record(
    out: &mut Vec<u8>,
    record: &[u8],
    old_base: i64,
    new_base: i64,
) -> Result<(), Unreadable> {
    let bad = Unreadable::Malformed;
    let (_, n) = get_varint(record).ok_or(bad)?;
    let body = record.get(n..).ok_or(bad)?;
    let (attributes, rest) = body.split_first().ok_or(bad)?;
    let (delta, n) = get_varint(rest).ok_or(bad)?;
    let after = rest.get(n..).ok_or(bad)?;
    let timestamp = old_base.checked_add(delta).ok_or(bad)?;
    let new_delta = timestamp.checked_sub(new_base).ok_or(bad)?;
    let mut new_body = Vec::with_capacity(body.len().saturating_add(10));
    new_body.push(*attributes);
    put_varint(&mut new_body, new_delta);
    new_body.extend_from_slice(after);
    put_varint(out, i64::try_from(new_body.len()).map_err(|_| bad)?);
    out.extend_from_slice(&new_body);
    Ok(())
}

/// A test record: key and value, `None` for null.
#[cfg(any(test, feature = "test-util"))]
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A batch of keyed records for tests: `(key, value)` pairs, `None` for a
/// null key or a null value (a tombstone), with producer fields, plain or
/// gzip.
#[cfg(any(test, feature = "test-util"))]
pub fn build_keyed_batch(
    base_timestamp: i64,
    records: &[KeyValue<'_>],
    producer: (i64, i16, i32),
    gzip: bool,
) -> Vec<u8> {
    let codec = if gzip {
        codec::CODEC_GZIP
    } else {
        codec::CODEC_NONE
    };
    build_keyed_batch_with_codec(base_timestamp, records, producer, codec)
}

/// [`build_keyed_batch`] with any codec.
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    reason = "a test-only builder of small batches"
)]
pub fn build_keyed_batch_with_codec(
    base_timestamp: i64,
    records: &[KeyValue<'_>],
    producer: (i64, i16, i32),
    codec: i16,
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
    if codec != codec::CODEC_NONE {
        body = codec::deflate(codec, &body).unwrap();
        let attrs = i16::from_be_bytes([b[21], b[22]]) | codec;
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

    /// Each record's timestamp: the batch's base plus its timestampDelta.
    fn timestamps(batch: &[u8]) -> Vec<i64> {
        let h = BatchHeader::parse(batch).unwrap();
        let bytes = records_bytes(batch).unwrap();
        parse_records(&bytes, h.record_count)
            .unwrap()
            .iter()
            .map(|r| {
                let (_, n) = get_varint(r.bytes).unwrap();
                let (delta, _) = get_varint(&r.bytes[n + 1..]).unwrap();
                h.base_timestamp + delta
            })
            .collect()
    }

    #[test]
    fn a_stamped_delete_horizon_keeps_every_record_time() {
        for codec in CODECS {
            let b = build_keyed_batch_with_codec(
                1_000,
                &[
                    (Some(b"a"), Some(b"1")),
                    (Some(b"b"), None),
                    (Some(b"c"), Some(b"3")),
                ],
                (7, 1, 0),
                codec,
            );
            let bytes = records_bytes(&b).unwrap();
            let recs = parse_records(&bytes, 3).unwrap();
            let kept = [recs[1], recs[2]];
            // A horizon far from the records' times: deltas grow to 9 bytes.
            let out = rebuild_batch_with_horizon(&b, &kept, Some(1 << 50)).unwrap();
            let h = validate(&out).unwrap();
            assert_eq!(h.delete_horizon_ms(), Some(1 << 50), "codec {codec}");
            assert_eq!(h.attributes & ATTR_CODEC_MASK, codec);
            assert_eq!((h.producer_id, h.base_sequence, h.record_count), (7, 0, 2));
            assert_eq!(timestamps(&out), timestamps(&b)[1..].to_vec());
            let again = records_bytes(&out).unwrap();
            let parsed = parse_records(&again, 2).unwrap();
            assert_eq!(
                parsed
                    .iter()
                    .map(|r| (r.key, r.tombstone, r.offset_delta))
                    .collect::<Vec<_>>(),
                vec![(Some(&b"b"[..]), true, 1), (Some(&b"c"[..]), false, 2)]
            );
            let plain = rebuild_batch(&b, &kept).unwrap();
            assert_eq!(validate(&plain).unwrap().delete_horizon_ms(), None);
        }
    }

    const CODECS: [i16; 5] = [
        codec::CODEC_NONE,
        codec::CODEC_GZIP,
        codec::CODEC_SNAPPY,
        codec::CODEC_LZ4,
        codec::CODEC_ZSTD,
    ];

    fn sample(codec: i16) -> Vec<u8> {
        build_keyed_batch_with_codec(
            1_000,
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (None, Some(b"x")),
                (Some(b"a"), Some(b"2")),
            ],
            (7, 1, 10),
            codec,
        )
    }

    #[test]
    fn keys_values_and_offsets_parse_with_every_codec() {
        for codec in CODECS {
            let b = sample(codec);
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
        for codec in CODECS {
            let b = sample(codec);
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
        two.extend_from_slice(&sample(codec::CODEC_LZ4));
        assert_eq!(keyless_in_batches(&keyed), Vec::<i32>::new());
        // The sample's keyless record is its third: index 1 + 2.
        assert_eq!(keyless_in_batches(&two), vec![3]);
        assert_eq!(keyless_in_batches(&two[..two.len() - 1]), Vec::<i32>::new());
    }

    #[test]
    fn malformed_and_unsupported_records_are_refused_not_panicked() {
        let b = sample(codec::CODEC_NONE);
        let h = validate(&b).unwrap();
        let bytes = records_bytes(&b).unwrap();
        for cut in 0..bytes.len() {
            let _ = parse_records(&bytes[..cut], h.record_count);
        }
        assert_eq!(
            parse_records(&bytes, h.record_count + 1),
            Err(Unreadable::Malformed)
        );
        let mut unknown = b.clone();
        unknown[22] |= 5;
        assert_eq!(records_bytes(&unknown), Err(Unreadable::Codec(5)));
        // Plain records claiming a codec do not inflate.
        for codec in &CODECS[1..] {
            let mut claimed = b.clone();
            claimed[22] |= *codec as u8;
            assert_eq!(
                records_bytes(&claimed),
                Err(Unreadable::Malformed),
                "codec {codec}"
            );
        }
    }
}
