//! RecordBatch v2 encoding for producers and walking for consumers.
//!
//! Layout (big-endian), see strom_engine::batch for the field table:
//! baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8,
//! crc u32 (CRC-32C of attributes..end), attributes i16, lastOffsetDelta i32,
//! baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
//! baseSequence i32, recordCount i32, records.
//!
//! Each payload starts with the message's intended send time as u64
//! nanoseconds since the Unix epoch (when the payload has 8 bytes), so a
//! consumer measures end-to-end latency finer than the millisecond record
//! timestamps allow.

use anyhow::{bail, Result};

pub const HEADER_BYTES: usize = 61;
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const CODEC_MASK: i16 = 0x07;
const ATTR_CONTROL: i16 = 1 << 5;

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

    /// Fills in the header and returns the finished batch.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.count > 0, "an empty batch is never sent");
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
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
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
