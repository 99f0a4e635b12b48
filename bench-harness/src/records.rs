//! RecordBatch v2 encoding for producers and walking for consumers.
//!
//! Layout (big-endian), see strom_engine::batch for the field table:
//! baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C of attributes..end), attributes i16, lastOffsetDelta i32,
//! baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
//! baseSequence i32, recordCount i32, records.
//!
//! An idempotent producer's batches carry its producer id and epoch and the
//! partition's next sequence number ([`ProducerFields`]); a plain producer's
//! carry -1 in all three. They lie inside the CRC, so they are written
//! before it is computed.
//!
//! Each payload starts with the message's intended send time as u64
//! nanoseconds since the Unix epoch (when the payload has 8 bytes), so a
//! consumer measures end-to-end latency finer than the millisecond record
//! timestamps allow.

use anyhow::{bail, Result};

pub const HEADER_BYTES: usize = 61;
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const CODEC_MASK: i16 = 0x07;
const ATTR_CONTROL: i16 = 1 << 5;

/// The idempotent-producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    /// What a producer without idempotence sends.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// The sequence number after `sequence` advanced by `delta` records,
/// wrapping past `i32::MAX` to 0 as Kafka's producers and brokers do
/// (`DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(sequence: i32, delta: i32) -> i32 {
    assert!(
        sequence >= 0 && delta >= 0,
        "sequence {sequence} delta {delta}"
    );
    if sequence > i32::MAX - delta {
        delta - (i32::MAX - sequence) - 1
    } else {
        sequence + delta
    }
}

