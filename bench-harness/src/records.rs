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
//!
//! A compressed batch ([`Compression`]) keeps the 61-byte header in the
//! clear and compresses everything after it, the records, with the codec
//! named in attributes bits 0-2, as Kafka's producers do. The codecs are
//! the engine's (`strom_engine::codec`: gzip, snappy in the xerial frame,
//! the LZ4 frame, zstd level 3), so the harness and the broker agree on
//! the framing; consumers inflate with the same module.

use anyhow::{anyhow, bail, Result};
use strom_engine::codec;

pub const HEADER_BYTES: usize = 61;
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const CODEC_MASK: i16 = 0x07;
const ATTR_CONTROL: i16 = 1 << 5;

/// A producer's `compression.type`: the codec of every batch it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec id in a batch's attributes bits 0-2.
    pub fn codec(self) -> i16 {
        match self {
            Compression::None => codec::CODEC_NONE,
            Compression::Gzip => codec::CODEC_GZIP,
            Compression::Snappy => codec::CODEC_SNAPPY,
            Compression::Lz4 => codec::CODEC_LZ4,
            Compression::Zstd => codec::CODEC_ZSTD,
        }
    }

    /// Kafka's name for it (`compression.type`).
    pub fn label(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Kafka's name of a codec id, for messages.
fn codec_name(id: i16) -> String {
    match id {
        codec::CODEC_NONE => "none".into(),
        codec::CODEC_GZIP => "gzip".into(),
        codec::CODEC_SNAPPY => "snappy".into(),
        codec::CODEC_LZ4 => "lz4".into(),
        codec::CODEC_ZSTD => "zstd".into(),
        other => format!("codec {other}"),
    }
}

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

    /// Bytes of the records appended so far, before any compression.
    pub fn records_len_bytes(&self) -> usize {
        self.buf.len() - HEADER_BYTES
    }

    /// Fills in the header, with `producer`'s fields, and returns the
    /// finished batch.
    pub fn finish_with(self, producer: ProducerFields) -> Vec<u8> {
        let (count, base_ts_ms, max_ts_ms) = (self.count, self.base_ts_ms, self.max_ts_ms);
        let mut buf = self.buf;
        write_header(&mut buf, 0, count, base_ts_ms, max_ts_ms, producer);
        buf
    }

    /// Like [`BatchBuilder::finish_with`], with the records compressed by
    /// `compression` and its codec in the attributes.
    pub fn finish_compressed(
        self,
        producer: ProducerFields,
        compression: Compression,
    ) -> Result<Vec<u8>> {
        if compression == Compression::None {
            return Ok(self.finish_with(producer));
        }
        let packed = codec::deflate(compression.codec(), &self.buf[HEADER_BYTES..])
            .map_err(|e| anyhow!("compressing a batch with {}: {e:?}", compression.label()))?;
        let mut buf = Vec::with_capacity(HEADER_BYTES + packed.len());
        buf.resize(HEADER_BYTES, 0);
        buf.extend_from_slice(&packed);
        write_header(
            &mut buf,
            compression.codec(),
            self.count,
            self.base_ts_ms,
            self.max_ts_ms,
            producer,
        );
        Ok(buf)
    }
}

/// Fills in the 61-byte header of a batch whose records (compressed with
/// the codec in `attributes`, if any) follow it in `b`.
fn write_header(
    b: &mut [u8],
    attributes: i16,
    count: i32,
    base_ts_ms: i64,
    max_ts_ms: i64,
    producer: ProducerFields,
) {
    assert!(count > 0, "an empty batch is never sent");
    assert!(b.len() >= HEADER_BYTES);
    // Either all three fields are set or none (Kafka's NO_PRODUCER_ID).
    assert_eq!(
        producer.producer_id < 0,
        producer.base_sequence < 0,
        "{producer:?}"
    );
    let batch_length = (b.len() - LOG_OVERHEAD) as i32;
    b[0..8].copy_from_slice(&0i64.to_be_bytes());
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    b[16] = 2;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[27..35].copy_from_slice(&base_ts_ms.to_be_bytes());
    b[35..43].copy_from_slice(&max_ts_ms.to_be_bytes());
    b[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&producer.producer_id.to_be_bytes());
    b[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT].copy_from_slice(&producer.producer_epoch.to_be_bytes());
    b[BASE_SEQUENCE_AT..57].copy_from_slice(&producer.base_sequence.to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
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
/// responses) is ignored, control batches are skipped, and compressed
/// batches are inflated first (with the engine's codecs) so their records
/// are read like any other.
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
        let header = BatchFields {
            base_offset,
            base_ts: i64::from_be_bytes(b[27..35].try_into().unwrap_or_default()),
            count: i32::from_be_bytes(b[57..61].try_into().unwrap_or_default()),
        };
        let body = &b[HEADER_BYTES..total];
        pos += total;
        summary.next_offset = Some(base_offset + last_offset_delta as i64 + 1);
        if attributes & ATTR_CONTROL != 0 {
            continue;
        }
        let codec_id = attributes & CODEC_MASK;
        if codec_id == codec::CODEC_NONE {
            walk_records(body, &header, from_offset, &mut summary, &mut f)?;
        } else {
            let records = codec::inflate(codec_id, body).map_err(|e| {
                anyhow!(
                    "batch at offset {base_offset}: {} records unreadable: {e:?}",
                    codec_name(codec_id)
                )
            })?;
            walk_records(&records, &header, from_offset, &mut summary, &mut f)?;
        }
    }
    Ok(summary)
}

