//! Produce-side schema validation, for topics that ask for it with
//! `confluent.value.schema.validation=true` (or the `key` variant): every
//! record's value (key) must start with Confluent's wire header, magic
//! byte 0 and a 4-byte big-endian schema id, and that id must be
//! registered, not deleted, under the topic's subject (TopicNameStrategy:
//! `<topic>-value`, `<topic>-key`). A Protobuf id is followed by the
//! message indexes (Confluent's framing), which must be well formed. A
//! null value or key (a tombstone) has no schema and passes. A batch with one bad record is refused whole with
//! INVALID_RECORD.
//!
//! This is the only place Strom decodes records, and only for those
//! topics. Compressed batches are refused there: the broker has no codecs
//! to decompress them.

use bytes::Bytes;
use std::collections::HashMap;

use strom_engine::batch::{self, BatchHeader};
use strom_registry::schema::SchemaType;
use strom_registry::SubjectIds;

use crate::shard::Shard;

pub const VALUE_VALIDATION: &str = "confluent.value.schema.validation";
pub const KEY_VALIDATION: &str = "confluent.key.schema.validation";
/// Confluent's wire header: magic byte 0, then the schema id.
const MAGIC: u8 = 0;
const HEADER_BYTES: usize = 5;
/// A zig-zag varint of an `i32` takes at most 5 bytes.
const VARINT_MAX_BYTES: usize = 5;

/// Checks `records` of `topic` when the topic validates; `Err` says why
/// the batch is refused.
pub fn check(shard: &Shard, topic: &str, records: &Bytes) -> Result<(), String> {
    let metadata = shard.metadata();
    let Some(meta) = metadata.topics.get(topic) else {
        return Ok(());
    };
    let on = |key: &str| meta.configs.get(key).is_some_and(|v| v == "true");
    let (keys, values) = (on(KEY_VALIDATION), on(VALUE_VALIDATION));
    if !keys && !values {
        return Ok(());
    }
    let ids = match shard.config.schema_ids.read() {
        Ok(ids) => ids,
        Err(poisoned) => poisoned.into_inner(),
    };
    let value_subject = format!("{topic}-value");
    let key_subject = format!("{topic}-key");
    for_each_record(records, |key, value| {
        if values {
            check_payload(value, &value_subject, &ids)?;
        }
        if keys {
            check_payload(key, &key_subject, &ids)?;
        }
        Ok(())
    })
}

/// A zig-zag varlong takes at most 10 bytes.
const VARLONG_MAX_BYTES: usize = 10;

/// Walks every batch in `records` and calls `f` with each record's key
/// and value, as slices of the request's bytes: nothing is copied or
/// allocated per record, and the CRC is left to the engine, which checks
/// it after this. Everything is bounds-checked: these bytes come from a
/// client. Only uncompressed v2 batches can be read; anything else, or a
/// record whose lengths do not add up, refuses the batch.
fn for_each_record(
    records: &Bytes,
    mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>) -> Result<(), String>,
) -> Result<(), String> {
    let undecodable = |why: &str| format!("a record batch that cannot be decoded: {why}");
    let mut rest: &[u8] = records;
    while !rest.is_empty() {
        let header = BatchHeader::parse(rest).map_err(|e| undecodable(&e.to_string()))?;
        let (Some(whole), Some(next)) = (
            rest.get(..header.total_bytes()),
            rest.get(header.total_bytes()..),
        ) else {
            return Err(undecodable("a batch longer than the request"));
        };
        rest = next;
        if header.is_compressed() {
            return Err("records cannot be validated against the schema registry: compressed batches are not supported".into());
        }
        let count = usize::try_from(header.record_count).unwrap_or(0);
        let mut body = whole.get(batch::HEADER_BYTES..).unwrap_or_default();
        for _ in 0..count {
            let (key, value) = read_record(&mut body).map_err(undecodable)?;
            f(key, value)?;
        }
        if !body.is_empty() {
            return Err(undecodable("bytes after the last record"));
        }
    }
    Ok(())
}