/// An open batch that records are appended to.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_ts_ms: i64,
    max_ts_ms: i64,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity + HEADER_BYTES);
        buf.resize(HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_ts_ms: 0,
            max_ts_ms: 0,
        }
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record. Timestamps must not go backwards in a batch.
    pub fn append(&mut self, ts_ms: i64, key: Option<&[u8]>, value: &[u8]) {
        self.append_parts(ts_ms, key, value, &[]);
    }

    /// Appends one record whose value is `head` followed by `tail`, so a
    /// producer can stamp a payload without copying it first.
    pub fn append_parts(&mut self, ts_ms: i64, key: Option<&[u8]>, head: &[u8], tail: &[u8]) {
        let value_len = head.len() + tail.len();
        if self.count == 0 {
            self.base_ts_ms = ts_ms;
        }
        debug_assert!(ts_ms >= self.base_ts_ms);
        self.max_ts_ms = self.max_ts_ms.max(ts_ms);
        let mut body = [0u8; 40];
        let mut n = 0;
        body[n] = 0; // attributes
        n += 1;
        n += put_varint(&mut body[n..], ts_ms - self.base_ts_ms);
        n += put_varint(&mut body[n..], self.count as i64);
        match key {
            Some(k) => n += put_varint(&mut body[n..], k.len() as i64),
            None => n += put_varint(&mut body[n..], -1),
        }
        let key_len = key.map_or(0, |k| k.len());
        let mut framing = [0u8; 12];
        let mut t = put_varint(&mut framing, value_len as i64);
        let value_len_bytes = t;
        t += put_varint(&mut framing[t..], 0); // header count
        let record_len = n + key_len + t + value_len;
        let mut len_buf = [0u8; 10];
        let l = put_varint(&mut len_buf, record_len as i64);
        self.buf.extend_from_slice(&len_buf[..l]);
        self.buf.extend_from_slice(&body[..n]);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        self.buf.extend_from_slice(&framing[..value_len_bytes]);
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(tail);
        self.buf.extend_from_slice(&framing[value_len_bytes..t]);
        self.count += 1;
    }

    /// Fills in the header of a batch without a producer id and returns it.
    pub fn finish(self) -> Vec<u8> {
        self.finish_with(ProducerFields::NONE)
    }

    /// Fills in the header, with `producer`'s fields, and returns the
    /// finished batch.
    pub fn finish_with(mut self, producer: ProducerFields) -> Vec<u8> {
        assert!(self.count > 0, "an empty batch is never sent");
        // Either all three fields are set or none (Kafka's NO_PRODUCER_ID).
        assert_eq!(
            producer.producer_id < 0,
            producer.base_sequence < 0,
            "{producer:?}"
        );
        let b = &mut self.buf;
        let batch_length = (b.len() - LOG_OVERHEAD) as i32;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = 2;
        b[21..23].copy_from_slice(&0i16.to_be_bytes());
        b[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&self.base_ts_ms.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_ts_ms.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&producer.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT]
            .copy_from_slice(&producer.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE_AT..57].copy_from_slice(&producer.base_sequence.to_be_bytes());
        b[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

fn put_varint(out: &mut [u8], v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut i = 0;
    while z >= 0x80 {
        out[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    out[i] = z as u8;
    i + 1
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&b) = buf.get(*pos) else {
            bail!("truncated varint")
        };
        *pos += 1;
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// What a consumer learns from one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    /// The first 8 payload bytes as a u64 (the producer's intended send time
    /// in ns since the epoch), if the payload has them.
    pub payload_ns: Option<u64>,
    pub value_bytes: usize,
}

/// Summary of walking a fetched `records` blob.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkSummary {
    /// The offset to fetch next (last record offset + 1), if any batch was complete.
    pub next_offset: Option<i64>,
    pub records: u64,
}

/// Walks every complete batch in `buf`, calling `f` for each record at or
/// above `from_offset`. A partial trailing batch (allowed in fetch
/// responses) is ignored. Compressed batches are counted from their headers
/// (timestamp = maxTimestamp, no payload time), control batches skipped.
pub fn walk_batches(
    buf: &[u8],
    from_offset: i64,
    mut f: impl FnMut(SeenRecord),
) -> Result<WalkSummary> {
    let mut pos = 0;
    let mut summary = WalkSummary::default();
    while buf.len() - pos >= HEADER_BYTES {
        let b = &buf[pos..];
        let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
        let batch_length = i32::from_be_bytes(b[8..12].try_into().unwrap_or_default());
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            bail!("batch at offset {base_offset}: bad batchLength {batch_length}");
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        if total > b.len() {
            break;
        }
        let magic = b[16] as i8;
        if magic != 2 {
            bail!("batch at offset {base_offset}: magic {magic}, only v2 is supported");
        }
        let attributes = i16::from_be_bytes([b[21], b[22]]);
        let last_offset_delta = i32::from_be_bytes(b[23..27].try_into().unwrap_or_default());
        let base_ts = i64::from_be_bytes(b[27..35].try_into().unwrap_or_default());
        let max_ts = i64::from_be_bytes(b[35..43].try_into().unwrap_or_default());
        let count = i32::from_be_bytes(b[57..61].try_into().unwrap_or_default());
        let batch = &b[..total];
        pos += total;
        summary.next_offset = Some(base_offset + last_offset_delta as i64 + 1);
        if attributes & ATTR_CONTROL != 0 {
            continue;
        }
        if attributes & CODEC_MASK != 0 {
            for i in 0..count.max(0) as i64 {
                if base_offset + i >= from_offset {
                    summary.records += 1;
                    f(SeenRecord {
                        offset: base_offset + i,
                        timestamp_ms: max_ts,
                        payload_ns: None,
                        value_bytes: 0,
                    });
                }
            }
            continue;
        }
        let mut p = HEADER_BYTES;
        for _ in 0..count {
            let len = get_varint(batch, &mut p)?;
            let end = p + usize::try_from(len).unwrap_or(usize::MAX).min(batch.len());
            if end > batch.len() {
                bail!("record overruns its batch at offset {base_offset}");
            }
            p += 1; // attributes
            let ts_delta = get_varint(batch, &mut p)?;
            let off_delta = get_varint(batch, &mut p)?;
            let key_len = get_varint(batch, &mut p)?;
            if key_len > 0 {
                p += key_len as usize;
            }
            let value_len = get_varint(batch, &mut p)?;
            let offset = base_offset + off_delta;
            if value_len >= 0 && p + value_len as usize > end {
                bail!("record value overruns its record at offset {offset}");
            }
            let value = if value_len > 0 {
                &batch[p..p + value_len as usize]
            } else {
                &[][..]
            };
            if offset >= from_offset {
                summary.records += 1;
                let payload_ns = value
                    .get(0..8)
                    .map(|v| u64::from_be_bytes(v.try_into().unwrap_or_default()));
                f(SeenRecord {
                    offset,
                    timestamp_ms: base_ts + ts_delta,
                    payload_ns,
                    value_bytes: value.len(),
                });
            }
            p = end;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_batches_the_engine_accepts() {
        let mut b = BatchBuilder::new(4096);
        let v1 = 123u64.to_be_bytes();
        b.append(1000, None, &[v1.as_slice(), &[7u8; 100]].concat());
        b.append(1002, Some(b"key"), &[9u8; 300]);
        let bytes = b.finish();
        let h = strom_engine::batch::validate(&bytes).unwrap();
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1002);
    }

    #[test]
    fn matches_the_engine_reference_encoder() {
        let values: [&[u8]; 3] = [b"a", b"bb", &[5u8; 200]];
        let mut b = BatchBuilder::new(1024);
        for v in values {
            b.append(77, None, v);
        }
        // Clients send partitionLeaderEpoch -1 (no epoch); the engine's test
        // encoder writes 0. The field is outside the CRC.
        let mut reference = strom_engine::batch::build_batch(77, &values);
        strom_engine::batch::set_partition_leader_epoch(&mut reference, -1);
        assert_eq!(b.finish(), reference);
    }

    #[test]
    fn carries_the_idempotent_producer_fields_inside_the_crc() {
        let values: [&[u8]; 3] = [b"a", b"bb", &[5u8; 200]];
        let producer = ProducerFields {
            producer_id: 0x0102_0304_0506_0708,
            producer_epoch: 0x090a,
            base_sequence: 0x0b0c_0d0e,
        };
        let mut b = BatchBuilder::new(1024);
        for v in values {
            b.append(77, None, v);
        }
        let bytes = b.finish_with(producer);
        // Kafka's RecordBatch v2 offsets, counted from the batch start.
        assert_eq!(bytes[43..51], 0x0102_0304_0506_0708i64.to_be_bytes());
        assert_eq!(bytes[51..53], 0x090ai16.to_be_bytes());
        assert_eq!(bytes[53..57], 0x0b0c_0d0ei32.to_be_bytes());
        let h = strom_engine::batch::validate(&bytes).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (0x0102_0304_0506_0708, 0x090a, 0x0b0c_0d0e)
        );
        assert_eq!(h.record_count, 3);
        let mut reference = strom_engine::batch::build_batch_with_producer(
            77,
            &values,
            producer.producer_id,
            producer.producer_epoch,
            producer.base_sequence,
        );
        strom_engine::batch::set_partition_leader_epoch(&mut reference, -1);
        assert_eq!(bytes, reference);
        // The CRC covers the producer fields: changing one breaks it.
        let mut tampered = bytes.clone();
        tampered[56] ^= 1;
        assert!(strom_engine::batch::validate(&tampered).is_err());
    }

    #[test]
    fn a_plain_batch_has_no_producer() {
        let mut b = BatchBuilder::new(64);
        b.append(1, None, b"x");
        let h = strom_engine::batch::validate(&b.finish()).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max_to_zero() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 5, 5), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX - 4, 5), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX, 3), 2);
        assert_eq!(increment_sequence(i32::MAX - 1, i32::MAX), i32::MAX - 2);
        // Agrees with the broker's rule.
        for (s, d) in [(0, 1), (i32::MAX, 1), (i32::MAX - 2, 7), (12345, 0)] {
            assert_eq!(
                increment_sequence(s, d),
                strom_engine::producer_state::increment_sequence(s, d)
            );
        }
    }

    #[test]
    fn walks_what_it_builds() {
        let mut out = Vec::new();
        for (base, n) in [(0i64, 3), (3, 2)] {
            let mut b = BatchBuilder::new(1024);
            for i in 0..n {
                let ns = (base as u64 + i as u64) * 1_000_000;
                b.append(
                    5 + i,
                    None,
                    &[ns.to_be_bytes().as_slice(), &[1u8; 50]].concat(),
                );
            }
            let mut bytes = b.finish();
            strom_engine::batch::set_base_offset(&mut bytes, base);
            out.extend_from_slice(&bytes);
        }
        // A partial trailing batch is ignored.
        let head = out[..40].to_vec();
        out.extend_from_slice(&head);
        let mut seen = Vec::new();
        let s = walk_batches(&out, 1, |r| seen.push(r)).unwrap();
        assert_eq!(s.next_offset, Some(5));
        assert_eq!(s.records, 4);
        assert_eq!(seen[0].offset, 1);
        assert_eq!(seen[0].payload_ns, Some(1_000_000));
        assert_eq!(seen[0].timestamp_ms, 6);
        assert_eq!(seen[3].offset, 4);
        assert_eq!(seen[3].value_bytes, 58);
    }

    #[test]
    fn rejects_garbage() {
        let mut bytes = BatchBuilder::new(64);
        bytes.append(1, None, b"x");
        let mut bytes = bytes.finish();
        bytes[16] = 1;
        assert!(walk_batches(&bytes, 0, |_| {}).is_err());
    }
}
