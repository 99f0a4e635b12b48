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

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// Decodes every batch in `records` and calls `f` with each record's key
/// and value. The decoder runs under `catch_unwind`: these bytes come from
/// a client and have not been checked yet (the engine checks the CRC after
/// this).
fn for_each_record(
    records: &Bytes,
    mut f: impl FnMut(Option<&Bytes>, Option<&Bytes>) -> Result<(), String>,
) -> Result<(), String> {
    let mut buf = records.clone();
    while buf.has_remaining() {
        let set = catch_unwind(AssertUnwindSafe(|| RecordBatchDecoder::decode(&mut buf)))
            .map_err(|_| "a record batch that cannot be decoded".to_string())?
            .map_err(|e| format!("records cannot be validated against the schema registry: {e}"))?;
        for r in &set.records {
            f(r.key.as_ref(), r.value.as_ref())?;
        }
    }
    Ok(())
}

fn check_payload(
    payload: Option<&Bytes>,
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
    let mut n: u32 = 0;
    for i in 0..VARINT_MAX_BYTES {
        let (&b, rest) = buf.split_first().ok_or("truncated message indexes")?;
        *buf = rest;
        let shift = u32::try_from(i).unwrap_or(0).saturating_mul(7);
        n |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            let half = n.checked_shr(1).unwrap_or(0) as i32;
            return Ok(if n & 1 == 0 { half } else { !half });
        }
    }
    Err("a message index varint longer than 5 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let good = Bytes::copy_from_slice(good);
            assert!(
                check_payload(Some(&good), "t-value", &ids()).is_ok(),
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
            let bad = Bytes::copy_from_slice(bad);
            assert!(
                check_payload(Some(&bad), "t-value", &ids()).is_err(),
                "{bad:?}"
            );
        }
        // An Avro id needs no indexes.
        let avro = Bytes::from_static(&[0, 0, 0, 0, 7]);
        assert!(check_payload(Some(&avro), "t-value", &ids()).is_ok());
    }

    #[test]
    fn a_payload_needs_the_header_and_an_id_of_its_subject() {
        let ok = Bytes::from_static(&[0, 0, 0, 0, 7, 42]);
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
            let bad = Bytes::copy_from_slice(bad);
            assert!(check_payload(Some(&bad), "t-value", &ids()).is_err());
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
}