/// A record's key and value; `None` is null.
type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Reads one record (Kafka's `DefaultRecord`) off the front of `buf`:
/// its key and value.
fn read_record<'a>(buf: &mut &'a [u8]) -> Result<KeyValue<'a>, &'static str> {
    let length = usize::try_from(read_varint(buf, VARINT_MAX_BYTES)?)
        .map_err(|_| "a negative record length")?;
    let (Some(mut r), Some(rest)) = (buf.get(..length), buf.get(length..)) else {
        return Err("a record longer than its batch");
    };
    *buf = rest;
    let (_attributes, after) = r.split_first().ok_or("a record without attributes")?;
    r = after;
    read_varint(&mut r, VARLONG_MAX_BYTES)?; // timestamp delta
    read_varint(&mut r, VARINT_MAX_BYTES)?; // offset delta
    let key = read_bytes(&mut r)?;
    let value = read_bytes(&mut r)?;
    let headers = read_varint(&mut r, VARINT_MAX_BYTES)?;
    let headers = usize::try_from(headers).map_err(|_| "a negative header count")?;
    for _ in 0..headers {
        read_bytes(&mut r)?.ok_or("a null header key")?;
        read_bytes(&mut r)?;
    }
    if !r.is_empty() {
        return Err("a record longer than its fields");
    }
    Ok((key, value))
}

/// A varint length, then that many bytes; -1 is null.
fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, &'static str> {
    let length = read_varint(buf, VARINT_MAX_BYTES)?;
    if length == -1 {
        return Ok(None);
    }
    let length = usize::try_from(length).map_err(|_| "a negative length")?;
    let (Some(bytes), Some(rest)) = (buf.get(..length), buf.get(length..)) else {
        return Err("a field longer than its record");
    };
    *buf = rest;
    Ok(Some(bytes))
}

/// A zig-zag varint of at most `max_bytes` bytes.
fn read_varint(buf: &mut &[u8], max_bytes: usize) -> Result<i64, &'static str> {
    let mut n: u64 = 0;
    for i in 0..max_bytes {
        let (&b, rest) = buf.split_first().ok_or("a truncated varint")?;
        *buf = rest;
        let shift = u32::try_from(i).unwrap_or(0).saturating_mul(7);
        n |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            let half = n.checked_shr(1).unwrap_or(0) as i64;
            return Ok(if n & 1 == 0 { half } else { !half });
        }
    }
    Err("a varint too long")
}

fn check_payload(
    payload: Option<&[u8]>,
    subject: &str,
    ids: &HashMap<String, SubjectIds>,
) -> Result<(), String> {
    let Some(p) = payload else {
        return Ok(());
    };
    let id = match p.get(..HEADER_BYTES) {
        Some([MAGIC, a, b, c, d]) => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => {
            return Err(format!(
                "a record for subject {subject} does not start with a schema id (magic byte 0, 4-byte id)"
            ))
        }
    };
    match ids.get(subject).and_then(|s| s.get(&id)) {
        None => Err(format!(
            "schema id {id} is not registered under subject {subject}"
        )),
        Some(SchemaType::Protobuf) => {
            let rest = p.get(HEADER_BYTES..).unwrap_or_default();
            check_message_indexes(rest)
                .map_err(|why| format!("a Protobuf record for subject {subject} (id {id}): {why}"))
        }
        Some(_) => Ok(()),
    }
}

/// Confluent's Protobuf framing after the id: a zig-zag varint count,
/// then that many zig-zag varint indexes (the message's path in the
/// file), none negative. The count 0 alone stands for the first message.
fn check_message_indexes(mut rest: &[u8]) -> Result<(), &'static str> {
    let count = read_zigzag(&mut rest)?;
    // Each index takes a byte at least: a count past what is left is a lie.
    let count = usize::try_from(count).map_err(|_| "a negative message index count")?;
    if count > rest.len() {
        return Err("more message indexes than bytes");
    }
    for _ in 0..count {
        if read_zigzag(&mut rest)? < 0 {
            return Err("a negative message index");
        }
    }
    Ok(())
}