/// The header fields a batch's records are read against.
struct BatchFields {
    base_offset: i64,
    base_ts: i64,
    count: i32,
}

/// Reads the `count` records of one batch from `records` (the bytes after
/// the header, inflated if the batch was compressed).
fn walk_records(
    records: &[u8],
    batch: &BatchFields,
    from_offset: i64,
    summary: &mut WalkSummary,
    f: &mut impl FnMut(SeenRecord),
) -> Result<()> {
    let base_offset = batch.base_offset;
    let mut p = 0;
    for _ in 0..batch.count {
        let len = get_varint(records, &mut p)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| p.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(|| anyhow!("record overruns its batch at offset {base_offset}"))?;
        p += 1; // attributes
        let ts_delta = get_varint(records, &mut p)?;
        let off_delta = get_varint(records, &mut p)?;
        let key_len = get_varint(records, &mut p)?;
        if key_len > 0 {
            p = p.saturating_add(key_len as usize);
        }
        let value_len = get_varint(records, &mut p)?;
        let offset = base_offset + off_delta;
        if value_len >= 0 && p.saturating_add(value_len as usize) > end {
            bail!("record value overruns its record at offset {offset}");
        }
        let value = if value_len > 0 {
            &records[p..p + value_len as usize]
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
                timestamp_ms: batch.base_ts + ts_delta,
                payload_ns,
                value_bytes: value.len(),
            });
        }
        p = end;
    }
    Ok(())
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

    const ALL_CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Half-zero values, as a workload with randomBytesRatio 0.5 sends.
    fn compressible_value(i: u64) -> Vec<u8> {
        let mut v = vec![0u8; 1024];
        v[..8].copy_from_slice(&(i * 1_000).to_be_bytes());
        for (j, b) in v[8..512].iter_mut().enumerate() {
            *b = (i as usize * 31 + j * 7 + j / 3) as u8;
        }
        v
    }

    #[test]
    fn every_codec_round_trips_through_the_builder_and_the_walker() {
        for compression in ALL_CODECS {
            let mut out = Vec::new();
            let mut sizes = Vec::new();
            for (base, n) in [(0i64, 40u64), (40, 25)] {
                let mut b = BatchBuilder::new(64 << 10);
                for i in 0..n {
                    let key = (i % 2 == 0).then_some(&b"key"[..]);
                    b.append(100 + i as i64, key, &compressible_value(base as u64 + i));
                }
                let plain_len = b.records_len_bytes();
                let producer = ProducerFields {
                    producer_id: 9,
                    producer_epoch: 1,
                    base_sequence: base as i32,
                };
                let mut bytes = b.finish_compressed(producer, compression).unwrap();
                sizes.push((plain_len, bytes.len() - HEADER_BYTES));
                // The broker's own validation accepts it (CRC, lengths)
                // and sees the codec in the attributes.
                let h = strom_engine::batch::validate(&bytes).unwrap();
                assert_eq!(h.record_count, n as i32);
                assert_eq!(h.base_sequence, base as i32);
                assert_eq!(
                    i16::from_be_bytes([bytes[21], bytes[22]]) & CODEC_MASK,
                    compression.codec()
                );
                strom_engine::batch::set_base_offset(&mut bytes, base);
                out.extend_from_slice(&bytes);
            }
            for (plain, wire) in sizes {
                if compression == Compression::None {
                    assert_eq!(plain, wire);
                } else {
                    assert!(wire < plain * 3 / 4, "{compression:?}: {wire} of {plain}");
                }
            }
            let mut seen = Vec::new();
            let s = walk_batches(&out, 3, |r| seen.push(r)).unwrap();
            assert_eq!(s.next_offset, Some(65), "{compression:?}");
            assert_eq!(s.records, 62, "{compression:?}");
            for (k, r) in seen.iter().enumerate() {
                let i = k as u64 + 3;
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.payload_ns, Some(i * 1_000), "{compression:?}");
                assert_eq!(r.value_bytes, 1024);
            }
            // Record timestamps: base 100, one ms per record of a batch.
            assert_eq!(seen[0].timestamp_ms, 103);
            assert_eq!(seen[37].timestamp_ms, 100, "first record of batch 2");
        }
    }

    #[test]
    fn the_engine_inflates_what_the_builder_compressed() {
        for compression in ALL_CODECS {
            let mut b = BatchBuilder::new(4096);
            b.append(5, None, &compressible_value(1));
            let plain = b.buf[HEADER_BYTES..].to_vec();
            let bytes = b
                .finish_compressed(ProducerFields::NONE, compression)
                .unwrap();
            let inflated =
                strom_engine::codec::inflate(compression.codec(), &bytes[HEADER_BYTES..]).unwrap();
            assert_eq!(inflated, plain, "{compression:?}");
        }
    }

    #[test]
    fn a_corrupt_compressed_batch_is_an_error() {
        let mut b = BatchBuilder::new(4096);
        b.append(5, None, &compressible_value(1));
        let mut bytes = b
            .finish_compressed(ProducerFields::NONE, Compression::Lz4)
            .unwrap();
        let n = bytes.len();
        bytes[n - 10..].fill(0xff);
        let e = walk_batches(&bytes, 0, |_| {}).unwrap_err().to_string();
        assert!(e.contains("lz4 records unreadable"), "{e}");
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