fn read_zigzag(buf: &mut &[u8]) -> Result<i32, &'static str> {
    let n = read_varint(buf, VARINT_MAX_BYTES)?;
    i32::try_from(n).map_err(|_| "a message index out of range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn ids() -> HashMap<String, SubjectIds> {
        HashMap::from([(
            "t-value".to_string(),
            HashMap::from([(7, SchemaType::Avro), (9, SchemaType::Protobuf)]),
        )])
    }

    #[test]
    fn a_protobuf_payload_needs_well_formed_message_indexes() {
        for good in [
            &[0u8, 0, 0, 0, 9, 0, 8, 1][..],
            // [1, 0]: count 2 (zig-zag 4), then 1 (2) and 0.
            &[0, 0, 0, 0, 9, 4, 2, 0, 8, 1],
            // [300]: count 1 (2), then 300 (zig-zag 600 = 0xd8 0x04).
            &[0, 0, 0, 0, 9, 2, 0xd8, 0x04],
        ] {
            assert!(
                check_payload(Some(good), "t-value", &ids()).is_ok(),
                "{good:?}"
            );
        }
        for bad in [
            &[0u8, 0, 0, 0, 9][..],
            &[0, 0, 0, 0, 9, 0xff],
            &[0, 0, 0, 0, 9, 1],
            &[0, 0, 0, 0, 9, 2, 1],
            &[0, 0, 0, 0, 9, 40, 0],
            &[0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ] {
            assert!(
                check_payload(Some(bad), "t-value", &ids()).is_err(),
                "{bad:?}"
            );
        }
        // An Avro id needs no indexes.
        let avro = [0u8, 0, 0, 0, 7];
        assert!(check_payload(Some(&avro), "t-value", &ids()).is_ok());
    }

    #[test]
    fn a_payload_needs_the_header_and_an_id_of_its_subject() {
        let ok = [0u8, 0, 0, 0, 7, 42];
        assert!(check_payload(Some(&ok), "t-value", &ids()).is_ok());
        assert!(
            check_payload(None, "t-value", &ids()).is_ok(),
            "a tombstone"
        );
        for bad in [
            &[0u8, 0, 0, 0, 8, 42][..],
            &[1, 0, 0, 0, 7, 42],
            &[0, 0, 0],
            b"",
        ] {
            assert!(check_payload(Some(bad), "t-value", &ids()).is_err());
        }
        assert!(check_payload(Some(&ok), "u-value", &ids()).is_err());
    }

    #[test]
    fn garbage_batches_are_refused_not_panicked_on() {
        for junk in [&b"\x00\x01"[..], &[0xff; 80], &[0; 61]] {
            let r = for_each_record(&Bytes::copy_from_slice(junk), |_, _| Ok(()));
            assert!(r.is_err(), "{junk:?}");
        }
    }

    fn record(i: usize, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Record {
        let mut headers = indexmap::IndexMap::new();
        for h in 0..i % 3 {
            headers.insert(
                kafka_protocol::protocol::StrBytes::from_string(format!("h{h}")),
                (h % 2 == 0).then(|| Bytes::from(vec![7u8; h * 50])),
            );
        }
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // A constant offset - sequence keeps the records in one batch.
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + (i as i64) * 1_000_003,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers,
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records, &options).unwrap();
        buf.to_vec()
    }

    type Seen = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;

    fn walk(bytes: &[u8]) -> Result<Seen, String> {
        let mut seen = Vec::new();
        for_each_record(&Bytes::copy_from_slice(bytes), |k, v| {
            seen.push((k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
            Ok(())
        })?;
        Ok(seen)
    }

    /// The walk reads what kafka-protocol's encoder wrote, and what its
    /// decoder reads, record for record.
    #[test]
    fn the_walk_matches_kafka_protocols_codec() {
        let batch1: Vec<Record> = (0..300)
            .map(|i| {
                let key = (i % 4 != 0).then(|| vec![b'k'; i % 200]);
                let value = (i % 5 != 0).then(|| vec![(i % 251) as u8; i * 7 % 3000]);
                record(i, key, value)
            })
            .collect();
        let batch2 = vec![record(0, None, Some(vec![0, 0, 0, 0, 7]))];
        let mut bytes = encode(&batch1, Compression::None);
        bytes.extend(encode(&batch2, Compression::None));
        let seen = walk(&bytes).unwrap();
        let mut decoded = Vec::new();
        let mut buf = Bytes::from(bytes.clone());
        while !buf.is_empty() {
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            decoded.extend(
                set.records
                    .into_iter()
                    .map(|r| (r.key.map(|k| k.to_vec()), r.value.map(|v| v.to_vec()))),
            );
        }
        assert_eq!(seen.len(), 301);
        assert_eq!(seen, decoded);
        // Every cut of the bytes is refused or read without a panic; a cut
        // inside the first batch is always refused.
        for cut in 0..bytes.len() {
            let r = walk(&bytes[..cut]);
            if cut < bytes.len() - encode(&batch2, Compression::None).len() && cut > 0 {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        // Flipped bytes never panic.
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0xa5;
            let _ = walk(&bad);
        }
    }

    #[test]
    fn compressed_and_old_batches_are_refused() {
        let batch = vec![record(1, None, Some(vec![0, 0, 0, 0, 7]))];
        // The codec bits of the attributes (gzip); the walk needs no more.
        let mut gzip = encode(&batch, Compression::None);
        gzip[22] |= 1; // the low byte of the attributes
        assert!(walk(&gzip).unwrap_err().contains("compressed"));
        let mut v1 = encode(&batch, Compression::None);
        v1[16] = 1; // magic
        assert!(walk(&v1).is_err());
    }
}
